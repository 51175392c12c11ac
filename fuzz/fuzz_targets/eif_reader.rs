//! Fuzzes the EIF reader: `read_eif_bytes` on arbitrary bytes and, when it
//! rejects them for a CRC mismatch, again on a copy with the CRC recomputed,
//! so mutations reach the metadata and signature parsers behind the CRC check.
#![no_main]

use eif_tool::format::{CRC_OFFSET, HEADER_LEN};
use eif_tool::{EifError, read_eif_bytes};
use libfuzzer_sys::fuzz_target;

/// Writes the CRC-32 the reader expects (over the header before the CRC
/// field and everything after the header) into the CRC field.
fn fix_crc(image: &mut [u8]) {
    let (Some(prefix), Some(rest)) = (image.get(..CRC_OFFSET), image.get(HEADER_LEN..)) else {
        return;
    };
    let mut hasher = crc32fast::Hasher::new();
    hasher.update(prefix);
    hasher.update(rest);
    let crc = hasher.finalize();
    if let Some(field) = image.get_mut(CRC_OFFSET..HEADER_LEN) {
        field.copy_from_slice(&crc.to_be_bytes());
    }
}

fuzz_target!(|data: &[u8]| {
    if !matches!(read_eif_bytes(data), Err(EifError::CrcMismatch { .. })) {
        return;
    }
    let mut fixed = data.to_vec();
    fix_crc(&mut fixed);
    let _ = read_eif_bytes(&fixed);
});
