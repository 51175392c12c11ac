//! PCR values of an enclave image.
//!
//! The Nitro hypervisor measures an image into four PCRs, each starting from
//! 48 zero bytes and extended once with the SHA-384 digest of the measured
//! bytes, so `PCR = SHA384(zeros48 ‖ SHA384(data))`:
//!
//! - PCR0: kernel ‖ cmdline ‖ every ramdisk,
//! - PCR1: kernel ‖ cmdline ‖ first ramdisk,
//! - PCR2: the ramdisks after the first,
//! - PCR8: the DER of the signing certificate, for signed images only.
//!
//! Section headers, the metadata section and the signature section are not
//! measured.

use std::collections::BTreeMap;
use std::fmt;

use aws_lc_rs::digest::{Context, SHA384, SHA384_OUTPUT_LEN};

/// Length of a SHA-384 PCR value in bytes.
pub const PCR_LEN: usize = SHA384_OUTPUT_LEN;

/// A 48-byte SHA-384 PCR value.
pub type Pcr = [u8; PCR_LEN];

/// The `HashAlgorithm` string nitro-cli prints next to the PCRs, as the AWS
/// documentation of `describe-eif` shows it. It is the `Debug` form of the
/// hasher nitro-cli was built with, so it can differ between builds: the
/// `aws-nitro-enclaves-image-format` crate 0.8.1 with sha2 0.10.9 prints
/// `Sha512_48 { .. }`. Compare PCR values, not this string.
pub const HASH_ALGORITHM: &str = "Sha384 { ... }";

/// The PCRs an image produces at launch.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Measurements {
    /// Kernel, cmdline and all ramdisks.
    pub pcr0: Pcr,
    /// Kernel, cmdline and the first (boot) ramdisk.
    pub pcr1: Pcr,
    /// The ramdisks after the first (the application).
    pub pcr2: Pcr,
    /// The signing certificate; `None` for unsigned images.
    pub pcr8: Option<Pcr>,
}

impl Measurements {
    /// Returns the value of PCR `index`, or `None` for an index the image
    /// does not determine.
    pub fn get(&self, index: u8) -> Option<Pcr> {
        match index {
            0 => Some(self.pcr0),
            1 => Some(self.pcr1),
            2 => Some(self.pcr2),
            8 => self.pcr8,
            _ => None,
        }
    }

    /// Lists `(index, value)` for PCR0, 1, 2 and, when signed, 8.
    pub fn indexed(&self) -> Vec<(u8, Pcr)> {
        let mut pcrs = vec![(0, self.pcr0), (1, self.pcr1), (2, self.pcr2)];
        if let Some(pcr8) = self.pcr8 {
            pcrs.push((8, pcr8));
        }
        pcrs
    }

    /// Returns the `Measurements` object of nitro-cli's `describe-eif` and
    /// `build-enclave` output: `HashAlgorithm` and lower-case hex PCRs.
    pub fn to_nitro_cli_map(&self) -> BTreeMap<String, String> {
        let mut map = BTreeMap::new();
        map.insert("HashAlgorithm".to_owned(), HASH_ALGORITHM.to_owned());
        for (index, value) in self.indexed() {
            map.insert(format!("PCR{index}"), hex::encode(value));
        }
        map
    }
}

impl fmt::Debug for Measurements {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Measurements")
            .field("pcr0", &hex::encode(self.pcr0))
            .field("pcr1", &hex::encode(self.pcr1))
            .field("pcr2", &hex::encode(self.pcr2))
            .field("pcr8", &self.pcr8.map(hex::encode))
            .finish()
    }
}

/// Extends a zero PCR with `digest`: `SHA384(zeros48 ‖ digest)`.
pub fn extend_zero_pcr(digest: &[u8]) -> Pcr {
    let mut context = Context::new(&SHA384);
    context.update(&[0u8; PCR_LEN]);
    context.update(digest);
    finish(context)
}

/// Measures `data` the way an image section is measured:
/// `SHA384(zeros48 ‖ SHA384(data))`.
pub fn measure_bytes(data: &[u8]) -> Pcr {
    let mut context = Context::new(&SHA384);
    context.update(data);
    extend_zero_pcr(&finish(context))
}

/// Finishes a SHA-384 context into a fixed-size array.
pub(crate) fn finish(context: Context) -> Pcr {
    let mut out = [0u8; PCR_LEN];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Computes PCR0, PCR1 and PCR2 from the measured sections, fed in file
/// order. PCR1's input is a prefix of PCR0's, so one context serves both and
/// is cloned when the first ramdisk ends. The later ramdisks also go into a
/// second context, for PCR2.
#[derive(Clone)]
pub(crate) struct ImageHasher {
    image: Context,
    application: Context,
    boot: Option<Pcr>,
}

impl ImageHasher {
    pub(crate) fn new() -> Self {
        Self { image: Context::new(&SHA384), application: Context::new(&SHA384), boot: None }
    }

    /// Adds bytes of the kernel or the cmdline.
    pub(crate) fn update_boot(&mut self, data: &[u8]) {
        self.image.update(data);
    }

    /// Adds bytes of the first ramdisk.
    pub(crate) fn update_first_ramdisk(&mut self, data: &[u8]) {
        self.image.update(data);
    }

    /// Marks the end of the first ramdisk, which completes PCR1's input.
    pub(crate) fn end_first_ramdisk(&mut self) {
        self.boot = Some(extend_zero_pcr(&finish(self.image.clone())));
    }

    /// Adds bytes of a ramdisk after the first.
    pub(crate) fn update_application(&mut self, data: &[u8]) {
        self.image.update(data);
        self.application.update(data);
    }

    /// Returns PCR0, PCR1 and PCR2 (PCR1 is over the whole input when
    /// `end_first_ramdisk` was never called).
    pub(crate) fn finish(self) -> (Pcr, Pcr, Pcr) {
        let image = extend_zero_pcr(&finish(self.image));
        let boot = self.boot.unwrap_or(image);
        let application = extend_zero_pcr(&finish(self.application));
        (image, boot, application)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sha384(parts: &[&[u8]]) -> Vec<u8> {
        let mut context = Context::new(&SHA384);
        for part in parts {
            context.update(part);
        }
        context.finish().as_ref().to_vec()
    }

    #[test]
    fn measure_bytes_matches_extend_formula() {
        let data = b"kernel bytes";

        let expected = sha384(&[&[0u8; 48], &sha384(&[data])]);

        assert_eq!(measure_bytes(data).to_vec(), expected);
    }

    #[test]
    fn measure_bytes_of_empty_input() {
        // SHA384(zeros48 || SHA384("")), the PCR2 of an image with one ramdisk.
        let expected = sha384(&[&[0u8; 48], &sha384(&[])]);

        assert_eq!(measure_bytes(&[]).to_vec(), expected);
    }

    #[test]
    fn image_hasher_splits_boot_and_application() {
        let mut hasher = ImageHasher::new();
        hasher.update_boot(b"kernel");
        hasher.update_boot(b"cmdline");
        hasher.update_first_ramdisk(b"boot ramdisk");
        hasher.end_first_ramdisk();
        hasher.update_application(b"app one");
        hasher.update_application(b"app two");

        let (pcr0, pcr1, pcr2) = hasher.finish();

        assert_eq!(pcr0, measure_bytes(b"kernelcmdlineboot ramdiskapp oneapp two"));
        assert_eq!(pcr1, measure_bytes(b"kernelcmdlineboot ramdisk"));
        assert_eq!(pcr2, measure_bytes(b"app oneapp two"));
    }

    #[test]
    fn nitro_cli_map_has_describe_eif_names() {
        let measurements = Measurements { pcr0: [0; 48], pcr1: [1; 48], pcr2: [2; 48], pcr8: Some([8; 48]) };

        let map = measurements.to_nitro_cli_map();

        let keys: Vec<&str> = map.keys().map(String::as_str).collect();
        assert_eq!(keys, ["HashAlgorithm", "PCR0", "PCR1", "PCR2", "PCR8"]);
        assert_eq!(map.get("HashAlgorithm").map(String::as_str), Some("Sha384 { ... }"));
        assert_eq!(map.get("PCR1"), Some(&"01".repeat(48)));
    }

    #[test]
    fn get_returns_only_measured_indexes() {
        let measurements = Measurements { pcr0: [0; 48], pcr1: [1; 48], pcr2: [2; 48], pcr8: None };

        assert_eq!(measurements.get(1), Some([1; 48]));
        assert_eq!(measurements.get(8), None);
        assert_eq!(measurements.get(3), None);
        assert_eq!(measurements.indexed().len(), 3);
    }
}
