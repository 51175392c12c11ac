//! A mock NSM: the request set of the real device, a bank of 32 SHA-384 PCRs,
//! and attestation documents signed under the CA chain of a [`CaStore`].
//!
//! Its behaviour follows AWS's `nsm-check` test of the real device
//! (aws-nitro-enclaves-nsm-api, `nsm-test/src/bin/nsm-check.rs`). PCR0–15 are
//! locked at start: PCR0–2 hold the image, PCR3 the IAM role, PCR4 the
//! instance id, PCR8 the signing certificate, and the others are zero.
//! PCR16–31 start zero and unlocked. `LockPCR` and `ExtendPCR` on a locked
//! PCR fail, and `LockPCRs` accepts a range up to 32. Documents list PCR0–15
//! and each of PCR16–31 that was extended.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::SystemTime;

use aws_lc_rs::digest::{SHA384, digest};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_nitro_enclaves_nsm_api::api::{Digest, ErrorCode, Request, Response};
use recipient_common::attestation::{self, AttestationDocument};
use serde_bytes::ByteBuf;
use time::OffsetDateTime;

use super::ca_store::{CaStore, LeafSigner};
use super::pcr_file::{INSTANCE_ID_PCR, LOCKED_AT_START, PCR_LEN, load_pcr_file};
use super::{MAX_ATTESTATION_FIELD_LEN, MAX_REQUEST_LEN, MAX_RESPONSE_LEN, Nsm, NsmError, encoded_len};

/// The number of PCRs, as `DescribeNSM` reports on Nitro hardware.
pub const MAX_PCRS: u16 = 32;
/// The bytes `GetRandom` returns per call.
// NOTE: AWS does not document the real NSM's GetRandom length; 256 is this mock's choice.
pub const RANDOM_LEN: usize = 256;
/// The version `DescribeNSM` reports.
// NOTE: the real device's version numbers are not documented; these are the mock's.
pub const VERSION: (u16, u16, u16) = (1, 0, 0);

/// Computes an NSM extend: `SHA384(old ‖ data)`.
pub fn extend(old: &[u8; PCR_LEN], data: &[u8]) -> [u8; PCR_LEN] {
    let mut input = Vec::with_capacity(PCR_LEN + data.len());
    input.extend_from_slice(old);
    input.extend_from_slice(data);
    let mut out = [0u8; PCR_LEN];
    out.copy_from_slice(digest(&SHA384, &input).as_ref());
    out
}

/// Computes an image measurement: `SHA384(zeros ‖ SHA384(data))`, the form of PCR0, 1, 2 and 8.
pub fn measure(data: &[u8]) -> [u8; PCR_LEN] {
    extend(&[0; PCR_LEN], digest(&SHA384, data).as_ref())
}

/// Returns the mock's default PCR0–2: measurements of fixed strings, so that
/// they are non-zero (a production, not a debug, enclave) and stable.
pub fn default_pcrs() -> BTreeMap<u32, [u8; PCR_LEN]> {
    BTreeMap::from([
        (0, measure(b"enclave-agent mock image: kernel, cmdline and all ramdisks")),
        (1, measure(b"enclave-agent mock image: kernel and boot ramdisk")),
        (2, measure(b"enclave-agent mock image: application ramdisks")),
    ])
}

#[derive(Clone, Copy)]
struct Pcr {
    value: [u8; PCR_LEN],
    locked: bool,
    extended: bool,
}

struct State {
    pcrs: [Pcr; MAX_PCRS as usize],
    leaf: LeafSigner,
}

/// The mock NSM.
pub struct MockNsm {
    store: CaStore,
    module_id: String,
    state: Mutex<State>,
    /// Offset added to the clock for the documents' `timestamp` only, to
    /// simulate an NSM clock that is ahead of or behind the verifier's.
    timestamp_skew: time::Duration,
}

impl std::fmt::Debug for MockNsm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MockNsm")
            .field("module_id", &self.module_id)
            .field("store", &self.store)
            .field("timestamp_skew", &self.timestamp_skew)
            .finish_non_exhaustive()
    }
}

fn now() -> OffsetDateTime {
    OffsetDateTime::from(SystemTime::now())
}

impl MockNsm {
    /// Opens the CA store in `dir` and starts a mock enclave whose PCR0–15
    /// come from `pcrs_file` (see [`super::pcr_file`]) or from
    /// [`default_pcrs`], with PCR4 derived from the store's instance id.
    pub fn open(dir: &Path, pcrs_file: Option<&Path>) -> Result<Self, NsmError> {
        let initial = match pcrs_file {
            Some(path) => load_pcr_file(path)?,
            None => default_pcrs(),
        };
        Self::open_with_pcrs(dir, &initial)
    }

    /// Like [`MockNsm::open`], with the initial PCRs given (for example from
    /// an EIF measurement). Indexes 16 and above and PCR4 are rejected.
    pub fn open_with_pcrs(dir: &Path, initial: &BTreeMap<u32, [u8; PCR_LEN]>) -> Result<Self, NsmError> {
        if let Some(index) = initial.keys().find(|index| **index >= LOCKED_AT_START || **index == INSTANCE_ID_PCR) {
            return Err(NsmError::InvalidArgument {
                argument: "initial PCRs",
                reason: format!("PCR{index} cannot be set at start; give PCR0-3 and PCR5-15 only"),
            });
        }
        let store = CaStore::open(dir)?;
        let leaf = store.current_leaf(now())?;

        let mut pcrs = [Pcr { value: [0; PCR_LEN], locked: false, extended: false }; MAX_PCRS as usize];
        for (index, pcr) in pcrs.iter_mut().enumerate() {
            pcr.locked = (index as u32) < LOCKED_AT_START;
            if let Some(value) = initial.get(&(index as u32)) {
                pcr.value = *value;
            }
        }
        if let Some(pcr4) = pcrs.get_mut(INSTANCE_ID_PCR as usize) {
            pcr4.value = extend(&[0; PCR_LEN], store.instance_id().as_bytes());
        }
        let enclave_id = hex::encode(random_bytes(8).unwrap_or_else(|| vec![0; 8]));
        let module_id = format!("{}-enc{enclave_id}", store.instance_id());

        tracing::info!(%module_id, dir = %dir.display(), "mock NSM started");
        Ok(Self { store, module_id, state: Mutex::new(State { pcrs, leaf }), timestamp_skew: time::Duration::ZERO })
    }

    /// Shifts the `timestamp` of every document by `skew` (positive: into the
    /// future), as an NSM whose clock disagrees with the verifier's would.
    /// Certificates keep their real validity.
    #[must_use]
    pub fn with_timestamp_skew(mut self, skew: time::Duration) -> Self {
        if !skew.is_zero() {
            tracing::warn!(seconds = skew.whole_seconds(), "mock NSM document timestamps are skewed");
        }
        self.timestamp_skew = skew;
        self
    }

    /// Returns the module id, `<instance id>-enc<enclave id>` as on Nitro hardware.
    pub fn module_id(&self) -> &str {
        &self.module_id
    }

    /// Returns the CA store whose leaf signs the documents.
    pub fn store(&self) -> &CaStore {
        &self.store
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update of the state is a single assignment, so a panic in
        // another thread cannot leave it half-written.
        self.state.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// Processes `request` as if the clock read `now`.
    pub(crate) fn process_at(&self, request: Request, now: OffsetDateTime) -> Response {
        if encoded_len(&request) > MAX_REQUEST_LEN {
            return Response::Error(ErrorCode::InputTooLarge);
        }
        let response = match request {
            Request::DescribePCR { index } => self.describe_pcr(index),
            Request::ExtendPCR { index, data } => self.extend_pcr(index, &data),
            Request::LockPCR { index } => self.lock_pcr(index),
            Request::LockPCRs { range } => self.lock_pcrs(range),
            Request::DescribeNSM => self.describe(),
            Request::Attestation { user_data, nonce, public_key } => self.attestation(
                public_key.map(ByteBuf::into_vec),
                user_data.map(ByteBuf::into_vec),
                nonce.map(ByteBuf::into_vec),
                now,
            ),
            Request::GetRandom => match random_bytes(RANDOM_LEN) {
                Some(random) => Response::GetRandom { random },
                None => Response::Error(ErrorCode::InternalError),
            },
            _ => Response::Error(ErrorCode::InvalidOperation),
        };
        if encoded_len(&response) > MAX_RESPONSE_LEN {
            return Response::Error(ErrorCode::InputTooLarge);
        }
        response
    }

    fn describe_pcr(&self, index: u16) -> Response {
        let state = self.state();
        match state.pcrs.get(usize::from(index)) {
            Some(pcr) => Response::DescribePCR { lock: pcr.locked, data: pcr.value.to_vec() },
            None => Response::Error(ErrorCode::InvalidIndex),
        }
    }

    fn extend_pcr(&self, index: u16, data: &[u8]) -> Response {
        let mut state = self.state();
        let Some(pcr) = state.pcrs.get_mut(usize::from(index)) else {
            return Response::Error(ErrorCode::InvalidIndex);
        };
        if pcr.locked {
            return Response::Error(ErrorCode::ReadOnlyIndex);
        }
        pcr.value = extend(&pcr.value, data);
        pcr.extended = true;
        Response::ExtendPCR { data: pcr.value.to_vec() }
    }

    fn lock_pcr(&self, index: u16) -> Response {
        let mut state = self.state();
        let Some(pcr) = state.pcrs.get_mut(usize::from(index)) else {
            return Response::Error(ErrorCode::InvalidIndex);
        };
        if pcr.locked {
            return Response::Error(ErrorCode::ReadOnlyIndex);
        }
        pcr.locked = true;
        Response::LockPCR
    }

    fn lock_pcrs(&self, range: u16) -> Response {
        if range > MAX_PCRS {
            return Response::Error(ErrorCode::InvalidIndex);
        }
        let mut state = self.state();
        for pcr in state.pcrs.iter_mut().take(usize::from(range)) {
            pcr.locked = true;
        }
        Response::LockPCRs
    }

    fn describe(&self) -> Response {
        let state = self.state();
        let locked_pcrs: BTreeSet<u16> =
            (0..MAX_PCRS).filter(|index| state.pcrs.get(usize::from(*index)).is_some_and(|pcr| pcr.locked)).collect();
        Response::DescribeNSM {
            version_major: VERSION.0,
            version_minor: VERSION.1,
            version_patch: VERSION.2,
            module_id: self.module_id.clone(),
            max_pcrs: MAX_PCRS,
            locked_pcrs,
            digest: Digest::SHA384,
        }
    }

    fn attestation(
        &self,
        public_key: Option<Vec<u8>>,
        user_data: Option<Vec<u8>>,
        nonce: Option<Vec<u8>>,
        now: OffsetDateTime,
    ) -> Response {
        let too_long = [&public_key, &user_data, &nonce]
            .iter()
            .any(|field| field.as_ref().is_some_and(|bytes| bytes.len() > MAX_ATTESTATION_FIELD_LEN));
        if too_long {
            return Response::Error(ErrorCode::InputTooLarge);
        }

        let mut state = self.state();
        if state.leaf.needs_renewal(now) {
            match self.store.issue_leaf(now) {
                Ok(leaf) => state.leaf = leaf,
                Err(e) => {
                    tracing::error!(error = %e, "mock NSM could not renew its leaf certificate");
                    return Response::Error(ErrorCode::InternalError);
                }
            }
        }
        let pcrs = state
            .pcrs
            .iter()
            .enumerate()
            .filter(|(index, pcr)| (*index as u32) < LOCKED_AT_START || pcr.extended)
            .map(|(index, pcr)| (index as u32, pcr.value.to_vec()))
            .collect();
        let stamped = now.checked_add(self.timestamp_skew).unwrap_or(now);
        let timestamp = u64::try_from(stamped.unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let document = AttestationDocument {
            module_id: self.module_id.clone(),
            digest: attestation::DIGEST_SHA384.to_owned(),
            timestamp,
            pcrs,
            certificate: state.leaf.certificate.clone(),
            cabundle: self.store.cabundle().to_vec(),
            public_key,
            user_data,
            nonce,
        };

        match attestation::sign(&document, &state.leaf.key) {
            Ok(document) => Response::Attestation { document },
            Err(e) => {
                tracing::error!(error = %e, "mock NSM could not sign a document");
                Response::Error(ErrorCode::InternalError)
            }
        }
    }
}

fn random_bytes(len: usize) -> Option<Vec<u8>> {
    let mut out = vec![0u8; len];
    SystemRandom::new().fill(&mut out).ok()?;
    Some(out)
}

impl Nsm for MockNsm {
    fn process(&self, request: Request) -> Response {
        self.process_at(request, now())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::panic)]
mod tests {
    use std::time::Duration;

    use recipient_common::attestation::{TimeMode, Verifier, VerifyOptions};

    use super::*;
    use crate::nsm::ca_store::LEAF_LIFETIME;
    use crate::nsm::init_ca;

    fn attest_at(nsm: &MockNsm, now: OffsetDateTime) -> Vec<u8> {
        let request = Request::Attestation { user_data: None, nonce: None, public_key: None };
        match nsm.process_at(request, now) {
            Response::Attestation { document } => document,
            other => panic!("unexpected response {other:?}"),
        }
    }

    fn leaf_of(document: &[u8]) -> Vec<u8> {
        attestation::parse(document).unwrap().certificate
    }

    #[test]
    fn timestamp_skew_moves_timestamp_only() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let at = now().replace_nanosecond(0).unwrap();
        let skewed = MockNsm::open(&ca, None).unwrap().with_timestamp_skew(time::Duration::minutes(10));
        let plain = MockNsm::open(&ca, None).unwrap();

        let ahead = attestation::parse(&attest_at(&skewed, at)).unwrap();
        let exact = attestation::parse(&attest_at(&plain, at)).unwrap();
        let expected = u64::try_from((at + Duration::from_secs(600)).unix_timestamp()).unwrap() * 1000;
        assert_eq!(ahead.timestamp, expected);
        assert_eq!(exact.timestamp + 600_000, ahead.timestamp);
        assert_eq!(ahead.certificate, exact.certificate, "the leaf is the same, with its real validity");
    }

    #[test]
    fn expired_leaf_reissued() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let nsm = MockNsm::open(&ca, None).unwrap();
        let start = now();
        let first = attest_at(&nsm, start);
        let stored = std::fs::read(ca.join("leaf.pem")).unwrap();

        let later = start + Duration::from_secs(4 * 3600);
        let second = attest_at(&nsm, later);
        assert_ne!(leaf_of(&first), leaf_of(&second), "a new leaf signs after expiry");
        assert_ne!(std::fs::read(ca.join("leaf.pem")).unwrap(), stored, "the new leaf is stored");

        let mut verifier = Verifier::new();
        verifier.add_root_pem(&std::fs::read(ca.join("root.pem")).unwrap()).unwrap();
        let at_later = VerifyOptions { time: TimeMode::At(later.into()), allow_debug: false };
        verifier.verify(&second, &at_later).unwrap();
        assert!(verifier.verify(&first, &at_later).is_err(), "the old leaf has expired by then");
    }

    #[test]
    fn leaf_renewed_before_expiry() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        let nsm = MockNsm::open(&ca, None).unwrap();
        let start = now();
        let first = leaf_of(&attest_at(&nsm, start));
        let well_inside = start + Duration::from_secs(3600);
        assert_eq!(leaf_of(&attest_at(&nsm, well_inside)), first);
        let near_end = start + LEAF_LIFETIME - Duration::from_secs(10 * 60);
        assert_ne!(leaf_of(&attest_at(&nsm, near_end)), first, "less than 30 minutes left renews the leaf");
    }

    #[test]
    fn extend_matches_definition() {
        let old = [7u8; PCR_LEN];
        let mut input = old.to_vec();
        input.extend_from_slice(b"data");
        assert_eq!(extend(&old, b"data").as_slice(), digest(&SHA384, &input).as_ref());
        let inner = digest(&SHA384, b"image");
        let mut input = vec![0u8; PCR_LEN];
        input.extend_from_slice(inner.as_ref());
        assert_eq!(measure(b"image").as_slice(), digest(&SHA384, &input).as_ref());
    }

    #[test]
    fn initial_pcr4_and_16_rejected() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("ca");
        init_ca(&ca).unwrap();
        for index in [4, 16] {
            let err = MockNsm::open_with_pcrs(&ca, &BTreeMap::from([(index, [1; PCR_LEN])])).unwrap_err();
            assert!(matches!(err, NsmError::InvalidArgument { .. }), "{err}");
        }
    }
}
