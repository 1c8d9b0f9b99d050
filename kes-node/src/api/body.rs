//! Request bodies decoded the way Go's `encoding/json` decodes them into upstream's structs:
//! only the first JSON value counts (trailing bytes are ignored), field names match
//! case-insensitively, unknown fields are ignored, `null` means "absent", and byte fields are
//! standard base64 with padding (line breaks ignored).
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};
use base64::engine::DecodePaddingMode;
use base64::Engine;
use serde_json::{Map, Value};

/// Go's `base64.StdEncoding`: padding required, non-zero trailing bits tolerated.
const GO_STD: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::RequireCanonical)
        .with_decode_allow_trailing_bits(true),
);

/// Standard base64 with padding, as Go encodes `[]byte`.
pub(crate) fn b64(bytes: &[u8]) -> String {
    GO_STD.encode(bytes)
}

/// The body did not decode into the expected shape.
#[derive(Debug)]
pub(super) struct BadBody;

/// The fields of a decoded JSON object.
pub(super) struct Fields(Map<String, Value>);

impl Fields {
    /// Decodes the first JSON value of `body`, which must be an object or `null`.
    pub(super) fn decode(body: &[u8]) -> Result<Fields, BadBody> {
        let mut values = serde_json::Deserializer::from_slice(body).into_iter::<Value>();
        match values.next() {
            Some(Ok(Value::Object(map))) => Ok(Fields(map)),
            Some(Ok(Value::Null)) => Ok(Fields(Map::new())),
            _ => Err(BadBody),
        }
    }

    /// An empty object (for routes whose body is optional).
    pub(super) fn empty() -> Fields {
        Fields(Map::new())
    }

    fn get(&self, name: &str) -> Option<&Value> {
        self.0.get(name).or_else(|| {
            self.0
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v)
        })
    }

    /// A `[]byte` field: absent or `null` is empty.
    pub(super) fn bytes(&self, name: &str) -> Result<Vec<u8>, BadBody> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(Vec::new()),
            Some(Value::String(s)) => {
                let cleaned: String = s.chars().filter(|c| *c != '\r' && *c != '\n').collect();
                GO_STD.decode(cleaned).map_err(|_| BadBody)
            }
            Some(_) => Err(BadBody),
        }
    }

    /// A `string` field: absent or `null` is empty.
    pub(super) fn string(&self, name: &str) -> Result<String, BadBody> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(String::new()),
            Some(Value::String(s)) => Ok(s.clone()),
            Some(_) => Err(BadBody),
        }
    }
}

impl Fields {
    /// A `bool` field: absent or `null` is false.
    pub(super) fn boolean(&self, name: &str) -> Result<bool, BadBody> {
        match self.get(name) {
            None | Some(Value::Null) => Ok(false),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(BadBody),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_semantics() {
        let f = Fields::decode(b"{\"KEY\":\"AAEC\",\"Cipher\":\"AES256\"} garbage").unwrap();
        assert_eq!(f.bytes("key").unwrap(), vec![0, 1, 2]);
        assert_eq!(f.string("cipher").unwrap(), "AES256");
        assert!(Fields::decode(b"[]").is_err());
        assert!(Fields::decode(b"").is_err());
        assert!(Fields::decode(b"{\"a\":").is_err());
        assert!(Fields::decode(b"null").is_ok());
        let f = Fields::decode(b"{\"context\":5}").unwrap();
        assert!(f.bytes("context").is_err());
        let f = Fields::decode(b"{\"k\":\"AAECAw\"}").unwrap();
        assert!(f.bytes("k").is_err(), "unpadded base64 is rejected like Go");
        let f = Fields::decode(b"{\"k\":\"AA-_\"}").unwrap();
        assert!(f.bytes("k").is_err(), "URL-safe base64 is rejected");
        let f = Fields::decode(b"{\"k\":\"AAEC\\r\\nAw==\"}").unwrap();
        assert_eq!(f.bytes("k").unwrap(), vec![0, 1, 2, 3]);
    }
}
