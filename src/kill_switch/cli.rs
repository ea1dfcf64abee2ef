//! `sentinel kill-switch add|remove|list`: switches tools and backends off on every gateway
//! that shares the audit database, without a restart or a config edit. Each change is itself
//! an audit record (who, what, when, why).

use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::Context;
use clap::{Subcommand, ValueEnum};

use super::{Entry, Kind, POLL_EVERY, store};
use crate::audit::AuditRecord;
use crate::audit::store::SqlStore;
use crate::config::{Config, redact_url};

/// What `add` and `remove` name: a tool glob or a backend.
#[derive(Clone, Copy, ValueEnum)]
pub enum What {
    /// A glob over exposed names: tools, prompts, resource URIs (`exa__deep_*`)
    Tool,
    /// A whole backend, by its name in the config
    Backend,
}

impl From<What> for Kind {
    fn from(w: What) -> Kind {
        match w {
            What::Tool => Kind::Tool,
            What::Backend => Kind::Backend,
        }
    }
}

/// `sentinel kill-switch`'s subcommands.
#[derive(Subcommand)]
pub enum Action {
    /// Switch a tool glob or a backend off on every gateway of this audit database (within 1 s)
    Add {
        #[arg(value_enum)]
        #[allow(missing_docs)] // clap would show a doc comment in --help, which has none for it
        what: What,
        /// The glob or the backend's name
        target: String,
        /// Why: shown by `list` and kept in the audit trail
        #[arg(long)]
        reason: Option<String>,
    },
    /// Switch it on again
    Remove {
        #[arg(value_enum)]
        #[allow(missing_docs)] // clap would show a doc comment in --help, which has none for it
        what: What,
        #[allow(missing_docs)] // clap would show a doc comment in --help, which has none for it
        target: String,
    },
    /// What is switched off: the config's `[kill_switch]` and what was added here, with who and why
    List {
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
}

/// Longest glob, backend name or reason accepted, as the audit trail bounds names.
const MAX_TEXT_BYTES: usize = 256;

/// Runs one `sentinel kill-switch` subcommand against the audit database of `config`.
pub async fn run(config: Config, action: Action) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.audit.url != "none",
        "the run-time kill switch lives in the audit database, and `[audit] url = \"none\"` has none; use \
         `[kill_switch]` in the config (and `sentinel reload`) instead"
    );
    let store = SqlStore::connect(&config.audit.url).await?;
    store.migrate().await?;
    let result = act(&config, &store, action).await;
    store.close().await;
    result
}

async fn act(config: &Config, store: &SqlStore, action: Action) -> anyhow::Result<()> {
    let shown = redact_url(&config.audit.url);
    match action {
        Action::Add { what, target, reason } => {
            let kind = Kind::from(what);
            check_text("the target", &target)?;
            if let Some(r) = &reason {
                check_text("--reason", r)?;
            }
            match kind {
                Kind::Tool => {
                    globset::Glob::new(&target).with_context(|| format!("`{target}` is not a glob"))?;
                }
                Kind::Backend => {
                    if !config.backends.iter().any(|b| b.name == target) {
                        let known: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
                        anyhow::bail!(
                            "the config has no backend `{target}` (it has: {}); check the name",
                            if known.is_empty() { "none".to_string() } else { known.join(", ") }
                        );
                    }
                }
            }
            let e = Entry { kind, target, reason, added_by: operator(), added_ms: now_ms() };
            let was = store::add(store, &e).await?;
            audit(store, "kill_switch/add", &e).await?;
            let why = e.reason.as_deref().map(|r| format!(" ({r})")).unwrap_or_default();
            if was {
                println!("{} `{}` was already off; its entry is updated{why}", kind.as_str(), e.target);
            } else {
                println!(
                    "{} `{}` switched off{why}: every gateway on {shown} refuses it within {} s",
                    kind.as_str(),
                    e.target,
                    (POLL_EVERY * 2).as_secs_f32()
                );
            }
            Ok(())
        }
        Action::Remove { what, target } => {
            let kind = Kind::from(what);
            if store::remove(store, kind, &target).await? {
                let e = Entry { kind, target, reason: None, added_by: operator(), added_ms: now_ms() };
                audit(store, "kill_switch/remove", &e).await?;
                println!("{} `{}` switched on again on every gateway on {shown}", kind.as_str(), e.target);
                return Ok(());
            }
            let in_config = match kind {
                Kind::Tool => config.kill_switch.tools.contains(&target),
                Kind::Backend => config.kill_switch.backends.contains(&target),
            };
            if in_config {
                anyhow::bail!(
                    "{} `{target}` is switched off by `[kill_switch]` in the config: remove it there and run \
                     `sentinel reload`",
                    kind.as_str()
                )
            }
            anyhow::bail!("{} `{target}` is not switched off; `sentinel kill-switch list` shows what is", kind.as_str())
        }
        Action::List { json } => {
            let runtime = store::list(store).await?;
            print_list(config, &runtime, json);
            Ok(())
        }
    }
}

fn check_text(what: &str, v: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!v.is_empty(), "{what} must not be empty");
    anyhow::ensure!(v.len() <= MAX_TEXT_BYTES, "{what} is longer than {MAX_TEXT_BYTES} bytes");
    anyhow::ensure!(!v.chars().any(char::is_control), "{what} must not hold control characters");
    Ok(())
}

/// Who ran the command: the login name and the host, as far as this process can tell.
pub(crate) fn operator() -> String {
    let user = ["USER", "LOGNAME"]
        .into_iter()
        .find_map(|k| std::env::var(k).ok().filter(|v| !v.is_empty()))
        .unwrap_or_else(login_name);
    match crate::replica::host_name() {
        Some(host) => format!("{user}@{host}"),
        None => user,
    }
}

/// The name of this process's user from the password database, else `uid N`.
#[allow(unsafe_code)]
fn login_name() -> String {
    // SAFETY: getuid has no preconditions and cannot fail.
    let uid = unsafe { libc::getuid() };
    // SAFETY: `passwd` is a C struct of integers and pointers, for which all zeroes (null
    // pointers) is a valid value; none is read before getpwuid_r fills it.
    let mut pwd: libc::passwd = unsafe { std::mem::zeroed() };
    let mut buf = vec![0 as libc::c_char; 4096];
    let mut found: *mut libc::passwd = std::ptr::null_mut();
    // SAFETY: every pointer is to a live local of the size passed; getpwuid_r writes only
    // within them and sets `found` to `&pwd` or null.
    let rc = unsafe { libc::getpwuid_r(uid, &mut pwd, buf.as_mut_ptr(), buf.len(), &mut found) };
    if rc == 0 && !found.is_null() && !pwd.pw_name.is_null() {
        // SAFETY: on success pw_name points to a NUL-terminated string inside `buf`.
        let name = unsafe { std::ffi::CStr::from_ptr(pwd.pw_name) };
        return name.to_string_lossy().into_owned();
    }
    format!("uid {uid}")
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as i64)
}

/// The change as an audit record: `sentinel audit --tool GLOB` (or `--backend`) finds it.
async fn audit(store: &SqlStore, method: &str, e: &Entry) -> anyhow::Result<()> {
    let mut r = AuditRecord::start(method, "cli", Some(&e.added_by), &[], None);
    r.method = method.to_string();
    match e.kind {
        Kind::Tool => r.tool = Some(e.target.clone()),
        Kind::Backend => r.backend = Some(e.target.clone()),
    }
    r.arguments = Some(serde_json::json!({ "kind": e.kind, "target": e.target, "reason": e.reason }).to_string());
    store.insert_batch(&[r]).await.context("the change was made, but its audit record could not be stored")
}

fn print_list(config: &Config, runtime: &[Entry], json: bool) {
    let baseline = config
        .kill_switch
        .tools
        .iter()
        .map(|t| (Kind::Tool, t))
        .chain(config.kill_switch.backends.iter().map(|b| (Kind::Backend, b)));
    if json {
        for (kind, target) in baseline {
            println!("{}", serde_json::json!({ "kind": kind, "target": target, "source": "config" }));
        }
        for e in runtime {
            let mut v = serde_json::to_value(e).expect("plain fields");
            v["source"] = "kill-switch".into();
            println!("{v}");
        }
        return;
    }
    let mut rows: Vec<[String; 5]> = baseline
        .map(|(kind, target)| {
            [kind.as_str().into(), target.clone(), "config ([kill_switch])".into(), String::new(), String::new()]
        })
        .collect();
    for e in runtime {
        let when = UNIX_EPOCH + std::time::Duration::from_millis(e.added_ms.max(0) as u64);
        rows.push([
            e.kind.as_str().into(),
            e.target.clone(),
            e.added_by.clone(),
            humantime::format_rfc3339_seconds(when).to_string(),
            e.reason.clone().unwrap_or_default(),
        ]);
    }
    if rows.is_empty() {
        println!("nothing is switched off");
        return;
    }
    let header = ["KIND", "TARGET", "BY", "SINCE (UTC)", "REASON"];
    let width = |i: usize| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    println!("{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}", header[0], header[1], header[2], header[3], header[4]);
    for r in rows {
        println!("{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}", r[0], r[1], r[2], r[3], r[4]);
    }
}
