//! `enclave-agent mock-ca init --dir DIR`: create the mock NSM's CA store.

use std::path::PathBuf;

use anyhow::Context as _;
use aws_lc_rs::digest::{SHA256, digest};

use super::operations::write_stdout;
use crate::nsm::{CaStore, NsmError, init_ca};

/// Arguments of `mock-ca init`.
#[derive(Debug, Clone, clap::Args)]
pub struct MockCaArgs {
    /// Directory of the store; created with mode 0700 if missing. Pass DIR/root.pem to
    /// verifiers (kms-local --trust-root, verify-attestation --root).
    #[arg(long, value_name = "DIR")]
    pub dir: PathBuf,
    /// Exit successfully, leaving the store unchanged, if DIR already contains one.
    #[arg(long)]
    pub keep_existing: bool,
}

/// Creates the store (or, with `--keep-existing`, accepts an existing one) and
/// prints the root certificate's path, its SHA-256 and the mock instance id.
pub fn run(args: &MockCaArgs) -> anyhow::Result<()> {
    match init_ca(&args.dir) {
        Ok(()) => {}
        Err(NsmError::AlreadyInitialised { .. }) if args.keep_existing => {
            tracing::info!(dir = %args.dir.display(), "mock CA store exists, keeping it");
        }
        Err(e) => {
            return Err(e).with_context(|| format!("cannot initialise the mock CA store in {}", args.dir.display()));
        }
    }

    let store =
        CaStore::open(&args.dir).with_context(|| format!("cannot open the mock CA store in {}", args.dir.display()))?;
    let root_sha256 = store.cabundle().first().map(|der| hex::encode(digest(&SHA256, der))).unwrap_or_default();
    let summary = format!(
        "root certificate: {}\nroot SHA-256:     {root_sha256}\ninstance id:      {}\n",
        store.root_path().display(),
        store.instance_id()
    );
    write_stdout(summary.as_bytes())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn second_init_fails_unless_keep_existing() {
        let dir = tempfile::tempdir().unwrap();
        let args = MockCaArgs { dir: dir.path().join("ca"), keep_existing: false };
        run(&args).unwrap();
        let err = run(&args).unwrap_err();
        assert!(
            err.chain()
                .any(|cause| matches!(cause.downcast_ref::<NsmError>(), Some(NsmError::AlreadyInitialised { .. }))),
            "{err:#}"
        );
        run(&MockCaArgs { keep_existing: true, ..args }).unwrap();
    }
}
