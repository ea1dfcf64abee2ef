//! JSON-RPC 2.0 framing on raw bytes.
//!
//! Messages are parsed only as far as routing needs: `id`, `params`, `result` and `error`
//! stay `RawValue`s, so a backend's result can be spliced into the client's response byte
//! for byte (`_meta`, unknown fields, key order and number spelling all survive).

use serde::Deserialize;
use serde_json::value::RawValue;

/// Standard JSON-RPC and MCP error codes the gateway emits itself.
pub mod code {
    /// The message is not JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid JSON-RPC request.
    pub const INVALID_REQUEST: i64 = -32600;
    /// The method is not served.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// The params cannot be read for the method.
    pub const INVALID_PARAMS: i64 = -32602;
    /// The gateway failed.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// No valid credentials.
    pub const UNAUTHENTICATED: i64 = -32010;
    /// The caller's roles do not allow the name.
    pub const FORBIDDEN: i64 = -32011;
    /// The tool or its backend is switched off.
    pub const KILLED: i64 = -32012;
    /// Over the caller's quota.
    pub const RATE_LIMITED: i64 = -32013;
    /// The call's audit record cannot be made durable (fail-closed).
    pub const AUDIT_UNAVAILABLE: i64 = -32016;
    /// A tool whose definition changed, held until approved (`sentinel pins approve`).
    pub const HELD: i64 = -32017;
    /// No usable credential for this caller at this backend (SPEC §7).
    pub const NO_CREDENTIAL: i64 = -32018;
    /// The backend is down, exited, or its circuit is open.
    pub const BACKEND_UNAVAILABLE: i64 = -32014;
    /// The backend did not answer in time.
    pub const BACKEND_TIMEOUT: i64 = -32015;
    /// A stateless request's headers do not match its body.
    pub const HEADER_MISMATCH: i64 = -32020;
    /// The client lacks a capability the call needs.
    pub const MISSING_CLIENT_CAPABILITY: i64 = -32021;
    /// A protocol version the gateway does not speak.
    pub const UNSUPPORTED_PROTOCOL_VERSION: i64 = -32022;
}

/// One incoming JSON-RPC message, from a client or a backend. A duplicated envelope key
/// is a parse error (serde rejects duplicate struct fields), so `method` cannot be smuggled.
#[derive(Debug, Deserialize)]
pub struct Message {
    #[serde(default)]
    /// `"2.0"` for a valid message.
    pub jsonrpc: Option<String>,
    #[serde(default, deserialize_with = "raw_id")]
    /// The id, raw (a request's or a response's).
    pub id: Option<Box<RawValue>>,
    #[serde(default)]
    /// A request's or notification's method.
    pub method: Option<String>,
    #[serde(default)]
    /// The params, raw.
    pub params: Option<Box<RawValue>>,
    #[serde(default)]
    /// A response's result, raw.
    pub result: Option<Box<RawValue>>,
    #[serde(default)]
    /// A response's error, raw.
    pub error: Option<Box<RawValue>>,
}

/// Keeps an explicit `"id": null` distinguishable from an absent id (both are refused for
/// requests, but a null id must not turn a request into a notification).
fn raw_id<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<Box<RawValue>>, D::Error> {
    Box::<RawValue>::deserialize(d).map(Some)
}

/// What a message is, by the fields it has.
pub enum Kind {
    /// A method and an id.
    Request,
    /// A method without an id.
    Notification,
    /// An id with a result or an error.
    Response,
}

impl Message {
    /// Parses the envelope; `params`, `result` and `error` stay raw.
    pub fn parse(bytes: &[u8]) -> Result<Message, serde_json::Error> {
        serde_json::from_slice(bytes)
    }

    /// What the message is; `None` for a combination JSON-RPC does not allow.
    pub fn kind(&self) -> Option<Kind> {
        match (&self.method, &self.id, &self.result, &self.error) {
            (Some(_), Some(_), None, None) => Some(Kind::Request),
            (Some(_), None, None, None) => Some(Kind::Notification),
            (None, Some(_), Some(_), None) | (None, Some(_), None, Some(_)) => Some(Kind::Response),
            _ => None,
        }
    }

    /// Whether the id is a string or an integer, as MCP requires (never null, never fractional).
    pub fn id_is_valid(&self) -> bool {
        match &self.id {
            None => false,
            Some(id) => {
                let s = id.get();
                s.starts_with('"') || (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit() || b == b'-'))
            }
        }
    }
}

/// `{"jsonrpc":"2.0","id":ID,"result":RESULT}` with both pieces copied verbatim.
pub fn result(id: &RawValue, result: &str) -> String {
    let mut s = String::with_capacity(36 + id.get().len() + result.len());
    s.push_str(r#"{"jsonrpc":"2.0","id":"#);
    s.push_str(id.get());
    s.push_str(r#","result":"#);
    s.push_str(result);
    s.push('}');
    s
}

/// `{"jsonrpc":"2.0","id":ID,"error":ERROR}` with the error object copied verbatim.
pub fn error_raw(id: Option<&RawValue>, error: &str) -> String {
    let id = id.map(RawValue::get).unwrap_or("null");
    format!(r#"{{"jsonrpc":"2.0","id":{id},"error":{error}}}"#)
}

/// An error response built by the gateway.
pub fn error(id: Option<&RawValue>, code: i64, message: &str, data: Option<&serde_json::Value>) -> String {
    let mut obj = serde_json::json!({ "code": code, "message": message });
    if let Some(d) = data {
        obj["data"] = d.clone();
    }
    error_raw(id, &obj.to_string())
}

/// A notification's text, `params` copied verbatim.
pub fn notification(method: &str, params: &str) -> String {
    format!(r#"{{"jsonrpc":"2.0","method":{},"params":{params}}}"#, serde_json::to_string(method).unwrap_or_default())
}

/// A request's text, the id and `params` copied verbatim.
pub fn request(id: &str, method: &str, params: &str) -> String {
    format!(
        r#"{{"jsonrpc":"2.0","id":{id},"method":{},"params":{params}}}"#,
        serde_json::to_string(method).unwrap_or_default()
    )
}

/// Adds `,"key":value` right before the closing brace of a JSON object, leaving every other
/// byte in place. Used to add `resultType` to a session-based backend's result for a stateless client; at
/// the end, as a streamed result gets it (its end is the first place it is known to lack it).
pub fn splice_field(object: &str, key: &str, value: &str) -> String {
    let trimmed = object.trim_end();
    let Some(body) = trimmed.strip_suffix('}') else {
        return object.to_string();
    };
    let empty = body.trim_end().ends_with('{');
    let mut s = String::with_capacity(object.len() + key.len() + value.len() + 6);
    s.push_str(body);
    if !empty {
        s.push(',');
    }
    s.push('"');
    s.push_str(key);
    s.push_str("\":");
    s.push_str(value);
    s.push('}');
    s
}

/// Whether a raw JSON object has a top-level key, without decoding its values. Reading stops
/// at the key: a result that starts with `resultType` is not scanned to its end (a 1 MB
/// result was read in full just to learn that), and no key is copied. `object` is a value
/// the gateway parsed already, so stopping early skips no validation.
pub fn has_top_level_key(object: &str, key: &str) -> bool {
    use serde::de::{DeserializeSeed, IgnoredAny, MapAccess, Visitor};
    use std::cell::Cell;

    struct KeyIs<'k>(&'k str);
    impl<'de> DeserializeSeed<'de> for KeyIs<'_> {
        type Value = bool;
        fn deserialize<D: serde::Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
            d.deserialize_str(self)
        }
    }
    impl<'de> Visitor<'de> for KeyIs<'_> {
        type Value = bool;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a key")
        }
        fn visit_str<E>(self, v: &str) -> Result<bool, E> {
            Ok(v == self.0)
        }
    }
    struct Keys<'k> {
        key: &'k str,
        found: &'k Cell<bool>,
    }
    impl<'de> Visitor<'de> for Keys<'_> {
        type Value = ();
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("an object")
        }
        fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
            while let Some(is_it) = map.next_key_seed(KeyIs(self.key))? {
                if is_it {
                    // Returning before the end makes the parser report the unread rest as
                    // an error; the answer is already in `found`.
                    self.found.set(true);
                    return Ok(());
                }
                map.next_value::<IgnoredAny>()?;
            }
            Ok(())
        }
    }
    let found = Cell::new(false);
    let mut de = serde_json::Deserializer::from_str(object);
    let _ = serde::Deserializer::deserialize_map(&mut de, Keys { key, found: &found });
    found.get()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splice_keeps_bytes() {
        let r = r#"{"b":1.0,"a":"\u00e9"}"#;
        assert_eq!(splice_field(r, "resultType", r#""complete""#), r#"{"b":1.0,"a":"\u00e9","resultType":"complete"}"#);
        assert_eq!(splice_field("{ }", "k", "1"), r#"{ "k":1}"#);
        assert!(has_top_level_key(r, "a"));
        assert!(!has_top_level_key(r#"{"x":{"a":1}}"#, "a"));
        assert!(has_top_level_key(r#"{"x":{"a":1},"\u0061":2}"#, "a"), "an escaped key is still that key");
        assert!(has_top_level_key(r#"{"a":1,"b":2}"#, "a") && has_top_level_key(r#"{"a":1,"b":2}"#, "b"));
        assert!(!has_top_level_key("[1]", "a") && !has_top_level_key("{}", "a"));
    }

    #[test]
    fn kinds_and_ids() {
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":null,"method":"x"}"#).unwrap();
        assert!(matches!(m.kind(), Some(Kind::Request)));
        assert!(!m.id_is_valid());
        let m = Message::parse(br#"{"jsonrpc":"2.0","id":"a","method":"x"}"#).unwrap();
        assert!(m.id_is_valid());
        assert!(Message::parse(br#"{"jsonrpc":"2.0","method":"a","method":"b"}"#).is_err());
        let m = Message::parse(br#"{"jsonrpc":"2.0","method":"n"}"#).unwrap();
        assert!(matches!(m.kind(), Some(Kind::Notification)));
    }
}
