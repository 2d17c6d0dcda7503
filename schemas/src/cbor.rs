//! Strict CBOR reading and the typed map reader used by every message.
//!
//! PROTOCOL.md: a payload must be exactly one CBOR item; a map key that
//! appears twice (at any depth, keys compared as decoded) or trailing bytes
//! make it refused. Readers ignore keys they do not know. Every error names
//! the key that was wrong, so a device team can fix its encoder.

use std::collections::{BTreeMap, HashSet};

pub use ciborium::value::Value;

/// Deepest nesting we read. Our messages nest at most 4 levels.
pub const MAX_DEPTH: usize = 16;

/// Why a payload was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("payload is {len} bytes, over the limit of {max} for {what}")]
    TooLarge {
        what: &'static str,
        len: usize,
        max: usize,
    },
    #[error("payload is empty")]
    Empty,
    #[error("payload is not valid CBOR: {0}")]
    Cbor(String),
    #[error("payload has {0} trailing bytes after the CBOR item")]
    Trailing(usize),
    #[error("map key {0} appears twice")]
    DuplicateKey(String),
    #[error("{what} must be a CBOR map with text keys")]
    NotAMap { what: &'static str },
    #[error("key {key:?} is missing")]
    Missing { key: &'static str },
    #[error("key {key:?} must be {expected}")]
    WrongType {
        key: &'static str,
        expected: &'static str,
    },
    #[error("key {key:?}: {reason}")]
    Invalid { key: &'static str, reason: String },
}

/// Decodes exactly one CBOR item from `bytes` (at most `max` bytes long),
/// refusing trailing bytes and duplicate map keys at any depth.
pub fn decode_strict(bytes: &[u8], max: usize, what: &'static str) -> Result<Value, DecodeError> {
    if bytes.len() > max {
        return Err(DecodeError::TooLarge {
            what,
            len: bytes.len(),
            max,
        });
    }
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    let mut rest: &[u8] = bytes;
    let value: Value = ciborium::de::from_reader_with_recursion_limit(&mut rest, MAX_DEPTH)
        .map_err(|e| DecodeError::Cbor(short(&e.to_string())))?;
    if !rest.is_empty() {
        return Err(DecodeError::Trailing(rest.len()));
    }
    check_unique_keys(&value, 0)?;
    Ok(value)
}

/// Encodes a value. Encoding into a Vec cannot fail for the values we build
/// (no custom serializers, no I/O).
pub fn encode(value: &Value) -> Vec<u8> {
    let mut out = Vec::with_capacity(64);
    // Invariant: ciborium only fails on writer errors, and Vec never fails.
    ciborium::ser::into_writer(value, &mut out).expect("encoding a Value into a Vec cannot fail");
    out
}

fn check_unique_keys(v: &Value, depth: usize) -> Result<(), DecodeError> {
    if depth > MAX_DEPTH {
        return Err(DecodeError::Cbor("nested too deeply".into()));
    }
    match v {
        Value::Map(entries) => {
            let mut seen = HashSet::with_capacity(entries.len());
            for (k, val) in entries {
                // Keys compare as decoded: re-encode each in its shortest form.
                if !seen.insert(encode(k)) {
                    return Err(DecodeError::DuplicateKey(describe_key(k)));
                }
                check_unique_keys(k, depth + 1)?;
                check_unique_keys(val, depth + 1)?;
            }
            Ok(())
        }
        Value::Array(items) => items
            .iter()
            .try_for_each(|i| check_unique_keys(i, depth + 1)),
        Value::Tag(_, inner) => check_unique_keys(inner, depth + 1),
        _ => Ok(()),
    }
}

fn describe_key(k: &Value) -> String {
    match k {
        Value::Text(s) => format!("{:?}", short(s)),
        Value::Integer(i) => i128::from(*i).to_string(),
        _ => "(non-text key)".to_string(),
    }
}

fn short(s: &str) -> String {
    s.chars().take(120).collect()
}

/// A text-keyed map being read. Unknown keys are ignored; reading a key
/// twice is fine. Non-text keys are ignored.
pub struct MapReader {
    entries: BTreeMap<String, Value>,
}

impl MapReader {
    /// Reads `v` as a map with text keys.
    pub fn new(v: Value, what: &'static str) -> Result<Self, DecodeError> {
        match v {
            Value::Map(entries) => {
                let entries = entries
                    .into_iter()
                    .filter_map(|(k, v)| match k {
                        Value::Text(k) => Some((k, v)),
                        _ => None,
                    })
                    .collect();
                Ok(Self { entries })
            }
            _ => Err(DecodeError::NotAMap { what }),
        }
    }

    /// Decodes `bytes` strictly and reads the top-level map.
    pub fn from_bytes(bytes: &[u8], max: usize, what: &'static str) -> Result<Self, DecodeError> {
        Self::new(decode_strict(bytes, max, what)?, what)
    }

    /// True when the map holds `key`.
    pub fn has(&self, key: &str) -> bool {
        self.entries.contains_key(key)
    }

    /// The raw value of an optional key.
    pub fn opt_value(&mut self, key: &'static str) -> Option<Value> {
        self.entries.remove(key)
    }

    /// The raw value of a required key.
    pub fn value(&mut self, key: &'static str) -> Result<Value, DecodeError> {
        self.entries.remove(key).ok_or(DecodeError::Missing { key })
    }

    /// A required text value of at most `max` bytes.
    pub fn text(&mut self, key: &'static str, max: usize) -> Result<String, DecodeError> {
        let v = self.value(key)?;
        as_text(key, v, max)
    }

    /// An optional text value of at most `max` bytes.
    pub fn opt_text(
        &mut self,
        key: &'static str,
        max: usize,
    ) -> Result<Option<String>, DecodeError> {
        self.opt_value(key)
            .map(|v| as_text(key, v, max))
            .transpose()
    }

    /// A required name (id type), validated.
    pub fn name<T>(&mut self, key: &'static str) -> Result<T, DecodeError>
    where
        T: std::str::FromStr<Err = crate::ids::NameError>,
    {
        let s = self.text(key, crate::ids::MAX_NAME_LEN * 4)?;
        s.parse()
            .map_err(|e: crate::ids::NameError| DecodeError::Invalid {
                key,
                reason: e.to_string(),
            })
    }

    /// An optional name (id type), validated.
    pub fn opt_name<T>(&mut self, key: &'static str) -> Result<Option<T>, DecodeError>
    where
        T: std::str::FromStr<Err = crate::ids::NameError>,
    {
        if self.has(key) {
            self.name(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required unsigned integer.
    pub fn uint(&mut self, key: &'static str) -> Result<u64, DecodeError> {
        let v = self.value(key)?;
        as_uint(key, v)
    }

    /// An optional unsigned integer.
    pub fn opt_uint(&mut self, key: &'static str) -> Result<Option<u64>, DecodeError> {
        self.opt_value(key).map(|v| as_uint(key, v)).transpose()
    }

    /// A required boolean.
    pub fn bool(&mut self, key: &'static str) -> Result<bool, DecodeError> {
        match self.value(key)? {
            Value::Bool(b) => Ok(b),
            _ => Err(DecodeError::WrongType {
                key,
                expected: "a boolean",
            }),
        }
    }

    /// An optional boolean.
    pub fn opt_bool(&mut self, key: &'static str) -> Result<Option<bool>, DecodeError> {
        if self.has(key) {
            self.bool(key).map(Some)
        } else {
            Ok(None)
        }
    }

    /// A required byte string of at most `max` bytes.
    pub fn bytes(&mut self, key: &'static str, max: usize) -> Result<Vec<u8>, DecodeError> {
        match self.value(key)? {
            Value::Bytes(b) if b.len() <= max => Ok(b),
            Value::Bytes(b) => Err(DecodeError::Invalid {
                key,
                reason: format!("{} bytes, at most {max} allowed", b.len()),
            }),
            _ => Err(DecodeError::WrongType {
                key,
                expected: "a byte string",
            }),
        }
    }

    /// A required 32-byte hash.
    pub fn hash32(&mut self, key: &'static str) -> Result<[u8; 32], DecodeError> {
        let b = self.bytes(key, 32)?;
        b.try_into().map_err(|_| DecodeError::Invalid {
            key,
            reason: "must be exactly 32 bytes".into(),
        })
    }

    /// A required array of at most `max` items.
    pub fn array(&mut self, key: &'static str, max: usize) -> Result<Vec<Value>, DecodeError> {
        match self.value(key)? {
            Value::Array(a) if a.len() <= max => Ok(a),
            Value::Array(a) => Err(DecodeError::Invalid {
                key,
                reason: format!("{} items, at most {max} allowed", a.len()),
            }),
            _ => Err(DecodeError::WrongType {
                key,
                expected: "an array",
            }),
        }
    }

    /// A required map of text to text: at most `max_entries`, each key and
    /// value at most `max_len` bytes.
    pub fn text_map(
        &mut self,
        key: &'static str,
        max_entries: usize,
        max_len: usize,
    ) -> Result<BTreeMap<String, String>, DecodeError> {
        let entries = match self.value(key)? {
            Value::Map(m) => m,
            _ => {
                return Err(DecodeError::WrongType {
                    key,
                    expected: "a map of text to text",
                })
            }
        };
        if entries.len() > max_entries {
            return Err(DecodeError::Invalid {
                key,
                reason: format!("{} entries, at most {max_entries} allowed", entries.len()),
            });
        }
        let mut out = BTreeMap::new();
        for (k, v) in entries {
            match (k, v) {
                (Value::Text(k), Value::Text(v)) if k.len() <= max_len && v.len() <= max_len => {
                    out.insert(k, v);
                }
                (Value::Text(_), Value::Text(_)) => {
                    return Err(DecodeError::Invalid {
                        key,
                        reason: format!("an entry is over {max_len} bytes"),
                    })
                }
                _ => {
                    return Err(DecodeError::WrongType {
                        key,
                        expected: "a map of text to text",
                    })
                }
            }
        }
        Ok(out)
    }
}

/// Reads a text value.
pub fn as_text(key: &'static str, v: Value, max: usize) -> Result<String, DecodeError> {
    match v {
        Value::Text(s) if s.len() <= max => Ok(s),
        Value::Text(s) => Err(DecodeError::Invalid {
            key,
            reason: format!("{} bytes, at most {max} allowed", s.len()),
        }),
        _ => Err(DecodeError::WrongType {
            key,
            expected: "a text string",
        }),
    }
}

/// Reads an unsigned integer value.
pub fn as_uint(key: &'static str, v: Value) -> Result<u64, DecodeError> {
    match v {
        Value::Integer(i) => u64::try_from(i).map_err(|_| DecodeError::WrongType {
            key,
            expected: "an unsigned integer",
        }),
        _ => Err(DecodeError::WrongType {
            key,
            expected: "an unsigned integer",
        }),
    }
}

/// Builds a text-keyed map in a fixed key order.
#[derive(Default)]
pub struct MapBuilder {
    entries: Vec<(Value, Value)>,
}

impl MapBuilder {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds `key: value`.
    pub fn put(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.entries
            .push((Value::Text(key.to_string()), value.into()));
        self
    }

    /// Adds `key: value` when `value` is `Some`.
    pub fn put_opt(self, key: &str, value: Option<impl Into<Value>>) -> Self {
        match value {
            Some(v) => self.put(key, v),
            None => self,
        }
    }

    /// Adds a byte string.
    pub fn put_bytes(self, key: &str, b: &[u8]) -> Self {
        self.put(key, Value::Bytes(b.to_vec()))
    }

    /// Adds a map of text to text.
    pub fn put_text_map(self, key: &str, m: &BTreeMap<String, String>) -> Self {
        let v = Value::Map(
            m.iter()
                .map(|(k, v)| (Value::Text(k.clone()), Value::Text(v.clone())))
                .collect(),
        );
        self.put(key, v)
    }

    /// The finished map.
    pub fn build(self) -> Value {
        Value::Map(self.entries)
    }

    /// The finished map, encoded.
    pub fn encode(self) -> Vec<u8> {
        encode(&self.build())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refuses_trailing_bytes() {
        let mut b = MapBuilder::new().put("a", 1u64).encode();
        assert!(decode_strict(&b, 100, "t").is_ok());
        b.push(0x00);
        assert_eq!(decode_strict(&b, 100, "t"), Err(DecodeError::Trailing(1)));
    }

    #[test]
    fn refuses_duplicate_keys_at_any_depth() {
        // {"a": 1, "a": 2}
        let top = [0xa2, 0x61, b'a', 0x01, 0x61, b'a', 0x02];
        assert!(matches!(
            decode_strict(&top, 100, "t"),
            Err(DecodeError::DuplicateKey(_))
        ));
        // {"m": [{"x": 1, "x": 1}]}
        let nested = [
            0xa1, 0x61, b'm', 0x81, 0xa2, 0x61, b'x', 0x01, 0x61, b'x', 0x01,
        ];
        assert!(matches!(
            decode_strict(&nested, 100, "t"),
            Err(DecodeError::DuplicateKey(_))
        ));
        // {1: 0, 0x18 0x01 (1 in a longer form): 0}: equal as decoded
        let wide = [0xa2, 0x01, 0x00, 0x18, 0x01, 0x00];
        assert!(matches!(
            decode_strict(&wide, 100, "t"),
            Err(DecodeError::DuplicateKey(_))
        ));
        // {"a": 1, "b": 1} is fine
        let ok = [0xa2, 0x61, b'a', 0x01, 0x61, b'b', 0x01];
        assert!(decode_strict(&ok, 100, "t").is_ok());
    }

    #[test]
    fn refuses_oversized_and_empty() {
        assert!(matches!(
            decode_strict(&[0u8; 10], 5, "t"),
            Err(DecodeError::TooLarge { .. })
        ));
        assert_eq!(decode_strict(&[], 5, "t"), Err(DecodeError::Empty));
        assert!(matches!(
            decode_strict(&[0xff], 5, "t"),
            Err(DecodeError::Cbor(_))
        ));
    }

    #[test]
    fn refuses_deep_nesting() {
        let deep = vec![0x81u8; 100]
            .into_iter()
            .chain([0x00])
            .collect::<Vec<_>>();
        assert!(decode_strict(&deep, 1000, "t").is_err());
    }

    #[test]
    fn reader_names_the_key() {
        let b = MapBuilder::new().put("n", "text").put("x", 5u64).encode();
        let mut r = MapReader::from_bytes(&b, 100, "t").unwrap();
        assert_eq!(
            r.uint("n"),
            Err(DecodeError::WrongType {
                key: "n",
                expected: "an unsigned integer"
            })
        );
        assert_eq!(
            r.uint("missing"),
            Err(DecodeError::Missing { key: "missing" })
        );
        assert_eq!(r.uint("x"), Ok(5));
    }

    #[test]
    fn negative_is_not_unsigned() {
        let b = MapBuilder::new()
            .put("n", Value::Integer((-1i64).into()))
            .encode();
        let mut r = MapReader::from_bytes(&b, 100, "t").unwrap();
        assert!(r.uint("n").is_err());
    }
}
