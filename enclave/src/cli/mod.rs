//! Subcommands of `enclave-agent` that deal with attestation: `mock-ca`,
//! `attest` and `verify-attestation`. Each module has a clap `Args` struct and
//! a `run` function that the binary dispatches to.

pub mod attest;
pub mod mock_ca;
pub mod operations;
pub mod verify_attestation;

pub use attest::{AttestArgs, NsmArgs, NsmKind};
pub use mock_ca::MockCaArgs;
pub use verify_attestation::{OutputFormat, VerifyAttestationArgs};
