//! `make simulate`'s program on the debug binaries: the DeriveSharedSecret
//! flow checked against OpenSSL, then the key bound to an enclave image by
//! the policy eif-tool writes, allowing that image and denying another.

use std::process::Command;

use recipient_tests::Binaries;

#[test]
fn simulate_passes_every_check() {
    let binaries = Binaries::build_debug().unwrap();
    let bin_dir = binaries.path("enclave-agent").parent().unwrap().to_path_buf();
    let output = Command::new(env!("CARGO_BIN_EXE_simulate")).arg("--bin-dir").arg(&bin_dir).output().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);

    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("shared secret 32 bytes"), "{stdout}");
    assert!(stdout.contains(": matches OpenSSL's"), "{stdout}");
    assert!(stdout.contains("AccessDeniedException, as expected"), "{stdout}");
    assert!(
        stdout.lines().last().unwrap_or_default().starts_with("RESULT: the enclave's shared secret matches"),
        "{stdout}"
    );
}

#[test]
fn simulate_on_p384() {
    let binaries = Binaries::build_debug().unwrap();
    let bin_dir = binaries.path("enclave-agent").parent().unwrap().to_path_buf();
    let output = Command::new(env!("CARGO_BIN_EXE_simulate"))
        .arg("--bin-dir")
        .arg(&bin_dir)
        .args(["--key-spec", "ECC_NIST_P384"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(stdout.contains("enclave secret: 48 bytes"), "{stdout}");
}
