//! MCP protocol generations, versions, reserved `_meta` keys, and strict request params.

use std::fmt;

use indexmap::IndexMap;
use serde::de::{self, Deserializer, MapAccess, Visitor};
use serde::{Deserialize, Serialize};
use serde_json::value::RawValue;

/// The stateless revision: per-request `_meta`, `server/discover`, no sessions.
pub const STATELESS: &str = "2026-07-28";
/// Session-based revisions, newest first.
pub const SESSION_BASED: [&str; 3] = ["2025-11-25", "2025-06-18", "2025-03-26"];
/// Every version the gateway speaks, newest first (what `UnsupportedProtocolVersion` lists).
pub const SUPPORTED: [&str; 4] = [STATELESS, SESSION_BASED[0], SESSION_BASED[1], SESSION_BASED[2]];

/// `_meta` key of a stateless request's protocol version.
pub const META_PROTOCOL_VERSION: &str = "io.modelcontextprotocol/protocolVersion";
/// `_meta` key of a stateless client's capabilities.
pub const META_CLIENT_CAPABILITIES: &str = "io.modelcontextprotocol/clientCapabilities";
/// `_meta` key of a stateless client's name and version.
pub const META_CLIENT_INFO: &str = "io.modelcontextprotocol/clientInfo";
/// `_meta` key of the server's name and version in stateless results.
pub const META_SERVER_INFO: &str = "io.modelcontextprotocol/serverInfo";
/// `_meta` key of the log level a stateless client wants.
pub const META_LOG_LEVEL: &str = "io.modelcontextprotocol/logLevel";
/// `_meta` key tying a notification to its `subscriptions/listen`.
pub const META_SUBSCRIPTION_ID: &str = "io.modelcontextprotocol/subscriptionId";
/// Sentinel's own `_meta` key carrying the gateway's request id to backends.
pub const META_REQUEST_ID: &str = "dev.sentinel/requestId";

/// Which generation a peer (client or backend) speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Generation {
    /// Session-based, with the negotiated version.
    SessionBased(&'static str),
    /// Stateless 2026-07-28.
    Stateless,
}

impl Generation {
    /// The protocol version this generation speaks.
    pub fn version(self) -> &'static str {
        match self {
            Generation::SessionBased(v) => v,
            Generation::Stateless => STATELESS,
        }
    }
}

impl fmt::Display for Generation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.version())
    }
}

/// The session-based version to answer `initialize` with: the client's if we speak it, else our newest.
pub fn negotiate_session_based(requested: Option<&str>) -> &'static str {
    requested.and_then(|r| SESSION_BASED.iter().find(|v| **v == r).copied()).unwrap_or(SESSION_BASED[0])
}

/// The session-based version `v`, if the gateway speaks it.
pub fn known_session_based(v: &str) -> Option<&'static str> {
    SESSION_BASED.iter().find(|x| **x == v).copied()
}

/// The gateway's `serverInfo`.
pub fn server_info() -> serde_json::Value {
    serde_json::json!({ "name": "sentinel", "version": env!("CARGO_PKG_VERSION") })
}

/// Request params as an ordered map of raw values. Duplicate keys are refused: a parser that
/// reads the first duplicate where the backend reads the last would be a policy bypass.
#[derive(Debug, Default, Clone)]
pub struct Params(pub IndexMap<String, Box<RawValue>>);

impl<'de> Deserialize<'de> for Params {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Params;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a params object")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
                let mut out = IndexMap::new();
                while let Some(k) = map.next_key::<String>()? {
                    let v: Box<RawValue> = map.next_value()?;
                    if out.contains_key(&k) {
                        return Err(de::Error::custom(format!("duplicate key `{k}` in params")));
                    }
                    out.insert(k, v);
                }
                Ok(Params(out))
            }
        }
        d.deserialize_map(V)
    }
}

impl Serialize for Params {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

/// Why a request's `params` (or its `_meta`) cannot be read: answered -32602 with this text.
#[derive(Debug, thiserror::Error)]
pub enum ParamsError {
    /// Not an object, or an object with a duplicate key.
    #[error("params must be an object: {0}")]
    NotAnObject(serde_json::Error),
    /// A key differs from a known one only in case.
    #[error("key `{key}` is a case variant of `{known}`; use `{known}`")]
    CaseVariant {
        /// The key as sent.
        key: String,
        /// The known key it is a variant of.
        known: &'static str,
    },
    #[error("`{0}` must be a string")]
    /// A param that must be a string is not.
    NotAString(String),
    #[error("`_meta` must be an object")]
    /// `_meta` is not an object.
    MetaNotAnObject,
    #[error("`_meta.io.modelcontextprotocol/protocolVersion` must be a string")]
    /// `_meta`'s protocol version is not a string.
    VersionNotAString,
}

impl Params {
    /// Parses params; absent params are an empty object.
    pub fn parse(raw: Option<&RawValue>) -> Result<Params, ParamsError> {
        match raw {
            None => Ok(Params::default()),
            Some(r) => serde_json::from_str(r.get()).map_err(ParamsError::NotAnObject),
        }
    }

    /// Refuses keys that differ from a known key only in case (`Name` beside `name`).
    pub fn check_case_variants(&self, known: &[&'static str]) -> Result<(), ParamsError> {
        for k in self.0.keys() {
            if let Some(kn) = known.iter().find(|kn| kn.eq_ignore_ascii_case(k) && **kn != k.as_str()) {
                return Err(ParamsError::CaseVariant { key: k.clone(), known: kn });
            }
        }
        Ok(())
    }

    /// The string param `key`, if present.
    pub fn str(&self, key: &str) -> Result<Option<String>, ParamsError> {
        match self.0.get(key) {
            None => Ok(None),
            Some(v) => {
                serde_json::from_str::<String>(v.get()).map(Some).map_err(|_| ParamsError::NotAString(key.to_string()))
            }
        }
    }

    /// Sets the string param `key`.
    pub fn set_str(&mut self, key: &str, value: &str) {
        let raw = RawValue::from_string(serde_json::to_string(value).unwrap_or_default()).expect("valid json string");
        self.0.insert(key.to_string(), raw);
    }

    /// The `_meta` object decoded (it is small), or empty.
    pub fn meta(&self) -> Result<serde_json::Map<String, serde_json::Value>, ParamsError> {
        match self.0.get("_meta") {
            None => Ok(Default::default()),
            Some(v) => Params::meta_of(v),
        }
    }

    /// A `_meta` value as a map.
    pub fn meta_of(raw: &RawValue) -> Result<serde_json::Map<String, serde_json::Value>, ParamsError> {
        serde_json::from_str(raw.get()).map_err(|_| ParamsError::MetaNotAnObject)
    }

    /// Replaces `_meta` (removed when empty).
    pub fn set_meta(&mut self, meta: &serde_json::Map<String, serde_json::Value>) {
        if meta.is_empty() {
            self.0.shift_remove("_meta");
        } else {
            let raw = serde_json::value::to_raw_value(meta).expect("map serializes");
            self.0.insert("_meta".to_string(), raw);
        }
    }

    /// The params as JSON text.
    pub fn to_json(&self) -> String {
        serde_json::to_string(&self.0).unwrap_or_else(|_| "{}".into())
    }
}

/// What the stateless `_meta` of a client request says.
#[derive(Debug, Clone)]
pub struct StatelessMeta {
    /// The protocol version the request names.
    pub version: String,
    /// The client's capabilities (`Null` when absent).
    pub capabilities: serde_json::Value,
    /// The log level the client wants notifications at, if any.
    pub log_level: Option<String>,
}

impl StatelessMeta {
    /// `Ok(None)` when the request carries no stateless protocol version at all.
    pub fn from_meta(meta: &serde_json::Map<String, serde_json::Value>) -> Result<Option<StatelessMeta>, ParamsError> {
        let Some(v) = meta.get(META_PROTOCOL_VERSION) else {
            return Ok(None);
        };
        let version = v.as_str().ok_or(ParamsError::VersionNotAString)?.to_string();
        let capabilities = meta.get(META_CLIENT_CAPABILITIES).cloned().unwrap_or(serde_json::Value::Null);
        let log_level = meta.get(META_LOG_LEVEL).and_then(|l| l.as_str()).map(str::to_string);
        Ok(Some(StatelessMeta { version, capabilities, log_level }))
    }
}

/// Log levels in RFC 5424 order, for filtering `notifications/message`.
pub fn log_level_rank(level: &str) -> Option<u8> {
    ["debug", "info", "notice", "warning", "error", "critical", "alert", "emergency"]
        .iter()
        .position(|l| *l == level)
        .map(|p| p as u8)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_refuse_duplicates_and_case_variants() {
        assert!(Params::parse(Some(&RawValue::from_string(r#"{"name":"a","name":"b"}"#.into()).unwrap())).is_err());
        let p = Params::parse(Some(&RawValue::from_string(r#"{"Name":"a","arguments":{}}"#.into()).unwrap())).unwrap();
        assert!(p.check_case_variants(&["name", "arguments", "_meta"]).is_err());
        let mut p =
            Params::parse(Some(&RawValue::from_string(r#"{"name":"a","arguments":{"x":1.0}}"#.into()).unwrap()))
                .unwrap();
        p.set_str("name", "b");
        assert_eq!(p.to_json(), r#"{"name":"b","arguments":{"x":1.0}}"#);
    }
}
