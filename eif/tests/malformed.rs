//! Every defect the reader detects, each on an image that is valid except
//! for that defect, and property tests on truncated and corrupted images.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing, clippy::panic)]

use std::io::Cursor;
use std::path::PathBuf;

use eif_tool::format::{CRC_OFFSET, HEADER_LEN, SectionKind};
use eif_tool::measure::measure_bytes;
use eif_tool::reader::{EifError, MAX_SMALL_SECTION_LEN};
use eif_tool::{BuildOptions, read_eif, read_eif_bytes, write_eif};
use proptest::prelude::*;

/// Offsets in the header.
const VERSION_OFFSET: usize = 4;
const NUM_SECTIONS_OFFSET: usize = 26;
const OFFSETS_OFFSET: usize = 28;
const SIZES_OFFSET: usize = OFFSETS_OFFSET + 32 * 8;

/// Writes an EIF with the given sections in the given order and a correct
/// CRC, whatever the sections are.
fn assemble(sections: &[(u16, &[u8])]) -> Vec<u8> {
    let mut out = vec![0u8; HEADER_LEN];
    out[..4].copy_from_slice(b".eif");
    out[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&4u16.to_be_bytes());
    out[NUM_SECTIONS_OFFSET..NUM_SECTIONS_OFFSET + 2].copy_from_slice(&(sections.len() as u16).to_be_bytes());
    for (index, (kind, payload)) in sections.iter().enumerate() {
        let offset = out.len() as u64;
        set_u64(&mut out, OFFSETS_OFFSET + 8 * index, offset);
        set_u64(&mut out, SIZES_OFFSET + 8 * index, payload.len() as u64);
        out.extend_from_slice(&kind.to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&(payload.len() as u64).to_be_bytes());
        out.extend_from_slice(payload);
    }
    fix_crc(&mut out);
    out
}

fn set_u64(bytes: &mut [u8], at: usize, value: u64) {
    bytes[at..at + 8].copy_from_slice(&value.to_be_bytes());
}

fn fix_crc(bytes: &mut [u8]) {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&bytes[..CRC_OFFSET]);
    crc.update(&bytes[HEADER_LEN..]);
    let value = crc.finalize();
    bytes[CRC_OFFSET..HEADER_LEN].copy_from_slice(&value.to_be_bytes());
}

/// Sections as `(type, payload)` in file order.
type Sections<'a> = Vec<(u16, &'a [u8])>;

const KERNEL: u16 = 1;
const CMDLINE: u16 = 2;
const RAMDISK: u16 = 3;
const SIGNATURE: u16 = 4;
const METADATA: u16 = 5;

fn valid() -> Vec<u8> {
    assemble(&[
        (KERNEL, b"kernel"),
        (CMDLINE, b"console=ttyS0"),
        (METADATA, b"{}"),
        (RAMDISK, b"boot"),
        (RAMDISK, b"app"),
    ])
}

/// Offset of section `index`'s header in an image made by `valid`.
fn section_offset(image: &[u8], index: usize) -> usize {
    let at = OFFSETS_OFFSET + 8 * index;
    u64::from_be_bytes(image[at..at + 8].try_into().unwrap()) as usize
}

#[test]
fn valid_assembled_image_reads() {
    let image = read_eif_bytes(&valid()).unwrap();

    assert_eq!(image.sections.len(), 5);
    assert_eq!(image.measurements.pcr0, measure_bytes(b"kernelconsole=ttyS0bootapp"));
    assert_eq!(image.measurements.pcr1, measure_bytes(b"kernelconsole=ttyS0boot"));
    assert_eq!(image.measurements.pcr2, measure_bytes(b"app"));
    assert_eq!(image.measurements.pcr8, None);
}

#[test]
fn header_shorter_than_548_bytes_is_truncated() {
    let image = valid();

    let error = read_eif_bytes(&image[..547]).unwrap_err();

    assert!(matches!(error, EifError::Truncated { expected: 548, found: 547 }), "{error}");
}

#[test]
fn missing_tail_is_truncated() {
    let image = valid();
    let len = image.len() as u64;

    let error = read_eif_bytes(&image[..image.len() - 1]).unwrap_err();

    let message =
        format!("truncated EIF: the header declares {len} bytes but the file has {}; copy the image again", len - 1);
    assert_eq!(error.to_string(), message);
    let EifError::Truncated { expected, found } = error else { panic!("expected Truncated, got {error}") };
    assert_eq!(expected, len);
    assert_eq!(found, len - 1);
}

#[test]
fn empty_file_is_reported_empty() {
    let error = read_eif_bytes(&[]).unwrap_err();

    assert!(matches!(error, EifError::Empty), "{error}");
    assert_eq!(error.to_string(), "the file is empty; copy the image again");
}

#[test]
fn short_file_without_magic_is_not_an_eif() {
    let cases: [(&[u8], &str); 3] =
        [(b"\x7f", "found 7f in a 1-byte file"), (b"MZ", "found 4d5a in a 2-byte file"), (b".ei\n", "found 2e65690a")];

    for (bytes, found) in cases {
        let error = read_eif_bytes(bytes).unwrap_err();

        assert!(matches!(error, EifError::BadMagic { found: ref magic } if magic == bytes), "{bytes:?}: {error}");
        let expected = format!(
            "not an EIF: expected magic 2e656966 (\".eif\"), {found}; \
             pass an enclave image file, such as one that eif-tool build or nitro-cli build-enclave wrote"
        );
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn short_file_with_magic_prefix_is_truncated() {
    let image = valid();

    for len in [1, 2, 4, 6, HEADER_LEN - 1] {
        let error = read_eif_bytes(&image[..len]).unwrap_err();

        assert!(matches!(error, EifError::Truncated { expected: 548, found } if found == len as u64), "{len}: {error}");
        let expected =
            format!("truncated EIF: the file has {len} bytes, fewer than the 548-byte header; copy the image again");
        assert_eq!(error.to_string(), expected);
    }
}

#[test]
fn bad_magic_is_rejected() {
    let mut image = valid();
    image[..4].copy_from_slice(b"\x7fELF");

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::BadMagic { ref found } if found == b"\x7fELF"), "{error}");
    assert!(error.to_string().contains("7f454c46"), "{error}");
}

#[test]
fn unsupported_versions_are_rejected() {
    for version in [0u16, 1, 5, 0xffff] {
        let mut image = valid();
        image[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&version.to_be_bytes());
        fix_crc(&mut image);

        let error = read_eif_bytes(&image).unwrap_err();

        assert!(matches!(error, EifError::UnsupportedVersion { found } if found == version), "{version}: {error}");
    }
}

#[test]
fn section_counts_outside_1_to_32_are_rejected() {
    for count in [0u16, 33] {
        let mut image = valid();
        image[NUM_SECTIONS_OFFSET..NUM_SECTIONS_OFFSET + 2].copy_from_slice(&count.to_be_bytes());

        let error = read_eif_bytes(&image).unwrap_err();

        assert!(matches!(error, EifError::SectionCount { found } if found == count), "{count}: {error}");
    }
}

#[test]
fn unknown_section_types_are_rejected() {
    for kind in [0u16, 6, 0xffff] {
        let image = assemble(&[(KERNEL, b"k"), (CMDLINE, b"c"), (kind, b"?"), (RAMDISK, b"r")]);

        let error = read_eif_bytes(&image).unwrap_err();

        assert!(
            matches!(error, EifError::UnknownSectionType { index: 2, found, .. } if found == kind),
            "{kind}: {error}"
        );
    }
}

#[test]
fn overlapping_sections_are_rejected() {
    let mut image = valid();
    let kernel = section_offset(&image, 0) as u64;
    // Section 1 now starts inside the kernel's payload.
    set_u64(&mut image, OFFSETS_OFFSET + 8, kernel + 4);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::SectionsOverlap { first: 0, second: 1, .. }), "{error}");
}

#[test]
fn section_past_end_of_file_is_rejected() {
    let mut image = valid();
    set_u64(&mut image, OFFSETS_OFFSET + 8 * 4, 1 << 40);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::SectionOutOfFile { index: 4, offset, .. } if offset == 1 << 40), "{error}");
}

#[test]
fn section_size_overflowing_u64_is_out_of_file() {
    let mut image = valid();
    set_u64(&mut image, SIZES_OFFSET + 8 * 4, u64::MAX - 4);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::SectionOutOfFile { index: 4, .. }), "{error}");
}

#[test]
fn section_inside_header_is_rejected() {
    let mut image = valid();
    set_u64(&mut image, OFFSETS_OFFSET, 100);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::SectionOverlapsHeader { index: 0, offset: 100 }), "{error}");
}

#[test]
fn table_out_of_file_order_is_rejected() {
    let mut image = valid();
    // Swap the table entries of the two ramdisks, so the table lists the
    // last section of the file before the one in front of it.
    let (third, fourth) = (section_offset(&image, 3) as u64, section_offset(&image, 4) as u64);
    let (third_size, fourth_size) = (4u64, 3u64);
    set_u64(&mut image, OFFSETS_OFFSET + 8 * 3, fourth);
    set_u64(&mut image, OFFSETS_OFFSET + 8 * 4, third);
    set_u64(&mut image, SIZES_OFFSET + 8 * 3, fourth_size);
    set_u64(&mut image, SIZES_OFFSET + 8 * 4, third_size);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::SectionsOutOfOrder { index: 3, previous: 4 }), "{error}");
}

#[test]
fn gap_between_sections_is_rejected() {
    let mut image = valid();
    // Move the last section 4 bytes later and grow the file to match.
    let last = section_offset(&image, 4);
    image.splice(last..last, [0u8; 4]);
    set_u64(&mut image, OFFSETS_OFFSET + 8 * 4, last as u64 + 4);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::UnaccountedBytes { offset, len: 4 } if offset == last as u64), "{error}");
}

#[test]
fn trailing_bytes_are_rejected() {
    let mut image = valid();
    let len = image.len() as u64;
    image.extend_from_slice(b"junk");
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::TrailingBytes { offset, len: 4 } if offset == len), "{error}");
}

#[test]
fn section_header_size_disagreeing_with_table_is_rejected() {
    let mut image = valid();
    let kernel = section_offset(&image, 0);
    set_u64(&mut image, kernel + 4, 5);
    fix_crc(&mut image);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::SectionSizeMismatch { index: 0, table_size: 6, header_size: 5 }), "{error}");
}

#[test]
fn crc_mismatch_is_rejected() {
    let mut image = valid();
    let last = image.len() - 1;
    image[last] ^= 0x01;

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::CrcMismatch { stored, computed } if stored != computed), "{error}");
}

#[test]
fn crc_covers_the_section_table() {
    let mut image = valid();
    // An unused table slot is not validated, but the CRC still covers it.
    set_u64(&mut image, OFFSETS_OFFSET + 8 * 31, 1);

    let error = read_eif_bytes(&image).unwrap_err();

    assert!(matches!(error, EifError::CrcMismatch { .. }), "{error}");
}

#[test]
fn sections_out_of_format_order_are_rejected() {
    let cases: [(&str, Sections<'_>, usize, SectionKind, &str); 5] = [
        ("cmdline first", vec![(CMDLINE, b"c"), (KERNEL, b"k"), (RAMDISK, b"r")], 0, SectionKind::Cmdline, "kernel"),
        ("two kernels", vec![(KERNEL, b"k"), (KERNEL, b"k"), (RAMDISK, b"r")], 1, SectionKind::Kernel, "cmdline"),
        (
            "metadata after ramdisk",
            vec![(KERNEL, b"k"), (CMDLINE, b"c"), (RAMDISK, b"r"), (METADATA, b"{}")],
            3,
            SectionKind::Metadata,
            "ramdisk or signature",
        ),
        (
            "signature before ramdisk",
            vec![(KERNEL, b"k"), (CMDLINE, b"c"), (SIGNATURE, b"\x80"), (RAMDISK, b"r")],
            2,
            SectionKind::Signature,
            "metadata or ramdisk",
        ),
        (
            "ramdisk after signature",
            vec![(KERNEL, b"k"), (CMDLINE, b"c"), (RAMDISK, b"r"), (SIGNATURE, b"\x80"), (RAMDISK, b"r")],
            4,
            SectionKind::Ramdisk,
            "final (the signature section must be last)",
        ),
    ];

    for (name, sections, index, kind, expected_text) in cases {
        let error = read_eif_bytes(&assemble(&sections)).unwrap_err();

        assert!(
            matches!(error, EifError::SectionOrder { index: i, found, expected } if i == index && found == kind && expected == expected_text),
            "{name}: {error}"
        );
    }
}

#[test]
fn missing_sections_are_rejected() {
    let cases: [(Sections<'_>, SectionKind); 3] = [
        (vec![(KERNEL, b"k")], SectionKind::Cmdline),
        (vec![(KERNEL, b"k"), (CMDLINE, b"c")], SectionKind::Ramdisk),
        (vec![(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, b"{}")], SectionKind::Ramdisk),
    ];

    for (sections, kind) in cases {
        let error = read_eif_bytes(&assemble(&sections)).unwrap_err();

        assert!(matches!(error, EifError::MissingSection { kind: found } if found == kind), "{kind}: {error}");
    }
}

#[test]
fn oversized_metadata_is_rejected() {
    let metadata = vec![b' '; MAX_SMALL_SECTION_LEN as usize + 1];

    let error = read_eif_bytes(&assemble(&[(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, &metadata), (RAMDISK, b"r")]))
        .unwrap_err();

    assert!(matches!(error, EifError::SectionTooLarge { kind: SectionKind::Metadata, .. }), "{error}");
}

#[test]
fn metadata_that_is_not_json_is_rejected() {
    let error =
        read_eif_bytes(&assemble(&[(KERNEL, b"k"), (CMDLINE, b"c"), (METADATA, b"{not json"), (RAMDISK, b"r")]))
            .unwrap_err();

    assert!(matches!(error, EifError::MalformedMetadata(_)), "{error}");
}

#[test]
fn signature_that_is_not_cbor_is_rejected() {
    let error =
        read_eif_bytes(&assemble(&[(KERNEL, b"k"), (CMDLINE, b"c"), (RAMDISK, b"r"), (SIGNATURE, b"\xff\xff")]))
            .unwrap_err();

    assert!(matches!(error, EifError::Signature(_)), "{error}");
    assert!(error.to_string().contains("malformed signature section"), "{error}");
}

#[test]
fn version_3_image_without_metadata_reads() {
    let mut image = assemble(&[(KERNEL, b"k"), (CMDLINE, b"c"), (RAMDISK, b"r")]);
    image[VERSION_OFFSET..VERSION_OFFSET + 2].copy_from_slice(&3u16.to_be_bytes());
    fix_crc(&mut image);

    let read = read_eif_bytes(&image).unwrap();

    assert_eq!(read.metadata, None);
    assert_eq!(read.measurements.pcr1, measure_bytes(b"kcr"));
    assert_eq!(read.measurements.pcr2, measure_bytes(b""));
}

#[test]
fn missing_file_is_an_io_error() {
    let error = read_eif(&PathBuf::from("/nonexistent/image.eif")).unwrap_err();

    assert!(matches!(error, EifError::Io { .. }), "{error}");
    assert!(error.to_string().contains("/nonexistent/image.eif"), "{error}");
}

/// A built image large enough that the reader hashes the application
/// ramdisks on a second thread (more than 4 MiB of them).
#[test]
fn large_application_ramdisk_is_hashed_in_parallel_correctly() {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    let boot = dir.path().join("boot");
    let app = dir.path().join("app");
    let app_bytes: Vec<u8> = (0..5_000_000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&kernel, b"kernel").unwrap();
    std::fs::write(&boot, b"boot").unwrap();
    std::fs::write(&app, &app_bytes).unwrap();
    let options = BuildOptions::new(kernel, "cmdline".to_owned(), vec![boot, app]);
    let mut out = Cursor::new(Vec::new());

    let built = write_eif(&options, &mut out).unwrap();
    let image = read_eif_bytes(out.get_ref()).unwrap();

    assert_eq!(image.measurements, built);
    assert_eq!(built.pcr2, measure_bytes(&app_bytes));
    let mut all = b"kernelcmdlineboot".to_vec();
    all.extend_from_slice(&app_bytes);
    assert_eq!(built.pcr0, measure_bytes(&all));
}

fn built_image() -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let kernel = dir.path().join("kernel");
    let boot = dir.path().join("boot");
    let app = dir.path().join("app");
    std::fs::write(&kernel, vec![0x4b; 3000]).unwrap();
    std::fs::write(&boot, vec![0x42; 500]).unwrap();
    std::fs::write(&app, vec![0x41; 700]).unwrap();
    let options = BuildOptions::new(kernel, "console=ttyS0".to_owned(), vec![boot, app]);
    let mut out = Cursor::new(Vec::new());
    write_eif(&options, &mut out).unwrap();
    out.into_inner()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn truncated_image_is_always_truncated_error(cut in 0usize..4_800) {
        let image = built_image();
        let cut = cut % image.len();

        let result = read_eif_bytes(&image[..cut]);

        if cut == 0 {
            prop_assert!(matches!(result, Err(EifError::Empty)), "cut at 0: {:?}", result.err());
        } else {
            prop_assert!(matches!(result, Err(EifError::Truncated { .. })), "cut at {}: {:?}", cut, result.err());
        }
    }

    #[test]
    fn any_single_byte_corruption_is_rejected(position in 0usize..4_800, flip in 1u8..=255) {
        let mut image = built_image();
        let position = position % image.len();
        image[position] ^= flip;

        let result = read_eif_bytes(&image);

        prop_assert!(result.is_err(), "corruption at {} was accepted", position);
    }

    #[test]
    fn random_bytes_after_magic_never_panic(body in proptest::collection::vec(any::<u8>(), 0..2_000)) {
        let mut image = b".eif\x00\x04".to_vec();
        image.extend_from_slice(&body);

        let _ = read_eif_bytes(&image);
    }

    #[test]
    fn random_section_tables_never_panic(
        count in 0u16..40,
        offsets in proptest::collection::vec(any::<u64>(), 32),
        sizes in proptest::collection::vec(0u64..10_000, 32),
    ) {
        let mut image = valid();
        image[NUM_SECTIONS_OFFSET..NUM_SECTIONS_OFFSET + 2].copy_from_slice(&count.to_be_bytes());
        for index in 0..32 {
            set_u64(&mut image, OFFSETS_OFFSET + 8 * index, offsets[index] % 4_096);
            set_u64(&mut image, SIZES_OFFSET + 8 * index, sizes[index]);
        }
        fix_crc(&mut image);

        let _ = read_eif_bytes(&image);
    }
}
