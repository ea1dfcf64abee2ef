//! `sentinel client-config`: the printed `.mcp.json` snippets parse and name the gateway's URL;
//! the `claude mcp add` commands carry the URL and the Authorization header.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::{Value, json};

fn client_config(args: &[&str], cwd: &Path) -> String {
    let out = Command::new(sentinel_bin())
        .arg("client-config")
        .args(args)
        .current_dir(cwd)
        .env_remove("SENTINEL_JWT_SECRET")
        .output()
        .expect("run sentinel client-config");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "stdout: {stdout}\nstderr: {}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The JSON documents in the output: the blocks between `#` comment lines.
fn json_blocks(out: &str) -> Vec<Value> {
    let mut blocks = Vec::new();
    let mut cur = String::new();
    for line in out.lines().chain(std::iter::once("#")) {
        if line.starts_with('#') {
            if !cur.trim().is_empty() {
                blocks.push(serde_json::from_str(&cur).unwrap_or_else(|e| panic!("not JSON ({e}):\n{cur}")));
            }
            cur.clear();
        } else {
            cur.push_str(line);
            cur.push('\n');
        }
    }
    blocks
}

/// A config with authentication on (the secret comes from an environment variable that is
/// not set: client-config does not need it) listening on every interface.
fn jwt_config(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("sentinel.toml");
    std::fs::write(
        &path,
        "[server]\nlisten = \"0.0.0.0:8899\"\nallow_public = true\n[auth]\nhs256_secret = \"${SENTINEL_JWT_SECRET}\"\n",
    )
    .unwrap();
    path
}

const URL: &str = "http://127.0.0.1:8899/mcp";

#[test]
fn json_snippets_parse_and_name_the_url() {
    let dir = tempfile::tempdir().unwrap();
    let path = jwt_config(dir.path());
    let out = client_config(&["json", "-c", path.to_str().unwrap(), "--token", "tok123"], dir.path());
    let blocks = json_blocks(&out);
    assert_eq!(blocks.len(), 2, "{out}");
    let http = &blocks[0]["mcpServers"]["sentinel"];
    assert_eq!(http["type"], "http", "{out}");
    assert_eq!(http["url"], URL, "{out}");
    assert_eq!(http["headers"]["Authorization"], "Bearer tok123", "{out}");
    let stdio = &blocks[1]["mcpServers"]["sentinel"];
    assert_eq!(stdio["command"], "sentinel", "{out}");
    let abs = std::path::absolute(&path).unwrap();
    assert_eq!(stdio["args"], serde_json::json!(["stdio", "-c", abs.to_str().unwrap()]), "{out}");
    assert_eq!(stdio["env"]["SENTINEL_TOKEN"], "tok123", "{out}");
}

#[test]
fn claude_code_commands_carry_url_and_header() {
    let dir = tempfile::tempdir().unwrap();
    let path = jwt_config(dir.path());
    let out = client_config(&["claude-code", "-c", path.to_str().unwrap()], dir.path());
    let http = out.lines().find(|l| l.starts_with("claude mcp add --transport http")).expect(&out);
    assert!(http.contains(URL), "{out}");
    assert!(http.contains("--header \"Authorization: Bearer ${SENTINEL_TOKEN}\""), "{out}");
    let stdio = out.lines().find(|l| l.starts_with("claude mcp add sentinel -e")).expect(&out);
    // The stdio gateway gets the token and every variable the config uses (here its secret).
    assert!(
        stdio.contains(
            "-e SENTINEL_TOKEN=${SENTINEL_TOKEN} -e SENTINEL_JWT_SECRET=${SENTINEL_JWT_SECRET} -- sentinel stdio -c "
        ),
        "{out}"
    );
    // Without --token, the output says how to mint one.
    assert!(out.contains("sentinel token"), "{out}");
    assert!(out.contains("--sub NAME --role ROLE"), "{out}");
}

#[test]
fn no_header_when_auth_is_disabled() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:8898\"\n[auth]\ndisabled = true\n").unwrap();
    let out = client_config(&["claude-code", "-c", path.to_str().unwrap()], dir.path());
    assert!(out.contains("claude mcp add --transport http sentinel http://127.0.0.1:8898/mcp\n"), "{out}");
    assert!(!out.contains("Authorization"), "{out}");
    let out = client_config(&["json", "-c", path.to_str().unwrap()], dir.path());
    let blocks = json_blocks(&out);
    assert!(blocks[0]["mcpServers"]["sentinel"].get("headers").is_none(), "{out}");
    assert!(blocks[1]["mcpServers"]["sentinel"].get("env").is_none(), "{out}");
}

/// A folder holding only a `sentinel` link to the binary under test: the PATH of a client that
/// has Sentinel installed, and nothing else of this test's environment.
fn path_with_sentinel(dir: &Path) -> String {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    std::os::unix::fs::symlink(sentinel_bin(), bin.join("sentinel")).unwrap();
    format!("{}:/usr/bin:/bin", bin.display())
}

/// `sdk_client.py` arguments that start the snippet's stdio server exactly as printed.
fn snippet_args(snippet: &Value) -> Vec<String> {
    let server = &snippet["mcpServers"]["sentinel"];
    let mut args = vec!["--stdio".to_string(), server["command"].as_str().unwrap().to_string()];
    args.extend(server["args"].as_array().unwrap().iter().map(|a| a.as_str().unwrap().to_string()));
    args.push("--".into());
    for (k, v) in server["env"].as_object().into_iter().flatten() {
        args.push("--env".into());
        args.push(format!("{k}={}", v.as_str().unwrap()));
    }
    args
}

fn sentinel_out(args: &[&str], cwd: &Path, env: &[(&str, &str)]) -> String {
    let out = Command::new(sentinel_bin())
        .args(args)
        .current_dir(cwd)
        .env_clear()
        .envs(env.iter().copied())
        .output()
        .expect("run sentinel");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "sentinel {args:?}: {stdout}{}", String::from_utf8_lossy(&out.stderr));
    stdout
}

/// The `.mcp.json` stdio snippet, run as printed by the official Python SDK client with nothing
/// from this environment (the SDK passes PATH on): the gateway it starts finds its config, the
/// secret and the backend's key, accepts the token and calls a tool.
#[test]
fn the_printed_stdio_snippet_works_in_an_empty_environment() {
    let peers = peers::ensure();
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    std::fs::write(
        &config,
        format!(
            "[auth]\nhs256_secret = \"${{SENTINEL_JWT_SECRET}}\"\n[roles.admin]\nallow = [\"*\"]\n\n\
             [[backend]]\nname = \"m\"\nstdio = {{ command = {}, env = {{ MOCK_API_KEY = \"${{MOCK_API_KEY}}\" }} }}\n",
            lit(mock_bin().to_string_lossy())
        ),
    )
    .unwrap();
    let c = config.to_str().unwrap();
    let secret = ("SENTINEL_JWT_SECRET", "client-config-test-secret-0123456789abcdef");
    // Minting needs the signing secret only, not the backend's key.
    let token = sentinel_out(&["token", "-c", c, "--sub", "snippet", "--role", "admin"], dir.path(), &[secret]);
    let out = sentinel_out(
        &["client-config", "json", "-c", c, "--token", token.trim()],
        dir.path(),
        &[secret, ("MOCK_API_KEY", "mock-key-value")],
    );
    let stdio = json_blocks(&out).pop().expect("the stdio snippet");
    assert_eq!(
        stdio["mcpServers"]["sentinel"]["env"].as_object().unwrap().keys().collect::<Vec<_>>(),
        ["SENTINEL_TOKEN", "SENTINEL_JWT_SECRET", "MOCK_API_KEY"],
        "{out}"
    );

    let elsewhere = tempfile::tempdir().unwrap();
    let path = path_with_sentinel(elsewhere.path());
    let mut args = snippet_args(&stdio);
    args.extend(["--call".into(), "m__echo".into(), r#"{"via":"snippet"}"#.into()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let seen = peers.sdk_client_in(&args, &[("PATH", &path)], elsewhere.path());
    assert_eq!(seen["calls"][0]["result"]["structuredContent"], json!({"via": "snippet"}), "{seen}");
}

/// On the embedded default (no config file), `sentinel token` mints with the development
/// secret `serve` and `stdio` use, and the printed stdio snippet works with that token.
#[test]
fn the_embedded_default_works_over_stdio_with_a_minted_token() {
    let peers = peers::ensure();
    let home = tempfile::tempdir().unwrap();
    let cwd = tempfile::tempdir().unwrap();
    let path = path_with_sentinel(home.path());
    let env = [("HOME", home.path().to_str().unwrap()), ("PATH", path.as_str())];
    let token = sentinel_out(&["token", "--sub", "dev", "--role", "admin"], cwd.path(), &env);
    let secret_file = home.path().join(".local/state/sentinel/dev-secret");
    assert!(secret_file.exists(), "the development secret lives in the state directory");
    let out = sentinel_out(&["client-config", "json", "--token", token.trim()], cwd.path(), &env);
    let stdio = json_blocks(&out).pop().expect("the stdio snippet");
    assert_eq!(stdio["mcpServers"]["sentinel"]["args"], json!(["stdio"]), "{out}");
    let args = snippet_args(&stdio);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let seen = peers.sdk_client_in(&args, &env, cwd.path());
    assert_eq!(seen["tools"], json!([]), "{seen}");
    assert!(seen["protocolVersion"].is_string(), "{seen}");
    assert!(!cwd.path().join("sentinel-audit.db").exists(), "the default's audit trail is in the state directory");
}

/// `listen = "...:0"`: the port is chosen at start, and the output says so instead of `:0`.
#[test]
fn a_port_chosen_at_start_is_said_not_printed_as_zero() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ndisabled = true\n").unwrap();
    let out = client_config(&["claude-code", "-c", path.to_str().unwrap()], dir.path());
    assert!(!out.contains(":0/mcp"), "{out}");
    assert!(
        out.contains("http://127.0.0.1:<PORT>/mcp") && out.contains("chosen when `sentinel serve` starts"),
        "{out}"
    );
}
