//! Fuzzes the attestation document parser: `parse` on arbitrary bytes, and
//! for inputs that parse, `Verifier::verify` against the AWS Nitro Enclaves
//! root G1 at the document's own timestamp, with debug documents allowed so
//! the checks after the signature run too.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use recipient_common::attestation::{self, TimeMode, Verifier, VerifyOptions};

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(Verifier::with_aws_root)
}

fuzz_target!(|data: &[u8]| {
    let Ok(document) = attestation::parse(data) else {
        return;
    };
    let options = VerifyOptions { time: TimeMode::DocumentTime, allow_debug: true };
    let verified = verifier().verify(data, &options);

    // A document that verifies must be the one `parse` returned.
    if let Ok(verified) = verified {
        assert_eq!(verified.document(), &document);
    }
});
