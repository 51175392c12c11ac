//! Shared building blocks of the Nitro Enclaves KMS Recipient toolkit: the
//! enclave-parent wire protocol and its transports, attestation documents
//! (parse, verify, build) and the CMS envelope KMS returns as
//! `CiphertextForRecipient` (parse, decrypt, build).
#![forbid(unsafe_code)]

pub mod attestation;
pub mod cms;
pub mod protocol;
pub mod public_key;
pub mod transport;
