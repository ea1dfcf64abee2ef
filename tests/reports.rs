//! The report commands (`check`, `doctor`, `token`, `audit`, `client-config`, `reload`) print
//! their report and no log line unless `-v` asks for them; `sentinel stdio` whose client closes
//! stdin normally logs no error.

mod common;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

use common::governance::*;
use common::*;

/// Lines of a tracing log (`2026-...Z  WARN target: ...`), with or without colour codes.
fn log_lines(stderr: &str) -> Vec<String> {
    strip_ansi(stderr)
        .lines()
        .filter(|l| {
            l.starts_with("20")
                && [" TRACE ", " DEBUG ", " INFO ", " WARN ", " ERROR "].iter().any(|level| l.contains(level))
        })
        .map(str::to_string)
        .collect()
}

fn sentinel(args: &[&str], cwd: &Path) -> Output {
    Command::new(sentinel_bin())
        .args(args)
        .current_dir(cwd)
        .env_remove("SENTINEL_LOG")
        .envs(secret_env())
        .output()
        .expect("run sentinel")
}

fn report(o: &Output) -> String {
    format!("stdout:\n{}\nstderr:\n{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

#[tokio::test]
async fn reports_print_no_log_lines_unless_asked() {
    // A daemon for `reload`, with a stdio backend that `doctor` starts and stops again.
    let body = format!("{}{ADMIN_ROLE}{}", hs256_auth(""), mock_stdio_backend("m", None, &[]));
    let gw = Gateway::start_with_env(&body, &secret_env());
    let config = gw.config_path();
    let c = config.to_str().unwrap();
    let dir = gw.dir.path();
    let t = token("alice", &["admin"]);
    let r = HttpClient::modern(&gw.url).with_token(&t).call("m__echo", serde_json::json!({})).await;
    assert_eq!(r.status, 200, "{r:?}");
    // The record reaches the store a moment after the answer: `audit` has something to report.
    eventually("the call is in the store", || async {
        !sentinel(&["audit", "-c", c, "--limit", "5"], dir).stdout.is_empty()
    })
    .await;

    let cases: [&[&str]; 6] = [
        &["check", "-c", c],
        &["doctor", "-c", c],
        &["token", "-c", c, "--sub", "s", "--role", "admin"],
        &["audit", "-c", c, "--limit", "5"],
        &["client-config", "json", "-c", c],
        &["reload", "-c", c],
    ];
    for args in cases {
        let out = sentinel(args, dir);
        assert!(out.status.success(), "{args:?} failed:\n{}", report(&out));
        assert!(!out.stdout.is_empty(), "{args:?} printed no report");
        let logged = log_lines(&String::from_utf8_lossy(&out.stderr));
        assert!(logged.is_empty(), "{args:?} printed log lines:\n{}", logged.join("\n"));
    }

    // Asked for: `doctor -v` shows what the backends it started said.
    let out = sentinel(&["doctor", "-v", "-c", c], dir);
    assert!(out.status.success(), "{}", report(&out));
    let logged = log_lines(&String::from_utf8_lossy(&out.stderr));
    assert!(logged.iter().any(|l| l.contains("backend ready")), "no log lines with -v:\n{}", report(&out));
}

#[test]
fn stdio_logs_no_error_when_its_client_closes_stdin() {
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("sentinel.toml");
    std::fs::write(&config, format!("[auth]\ndisabled = true\n{}", mock_stdio_backend("m", None, &[]))).unwrap();
    let mut child = Command::new(sentinel_bin())
        .args(["stdio", "-c"])
        .arg(&config)
        .current_dir(dir.path())
        .env_remove("SENTINEL_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let call = serde_json::json!({"jsonrpc": "2.0", "id": 1, "method": "tools/call",
        "params": modern_params(serde_json::json!({"name": "m__echo", "arguments": {"x": 1}}))});
    writeln!(stdin, "{call}").unwrap();
    // The client is done: it closes stdin, and the gateway ends with it.
    drop(stdin);
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{}", report(&out));
    assert!(String::from_utf8_lossy(&out.stdout).contains("\"x\":1"), "{}", report(&out));
    let errors: Vec<String> =
        log_lines(&String::from_utf8_lossy(&out.stderr)).into_iter().filter(|l| l.contains(" ERROR ")).collect();
    assert!(errors.is_empty(), "errors on a normal end:\n{}", errors.join("\n"));
}
