//! Reading an EIF: layout validation, the CRC check and the PCR measurement.
//!
//! Every offset and size in the header is checked against the file length
//! before anything is read, and sections must tile the file after the
//! header: no overlaps, no gaps, no trailing bytes. Sections must come in the
//! order nitro-cli writes them: kernel, cmdline, an optional metadata
//! section, one or more ramdisks, an optional signature.
//!
//! Measuring hashes the application ramdisks twice (for PCR0 and for PCR2),
//! so when they are large a second thread hashes them for PCR2 and computes
//! their part of the CRC while the calling thread hashes the whole image.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use aws_lc_rs::digest::{Context, SHA384};
use tracing::debug;

use crate::format::{
    CRC_OFFSET, CURRENT_VERSION, HEADER_LEN, Header, MAGIC, MAX_SECTIONS, MIN_VERSION, SECTION_HEADER_LEN,
    SectionHeader, SectionKind,
};
use crate::measure::{Measurements, Pcr, extend_zero_pcr, finish};
use crate::signature::{SignatureError, SignatureInfo, parse_section};

/// Maximum size of the metadata and signature sections, which are read into
/// memory; nitro-cli writes a few kilobytes for each.
pub const MAX_SMALL_SECTION_LEN: u64 = 1 << 20;

/// Application ramdisks smaller than this are hashed on the calling thread.
const PARALLEL_THRESHOLD: u64 = 4 << 20;

/// Read size for streaming section payloads.
const CHUNK_LEN: usize = 256 << 10;

/// Errors reading an EIF. Each variant is a defect of the file, except
/// `Io`.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EifError {
    /// The file could not be opened or read (an environment problem, not a
    /// defect of the image).
    #[error("cannot read {path}: {error}")]
    Io { path: String, error: io::Error },
    /// The file has no bytes.
    #[error("the file is empty; copy the image again")]
    Empty,
    /// The file is shorter than its header or than the sections the header
    /// declares. `expected` is the header length in the first case.
    #[error("{}", truncated_message(*expected, *found))]
    Truncated { expected: u64, found: u64 },
    /// The file does not start with `.eif`, or, when it is shorter than the
    /// magic, with the first bytes of `.eif`.
    #[error(
        "not an EIF: expected magic 2e656966 (\".eif\"), found {}; pass an enclave image file, such as one \
         that eif-tool build or nitro-cli build-enclave wrote",
        found_magic_text(found)
    )]
    BadMagic {
        /// The first 4 bytes of the file, or all of them in a shorter file.
        found: Vec<u8>,
    },
    /// The header version is outside the versions this crate reads.
    #[error("unsupported EIF version {found}; versions {MIN_VERSION} to {CURRENT_VERSION} are supported")]
    UnsupportedVersion { found: u16 },
    /// The header declares no sections or more than the table holds.
    #[error("invalid section count {found}; expected 1 to {MAX_SECTIONS}")]
    SectionCount { found: u16 },
    /// A section starts inside the file header.
    #[error("section {index} starts at offset {offset}, inside the {HEADER_LEN}-byte file header")]
    SectionOverlapsHeader { index: usize, offset: u64 },
    /// A section extends past the end of the file (or past 2^64).
    #[error("section {index} at offset {offset} with {size} payload bytes ends outside the {file_len}-byte file")]
    SectionOutOfFile { index: usize, offset: u64, size: u64, file_len: u64 },
    /// Two sections share bytes.
    #[error(
        "sections {first} and {second} overlap: section {first} ends at {first_end}, section {second} starts at {second_offset}"
    )]
    SectionsOverlap { first: usize, second: usize, first_end: u64, second_offset: u64 },
    /// The section table lists sections in another order than they appear in
    /// the file.
    #[error("section table is out of file order: section {index} lies before section {previous}")]
    SectionsOutOfOrder { index: usize, previous: usize },
    /// Bytes between two sections belong to no section.
    #[error("{len} bytes at offset {offset} belong to no section")]
    UnaccountedBytes { offset: u64, len: u64 },
    /// Bytes after the last section.
    #[error("{len} trailing bytes after the last section, at offset {offset}")]
    TrailingBytes { offset: u64, len: u64 },
    /// A section header's type is not one of the five known types.
    #[error("section {index} at offset {offset} has unknown type {found}; expected 1 (kernel) to 5 (metadata)")]
    UnknownSectionType { index: usize, offset: u64, found: u16 },
    /// A section header disagrees with the section table about the size.
    #[error("section {index}: the section table says {table_size} bytes but its section header says {header_size}")]
    SectionSizeMismatch { index: usize, table_size: u64, header_size: u64 },
    /// A section appears where the format does not allow it.
    #[error("section {index} is a {found} section where a {expected} section was expected")]
    SectionOrder { index: usize, found: SectionKind, expected: &'static str },
    /// A required section is absent.
    #[error("the image has no {kind} section")]
    MissingSection { kind: SectionKind },
    /// A section that is read into memory exceeds its limit.
    #[error("{kind} section of {size} bytes exceeds the maximum of {max} bytes")]
    SectionTooLarge { kind: SectionKind, size: u64, max: u64 },
    /// The stored CRC does not match the file's contents.
    #[error(
        "CRC mismatch: the header stores {stored:08x} but the file's CRC-32 is {computed:08x}; the image is corrupt"
    )]
    CrcMismatch { stored: u32, computed: u32 },
    /// The metadata section is not JSON.
    #[error("metadata section is not valid JSON: {0}")]
    MalformedMetadata(String),
    /// The signature section is malformed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Formats [`EifError::Truncated`]. A file shorter than the header has no
/// declared length, so its message names the header length instead. A
/// declared length is always longer, because an image has at least one section.
fn truncated_message(expected: u64, found: u64) -> String {
    if expected == HEADER_LEN as u64 {
        format!(
            "truncated EIF: the file has {found} bytes, fewer than the {HEADER_LEN}-byte header; copy the image again"
        )
    } else {
        format!("truncated EIF: the header declares {expected} bytes but the file has {found}; copy the image again")
    }
}

/// Formats the bytes found in place of the magic, with the file length when
/// the file is shorter than the magic.
fn found_magic_text(found: &[u8]) -> String {
    if found.len() < MAGIC.len() {
        format!("{} in a {}-byte file", hex::encode(found), found.len())
    } else {
        hex::encode(found)
    }
}

/// One section of an image, in file order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Section {
    /// Position in the section table.
    pub index: usize,
    pub kind: SectionKind,
    /// Offset of the section's 12-byte header.
    pub offset: u64,
    /// Payload size in bytes.
    pub size: u64,
    /// The section header's flags field (0 in images nitro-cli writes).
    pub flags: u16,
}

impl Section {
    /// Offset of the first payload byte.
    pub fn payload_offset(&self) -> u64 {
        self.offset.saturating_add(SECTION_HEADER_LEN as u64)
    }

    fn encoded_header(&self) -> [u8; SECTION_HEADER_LEN] {
        SectionHeader { kind: self.kind.to_wire(), flags: self.flags, size: self.size }.encode()
    }
}

/// A validated, measured image.
#[derive(Debug, Clone)]
pub struct EifImage {
    pub header: Header,
    /// Sections in file order.
    pub sections: Vec<Section>,
    pub file_len: u64,
    pub measurements: Measurements,
    /// The parsed signature section of a signed image.
    pub signature: Option<SignatureInfo>,
    /// The metadata section's JSON, when present.
    pub metadata: Option<serde_json::Value>,
}

/// Reads, validates and measures the EIF at `path`.
pub fn read_eif(path: &Path) -> Result<EifImage, EifError> {
    let io_error = |error| EifError::Io { path: path.display().to_string(), error };
    let file = File::open(path).map_err(io_error)?;
    let file_len = file.metadata().map_err(io_error)?.len();
    debug!(path = %path.display(), file_len, "reading EIF");
    read_source(&FileSource { file, file_len }, &path.display().to_string())
}

/// Reads the EIF at `path` and returns its PCRs: the entry point for tools
/// that only need the measurements (the mock NSM, policy generation).
pub fn measure_eif(path: &Path) -> Result<Measurements, EifError> {
    read_eif(path).map(|image| image.measurements)
}

/// Reads, validates and measures an EIF held in memory.
pub fn read_eif_bytes(bytes: &[u8]) -> Result<EifImage, EifError> {
    read_source(&bytes, "<memory>")
}

/// Random access to the bytes of an image.
trait Source: Sync {
    fn len(&self) -> u64;
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
}

struct FileSource {
    file: File,
    file_len: u64,
}

impl Source for FileSource {
    fn len(&self) -> u64 {
        self.file_len
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        FileExt::read_exact_at(&self.file, buf, offset)
    }
}

impl Source for &[u8] {
    fn len(&self) -> u64 {
        <[u8]>::len(self) as u64
    }

    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        let bytes = usize::try_from(offset)
            .ok()
            .and_then(|start| Some(start..start.checked_add(buf.len())?))
            .and_then(|range| self.get(range))
            .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        buf.copy_from_slice(bytes);
        Ok(())
    }
}

fn read_source(source: &impl Source, name: &str) -> Result<EifImage, EifError> {
    let io_error = |error| EifError::Io { path: name.to_owned(), error };
    let file_len = source.len();

    if file_len == 0 {
        return Err(EifError::Empty);
    }
    // The magic is checked before the length, so that a file shorter than the
    // header is reported as truncated only when its bytes start like an EIF.
    let mut header_bytes = [0u8; HEADER_LEN];
    let available = usize::try_from(file_len).unwrap_or(HEADER_LEN).min(HEADER_LEN);
    source.read_exact_at(header_bytes.get_mut(..available).unwrap_or_default(), 0).map_err(io_error)?;
    let magic_len = available.min(MAGIC.len());
    let found_magic = header_bytes.get(..magic_len).unwrap_or_default();
    if MAGIC.get(..magic_len) != Some(found_magic) {
        return Err(EifError::BadMagic { found: found_magic.to_vec() });
    }
    if file_len < HEADER_LEN as u64 {
        return Err(EifError::Truncated { expected: HEADER_LEN as u64, found: file_len });
    }
    let header = Header::decode(&header_bytes);
    if !(MIN_VERSION..=CURRENT_VERSION).contains(&header.version) {
        return Err(EifError::UnsupportedVersion { found: header.version });
    }

    let placements = check_layout(&header, file_len)?;
    let sections = read_section_headers(source, &placements).map_err(|error| match error {
        ReadError::Eif(error) => error,
        ReadError::Io(source) => io_error(source),
    })?;
    check_structure(&sections)?;

    let crc_prefix = header_bytes.get(..CRC_OFFSET).unwrap_or_default();
    let streamed = stream_sections(source, &sections, crc_prefix).map_err(io_error)?;
    if streamed.crc32 != header.crc32 {
        return Err(EifError::CrcMismatch { stored: header.crc32, computed: streamed.crc32 });
    }

    let metadata = match &streamed.metadata {
        Some(bytes) => {
            Some(serde_json::from_slice(bytes).map_err(|error| EifError::MalformedMetadata(error.to_string()))?)
        }
        None => None,
    };
    let signature = match &streamed.signature {
        Some(bytes) => Some(parse_section(bytes, &streamed.pcr0)?),
        None => None,
    };
    let measurements = Measurements {
        pcr0: streamed.pcr0,
        pcr1: streamed.pcr1,
        pcr2: streamed.pcr2,
        pcr8: signature.as_ref().map(SignatureInfo::pcr8),
    };
    Ok(EifImage { header, sections, file_len, measurements, signature, metadata })
}

/// A section's place according to the section table.
#[derive(Debug, Clone, Copy)]
struct Placement {
    index: usize,
    offset: u64,
    size: u64,
}

/// Checks the section table against the file length; returns the
/// placements in file order.
fn check_layout(header: &Header, file_len: u64) -> Result<Vec<Placement>, EifError> {
    let count = usize::from(header.num_sections);
    if count == 0 || count > MAX_SECTIONS {
        return Err(EifError::SectionCount { found: header.num_sections });
    }
    let placements: Vec<Placement> = header
        .section_offsets
        .iter()
        .zip(&header.section_sizes)
        .take(count)
        .enumerate()
        .map(|(index, (&offset, &size))| Placement { index, offset, size })
        .collect();

    let mut declared_len = HEADER_LEN as u64;
    for placement in &placements {
        declared_len = placement
            .size
            .checked_add(SECTION_HEADER_LEN as u64)
            .and_then(|section_len| declared_len.checked_add(section_len))
            .ok_or(EifError::SectionOutOfFile {
                index: placement.index,
                offset: placement.offset,
                size: placement.size,
                file_len,
            })?;
    }
    if file_len < declared_len {
        return Err(EifError::Truncated { expected: declared_len, found: file_len });
    }

    for placement in &placements {
        if placement.offset < HEADER_LEN as u64 {
            return Err(EifError::SectionOverlapsHeader { index: placement.index, offset: placement.offset });
        }
        if section_end(placement).is_none_or(|end| end > file_len) {
            return Err(EifError::SectionOutOfFile {
                index: placement.index,
                offset: placement.offset,
                size: placement.size,
                file_len,
            });
        }
    }

    let mut sorted = placements.clone();
    sorted.sort_by_key(|placement| placement.offset);
    let mut cursor = HEADER_LEN as u64;
    let mut previous: Option<&Placement> = None;
    for placement in &sorted {
        if let Some(previous) = previous {
            let previous_end = section_end(previous).unwrap_or(u64::MAX);
            if previous_end > placement.offset {
                return Err(EifError::SectionsOverlap {
                    first: previous.index,
                    second: placement.index,
                    first_end: previous_end,
                    second_offset: placement.offset,
                });
            }
            if placement.index < previous.index {
                return Err(EifError::SectionsOutOfOrder { index: placement.index, previous: previous.index });
            }
        }
        if placement.offset > cursor {
            return Err(EifError::UnaccountedBytes { offset: cursor, len: placement.offset - cursor });
        }
        cursor = section_end(placement).unwrap_or(u64::MAX);
        previous = Some(placement);
    }
    if cursor < file_len {
        return Err(EifError::TrailingBytes { offset: cursor, len: file_len - cursor });
    }
    Ok(sorted)
}

fn section_end(placement: &Placement) -> Option<u64> {
    placement.offset.checked_add(SECTION_HEADER_LEN as u64)?.checked_add(placement.size)
}

enum ReadError {
    Eif(EifError),
    Io(io::Error),
}

fn read_section_headers(source: &impl Source, placements: &[Placement]) -> Result<Vec<Section>, ReadError> {
    let mut sections = Vec::with_capacity(placements.len());
    for placement in placements {
        let mut bytes = [0u8; SECTION_HEADER_LEN];
        source.read_exact_at(&mut bytes, placement.offset).map_err(ReadError::Io)?;
        let section_header = SectionHeader::decode(&bytes);
        let kind = SectionKind::from_wire(section_header.kind).ok_or(ReadError::Eif(EifError::UnknownSectionType {
            index: placement.index,
            offset: placement.offset,
            found: section_header.kind,
        }))?;
        if section_header.size != placement.size {
            return Err(ReadError::Eif(EifError::SectionSizeMismatch {
                index: placement.index,
                table_size: placement.size,
                header_size: section_header.size,
            }));
        }
        sections.push(Section {
            index: placement.index,
            kind,
            offset: placement.offset,
            size: placement.size,
            flags: section_header.flags,
        });
    }
    Ok(sections)
}

/// Checks the section order: kernel, cmdline, metadata (optional), one or
/// more ramdisks, signature (optional); and the size limits of the sections
/// read into memory.
fn check_structure(sections: &[Section]) -> Result<(), EifError> {
    #[derive(Clone, Copy, PartialEq)]
    enum Expect {
        Kernel,
        Cmdline,
        MetadataOrRamdisk,
        Ramdisk,
        RamdiskOrSignature,
        End,
    }

    let mut expect = Expect::Kernel;
    for section in sections {
        expect = match (expect, section.kind) {
            (Expect::Kernel, SectionKind::Kernel) => Expect::Cmdline,
            (Expect::Cmdline, SectionKind::Cmdline) => Expect::MetadataOrRamdisk,
            (Expect::MetadataOrRamdisk, SectionKind::Metadata) => Expect::Ramdisk,
            (Expect::MetadataOrRamdisk | Expect::Ramdisk | Expect::RamdiskOrSignature, SectionKind::Ramdisk) => {
                Expect::RamdiskOrSignature
            }
            (Expect::RamdiskOrSignature, SectionKind::Signature) => Expect::End,
            (expect, found) => {
                let expected = match expect {
                    Expect::Kernel => "kernel",
                    Expect::Cmdline => "cmdline",
                    Expect::MetadataOrRamdisk => "metadata or ramdisk",
                    Expect::Ramdisk => "ramdisk",
                    Expect::RamdiskOrSignature => "ramdisk or signature",
                    Expect::End => "final (the signature section must be last)",
                };
                return Err(EifError::SectionOrder { index: section.index, found, expected });
            }
        };
        if matches!(section.kind, SectionKind::Metadata | SectionKind::Signature)
            && section.size > MAX_SMALL_SECTION_LEN
        {
            return Err(EifError::SectionTooLarge {
                kind: section.kind,
                size: section.size,
                max: MAX_SMALL_SECTION_LEN,
            });
        }
    }
    match expect {
        Expect::Kernel => Err(EifError::MissingSection { kind: SectionKind::Kernel }),
        Expect::Cmdline => Err(EifError::MissingSection { kind: SectionKind::Cmdline }),
        Expect::MetadataOrRamdisk | Expect::Ramdisk => Err(EifError::MissingSection { kind: SectionKind::Ramdisk }),
        Expect::RamdiskOrSignature | Expect::End => Ok(()),
    }
}

/// Results of one pass over the sections.
struct Streamed {
    crc32: u32,
    pcr0: Pcr,
    pcr1: Pcr,
    pcr2: Pcr,
    metadata: Option<Vec<u8>>,
    signature: Option<Vec<u8>>,
}

/// Computes the CRC and the PCRs and collects the metadata and signature
/// payloads. The sections must have passed `check_layout` and
/// `check_structure`, so they tile the file in order.
fn stream_sections(source: &impl Source, sections: &[Section], crc_prefix: &[u8]) -> io::Result<Streamed> {
    let is_application =
        |position: usize, section: &Section| section.kind == SectionKind::Ramdisk && position > first_ramdisk(sections);
    let application: Vec<Section> = sections
        .iter()
        .enumerate()
        .filter(|(position, section)| is_application(*position, section))
        .map(|(_, section)| *section)
        .collect();
    let application_len: u64 = application.iter().map(|section| section.size).sum();
    let parallel = application_len >= PARALLEL_THRESHOLD;

    std::thread::scope(|scope| {
        let worker = parallel.then(|| scope.spawn(|| hash_application(source, &application)));

        let mut crc_before = crc32fast::Hasher::new();
        crc_before.update(crc_prefix);
        let mut crc_after = crc32fast::Hasher::new();
        let mut crc_application = crc32fast::Hasher::new();
        let mut image = Context::new(&SHA384);
        let mut application_inline = Context::new(&SHA384);
        let mut pcr1 = None;
        let mut metadata = None;
        let mut signature = None;
        let mut buffer = vec![0u8; CHUNK_LEN];
        let mut seen_application = false;

        for (position, section) in sections.iter().enumerate() {
            let in_application = is_application(position, section);
            seen_application |= in_application;
            // The worker computes the CRC of the application ramdisks, which
            // are contiguous, so the CRC is split into three parts.
            let mut crc = match (in_application, seen_application) {
                (true, _) if parallel => None,
                (true, _) => Some(&mut crc_application),
                (false, false) => Some(&mut crc_before),
                (false, true) => Some(&mut crc_after),
            };
            if let Some(crc) = crc.as_deref_mut() {
                crc.update(&section.encoded_header());
            }

            let mut payload = Vec::new();
            stream_range(source, section.payload_offset(), section.size, &mut buffer, |chunk| {
                if let Some(crc) = crc.as_deref_mut() {
                    crc.update(chunk);
                }
                match section.kind {
                    SectionKind::Kernel | SectionKind::Cmdline => image.update(chunk),
                    SectionKind::Ramdisk => {
                        image.update(chunk);
                        if in_application && !parallel {
                            application_inline.update(chunk);
                        }
                    }
                    SectionKind::Metadata | SectionKind::Signature => payload.extend_from_slice(chunk),
                }
            })?;

            match section.kind {
                SectionKind::Ramdisk if position == first_ramdisk(sections) => {
                    pcr1 = Some(extend_zero_pcr(&finish(image.clone())));
                }
                SectionKind::Metadata => metadata = Some(payload),
                SectionKind::Signature => signature = Some(payload),
                _ => {}
            }
        }

        let application_digest = match worker {
            Some(worker) => {
                let (crc, digest) =
                    worker.join().map_err(|_| io::Error::other("application hashing thread panicked"))??;
                crc_application = crc;
                digest
            }
            None => finish(application_inline),
        };
        crc_before.combine(&crc_application);
        crc_before.combine(&crc_after);
        let pcr0 = extend_zero_pcr(&finish(image));
        Ok(Streamed {
            crc32: crc_before.finalize(),
            pcr0,
            pcr1: pcr1.unwrap_or(pcr0),
            pcr2: extend_zero_pcr(&application_digest),
            metadata,
            signature,
        })
    })
}

/// Position of the first ramdisk in `sections` (`check_structure` ensures
/// there is one).
fn first_ramdisk(sections: &[Section]) -> usize {
    sections.iter().position(|section| section.kind == SectionKind::Ramdisk).unwrap_or(usize::MAX)
}

/// Hashes the application ramdisks for PCR2 and computes the CRC of their
/// section headers and payloads.
fn hash_application(source: &impl Source, application: &[Section]) -> io::Result<(crc32fast::Hasher, Pcr)> {
    let mut crc = crc32fast::Hasher::new();
    let mut context = Context::new(&SHA384);
    let mut buffer = vec![0u8; CHUNK_LEN];
    for section in application {
        crc.update(&section.encoded_header());
        stream_range(source, section.payload_offset(), section.size, &mut buffer, |chunk| {
            crc.update(chunk);
            context.update(chunk);
        })?;
    }
    Ok((crc, finish(context)))
}

/// Reads `len` bytes from `offset` in chunks of the buffer's length.
fn stream_range(
    source: &impl Source,
    offset: u64,
    len: u64,
    buffer: &mut [u8],
    mut consume: impl FnMut(&[u8]),
) -> io::Result<()> {
    let mut done = 0u64;
    while done < len {
        let chunk_len = usize::try_from(len - done).unwrap_or(usize::MAX).min(buffer.len());
        let chunk = buffer.get_mut(..chunk_len).ok_or_else(|| io::Error::other("chunk exceeds the buffer"))?;
        source.read_exact_at(chunk, offset + done)?;
        consume(chunk);
        done += chunk_len as u64;
    }
    Ok(())
}
