//! kms-local: a local AWS KMS endpoint that speaks the KMS JSON 1.1 protocol,
//! verifies SigV4 signatures, enforces key policies (including the
//! `kms:RecipientAttestation:*` condition keys), verifies `Recipient`
//! attestation documents and returns `CiphertextForRecipient`, and keeps its
//! keys in a durable embedded database.
//!
//! To run it in-process (for example in another crate's tests):
//!
//! ```no_run
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
//! let kms = kms_local::Kms::open(kms_local::Config::ephemeral())?;
//! let server = kms_local::RunningServer::spawn(listener, kms)?;
//! println!("endpoint {}", server.endpoint());
//! server.shutdown().await?;
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]

pub mod blob;
pub mod credentials;
pub mod error;
pub mod keys;
pub mod policy;
pub mod recipient;
pub mod server;
pub mod service;
pub mod sigv4;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

pub use credentials::Credentials;
pub use error::{ErrorKind, KmsError};
pub use server::{RunningServer, router, serve};
pub use service::{Kms, OpenError};

/// The address kms-local listens on unless `--listen` says otherwise. Port
/// 4566 is the port other local AWS emulators use, so existing
/// `--endpoint-url` settings carry over.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:4566";

/// How a [`Kms`] is set up.
#[derive(Debug)]
pub struct Config {
    /// The data directory, or `None` to keep everything in memory.
    pub data_dir: Option<PathBuf>,
    pub credentials: Credentials,
    /// PEM certificates trusted as attestation roots besides the AWS Nitro
    /// Enclaves root G1.
    pub trust_roots_pem: Vec<Vec<u8>>,
    /// The maximum age of a `Recipient` attestation document.
    pub max_document_age: Duration,
}

impl Config {
    /// An in-memory store, the development credentials, the AWS root only and
    /// the default maximum document age of five minutes.
    pub fn ephemeral() -> Self {
        Self {
            data_dir: None,
            credentials: Credentials::development(),
            trust_roots_pem: Vec::new(),
            max_document_age: recipient::DEFAULT_MAX_DOCUMENT_AGE,
        }
    }

    /// Like [`Config::ephemeral`] but stored durably in `directory`.
    pub fn persistent(directory: impl Into<PathBuf>) -> Self {
        Self { data_dir: Some(directory.into()), ..Self::ephemeral() }
    }
}
