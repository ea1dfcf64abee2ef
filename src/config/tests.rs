use super::*;

/// Parses with authentication disabled appended (at the end, so line numbers hold).
fn parse(text: &str) -> Result<Config, ConfigError> {
    parse_exact(&format!("{text}\n[auth]\ndisabled = true\n"))
}

fn parse_exact(text: &str) -> Result<Config, ConfigError> {
    let env = |k: &str| match k {
        "TOKEN" => Some("s3cret".to_string()),
        "JWT_SECRET" => Some("0123456789abcdef0123456789abcdef".to_string()),
        _ => None,
    };
    Config::parse("t.toml", text, None, &env)
}

#[test]
fn embedded_default_is_valid_and_loopback() {
    let state = tempfile::tempdir().unwrap();
    let c = Config::embedded(state.path()).unwrap();
    assert!(c.server.listen.ip().is_loopback());
    assert!(c.backends.is_empty());
    let file = c.dev_secret_file.clone().expect("the dev secret's file");
    assert_eq!(file, state.path().join(DEV_SECRET_FILE));
    let secret = std::fs::read_to_string(&file).unwrap().trim().to_string();
    assert!(secret.len() >= 32);
    match &c.auth {
        AuthConfig::Jwt(j) => assert_eq!(j.hs256_secret.as_deref(), Some(secret.as_str())),
        AuthConfig::Disabled => panic!("the embedded default must authenticate"),
    }
    assert!(!format!("{:?}", c.auth).contains(&secret), "the secret stays out of debug output");
    // The next process on the default (`stdio`, `token`) checks tokens with the same secret.
    let again = Config::embedded(state.path()).unwrap();
    match &again.auth {
        AuthConfig::Jwt(j) => assert_eq!(j.hs256_secret.as_deref(), Some(secret.as_str())),
        AuthConfig::Disabled => unreachable!(),
    }
    // Its audit trail sits in the state directory too, wherever the process was started.
    assert!(c.audit.url.starts_with(&format!("sqlite://{}", state.path().display())), "{}", c.audit.url);
}

#[test]
fn governance_sections() {
    let c = parse_exact(
        "[auth]\nhs256_secret = \"${JWT_SECRET}\"\nissuer = \"i\"\n[roles.admin]\nallow = [\"*\"]\n[roles.reader]\nallow = [\"a__*\"]\ndeny = [\"a__x\"]\n[rate_limit]\ndefault = { per_minute = 60, burst = 5 }\ntools = { \"b__*\" = { per_minute = 1, burst = 1 }, \"a__*\" = { per_minute = 2, burst = 1 } }\n[kill_switch]\ntools = [\"a__x\"]\n[validation]\nschema_errors = \"jsonrpc\"\n",
    )
    .unwrap();
    assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    assert_eq!(c.roles.len(), 2);
    assert_eq!(c.rate_limit.tools.iter().map(|(g, _)| g.as_str()).collect::<Vec<_>>(), ["b__*", "a__*"], "file order");
    assert_eq!(c.validation.schema_errors, SchemaErrors::JsonRpc);
    let err = parse_exact("[[backend]]\nname = \"n\"\nstdio = { command = \"x\" }\n").unwrap_err().to_string();
    assert!(err.contains("no `[auth]` section"), "{err}");
    let err = parse_exact("[auth]\nhs256_secret = \"short\"\n[kill_switch]\nbackends = [\"nope\"]\n[rate_limit]\ndefault = { per_minute = 0, burst = 1 }\nstore = \"redis://x\"\n[roles.r]\nallow = [\"a[\"]\n")
        .unwrap_err()
        .to_string();
    for want in [
        "shorter than 32 bytes",
        "no backend is named `nope`",
        "must both be at least 1",
        "replicas share theirs through `[cluster] redis`",
        "not a valid glob",
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let c = parse_exact("[auth]\nhs256_secret = \"0123456789abcdef0123456789abcdef\"\n").unwrap();
    assert!(c.literal_secrets[0].to_string().contains("written in the file"), "{:?}", c.literal_secrets);
    let err = parse_exact("[server]\nlisten = \"0.0.0.0:1\"\nallow_public = true\n[auth]\ndisabled = true\n")
        .unwrap_err()
        .to_string();
    assert!(err.contains("only be disabled on a loopback"), "{err}");
}

#[test]
fn cluster_section() {
    let auth = "[auth]\ndisabled = true\n";
    assert!(parse_exact(auth).unwrap().cluster.is_none(), "no section: one process, no Redis");
    let c = parse_exact(&format!("{auth}[cluster]\nredis = \"redis://:pw@r:6379\"\nreplica_id = \"a-1\"\n"))
        .unwrap()
        .cluster
        .unwrap();
    assert_eq!(
        (c.on_redis_failure, c.replica_id.as_deref(), c.key_prefix.as_str()),
        (OnRedisFailure::Local, Some("a-1"), "sentinel:")
    );
    assert!(!format!("{c:?}").contains("pw"), "the password is never printed: {c:?}");
    let c =
        parse_exact(&format!("{auth}[cluster]\nredis = \"rediss://r\"\non_redis_failure = \"fail_closed\"\n")).unwrap();
    assert_eq!(c.cluster.unwrap().on_redis_failure, OnRedisFailure::FailClosed);
    let err = parse_exact(&format!("{auth}[cluster]\nredis = \"http://r\"\n")).unwrap_err().to_string();
    assert!(err.contains("not a redis:// or rediss:// URL"), "{err}");
    let err = parse_exact(&format!(
        "{auth}[cluster]\nredis = \"redis://r\"\nsecret_file = \"/s\"\non_redis_failure = \"maybe\"\nreplica_id = \"a b\"\n"
    ))
    .unwrap_err()
    .to_string();
    for want in ["secret_file", "not a policy", "printable ASCII"] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let err = parse_exact(&format!("{auth}[cluster]\non_redis_failure = \"local\"\n")).unwrap_err().to_string();
    assert!(err.contains("is required in [cluster]"), "{err}");
}

#[test]
fn the_cluster_secret_comes_from_a_file_or_a_variable_and_is_long_enough() {
    let head = "[auth]\ndisabled = true\n[cluster]\nredis = \"redis://r\"\n";
    let dir = tempfile::tempdir().unwrap();
    let (good, short) = (dir.path().join("good"), dir.path().join("short"));
    std::fs::write(&good, "0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::write(&short, "tiny").unwrap();
    let file = |p: &Path| format!("{head}secret_file = {:?}\n", p.to_str().unwrap());
    let from_file = parse_exact(&file(&good)).unwrap().cluster.unwrap();
    let from_env = parse_exact(&format!("{head}secret = \"${{JWT_SECRET}}\"\n")).unwrap().cluster.unwrap();
    let (a, b) =
        (from_file.secret.expect("sealer from the file"), from_env.secret.clone().expect("sealer from the variable"));
    assert!(a.is_shared() && a == b, "the same secret gives the same key, however it is given");
    assert!(!format!("{from_env:?}").contains("0123456789abcdef"), "never printed: {from_env:?}");
    for (text, want) in [
        (file(&short), "at least 32"),
        (file(&dir.path().join("absent")), "cannot read"),
        (format!("{head}secret = \"0123456789abcdef0123456789abcdef\"\n"), "must not be written in the config"),
        (format!("{head}secret = \"${{TOKEN}}\"\n"), "at least 32"),
        (format!("{}secret = \"${{JWT_SECRET}}\"\n", file(&good)), "not both"),
    ] {
        let err = parse_exact(&text).unwrap_err().to_string();
        assert!(err.contains(want), "{text}: missing {want:?} in:\n{err}");
    }
    // A command that does not serve (`sentinel audit`) does not need the file.
    assert!(parse_needing(&file(&dir.path().join("absent")), Needs::Sections(&["audit"])).is_ok());
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
    let refused = |s: &str| expand(s, &|_| None).unwrap_err().to_string();
    assert_eq!(refused("x${A"), "unterminated `${` (write `$${` for a literal `${`)");
    assert_eq!(refused("${a-b}"), "`${a-b}` is not a valid environment variable reference");
    assert_eq!(expand("${NOPE}", &|_| None), Err(ExpandError::Unset("NOPE".into())));
}

#[test]
fn all_semantic_problems_at_once() {
    let err = parse(
        "[server]\nlisten = \"0.0.0.0:80\"\n[[backend]]\nname = \"a\"\nprefix = \"p\"\nstdio = { command = \"x\" }\ntimeout = \"soon\"\n[[backend]]\nname = \"a\"\nprefix = \"p\"\nhttp = { url = \"ftp://x\" }\n[audit]\nurl = \"x\"\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "t.toml:2: `server.listen`: `0.0.0.0:80` is not a loopback address",
        "t.toml:7: `backend.0.timeout`: `soon` is not a duration",
        "`backend.1.name`: backend name `a` is used twice",
        "`backend.1.prefix`: backends `a` and `a` expose names in the same namespace `p__`",
        "`backend.1.http.url`: `ftp://x` is not an http(s) URL",
        "t.toml:13: `audit.url`: `x` is not an audit store",
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

#[test]
fn audit_paths_resolve_beside_the_config_file() {
    let env = |_: &str| None;
    let text = "[auth]\ndisabled = true\n";
    let c = Config::parse("s.toml", text, Some(std::path::Path::new("s.toml")), &env).unwrap();
    let url = c.audit.url.strip_prefix("sqlite://").expect("sqlite by default");
    assert!(std::path::Path::new(url).is_absolute(), "{url}");
    assert!(url.ends_with("sentinel-audit.db"));
    let c = Config::parse("x", text, Some(std::path::Path::new("/etc/sentinel/s.toml")), &env).unwrap();
    assert_eq!(c.audit.url, "sqlite:///etc/sentinel/sentinel-audit.db");
    assert_eq!(c.audit.spool_dir, std::path::PathBuf::from("/etc/sentinel/sentinel-audit-spool"));
    assert!(!c.audit.fail_open);
    let err = Config::parse(
        "x",
        "[auth]\ndisabled = true\n[audit]\nurl = \"mysql://x\"\non_audit_failure = \"maybe\"\n",
        None,
        &env,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("not an audit store") && err.contains("not one of"), "{err}");
}

#[test]
fn audit_durability_is_write_by_default_fsync_on_request_and_checked() {
    use crate::audit::writer::Durability;
    assert_eq!(parse("").unwrap().audit.durability, Durability::Write);
    assert_eq!(parse("[audit]\ndurability = \"write\"\n").unwrap().audit.durability, Durability::Write);
    assert_eq!(parse("[audit]\ndurability = \"fsync\"\n").unwrap().audit.durability, Durability::Fsync);
    let err = parse("[audit]\nbatch = 10\ndurability = \"sync\"\n").unwrap_err().to_string();
    assert!(err.contains("t.toml:3: `audit.durability`: `sync` is not one of \"write\", \"fsync\""), "{err}");
}

#[test]
fn alerts_webhooks_and_their_problems() {
    let c = parse(
        "[alerts]\nmin_interval = \"1m\"\n[[alerts.webhook]]\nurl = \"https://discord.com/api/webhooks/${TOKEN}\"\nformat = \"discord\"\n[[alerts.webhook]]\nurl = \"http://127.0.0.1:9/hook\"\n",
    )
    .unwrap();
    assert_eq!(c.alerts.min_interval, Duration::from_secs(60));
    assert_eq!(c.alerts.webhooks.len(), 2);
    assert_eq!(c.alerts.webhooks[0].format, crate::alerts::Format::Discord);
    assert_eq!(c.alerts.webhooks[0].url, "https://discord.com/api/webhooks/s3cret");
    assert_eq!(c.alerts.webhooks[1].format, crate::alerts::Format::Generic, "generic by default");
    assert!(!format!("{c:?}").contains("s3cret"), "a webhook URL is a secret");
    assert_eq!(parse("").unwrap().alerts.min_interval, Duration::from_secs(300), "5m by default");

    let err = parse(
        "[alerts]\nmin_interval = \"often\"\n[[alerts.webhook]]\nurl = \"ftp://x/${TOKEN}\"\nformat = \"teams\"\n[[alerts.webhook]]\nurl = \"h\"\nkind = 1\n",
    )
    .unwrap_err();
    let text = err.to_string();
    for want in [
        "t.toml:2: `alerts.min_interval`: `often` is not a duration",
        "t.toml:4: `alerts.webhook.0.url`: is not an http(s) URL",
        "t.toml:5: `alerts.webhook.0.format`: `teams` is not one of",
        "t.toml:7: `alerts.webhook.1.url`: is not an http(s) URL",
        "t.toml:8: `alerts.webhook.1.kind`: unknown key",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!text.contains("s3cret"), "{text}");
}

#[test]
fn contextforge_naming_separator() {
    let c = parse("[naming]\nstyle = \"contextforge\"\n").unwrap();
    assert_eq!(c.naming.separator, "-", "ContextForge's default GATEWAY_TOOL_NAME_SEPARATOR");
    let c = parse("[naming]\nstyle = \"contextforge\"\nseparator = \"_\"\n").unwrap();
    assert_eq!(c.naming.separator, "_");
    assert_eq!(parse("").unwrap().naming.separator, "__", "prefixed style keeps its default");
    let err = parse("[naming]\nstyle = \"contextforge\"\nseparator = \"__\"\n").unwrap_err();
    assert!(err.to_string().contains("t.toml:3: `naming.separator`: `__` is not a ContextForge separator"), "{err}");
}

/// Parses as a command that needs only `needs`' variables would.
fn parse_needing(text: &str, needs: Needs) -> Result<Config, ConfigError> {
    let env = |k: &str| (k == "JWT_SECRET").then(|| "0123456789abcdef0123456789abcdef".to_string());
    Config::parse_in("t.toml", text, None, Path::new("."), &env, needs)
}

#[test]
fn an_unset_secret_is_one_problem() {
    let err = parse_exact("[auth]\nhs256_secret = \"${NOPE}\"\n").unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    assert!(err.to_string().contains("environment variable `NOPE` is not set"), "{err}");
}

#[test]
fn both_secret_keys_is_said_once_and_exactly() {
    let err = parse_exact("[auth]\nhs256_secret = \"${JWT_SECRET}\"\nhs256_secret_file = \"/nope\"\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.toml:3: `auth.hs256_secret_file`: both `hs256_secret` and `hs256_secret_file` are set; keep one"
    );
}

#[test]
fn a_duplicate_table_is_named() {
    let err = parse_exact("[auth]\ndisabled = true\n\n[auth]\ndisabled = true\n").unwrap_err();
    assert_eq!(
        err.to_string(),
        "t.toml:4: invalid TOML: `auth` is defined twice (a table or key may appear only once: merge the two)"
    );
}

#[test]
fn commands_need_only_their_sections_variables() {
    let text = "[auth]\nhs256_secret = \"${JWT_SECRET}\"\n[[backend]]\nname = \"n\"\nhttp = { url = \"http://127.0.0.1:1/mcp\", headers = { Authorization = \"Bearer ${N8N_TOKEN}\" } }\n[[alerts.webhook]]\nurl = \"${HOOK}\"\n";
    let c = parse_needing(text, Needs::Sections(&["auth"])).unwrap();
    assert_eq!(c.variables, ["JWT_SECRET", "N8N_TOKEN", "HOOK"]);
    // Still validated: a real problem elsewhere is still one.
    let err = parse_needing(&format!("{text}[server]\nlisen = 1\n"), Needs::Sections(&["auth"])).unwrap_err();
    assert!(err.to_string().contains("unknown key"), "{err}");
    // What `[auth]` needs is needed.
    let err = parse_needing(&text.replace("JWT_SECRET", "UNSET_SECRET"), Needs::Sections(&["auth"])).unwrap_err();
    assert_eq!(err.0.len(), 1, "{err}");
    // Everything, for the commands that run a gateway or judge the file: each unset one once.
    let err = parse_needing(text, Needs::All).unwrap_err();
    assert_eq!(err.0.len(), 2, "{err}");
    assert!(err.to_string().contains("`N8N_TOKEN` is not set") && err.to_string().contains("`HOOK` is not set"));
}

#[test]
fn auth_keys_are_checked_as_the_authenticator_reads_them() {
    let cases = [
        (
            "jwks_url = \"http://idp.example.com/jwks\"",
            "`auth.jwks_url`: `http://idp.example.com/jwks` must use https://",
        ),
        (
            "jwks_file = \"/nonexistent/jwks.json\"",
            "`auth.jwks_file`: cannot load the JWKS from `/nonexistent/jwks.json`: cannot open",
        ),
        ("jwks_url = \"https://idp.example.com/jwks\"\njwks_file = \"/x\"", "set `jwks_url` or `jwks_file`, not both"),
        (
            "hs256_secret = \"${JWT_SECRET}\"\nrole_claim = \"realm..roles\"",
            "`auth.role_claim`: `realm..roles` is not a claim name",
        ),
    ];
    for (auth, want) in cases {
        let err = parse_exact(&format!("[auth]\n{auth}\n")).unwrap_err().to_string();
        assert!(err.contains(want), "{auth}: missing {want:?} in:\n{err}");
    }
    assert!(parse_exact("[auth]\njwks_url = \"http://127.0.0.1:9/jwks\"\n").is_ok(), "plain http on loopback");
}

#[test]
fn a_prefix_in_the_contextforge_style_is_refused() {
    let err = parse("[naming]\nstyle = \"contextforge\"\n[[backend]]\nname = \"gh\"\nprefix = \"github\"\nstdio = { command = \"x\" }\n")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("t.toml:5: `backend.0.prefix`: `prefix` has no effect with `[naming] style = \"contextforge\"`"),
        "{err}"
    );
}

#[test]
fn literal_secrets_are_flagged_wherever_they_are() {
    let c = parse(
        "[[backend]]\nname = \"h\"\nhttp = { url = \"http://127.0.0.1:1/mcp\", headers = { Authorization = \"Bearer abc\", Accept = \"x\" } }\n\
         [[backend]]\nname = \"s\"\nstdio = { command = \"x\", env = { EXA_API_KEY = \"k-123\", NODE_ENV = \"production\", GH_TOKEN = \"${TOKEN}\" } }\n\
         [audit]\nurl = \"postgres://u:pw@127.0.0.1/db\"\n",
    )
    .unwrap();
    let keys: Vec<&str> = c.literal_secrets.iter().map(|p| p.key.as_str()).collect();
    assert_eq!(keys, ["backend.0.http.headers.Authorization", "backend.1.stdio.env.EXA_API_KEY", "audit.url"]);
    assert!(c.literal_secrets.iter().all(|p| p.message.starts_with("a secret is written in the file")));
    assert!(
        !format!("{:?}", c.literal_secrets).contains("abc") && !format!("{:?}", c.literal_secrets).contains("k-123")
    );
}

/// A backend whose names would land in another's namespace is refused by the config alone,
/// in both naming styles; one without a prefix is judged at run time (its tools are not known).
#[test]
fn a_namespace_inside_another_backends_is_refused() {
    let two = |a: &str, b: &str, style: &str| {
        parse(&format!(
            "[naming]\nstyle = \"{style}\"\n[[backend]]\nname = \"other\"\nstdio = {{ command = \"x\" }}\n[[backend]]\nname = \"{a}\"\n{b}stdio = {{ command = \"x\" }}\n"
        ))
    };
    let err = two("squat", "prefix = \"other__x\"\n", "prefixed").unwrap_err().to_string();
    assert!(err.contains("would fall in backend `other`'s namespace `other__`") && err.contains("t.toml:8"), "{err}");
    let err = two("squat", "prefix = \"other\"\n", "prefixed").unwrap_err().to_string();
    assert!(err.contains("same namespace `other__`"), "{err}");
    let err = two("squat", "prefix = \"other__\"\n", "prefixed").unwrap_err().to_string();
    assert!(err.contains("would fall in"), "{err}");
    assert!(two("squat", "prefix = \"\"\n", "prefixed").is_ok(), "an empty prefix owns no namespace");
    assert!(two("othery", "", "prefixed").is_ok(), "`othery__` does not start with `other__`");
    let err = two("other-x", "", "contextforge").unwrap_err().to_string();
    assert!(err.contains("would fall in backend `other`'s namespace `other-`"), "{err}");
    let err = two("Other", "", "contextforge").unwrap_err().to_string();
    assert!(err.contains("same namespace `other-`"), "{err}");
}

#[test]
fn telemetry_is_off_unless_configured() {
    assert_eq!(parse("").unwrap().telemetry, None, "no [telemetry]: no tracing");
    let c = parse(
        "[telemetry]\notlp_endpoint = \"http://collector:4318/\"\nsample_ratio = 0.25\nservice_name = \"gw-eu\"\n\
         resource_attributes = { \"deployment.environment\" = \"prod\", \"service.namespace\" = \"mcp\" }\n",
    )
    .unwrap();
    let t = c.telemetry.expect("configured");
    assert_eq!(t.otlp_endpoint, "http://collector:4318");
    assert_eq!(t.sample_ratio, 0.25);
    assert_eq!(t.service_name, "gw-eu");
    assert_eq!(
        t.resource_attributes,
        vec![("deployment.environment".into(), "prod".into()), ("service.namespace".into(), "mcp".into())]
    );
    let t = parse("[telemetry]\notlp_endpoint = \"https://otel.example\"\n").unwrap().telemetry.unwrap();
    assert_eq!((t.sample_ratio, t.service_name.as_str()), (1.0, "sentinel"), "the defaults");

    let text = parse("[telemetry]\nsample_ratio = 2.0\n").unwrap_err().to_string();
    assert!(text.contains("`telemetry.otlp_endpoint`: is required"), "{text}");
    let text = parse("[telemetry]\notlp_endpoint = \"grpc://x:4317\"\n").unwrap_err().to_string();
    assert!(text.contains("`telemetry.otlp_endpoint`: is not an http(s) URL"), "{text}");
    let text = parse(&format!(
        "[telemetry]\notlp_endpoint = \"http://x\"\nsample_ratio = -0.5\nresource_attributes = {{ k = \"{}\" }}\n",
        "v".repeat(300)
    ))
    .unwrap_err()
    .to_string();
    assert!(text.contains("`telemetry.sample_ratio`: must be between 0.0 and 1.0"), "{text}");
    assert!(text.contains("`telemetry.resource_attributes.k`"), "{text}");
}

#[test]
fn a_backends_generation_and_roots_are_checked() {
    let b = |extra: &str| format!("[[backend]]\nname = \"b\"\nstdio = {{ command = \"x\" }}\n{extra}");
    let c = parse(&b("generation = \"session-based\"\nroots = [{ uri = \"file:///srv\", name = \"srv\" }]\n")).unwrap();
    assert_eq!(c.backends[0].generation, BackendGeneration::SessionBased);
    assert_eq!(&*c.backends[0].roots, r#"{"roots":[{"uri":"file:///srv","name":"srv"}]}"#);
    assert_eq!(parse(&b("")).unwrap().backends[0].generation, BackendGeneration::Auto);
    assert_eq!(&*parse(&b("")).unwrap().backends[0].roots, r#"{"roots":[]}"#);
    let err = parse(&b("generation = \"modern\"\nroots = [{ uri = \"http://x\" }]\n")).unwrap_err().to_string();
    assert!(err.contains("is not a generation") && err.contains("not a file:// URI"), "{err}");
}

#[test]
fn a_token_exchange_backend_is_read_with_its_secret_and_defaults() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("idp.secret"), "client-s3cret\n").unwrap();
    let text = format!(
        "[auth]\nhs256_secret = \"${{JWT_SECRET}}\"\n[[backend]]\nname = \"api\"\n\
         http = {{ url = \"http://127.0.0.1:9/mcp\", headers = {{ Authorization = \"Bearer {{credential}}\" }} }}\n\
         credentials = {{ token_exchange = {{ token_url = \"https://idp.example/token\", client_id = \"sentinel\", \
         client_secret_file = {:?}, audience = \"api\" }} }}\n",
        dir.path().join("idp.secret").display().to_string()
    );
    let c = parse_exact(&text).unwrap();
    let b = &c.backends[0];
    let CredentialMode::TokenExchange(t) = &b.credentials else { panic!("{:?}", b.credentials) };
    assert_eq!(
        (t.client_secret.as_str(), t.audience.as_deref(), t.scope.as_deref()),
        ("client-s3cret", Some("api"), None)
    );
    assert!(!format!("{t:?}").contains("client-s3cret"), "the secret stays out of debug output");
    // An HTTP backend acting for each caller keeps a connection per caller, with the defaults.
    assert!(matches!(b.instances, InstanceMode::PerUser { max_instances: 50, .. }), "{:?}", b.instances);
    assert!(c.literal_secrets.is_empty(), "`{{credential}}` is no secret in the file: {:?}", c.literal_secrets);

    // Not on a stdio backend, and not without authentication.
    let err = parse(&text.replace("[auth]\nhs256_secret = \"${JWT_SECRET}\"\n", "")).unwrap_err().to_string();
    assert!(err.contains("turn authentication on"), "{err}");
    let stdio = "[[backend]]\nname = \"s\"\nstdio = { command = \"x\", env = { T = \"{credential}\" } }\n\
                 credentials = { token_exchange = { token_url = \"https://idp.example/token\", client_id = \"c\", \
                 client_secret_file = \"/nonexistent\" } }\ninstances = \"per_user\"\n";
    let err = parse(stdio).unwrap_err().to_string();
    assert!(err.contains("token exchange is for HTTP backends"), "{err}");
    assert!(err.contains("cannot read `/nonexistent`"), "{err}");
}
