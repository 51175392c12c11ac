//! `parent-proxy`: runs on the Nitro parent instance, receives Recipient
//! requests from the enclave over vsock and forwards them to KMS.
#![forbid(unsafe_code)]

pub mod kms;
pub mod metrics;
pub mod server;
