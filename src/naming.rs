//! The names clients see: `<prefix><separator><name>`, or ContextForge's slug style so that
//! users switching over keep every tool name, permission rule and prompt that mentions one.

use crate::config::{Naming, NamingStyle};

/// The exposed name of a backend's tool or prompt.
pub fn exposed(naming: &Naming, backend: &str, prefix: &str, name: &str) -> String {
    match naming.style {
        NamingStyle::Prefixed if prefix.is_empty() => name.to_string(),
        NamingStyle::Prefixed => format!("{prefix}{}{name}", naming.separator),
        NamingStyle::ContextForge => format!("{}-{}", slug(backend), slug(name)),
    }
}

/// ContextForge's slug: lower case, every run of characters outside `[a-z0-9]` (underscores
/// included) becomes one hyphen, no hyphen at either end.
pub fn slug(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut pending_hyphen = false;
    for c in s.chars().flat_map(char::to_lowercase) {
        if c.is_ascii_alphanumeric() {
            if pending_hyphen && !out.is_empty() {
                out.push('-');
            }
            pending_hyphen = false;
            out.push(c);
        } else {
            pending_hyphen = true;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(style: NamingStyle) -> Naming {
        Naming { style, separator: "__".into() }
    }

    #[test]
    fn prefixed_and_empty_prefix() {
        let n = naming(NamingStyle::Prefixed);
        assert_eq!(exposed(&n, "exa", "exa", "web_search"), "exa__web_search");
        assert_eq!(exposed(&n, "everything", "", "echo"), "echo");
        assert_eq!(exposed(&n, "exa", "x", "a"), "x__a");
    }

    #[test]
    fn contextforge_style() {
        let n = naming(NamingStyle::ContextForge);
        assert_eq!(
            exposed(&n, "sequential-thinking", "", "sequential_thinking"),
            "sequential-thinking-sequential-thinking"
        );
        assert_eq!(exposed(&n, "My Server", "p", "Get__Thing"), "my-server-get-thing");
    }
}
