//! Who may use what: role-based access over exposed names (narrowed by the `[[profile]]` a
//! request came in by), the kill switch, and tools held by pinning. Each answers with one
//! predicate, used alike to filter lists and to gate calls, so a client is never shown
//! something it may not use, nor allowed something it is not shown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{Config, Discovery, KillSwitchConfig, PinMode, ProfileConfig, RoleConfig, ValidationConfig};

/// The reloadable policy of one config version: roles, kill switch, validation mode.
pub struct Policy {
    /// Who may see and call what.
    pub rbac: Rbac,
    /// What is switched off.
    pub kill: KillSwitch,
    /// Whether and how tool arguments are checked against their schemas.
    pub validation: ValidationConfig,
    /// What a changed tool definition does (`[pinning] mode`).
    pub pin_mode: PinMode,
    /// `tools/list` at `/mcp` (`[server] discovery`).
    pub discovery: Discovery,
}

impl Policy {
    /// The policy of `c`, with the run-time kill switch `runtime` (kept across reloads).
    pub fn from_config(c: &Config, runtime: Arc<crate::kill_switch::Runtime>) -> Result<Policy, PolicyError> {
        Ok(Policy {
            rbac: Rbac::new(&c.roles, &c.profiles)?,
            kill: KillSwitch::new(&c.kill_switch, runtime)?,
            validation: c.validation,
            pin_mode: c.pinning.mode,
            discovery: c.server.discovery,
        })
    }

    /// What `tools/list` holds for a caller who came in by `access`'s profile.
    pub fn discovery(&self, access: &Access) -> Discovery {
        access
            .profile
            .as_deref()
            .and_then(|p| self.rbac.profiles.get(p))
            .and_then(|p| p.discovery)
            .unwrap_or(self.discovery)
    }

    /// Whether a profile of that name is configured.
    pub fn has_profile(&self, name: &str) -> bool {
        self.rbac.profiles.contains_key(name)
    }

    /// The one visibility predicate for lists: not switched off, and allowed for the caller.
    pub fn visible(&self, access: &Access, name: &str, backend: &str) -> bool {
        !self.kill.is_killed(name, backend) && self.rbac.allows(access, name)
    }
}

/// A role or kill-switch glob that does not compile: the config cannot become a policy.
#[derive(Debug, thiserror::Error)]
pub enum PolicyError {
    /// One glob does not parse.
    #[error("`{glob}`: {source}")]
    BadGlob {
        /// The glob as written.
        glob: String,
        /// globset's reason.
        source: globset::Error,
    },
    /// The globs parse but do not build into one matcher.
    #[error("{0}")]
    GlobSet(globset::Error),
}

fn globset(globs: &[String]) -> Result<GlobSet, PolicyError> {
    let mut b = GlobSetBuilder::new();
    for g in globs {
        b.add(Glob::new(g).map_err(|source| PolicyError::BadGlob { glob: g.clone(), source })?);
    }
    b.build().map_err(PolicyError::GlobSet)
}

/// What a caller may reach: who it is, and the `[[profile]]` it came in by.
#[derive(Debug, Clone)]
pub struct Access {
    who: Who,
    /// The profile of the endpoint (`/mcp/<profile>`, `sentinel stdio --profile`); `None` at `/mcp`.
    pub profile: Option<Box<str>>,
}

#[derive(Debug, Clone)]
enum Who {
    /// Authentication is disabled (loopback only): everything not killed.
    Unrestricted,
    /// The caller's roles from its token.
    Roles(Vec<String>),
}

impl Access {
    /// Authentication is disabled (loopback only): everything not killed.
    pub fn unrestricted() -> Access {
        Access { who: Who::Unrestricted, profile: None }
    }

    /// The caller's roles from its token.
    pub fn roles(roles: Vec<String>) -> Access {
        Access { who: Who::Roles(roles), profile: None }
    }

    /// The same caller, come in by `profile`'s endpoint.
    pub fn in_profile(mut self, profile: Option<&str>) -> Access {
        self.profile = profile.map(Into::into);
        self
    }
}

struct Role {
    allow: GlobSet,
    deny: GlobSet,
    /// The profiles where the role grants anything; `None`: everywhere.
    profiles: Option<HashSet<String>>,
}

/// A `[[profile]]` compiled: what it shows, and its `tools/list`.
struct Profile {
    allow: GlobSet,
    deny: GlobSet,
    discovery: Option<Discovery>,
}

/// Allow and deny globs per role, over exposed tool and prompt names and resource URIs, and
/// the profiles that narrow them.
pub struct Rbac {
    roles: HashMap<String, Role>,
    profiles: HashMap<String, Profile>,
}

impl Rbac {
    /// Compiles every role's and profile's allow and deny globs.
    pub fn new(roles: &[RoleConfig], profiles: &[ProfileConfig]) -> Result<Rbac, PolicyError> {
        let roles = roles
            .iter()
            .map(|r| {
                let profiles = r.profiles.as_ref().map(|p| p.iter().cloned().collect());
                Ok((r.name.clone(), Role { allow: globset(&r.allow)?, deny: globset(&r.deny)?, profiles }))
            })
            .collect::<Result<_, PolicyError>>()?;
        let profiles = profiles
            .iter()
            .map(|p| {
                let compiled = Profile { allow: globset(&p.allow)?, deny: globset(&p.deny)?, discovery: p.discovery };
                Ok((p.name.clone(), compiled))
            })
            .collect::<Result<_, PolicyError>>()?;
        Ok(Rbac { roles, profiles })
    }

    /// The profile (if any) shows the name, some role of the caller usable in that profile
    /// allows it, and none denies it (deny wins). A profile only narrows: it grants nothing
    /// the roles do not. Roles (and profiles) the config does not know grant nothing.
    pub fn allows(&self, access: &Access, name: &str) -> bool {
        let profile = match access.profile.as_deref() {
            None => None,
            Some(p) => match self.profiles.get(p) {
                Some(compiled) if compiled.allow.is_match(name) && !compiled.deny.is_match(name) => Some(p),
                _ => return false,
            },
        };
        let roles = match &access.who {
            Who::Unrestricted => return true,
            Who::Roles(r) => r,
        };
        let usable = |r: &&Role| match (&r.profiles, profile) {
            (None, _) => true,
            (Some(only), Some(p)) => only.contains(p),
            (Some(_), None) => false,
        };
        let known = || roles.iter().filter_map(|r| self.roles.get(r)).filter(usable);
        known().any(|r| r.allow.is_match(name)) && !known().any(|r| r.deny.is_match(name))
    }
}

/// Tools and whole backends switched off by the operator: in the config (`[kill_switch]`), and
/// at run time (`sentinel kill-switch`).
pub struct KillSwitch {
    tools: GlobSet,
    backends: HashSet<String>,
    /// What `sentinel kill-switch` switched off, shared by every config version.
    pub runtime: Arc<crate::kill_switch::Runtime>,
}

impl KillSwitch {
    /// The config's `[kill_switch]` compiled, over the run-time list `runtime`.
    pub fn new(cfg: &KillSwitchConfig, runtime: Arc<crate::kill_switch::Runtime>) -> Result<KillSwitch, PolicyError> {
        Ok(KillSwitch { tools: globset(&cfg.tools)?, backends: cfg.backends.iter().cloned().collect(), runtime })
    }

    /// The exposed `name` of `backend` is off, by the config or at run time.
    pub fn is_killed(&self, name: &str, backend: &str) -> bool {
        self.backends.contains(backend) || self.tools.is_match(name) || self.runtime.is_killed(name, backend)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strings(s: &[&str]) -> Vec<String> {
        s.iter().map(std::string::ToString::to_string).collect()
    }

    fn role(name: &str, allow: &[&str], deny: &[&str]) -> RoleConfig {
        RoleConfig { name: name.into(), allow: strings(allow), deny: strings(deny), profiles: None }
    }

    #[test]
    fn a_profile_narrows_roles_and_roles_may_be_kept_to_profiles() {
        let mut limited = role("limited", &["*"], &[]);
        limited.profiles = Some(strings(&["research"]));
        let research = ProfileConfig {
            name: "research".into(),
            allow: strings(&["exa__*", "context7__*"]),
            deny: strings(&["exa__deep_*"]),
            discovery: None,
        };
        let rbac = Rbac::new(&[role("researcher", &["exa__*", "fetch__*"], &[]), limited], &[research]).unwrap();
        let r = |roles: &[&str], p: Option<&str>| Access::roles(strings(roles)).in_profile(p);
        assert!(rbac.allows(&r(&["researcher"], Some("research")), "exa__search"));
        assert!(!rbac.allows(&r(&["researcher"], Some("research")), "fetch__fetch"), "outside the profile");
        assert!(!rbac.allows(&r(&["researcher"], Some("research")), "context7__docs"), "never wider than the role");
        assert!(!rbac.allows(&r(&["researcher"], Some("research")), "exa__deep_research"), "the profile's deny");
        assert!(rbac.allows(&r(&["researcher"], None), "fetch__fetch"));
        assert!(rbac.allows(&r(&["limited"], Some("research")), "context7__docs"));
        assert!(
            !rbac.allows(&r(&["limited"], None), "context7__docs"),
            "a role kept to profiles grants nothing at /mcp"
        );
        assert!(!rbac.allows(&r(&["researcher"], Some("nope")), "exa__search"), "an unknown profile shows nothing");
        assert!(rbac.allows(&Access::unrestricted().in_profile(Some("research")), "exa__search"));
        assert!(!rbac.allows(&Access::unrestricted().in_profile(Some("research")), "fetch__fetch"));
    }

    #[test]
    fn deny_wins_and_unknown_roles_grant_nothing() {
        let rbac = Rbac::new(
            &[role("admin", &["*"], &[]), role("researcher", &["exa__*", "context7__*"], &["exa__deep_research"])],
            &[],
        )
        .unwrap();
        let r = |roles: &[&str]| Access::roles(strings(roles));
        assert!(rbac.allows(&r(&["researcher"]), "exa__search"));
        assert!(!rbac.allows(&r(&["researcher"]), "exa__deep_research"));
        assert!(!rbac.allows(&r(&["researcher"]), "firecrawl__scrape"));
        assert!(rbac.allows(&r(&["admin"]), "firecrawl__scrape"));
        assert!(!rbac.allows(&r(&["admin", "researcher"]), "exa__deep_research"), "deny in any role wins");
        assert!(!rbac.allows(&r(&["stranger"]), "exa__search"));
        assert!(!rbac.allows(&r(&[]), "exa__search"));
        assert!(rbac.allows(&Access::unrestricted(), "anything"));
        assert!(rbac.allows(&r(&["admin"]), "test://static/a/b"), "`*` spans `/` in URIs");
    }

    #[test]
    fn kill_switch_by_tool_glob_and_backend() {
        let k = KillSwitch::new(
            &KillSwitchConfig { tools: vec!["exa__deep_*".into()], backends: vec!["n8n".into()] },
            Default::default(),
        )
        .unwrap();
        assert!(k.is_killed("exa__deep_research", "exa"));
        assert!(!k.is_killed("exa__search", "exa"));
        assert!(k.is_killed("n8n__anything", "n8n"));
    }
}
