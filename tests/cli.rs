//! The `sentinel` command line: `check` on good, bad and shipped configs, the first run with
//! no config at all, `serve` refusing an invalid config, and `--help`.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Output, Stdio};
use std::time::Duration;

use common::*;

/// The listen address the README and the embedded default advertise for a first run.
const DEFAULT_ADDR: &str = "127.0.0.1:8800";

/// Runs `sentinel ARGS` in `cwd` to completion (at most 60 s).
async fn sentinel(args: &[&str], cwd: &Path, env: &[(String, String)]) -> Output {
    let mut cmd = tokio::process::Command::new(sentinel_bin());
    cmd.args(args).current_dir(cwd).env_remove("NOPE_NOT_SET").kill_on_drop(true);
    cmd.envs(env.iter().map(|(k, v)| (k, v)));
    tokio::time::timeout(Duration::from_secs(60), cmd.output())
        .await
        .unwrap_or_else(|_| panic!("`sentinel {}` did not finish within 60s", args.join(" ")))
        .expect("run sentinel")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[tokio::test]
async fn check_accepts_a_valid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.toml");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ndisabled = true\n\n{}",
        mock_stdio_backend("mock", None, &[])
    );
    std::fs::write(&path, config).unwrap();
    let out = sentinel(&["check", "-c", path.to_str().unwrap()], dir.path(), &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    assert!(stdout.contains("ok"), "{stdout}");
}

/// One run lists every problem, each as `FILE:LINE: `key`: message`.
#[tokio::test]
async fn check_lists_every_problem_in_one_run() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.toml");
    let mock = lit(mock_bin().to_string_lossy());
    // Four problems, on lines 3, 8, 11 and 13.
    let config = format!(
        r#"[server]
listen = "127.0.0.1:0"
lisen = "typo"

[[backend]]
name = "a"
stdio = {{ command = {mock} }}
timeout = "soon"

[[backend]]
name = "a"
prefix = "b"
http = {{ url = "http://127.0.0.1:1/mcp", headers = {{ Authorization = "Bearer ${{NOPE_NOT_SET}}" }} }}

[auth]
disabled = true
"#
    );
    std::fs::write(&path, config).unwrap();
    let file = path.to_str().unwrap();
    let out = sentinel(&["check", "-c", file], dir.path(), &[]).await;
    let stdout = text(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "stdout: {stdout}\nstderr: {}", text(&out.stderr));
    let lines: Vec<&str> = stdout.lines().collect();
    for (line, key, message) in [
        (3, "server.lisen", "unknown key"),
        (8, "backend.0.timeout", "`soon` is not a duration"),
        (11, "backend.1.name", "backend name `a` is used twice"),
        (13, "backend.1.http.headers.Authorization", "environment variable `NOPE_NOT_SET` is not set"),
    ] {
        let want = format!("{file}:{line}: `{key}`: {message}");
        let found = lines.iter().filter(|l| l.starts_with(&want)).count();
        assert_eq!(found, 1, "expected one line starting with {want:?} in:\n{stdout}");
    }
    let problems = lines
        .iter()
        .filter(|l| {
            l.strip_prefix(&format!("{file}:")).is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    assert_eq!(problems, 4, "exactly the four problems, each once:\n{stdout}");
}

/// Every config the repository ships passes `sentinel check`, given a placeholder for each
/// `${VAR}` it mentions (users export their own secrets).
#[tokio::test]
async fn check_accepts_every_shipped_example() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    toml_files_under(&root.join("examples"), &mut files);
    let root_example = root.join("sentinel.example.toml");
    if root_example.exists() {
        files.push(root_example);
    }
    assert!(!files.is_empty(), "no example configs found (examples/**/*.toml, sentinel.example.toml): nothing checked");
    let mut failures = Vec::new();
    for file in &files {
        let text_of_file = std::fs::read_to_string(file).unwrap();
        let env: Vec<(String, String)> = env_references(&text_of_file)
            .into_iter()
            .map(|k| (k, "placeholder-for-sentinel-check-0123456789".to_string()))
            .collect();
        let out = sentinel(&["check", "-c", file.to_str().unwrap()], &root, &env).await;
        if out.status.code() != Some(0) {
            failures.push(format!("{}:\n{}{}", file.display(), text(&out.stdout), text(&out.stderr)));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} example configs fail `sentinel check`:\n{}",
        failures.len(),
        files.len(),
        failures.join("\n")
    );
}

fn toml_files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            toml_files_under(&path, out);
        } else if path.extension().is_some_and(|e| e == "toml") {
            out.push(path);
        }
    }
}

/// Names in `${NAME}` references, skipping the `$${` escape.
fn env_references(text: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = text;
    while let Some(pos) = rest.find("${") {
        let escaped = pos > 0 && rest.as_bytes()[pos - 1] == b'$';
        let after = &rest[pos + 2..];
        if let Some(end) = after.find('}') {
            let name = &after[..end];
            if !escaped && !name.is_empty() && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                names.push(name.to_string());
            }
        }
        rest = after;
    }
    names.sort();
    names.dedup();
    names
}

/// `sentinel serve` with no config in an empty directory starts on the embedded default,
/// says where, and how to connect Claude Code; a real client then sees an empty catalog.
#[tokio::test]
async fn first_run_without_a_config_serves_the_embedded_default() {
    if let Err(e) = std::net::TcpListener::bind(DEFAULT_ADDR) {
        eprintln!("skipping: the default address {DEFAULT_ADDR} is taken by another process ({e})");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let state = tempfile::tempdir().unwrap();
    let stderr_path = dir.path().join("stderr.log");
    let child = std::process::Command::new(sentinel_bin())
        .arg("serve")
        .current_dir(dir.path())
        .env("XDG_STATE_HOME", state.path())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&stderr_path).unwrap())
        .spawn()
        .expect("start sentinel serve");
    let mut child = KillOnDrop(child);
    let stdout = child.0.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });

    let mut url = None;
    let mut claude = None;
    let mut printed = Vec::new();
    while url.is_none() || claude.is_none() {
        let Ok(line) = rx.recv_timeout(Duration::from_secs(30)) else {
            let stderr = std::fs::read_to_string(&stderr_path).unwrap_or_default();
            panic!(
                "sentinel serve did not print its URL and the claude command.\nstdout: {printed:?}\nstderr: {stderr}"
            );
        };
        if let Some(rest) = line.strip_prefix("Sentinel listening on ") {
            url = Some(rest.trim().to_string());
        }
        if line.contains("claude mcp add --transport http") {
            claude = Some(line.clone());
        }
        printed.push(line);
    }
    let url = url.unwrap();
    assert_eq!(url, format!("http://{DEFAULT_ADDR}/mcp"), "{printed:?}");
    assert!(claude.as_ref().unwrap().contains(&url), "the claude command names the URL: {printed:?}");

    // The printed command carries a working token: without it the gateway refuses (401).
    let claude = claude.unwrap();
    let token =
        claude.split("Authorization: Bearer ").nth(1).expect("a token in the claude command").trim_end_matches('"');
    let anonymous = HttpClient::new(&url);
    let r = anonymous.request("tools/list", serde_json::json!({})).await;
    assert_eq!(r.status, 401, "{r:?}");
    assert!(r.headers["www-authenticate"].to_str().unwrap().starts_with("Bearer"));
    let client = HttpClient::new(&url).with_token(token).initialized(serde_json::json!({})).await;
    assert_eq!(client.tool_names().await, Vec::<String>::new());
    assert!(!dir.path().join("sentinel.toml").exists(), "a first run does not write a config");

    // `sentinel stdio` on the default accepts the token `serve` printed: one development secret.
    let mut stdio = StdioClient::spawn_with_env(
        &sentinel_bin(),
        &["stdio"],
        Some(dir.path()),
        &[("SENTINEL_TOKEN", token), ("XDG_STATE_HOME", state.path().to_str().unwrap())],
    );
    let list: serde_json::Value =
        serde_json::from_str(&stdio.request_modern(serde_json::json!(1), "tools/list", serde_json::json!({})).await)
            .unwrap();
    assert_eq!(list["result"]["tools"], serde_json::json!([]), "{list}");
}

struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn serve_refuses_an_invalid_config() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\nlisen = 1\n").unwrap();
    let file = path.to_str().unwrap();
    let out = sentinel(&["serve", "-c", file], dir.path(), &[]).await;
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "serve must not start on an invalid config; stderr: {stderr}");
    assert!(stderr.contains(&format!("{file}:3: `server.lisen`: unknown key")), "{stderr}");
    assert!(stderr.contains("sentinel check"), "a hint to run `sentinel check`: {stderr}");
    assert!(!text(&out.stdout).contains("listening"), "{}", text(&out.stdout));
}

#[tokio::test]
async fn help_lists_the_commands() {
    let dir = tempfile::tempdir().unwrap();
    let out = sentinel(&["--help"], dir.path(), &[]).await;
    let stdout = text(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    for command in ["serve", "stdio", "check"] {
        assert!(
            stdout.lines().any(|l| l.trim_start().starts_with(&format!("{command} "))),
            "`{command}` missing from --help:\n{stdout}"
        );
    }
}

/// `token`, `audit` and `client-config` do not talk to backends, so they do not need a backend's
/// secret; `check` (which judges the whole file) names it.
#[tokio::test]
async fn commands_that_do_not_talk_to_backends_need_no_backend_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.toml");
    std::fs::write(
        &path,
        "[auth]\nhs256_secret = \"${SECRET_FOR_CLI_TEST}\"\n[roles.admin]\nallow = [\"*\"]\n\
         [[backend]]\nname = \"n8n\"\nhttp = { url = \"http://127.0.0.1:1/mcp\", headers = { Authorization = \"Bearer ${UNSET_BACKEND_KEY}\" } }\n",
    )
    .unwrap();
    let file = path.to_str().unwrap();
    let env = [("SECRET_FOR_CLI_TEST".to_string(), "cli-test-secret-0123456789abcdef0123456789".to_string())];
    let out = sentinel(&["token", "-c", file, "--sub", "me", "--role", "admin"], dir.path(), &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).trim().split('.').count(), 3, "a token: {}", text(&out.stdout));
    let out = sentinel(&["client-config", "json", "-c", file], dir.path(), &env).await;
    assert!(out.status.success(), "{}", text(&out.stderr));
    // No store yet: `audit` says so, and does not complain about the backend's key.
    let out = sentinel(&["audit", "-c", file], dir.path(), &env).await;
    assert!(!text(&out.stderr).contains("UNSET_BACKEND_KEY"), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("no audit store"), "{}", text(&out.stderr));
    let out = sentinel(&["check", "-c", file], dir.path(), &env).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stdout).contains("environment variable `UNSET_BACKEND_KEY` is not set"), "{}", text(&out.stdout));
}

/// Without authentication every caller is the client `anonymous`, in the audit trail as in the
/// rate limits, and `sentinel audit --client anonymous` finds its calls.
#[tokio::test]
async fn callers_without_authentication_are_anonymous_in_the_trail() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let r = HttpClient::modern(&gw.url).call("m__echo", serde_json::json!({"n": 1})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let config = gw.config_path();
    let args = ["audit", "-c", config.to_str().unwrap(), "--client", "anonymous", "--json"];
    let seen = std::sync::Mutex::new(String::new());
    eventually("the call is in the trail", || async {
        let out = text(&sentinel(&args, gw.dir.path(), &[]).await.stdout);
        *seen.lock().unwrap() = out.clone();
        out.contains("m__echo")
    })
    .await;
    let found = seen.into_inner().unwrap();
    let record: serde_json::Value = serde_json::from_str(found.lines().next().unwrap_or("null")).unwrap();
    assert_eq!((record["client"].as_str(), record["tool"].as_str()), (Some("anonymous"), Some("m__echo")), "{found}");
    assert_eq!(record["arguments"], serde_json::json!({"n": 1}), "{found}");
}
