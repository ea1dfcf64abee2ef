//! Every config the repository ships (`sentinel.example.toml`, `examples/`, the Docker config)
//! is run by a real gateway in front of backends with the real servers' tool names — the
//! servers themselves where they are test peers (sequential-thinking, mcp-server-time), else an
//! `mcp-mock --tool NAME` per name from `tests/fixtures/backend-tools.toml` — and every role,
//! rate-limit and kill-switch glob must match at least one name the gateway exposes: a glob
//! that matches nothing is a rule that silently does nothing.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::*;

fn shipped_configs() -> Vec<PathBuf> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = vec![root.join("sentinel.example.toml"), root.join("deploy/sentinel.docker.toml")];
    let mut examples: Vec<PathBuf> = std::fs::read_dir(root.join("examples"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "toml"))
        .collect();
    examples.sort();
    files.extend(examples);
    files
}

/// The stand-in transport for a shipped backend, by its name.
fn stand_in(name: &str, peers: &peers::Peers, tools: &toml::Table) -> toml::Value {
    let stdio = |command: &Path, args: Vec<String>| {
        let mut t = toml::Table::new();
        t.insert("command".into(), command.display().to_string().into());
        t.insert("args".into(), toml::Value::Array(args.into_iter().map(toml::Value::from).collect()));
        toml::Value::Table(t)
    };
    match name {
        "sequential-thinking" => stdio(&peers.node(), vec![peers.sequential_thinking().display().to_string()]),
        "time" => stdio(&peers.mcp_server_time(), vec![]),
        other => {
            let names = tools
                .get(other)
                .and_then(|v| v.as_array())
                .unwrap_or_else(|| panic!("no tool names for backend `{other}` in tests/fixtures/backend-tools.toml"));
            let args = names.iter().flat_map(|n| ["--tool".to_string(), n.as_str().unwrap().to_string()]).collect();
            stdio(&mock_bin(), args)
        }
    }
}

/// The shipped config with its backends replaced by stand-ins, on a free loopback port,
/// without authentication (every name is listed) and with the audit trail in the test folder.
fn runnable(text: &str, peers: &peers::Peers, tools: &toml::Table) -> toml::Table {
    let mut config: toml::Table = text.parse().expect("a shipped config parses");
    let mut server = toml::Table::new();
    server.insert("listen".into(), "127.0.0.1:0".into());
    config.insert("server".into(), toml::Value::Table(server));
    let mut auth = toml::Table::new();
    auth.insert("disabled".into(), true.into());
    config.insert("auth".into(), toml::Value::Table(auth));
    config.insert("audit".into(), toml::Value::Table(toml::Table::new()));
    if let Some(backends) = config.get_mut("backend").and_then(|b| b.as_array_mut()) {
        for b in backends {
            let b = b.as_table_mut().unwrap();
            let name = b["name"].as_str().unwrap().to_string();
            b.remove("http");
            b.insert("stdio".into(), stand_in(&name, peers, tools));
            // A real server that starts slowly (npx) is not what is tested here.
            b.insert("required".into(), true.into());
        }
    }
    config
}

/// Every glob of the rules over exposed names, with the key it sits under.
fn globs(config: &toml::Table) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let strings = |v: Option<&toml::Value>| -> Vec<String> {
        v.and_then(|v| v.as_array()).into_iter().flatten().filter_map(|g| g.as_str().map(str::to_string)).collect()
    };
    if let Some(roles) = config.get("roles").and_then(|r| r.as_table()) {
        for (role, r) in roles {
            for list in ["allow", "deny"] {
                for g in strings(r.get(list)) {
                    out.push((format!("roles.{role}.{list}"), g));
                }
            }
        }
    }
    if let Some(tools) = config.get("rate_limit").and_then(|r| r.get("tools")).and_then(|t| t.as_table()) {
        out.extend(tools.keys().map(|g| ("rate_limit.tools".to_string(), g.clone())));
    }
    for g in strings(config.get("kill_switch").and_then(|k| k.get("tools"))) {
        out.push(("kill_switch.tools".into(), g));
    }
    out
}

#[tokio::test]
async fn every_glob_in_every_shipped_config_matches_an_exposed_name() {
    let peers = peers::ensure();
    let tools: toml::Table =
        std::fs::read_to_string(governance::fixture("backend-tools.toml")).unwrap().parse().expect("fixture parses");
    let mut failures = Vec::new();
    let mut checked = 0;
    for file in shipped_configs() {
        let text = std::fs::read_to_string(&file).unwrap();
        let original: toml::Table = text.parse().unwrap();
        // `*` is "everything" by intent, even while no backend is configured.
        let rules: Vec<(String, String)> = globs(&original).into_iter().filter(|(_, g)| g != "*").collect();
        if rules.is_empty() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let config = runnable(&text, &peers, &tools);
        std::fs::write(dir.path().join("sentinel.toml"), toml::to_string(&config).unwrap()).unwrap();
        let gw = Gateway::start_at(Arc::new(dir), &[]);
        let client = HttpClient::modern(&gw.url);
        // `required` backends: the gateway is ready once every one of them is up.
        eventually_within(std::time::Duration::from_secs(90), "every stand-in backend is up", || async {
            reqwest::get(format!("{}/ready", gw.base())).await.is_ok_and(|r| r.status() == 200)
        })
        .await;
        let mut names = client.tool_names().await;
        let prompts = client.request("prompts/list", serde_json::json!({})).await.json();
        names.extend(
            prompts["result"]["prompts"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|p| p["name"].as_str().map(String::from)),
        );
        assert!(!names.is_empty(), "{}: the gateway exposes nothing\n{}", file.display(), gw.log());
        for (key, glob) in rules {
            checked += 1;
            let matcher = globset::Glob::new(&glob).unwrap().compile_matcher();
            if !names.iter().any(|n| matcher.is_match(n)) {
                failures.push(format!("{}: `{key}` glob `{glob}` matches none of {names:?}", file.display()));
            }
        }
    }
    assert!(checked > 0, "no glob was checked: the shipped configs have no rules?");
    assert!(failures.is_empty(), "globs that match no exposed name:\n{}", failures.join("\n"));
}
