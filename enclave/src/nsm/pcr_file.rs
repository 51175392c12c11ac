//! Initial PCR values for the mock NSM, from a JSON file.
//!
//! Accepted forms, each value 96 hex digits (48 bytes):
//!
//! ```text
//! {"0": "<hex>", "1": "<hex>", ...}
//! {"PCR0": "<hex>", "PCR1": "<hex>", ...}
//! {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "<hex>", ...}}   (nitro-cli build-enclave output)
//! ```
//!
//! Only PCRs 0 to 15 can be given, because those are the ones the Nitro
//! hypervisor sets and locks before the enclave starts. PCR4 cannot be given:
//! the mock derives it from its instance id, as the hypervisor does.

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;

use super::NsmError;

/// The length of a SHA-384 PCR.
pub const PCR_LEN: usize = 48;
/// The PCR that holds the parent instance id, set by the mock itself.
pub const INSTANCE_ID_PCR: u32 = 4;
/// PCRs the hypervisor sets and locks at enclave start: `0..LOCKED_AT_START`.
pub const LOCKED_AT_START: u32 = 16;

/// Reads a PCR file and returns PCR index to 48-byte value.
pub fn load_pcr_file(path: &Path) -> Result<BTreeMap<u32, [u8; PCR_LEN]>, NsmError> {
    let text = std::fs::read_to_string(path).map_err(|error| NsmError::PcrFileRead { path: path.to_owned(), error })?;
    parse_pcr_json(&text).map_err(|reason| NsmError::PcrFile { path: path.to_owned(), reason })
}

/// Parses the JSON text of a PCR file; the error is the reason, without the path.
pub fn parse_pcr_json(text: &str) -> Result<BTreeMap<u32, [u8; PCR_LEN]>, String> {
    let value: Value = serde_json::from_str(text).map_err(|e| format!("not valid JSON: {e}"))?;
    let object = match value {
        Value::Object(mut object) => match object.remove("Measurements") {
            Some(Value::Object(measurements)) => measurements,
            Some(_) => return Err("`Measurements` is not an object".to_owned()),
            None => object,
        },
        _ => return Err("expected a JSON object of PCR index to hex value".to_owned()),
    };

    let mut pcrs = BTreeMap::new();
    for (key, value) in object {
        if key == "HashAlgorithm" {
            match value.as_str() {
                Some(name) if name.starts_with("Sha384") => continue,
                _ => return Err(format!("`HashAlgorithm` is {value}; expected Sha384")),
            }
        }
        let digits = key.strip_prefix("PCR").unwrap_or(&key);
        let index: u32 = digits.parse().map_err(|_| {
            format!("key `{key}` is not a PCR index; expected \"0\" to \"15\" or \"PCR0\" to \"PCR15\"")
        })?;
        if index >= LOCKED_AT_START {
            return Err(format!(
                "PCR{index} cannot be set at start; only PCR0 to PCR15 are, and the enclave extends PCR16 to PCR31 itself"
            ));
        }
        if index == INSTANCE_ID_PCR {
            return Err("PCR4 is derived from the mock instance id; remove it from the file".to_owned());
        }
        let hex_text = value.as_str().ok_or_else(|| format!("PCR{index} is {value}; expected a hex string"))?;
        let bytes = hex::decode(hex_text).map_err(|e| format!("PCR{index} is not valid hex: {e}"))?;
        let bytes: [u8; PCR_LEN] = bytes
            .as_slice()
            .try_into()
            .map_err(|_| format!("PCR{index} is {} bytes; expected {PCR_LEN} (96 hex digits)", bytes.len()))?;
        if pcrs.insert(index, bytes).is_some() {
            return Err(format!("PCR{index} is given twice"));
        }
    }
    Ok(pcrs)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const A: &str = "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    const B: &str = "BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

    #[test]
    fn numeric_keys_parsed() {
        let pcrs = parse_pcr_json(&format!(r#"{{"0": "{A}", "8": "{B}"}}"#)).unwrap();
        assert_eq!(pcrs.len(), 2);
        assert_eq!(pcrs[&0], [0xaa; 48]);
        assert_eq!(pcrs[&8], [0xbb; 48]);
    }

    #[test]
    fn nitro_cli_measurements_parsed() {
        let text = format!(
            r#"{{"Measurements": {{"HashAlgorithm": "Sha384 {{ ... }}", "PCR0": "{A}", "PCR1": "{B}", "PCR2": "{A}"}}}}"#
        );
        let pcrs = parse_pcr_json(&text).unwrap();
        assert_eq!(pcrs.keys().copied().collect::<Vec<_>>(), [0, 1, 2]);
        assert_eq!(pcrs[&1], [0xbb; 48]);
    }

    #[test]
    fn pcr4_rejected() {
        let err = parse_pcr_json(&format!(r#"{{"PCR4": "{A}"}}"#)).unwrap_err();
        assert!(err.contains("PCR4 is derived"), "{err}");
    }

    #[test]
    fn pcr16_rejected() {
        let err = parse_pcr_json(&format!(r#"{{"16": "{A}"}}"#)).unwrap_err();
        assert!(err.contains("PCR16 cannot be set"), "{err}");
    }

    #[test]
    fn short_value_rejected() {
        let err = parse_pcr_json(r#"{"0": "abcd"}"#).unwrap_err();
        assert!(err.contains("2 bytes; expected 48"), "{err}");
    }

    #[test]
    fn bad_key_rejected() {
        let err = parse_pcr_json(&format!(r#"{{"PCRx": "{A}"}}"#)).unwrap_err();
        assert!(err.contains("key `PCRx`"), "{err}");
    }

    #[test]
    fn other_hash_algorithm_rejected() {
        let err = parse_pcr_json(&format!(r#"{{"Measurements": {{"HashAlgorithm": "Sha256", "PCR0": "{A}"}}}}"#))
            .unwrap_err();
        assert!(err.contains("HashAlgorithm"), "{err}");
    }

    #[test]
    fn duplicate_after_prefix_rejected() {
        let err = parse_pcr_json(&format!(r#"{{"0": "{A}", "PCR0": "{B}"}}"#)).unwrap_err();
        assert!(err.contains("PCR0 is given twice"), "{err}");
    }
}
