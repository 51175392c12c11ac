//! Blob members of the JSON protocol: standard base64 strings on the wire,
//! bytes (zeroized on drop) in memory.

use std::fmt;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize, Serializer};
use zeroize::{Zeroize, Zeroizing};

/// Decoded bytes of a base64 blob member. They may be a plaintext, so they
/// are zeroized on drop and `Debug` shows only the length.
#[derive(Default, PartialEq, Eq)]
pub struct Blob(Zeroizing<Vec<u8>>);

impl Blob {
    pub fn new(bytes: Vec<u8>) -> Self {
        Self(Zeroizing::new(bytes))
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.0
    }
}

impl From<Zeroizing<Vec<u8>>> for Blob {
    fn from(bytes: Zeroizing<Vec<u8>>) -> Self {
        Self(bytes)
    }
}

impl fmt::Debug for Blob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Blob({} bytes)", self.0.len())
    }
}

impl<'de> Deserialize<'de> for Blob {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Base64Visitor;

        impl Visitor<'_> for Base64Visitor {
            type Value = Blob;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a base64 string")
            }

            fn visit_str<E: de::Error>(self, text: &str) -> Result<Blob, E> {
                STANDARD
                    .decode(text)
                    .map(Blob::new)
                    .map_err(|error| E::custom(format!("blob is not valid standard base64: {error}")))
            }

            fn visit_string<E: de::Error>(self, mut text: String) -> Result<Blob, E> {
                let result = self.visit_str(&text);
                text.zeroize();
                result
            }
        }

        deserializer.deserialize_str(Base64Visitor)
    }
}

impl Serialize for Blob {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let text = Zeroizing::new(STANDARD.encode(self.0.as_slice()));
        serializer.serialize_str(&text)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn round_trip_and_invalid_base64() {
        let blob: Blob = serde_json::from_str("\"AQID\"").unwrap();
        assert_eq!(blob.as_slice(), &[1, 2, 3]);
        assert_eq!(serde_json::to_string(&blob).unwrap(), "\"AQID\"");
        let error = serde_json::from_str::<Blob>("\"not base64!\"").unwrap_err();
        assert!(error.to_string().contains("not valid standard base64"), "{error}");
        assert_eq!(format!("{blob:?}"), "Blob(3 bytes)");
    }
}
