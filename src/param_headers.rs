//! `x-mcp-header`: tool arguments mirrored into `Mcp-Param-{Name}` HTTP headers
//! (2026-07-28). The gateway checks a client's headers against the body, and sets them
//! itself when it calls a stateless HTTP backend. Written by hand: it is MCP-specific.

use base64::Engine;
use serde_json::Value;

/// One annotated argument: the header it is mirrored into and where it sits in `arguments`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamHeader {
    /// The header name, e.g. `Mcp-Param-Region`.
    pub header: String,
    /// The chain of `properties` keys from the schema root to the argument.
    pub path: Vec<String>,
}

/// Why a tool's `x-mcp-header` annotations are invalid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadAnnotation {
    /// The annotation's value is not a string.
    #[error("x-mcp-header must be a string")]
    NotAString,
    /// On a property inside an array, a combinator or a `$ref`: no single argument value.
    #[error("x-mcp-header `{0}` is not on a property reachable through `properties` only")]
    Unreachable(String),
    /// Not an HTTP header name token.
    #[error("x-mcp-header `{0}` is not a valid header name token")]
    BadName(String),
    /// On a property whose value cannot be a header.
    #[error("x-mcp-header `{name}` is on a property of type {kind:?}; only string, integer and boolean are allowed")]
    BadType {
        /// The header name.
        name: String,
        /// The property's `type`, if it has one.
        kind: Option<String>,
    },
    /// Two properties claim the same header.
    #[error("x-mcp-header `{0}` is used twice")]
    UsedTwice(String),
}

/// Why a client's `Mcp-Param-*` headers do not match the body it sent.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HeaderMismatch {
    /// The body has the argument but the request lacks its header.
    #[error("the {header} header is required: argument `{argument}` is present")]
    Missing {
        /// The `Mcp-Param-*` header name.
        header: String,
        /// The argument it mirrors.
        argument: String,
    },
    /// The header's value does not decode (the named header).
    #[error("the {0} header is not validly encoded")]
    BadEncoding(String),
    /// The header and the body say different things.
    #[error("{header} header value '{sent}' does not match body value '{body}'")]
    Differs {
        /// The `Mcp-Param-*` header name.
        header: String,
        /// What the header said (decoded).
        sent: String,
        /// What the body's argument says.
        body: String,
    },
}

/// The annotations of a tool's `inputSchema`, or why they are invalid (the tool is then not
/// offered to clients, as the spec asks of clients on HTTP).
pub fn extract(schema: &Value) -> Result<Vec<ParamHeader>, BadAnnotation> {
    let mut out = Vec::new();
    walk(schema, &mut Vec::new(), true, &mut out)?;
    let mut seen = std::collections::HashSet::new();
    for p in &out {
        if !seen.insert(p.header.to_ascii_lowercase()) {
            return Err(BadAnnotation::UsedTwice(p.header.clone()));
        }
    }
    Ok(out)
}

fn walk(v: &Value, path: &mut Vec<String>, reachable: bool, out: &mut Vec<ParamHeader>) -> Result<(), BadAnnotation> {
    match v {
        Value::Object(m) => {
            if let Some(h) = m.get("x-mcp-header") {
                let name = h.as_str().ok_or(BadAnnotation::NotAString)?;
                if !reachable || path.is_empty() {
                    return Err(BadAnnotation::Unreachable(name.to_string()));
                }
                if name.is_empty() || !name.bytes().all(is_tchar) {
                    return Err(BadAnnotation::BadName(name.to_string()));
                }
                match m.get("type").and_then(Value::as_str) {
                    Some("string" | "integer" | "boolean") => {}
                    other => {
                        return Err(BadAnnotation::BadType { name: name.to_string(), kind: other.map(str::to_string) });
                    }
                }
                out.push(ParamHeader { header: format!("Mcp-Param-{name}"), path: path.clone() });
            }
            for (k, child) in m {
                if k == "properties" {
                    if let Value::Object(props) = child {
                        for (name, schema) in props {
                            path.push(name.clone());
                            walk(schema, path, reachable, out)?;
                            path.pop();
                        }
                    }
                } else if k != "x-mcp-header" {
                    walk(child, path, false, out)?;
                }
            }
            Ok(())
        }
        Value::Array(a) => a.iter().try_for_each(|x| walk(x, path, false, out)),
        _ => Ok(()),
    }
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// The argument's value as header text, or `None` when absent or null (no header then).
pub fn value(arguments: &Value, path: &[String]) -> Option<Value> {
    let mut v = arguments;
    for k in path {
        v = v.get(k)?;
    }
    (!v.is_null()).then(|| v.clone())
}

fn as_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// MCP's value encoding: plain when safe visible ASCII, else `=?base64?...?=`.
pub fn encode(v: &str) -> String {
    let plain = !v.is_empty()
        && v.bytes().all(|b| (0x20..=0x7e).contains(&b))
        && !v.starts_with(' ')
        && !v.ends_with(' ')
        && (!v.starts_with("=?base64?") || !v.ends_with("?="));
    if plain { v.to_string() } else { format!("=?base64?{}?=", base64::engine::general_purpose::STANDARD.encode(v)) }
}

/// Decodes MCP's value encoding; `None` for malformed Base64 or non-UTF-8.
pub fn decode(v: &str) -> Option<String> {
    match v.strip_prefix("=?base64?").and_then(|r| r.strip_suffix("?=")) {
        Some(b64) => String::from_utf8(base64::engine::general_purpose::STANDARD.decode(b64).ok()?).ok(),
        None => Some(v.to_string()),
    }
}

/// The headers a call with these arguments carries.
pub fn headers_for(params: &[ParamHeader], arguments: &Value) -> Vec<(String, String)> {
    params.iter().filter_map(|p| value(arguments, &p.path).map(|v| (p.header.clone(), encode(&as_text(&v))))).collect()
}

/// Checks a client's `Mcp-Param-*` headers against the body; `get` reads a header by name.
pub fn check(
    params: &[ParamHeader],
    arguments: &Value,
    get: impl Fn(&str) -> Option<String>,
) -> Result<(), HeaderMismatch> {
    for p in params {
        let Some(body) = value(arguments, &p.path) else { continue };
        let Some(raw) = get(&p.header) else {
            return Err(HeaderMismatch::Missing { header: p.header.clone(), argument: p.path.join(".") });
        };
        let Some(text) = decode(raw.trim()) else {
            return Err(HeaderMismatch::BadEncoding(p.header.clone()));
        };
        let same = match &body {
            Value::Number(n) => text.parse::<f64>().ok() == n.as_f64(),
            other => text == as_text(other),
        };
        if !same {
            return Err(HeaderMismatch::Differs { header: p.header.clone(), sent: text, body: as_text(&body) });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn extracts_and_checks() {
        let schema = json!({"type":"object","properties":{
            "region":{"type":"string","x-mcp-header":"Region"},
            "n":{"type":"integer","x-mcp-header":"N"},
            "deep":{"type":"object","properties":{"flag":{"type":"boolean","x-mcp-header":"Flag"}}}}});
        let p = extract(&schema).unwrap();
        assert_eq!(p.len(), 3);
        let args = json!({"region":"Hello, 世界","n":42,"deep":{"flag":true}});
        let h = headers_for(&p, &args);
        assert!(h.contains(&("Mcp-Param-Region".into(), "=?base64?SGVsbG8sIOS4lueVjA==?=".into())));
        let map: std::collections::HashMap<_, _> = h.into_iter().collect();
        assert!(check(&p, &args, |k| map.get(k).cloned()).is_ok());
        assert!(check(&p, &json!({"n": 42.0}), |k| (k == "Mcp-Param-N").then(|| "42".into())).is_ok());
        assert!(check(&p, &json!({"n": 41}), |k| (k == "Mcp-Param-N").then(|| "42".into())).is_err());
        assert!(check(&p, &json!({"region": "x"}), |_| None).is_err());
        assert!(check(&p, &json!({"region": "x"}), |_| Some("=?base64?!!?=".into())).is_err());
    }

    #[test]
    fn invalid_annotations() {
        for bad in [
            json!({"properties":{"a":{"type":"number","x-mcp-header":"A"}}}),
            json!({"properties":{"a":{"type":"array","items":{"type":"string","x-mcp-header":"A"}}}}),
            json!({"oneOf":[{"properties":{"a":{"type":"string","x-mcp-header":"A"}}}]}),
            json!({"properties":{"a":{"type":"string","x-mcp-header":"A"},"b":{"type":"string","x-mcp-header":"a"}}}),
            json!({"properties":{"a":{"type":"string","x-mcp-header":"bad header"}}}),
        ] {
            assert!(extract(&bad).is_err(), "{bad}");
        }
    }
}
