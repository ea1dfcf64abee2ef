//! `sentinel credentials set|remove|list|rekey`: the operator's side of the credential store.
//!
//! A secret is read from stdin or a file, never from the command line, where it would be in
//! the shell's history and in every process listing; `list` never prints one.

use std::io::{IsTerminal, Read};
use std::path::PathBuf;

use anyhow::Context;
use clap::Subcommand;

use super::{MAX_SECRET_BYTES, store};
use crate::audit::store::SqlStore;
use crate::config::{Config, redact_url};

/// `sentinel credentials`'s subcommands.
#[derive(Subcommand)]
pub enum Action {
    /// Store a user's credential for a backend: the secret from stdin (or --from-file), sealed
    /// with `[credentials]`'s key; replaces one set before
    Set {
        /// The user: the `sub` of their token
        #[arg(long)]
        sub: String,
        /// The backend, by its name in the config
        #[arg(long)]
        backend: String,
        /// Read the secret from this file instead of stdin (one trailing newline is dropped)
        #[arg(long)]
        from_file: Option<PathBuf>,
    },
    /// Remove a user's credential for a backend
    Remove {
        #[arg(long)]
        #[allow(missing_docs)] // clap would show a doc comment in --help, which has none for it
        sub: String,
        #[arg(long)]
        #[allow(missing_docs)] // clap would show a doc comment in --help, which has none for it
        backend: String,
    },
    /// Show who has a credential for which backend (never the secret)
    List {
        /// Only this user
        #[arg(long)]
        sub: Option<String>,
        /// Only this backend
        #[arg(long)]
        backend: Option<String>,
        /// One JSON object per line instead of a table
        #[arg(long)]
        json: bool,
    },
    /// Seal every credential anew under `key_file`'s key, after a rotation (the old key named
    /// by `previous_key_file`, which can be removed afterwards)
    Rekey,
}

/// The longest subject or backend name accepted, as the audit trail bounds them.
const MAX_NAME_BYTES: usize = 256;

/// Runs one `sentinel credentials` subcommand against the store in `config`'s audit database.
pub async fn run(config: Config, action: Action) -> anyhow::Result<()> {
    let keys = config.credentials.clone().context(
        "this config has no `[credentials]` section: add one with `key_file` (make the key with `openssl rand \
         -base64 32 > FILE`; see docs/credentials.md)",
    )?;
    let store = SqlStore::connect(&config.audit.url).await?;
    store.migrate().await?;
    let shown = redact_url(&config.audit.url);
    let result = match action {
        Action::Set { sub, backend, from_file } => {
            name("--sub", &sub)?;
            name("--backend", &backend)?;
            if !config.backends.iter().any(|b| b.name == backend) {
                let known: Vec<&str> = config.backends.iter().map(|b| b.name.as_str()).collect();
                anyhow::bail!(
                    "the config has no backend `{backend}` (it has: {}); check the name",
                    if known.is_empty() { "none".to_string() } else { known.join(", ") }
                );
            }
            let secret = read_secret(from_file.as_deref(), &sub, &backend)?;
            store::verify(&store, &keys).await?;
            let replaced = store::set(&store, &keys, &sub, &backend, &secret).await?;
            let verb = if replaced { "replaced" } else { "stored" };
            println!(
                "{verb} the credential of `{sub}` for `{backend}` in {shown} (sealed with key {})",
                keys.current.id()
            );
            Ok(())
        }
        Action::Remove { sub, backend } => {
            if store::remove(&store, &sub, &backend).await? {
                println!("removed the credential of `{sub}` for `{backend}` from {shown}");
                Ok(())
            } else {
                Err(anyhow::anyhow!("`{sub}` has no credential for `{backend}` in {shown}; nothing removed"))
            }
        }
        Action::List { sub, backend, json } => {
            let entries = store::list(&store, sub.as_deref(), backend.as_deref()).await?;
            print_list(&entries, &keys, json);
            Ok(())
        }
        Action::Rekey => {
            let n = store::reseal(&store, &keys).await?;
            println!("resealed {n} credential{} under key {}", if n == 1 { "" } else { "s" }, keys.current.id());
            if keys.previous.is_some() {
                println!("every credential is now under the current key: `previous_key_file` can be removed");
            }
            Ok(())
        }
    };
    store.close().await;
    result
}

fn name(flag: &str, v: &str) -> anyhow::Result<()> {
    anyhow::ensure!(!v.is_empty(), "{flag} must not be empty");
    anyhow::ensure!(v.len() <= MAX_NAME_BYTES, "{flag} is longer than {MAX_NAME_BYTES} bytes");
    anyhow::ensure!(!v.chars().any(char::is_control), "{flag} must not hold control characters");
    Ok(())
}

/// The secret from the file, from a terminal without echo, or from piped stdin; one trailing
/// newline dropped (what `echo` and editors add), nothing else changed.
fn read_secret(file: Option<&std::path::Path>, sub: &str, backend: &str) -> anyhow::Result<Vec<u8>> {
    let mut bytes = Vec::new();
    match file {
        Some(f) => {
            let mut fh = std::fs::File::open(f).with_context(|| format!("cannot read {}", f.display()))?;
            fh.by_ref().take(MAX_SECRET_BYTES as u64 + 3).read_to_end(&mut bytes)?;
        }
        None if std::io::stdin().is_terminal() => {
            let prompt = format!("credential of `{sub}` for `{backend}` (not echoed): ");
            bytes =
                rpassword::prompt_password(prompt).context("cannot read the secret from the terminal")?.into_bytes();
        }
        None => {
            std::io::stdin().take(MAX_SECRET_BYTES as u64 + 3).read_to_end(&mut bytes)?;
        }
    }
    if bytes.ends_with(b"\r\n") {
        bytes.truncate(bytes.len() - 2);
    } else if bytes.ends_with(b"\n") {
        bytes.pop();
    }
    anyhow::ensure!(
        !bytes.is_empty(),
        "the secret is empty; pipe it in (`sentinel credentials set ... < FILE`) or use --from-file"
    );
    anyhow::ensure!(
        bytes.len() <= MAX_SECRET_BYTES,
        "the secret is longer than {MAX_SECRET_BYTES} bytes; is that the right file?"
    );
    Ok(bytes)
}

fn print_list(entries: &[store::Entry], keys: &super::Keys, json: bool) {
    if json {
        for e in entries {
            println!("{}", serde_json::to_string(e).expect("plain fields"));
        }
        return;
    }
    if entries.is_empty() {
        println!("no credentials stored");
        return;
    }
    let w_sub = entries.iter().map(|e| e.subject.len()).max().unwrap_or(0).max(7);
    let w_back = entries.iter().map(|e| e.backend.len()).max().unwrap_or(0).max(7);
    println!("{:w_back$}  {:w_sub$}  {:24}  KEY", "BACKEND", "SUBJECT", "UPDATED (UTC)");
    for e in entries {
        let when = std::time::UNIX_EPOCH + std::time::Duration::from_millis(e.updated_ms.max(0) as u64);
        let when = humantime::format_rfc3339_seconds(when).to_string();
        let note = if e.key_id == keys.current.id() {
            ""
        } else if keys.holds(&e.key_id) {
            "  (previous key: run `sentinel credentials rekey`)"
        } else {
            "  (a key this config does not hold: it cannot be opened)"
        };
        println!("{:w_back$}  {:w_sub$}  {:24}  {}{note}", e.backend, e.subject, when, e.key_id);
    }
}
