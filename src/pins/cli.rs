//! `sentinel pins list|diff|approve`: reviews the tool definitions pinned in the audit database
//! and approves the changes backends made, on every gateway of that database at once. Each
//! approval is itself an audit record (who, which tool, which definition).

use anyhow::Context;
use clap::Subcommand;

use super::store::{self, Pin};
use crate::audit::AuditRecord;
use crate::audit::store::SqlStore;
use crate::config::Config;

/// `sentinel pins`' subcommands.
#[derive(Subcommand)]
pub enum Action {
    /// Every pinned tool, and which changed since it was pinned
    List {
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
        /// Only tools whose backend served a changed definition
        #[arg(long)]
        changed: bool,
    },
    /// The pinned definition against the changed one, line by line
    Diff {
        /// The tool: its exposed name, or its name at the backend
        tool: String,
        /// Its backend, when the name alone is ambiguous
        #[arg(long)]
        backend: Option<String>,
    },
    /// Make the changed definition the pin: held tools are served again within about a second
    Approve {
        /// The tool: its exposed name, or its name at the backend (or --backend alone: every
        /// changed tool of that backend)
        #[arg(required_unless_present = "backend")]
        tool: Option<String>,
        /// Only this backend's tools
        #[arg(long)]
        backend: Option<String>,
    },
}

/// Runs one `sentinel pins` subcommand against the audit database of `config`.
pub async fn run(config: Config, action: Action) -> anyhow::Result<()> {
    anyhow::ensure!(
        config.audit.url != "none",
        "pins live in the audit database, and `[audit] url = \"none\"` has none: the gateway keeps them in memory \
         only, and a restart pins what backends serve then"
    );
    let db = SqlStore::connect(&config.audit.url).await?;
    db.migrate().await?;
    let result = act(&db, action).await;
    db.close().await;
    result
}

/// The pins a name (and backend) selects: by exposed name, else by the backend's own name.
fn select<'a>(pins: &'a [Pin], tool: Option<&str>, backend: Option<&str>) -> Vec<&'a Pin> {
    let of_backend = |p: &&Pin| backend.is_none_or(|b| p.backend == b);
    let Some(tool) = tool else { return pins.iter().filter(of_backend).collect() };
    let exposed: Vec<&Pin> = pins.iter().filter(of_backend).filter(|p| p.exposed == tool).collect();
    if !exposed.is_empty() {
        return exposed;
    }
    pins.iter().filter(of_backend).filter(|p| p.tool == tool).collect()
}

fn one<'a>(pins: &'a [Pin], tool: &str, backend: Option<&str>) -> anyhow::Result<&'a Pin> {
    match select(pins, Some(tool), backend).as_slice() {
        [p] => Ok(p),
        [] => anyhow::bail!("no pinned tool `{tool}`; `sentinel pins list` shows them"),
        many => {
            let backends: Vec<&str> = many.iter().map(|p| p.backend.as_str()).collect();
            anyhow::bail!("`{tool}` names a tool of several backends ({}); add --backend", backends.join(", "))
        }
    }
}

async fn act(db: &SqlStore, action: Action) -> anyhow::Result<()> {
    let pins = store::list(db).await?;
    match action {
        Action::List { json, changed } => {
            let shown: Vec<&Pin> = pins.iter().filter(|p| !changed || p.pending.is_some()).collect();
            print_list(&shown, json);
            Ok(())
        }
        Action::Diff { tool, backend } => {
            let p = one(&pins, &tool, backend.as_deref())?;
            let Some(c) = &p.pending else {
                println!("`{}` of `{}` serves its pinned definition (pinned by {})", p.exposed, p.backend, p.pinned_by);
                return Ok(());
            };
            println!("--- pinned  {} ({})", short(&p.hash), p.pinned_by);
            println!("+++ served  {} (seen by {})", short(&c.new_hash), c.seen_by);
            print!("{}", diff(&pretty(&p.definition), &pretty(&c.new_definition)));
            Ok(())
        }
        Action::Approve { tool, backend } => {
            let chosen: Vec<&Pin> = match &tool {
                Some(t) => vec![one(&pins, t, backend.as_deref())?],
                None => select(&pins, None, backend.as_deref()),
            };
            let by = crate::kill_switch::cli::operator();
            let mut approved = 0;
            for p in chosen {
                if store::approve(db, p, &by).await? {
                    audit(db, &by, p).await?;
                    println!("approved `{}` of `{}`: {} -> {}", p.exposed, p.backend, short(&p.hash), {
                        short(&p.pending.as_ref().expect("approved a pending change").new_hash)
                    });
                    approved += 1;
                }
            }
            match (approved, tool) {
                (0, Some(t)) => println!("`{t}` has no changed definition to approve"),
                (0, None) => println!("no changed definition to approve"),
                _ => println!(
                    "every gateway on this audit database serves the approved definitions within {} s",
                    (super::POLL_EVERY * 2).as_secs()
                ),
            }
            Ok(())
        }
    }
}

fn short(hash: &str) -> &str {
    &hash[..hash.len().min(12)]
}

fn pretty(json: &str) -> String {
    serde_json::from_str::<serde_json::Value>(json)
        .and_then(|v| serde_json::to_string_pretty(&v))
        .unwrap_or_else(|_| json.to_string())
}

/// A line diff of two short texts (a longest common subsequence; definitions are a few dozen
/// lines, so the quadratic table is small and no diff crate is needed).
fn diff(a: &str, b: &str) -> String {
    let (a, b): (Vec<&str>, Vec<&str>) = (a.lines().collect(), b.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] { lcs[i + 1][j + 1] + 1 } else { lcs[i + 1][j].max(lcs[i][j + 1]) };
        }
    }
    let (mut i, mut j, mut out) = (0, 0, String::new());
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            out.push_str(&format!("  {}\n", a[i]));
            (i, j) = (i + 1, j + 1);
        } else if j < b.len() && (i == a.len() || lcs[i][j + 1] >= lcs[i + 1][j]) {
            out.push_str(&format!("+ {}\n", b[j]));
            j += 1;
        } else {
            out.push_str(&format!("- {}\n", a[i]));
            i += 1;
        }
    }
    out
}

/// The approval as an audit record: `sentinel audit --tool NAME` finds it.
async fn audit(db: &SqlStore, by: &str, p: &Pin) -> anyhow::Result<()> {
    let method = "pins/approve";
    let mut r = AuditRecord::start(method, "cli", Some(by), &[], None);
    r.method = method.to_string();
    r.tool = Some(p.exposed.clone());
    r.backend = Some(p.backend.clone());
    let new = p.pending.as_ref().map(|c| c.new_hash.as_str());
    r.arguments = Some(serde_json::json!({ "tool": p.tool, "old_hash": p.hash, "new_hash": new }).to_string());
    db.insert_batch(&[r]).await.context("the approval was made, but its audit record could not be stored")
}

fn print_list(pins: &[&Pin], json: bool) {
    if json {
        for p in pins {
            let mut v = serde_json::json!({
                "backend": p.backend, "tool": p.tool, "exposed": p.exposed, "hash": p.hash,
                "pinned_ms": p.pinned_ms, "pinned_by": p.pinned_by,
                "status": if p.pending.is_some() { "changed" } else { "pinned" },
            });
            if let Some(c) = &p.pending {
                v["new_hash"] = c.new_hash.clone().into();
                v["seen_ms"] = c.seen_ms.into();
                v["seen_by"] = c.seen_by.clone().into();
            }
            println!("{v}");
        }
        return;
    }
    if pins.is_empty() {
        println!("no pinned tools");
        return;
    }
    let when = |ms: i64| {
        let t = std::time::UNIX_EPOCH + std::time::Duration::from_millis(ms.max(0) as u64);
        humantime::format_rfc3339_seconds(t).to_string()
    };
    let rows: Vec<[String; 5]> = pins
        .iter()
        .map(|p| {
            let status = match &p.pending {
                Some(c) => format!("CHANGED {} (seen {})", short(&c.new_hash), when(c.seen_ms)),
                None => "pinned".into(),
            };
            [p.exposed.clone(), p.backend.clone(), short(&p.hash).into(), when(p.pinned_ms), status]
        })
        .collect();
    let header = ["TOOL", "BACKEND", "PIN", "PINNED (UTC)", "STATUS"];
    let width = |i: usize| rows.iter().map(|r| r[i].len()).chain([header[i].len()]).max().unwrap_or(0);
    let (w0, w1, w2, w3) = (width(0), width(1), width(2), width(3));
    println!("{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}", header[0], header[1], header[2], header[3], header[4]);
    for r in rows {
        println!("{:w0$}  {:w1$}  {:w2$}  {:w3$}  {}", r[0], r[1], r[2], r[3], r[4]);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn diff_marks_changed_lines() {
        let d = super::diff("a\nb\nc", "a\nx\nc");
        assert_eq!(d, "  a\n+ x\n- b\n  c\n");
    }
}
