//! Who may use what: role-based access over exposed names, and the kill switch. Both answer
//! with one predicate each, used alike to filter lists and to gate calls, so a client is never
//! shown something it may not use, nor allowed something it is not shown.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use globset::{Glob, GlobSet, GlobSetBuilder};

use crate::config::{Config, KillSwitchConfig, RoleConfig, ValidationConfig};

/// The reloadable policy of one config version: roles, kill switch, validation mode.
pub struct Policy {
    /// Who may see and call what.
    pub rbac: Rbac,
    /// What is switched off.
    pub kill: KillSwitch,
    /// Whether and how tool arguments are checked against their schemas.
    pub validation: ValidationConfig,
}

impl Policy {
    /// The policy of `c`, with the run-time kill switch `runtime` (kept across reloads).
    pub fn from_config(c: &Config, runtime: Arc<crate::kill_switch::Runtime>) -> Result<Policy, PolicyError> {
        Ok(Policy {
            rbac: Rbac::new(&c.roles)?,
            kill: KillSwitch::new(&c.kill_switch, runtime)?,
            validation: c.validation,
        })
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

/// What a caller may reach.
#[derive(Debug, Clone)]
pub enum Access {
    /// Authentication is disabled (loopback only): everything not killed.
    Unrestricted,
    /// The caller's roles from its token.
    Roles(Vec<String>),
}

struct Role {
    allow: GlobSet,
    deny: GlobSet,
}

/// Allow and deny globs per role, over exposed tool and prompt names and resource URIs.
pub struct Rbac {
    roles: HashMap<String, Role>,
}

impl Rbac {
    /// Compiles every role's allow and deny globs.
    pub fn new(roles: &[RoleConfig]) -> Result<Rbac, PolicyError> {
        let roles = roles
            .iter()
            .map(|r| Ok((r.name.clone(), Role { allow: globset(&r.allow)?, deny: globset(&r.deny)? })))
            .collect::<Result<_, PolicyError>>()?;
        Ok(Rbac { roles })
    }

    /// Some role of the caller allows the name and none denies it (deny wins). Roles the
    /// config does not know grant nothing.
    pub fn allows(&self, access: &Access, name: &str) -> bool {
        let roles = match access {
            Access::Unrestricted => return true,
            Access::Roles(r) => r,
        };
        let known = || roles.iter().filter_map(|r| self.roles.get(r));
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

    fn role(name: &str, allow: &[&str], deny: &[&str]) -> RoleConfig {
        RoleConfig {
            name: name.into(),
            allow: allow.iter().map(std::string::ToString::to_string).collect(),
            deny: deny.iter().map(std::string::ToString::to_string).collect(),
        }
    }

    #[test]
    fn deny_wins_and_unknown_roles_grant_nothing() {
        let rbac = Rbac::new(&[
            role("admin", &["*"], &[]),
            role("researcher", &["exa__*", "context7__*"], &["exa__deep_research"]),
        ])
        .unwrap();
        let r = |roles: &[&str]| Access::Roles(roles.iter().map(std::string::ToString::to_string).collect());
        assert!(rbac.allows(&r(&["researcher"]), "exa__search"));
        assert!(!rbac.allows(&r(&["researcher"]), "exa__deep_research"));
        assert!(!rbac.allows(&r(&["researcher"]), "firecrawl__scrape"));
        assert!(rbac.allows(&r(&["admin"]), "firecrawl__scrape"));
        assert!(!rbac.allows(&r(&["admin", "researcher"]), "exa__deep_research"), "deny in any role wins");
        assert!(!rbac.allows(&r(&["stranger"]), "exa__search"));
        assert!(!rbac.allows(&r(&[]), "exa__search"));
        assert!(rbac.allows(&Access::Unrestricted, "anything"));
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
