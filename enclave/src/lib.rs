//! `enclave-agent`: the enclave side of the KMS Recipient flow. It makes an
//! ephemeral RSA key, attests it with the NSM (the device, or the mock NSM
//! outside Nitro), sends KMS requests through `parent-proxy`, and opens the
//! `CiphertextForRecipient` that KMS returns.
#![forbid(unsafe_code)]

pub mod cli;
pub mod client;
pub mod input;
pub mod key;
pub mod nsm;
pub mod parent;
