//! `sentinel reload` (through the daemon's pid file) and `sentinel doctor`, on the real binary.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::{Command, Output};

use common::*;
use serde_json::json;

fn sentinel(args: &[&str], cwd: &Path) -> Output {
    Command::new(sentinel_bin()).args(args).current_dir(cwd).env("SENTINEL_LOG", "warn").output().expect("run sentinel")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

async fn reloads(gw: &Gateway, result: &str) -> f64 {
    let body = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    let label = format!("result=\"{result}\"");
    body.lines()
        .filter(|l| l.starts_with("sentinel_config_reloads_total") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test]
async fn reload_applies_a_valid_file_and_refuses_an_invalid_one_without_signalling() {
    let gw = Gateway::start(&(mock_stdio_backend("m", None, &[]) + "[kill_switch]\ntools = []\n"));
    let path = gw.config_path();
    assert!(gw.dir.path().join("sentinel.pid").exists(), "serve writes its pid file beside the config");
    let c = HttpClient::modern(&gw.url);
    assert!(c.tool_names().await.iter().any(|t| t == "m__echo"));

    // Accepted: the kill switch changes and takes effect.
    let original = std::fs::read_to_string(&path).unwrap();
    let killed = original.replace("[kill_switch]\ntools = []\n", "[kill_switch]\ntools = [\"m__echo\"]\n");
    assert_ne!(killed, original);
    std::fs::write(&path, &killed).unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], gw.dir.path());
    assert!(out.status.success(), "{}\n{}", text(&out), gw.log());
    assert!(text(&out).contains("accepted"), "{}", text(&out));
    assert!(!c.tool_names().await.iter().any(|t| t == "m__echo"), "the reloaded kill switch is not in force");
    assert_eq!(c.call("m__echo", json!({})).await.error_code(), Some(-32012));
    assert_eq!(reloads(&gw, "ok").await, 1.0);

    // Invalid: the problems are printed, the daemon is not signalled and keeps its config.
    std::fs::write(&path, original.replace("[kill_switch]\n", "[kill_switch\n")).unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], gw.dir.path());
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("not asked to reload"), "{}", text(&out));
    assert!(text(&out).contains("sentinel.toml:"), "the problem's location is printed: {}", text(&out));
    assert_eq!(reloads(&gw, "ok").await, 1.0);
    assert_eq!(reloads(&gw, "error").await, 0.0, "the daemon was signalled");
    assert_eq!(c.call("m__echo", json!({})).await.error_code(), Some(-32012), "the running config changed");
}

#[test]
fn reload_without_a_daemon_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sentinel.toml");
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ndisabled = true\n").unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("no daemon to reload") && text(&out).contains("sentinel.pid"), "{}", text(&out));

    // A stale pid file from a daemon that is gone.
    let mut gone = Command::new("true").spawn().unwrap();
    let pid = gone.id();
    gone.wait().unwrap();
    std::fs::write(dir.path().join("sentinel.pid"), format!("{pid}\n127.0.0.1:1\n")).unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not running"), "{}", text(&out));

    // A stale pid file whose pid now belongs to another program: it must not get SIGHUP (which would end it).
    let mut other = Command::new("sleep").arg("30").spawn().unwrap();
    std::fs::write(dir.path().join("sentinel.pid"), format!("{}\n127.0.0.1:1\n", other.id())).unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("not sentinel"), "{}", text(&out));
    std::thread::sleep(std::time::Duration::from_millis(200));
    assert!(other.try_wait().unwrap().is_none(), "the other program was signalled");
    other.kill().unwrap();
    other.wait().unwrap();
}

/// A config with a secret file of the given mode and the given backends, in a fresh folder.
fn doctor_setup(mode: u32, backends: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("jwt.secret");
    std::fs::write(&secret, "0123456789abcdef0123456789abcdef0123456789abcdef\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(mode)).unwrap();
    let path = dir.path().join("sentinel.toml");
    std::fs::write(
        &path,
        format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\nhs256_secret_file = {}\n[audit]\nurl = \"sqlite://audit.db\"\n{backends}",
            lit(secret.to_string_lossy())
        ),
    )
    .unwrap();
    (dir, path)
}

fn lines_with<'a>(out: &'a str, tag: &str) -> Vec<&'a str> {
    out.lines().filter(|l| l.starts_with(tag)).collect()
}

#[test]
fn doctor_passes_a_good_deployment() {
    let (dir, path) = doctor_setup(0o600, &mock_stdio_backend("m", None, &[]));
    let out = sentinel(&["doctor", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{}", text(&out));
    assert!(lines_with(&stdout, "FAIL").is_empty(), "{stdout}");
    for what in ["is loopback", "hs256_secret_file", "audit store", "audit spool", "backend `m`"] {
        assert!(lines_with(&stdout, "pass").iter().any(|l| l.contains(what)), "no passing `{what}` line:\n{stdout}");
    }
}

#[test]
fn doctor_fails_a_world_readable_secret_file() {
    let (dir, path) = doctor_setup(0o644, "");
    let out = sentinel(&["doctor", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{}", text(&out));
    let fails = lines_with(&stdout, "FAIL");
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(fails[0].contains("hs256_secret_file") && fails[0].contains("644"), "{stdout}");
}

#[test]
fn doctor_fails_a_backend_that_does_not_start() {
    let backends = format!(
        "{}[[backend]]\nname = \"ghost\"\nstdio = {{ command = \"/nonexistent/sentinel-test-no-such-command\" }}\n",
        mock_stdio_backend("m", None, &[])
    );
    let (dir, path) = doctor_setup(0o600, &backends);
    let out = sentinel(&["doctor", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(!out.status.success(), "{}", text(&out));
    let fails = lines_with(&stdout, "FAIL");
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(fails[0].contains("backend `ghost`"), "{stdout}");
    assert!(lines_with(&stdout, "pass").iter().any(|l| l.contains("backend `m`")), "{stdout}");
}

/// A loopback port nobody listens on (bound, then released).
fn refused_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

#[test]
fn doctor_names_the_cause_of_a_refused_connection_once() {
    let port = refused_port();
    let backends =
        format!("[[backend]]\nname = \"h\"\nhttp = {{ url = \"http://127.0.0.1:{port}/mcp?key=s3cret\" }}\n");
    let (dir, path) = doctor_setup(0o600, &backends);
    let out = sentinel(&["doctor", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let fails = lines_with(&stdout, "FAIL");
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(fails[0].contains(&format!("connection refused at http://127.0.0.1:{port}/mcp")), "{stdout}");
    assert_eq!(fails[0].matches("backend `h`").count(), 1, "the backend is named once: {stdout}");
    assert!(!stdout.contains("s3cret"), "{stdout}");
}

#[tokio::test]
async fn the_log_names_the_cause_of_a_refused_connection() {
    let port = refused_port();
    let gw =
        Gateway::start(&format!("[[backend]]\nname = \"h\"\nhttp = {{ url = \"http://127.0.0.1:{port}/mcp\" }}\n"));
    let want = format!("connection refused at http://127.0.0.1:{port}/mcp");
    eventually("the log says why the backend is down", || async { gw.log().contains(&want) }).await;
}

#[test]
fn doctor_fails_literal_secrets_wherever_they_are() {
    let backends = format!(
        "[[backend]]\nname = \"h\"\nhttp = {{ url = \"http://127.0.0.1:{}/mcp\", headers = {{ Authorization = \"Bearer literal-t0ken\" }} }}\n\
         [[backend]]\nname = \"s\"\nstdio = {{ command = {}, env = {{ EXA_API_KEY = \"literal-k3y\" }} }}\n",
        refused_port(),
        lit(mock_bin().to_string_lossy())
    );
    let (dir, path) = doctor_setup(0o600, &backends);
    let out = sentinel(&["doctor", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let literal: Vec<&str> = lines_with(&stdout, "FAIL").into_iter().filter(|l| l.contains("literal secret")).collect();
    assert_eq!(literal.len(), 2, "{stdout}");
    assert!(literal[0].contains("backend.0.http.headers.Authorization"), "{stdout}");
    assert!(literal[1].contains("backend.1.stdio.env.EXA_API_KEY"), "{stdout}");
    assert!(!stdout.contains("literal-t0ken") && !stdout.contains("literal-k3y"), "{stdout}");
    // `check` accepts the file, with the same warnings.
    let out = sentinel(&["check", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{stdout}");
    assert_eq!(
        stdout.lines().filter(|l| l.starts_with("warning: ") && l.contains("a secret is written in the file")).count(),
        2,
        "{stdout}"
    );
}

#[test]
fn doctor_reports_two_tools_of_one_backend_that_slug_alike() {
    let backends = format!(
        "[naming]\nstyle = \"contextforge\"\n{}",
        mock_stdio_backend("gh", None, &["--tool", "get_thing", "--tool", "get-thing", "--tool", "other"])
    );
    let (dir, path) = doctor_setup(0o600, &backends);
    let out = sentinel(&["doctor", "-c", path.to_str().unwrap()], dir.path());
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    let fails = lines_with(&stdout, "FAIL");
    assert_eq!(fails.len(), 1, "{stdout}");
    assert!(
        fails[0].contains("tools `get_thing` and `get-thing` of backend `gh` are both exposed as `gh-get-thing`"),
        "{stdout}"
    );
}

#[tokio::test]
async fn reload_says_which_changes_wait_for_a_restart() {
    let gw = Gateway::start(&mock_stdio_backend("m", None, &[]));
    let path = gw.config_path();
    let original = std::fs::read_to_string(&path).unwrap();
    std::fs::write(&path, original.replacen("[server]\n", "[server]\nmax_body_bytes = 1000\n", 1)).unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], gw.dir.path());
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("NOT applied until the daemon restarts: server.max_body_bytes"), "{}", text(&out));
    // Back as it was: nothing waits any more.
    std::fs::write(&path, &original).unwrap();
    let out = sentinel(&["reload", "-c", path.to_str().unwrap()], gw.dir.path());
    assert!(out.status.success() && !text(&out).contains("NOT applied"), "{}", text(&out));
}
