//! The credential store through the real binary: `sentinel credentials` against SQLite and
//! PostgreSQL, what the database holds (ciphertext only), and a gateway refusing to start with a
//! key that cannot open what is stored.

mod common;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use common::pg::PgDb;
use common::sentinel_bin;

const KEY_A: &str = "q8mX0c2pYbW2n9fQk1u3t6vZr5sL4jH7gD0eA1bC2dE=";
const KEY_B: &str = "5f1d3a9c7e2b4f6a8c0e1d3b5a7c9e2f4a6b8c0d2e4f6a8b0c2d4e6f8a0b2c4d";
const SECRET: &str = "ghp_s3cr3t-t0ken-for-alice-only";

/// A folder with a config whose audit store is `audit_url`, one backend `github`, and a
/// `[credentials]` section written as given.
struct Setup {
    dir: tempfile::TempDir,
}

impl Setup {
    fn new(audit_url: Option<&str>) -> Setup {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.key"), format!("{KEY_A}\n")).unwrap();
        std::fs::write(dir.path().join("b.key"), KEY_B).unwrap();
        let s = Setup { dir };
        s.config(audit_url, "key_file = \"a.key\"");
        s
    }

    fn config(&self, audit_url: Option<&str>, credentials: &str) {
        let audit = audit_url.map(|u| format!("[audit]\nurl = \"{u}\"\n")).unwrap_or_default();
        let text = format!(
            "[server]\nlisten = \"127.0.0.1:0\"\n[auth]\ndisabled = true\n{audit}\n[credentials]\n{credentials}\n\n\
             [[backend]]\nname = \"github\"\nhttp = {{ url = \"http://127.0.0.1:9/mcp\" }}\n"
        );
        std::fs::write(self.path(), text).unwrap();
    }

    fn path(&self) -> PathBuf {
        self.dir.path().join("sentinel.toml")
    }

    fn run(&self, args: &[&str], stdin: &str) -> Output {
        let mut child = Command::new(sentinel_bin())
            .arg("credentials")
            .args(args)
            .arg("-c")
            .arg(self.path())
            .current_dir(self.dir.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child.stdin.take().unwrap().write_all(stdin.as_bytes()).unwrap();
        child.wait_with_output().unwrap()
    }

    fn ok(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(out.status.success(), "{args:?}: {}", String::from_utf8_lossy(&out.stderr));
        String::from_utf8(out.stdout).unwrap()
    }

    fn fails(&self, args: &[&str], stdin: &str) -> String {
        let out = self.run(args, stdin);
        assert!(!out.status.success(), "{args:?} succeeded: {}", String::from_utf8_lossy(&out.stdout));
        String::from_utf8(out.stderr).unwrap()
    }

    /// `sentinel serve` on this config: `Ok` once it listens (then stopped), `Err` with its
    /// stderr when it exits first.
    fn serve(&self) -> Result<(), String> {
        let mut child = Command::new(sentinel_bin())
            .args(["serve", "-c"])
            .arg(self.path())
            .current_dir(self.dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut out, &mut line).unwrap();
        if line.contains("listening on") {
            child.kill().unwrap();
            child.wait().unwrap();
            return Ok(());
        }
        let out = child.wait_with_output().unwrap();
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

fn all_bytes_under(dir: &Path) -> Vec<u8> {
    let mut all = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_file() {
            all.extend(std::fs::read(&p).unwrap());
        } else if p.is_dir() {
            all.extend(all_bytes_under(&p));
        }
    }
    all
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// set, replace, list, remove, as an operator runs them, against the default SQLite store.
#[test]
fn commands_round_trip_and_the_database_holds_ciphertext_only() {
    let s = Setup::new(None);
    let out = s.ok(&["set", "--sub", "alice", "--backend", "github"], &format!("{SECRET}\n"));
    assert!(out.contains("stored the credential of `alice` for `github`"), "{out}");
    std::fs::write(s.dir.path().join("bob.txt"), "bob-token\r\n").unwrap();
    let bob_file = s.dir.path().join("bob.txt");
    s.ok(&["set", "--sub", "bob", "--backend", "github", "--from-file", bob_file.to_str().unwrap()], "");
    let out = s.ok(&["set", "--sub", "alice", "--backend", "github"], SECRET);
    assert!(out.contains("replaced"), "{out}");

    let table = s.ok(&["list"], "");
    assert!(table.contains("alice") && table.contains("bob") && table.contains("github"), "{table}");
    assert!(!table.contains(SECRET) && !table.contains("bob-token"), "list never shows a secret: {table}");
    let json = s.ok(&["list", "--sub", "bob", "--json"], "");
    let rows: Vec<serde_json::Value> = json.lines().map(|l| serde_json::from_str(l).unwrap()).collect();
    assert_eq!(rows.len(), 1, "{json}");
    assert_eq!(rows[0]["subject"], "bob");
    assert_eq!(rows[0]["backend"], "github");

    // Nowhere on disk in the clear: not in the database, its WAL, or anything beside it.
    s.ok(&["list"], "");
    let disk = all_bytes_under(s.dir.path());
    assert!(!contains(&disk, SECRET), "the secret is stored in the clear");
    assert!(contains(&disk, "alice"), "the subject is stored (the scan does see the database)");

    let out = s.ok(&["remove", "--sub", "bob", "--backend", "github"], "");
    assert!(out.contains("removed"), "{out}");
    let err = s.fails(&["remove", "--sub", "bob", "--backend", "github"], "");
    assert!(err.contains("has no credential"), "{err}");
    assert!(!s.ok(&["list"], "").contains("bob"));
}

#[test]
fn bad_input_is_refused_with_what_to_do() {
    let s = Setup::new(None);
    let err = s.fails(&["set", "--sub", "alice", "--backend", "gihub"], SECRET);
    assert!(err.contains("no backend `gihub`") && err.contains("github"), "{err}");
    let err = s.fails(&["set", "--sub", "alice", "--backend", "github"], "\n");
    assert!(err.contains("the secret is empty"), "{err}");
    let err = s.fails(&["set", "--sub", "alice", "--backend", "github"], &"x".repeat(20_000));
    assert!(err.contains("longer than"), "{err}");
    let err = s.fails(&["set", "--sub", "", "--backend", "github"], SECRET);
    assert!(err.contains("--sub must not be empty"), "{err}");
    // No flag takes the secret itself: it would be in the shell's history and `ps`.
    let out = s.run(&["set", "--sub", "a", "--backend", "github", "--secret", SECRET], "");
    assert!(!out.status.success());

    // The key is never written in the config; a missing section says how to add one.
    s.config(None, &format!("key = \"{KEY_A}\""));
    let err = s.fails(&["list"], "");
    assert!(err.contains("must not be written in the config"), "{err}");
    assert!(!err.contains(KEY_A), "the key is not echoed back: {err}");
    s.config(None, "key_file = \"missing.key\"");
    let err = s.fails(&["list"], "");
    assert!(err.contains("cannot read") && err.contains("missing.key"), "{err}");
    std::fs::write(s.dir.path().join("short.key"), "c2hvcnQ=").unwrap();
    s.config(None, "key_file = \"short.key\"");
    let err = s.fails(&["list"], "");
    assert!(err.contains("32 bytes"), "{err}");
    s.config(Some("none"), "key_file = \"a.key\"");
    let err = s.fails(&["list"], "");
    assert!(err.contains("kept in the audit database"), "{err}");
}

#[test]
fn a_key_from_the_environment_works_and_other_commands_do_not_need_it() {
    let s = Setup::new(None);
    s.config(None, "key = \"${SENTINEL_CREDENTIALS_KEY}\"");
    let out = Command::new(sentinel_bin())
        .args(["credentials", "set", "--sub", "alice", "--backend", "github", "-c"])
        .arg(s.path())
        .env("SENTINEL_CREDENTIALS_KEY", KEY_B)
        .stdin(Stdio::piped())
        .output()
        .unwrap();
    // stdin was empty: the key was accepted, and the secret's absence is what is reported.
    assert!(String::from_utf8_lossy(&out.stderr).contains("the secret is empty"), "{out:?}");
    // `sentinel audit` reads records without the credentials key.
    let out = Command::new(sentinel_bin()).args(["audit", "-c"]).arg(s.path()).output().unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

/// A gateway holding the wrong key refuses to start; a rotation keeps every credential usable.
#[test]
fn a_wrong_key_stops_the_start_and_a_rotation_keeps_credentials() {
    let s = Setup::new(None);
    s.ok(&["set", "--sub", "alice", "--backend", "github"], SECRET);
    s.serve().expect("starts with the key that sealed the store");

    s.config(None, "key_file = \"b.key\"");
    let err = s.serve().expect_err("the wrong key must stop the start");
    assert!(err.contains("cannot open") && err.contains("previous_key_file"), "{err}");
    let err = s.fails(&["set", "--sub", "bob", "--backend", "github"], "x");
    assert!(err.contains("cannot open"), "{err}");

    // Rotation: the new key current, the old one previous; rekey; then the old one can go.
    s.config(None, "key_file = \"b.key\"\nprevious_key_file = \"a.key\"");
    s.serve().expect("starts during a rotation");
    let list = s.ok(&["list"], "");
    assert!(list.contains("rekey"), "rows under the previous key are pointed out: {list}");
    let out = s.ok(&["rekey"], "");
    assert!(out.contains("resealed 1 credential"), "{out}");
    assert!(s.ok(&["rekey"], "").contains("resealed 0"));
    s.config(None, "key_file = \"b.key\"");
    s.serve().expect("starts on the new key alone");
    assert!(!s.ok(&["list"], "").contains("rekey"));
    s.config(None, "key_file = \"a.key\"");
    assert!(s.serve().is_err(), "the old key no longer opens the store");
    s.config(None, "key_file = \"a.key\"\nprevious_key_file = \"a.key\"");
    let err = s.fails(&["list"], "");
    assert!(err.contains("same key"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_store_works_on_postgresql_too() {
    let db = PgDb::create().await;
    let s = Setup::new(Some(&db.url));
    let url = db.url.clone();
    let s = tokio::task::spawn_blocking(move || {
        s.ok(&["set", "--sub", "alice", "--backend", "github"], SECRET);
        s.ok(&["set", "--sub", "bob", "--backend", "github"], "other");
        assert!(s.ok(&["list"], "").contains("alice"));
        s.ok(&["remove", "--sub", "bob", "--backend", "github"], "");
        s.config(Some(&url), "key_file = \"b.key\"");
        assert!(s.serve().is_err(), "a wrong key stops the start on PostgreSQL too");
        s
    })
    .await
    .unwrap();
    let sentinel::audit::store::SqlStore::Postgres(pool) = &db.store else { unreachable!() };
    let rows: Vec<(String, Vec<u8>)> =
        sqlx::query_as("SELECT subject, sealed FROM credentials").fetch_all(pool).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0].0, "alice");
    assert!(!contains(&rows[0].1, SECRET), "the column holds ciphertext only");
    assert!(rows[0].1.len() >= SECRET.len() + 12 + 16, "nonce, ciphertext and tag");
    drop(s);
}

#[test]
fn doctor_checks_the_key_files_and_that_the_keys_open_the_store() {
    use std::os::unix::fs::PermissionsExt;
    let s = Setup::new(None);
    s.ok(&["set", "--sub", "alice", "--backend", "github"], SECRET);
    let key = s.dir.path().join("a.key");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o600)).unwrap();
    let doctor = || {
        let out = Command::new(sentinel_bin()).args(["doctor", "-c"]).arg(s.path()).output().unwrap();
        String::from_utf8(out.stdout).unwrap()
    };
    let out = doctor();
    assert!(out.contains("[credentials] key_file") && out.contains("is private"), "{out}");
    assert!(out.contains("credential store: 1 credential(s), every one sealed with a key this config holds"), "{out}");
    std::fs::set_permissions(&key, std::fs::Permissions::from_mode(0o644)).unwrap();
    assert!(!doctor().contains("a.key is private"), "a key readable by others is not passed");
    s.config(None, "key_file = \"b.key\"");
    let out = doctor();
    assert!(out.contains("credential store: the credential store holds credentials this key cannot open"), "{out}");
    assert!(!out.contains(KEY_A) && !out.contains(KEY_B), "keys never printed: {out}");
}
