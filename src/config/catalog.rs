//! The catalog-governance sections of the config (issue #17): `[[profile]]` (virtual servers
//! at `/mcp/<name>`), `[tool_overrides."<exposed>"]`, `[pinning]`, and the discovery mode
//! (`[server] discovery`, or per profile), from raw TOML to typed settings.

use indexmap::IndexMap;
use serde::Deserialize;

use super::key;
use super::source::{Problem, Source};

#[derive(Debug, Default, Deserialize)]
pub struct RawProfile {
    pub name: String,
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
    pub discovery: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawOverride {
    pub name: Option<String>,
    pub title: Option<String>,
    pub description: Option<String>,
    pub annotations: Option<toml::Table>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawPinning {
    pub mode: Option<String>,
}

/// What a caller's `tools/list` holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Discovery {
    /// Every tool the caller may use, with its full definition.
    #[default]
    Full,
    /// Only `search_tools`, `describe_tools` and `call_tool` (a large catalog costs a model
    /// a few hundred tokens instead of tens of thousands on every turn).
    Meta,
}

/// One `[[profile]]`: a virtual server at `/mcp/<name>` (and `sentinel stdio --profile`).
#[derive(Debug, Clone, PartialEq)]
pub struct ProfileConfig {
    /// Its name, the last segment of its path.
    pub name: String,
    /// Globs over exposed tool and prompt names and resource URIs the profile shows.
    pub allow: Vec<String>,
    /// Globs it hides, whatever `allow` says.
    pub deny: Vec<String>,
    /// Its `tools/list`: full, or the meta tools only; `None`: as `[server] discovery`.
    pub discovery: Option<Discovery>,
}

/// One `[tool_overrides."<exposed name>"]`: what clients see of a tool instead of what its
/// backend listed. The backend still receives its own name; pinning judges its own definition.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ToolOverride {
    /// Exposed under this name instead.
    pub name: Option<String>,
    /// Replaces `title`.
    pub title: Option<String>,
    /// Replaces `description`.
    pub description: Option<String>,
    /// Each key replaces the backend's annotation of that key (JSON).
    pub annotations: Option<serde_json::Map<String, serde_json::Value>>,
}

/// What happens when a backend serves a tool definition that differs from its pin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PinMode {
    /// Serve the new definition; record and alert.
    Alert,
    /// Record and alert, keep the tool out of lists and refuse its calls (-32017) until
    /// `sentinel pins approve`.
    Hold,
}

/// `[pinning]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PinningConfig {
    /// Alert only, or hold changed tools.
    pub mode: PinMode,
}

impl Default for PinningConfig {
    /// Without the section: alert. Existing installs keep serving what they served; the
    /// templates for new installs write `mode = "hold"`.
    fn default() -> Self {
        PinningConfig { mode: PinMode::Alert }
    }
}

pub fn discovery(src: &Source, at: &[String], raw: Option<&str>, problems: &mut Vec<Problem>) -> Option<Discovery> {
    match raw? {
        "full" => Some(Discovery::Full),
        "meta" => Some(Discovery::Meta),
        other => {
            problems.push(src.problem(at, format!("`{other}` is not one of \"full\", \"meta\"")));
            None
        }
    }
}

/// A profile name is a URL path segment and a metric label: kept to letters, digits, `-`, `_`.
fn profile_name_ok(n: &str) -> bool {
    !n.is_empty() && n.len() <= 64 && n.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

pub fn profiles(src: &Source, raw: Vec<RawProfile>, problems: &mut Vec<Problem>) -> Vec<ProfileConfig> {
    let mut out: Vec<ProfileConfig> = Vec::new();
    for (i, p) in raw.into_iter().enumerate() {
        let at = |k: &str| key(&["profile", &i.to_string(), k]);
        if !profile_name_ok(&p.name) {
            problems.push(src.problem(
                &at("name"),
                format!("`{}` is not a profile name: use 1 to 64 letters, digits, `-` or `_`", p.name),
            ));
        } else if out.iter().any(|o| o.name == p.name) {
            problems.push(src.problem(&at("name"), format!("profile `{}` is defined twice", p.name)));
        }
        for (list, globs) in [("allow", &p.allow), ("deny", &p.deny)] {
            for (j, g) in globs.iter().enumerate() {
                if let Err(e) = globset::Glob::new(g) {
                    problems.push(src.problem(
                        &key(&["profile", &i.to_string(), list, &j.to_string()]),
                        format!("`{g}` is not a valid glob: {e}"),
                    ));
                }
            }
        }
        let discovery = discovery(src, &at("discovery"), p.discovery.as_deref(), problems);
        out.push(ProfileConfig { name: p.name, allow: p.allow, deny: p.deny, discovery });
    }
    out
}

pub fn overrides(
    src: &Source,
    raw: IndexMap<String, RawOverride>,
    problems: &mut Vec<Problem>,
) -> IndexMap<String, ToolOverride> {
    let mut out = IndexMap::new();
    let mut renamed: IndexMap<String, String> = IndexMap::new();
    for (tool, o) in raw {
        let at = |k: &str| key(&["tool_overrides", &tool, k]);
        if let Some(n) = &o.name {
            if n.is_empty() || n.len() > 128 || n.chars().any(|c| c.is_control() || c.is_whitespace()) {
                problems.push(src.problem(&at("name"), format!("`{n}` is not a tool name")));
            } else if let Some(first) = renamed.insert(n.clone(), tool.clone()) {
                problems.push(
                    src.problem(&at("name"), format!("`{first}` is already exposed as `{n}`; names must be unique")),
                );
            }
        }
        let annotations = o.annotations.map(|t| match serde_json::to_value(t) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => serde_json::Map::new(),
        });
        out.insert(
            tool.clone(),
            ToolOverride { name: o.name, title: o.title, description: o.description, annotations },
        );
    }
    out
}

pub fn pinning(src: &Source, raw: Option<RawPinning>, problems: &mut Vec<Problem>) -> PinningConfig {
    let Some(p) = raw else { return PinningConfig::default() };
    let mode = match p.mode.as_deref() {
        None | Some("alert") => PinMode::Alert,
        Some("hold") => PinMode::Hold,
        Some(other) => {
            problems
                .push(src.problem(&key(&["pinning", "mode"]), format!("`{other}` is not one of \"alert\", \"hold\"")));
            PinMode::Alert
        }
    };
    PinningConfig { mode }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn parse(text: &str) -> Result<Config, crate::config::ConfigError> {
        Config::parse("t.toml", &format!("[auth]\ndisabled = true\n{text}"), None, &|_| None)
    }

    #[test]
    fn profiles_overrides_and_pinning_are_read_and_checked_with_their_lines() {
        let c = parse(
            "[server]\ndiscovery = \"meta\"\n[pinning]\nmode = \"hold\"\n[roles.bot]\nallow = [\"*\"]\nprofiles = [\"r\"]\n\
             [[profile]]\nname = \"r\"\nallow = [\"a__*\"]\ndiscovery = \"full\"\n\
             [tool_overrides.\"a__x\"]\nname = \"x\"\nannotations = { readOnlyHint = true }\n",
        )
        .unwrap();
        assert_eq!(c.server.discovery, Discovery::Meta);
        assert_eq!(c.pinning.mode, PinMode::Hold);
        assert_eq!(c.profiles[0].discovery, Some(Discovery::Full));
        assert_eq!(c.roles[0].profiles.as_deref(), Some(&["r".to_string()][..]));
        let o = &c.tool_overrides["a__x"];
        assert_eq!(
            (o.name.as_deref(), o.annotations.as_ref().unwrap()["readOnlyHint"].as_bool()),
            (Some("x"), Some(true))
        );
        assert_eq!(parse("").unwrap().pinning.mode, PinMode::Alert, "no section: alert, as before");

        let err = parse(
            "[pinning]\nmode = \"maybe\"\n[roles.bot]\nprofiles = [\"nope\"]\n[[profile]]\nname = \"a b\"\ndiscovery = \"some\"\n\
             [[profile]]\nname = \"r\"\nallow = [\"[\"]\n[[profile]]\nname = \"r\"\n\
             [tool_overrides.\"a__x\"]\nname = \"y\"\n[tool_overrides.\"a__z\"]\nname = \"y\"\n",
        )
        .unwrap_err()
        .to_string();
        for want in [
            "t.toml:4: `pinning.mode`",
            "no [[profile]] named `nope`",
            "`a b` is not a profile name",
            "`some` is not one of",
            "not a valid glob",
            "profile `r` is defined twice",
            "`a__x` is already exposed as `y`",
        ] {
            assert!(err.contains(want), "missing {want:?} in:\n{err}");
        }
    }
}
