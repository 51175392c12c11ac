//! enclave-agent as a process: messages about malformed documents and
//! unusable CA store paths name the input and the fix, and contain no Rust
//! `Debug` text.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Write as _;
use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use base64::Engine as _;

/// Text that `Debug` formatting of ciborium, I/O and nom errors produces.
const DEBUG_TEXT: [&str; 6] = ["Syntax(", "Io(", "Error {", "UnexpectedEof", "Parsing Error", "Semantic("];

fn agent_command(args: &[&str]) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_enclave-agent"));
    command.args(args).env("RUST_LOG", "off");
    command
}

fn agent(args: &[&str]) -> Output {
    agent_command(args).output().unwrap()
}

/// Runs the agent with `input` on standard input. The agent may stop reading
/// early, so a failed write is ignored.
fn agent_with_stdin(args: &[&str], input: &[u8]) -> Output {
    let mut child =
        agent_command(args).stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let _ = stdin.write_all(input);
    drop(stdin);
    child.wait_with_output().unwrap()
}

fn stderr(output: &Output) -> String {
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Checks the exit code, that stderr contains each of `expected`, and that
/// it contains no `Debug` text.
fn assert_failure(output: &Output, code: i32, expected: &[&str]) {
    let stderr = stderr(output);
    assert_eq!(output.status.code(), Some(code), "{stderr}");
    for text in expected {
        assert!(stderr.contains(text), "expected `{text}` in: {stderr}");
    }
    for debug in DEBUG_TEXT {
        assert!(!stderr.contains(debug), "`{debug}` in: {stderr}");
    }
}

/// Creates a mock CA store in `dir/ca`, writes a document signed by it to
/// `dir/doc.cbor` and returns the document.
fn mock_document(dir: &Path) -> Vec<u8> {
    let ca = dir.join("ca");
    let out = dir.join("doc.cbor");
    let output = agent(&["mock-ca", "init", "--dir", ca.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let output =
        agent(&["attest", "--out", out.to_str().unwrap(), "--nsm", "mock", "--mock-dir", ca.to_str().unwrap()]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    std::fs::read(out).unwrap()
}

#[test]
fn verify_random_bytes_not_attestation() {
    let scratch = tempfile::tempdir().unwrap();
    // Byte patterns that fail in each way random data does: a syntax error,
    // an item cut short, an invalid simple value, and a small item followed
    // by more bytes.
    let cases: [(&[u8], &str); 4] = [
        (
            &[0xa5, 0x1c, 0x00, 0x01],
            "found bytes starting with 0xa5 that are not valid CBOR (invalid CBOR at byte offset 1)",
        ),
        (
            &[0x5b, 0xff, 0xff, 0x00],
            "found bytes starting with 0x5b that are not valid CBOR (the bytes end inside a CBOR item)",
        ),
        (&[0xb4, 0xf8, 0x00, 0x00], "found bytes starting with 0xb4 that are not valid CBOR"),
        (&[0x21, 0x84, 0x00, 0x00], "found integer -2"),
    ];
    for (index, (bytes, found)) in cases.into_iter().enumerate() {
        let path = scratch.path().join(format!("random-{index}.bin"));
        std::fs::write(&path, bytes).unwrap();
        let path = path.to_str().unwrap();
        let output = agent(&["verify-attestation", path]);
        let prefix = format!(
            "invalid document: cannot parse {path}: input is not an attestation document: expected a COSE_Sign1"
        );
        assert_failure(&output, 2, &[&prefix, found]);
    }
}

#[test]
fn verify_empty_document_named() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("empty.cbor");
    std::fs::write(&path, b"").unwrap();
    let output = agent(&["verify-attestation", path.to_str().unwrap()]);
    let expected =
        format!("{} is empty; expected an attestation document as binary CBOR or base64 text", path.display());
    assert_failure(&output, 2, &[&expected]);

    let output = agent_with_stdin(&["verify-attestation", "-"], b" \n\t\n");
    assert_failure(&output, 2, &["standard input contains only whitespace; expected an attestation document"]);
}

#[test]
fn verify_truncated_document_named() {
    let scratch = tempfile::tempdir().unwrap();
    let document = mock_document(scratch.path());
    for length in [1, 100, document.len() - 1] {
        let path = scratch.path().join(format!("truncated-{length}.cbor"));
        std::fs::write(&path, &document[..length]).unwrap();
        let output = agent(&["verify-attestation", path.to_str().unwrap()]);
        let expected = format!(
            "invalid document: cannot parse {}: attestation document is truncated: its {length} bytes end inside a CBOR item, so the COSE_Sign1 structure is incomplete; pass the whole document",
            path.display()
        );
        assert_failure(&output, 2, &[&expected]);
    }
}

#[test]
fn verify_oversized_stdin_names_one_limit() {
    let limit = "more than the 262144-byte (256 KiB) maximum size of an attestation document";

    let output = agent_with_stdin(&["verify-attestation", "-"], &vec![0x84; 400_000]);
    assert_failure(&output, 2, &[&format!("standard input is 400000 bytes, {limit}")]);
    assert!(!stderr(&output).contains("353621"), "{}", stderr(&output));

    let output = agent_with_stdin(&["verify-attestation", "-"], &vec![0x84; 600_000]);
    assert_failure(&output, 2, &["standard input is larger than the 262144-byte (256 KiB) maximum size"]);

    let text = base64::engine::general_purpose::STANDARD.encode(vec![0x84; 300_000]);
    let output = agent_with_stdin(&["verify-attestation", "-"], text.as_bytes());
    assert_failure(&output, 2, &[&format!("standard input decodes from base64 to 300000 bytes, {limit}")]);
}

#[test]
fn verify_wrapped_base64_at_limit_not_too_large() {
    // A 256 KiB document as base64 wrapped at 76 columns is 354128 bytes of
    // text. It must reach the parser rather than fail the size check.
    let mut document = vec![0u8; 256 * 1024];
    document[0] = 0x84;
    let text = base64::engine::general_purpose::STANDARD.encode(&document);
    let wrapped: Vec<u8> = text.as_bytes().chunks(76).flat_map(|line| [line, &b"\n"[..]].concat()).collect();
    let output = agent_with_stdin(&["verify-attestation", "-"], &wrapped);
    assert_failure(&output, 2, &["invalid document: cannot parse standard input: "]);
}

#[test]
fn verify_summary_to_closed_pipe_exits_0() {
    let scratch = tempfile::tempdir().unwrap();
    mock_document(scratch.path());
    let document = scratch.path().join("doc.cbor");
    let root = scratch.path().join("ca/root.pem");
    let mut child = agent_command(&[
        "verify-attestation",
        document.to_str().unwrap(),
        "--no-aws-root",
        "--root",
        root.to_str().unwrap(),
    ])
    .stdout(Stdio::piped())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    // Closing the read end makes the summary's write fail with a broken pipe.
    drop(child.stdout.take());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    assert!(!stderr(&output).contains("panicked"), "{}", stderr(&output));
}

#[test]
fn mock_ca_init_on_file_not_directory() {
    let scratch = tempfile::tempdir().unwrap();
    let path = scratch.path().join("ca-file");
    std::fs::write(&path, b"").unwrap();
    for mode in [0o644, 0o600] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = agent(&["mock-ca", "init", "--dir", path.to_str().unwrap()]);
        let expected =
            format!("mock CA store path {} is a regular file, not a directory; pass a directory", path.display());
        assert_failure(&output, 2, &[&expected]);
        assert!(!stderr(&output).contains("chmod"), "{}", stderr(&output));
    }

    // Opening a store at the file reports the same, not that the store is missing.
    let output = agent(&["attest", "--out", "-", "--nsm", "mock", "--mock-dir", path.to_str().unwrap()]);
    assert_failure(&output, 2, &["is a regular file, not a directory"]);
}

#[test]
fn mock_ca_init_names_granted_access() {
    let scratch = tempfile::tempdir().unwrap();
    let cases = [
        (0o755, "which lets its group and all other users list its contents and access files in it by name"),
        (0o750, "which lets its group list its contents and access files in it by name; "),
        (0o701, "which lets all other users access files in it by name; "),
        (0o770, "which lets its group list its contents, create or delete files in it and access files in it by name"),
    ];
    for (mode, access) in cases {
        let dir = scratch.path().join(format!("ca-{mode:o}"));
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
        let output = agent(&["mock-ca", "init", "--dir", dir.to_str().unwrap()]);
        let expected_mode = format!("mock CA store path {} has mode {mode:04o}, {access}", dir.display());
        let fix = format!("run `chmod 700 {}`", dir.display());
        assert_failure(&output, 2, &[&expected_mode, &fix]);
        if mode & 0o022 == 0 {
            assert!(!stderr(&output).contains("write"), "{}", stderr(&output));
        }
    }
}

#[test]
fn byte_count_out_of_range_named() {
    // Each case: the value and the message it must produce.
    let cases = [
        ("0", "`0` is out of range; write a whole number of bytes from 1 to 1024"),
        ("1025", "`1025` is out of range; write a whole number of bytes from 1 to 1024"),
        ("-5", "`-5` is out of range; write a whole number of bytes from 1 to 1024"),
        ("ten", "`ten` is not a whole number; write a number of bytes from 1 to 1024"),
    ];
    for (value, message) in cases {
        for command in ["generate-random", "generate-data-key"] {
            let mut args = vec![command, "--number-of-bytes", value];
            if command == "generate-data-key" {
                args.extend(["--key-id", "alias/example"]);
            }
            assert_failure(&agent(&args), 2, &[message]);
        }
    }
}
