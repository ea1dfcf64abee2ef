//! `[credentials]`: the key that seals per-user backend credentials in the audit database.
//!
//! The key is never written in the config: it comes from a file (`key_file`) or from the
//! environment (`key = "${SENTINEL_CREDENTIALS_KEY}"`); a literal `key` is refused. Its files
//! are read only by the commands that use the credential store, so `sentinel audit` or `token`
//! run by someone who may not read the key still work.

use std::path::Path;
use std::sync::Arc;

use serde::Deserialize;

use super::source::{Needs, Problem, Source};
use super::{AuditConfig, key};
use crate::credentials::{CredentialKey, Keys};

#[derive(Debug, Default, Deserialize)]
pub struct RawCredentials {
    pub key_file: Option<String>,
    pub key: Option<String>,
    pub previous_key_file: Option<String>,
    /// The token role that may use `/admin/credentials`; none: the endpoint is off.
    pub admin_role: Option<String>,
}

/// The keys of `[credentials]`, read and checked; `None` without the section, or when the
/// command does not need them.
pub fn credentials(
    src: &Source,
    raw: Option<RawCredentials>,
    needs: Needs,
    base: &Path,
    audit: &AuditConfig,
    problems: &mut Vec<Problem>,
) -> Option<Arc<Keys>> {
    let raw = raw?;
    let at = |k: &str| key(&["credentials", k]);
    if audit.url == "none" {
        problems.push(src.problem(
            &at("key_file"),
            "credentials are kept in the audit database, and `[audit] url = \"none\"` has none; set `[audit] url`",
        ));
        return None;
    }
    if !needs.covers("credentials") {
        return None;
    }
    let read = |k: &str, file: &str, problems: &mut Vec<Problem>| -> Option<CredentialKey> {
        let p = Path::new(file);
        let p = if p.is_absolute() { p.to_path_buf() } else { base.join(p) };
        match std::fs::read_to_string(&p) {
            Ok(text) => match CredentialKey::parse(&text) {
                Ok(key) => Some(key),
                Err(e) => {
                    problems.push(src.problem(&at(k), format!("`{}` does not hold a key: {e}", p.display())));
                    None
                }
            },
            Err(e) => {
                problems.push(src.problem(&at(k), format!("cannot read `{}`: {e}", p.display())));
                None
            }
        }
    };
    let current = match (&raw.key_file, &raw.key) {
        (Some(_), Some(_)) => {
            problems.push(src.problem(&at("key"), "set `key_file` or `key`, not both"));
            return None;
        }
        (None, None) => {
            problems.push(src.problem(
                &at("key_file"),
                "`[credentials]` needs its key: `key_file = \"/run/secrets/sentinel_credentials\"` or \
                 `key = \"${SENTINEL_CREDENTIALS_KEY}\"` (make one with `openssl rand -base64 32`)",
            ));
            return None;
        }
        (Some(f), None) => read("key_file", f, problems)?,
        (None, Some(text)) => {
            if !src.raw_string(&at("key")).is_some_and(|r| r.contains("${")) {
                problems.push(src.problem(
                    &at("key"),
                    "the key must not be written in the config; write \"${SENTINEL_CREDENTIALS_KEY}\" or use `key_file`",
                ));
                return None;
            }
            match CredentialKey::parse(text) {
                Ok(k) => k,
                Err(e) => {
                    problems.push(src.problem(&at("key"), format!("the variable does not hold a key: {e}")));
                    return None;
                }
            }
        }
    };
    let previous = match &raw.previous_key_file {
        None => None,
        Some(f) => {
            let previous = read("previous_key_file", f, problems)?;
            if previous.id() == current.id() {
                problems.push(src.problem(
                    &at("previous_key_file"),
                    "holds the same key as the current one; during a rotation it names the key before",
                ));
                return None;
            }
            Some(previous)
        }
    };
    Some(Arc::new(Keys { current, previous }))
}
