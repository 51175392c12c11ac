//! Writing an EIF from a kernel, a command line and ramdisks.
//!
//! The layout is the one nitro-cli writes: kernel, cmdline, metadata, the
//! ramdisks in the given order, and the signature section when a signing
//! key is given. Inputs are streamed once: each section is copied to the
//! output while its PCR hashes and the CRC are updated. The header goes
//! first in the file and in the CRC but depends on the signature's size, so
//! it is written last and its CRC is combined with the CRC of the sections.
//!
//! The metadata section carries no build-time clock: its `BuildTime` comes
//! from the caller (`SOURCE_DATE_EPOCH` in the CLI, else the epoch), so the
//! same inputs give the same bytes. Signed images still differ between
//! builds, because ECDSA signatures are randomized; their PCRs do not.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;
use tracing::{debug, info};

use crate::format::{
    Architecture, CRC_OFFSET, CURRENT_VERSION, HEADER_LEN, Header, MAGIC, MAX_SECTIONS, SECTION_HEADER_LEN,
    SectionHeader, SectionKind,
};
use crate::measure::{ImageHasher, Measurements};
use crate::output::{OutputError, OutputFile};
use crate::signature::{SignatureError, SigningKey};

/// Default enclave memory written to the header, as nitro-cli writes it.
pub const DEFAULT_MEMORY_BYTES: u64 = 1 << 30;

/// Default vCPU count written to the header, as nitro-cli writes it.
pub const DEFAULT_CPUS: u64 = 2;

/// Errors building an image.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An input file could not be read.
    #[error("cannot read {what} {path}: {error}")]
    Input { what: &'static str, path: PathBuf, error: io::Error },
    /// An input file changed size while it was copied.
    #[error("{what} {path} changed while it was read: expected {expected} bytes, read {read}")]
    InputChanged { what: &'static str, path: PathBuf, expected: u64, read: u64 },
    /// The output could not be written.
    #[error("cannot write the image: {0}")]
    Output(io::Error),
    /// The output file could not be created or renamed into place.
    #[error(transparent)]
    Destination(#[from] OutputError),
    /// The default enclave memory is zero.
    #[error("default enclave memory is 0 bytes; set a positive size")]
    NoMemory,
    /// The default vCPU count is zero.
    #[error("default vCPU count is 0; set at least 1")]
    NoCpus,
    /// No ramdisk was given.
    #[error("an image needs at least one ramdisk; pass --ramdisk")]
    NoRamdisk,
    /// More ramdisks than the section table holds.
    #[error(
        "{count} ramdisks exceed the section table: at most {max} fit next to kernel, cmdline, metadata and signature"
    )]
    TooManyRamdisks { count: usize, max: usize },
    /// The kernel command line contains a NUL byte.
    #[error("kernel command line contains a NUL byte at position {position}; remove it")]
    CmdlineNul { position: usize },
    /// Signing failed.
    #[error(transparent)]
    Signature(#[from] SignatureError),
}

/// Inputs and settings of an image.
#[derive(Debug)]
pub struct BuildOptions {
    pub kernel: PathBuf,
    pub cmdline: String,
    /// Ramdisks in boot order; the first is measured into PCR1, the rest
    /// into PCR2.
    pub ramdisks: Vec<PathBuf>,
    pub signing_key: Option<SigningKey>,
    pub architecture: Architecture,
    /// Enclave memory in bytes, a default that `nitro-cli run-enclave`
    /// overrides with `--memory`. Must not be 0.
    pub default_memory: u64,
    /// vCPU count, a default that `nitro-cli run-enclave` overrides with
    /// `--cpu-count`. Must not be 0.
    pub default_cpus: u64,
    /// `ImageName` in the metadata section.
    pub image_name: String,
    /// `ImageVersion` in the metadata section.
    pub image_version: String,
    /// `BuildTime` in the metadata section, seconds since the Unix epoch.
    pub build_time: i64,
}

impl BuildOptions {
    /// Creates options with nitro-cli's defaults, an x86_64 image, no
    /// signing key and a build time of zero.
    pub fn new(kernel: PathBuf, cmdline: String, ramdisks: Vec<PathBuf>) -> Self {
        Self {
            kernel,
            cmdline,
            ramdisks,
            signing_key: None,
            architecture: Architecture::X86_64,
            default_memory: DEFAULT_MEMORY_BYTES,
            default_cpus: DEFAULT_CPUS,
            image_name: "enclave".to_owned(),
            image_version: "1.0".to_owned(),
            build_time: 0,
        }
    }
}

/// Builds the image into `output`, replacing it atomically, and returns its
/// PCRs.
pub fn build_eif(options: &BuildOptions, output: &Path) -> Result<Measurements, BuildError> {
    let mut file = OutputFile::create(output)?;
    let measurements = write_eif(options, file.file())?;
    file.file().sync_all().map_err(BuildError::Output)?;
    file.persist()?;
    info!(output = %output.display(), pcr0 = %hex::encode(measurements.pcr0), "wrote EIF");
    Ok(measurements)
}

/// Writes the image to `out` from its current position, which must be the
/// start of the image, and returns its PCRs.
pub fn write_eif<W: Write + Seek>(options: &BuildOptions, out: &mut W) -> Result<Measurements, BuildError> {
    if let Some(position) = options.cmdline.bytes().position(|byte| byte == 0) {
        return Err(BuildError::CmdlineNul { position });
    }
    if options.default_memory == 0 {
        return Err(BuildError::NoMemory);
    }
    if options.default_cpus == 0 {
        return Err(BuildError::NoCpus);
    }
    let max_ramdisks = MAX_SECTIONS - 4;
    if options.ramdisks.is_empty() {
        return Err(BuildError::NoRamdisk);
    }
    if options.ramdisks.len() > max_ramdisks {
        return Err(BuildError::TooManyRamdisks { count: options.ramdisks.len(), max: max_ramdisks });
    }

    let start = out.stream_position().map_err(BuildError::Output)?;
    out.write_all(&[0u8; HEADER_LEN]).map_err(BuildError::Output)?;
    let mut writer =
        SectionWriter { out, crc: crc32fast::Hasher::new(), position: HEADER_LEN as u64, table: Vec::new() };
    let mut hasher = ImageHasher::new();

    let kernel_len =
        writer.copy_file(SectionKind::Kernel, "kernel", &options.kernel, |chunk| hasher.update_boot(chunk))?;
    debug!(kernel = %options.kernel.display(), kernel_len, "kernel section written");
    let cmdline = options.cmdline.as_bytes();
    hasher.update_boot(cmdline);
    writer.write_bytes(SectionKind::Cmdline, cmdline)?;
    writer.write_bytes(SectionKind::Metadata, &metadata_json(options))?;
    for (position, ramdisk) in options.ramdisks.iter().enumerate() {
        if position == 0 {
            writer.copy_file(SectionKind::Ramdisk, "ramdisk", ramdisk, |chunk| hasher.update_first_ramdisk(chunk))?;
            hasher.end_first_ramdisk();
        } else {
            writer.copy_file(SectionKind::Ramdisk, "ramdisk", ramdisk, |chunk| hasher.update_application(chunk))?;
        }
    }

    let (pcr0, pcr1, pcr2) = hasher.finish();
    let pcr8 = match &options.signing_key {
        Some(key) => {
            writer.write_bytes(SectionKind::Signature, &key.signature_section(&pcr0)?)?;
            Some(key.pcr8())
        }
        None => None,
    };

    let mut header = Header {
        magic: MAGIC,
        version: CURRENT_VERSION,
        flags: options.architecture.flags(),
        default_mem: options.default_memory,
        default_cpus: options.default_cpus,
        reserved: 0,
        num_sections: writer.table.len() as u16,
        section_offsets: [0; MAX_SECTIONS],
        section_sizes: [0; MAX_SECTIONS],
        unused: 0,
        crc32: 0,
    };
    for ((offset, size), (table_offset, table_size)) in
        writer.table.iter().zip(header.section_offsets.iter_mut().zip(header.section_sizes.iter_mut()))
    {
        *table_offset = *offset;
        *table_size = *size;
    }
    let mut crc = crc32fast::Hasher::new();
    crc.update(header.encode().get(..CRC_OFFSET).unwrap_or_default());
    crc.combine(&writer.crc);
    header.crc32 = crc.finalize();

    let out = writer.out;
    out.seek(SeekFrom::Start(start)).map_err(BuildError::Output)?;
    out.write_all(&header.encode()).map_err(BuildError::Output)?;
    out.seek(SeekFrom::End(0)).map_err(BuildError::Output)?;
    out.flush().map_err(BuildError::Output)?;
    Ok(Measurements { pcr0, pcr1, pcr2, pcr8 })
}

/// Encodes the metadata section: the JSON object nitro-cli writes, with fields this
/// tool cannot know (the Docker image, the kernel's OS string) left empty.
fn metadata_json(options: &BuildOptions) -> Vec<u8> {
    let build_time = OffsetDateTime::from_unix_timestamp(options.build_time)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_else(|| "1970-01-01T00:00:00Z".to_owned());
    let metadata = json!({
        "ImageName": options.image_name,
        "ImageVersion": options.image_version,
        "BuildMetadata": {
            "BuildTime": build_time,
            "BuildTool": env!("CARGO_PKG_NAME"),
            "BuildToolVersion": env!("CARGO_PKG_VERSION"),
            "OperatingSystem": "Unknown",
            "KernelVersion": "Unknown",
        },
        "DockerInfo": null,
        "CustomMetadata": null,
    });
    metadata.to_string().into_bytes()
}

/// Appends sections to the output and records them for the section table.
struct SectionWriter<'a, W: Write> {
    out: &'a mut W,
    /// CRC of everything after the file header.
    crc: crc32fast::Hasher,
    position: u64,
    /// `(offset, payload size)` of each section written.
    table: Vec<(u64, u64)>,
}

impl<W: Write> SectionWriter<'_, W> {
    fn write_bytes(&mut self, kind: SectionKind, payload: &[u8]) -> Result<(), BuildError> {
        self.begin(kind, payload.len() as u64)?;
        self.crc.update(payload);
        self.out.write_all(payload).map_err(BuildError::Output)?;
        self.position += payload.len() as u64;
        Ok(())
    }

    /// Copies a file as a section, passing each chunk to `measure`, and
    /// returns its size.
    fn copy_file(
        &mut self,
        kind: SectionKind,
        what: &'static str,
        path: &Path,
        mut measure: impl FnMut(&[u8]),
    ) -> Result<u64, BuildError> {
        let input_error = |error| BuildError::Input { what, path: path.to_owned(), error };
        let mut file = File::open(path).map_err(input_error)?;
        let expected = file.metadata().map_err(input_error)?.len();
        self.begin(kind, expected)?;

        let mut buffer = vec![0u8; 256 << 10];
        let mut read = 0u64;
        loop {
            let count = file.read(&mut buffer).map_err(input_error)?;
            let Some(chunk) = buffer.get(..count) else { break };
            if chunk.is_empty() {
                break;
            }
            read += count as u64;
            if read > expected {
                break;
            }
            measure(chunk);
            self.crc.update(chunk);
            self.out.write_all(chunk).map_err(BuildError::Output)?;
        }
        if read != expected {
            return Err(BuildError::InputChanged { what, path: path.to_owned(), expected, read });
        }
        self.position += read;
        Ok(read)
    }

    fn begin(&mut self, kind: SectionKind, size: u64) -> Result<(), BuildError> {
        let section_header = SectionHeader::new(kind, size).encode();
        self.table.push((self.position, size));
        self.crc.update(&section_header);
        self.out.write_all(&section_header).map_err(BuildError::Output)?;
        self.position += SECTION_HEADER_LEN as u64;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::io::Cursor;

    use super::*;

    fn options() -> BuildOptions {
        BuildOptions::new(
            PathBuf::from("/nonexistent/bzImage"),
            String::new(),
            vec![PathBuf::from("/nonexistent/ramdisk")],
        )
    }

    #[test]
    fn zero_memory_is_rejected() {
        let mut options = options();
        options.default_memory = 0;

        let error = write_eif(&options, &mut Cursor::new(Vec::new())).unwrap_err();

        assert!(matches!(error, BuildError::NoMemory), "{error:?}");
    }

    #[test]
    fn zero_cpus_are_rejected() {
        let mut options = options();
        options.default_cpus = 0;

        let error = write_eif(&options, &mut Cursor::new(Vec::new())).unwrap_err();

        assert!(matches!(error, BuildError::NoCpus), "{error:?}");
    }
}
