//! Fuzzes the enclave-parent frame decoder: the length prefix check, then
//! the CBOR body as a request and as a response; and the buffered
//! `FrameReader` over the input taken as a stream of frames.
#![no_main]

use libfuzzer_sys::fuzz_target;
use recipient_common::protocol::{self, Request, Response};

fuzz_target!(|data: &[u8]| {
    let runtime = tokio::runtime::Builder::new_current_thread().build();
    if let Ok(runtime) = runtime {
        runtime.block_on(async {
            let _ = protocol::read_frame::<_, Request>(&mut &data[..], 64 * 1024).await;
            let mut reader = protocol::FrameReader::new(data);
            while let Ok(body) = reader.read_body(64 * 1024).await {
                let _ = protocol::decode_body::<Request>(body);
            }
        });
    }
    let _ = protocol::decode_body::<Request>(data);
    let _ = protocol::decode_body::<Response>(data);
    let _ = protocol::peek_request_id(data);
});
