//! `sentinel client-config`: the printed `.mcp.json` snippets parse and name the gateway's URL;
//! the `claude mcp add` commands carry the URL and the Authorization header.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use serde_json::Value;

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
    assert!(stdio.contains("SENTINEL_TOKEN=${SENTINEL_TOKEN} -- sentinel stdio -c "), "{out}");
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
