//! Redaction of call arguments before they reach the audit trail: the values of configured
//! keys (at any depth, compared case-insensitively) are replaced, so secrets a client passes
//! to a tool never land in the store.

use serde_json::Value;

pub const REDACTED: &str = "[redacted]";

/// Lower-cased once per config, compared per key.
#[derive(Debug, Clone, Default)]
pub struct Redactor {
    keys: Vec<String>,
}

impl Redactor {
    pub fn new(keys: &[String]) -> Redactor {
        Redactor { keys: keys.iter().map(|k| k.to_ascii_lowercase()).collect() }
    }

    fn secret(&self, key: &str) -> bool {
        self.keys.iter().any(|k| k.eq_ignore_ascii_case(key))
    }

    /// The arguments as JSON text with every configured key's value replaced.
    pub fn redact(&self, arguments: &Value) -> String {
        let mut v = arguments.clone();
        self.walk(&mut v);
        v.to_string()
    }

    fn walk(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if self.secret(k) {
                        *x = Value::String(REDACTED.into());
                    } else {
                        self.walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.walk(x)),
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn redacts_at_any_depth_case_insensitively() {
        let r = Redactor::new(&["password".into(), "API_KEY".into()]);
        let out = r.redact(&json!({
            "user": "ann", "Password": "hunter2",
            "nested": [{"api_key": {"deep": "s3cret"}, "keep": "ok"}],
            "héllo": "wörld"
        }));
        assert!(!out.contains("hunter2") && !out.contains("s3cret"), "{out}");
        assert!(out.contains("\"keep\":\"ok\"") && out.contains("wörld") && out.contains("\"user\":\"ann\""), "{out}");
        assert_eq!(out.matches(REDACTED).count(), 2);
    }
}
