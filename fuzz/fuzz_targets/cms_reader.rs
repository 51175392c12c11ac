//! Fuzzes the CMS envelope reader: `parse` on arbitrary bytes, and
//! `decrypt` with a fixed RSA-2048 key for inputs that parse.
#![no_main]

use std::sync::OnceLock;

use aws_lc_rs::rsa::{KeySize, PrivateDecryptingKey};
use libfuzzer_sys::fuzz_target;
use recipient_common::cms;

fn key() -> Option<&'static PrivateDecryptingKey> {
    static KEY: OnceLock<Option<PrivateDecryptingKey>> = OnceLock::new();
    KEY.get_or_init(|| PrivateDecryptingKey::generate(KeySize::Rsa2048).ok()).as_ref()
}

fuzz_target!(|data: &[u8]| {
    if cms::parse(data).is_ok()
        && let Some(key) = key()
    {
        let _ = cms::decrypt(data, key);
    }
});
