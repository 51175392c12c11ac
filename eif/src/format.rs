//! The EIF container layout: the file header, its section table and the
//! header in front of each section.
//!
//! All integers are big-endian. The file header is 548 bytes:
//!
//! ```text
//! magic         [u8; 4]   ".eif"
//! version       u16       4 since the metadata section was added
//! flags         u16       bit 0 set: aarch64, clear: x86_64
//! default_mem   u64       bytes
//! default_cpus  u64
//! reserved      u16
//! num_sections  u16       at most 32
//! offsets       [u64; 32] file offset of each section header
//! sizes         [u64; 32] payload size of each section
//! unused        u32
//! crc32         u32       CRC-32/ISO-HDLC of the file, this field excluded
//! ```
//!
//! Each section starts with a 12-byte header (`type u16`, `flags u16`,
//! `size u64`) followed by `size` payload bytes. The layout follows the
//! `aws-nitro-enclaves-image-format` crate, which nitro-cli uses.

use std::fmt;

use serde::Serialize;

/// The first four bytes of every EIF.
pub const MAGIC: [u8; 4] = *b".eif";

/// Length of the file header in bytes.
pub const HEADER_LEN: usize = 548;

/// Length of the header in front of each section, in bytes.
pub const SECTION_HEADER_LEN: usize = 12;

/// Number of slots in the section table.
pub const MAX_SECTIONS: usize = 32;

/// The version written by this crate and by nitro-cli since the metadata
/// section was added.
pub const CURRENT_VERSION: u16 = 4;

/// The oldest version this crate reads: version 2 introduced the CRC.
pub const MIN_VERSION: u16 = 2;

/// Header flag bit set for aarch64 images.
pub const FLAG_ARM64: u16 = 0x1;

/// Offset of the CRC field, which is the last field of the header and the
/// only bytes of the file that the CRC does not cover.
pub const CRC_OFFSET: usize = HEADER_LEN - 4;

/// The type of a section, from the `type` field of its section header.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SectionKind {
    Kernel,
    Cmdline,
    Ramdisk,
    Signature,
    Metadata,
}

impl SectionKind {
    /// Maps a section header's `type` field; 0 (invalid) and values above 5
    /// give `None`.
    pub fn from_wire(value: u16) -> Option<Self> {
        match value {
            1 => Some(Self::Kernel),
            2 => Some(Self::Cmdline),
            3 => Some(Self::Ramdisk),
            4 => Some(Self::Signature),
            5 => Some(Self::Metadata),
            _ => None,
        }
    }

    /// Returns the value of the section header's `type` field.
    pub fn to_wire(self) -> u16 {
        match self {
            Self::Kernel => 1,
            Self::Cmdline => 2,
            Self::Ramdisk => 3,
            Self::Signature => 4,
            Self::Metadata => 5,
        }
    }

    /// Returns the lower-case name used in messages and in `describe` output.
    pub fn name(self) -> &'static str {
        match self {
            Self::Kernel => "kernel",
            Self::Cmdline => "cmdline",
            Self::Ramdisk => "ramdisk",
            Self::Signature => "signature",
            Self::Metadata => "metadata",
        }
    }
}

impl fmt::Display for SectionKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The CPU architecture an image boots on, from header flag bit 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
pub enum Architecture {
    #[default]
    #[serde(rename = "x86_64")]
    X86_64,
    #[serde(rename = "aarch64")]
    Aarch64,
}

impl Architecture {
    /// Reads the architecture from the header flags.
    pub fn from_flags(flags: u16) -> Self {
        if flags & FLAG_ARM64 != 0 { Self::Aarch64 } else { Self::X86_64 }
    }

    /// Returns the header flags that select this architecture.
    pub fn flags(self) -> u16 {
        match self {
            Self::X86_64 => 0,
            Self::Aarch64 => FLAG_ARM64,
        }
    }

    /// Returns the name nitro-cli and the Linux kernel use.
    pub fn name(self) -> &'static str {
        match self {
            Self::X86_64 => "x86_64",
            Self::Aarch64 => "aarch64",
        }
    }
}

impl fmt::Display for Architecture {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The 548-byte file header, decoded field by field without validation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    pub magic: [u8; 4],
    pub version: u16,
    pub flags: u16,
    /// Default enclave memory in bytes.
    pub default_mem: u64,
    pub default_cpus: u64,
    pub reserved: u16,
    pub num_sections: u16,
    /// File offset of each section's 12-byte header.
    pub section_offsets: [u64; MAX_SECTIONS],
    /// Payload size of each section, its section header excluded.
    pub section_sizes: [u64; MAX_SECTIONS],
    pub unused: u32,
    pub crc32: u32,
}

impl Header {
    /// Decodes the header fields; the reader validates them afterwards.
    pub fn decode(bytes: &[u8; HEADER_LEN]) -> Self {
        let mut cursor = Cursor { rest: bytes };
        let magic = cursor.array::<4>();
        let version = u16::from_be_bytes(cursor.array());
        let flags = u16::from_be_bytes(cursor.array());
        let default_mem = u64::from_be_bytes(cursor.array());
        let default_cpus = u64::from_be_bytes(cursor.array());
        let reserved = u16::from_be_bytes(cursor.array());
        let num_sections = u16::from_be_bytes(cursor.array());
        let section_offsets = std::array::from_fn(|_| u64::from_be_bytes(cursor.array()));
        let section_sizes = std::array::from_fn(|_| u64::from_be_bytes(cursor.array()));
        let unused = u32::from_be_bytes(cursor.array());
        let crc32 = u32::from_be_bytes(cursor.array());
        Self {
            magic,
            version,
            flags,
            default_mem,
            default_cpus,
            reserved,
            num_sections,
            section_offsets,
            section_sizes,
            unused,
            crc32,
        }
    }

    /// Encodes the header, the CRC field included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(&self.magic);
        out.extend_from_slice(&self.version.to_be_bytes());
        out.extend_from_slice(&self.flags.to_be_bytes());
        out.extend_from_slice(&self.default_mem.to_be_bytes());
        out.extend_from_slice(&self.default_cpus.to_be_bytes());
        out.extend_from_slice(&self.reserved.to_be_bytes());
        out.extend_from_slice(&self.num_sections.to_be_bytes());
        for offset in &self.section_offsets {
            out.extend_from_slice(&offset.to_be_bytes());
        }
        for size in &self.section_sizes {
            out.extend_from_slice(&size.to_be_bytes());
        }
        out.extend_from_slice(&self.unused.to_be_bytes());
        out.extend_from_slice(&self.crc32.to_be_bytes());
        let mut bytes = [0u8; HEADER_LEN];
        bytes.copy_from_slice(&out);
        bytes
    }

    /// Returns the architecture selected by the flags.
    pub fn architecture(&self) -> Architecture {
        Architecture::from_flags(self.flags)
    }
}

/// The 12-byte header in front of each section's payload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SectionHeader {
    /// The raw `type` field; [`SectionKind::from_wire`] maps it.
    pub kind: u16,
    pub flags: u16,
    /// Payload size in bytes.
    pub size: u64,
}

impl SectionHeader {
    /// Creates the header for a payload of `size` bytes.
    pub fn new(kind: SectionKind, size: u64) -> Self {
        Self { kind: kind.to_wire(), flags: 0, size }
    }

    /// Decodes the three fields.
    pub fn decode(bytes: &[u8; SECTION_HEADER_LEN]) -> Self {
        let mut cursor = Cursor { rest: bytes };
        let kind = u16::from_be_bytes(cursor.array());
        let flags = u16::from_be_bytes(cursor.array());
        let size = u64::from_be_bytes(cursor.array());
        Self { kind, flags, size }
    }

    /// Encodes the three fields.
    pub fn encode(&self) -> [u8; SECTION_HEADER_LEN] {
        let mut bytes = [0u8; SECTION_HEADER_LEN];
        let (kind, rest) = bytes.split_at_mut(2);
        kind.copy_from_slice(&self.kind.to_be_bytes());
        let (flags, size) = rest.split_at_mut(2);
        flags.copy_from_slice(&self.flags.to_be_bytes());
        size.copy_from_slice(&self.size.to_be_bytes());
        bytes
    }
}

/// Reads fixed-size fields from a buffer whose length the caller's array
/// type guarantees. A read past the end would yield zeros instead of
/// panicking, but the fixed layouts above never read past the end.
struct Cursor<'a> {
    rest: &'a [u8],
}

impl Cursor<'_> {
    fn array<const N: usize>(&mut self) -> [u8; N] {
        match self.rest.split_first_chunk::<N>() {
            Some((head, tail)) => {
                self.rest = tail;
                *head
            }
            None => [0u8; N],
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_encode_decode_round_trip() {
        let header = Header {
            magic: MAGIC,
            version: CURRENT_VERSION,
            flags: FLAG_ARM64,
            default_mem: 1 << 30,
            default_cpus: 2,
            reserved: 0,
            num_sections: 3,
            section_offsets: std::array::from_fn(|i| 1000 + i as u64),
            section_sizes: std::array::from_fn(|i| 7 * i as u64),
            unused: 0,
            crc32: 0xdead_beef,
        };

        let bytes = header.encode();

        assert_eq!(bytes.get(..4), Some(&b".eif"[..]));
        assert_eq!(bytes.get(CRC_OFFSET..), Some(&[0xde, 0xad, 0xbe, 0xef][..]));
        assert_eq!(Header::decode(&bytes), header);
        assert_eq!(Header::decode(&bytes).architecture(), Architecture::Aarch64);
    }

    #[test]
    fn section_header_layout_is_big_endian() {
        let header = SectionHeader::new(SectionKind::Ramdisk, 0x0102_0304_0506_0708);

        let bytes = header.encode();

        assert_eq!(bytes, [0, 3, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(SectionHeader::decode(&bytes), header);
    }

    #[test]
    fn section_kind_wire_values() {
        for value in 1..=5 {
            let kind = SectionKind::from_wire(value);
            assert_eq!(kind.map(SectionKind::to_wire), Some(value));
        }
        assert_eq!(SectionKind::from_wire(0), None);
        assert_eq!(SectionKind::from_wire(6), None);
    }
}
