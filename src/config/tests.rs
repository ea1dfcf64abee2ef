use super::*;

fn parse(text: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| match k {
        "TOKEN" => Some("s3cret".to_string()),
        _ => None,
    };
    Config::parse("t.toml", text, None, &env)
}

#[test]
fn embedded_default_is_valid_and_loopback() {
    let c = Config::load(None).unwrap();
    assert!(c.server.listen.ip().is_loopback());
    assert!(c.backends.is_empty());
}

#[test]
fn every_unknown_key_is_listed_with_its_line() {
    let err = parse("[server]\nlisten = \"127.0.0.1:1\"\nlisen = 1\n\n[[backend]]\nname = \"a\"\nstdio = { command = \"x\", argz = [] }\n")
        .unwrap_err();
    let text = err.to_string();
    assert!(text.contains("t.toml:3: `server.lisen`: unknown key"), "{text}");
    assert!(text.contains("t.toml:7: `backend.0.stdio.argz`: unknown key"), "{text}");
}

#[test]
fn env_interpolation_and_missing_variable() {
    let c = parse("[[backend]]\nname = \"n\"\nhttp = { url = \"http://127.0.0.1:1/mcp\", headers = { Authorization = \"Bearer ${TOKEN}\" } }\n")
        .unwrap();
    match &c.backends[0].transport {
        TransportConfig::Http { headers, .. } => assert_eq!(headers[0].1, "Bearer s3cret"),
        _ => panic!("expected http"),
    }
    // The secret never shows in Debug output.
    assert!(!format!("{c:?}").contains("s3cret"));
    let err = parse("[[backend]]\nname = \"n\"\nhttp = { url = \"${NOPE}\" }\n").unwrap_err();
    assert!(
        err.to_string().contains("t.toml:3: `backend.0.http.url`: environment variable `NOPE` is not set"),
        "{err}"
    );
    assert_eq!(expand("a$${b}c$d", &|_| None).unwrap(), "a${b}c$d");
}

#[test]
fn all_semantic_problems_at_once() {
    let err = parse(
        "[server]\nlisten = \"0.0.0.0:80\"\n[[backend]]\nname = \"a\"\nprefix = \"p\"\nstdio = { command = \"x\" }\ntimeout = \"soon\"\n[[backend]]\nname = \"a\"\nprefix = \"p\"\nhttp = { url = \"ftp://x\" }\n[roles.admin]\nallow = [\"*\"]\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "t.toml:2: `server.listen`: `0.0.0.0:80` is not a loopback address",
        "t.toml:7: `backend.0.timeout`: `soon` is not a duration",
        "`backend.1.name`: backend name `a` is used twice",
        "`backend.1.prefix`: backends `a` and `a` expose names with the same prefix",
        "`backend.1.http.url`: `ftp://x` is not an http(s) URL",
        "t.toml:12: `roles`: `[roles]` is part of the contract but not enforced",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
}

#[test]
fn syntax_error_has_a_line() {
    let err = parse("[server]\nlisten = \n").unwrap_err();
    assert!(err.to_string().starts_with("t.toml:2: invalid TOML"), "{err}");
}

#[test]
fn type_error_names_the_key() {
    let err = parse("[server]\nallow_public = \"yes\"\n").unwrap_err();
    assert!(err.to_string().contains("`server.allow_public`"), "{err}");
}
