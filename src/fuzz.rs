//! The bodies of the `cargo fuzz` targets in `fuzz/` (libFuzzer), one function per parser
//! that reads bytes from outside: JSON-RPC framing, the strict JSON check, the SSE path, the
//! config file, JWTs and JWKS, and the `Mcp-Param` value encoding. They live here so that the
//! ordinary test run replays every seed and every saved crash input through the same code
//! (`fuzz/corpus/<target>/`, `fuzz/regressions/<target>/`), and `scripts/fuzz` runs them
//! under libFuzzer. Each body checks a property, not just "no panic", where one is known.

use std::sync::OnceLock;

use futures::StreamExt;

/// A target's body: any bytes in, a panic when a property fails.
pub type Body = fn(&[u8]);

/// The targets, by the name of their `fuzz/fuzz_targets/*.rs` file.
pub const TARGETS: [(&str, Body); 6] = [
    ("jsonrpc", jsonrpc),
    ("strict_json", strict_json),
    ("sse", sse),
    ("config", config),
    ("jwt", jwt),
    ("param_headers", param_headers),
];

/// A client's message as the front doors read it: framing, kind, id, stateless `_meta`.
pub fn jsonrpc(data: &[u8]) {
    let Ok(msg) = crate::jsonrpc::Message::parse(data) else { return };
    let _ = msg.kind();
    let _ = msg.id_is_valid();
    let _ = crate::front::stateless_meta(&msg);
    if let Some(p) = msg.params.as_deref() {
        if let Ok(params) = crate::protocol::Params::parse(Some(p)) {
            let _ = params.meta();
            let _ = params.check_case_variants(&["name", "arguments", "_meta"]);
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::jsonrpc::has_top_level_key(text, "result");
    }
    // The typed read every client message goes through: whatever it accepts as a call has a
    // target and params that serialize.
    if let crate::request::Incoming::Request { request: Ok(crate::request::Request::Call(c)), .. } =
        crate::request::Incoming::parse(msg)
    {
        assert!(c.method.is_call());
        let _ = c.params.to_json();
    }
}

/// The duplicate-key check: whatever it accepts is valid JSON.
pub fn strict_json(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if crate::strict_json::check_unique_keys(text).is_ok() {
        assert!(serde_json::from_str::<serde::de::IgnoredAny>(text).is_ok(), "accepted invalid JSON: {text:?}");
    }
}

/// A backend's SSE bytes, cut into chunks at points the input chooses, through the event size
/// limit and the SSE parser. With a limit above the input's size the limiter passes every
/// byte through unchanged.
pub fn sse(data: &[u8]) {
    let Some((&cut, body)) = data.split_first() else { return };
    let step = usize::from(cut % 16) + 1;
    let chunks = || {
        futures::stream::iter(
            body.chunks(step)
                .map(|c| Ok::<_, std::convert::Infallible>(bytes::Bytes::copy_from_slice(c)))
                .collect::<Vec<_>>(),
        )
    };
    futures::executor::block_on(async {
        let through: Vec<_> = crate::backend::sse_limit::limit_events(chunks(), body.len() + 1).collect().await;
        let joined: Vec<u8> = through.into_iter().flat_map(|r| r.map(|b| b.to_vec()).unwrap_or_default()).collect();
        assert_eq!(joined, body, "the limiter changed bytes it should pass through");
        let mut events =
            eventsource_stream::Eventsource::eventsource(crate::backend::sse_limit::limit_events(chunks(), 64));
        while let Some(ev) = events.next().await {
            if let Ok(ev) = ev {
                assert!(ev.data.len() <= body.len());
            }
        }
    });
}

/// A config file's text through every check `sentinel check` runs. Inputs naming a `*_file`
/// key are skipped: they would read whatever path the input names (`/dev/zero` never ends).
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if text.contains("_file") {
        return;
    }
    let env = |k: &str| (k == "SET").then(|| "value-of-set-0123456789abcdef0123456789".to_string());
    if let Ok(c) = crate::config::Config::parse("fuzz.toml", text, None, &env) {
        let _ = crate::policy::Policy::from_config(&c, Default::default());
        let _ = crate::config::namespace_clashes(&c.naming, &c.backends);
    }
}

/// A bearer token through the whole check (header, algorithm, signature, claims), and the same
/// bytes read as a JWKS.
pub fn jwt(data: &[u8]) {
    static AUTH: OnceLock<crate::auth::Authenticator> = OnceLock::new();
    let auth = AUTH.get_or_init(|| {
        let settings = crate::auth::AuthSettings {
            hs256_secret: Some("fuzzing-secret-0123456789abcdef0123456789".into()),
            issuer: Some("sentinel".into()),
            audience: Some("sentinel".into()),
            ..Default::default()
        };
        futures::executor::block_on(crate::auth::Authenticator::new(settings, reqwest::Client::new()))
            .expect("an HS256 authenticator")
    });
    if let Ok(token) = std::str::from_utf8(data) {
        // Nothing can be signed with a secret the input does not know.
        assert!(auth.authenticate_cached(token).is_err(), "accepted a forged token: {token:?}");
    }
    crate::auth::fuzz_jwks(data);
}

/// `Mcp-Param` values: decoding any header value, and encoding any string so that it decodes
/// back to itself; and the `x-mcp-header` annotations of any schema.
pub fn param_headers(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        let _ = crate::param_headers::decode(text);
        let encoded = crate::param_headers::encode(text);
        assert!(encoded.bytes().all(|b| (0x20..=0x7e).contains(&b)), "not a header value: {encoded:?}");
        assert_eq!(crate::param_headers::decode(&encoded).as_deref(), Some(text), "round trip of {text:?}");
    }
    if let Ok(schema) = serde_json::from_slice::<serde_json::Value>(data) {
        if let Ok(headers) = crate::param_headers::extract(&schema) {
            let _ = crate::param_headers::headers_for(&headers, &schema);
        }
    }
}

#[cfg(test)]
mod tests {
    /// Every seed and every saved regression input of every target, through its body: the
    /// cheap half of fuzzing that always runs (the libFuzzer runs are `scripts/fuzz`).
    #[test]
    fn seeds_and_regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        let mut replayed = 0;
        for (name, body) in super::TARGETS {
            for kind in ["corpus", "regressions"] {
                let Ok(entries) = std::fs::read_dir(root.join(kind).join(name)) else { continue };
                for e in entries.filter_map(Result::ok) {
                    let data = std::fs::read(e.path()).unwrap();
                    body(&data);
                    replayed += 1;
                }
            }
        }
        assert!(replayed >= super::TARGETS.len(), "no seeds found under {}", root.display());
    }
}
