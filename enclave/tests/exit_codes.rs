//! enclave-agent as a process: local setup and input errors exit 2 with a
//! message that names the file or flag, before any NSM or parent is used.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::os::unix::fs::PermissionsExt as _;
use std::process::{Command, Output};

fn agent(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_enclave-agent")).args(args).env("RUST_LOG", "off").output().unwrap()
}

fn assert_exit(output: &Output, code: i32, expected: &str) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(code), "{expected}: {stderr}");
    assert!(stderr.contains(expected), "expected `{expected}` in: {stderr}");
}

#[test]
fn setup_errors_exit_2() {
    let scratch = tempfile::tempdir().unwrap();
    let dir = scratch.path();
    let out = dir.join("doc.cbor");
    let out = out.to_str().unwrap();
    let ca = dir.join("ca");
    let ca = ca.to_str().unwrap();
    let missing_ca = dir.join("no-ca");
    let missing_ca = missing_ca.to_str().unwrap();

    // No CA store yet.
    let output = agent(&["attest", "--out", out, "--nsm", "mock", "--mock-dir", missing_ca]);
    assert_exit(&output, 2, "enclave-agent mock-ca init --dir");

    let output = agent(&["mock-ca", "init", "--dir", ca]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let output = agent(&["mock-ca", "init", "--dir", ca]);
    assert_exit(&output, 2, "already initialised");

    // An invalid PCR file and an invalid image.
    let pcrs = dir.join("pcrs.json");
    std::fs::write(&pcrs, "{\"0\": \"zz\"}").unwrap();
    let output =
        agent(&["attest", "--out", out, "--nsm", "mock", "--mock-dir", ca, "--mock-pcrs", pcrs.to_str().unwrap()]);
    assert_exit(&output, 2, "pcrs.json");
    let image = dir.join("image.eif");
    std::fs::write(&image, b"not an enclave image").unwrap();
    let output =
        agent(&["attest", "--out", out, "--nsm", "mock", "--mock-dir", ca, "--mock-eif", image.to_str().unwrap()]);
    assert_exit(&output, 2, "image.eif");

    // Oversized and missing field files.
    let user_data = dir.join("user-data");
    std::fs::write(&user_data, vec![7u8; 1025]).unwrap();
    let output =
        agent(&["attest", "--out", out, "--user-data", user_data.to_str().unwrap(), "--nsm", "mock", "--mock-dir", ca]);
    assert_exit(&output, 2, "more than the 1024-byte maximum");
    let output = agent(&["attest", "--out", out, "--nonce", "/nonexistent/nonce", "--nsm", "mock", "--mock-dir", ca]);
    assert_exit(&output, 2, "/nonexistent/nonce");

    // An unreadable document and root for verify-attestation.
    let output = agent(&["verify-attestation", "/nonexistent/doc.cbor"]);
    assert_exit(&output, 2, "cannot read document file /nonexistent/doc.cbor");
    let output = agent(&["attest", "--out", out, "--nsm", "mock", "--mock-dir", ca]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));
    let output = agent(&["verify-attestation", out, "--root", "/nonexistent/root.pem"]);
    assert_exit(&output, 2, "cannot read --root file /nonexistent/root.pem");

    // A store other users can read.
    let document = std::fs::read(out).unwrap();
    std::fs::set_permissions(dir.join("ca/intermediate-3.key"), std::fs::Permissions::from_mode(0o644)).unwrap();
    let output = agent(&["attest", "--out", out, "--nsm", "mock", "--mock-dir", ca]);
    assert_exit(&output, 2, "chmod 600");
    assert_eq!(std::fs::read(out).unwrap(), document, "the earlier document is not overwritten");
}

#[test]
fn outfile_checked_before_kms_call() {
    let scratch = tempfile::tempdir().unwrap();
    let ca = scratch.path().join("ca");
    let ca = ca.to_str().unwrap();
    let output = agent(&["mock-ca", "init", "--dir", ca]);
    assert_eq!(output.status.code(), Some(0), "{}", String::from_utf8_lossy(&output.stderr));

    // Nothing listens on port 1, so a request that got as far as the parent
    // would exit 3; exit 2 shows that the check came first.
    let missing_dir = scratch.path().join("no-such-dir").join("out.bin");
    let cases = [
        (missing_dir.to_str().unwrap(), "does not exist; create it or choose another path"),
        (scratch.path().to_str().unwrap(), "is a directory; name a file in it"),
    ];
    for (outfile, expected) in cases {
        let output = agent(&[
            "generate-random",
            "--number-of-bytes",
            "32",
            "--outfile",
            outfile,
            "--parent",
            "tcp://127.0.0.1:1",
            "--nsm",
            "mock",
            "--mock-dir",
            ca,
        ]);
        assert_exit(&output, 2, expected);
    }
}

#[test]
fn missing_nsm_device_exits_2() {
    if std::path::Path::new("/dev/nsm").exists() {
        return; // Inside a real enclave the device opens.
    }
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("doc.cbor");
    let output = agent(&["attest", "--out", out.to_str().unwrap(), "--nsm", "device"]);
    assert_exit(&output, 2, "--nsm mock --mock-dir DIR");
}

#[test]
fn mock_flags_without_mock_nsm_exit_2() {
    let scratch = tempfile::tempdir().unwrap();
    let out = scratch.path().join("doc.cbor");
    let out = out.to_str().unwrap();
    for flags in [
        ["--mock-dir", "/tmp"],
        ["--mock-pcrs", "pcrs.json"],
        ["--mock-eif", "image.eif"],
        ["--mock-timestamp-skew", "-30"],
    ] {
        let mut args = vec!["attest", "--out", out, "--nsm", "device"];
        args.extend(flags);
        let output = agent(&args);
        assert_exit(&output, 2, &format!("invalid {}: applies only to the mock NSM", flags[0]));
    }
}
