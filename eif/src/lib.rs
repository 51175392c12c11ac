//! Enclave image files (EIF) for AWS Nitro Enclaves: read and measure them,
//! build them reproducibly, and write KMS key policies bound to their PCRs.
//!
//! - [`reader`]: validate an image (every bound, the CRC) and compute PCR0,
//!   PCR1, PCR2 and PCR8; [`measure_eif`] is the short way to the PCRs.
//! - [`builder`] and [`ramdisk`]: write images and newc cpio ramdisks whose
//!   bytes depend only on their inputs.
//! - [`output`]: write an output file through a temporary file, so that it
//!   appears whole or not at all.
//! - [`signature`]: the signature section (COSE_Sign1 over PCR0, ECDSA
//!   P-384) and the signing certificate behind PCR8.
//! - [`policy`] and [`lint`]: generate a key policy with
//!   `kms:RecipientAttestation` conditions and check policies for mistakes.

#![forbid(unsafe_code)]

pub mod builder;
pub mod describe;
pub mod format;
pub mod lint;
pub mod measure;
pub mod output;
pub mod policy;
pub mod ramdisk;
pub mod reader;
pub mod signature;

pub use builder::{BuildError, BuildOptions, build_eif, write_eif};
pub use format::{Architecture, SectionKind};
pub use measure::{Measurements, PCR_LEN, Pcr};
pub use output::{OutputError, OutputFile};
pub use reader::{EifError, EifImage, Section, measure_eif, read_eif, read_eif_bytes};
pub use signature::{SignatureCheck, SigningKey};
