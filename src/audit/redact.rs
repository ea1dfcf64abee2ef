//! Redaction of call arguments before they reach the audit trail, so that secrets a client
//! passes to a tool never land in the store:
//! - the value of every key whose name looks like a secret, at any depth: the key lower-cased
//!   with `-` and `_` removed contains one of [`SECRET_KEY_PATTERNS`] or of the configured
//!   `redact_keys` (additions to the built-in list), so `access_token`, `Client-Secret`,
//!   `x-api-key` and `GITHUB_TOKEN` are all caught;
//! - credentials inside string values that hold URIs or query strings: the userinfo of
//!   `scheme://user:pass@host` and the value of a secret-looking query parameter
//!   (`?api_key=...`, `&access_token=...`).
//!
//! Matching by substring over-redacts on purpose (`max_tokens` is hidden too): a hidden
//! harmless value costs an auditor a detail, a missed secret is a leak.

use std::borrow::Cow;

use serde_json::Value;

/// What a redacted value is replaced with.
pub const REDACTED: &str = "[redacted]";

/// Secret-looking key names, normalised: a key whose normalised form contains one is redacted.
pub const SECRET_KEY_PATTERNS: [&str; 12] = [
    "password",
    "passwd",
    "passphrase",
    "pwd",
    "secret",
    "token",
    "apikey",
    "accesskey",
    "authorization",
    "privatekey",
    "credential",
    "cookie",
];

/// The built-in patterns plus the configured ones, normalised once per config.
#[derive(Debug, Clone)]
pub struct Redactor {
    patterns: Vec<String>,
}

impl Default for Redactor {
    fn default() -> Self {
        Redactor::new(&[])
    }
}

/// A key as patterns are compared with it: lower case, without `-` and `_`.
fn normalized(key: &str) -> String {
    key.chars().filter(|c| *c != '-' && *c != '_').map(|c| c.to_ascii_lowercase()).collect()
}

impl Redactor {
    /// `extra`: the configured `redact_keys`, added to [`SECRET_KEY_PATTERNS`].
    pub fn new(extra: &[String]) -> Redactor {
        let mut patterns: Vec<String> = SECRET_KEY_PATTERNS.iter().map(std::string::ToString::to_string).collect();
        patterns.extend(extra.iter().map(|k| normalized(k)).filter(|k| !k.is_empty()));
        patterns.sort();
        patterns.dedup();
        Redactor { patterns }
    }

    /// Whether `key` looks like it names a secret (a pattern appears in it, case and separators ignored).
    pub fn is_secret_key(&self, key: &str) -> bool {
        let key = normalized(key);
        self.patterns.iter().any(|p| key.contains(p.as_str()))
    }

    /// The arguments as JSON text with every secret redacted.
    pub fn redact(&self, arguments: &Value) -> String {
        let mut v = arguments.clone();
        self.walk(&mut v);
        v.to_string()
    }

    fn walk(&self, v: &mut Value) {
        match v {
            Value::Object(m) => {
                for (k, x) in m.iter_mut() {
                    if self.is_secret_key(k) {
                        *x = Value::String(REDACTED.into());
                    } else {
                        self.walk(x);
                    }
                }
            }
            Value::Array(a) => a.iter_mut().for_each(|x| self.walk(x)),
            Value::String(s) => {
                if let Cow::Owned(clean) = self.redact_text(s) {
                    *s = clean;
                }
            }
            _ => {}
        }
    }

    /// `s` with the credentials of any URI in it redacted: userinfo, and secret-looking query
    /// parameters (keys judged as object keys are). Borrowed when there is nothing to hide.
    pub fn redact_text<'a>(&self, s: &'a str) -> Cow<'a, str> {
        if !s.contains("://") && !s.contains('=') {
            return Cow::Borrowed(s);
        }
        let stop = |c: char| c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '`');
        let mut cuts: Vec<(usize, usize)> = Vec::new();
        // Userinfo: `scheme://user:pass@host` keeps `user`; a lone `token@host` goes whole.
        let mut from = 0;
        while let Some(p) = s[from..].find("://") {
            let start = from + p + 3;
            let end = s[start..].find(|c: char| matches!(c, '/' | '?' | '#') || stop(c)).map_or(s.len(), |i| start + i);
            if let Some(at) = s[start..end].rfind('@').filter(|at| *at > 0) {
                match s[start..start + at].find(':') {
                    Some(colon) if colon + 1 < at => cuts.push((start + colon + 1, start + at)),
                    Some(_) => {}
                    None => cuts.push((start, start + at)),
                }
            }
            from = end.max(start);
        }
        // Query parameters: `?key=value`, `&key=value`, `;key=value`.
        for (i, c) in s.char_indices() {
            if !matches!(c, '?' | '&' | ';') {
                continue;
            }
            let key_start = i + 1;
            let Some(eq) = s[key_start..].find(|c: char| matches!(c, '=' | '&' | '#' | '?') || stop(c)) else {
                break;
            };
            if !s[key_start + eq..].starts_with('=') || eq == 0 || !self.is_secret_key(&s[key_start..key_start + eq]) {
                continue;
            }
            let value_start = key_start + eq + 1;
            let value_end = s[value_start..]
                .find(|c: char| matches!(c, '&' | '#' | ';') || stop(c))
                .map_or(s.len(), |e| value_start + e);
            if value_end > value_start {
                cuts.push((value_start, value_end));
            }
        }
        if cuts.is_empty() {
            return Cow::Borrowed(s);
        }
        cuts.sort();
        let mut out = String::with_capacity(s.len());
        let mut at = 0;
        for (a, b) in cuts {
            if a < at {
                continue;
            }
            out.push_str(&s[at..a]);
            out.push_str(REDACTED);
            at = b;
        }
        out.push_str(&s[at..]);
        Cow::Owned(out)
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

    /// The keys an outside review found stored in clear, caught by pattern without any
    /// configured key; configured keys add to the patterns.
    #[test]
    fn secret_looking_keys_match_by_normalised_substring() {
        let r = Redactor::new(&[]);
        for key in [
            "access_token",
            "client_secret",
            "api-key",
            "x-api-key",
            "X-API-KEY",
            "private_key",
            "github_token",
            "refreshToken",
            "Authorization",
            "aws_secret_access_key",
            "db-password",
        ] {
            assert!(r.is_secret_key(key), "{key}");
        }
        for key in ["query", "url", "owner", "path", "author", "count"] {
            assert!(!r.is_secret_key(key), "{key}");
        }
        assert!(Redactor::new(&["Ssn".into()]).is_secret_key("customer_ssn"), "configured keys add patterns");
        let out = r.redact(&json!({"access_token": "tok-1", "args": {"Client-Secret": "cs-2", "x_api_key": "k-3"}}));
        for secret in ["tok-1", "cs-2", "k-3"] {
            assert!(!out.contains(secret), "{out}");
        }
    }

    #[test]
    fn credentials_in_uris_are_redacted() {
        let r = Redactor::new(&[]);
        let cases = [
            ("https://api.example/v1?api_key=abc123&q=rust", "https://api.example/v1?api_key=[redacted]&q=rust"),
            (
                "see https://x.example/?q=1&access_token=zzz#frag now",
                "see https://x.example/?q=1&access_token=[redacted]#frag now",
            ),
            ("postgres://app:hunter2@db:5432/x", "postgres://app:[redacted]@db:5432/x"),
            ("https://ghp_abcdef@github.com/o/r.git", "https://[redacted]@github.com/o/r.git"),
            ("a=1&Client-Secret=s3&b=2", "a=1&Client-Secret=[redacted]&b=2"),
            ("https://example.com/a?q=token", "https://example.com/a?q=token"),
            ("mailto:ann@example.com", "mailto:ann@example.com"),
        ];
        for (input, want) in cases {
            assert_eq!(r.redact_text(input), want, "{input}");
        }
        let out = r.redact(&json!({"url": "https://u:pw@h/p?token=t0k"}));
        assert!(!out.contains("pw@") && !out.contains("t0k"), "{out}");
    }
}
