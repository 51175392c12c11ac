//! A strict reader and a small writer for the part of BER (ITU-T X.690) that
//! CMS EnvelopedData uses.
//!
//! The reader accepts definite and indefinite lengths, long-form lengths of
//! up to 4 octets and constructed OCTET STRINGs, so it reads DER as well. It
//! rejects the high-tag-number form (no CMS type here uses it), indefinite
//! lengths on primitive elements, nesting deeper than [`MAX_DEPTH`] and any
//! length that runs past its enclosing element. Every error names the field
//! being read and the byte offset from the start of the input.

use std::fmt;

use super::CmsError;

/// The deepest nesting the reader follows. A KMS envelope nests 10 levels
/// deep, so 32 leaves room for certificate names in an
/// issuerAndSerialNumber.
pub const MAX_DEPTH: usize = 32;

/// An identifier octet in the low-tag-number form: class, constructed bit
/// and a tag number below 31.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tag(u8);

impl Tag {
    pub const INTEGER: Tag = Tag(0x02);
    pub const BIT_STRING: Tag = Tag(0x03);
    pub const OCTET_STRING: Tag = Tag(0x04);
    pub const OCTET_STRING_CONSTRUCTED: Tag = Tag(0x24);
    pub const NULL: Tag = Tag(0x05);
    pub const OID: Tag = Tag(0x06);
    pub const SEQUENCE: Tag = Tag(0x30);
    pub const SET: Tag = Tag(0x31);

    /// Makes the primitive context-specific tag `[number]`.
    pub const fn context(number: u8) -> Tag {
        Tag(0x80 | (number & 0x1f))
    }

    /// Makes the constructed context-specific tag `[number]`.
    pub const fn context_constructed(number: u8) -> Tag {
        Tag(0xa0 | (number & 0x1f))
    }

    /// Returns the same tag with the constructed bit set.
    pub const fn to_constructed(self) -> Tag {
        Tag(self.0 | 0x20)
    }

    /// Returns the identifier octet.
    pub fn identifier(self) -> u8 {
        self.0
    }

    pub fn is_constructed(self) -> bool {
        self.0 & 0x20 != 0
    }

    fn number(self) -> u8 {
        self.0 & 0x1f
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let form = if self.is_constructed() { "constructed" } else { "primitive" };
        match self.0 >> 6 {
            0 => {
                let name = match self.number() {
                    1 => "BOOLEAN",
                    2 => "INTEGER",
                    3 => "BIT STRING",
                    4 => "OCTET STRING",
                    5 => "NULL",
                    6 => "OBJECT IDENTIFIER",
                    12 => "UTF8String",
                    16 => "SEQUENCE",
                    17 => "SET",
                    19 => "PrintableString",
                    23 => "UTCTime",
                    24 => "GeneralizedTime",
                    _ => return write!(f, "universal tag {} ({form}, 0x{:02x})", self.number(), self.0),
                };
                write!(f, "{name} (0x{:02x})", self.0)
            }
            1 => write!(f, "application tag {} ({form}, 0x{:02x})", self.number(), self.0),
            2 => write!(f, "[{}] ({form}, 0x{:02x})", self.number(), self.0),
            _ => write!(f, "private tag {} ({form}, 0x{:02x})", self.number(), self.0),
        }
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

/// One element: its tag, where it starts, and its content octets (for an
/// indefinite length, the octets between the header and the end-of-contents
/// marker).
#[derive(Debug, Clone, Copy)]
pub struct Element<'a> {
    pub tag: Tag,
    /// Offset of the identifier octet from the start of the input.
    pub offset: usize,
    pub content: &'a [u8],
    content_offset: usize,
    depth: usize,
    /// The whole element, header (and end-of-contents marker) included.
    pub encoded: &'a [u8],
}

/// Reads consecutive elements from a slice of the input.
#[derive(Debug, Clone)]
pub struct Reader<'a> {
    input: &'a [u8],
    /// Offset of `input[0]` from the start of the whole input.
    offset: usize,
    depth: usize,
}

impl<'a> Reader<'a> {
    pub fn new(input: &'a [u8]) -> Self {
        Self { input, offset: 0, depth: 0 }
    }

    pub fn is_empty(&self) -> bool {
        self.input.is_empty()
    }

    /// Returns the tag of the next element without checking that it is well
    /// formed.
    pub fn peek_tag(&self) -> Option<Tag> {
        self.input.first().map(|&byte| Tag(byte))
    }

    /// Reads the next element, whatever its tag. `field` names it in errors.
    pub fn read_any(&mut self, field: &'static str) -> Result<Element<'a>, CmsError> {
        if self.input.is_empty() {
            return Err(CmsError::Missing { field });
        }
        let (element, length) = parse_element(self.input, self.offset, self.depth, field)?;
        self.input = self.input.get(length..).unwrap_or_default();
        self.offset += length;
        Ok(element)
    }

    /// Reads the next element and checks that its tag is `tag`.
    pub fn read(&mut self, tag: Tag, field: &'static str) -> Result<Element<'a>, CmsError> {
        match self.peek_tag() {
            None => Err(CmsError::Missing { field }),
            Some(found) if found != tag => {
                Err(CmsError::UnexpectedTag { field, offset: self.offset, expected: tag, found })
            }
            Some(_) => self.read_any(field),
        }
    }

    /// Reads the next element if it has `tag`.
    pub fn read_optional(&mut self, tag: Tag, field: &'static str) -> Result<Option<Element<'a>>, CmsError> {
        if self.peek_tag() == Some(tag) { self.read_any(field).map(Some) } else { Ok(None) }
    }

    /// Checks that nothing follows the elements read so far; `field` names
    /// the element whose content this reader covers.
    pub fn finish(&self, field: &'static str) -> Result<(), CmsError> {
        if self.input.is_empty() {
            Ok(())
        } else {
            Err(CmsError::TrailingData { field, offset: self.offset, len: self.input.len() })
        }
    }
}

impl<'a> Element<'a> {
    /// Returns a reader over the content of a constructed element.
    pub fn children(&self) -> Reader<'a> {
        Reader { input: self.content, offset: self.content_offset, depth: self.depth + 1 }
    }

    /// Appends the value of an OCTET STRING (or of a type implicitly tagged
    /// as one) to `out`, joining the segments of a constructed encoding.
    pub fn octet_string_into(&self, field: &'static str, out: &mut Vec<u8>) -> Result<(), CmsError> {
        if !self.tag.is_constructed() {
            out.extend_from_slice(self.content);
            return Ok(());
        }

        let mut segments = self.children();
        while !segments.is_empty() {
            let segment = segments.read_any(field)?;
            if segment.tag != Tag::OCTET_STRING && segment.tag != Tag::OCTET_STRING_CONSTRUCTED {
                return Err(CmsError::UnexpectedTag {
                    field,
                    offset: segment.offset,
                    expected: Tag::OCTET_STRING,
                    found: segment.tag,
                });
            }
            segment.octet_string_into(field, out)?;
        }
        Ok(())
    }

    /// Returns the value of an OCTET STRING, primitive or constructed.
    pub fn octet_string(&self, field: &'static str) -> Result<Vec<u8>, CmsError> {
        let mut out = Vec::with_capacity(self.content.len());
        self.octet_string_into(field, &mut out)?;
        Ok(out)
    }

    /// Checks that an OBJECT IDENTIFIER is well formed (non-empty, minimal
    /// subidentifiers, none left unfinished) and returns its content octets.
    pub fn oid(&self, field: &'static str) -> Result<&'a [u8], CmsError> {
        let content = self.content;
        let malformed = |problem| CmsError::Malformed { field, offset: self.offset, problem };
        let Some(&last) = content.last() else {
            return Err(malformed("empty object identifier"));
        };
        if last & 0x80 != 0 {
            return Err(malformed("object identifier ends inside a subidentifier"));
        }
        let mut starts_subidentifier = true;
        for &byte in content {
            if starts_subidentifier && byte == 0x80 {
                return Err(malformed("object identifier subidentifier is not minimally encoded"));
            }
            starts_subidentifier = byte & 0x80 == 0;
        }
        Ok(content)
    }

    /// Decodes a small non-negative INTEGER such as a version number.
    pub fn small_unsigned(&self, field: &'static str) -> Result<u64, CmsError> {
        let malformed = |problem| CmsError::Malformed { field, offset: self.offset, problem };
        let content = self.content;
        let Some(&first) = content.first() else {
            return Err(malformed("empty INTEGER"));
        };
        if first & 0x80 != 0 {
            return Err(malformed("negative INTEGER where a version or count is expected"));
        }
        let significant = if first == 0 { content.get(1..).unwrap_or_default() } else { content };
        if significant.len() > 8 {
            return Err(malformed("INTEGER larger than 64 bits where a version or count is expected"));
        }
        Ok(significant.iter().fold(0u64, |value, &byte| (value << 8) | u64::from(byte)))
    }

    /// Checks that a NULL has no content.
    pub fn null(&self, field: &'static str) -> Result<(), CmsError> {
        if self.content.is_empty() {
            Ok(())
        } else {
            Err(CmsError::Malformed { field, offset: self.offset, problem: "NULL with content" })
        }
    }
}

enum Length {
    Definite(usize),
    Indefinite,
}

/// Parses the element at the start of `input` and returns it with its total
/// encoded length. `offset` is the position of `input[0]` in the whole input.
fn parse_element<'a>(
    input: &'a [u8],
    offset: usize,
    depth: usize,
    field: &'static str,
) -> Result<(Element<'a>, usize), CmsError> {
    let malformed = |problem| CmsError::Malformed { field, offset, problem };
    if depth > MAX_DEPTH {
        return Err(malformed("elements nested deeper than 32 levels"));
    }

    let (tag, length, header_len) = parse_header(input, offset, field)?;
    if tag.identifier() == 0x00 {
        return Err(malformed("end-of-contents marker where an element was expected"));
    }
    let after_header = input.get(header_len..).unwrap_or_default();
    let content_offset = offset + header_len;

    let (content, total) = match length {
        Length::Definite(len) => {
            let Some(content) = after_header.get(..len) else {
                return Err(CmsError::Truncated { field, offset, needed: len, available: after_header.len() });
            };
            (content, header_len + len)
        }
        Length::Indefinite => {
            if !tag.is_constructed() {
                return Err(malformed("indefinite length on a primitive element"));
            }
            let content_len = indefinite_content_len(after_header, content_offset, depth + 1, field)?;
            let content = after_header.get(..content_len).unwrap_or_default();
            (content, header_len + content_len + 2)
        }
    };

    let encoded = input.get(..total).unwrap_or_default();
    Ok((Element { tag, offset, content, content_offset, depth, encoded }, total))
}

/// Returns the length of an indefinite-length content, up to but excluding
/// its end-of-contents marker, by walking the child elements.
fn indefinite_content_len(input: &[u8], offset: usize, depth: usize, field: &'static str) -> Result<usize, CmsError> {
    let mut position = 0;
    loop {
        let rest = input.get(position..).unwrap_or_default();
        match rest {
            [0x00, 0x00, ..] => return Ok(position),
            [0x00, ..] => {
                return Err(CmsError::Malformed {
                    field,
                    offset: offset + position,
                    problem: "end-of-contents marker with a non-zero length",
                });
            }
            [] => {
                return Err(CmsError::Malformed {
                    field,
                    offset: offset + position,
                    problem: "indefinite-length element without an end-of-contents marker",
                });
            }
            _ => {
                let (_, length) = parse_element(rest, offset + position, depth, field)?;
                position += length;
            }
        }
    }
}

/// Parses an identifier octet and a length; returns them with the header
/// length.
fn parse_header(input: &[u8], offset: usize, field: &'static str) -> Result<(Tag, Length, usize), CmsError> {
    let malformed = |problem| CmsError::Malformed { field, offset, problem };
    let truncated = |needed| CmsError::Truncated { field, offset, needed, available: input.len() };

    let Some(&identifier) = input.first() else {
        return Err(truncated(1));
    };
    if identifier & 0x1f == 0x1f {
        return Err(malformed("high-tag-number form, which no CMS EnvelopedData field uses"));
    }
    let tag = Tag(identifier);

    let Some(&first) = input.get(1) else {
        return Err(truncated(2));
    };
    match first {
        0x00..=0x7f => Ok((tag, Length::Definite(usize::from(first)), 2)),
        0x80 => Ok((tag, Length::Indefinite, 2)),
        0x81..=0x84 => {
            let count = usize::from(first & 0x7f);
            let Some(octets) = input.get(2..2 + count) else {
                return Err(truncated(2 + count));
            };
            let len = octets.iter().fold(0usize, |value, &byte| (value << 8) | usize::from(byte));
            Ok((tag, Length::Definite(len), 2 + count))
        }
        0xff => Err(malformed("reserved length octet 0xff")),
        _ => Err(malformed("length field longer than 4 octets")),
    }
}

/// Appends a definite-length header.
pub fn write_header(out: &mut Vec<u8>, tag: Tag, len: usize) {
    out.push(tag.identifier());
    if len < 0x80 {
        out.push(len as u8);
        return;
    }
    let octets = (len as u64).to_be_bytes();
    let skip = octets.iter().take_while(|&&byte| byte == 0).count();
    let significant = octets.get(skip..).unwrap_or_default();
    out.push(0x80 | significant.len() as u8);
    out.extend_from_slice(significant);
}

/// Appends a definite-length element.
pub fn write_element(out: &mut Vec<u8>, tag: Tag, content: &[u8]) {
    write_header(out, tag, content.len());
    out.extend_from_slice(content);
}

/// Appends the header of an indefinite-length element; close it with
/// [`write_end_of_contents`].
pub fn write_indefinite_header(out: &mut Vec<u8>, tag: Tag) {
    out.extend_from_slice(&[tag.identifier(), 0x80]);
}

pub fn write_end_of_contents(out: &mut Vec<u8>) {
    out.extend_from_slice(&[0x00, 0x00]);
}

/// Returns a definite-length element as a new vector.
pub fn element(tag: Tag, content: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(content.len() + 6);
    write_element(&mut out, tag, content);
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::indexing_slicing, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn reader_definite_and_indefinite_give_same_content() {
        let definite = [0x30, 0x06, 0x02, 0x01, 0x05, 0x04, 0x01, 0xaa];
        let indefinite = [0x30, 0x80, 0x02, 0x01, 0x05, 0x04, 0x01, 0xaa, 0x00, 0x00];
        for input in [&definite[..], &indefinite[..]] {
            let mut reader = Reader::new(input);
            let sequence = reader.read(Tag::SEQUENCE, "test").unwrap();
            reader.finish("test").unwrap();
            assert_eq!(sequence.encoded, input);
            let mut children = sequence.children();
            assert_eq!(children.read(Tag::INTEGER, "int").unwrap().small_unsigned("int").unwrap(), 5);
            assert_eq!(children.read_any("os").unwrap().octet_string("os").unwrap(), vec![0xaa]);
            children.finish("test").unwrap();
        }
    }

    #[test]
    fn reader_joins_nested_constructed_octet_string() {
        let input = [0x24, 0x80, 0x04, 0x01, 0x01, 0x24, 0x04, 0x04, 0x02, 0x02, 0x03, 0x00, 0x00];
        let element = Reader::new(&input).read_any("os").unwrap();
        assert_eq!(element.octet_string("os").unwrap(), vec![1, 2, 3]);
    }

    #[test]
    fn reader_rejects_wrong_segment_in_constructed_octet_string() {
        let input = [0x24, 0x03, 0x02, 0x01, 0x01];
        let element = Reader::new(&input).read_any("os").unwrap();
        let error = element.octet_string("os").unwrap_err();
        assert!(matches!(error, CmsError::UnexpectedTag { offset: 2, found, .. } if found == Tag::INTEGER));
    }

    #[test]
    fn reader_long_form_length() {
        let mut input = vec![0x04, 0x82, 0x01, 0x00];
        input.extend_from_slice(&[7; 256]);
        let element = Reader::new(&input).read_any("os").unwrap();
        assert_eq!(element.content.len(), 256);
    }

    #[test]
    fn reader_rejects_malformed_headers() {
        let cases: &[(&[u8], &str)] = &[
            (&[0x1f, 0x01, 0x00], "high-tag-number form, which no CMS EnvelopedData field uses"),
            (&[0x04, 0x80, 0x00, 0x00], "indefinite length on a primitive element"),
            (&[0x04, 0xff], "reserved length octet 0xff"),
            (&[0x04, 0x85, 1, 1, 1, 1, 1], "length field longer than 4 octets"),
            (&[0x00, 0x00], "end-of-contents marker where an element was expected"),
            (&[0x30, 0x80, 0x02, 0x01, 0x01], "indefinite-length element without an end-of-contents marker"),
            (&[0x30, 0x80, 0x00, 0x01, 0x00], "end-of-contents marker with a non-zero length"),
        ];
        for (input, expected) in cases {
            match Reader::new(input).read_any("test") {
                Err(CmsError::Malformed { problem, .. }) => assert_eq!(problem, *expected, "input {input:02x?}"),
                other => panic!("input {input:02x?}: expected Malformed, got {other:?}"),
            }
        }
    }

    #[test]
    fn reader_rejects_length_past_end() {
        let error = Reader::new(&[0x04, 0x05, 0x01]).read_any("os").unwrap_err();
        assert!(matches!(error, CmsError::Truncated { needed: 5, available: 1, .. }), "{error:?}");
        let error = Reader::new(&[0x04, 0x82, 0x01]).read_any("os").unwrap_err();
        assert!(matches!(error, CmsError::Truncated { needed: 4, available: 3, .. }), "{error:?}");
        let error = Reader::new(&[0x04]).read_any("os").unwrap_err();
        assert!(matches!(error, CmsError::Truncated { needed: 2, available: 1, .. }), "{error:?}");
    }

    #[test]
    fn reader_rejects_child_past_parent_end() {
        let input = [0x30, 0x03, 0x04, 0x05, 0x01, 0x02, 0x03, 0x04, 0x05];
        let sequence = Reader::new(&input).read_any("seq").unwrap();
        let error = sequence.children().read_any("child").unwrap_err();
        assert!(matches!(error, CmsError::Truncated { offset: 2, needed: 5, available: 1, .. }), "{error:?}");
    }

    #[test]
    fn reader_rejects_deep_nesting() {
        let mut input = Vec::new();
        for _ in 0..40 {
            input.extend_from_slice(&[0x30, 0x80]);
        }
        for _ in 0..40 {
            input.extend_from_slice(&[0x00, 0x00]);
        }
        let error = Reader::new(&input).read_any("deep").unwrap_err();
        assert!(
            matches!(error, CmsError::Malformed { problem: "elements nested deeper than 32 levels", .. }),
            "{error:?}"
        );
    }

    #[test]
    fn reader_finish_reports_trailing_data() {
        let mut reader = Reader::new(&[0x05, 0x00, 0xde, 0xad]);
        reader.read(Tag::NULL, "null").unwrap().null("null").unwrap();
        let error = reader.finish("top").unwrap_err();
        assert!(matches!(error, CmsError::TrailingData { field: "top", offset: 2, len: 2 }), "{error:?}");
    }

    #[test]
    fn reader_oid_checks_encoding() {
        for (content, problem) in [
            (&[][..], "empty object identifier"),
            (&[0x2a, 0x86][..], "object identifier ends inside a subidentifier"),
            (&[0x2a, 0x80, 0x01][..], "object identifier subidentifier is not minimally encoded"),
        ] {
            let encoded = element(Tag::OID, content);
            let error = Reader::new(&encoded).read_any("oid").unwrap().oid("oid").unwrap_err();
            assert!(matches!(error, CmsError::Malformed { problem: p, .. } if p == problem), "{error:?}");
        }
    }

    #[test]
    fn reader_small_unsigned_limits() {
        let value =
            |content: &[u8]| Reader::new(&element(Tag::INTEGER, content)).read_any("i").unwrap().small_unsigned("i");
        assert_eq!(value(&[0x00, 0xff]).unwrap(), 255);
        assert!(value(&[0xff]).is_err());
        assert!(value(&[]).is_err());
        assert!(value(&[1; 9]).is_err());
    }

    #[test]
    fn writer_lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 1000, 65535, 65536] {
            let content = vec![0x5a; len];
            let encoded = element(Tag::OCTET_STRING, &content);
            let parsed = Reader::new(&encoded).read_any("os").unwrap();
            assert_eq!(parsed.content, content.as_slice(), "length {len}");
            assert_eq!(parsed.encoded.len(), encoded.len());
        }
    }

    #[test]
    fn tag_display_names() {
        assert_eq!(Tag::SEQUENCE.to_string(), "SEQUENCE (0x30)");
        assert_eq!(Tag::context_constructed(0).to_string(), "[0] (constructed, 0xa0)");
        assert_eq!(Tag::context(0).to_string(), "[0] (primitive, 0x80)");
    }
}
