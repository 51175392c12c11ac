//! Cross-checks with `aws-nitro-enclaves-image-format`, the crate nitro-cli
//! builds and reads images with: both must compute the same PCRs for images
//! built by either, signed or not, and images written by eif-tool must pass
//! that crate's reader, CRC check and signature check.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use aws_nitro_enclaves_image_format::defs::{EifBuildInfo, EifIdentityInfo};
use aws_nitro_enclaves_image_format::utils::eif_reader::EifReader;
use aws_nitro_enclaves_image_format::utils::{EifBuilder, PcrSignatureChecker, SignKeyData};
use eif_tool::{BuildOptions, Measurements, SignatureCheck, SigningKey, build_eif, read_eif};
use sha2_010::{Digest, Sha384};

/// Inputs of one image: a stand-in kernel and three ramdisks of different
/// sizes, so that PCR1 and PCR2 each cover more than one section.
struct Inputs {
    dir: tempfile::TempDir,
    kernel: PathBuf,
    ramdisks: Vec<PathBuf>,
    certificate: PathBuf,
    key: PathBuf,
}

fn inputs() -> Inputs {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("bzImage");
    fs::write(&kernel, pattern(300_001, 7)).unwrap();
    let ramdisks: Vec<PathBuf> = [(40_000, 1), (1_000_003, 2), (17, 3)]
        .iter()
        .enumerate()
        .map(|(index, (len, seed))| {
            let path = dir.path().join(format!("ramdisk{index}.cpio"));
            fs::write(&path, pattern(*len, *seed)).unwrap();
            path
        })
        .collect();

    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384).unwrap();
    let mut params = rcgen::CertificateParams::new(vec!["eif-signing.test".to_owned()]).unwrap();
    params.distinguished_name.push(rcgen::DnType::CommonName, "eif-tool test signer");
    let certificate = params.self_signed(&key).unwrap();
    let certificate_path = dir.path().join("signing.crt");
    let key_path = dir.path().join("signing.key");
    fs::write(&certificate_path, certificate.pem()).unwrap();
    fs::write(&key_path, key.serialize_pem()).unwrap();

    Inputs { dir, kernel, ramdisks, certificate: certificate_path, key: key_path }
}

/// Deterministic filler bytes.
fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len).map(|i| (i.wrapping_mul(31) as u8) ^ seed).collect()
}

const CMDLINE: &str = "reboot=k panic=30 pci=off nomodules console=ttyS0 random.trust_cpu=on";

fn eif_tool_build(inputs: &Inputs, signed: bool, output: &Path) -> Measurements {
    let mut options = BuildOptions::new(inputs.kernel.clone(), CMDLINE.to_owned(), inputs.ramdisks.clone());
    if signed {
        let certificate = fs::read(&inputs.certificate).unwrap();
        let key = fs::read(&inputs.key).unwrap();
        options.signing_key = Some(SigningKey::from_pem(&certificate, &key).unwrap());
    }
    build_eif(&options, output).unwrap()
}

fn reference_build(inputs: &Inputs, signed: bool, output: &Path) -> BTreeMap<String, String> {
    let sign_info = signed.then(|| SignKeyData::new(inputs.key.to_str().unwrap(), &inputs.certificate).unwrap());
    let identity = EifIdentityInfo {
        img_name: "reference".to_owned(),
        img_version: "1".to_owned(),
        build_info: EifBuildInfo {
            build_time: "2024-01-01T00:00:00+00:00".to_owned(),
            build_tool: "reference".to_owned(),
            build_tool_version: "0".to_owned(),
            img_os: "Linux".to_owned(),
            img_kernel: "6.1".to_owned(),
        },
        docker_info: serde_json::Value::Null,
        custom_info: serde_json::Value::Null,
    };
    let mut builder = EifBuilder::new(&inputs.kernel, CMDLINE.to_owned(), sign_info, Sha384::new(), 0, identity);
    for ramdisk in &inputs.ramdisks {
        builder.add_ramdisk(ramdisk);
    }
    let mut file = fs::File::create(output).unwrap();
    builder.write_to(&mut file)
}

fn reference_read(path: &Path) -> (EifReader, BTreeMap<String, String>) {
    let mut reader = EifReader::from_eif(path.to_str().unwrap().to_owned()).unwrap();
    let measurements = reader.get_measurements().unwrap();
    (reader, measurements)
}

fn as_map(measurements: &Measurements) -> BTreeMap<String, String> {
    measurements.to_nitro_cli_map().into_iter().filter(|(name, _)| name.starts_with("PCR")).collect()
}

fn pcrs_of(map: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    map.iter().filter(|(name, _)| name.starts_with("PCR")).map(|(k, v)| (k.clone(), v.clone())).collect()
}

#[test]
fn unsigned_eif_tool_image_matches_reference_reader() {
    let inputs = inputs();
    let path = inputs.dir.path().join("unsigned.eif");

    let built = eif_tool_build(&inputs, false, &path);
    let (reader, reference) = reference_read(&path);
    let read_back = read_eif(&path).unwrap();

    assert!(reader.check_crc(), "the reference reader rejects the CRC");
    assert_eq!(reader.signature_section, None);
    assert!(reader.get_metadata().is_some(), "the reference reader found no metadata");
    assert_eq!(pcrs_of(&reference), as_map(&built));
    assert_eq!(read_back.measurements, built);
    assert_eq!(reference.get("PCR8"), None);
}

#[test]
fn signed_eif_tool_image_matches_reference_reader() {
    let inputs = inputs();
    let path = inputs.dir.path().join("signed.eif");

    let built = eif_tool_build(&inputs, true, &path);
    let (mut reader, reference) = reference_read(&path);
    reader.get_certificate_info(reference.clone()).unwrap();

    assert!(reader.check_crc(), "the reference reader rejects the CRC");
    assert_eq!(reader.sign_check, Some(true), "the reference reader rejects the signature payload");
    assert_eq!(pcrs_of(&reference), as_map(&built));
    assert!(built.pcr8.is_some());
    let mut checker = PcrSignatureChecker::from_eif(path.to_str().unwrap()).unwrap();
    checker.verify().unwrap();
}

#[test]
fn unsigned_reference_image_matches_eif_tool_reader() {
    let inputs = inputs();
    let path = inputs.dir.path().join("reference-unsigned.eif");

    let reference = reference_build(&inputs, false, &path);
    let image = read_eif(&path).unwrap();

    assert_eq!(as_map(&image.measurements), pcrs_of(&reference));
    assert_eq!(image.measurements.pcr8, None);
    assert_eq!(image.metadata.unwrap()["ImageName"], "reference");
}

#[test]
fn signed_reference_image_matches_eif_tool_reader() {
    let inputs = inputs();
    let path = inputs.dir.path().join("reference-signed.eif");

    let reference = reference_build(&inputs, true, &path);
    let image = read_eif(&path).unwrap();

    assert_eq!(as_map(&image.measurements), pcrs_of(&reference));
    assert!(image.measurements.pcr8.is_some());
    assert_eq!(image.signature.unwrap().check, SignatureCheck::Valid);
}

#[test]
fn both_builders_give_equal_pcrs() {
    let inputs = inputs();
    let ours = inputs.dir.path().join("ours.eif");
    let theirs = inputs.dir.path().join("theirs.eif");

    for signed in [false, true] {
        let built = eif_tool_build(&inputs, signed, &ours);
        let reference = reference_build(&inputs, signed, &theirs);

        assert_eq!(as_map(&built), pcrs_of(&reference), "signed: {signed}");
    }
}
