//! The `eif-tool` binary end to end: reproducible ramdisks and images, PCR
//! changes when an application file changes, signing with a key made by
//! OpenSSL, `describe` output, policy generation and `policy-lint` exit
//! codes.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, SystemTime};

use serde_json::Value;

fn eif_tool(args: &[&str]) -> Output {
    eif_tool_with_env(args, &[])
}

fn eif_tool_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_eif-tool"));
    command.args(args).env_remove("SOURCE_DATE_EPOCH");
    for (name, value) in env {
        command.env(name, value);
    }
    command.output().unwrap()
}

fn success(output: &Output) -> String {
    assert!(
        output.status.success(),
        "eif-tool failed with {:?}: {}",
        output.status.code(),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout.clone()).unwrap()
}

fn path(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// A boot tree (a stand-in init) and an application tree.
struct Trees {
    dir: tempfile::TempDir,
    boot: PathBuf,
    app: PathBuf,
    kernel: PathBuf,
}

fn trees() -> Trees {
    let dir = tempfile::tempdir().unwrap();
    let boot = dir.path().join("boot");
    let app = dir.path().join("app");
    fs::create_dir_all(boot.join("sbin")).unwrap();
    fs::write(boot.join("sbin/init"), b"stand-in init").unwrap();
    fs::set_permissions(boot.join("sbin/init"), fs::Permissions::from_mode(0o755)).unwrap();
    fs::create_dir_all(app.join("rootfs/usr/bin")).unwrap();
    fs::write(app.join("rootfs/usr/bin/enclave-agent"), b"agent version 1").unwrap();
    fs::write(app.join("cmd"), b"/usr/bin/enclave-agent\n").unwrap();
    fs::write(app.join("env"), b"RUST_LOG=info\n").unwrap();
    let kernel = dir.path().join("bzImage");
    fs::write(&kernel, b"stand-in kernel").unwrap();
    Trees { dir, boot, app, kernel }
}

fn set_mtime(path: &Path, seconds: u64) {
    let time = SystemTime::UNIX_EPOCH + Duration::from_secs(seconds);
    let file = fs::File::options().read(true).open(path).unwrap();
    file.set_modified(time).unwrap();
}

fn touch_all(root: &Path, seconds: u64) {
    for entry in fs::read_dir(root).unwrap() {
        let entry = entry.unwrap();
        if entry.file_type().unwrap().is_dir() {
            touch_all(&entry.path(), seconds);
        }
        set_mtime(&entry.path(), seconds);
    }
}

/// Builds boot and application ramdisks and an image; returns the image
/// bytes and its `describe` JSON.
fn build_image(trees: &Trees, name: &str) -> (Vec<u8>, Value) {
    let boot = trees.dir.path().join(format!("{name}-boot.cpio"));
    let app = trees.dir.path().join(format!("{name}-app.cpio"));
    let image = trees.dir.path().join(format!("{name}.eif"));
    success(&eif_tool(&["ramdisk", path(&trees.boot), "-o", path(&boot)]));
    success(&eif_tool(&["ramdisk", path(&trees.app), "-o", path(&app)]));
    let built = success(&eif_tool(&[
        "build",
        "--kernel",
        path(&trees.kernel),
        "--cmdline",
        "console=ttyS0",
        "--ramdisk",
        path(&boot),
        "--ramdisk",
        path(&app),
        "--image-name",
        "test",
        "-o",
        path(&image),
    ]));
    let described: Value = serde_json::from_str(&success(&eif_tool(&["describe", path(&image)]))).unwrap();
    let built: Value = serde_json::from_str(&built).unwrap();
    assert_eq!(built["Measurements"], described["Measurements"]);
    (fs::read(&image).unwrap(), described)
}

#[test]
fn ramdisk_summary_counts_entries() {
    let trees = trees();
    let single = trees.dir.path().join("single");
    fs::create_dir(&single).unwrap();
    fs::write(single.join("init"), b"x").unwrap();
    let archive = trees.dir.path().join("single.cpio");

    let output = eif_tool(&["ramdisk", path(&single), "-o", path(&archive)]);

    success(&output);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let bytes = fs::metadata(&archive).unwrap().len();
    assert_eq!(stderr, format!("eif-tool: wrote {} (1 entry, {bytes} bytes)\n", archive.display()));
}

#[test]
fn ramdisk_of_missing_directory_named() {
    let trees = trees();
    let missing = trees.dir.path().join("missing");
    let archive = trees.dir.path().join("missing.cpio");

    let output = eif_tool(&["ramdisk", path(&missing), "-o", path(&archive)]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(stderr, format!("eif-tool: ramdisk directory {} does not exist\n", missing.display()));
    assert!(!archive.exists());
}

#[test]
fn ramdisk_bytes_ignore_modification_times() {
    let trees = trees();
    let first = trees.dir.path().join("first.cpio");
    let second = trees.dir.path().join("second.cpio");

    touch_all(&trees.app, 1_000_000_000);
    success(&eif_tool(&["ramdisk", path(&trees.app), "-o", path(&first)]));
    touch_all(&trees.app, 1_600_000_000);
    success(&eif_tool(&["ramdisk", path(&trees.app), "-o", path(&second)]));

    assert_eq!(fs::read(&first).unwrap(), fs::read(&second).unwrap());
}

#[test]
fn ramdisk_mtime_comes_from_source_date_epoch() {
    let trees = trees();
    let archive = trees.dir.path().join("dated.cpio");

    success(&eif_tool_with_env(
        &["ramdisk", path(&trees.app), "-o", path(&archive)],
        &[("SOURCE_DATE_EPOCH", "1700000000")],
    ));

    let bytes = fs::read(&archive).unwrap();
    // The mtime is the sixth 8-digit field after the 6-byte magic.
    assert_eq!(&bytes[6 + 5 * 8..6 + 6 * 8], format!("{:08x}", 1_700_000_000).as_bytes());
}

#[test]
fn invalid_source_date_epoch_is_rejected() {
    let trees = trees();
    let archive = trees.dir.path().join("bad.cpio");

    let output =
        eif_tool_with_env(&["ramdisk", path(&trees.app), "-o", path(&archive)], &[("SOURCE_DATE_EPOCH", "yesterday")]);

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("SOURCE_DATE_EPOCH=yesterday is invalid"));
    assert!(!archive.exists());
}

#[test]
fn images_from_retouched_trees_are_identical() {
    let trees = trees();

    touch_all(&trees.boot, 1_000_000_000);
    touch_all(&trees.app, 1_000_000_000);
    let (first, first_description) = build_image(&trees, "first");
    touch_all(&trees.boot, 1_700_000_000);
    touch_all(&trees.app, 1_700_000_000);
    let (second, second_description) = build_image(&trees, "second");

    assert_eq!(first_description["Measurements"], second_description["Measurements"]);
    assert_eq!(first, second);
}

#[test]
fn application_change_keeps_pcr1() {
    let trees = trees();

    let (_, before) = build_image(&trees, "before");
    fs::write(trees.app.join("rootfs/usr/bin/enclave-agent"), b"agent version 2").unwrap();
    let (_, after) = build_image(&trees, "after");

    let (before, after) = (&before["Measurements"], &after["Measurements"]);
    assert_ne!(before["PCR0"], after["PCR0"]);
    assert_ne!(before["PCR2"], after["PCR2"]);
    assert_eq!(before["PCR1"], after["PCR1"]);
}

#[test]
fn describe_prints_nitro_cli_fields() {
    let trees = trees();

    let (bytes, described) = build_image(&trees, "described");

    assert_eq!(described["EifVersion"], 4);
    assert_eq!(described["Architecture"], "x86_64");
    assert_eq!(described["IsSigned"], false);
    assert_eq!(described["CheckCRC"], true);
    assert_eq!(described["ImageName"], "test");
    assert_eq!(described["Metadata"]["BuildTime"], "1970-01-01T00:00:00Z");
    assert_eq!(described["Measurements"]["HashAlgorithm"], "Sha384 { ... }");
    for pcr in ["PCR0", "PCR1", "PCR2"] {
        let value = described["Measurements"][pcr].as_str().unwrap();
        assert_eq!(value.len(), 96, "{pcr}");
        assert!(value.bytes().all(|byte| byte.is_ascii_digit() || (b'a'..=b'f').contains(&byte)), "{pcr}");
    }
    assert!(described["Measurements"].get("PCR8").is_none());
    let kinds: Vec<&str> =
        described["Sections"].as_array().unwrap().iter().map(|s| s["Type"].as_str().unwrap()).collect();
    assert_eq!(kinds, ["kernel", "cmdline", "metadata", "ramdisk", "ramdisk"]);
    let last = described["Sections"].as_array().unwrap().last().unwrap();
    assert_eq!(last["Offset"].as_u64().unwrap() + 12 + last["Size"].as_u64().unwrap(), bytes.len() as u64);
}

#[test]
fn describe_text_lists_pcrs() {
    let trees = trees();
    let (_, described) = build_image(&trees, "text");
    let image = trees.dir.path().join("text.eif");

    let text = success(&eif_tool(&["describe", path(&image), "--output", "text"]));

    let pcr0 = described["Measurements"]["PCR0"].as_str().unwrap();
    assert!(text.contains(&format!("PCR0  {pcr0}")), "{text}");
    assert!(text.contains("Signature        none"), "{text}");
}

#[test]
fn describe_rejects_corrupt_image_with_exit_2() {
    let trees = trees();
    let (mut bytes, _) = build_image(&trees, "corrupt");
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    let corrupt = trees.dir.path().join("corrupt-copy.eif");
    fs::write(&corrupt, &bytes).unwrap();

    let output = eif_tool(&["describe", path(&corrupt)]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with("eif-tool: invalid EIF"), "{stderr}");
    assert!(stderr.contains("CRC mismatch"), "{stderr}");
}

#[test]
fn describe_short_and_empty_files() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &[u8], &str); 3] = [
        (
            "mz.bin",
            b"MZ",
            "not an EIF: expected magic 2e656966 (\".eif\"), found 4d5a in a 2-byte file; \
             pass an enclave image file, such as one that eif-tool build or nitro-cli build-enclave wrote",
        ),
        (
            "start.eif",
            b".e",
            "truncated EIF: the file has 2 bytes, fewer than the 548-byte header; copy the image again",
        ),
        ("empty.eif", b"", "the file is empty; copy the image again"),
    ];

    for (name, bytes, message) in cases {
        let file = dir.path().join(name);
        fs::write(&file, bytes).unwrap();

        let output = eif_tool(&["describe", path(&file)]);

        assert_eq!(output.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(stderr, format!("eif-tool: invalid EIF {}: {message}\n", file.display()));
    }
}

#[test]
fn describe_missing_file_names_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.eif");

    let output = eif_tool(&["describe", path(&missing)]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.starts_with(&format!("eif-tool: cannot read {}: ", missing.display())), "{stderr}");
    assert_eq!(stderr.matches("missing.eif").count(), 1, "{stderr}");
    assert_eq!(stderr.matches("No such file or directory").count(), 1, "{stderr}");
}

fn openssl(args: &[&str]) {
    let status = Command::new("openssl").args(args).status().unwrap();
    assert!(status.success(), "openssl {args:?} failed");
}

/// PCR8 from a certificate and key made by OpenSSL (SEC 1 key preceded by
/// an EC PARAMETERS block), checked against OpenSSL's own DER output.
#[test]
fn signed_build_with_openssl_key_has_pcr8() {
    let trees = trees();
    let key = trees.dir.path().join("key.pem");
    let certificate = trees.dir.path().join("cert.pem");
    let der = trees.dir.path().join("cert.der");
    openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-out", path(&key)]);
    openssl(&[
        "req",
        "-new",
        "-x509",
        "-key",
        path(&key),
        "-out",
        path(&certificate),
        "-days",
        "30",
        "-subj",
        "/CN=eif signer",
    ]);
    openssl(&["x509", "-in", path(&certificate), "-outform", "DER", "-out", path(&der)]);
    let boot = trees.dir.path().join("boot.cpio");
    let image = trees.dir.path().join("signed.eif");
    success(&eif_tool(&["ramdisk", path(&trees.boot), "-o", path(&boot)]));

    success(&eif_tool(&[
        "build",
        "--kernel",
        path(&trees.kernel),
        "--cmdline",
        "console=ttyS0",
        "--ramdisk",
        path(&boot),
        "--signing-certificate",
        path(&certificate),
        "--private-key",
        path(&key),
        "-o",
        path(&image),
    ]));
    let described: Value = serde_json::from_str(&success(&eif_tool(&["describe", path(&image)]))).unwrap();

    let expected = eif_tool::measure::measure_bytes(&fs::read(&der).unwrap());
    assert_eq!(described["Measurements"]["PCR8"], hex::encode(expected));
    assert_eq!(described["IsSigned"], true);
    assert_eq!(described["SignatureCheck"], true);
    assert_eq!(described["SigningCertificate"]["Subject"], "CN=eif signer");
}

#[test]
fn build_with_key_of_other_certificate_fails() {
    let trees = trees();
    let key = trees.dir.path().join("key.pem");
    let other_key = trees.dir.path().join("other.pem");
    let certificate = trees.dir.path().join("cert.pem");
    openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-out", path(&key)]);
    openssl(&["ecparam", "-name", "secp384r1", "-genkey", "-out", path(&other_key)]);
    openssl(&["req", "-new", "-x509", "-key", path(&key), "-out", path(&certificate), "-days", "30", "-subj", "/CN=s"]);
    let image = trees.dir.path().join("mismatch.eif");

    let output = eif_tool(&[
        "build",
        "--kernel",
        path(&trees.kernel),
        "--cmdline",
        "",
        "--ramdisk",
        path(&trees.kernel),
        "--signing-certificate",
        path(&certificate),
        "--private-key",
        path(&other_key),
        "-o",
        path(&image),
    ]);

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("private key does not match"));
    assert!(!image.exists());
}

#[test]
fn build_without_kernel_fails() {
    let trees = trees();
    let image = trees.dir.path().join("none.eif");

    let output = eif_tool(&[
        "build",
        "--kernel",
        "/nonexistent/bzImage",
        "--cmdline",
        "",
        "--ramdisk",
        path(&trees.kernel),
        "-o",
        path(&image),
    ]);

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent/bzImage"));
}

/// Runs `eif-tool build` on the stand-in kernel, used also as the ramdisk,
/// with `extra` arguments before `-o image`.
fn build_with(trees: &Trees, extra: &[&str], image: &Path) -> Output {
    let mut args = vec!["build", "--kernel", path(&trees.kernel), "--cmdline", "", "--ramdisk", path(&trees.kernel)];
    args.extend_from_slice(extra);
    args.extend_from_slice(&["-o", path(image)]);
    eif_tool(&args)
}

/// Builds `image` from `trees`, signed with `certificate` and `key`; checks
/// that the build exits 2 without writing the image, and returns its stderr.
fn rejected_signed_build(trees: &Trees, certificate: &Path, key: &Path, image: &Path) -> String {
    let output = build_with(trees, &["--signing-certificate", path(certificate), "--private-key", path(key)], image);

    assert_eq!(output.status.code(), Some(2), "{}", key.display());
    assert!(!image.exists(), "{}", key.display());
    String::from_utf8_lossy(&output.stderr).into_owned()
}

/// Writes an OpenSSL private key made by `command` (such as `ecparam -genkey`) to `key`.
fn openssl_key(command: &[&str], key: &Path) {
    let mut args = command.to_vec();
    args.extend_from_slice(&["-out", path(key)]);
    openssl(&args);
}

/// Makes a self-signed certificate for an OpenSSL private key.
fn openssl_certificate(key: &Path, certificate: &Path) {
    openssl(&["req", "-new", "-x509", "-key", path(key), "-out", path(certificate), "-days", "30", "-subj", "/CN=s"]);
}

#[test]
fn build_with_p256_certificate_names_key_type() {
    let trees = trees();
    let key = trees.dir.path().join("p256.pem");
    let certificate = trees.dir.path().join("p256cert.pem");
    openssl_key(&["ecparam", "-name", "prime256v1", "-genkey"], &key);
    openssl_certificate(&key, &certificate);
    let image = trees.dir.path().join("p256.eif");

    let stderr = rejected_signed_build(&trees, &certificate, &key, &image);

    let expected = format!(
        "eif-tool: cannot sign with {} and {}: signing certificate has an ECDSA P-256 (prime256v1) key; \
         expected an ECDSA P-384 (secp384r1) key. \
         Issue the certificate for a key made with `openssl ecparam -name secp384r1 -genkey`\n",
        certificate.display(),
        key.display()
    );
    assert_eq!(stderr, expected);
}

#[test]
fn build_names_other_private_key_type() {
    let trees = trees();
    let p384_key = trees.dir.path().join("p384.pem");
    let certificate = trees.dir.path().join("cert.pem");
    openssl_key(&["ecparam", "-name", "secp384r1", "-genkey"], &p384_key);
    openssl_certificate(&p384_key, &certificate);
    // `ecparam -genkey` writes SEC 1 keys, `genpkey` PKCS #8 keys.
    let cases: [(&[&str], &str); 4] = [
        (&["ecparam", "-name", "prime256v1", "-genkey"], "an ECDSA P-256 (prime256v1) key"),
        (&["ecparam", "-name", "secp521r1", "-genkey"], "an ECDSA P-521 (secp521r1) key"),
        (&["genpkey", "-algorithm", "RSA", "-pkeyopt", "rsa_keygen_bits:2048"], "an RSA key"),
        (&["genpkey", "-algorithm", "ed25519"], "an Ed25519 key"),
    ];
    let image = trees.dir.path().join("other-key.eif");

    for (command, name) in cases {
        let key = trees.dir.path().join("other-key.pem");
        openssl_key(command, &key);

        let stderr = rejected_signed_build(&trees, &certificate, &key, &image);

        let expected = format!(
            "private key is {name}; expected an ECDSA P-384 (secp384r1) key. \
             Create one with `openssl ecparam -name secp384r1 -genkey`\n"
        );
        assert!(stderr.ends_with(&expected), "{name}: {stderr}");
    }
}

#[test]
fn build_with_compressed_certificate_point_fails() {
    let trees = trees();
    let key = trees.dir.path().join("key.pem");
    let compressed_key = trees.dir.path().join("compressed.pem");
    let certificate = trees.dir.path().join("cert.pem");
    openssl_key(&["ecparam", "-name", "secp384r1", "-genkey"], &key);
    openssl(&["ec", "-in", path(&key), "-conv_form", "compressed", "-out", path(&compressed_key)]);
    openssl_certificate(&compressed_key, &certificate);
    let image = trees.dir.path().join("compressed.eif");

    let stderr = rejected_signed_build(&trees, &certificate, &key, &image);

    assert!(
        stderr.contains(
            "signing certificate has an ECDSA P-384 public key of 49 bytes; expected the 97-byte uncompressed point."
        ),
        "{stderr}"
    );
}

/// Returns the build inputs with `bad` in place of each input path in turn
/// and `good` for the others, each with the option that gets `bad`.
fn each_input_replaced<'a>(bad: &'a str, good: &'a str) -> [(&'static str, Vec<&'a str>); 4] {
    let inputs = |kernel, ramdisk, certificate, key| {
        vec!["--kernel", kernel, "--ramdisk", ramdisk, "--signing-certificate", certificate, "--private-key", key]
    };
    [
        ("--kernel", inputs(bad, good, good, good)),
        ("--ramdisk", inputs(good, bad, good, good)),
        ("--signing-certificate", inputs(good, good, bad, good)),
        ("--private-key", inputs(good, good, good, bad)),
    ]
}

/// Runs `eif-tool build` with `inputs` into `image`; checks that it exits 2
/// without writing the image, and returns its stderr.
fn rejected_build(inputs: &[&str], image: &Path) -> String {
    let mut args = vec!["build", "--cmdline", ""];
    args.extend_from_slice(inputs);
    args.extend_from_slice(&["-o", path(image)]);

    let output = eif_tool(&args);

    assert_eq!(output.status.code(), Some(2), "{inputs:?}");
    assert!(!image.exists(), "{inputs:?}");
    String::from_utf8_lossy(&output.stderr).into_owned()
}

#[test]
fn build_names_missing_inputs() {
    let trees = trees();
    let missing = trees.dir.path().join("missing");
    let image = trees.dir.path().join("missing-input.eif");

    for (option, inputs) in each_input_replaced(path(&missing), path(&trees.kernel)) {
        let stderr = rejected_build(&inputs, &image);

        assert_eq!(stderr, format!("eif-tool: {option} {} does not exist\n", missing.display()));
    }
}

#[test]
fn build_rejects_directory_inputs() {
    let trees = trees();
    let directory = path(&trees.app);
    let image = trees.dir.path().join("directory-input.eif");

    for (option, inputs) in each_input_replaced(directory, path(&trees.kernel)) {
        let stderr = rejected_build(&inputs, &image);

        let hint = if option == "--ramdisk" {
            format!("; pack the directory first with `eif-tool ramdisk {directory} -o FILE.cpio`")
        } else {
            String::new()
        };
        assert_eq!(stderr, format!("eif-tool: {option} {directory} is not a file{hint}\n"));
    }
}

#[test]
fn build_rejects_memory_out_of_range() {
    let trees = trees();
    let image = trees.dir.path().join("memory.eif");

    for memory in ["0", "17592186044416"] {
        let output = build_with(&trees, &["--memory", memory], &image);

        assert_eq!(output.status.code(), Some(2), "--memory {memory}");
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(stderr.contains(&format!("invalid value '{memory}' for '--memory <MIB>'")), "{stderr}");
        assert!(stderr.contains("pass a whole number of MiB from 1 to 17592186044415"), "{stderr}");
        assert!(!image.exists());
    }
}

#[test]
fn build_accepts_largest_memory() {
    let trees = trees();
    let image = trees.dir.path().join("large.eif");

    success(&build_with(&trees, &["--memory", "17592186044415"], &image));

    let described: Value = serde_json::from_str(&success(&eif_tool(&["describe", path(&image)]))).unwrap();
    assert_eq!(described["DefaultMemory"], u64::MAX - 0xf_ffff);
}

#[test]
fn build_rejects_zero_cpus() {
    let trees = trees();
    let image = trees.dir.path().join("cpus.eif");

    let output = build_with(&trees, &["--cpus", "0"], &image);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("invalid value '0' for '--cpus <COUNT>'"), "{stderr}");
    assert!(stderr.contains("pass a whole number of vCPUs from 1 to"), "{stderr}");
    assert!(!image.exists());
}

#[test]
fn output_into_missing_directory_named() {
    let trees = trees();
    let missing = trees.dir.path().join("missing");
    let image = missing.join("image.eif");
    let archive = missing.join("app.cpio");
    let cases = [
        (build_with(&trees, &[], &image), &image),
        (eif_tool(&["ramdisk", path(&trees.app), "-o", path(&archive)]), &archive),
    ];

    for (output, written) in cases {
        assert_eq!(output.status.code(), Some(2), "{}", written.display());
        let stderr = String::from_utf8_lossy(&output.stderr);
        let expected = format!(
            "eif-tool: cannot write {}: directory {} does not exist; create it or choose another output path\n",
            written.display(),
            missing.display()
        );
        assert_eq!(stderr, expected);
    }
}

#[test]
fn unusable_output_paths_are_rejected() {
    let trees = trees();
    let directory = trees.dir.path().join("out");
    fs::create_dir(&directory).unwrap();
    let under_file = trees.kernel.join("image");

    let ramdisk_into_directory = eif_tool(&["ramdisk", path(&trees.app), "-o", path(&directory)]);
    let build_into_directory = build_with(&trees, &[], &directory);
    let build_under_file = build_with(&trees, &[], &under_file);

    for output in [&ramdisk_into_directory, &build_into_directory] {
        assert_eq!(output.status.code(), Some(2));
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(
            stderr.starts_with(&format!("eif-tool: cannot write {}: it is a directory", directory.display())),
            "{stderr}"
        );
    }
    assert_eq!(build_under_file.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&build_under_file.stderr);
    assert!(stderr.contains(&format!("{} is not a directory", trees.kernel.display())), "{stderr}");
    assert!(directory.read_dir().unwrap().next().is_none(), "a temporary file was left behind");
}

#[test]
fn policy_binds_pcr0_and_passes_lint() {
    let trees = trees();
    let (_, described) = build_image(&trees, "policy");
    let image = trees.dir.path().join("policy.eif");
    let policy_path = trees.dir.path().join("policy.json");

    let policy = success(&eif_tool(&[
        "policy",
        "--eif",
        path(&image),
        "--principal",
        "arn:aws:iam::111122223333:role/parent",
        "--pcr",
        "1",
        "--pcr",
        "2",
    ]));
    fs::write(&policy_path, &policy).unwrap();
    let lint = eif_tool(&["policy-lint", path(&policy_path)]);

    let policy: Value = serde_json::from_str(&policy).unwrap();
    let condition = &policy["Statement"][1]["Condition"]["StringEqualsIgnoreCase"];
    assert_eq!(condition["kms:RecipientAttestation:ImageSha384"], described["Measurements"]["PCR0"]);
    assert_eq!(condition["kms:RecipientAttestation:PCR1"], described["Measurements"]["PCR1"]);
    assert_eq!(condition["kms:RecipientAttestation:PCR2"], described["Measurements"]["PCR2"]);
    assert_eq!(policy["Statement"][0]["Principal"]["AWS"], "arn:aws:iam::111122223333:root");
    assert_eq!(lint.status.code(), Some(0), "{}", String::from_utf8_lossy(&lint.stdout));
    assert!(String::from_utf8_lossy(&lint.stdout).contains("0 warnings"));
}

#[test]
fn policy_pcr8_of_unsigned_image_says_unsigned() {
    let trees = trees();
    build_image(&trees, "unsigned");
    let image = trees.dir.path().join("unsigned.eif");

    let output = eif_tool(&[
        "policy",
        "--eif",
        path(&image),
        "--principal",
        "arn:aws:iam::111122223333:role/parent",
        "--pcr",
        "8",
    ]);

    assert_eq!(output.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&output.stderr);
    let expected = "eif-tool: the image is not signed, so it has no PCR8; \
                    build it with --signing-certificate and --private-key to get one\n";
    assert_eq!(stderr, expected);
}

#[test]
fn policy_rejects_invalid_principal() {
    let trees = trees();
    build_image(&trees, "principal");
    let image = trees.dir.path().join("principal.eif");

    let output = eif_tool(&["policy", "--eif", path(&image), "--principal", "parent-role"]);

    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("invalid principal ARN \"parent-role\""));
}

#[test]
fn policy_lint_exit_codes() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.json");
    let broken = dir.path().join("broken.json");
    fs::write(
        &bad,
        r#"{"Version": "2012-10-17", "Statement": [
            {"Sid": "Everything", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:root"}, "Action": "kms:*", "Resource": "*"},
            {"Sid": "Enclave", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::111122223333:role/parent"},
             "Action": "kms:Decrypt", "Resource": "*",
             "Condition": {"StringEqualsIgnoreCase": {"kms:RecipientAttestation": "abc"}}}
        ]}"#,
    )
    .unwrap();
    fs::write(&broken, "{").unwrap();

    let flagged = eif_tool(&["policy-lint", path(&bad)]);
    let as_json = eif_tool(&["policy-lint", path(&bad), "--output", "json"]);
    let failed = eif_tool(&["policy-lint", path(&broken)]);

    assert_eq!(flagged.status.code(), Some(1));
    let text = String::from_utf8_lossy(&flagged.stdout);
    assert!(text.contains("statement 0 (Sid \"Everything\"): warning[recipient-allow-without-attestation]"), "{text}");
    assert!(text.contains("warning[grant-bypass]"), "{text}");
    assert!(text.contains("statement 1 (Sid \"Enclave\"): warning[unknown-condition-key]"), "{text}");
    assert!(text.contains("4 warnings"), "{text}");
    assert_eq!(as_json.status.code(), Some(1));
    let findings: Value = serde_json::from_slice(&as_json.stdout).unwrap();
    assert_eq!(findings.as_array().unwrap().len(), 4);
    assert_eq!(findings[0]["kind"], "recipient-allow-without-attestation");
    assert_eq!(failed.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&failed.stderr).contains("policy is not valid JSON"));
}
