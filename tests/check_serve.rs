//! `check`, `doctor`, `reload` and `serve` judge a config alike: every config in the table is
//! one `serve` refuses, and `check` refuses it with the very same message (as do `doctor` and
//! the pre-check of `reload`, which leaves the running daemon alone).

mod common;

use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::*;

/// Configs `serve` must refuse, each with the problem it must be refused for (a part of the
/// message). `{jwks_bad}` is replaced by a file that is not a JWKS.
const REFUSED: &[(&str, &str, &str)] = &[
    (
        "jwks_url over plain http to another host",
        "[auth]\njwks_url = \"http://idp.example.com/jwks\"\n",
        "must use https://",
    ),
    ("jwks_file missing", "[auth]\njwks_file = \"/nonexistent/sentinel/jwks.json\"\n", "cannot load the JWKS"),
    ("jwks_file not a JWKS", "[auth]\njwks_file = \"{jwks_bad}\"\n", "not a JWKS"),
    (
        "jwks_url and jwks_file",
        "[auth]\njwks_url = \"https://idp.example.com/jwks\"\njwks_file = \"{jwks_bad}\"\n",
        "set `jwks_url` or `jwks_file`, not both",
    ),
    (
        "role_claim with an empty segment",
        "[auth]\nhs256_secret = \"${SECRET}\"\nrole_claim = \"realm..roles\"\n",
        "not a claim name",
    ),
    ("short secret", "[auth]\nhs256_secret = \"short\"\n", "shorter than 32 bytes"),
    ("unset variable", "[auth]\nhs256_secret = \"${SENTINEL_TEST_NOT_SET}\"\n", "is not set"),
    (
        "both secret keys",
        "[auth]\nhs256_secret = \"${SECRET}\"\nhs256_secret_file = \"/nonexistent\"\n",
        "both `hs256_secret` and `hs256_secret_file` are set",
    ),
    ("max_token_bytes zero", "[auth]\nhs256_secret = \"${SECRET}\"\nmax_token_bytes = 0\n", "greater than zero"),
    ("unknown key", "[auth]\ndisabled = true\n[server]\nlisen = 1\n", "unknown key"),
    ("duplicate table", "[auth]\ndisabled = true\n[auth]\ndisabled = true\n", "`auth` is defined twice"),
    (
        "public listen",
        "[auth]\nhs256_secret = \"${SECRET}\"\n[server]\nlisten = \"0.0.0.0:0\"\n",
        "not a loopback address",
    ),
    ("bad glob", "[auth]\ndisabled = true\n[roles.r]\nallow = [\"a[\"]\n", "not a valid glob"),
    (
        "kill switch of no backend",
        "[auth]\ndisabled = true\n[kill_switch]\nbackends = [\"nope\"]\n",
        "no backend is named",
    ),
    (
        "prefix in the contextforge style",
        "[auth]\ndisabled = true\n[naming]\nstyle = \"contextforge\"\n[[backend]]\nname = \"b\"\nprefix = \"x\"\nstdio = { command = \"true\" }\n",
        "`prefix` has no effect",
    ),
];

const SECRET: &str = "check-serve-test-secret-0123456789abcdef";

fn sentinel(args: &[&str], cwd: &Path) -> Command {
    let mut cmd = Command::new(sentinel_bin());
    cmd.args(args)
        .current_dir(cwd)
        .env("SECRET", SECRET)
        .env_remove("SENTINEL_TEST_NOT_SET")
        .env_remove("SENTINEL_LOG");
    cmd
}

fn text(o: &Output) -> (String, String) {
    (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned())
}

/// `sentinel serve -c FILE`, which must exit (refuse) within 30 s.
fn serve_refuses(config: &Path, dir: &Path, what: &str) -> String {
    let mut child = sentinel(&["serve", "-c", config.to_str().unwrap()], dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let (out, err) = text(&child.wait_with_output().unwrap());
            panic!("{what}: `sentinel serve` accepted the config\nstdout: {out}\nstderr: {err}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success(), "{what}: serve exited 0");
    text(&out).1
}

#[tokio::test]
async fn every_config_serve_refuses_check_doctor_and_reload_refuse_with_the_same_message() {
    let dir = tempfile::tempdir().unwrap();
    let jwks_bad = dir.path().join("not-a-jwks.json");
    std::fs::write(&jwks_bad, "{\"hello\": 1}").unwrap();
    // A running daemon whose config file each case overwrites: `reload` must refuse the file
    // before signalling it.
    let gw = Gateway::start("");
    let running = std::fs::read_to_string(gw.config_path()).unwrap();
    for (what, body, because) in REFUSED {
        let body = body.replace("{jwks_bad}", jwks_bad.to_str().unwrap());
        let config = dir.path().join("sentinel.toml");
        std::fs::write(&config, &body).unwrap();
        let file = config.to_str().unwrap();

        let refusal = serve_refuses(&config, dir.path(), what);
        assert!(refusal.contains(because), "{what}: serve refused, but not for `{because}`:\n{refusal}");

        let check = sentinel(&["check", "-c", file], dir.path()).output().unwrap();
        let (out, err) = text(&check);
        assert_eq!(check.status.code(), Some(1), "{what}: check passed a config serve refuses:\n{out}{err}");
        // `FILE:LINE: ...` (not the `FILE: N problems found` summary).
        let problems: Vec<&str> = out
            .lines()
            .filter(|l| {
                l.strip_prefix(&format!("{file}:")).is_some_and(|r| r.starts_with(|c: char| c.is_ascii_digit()))
            })
            .collect();
        assert!(!problems.is_empty(), "{what}: check printed no problem:\n{out}");
        assert!(problems.iter().any(|p| p.contains(because)), "{what}: check did not say `{because}`:\n{out}");
        for p in &problems {
            assert!(refusal.contains(p), "{what}: check says {p:?}, serve said:\n{refusal}");
        }
        assert!(err.is_empty(), "{what}: check wrote to stderr: {err}");

        let doctor = sentinel(&["doctor", "-c", file], dir.path()).output().unwrap();
        let (out, _) = text(&doctor);
        assert_eq!(doctor.status.code(), Some(1), "{what}: doctor passed it:\n{out}");
        for p in &problems {
            assert!(out.contains(p), "{what}: doctor did not say {p:?}:\n{out}");
        }

        std::fs::write(gw.config_path(), &body).unwrap();
        let reload = sentinel(&["reload", "-c", gw.config_path().to_str().unwrap()], gw.dir.path()).output().unwrap();
        let (out, err) = text(&reload);
        assert_eq!(reload.status.code(), Some(1), "{what}: reload accepted it:\n{out}{err}");
        assert!(out.contains("not asked to reload"), "{what}: {out}{err}");
        let running_problems: Vec<String> =
            problems.iter().map(|p| p.replacen(file, gw.config_path().to_str().unwrap(), 1)).collect();
        for p in &running_problems {
            assert!(out.contains(p.as_str()), "{what}: reload did not say {p:?}:\n{out}");
        }
        std::fs::write(gw.config_path(), &running).unwrap();
    }
    // No reload reached the daemon.
    let metrics = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("sentinel_config_reloads_total{result=\"error\"} 0"), "{metrics}");
}
