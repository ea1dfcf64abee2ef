//! The names clients see: `<prefix><separator><name>`, or ContextForge's slug style so that
//! users switching over keep every tool name, permission rule and prompt that mentions one.

use crate::config::{Naming, NamingStyle};
use unicode_general_category::{GeneralCategory as Gc, get_general_category};
use unicode_normalization::UnicodeNormalization;

/// The exposed name of a backend's tool or prompt.
///
/// In the `contextforge` style this is what ContextForge stores as a federated tool's name:
/// `slugify(gateway.name) + GATEWAY_TOOL_NAME_SEPARATOR + slugify(tool name)`
/// (IBM/mcp-context-forge `mcpgateway/db.py`, `Tool.name`; prompts likewise in
/// `mcpgateway/services/prompt_service.py`). The separator is `[naming] separator`, which the
/// config defaults to ContextForge's `-` in this style and limits to the values it accepts.
pub fn exposed(naming: &Naming, backend: &str, prefix: &str, name: &str) -> String {
    match naming.style {
        NamingStyle::Prefixed if prefix.is_empty() => name.to_string(),
        NamingStyle::Prefixed => format!("{prefix}{}{name}", naming.separator),
        NamingStyle::ContextForge => {
            let sep = &naming.separator;
            format!("{}{sep}{}", slug_with(backend, sep), slug_with(name, sep))
        }
    }
}

/// The start every exposed name of a backend shares, which no other backend's names may
/// have: `<prefix><separator>`, or `<slug(name)><separator>` in the `contextforge` style.
/// `None` for an empty prefix: such a backend keeps its own names and owns no namespace.
pub fn namespace(naming: &Naming, backend: &str, prefix: &str) -> Option<String> {
    match naming.style {
        NamingStyle::Prefixed if prefix.is_empty() => None,
        NamingStyle::Prefixed => Some(format!("{prefix}{}", naming.separator)),
        NamingStyle::ContextForge => Some(format!("{}{}", slug_with(backend, &naming.separator), naming.separator)),
    }
}

/// ContextForge's slug with its default separator `-`.
pub fn slug(s: &str) -> String {
    slug_with(s, "-")
}

/// ContextForge's `slugify` (IBM/mcp-context-forge `mcpgateway/utils/create_slug.py`), step by
/// step: lower case; an ASCII apostrophe between two word characters is dropped (`don't` →
/// `dont`); every run of non-word characters and underscores becomes one `sep`; `sep` characters
/// are stripped from both ends; `æ`/`ß`/`ø` become `ae`/`ss`/`o`; NFKD, and whatever is not ASCII
/// is dropped. The ends are stripped *before* the ASCII fold, as there, so `"a 中"` gives `"a-"`.
/// A word character is what Python's `re` calls `\w`: a letter (Lu Ll Lt Lm Lo) or a number
/// (Nd Nl No); combining marks and symbols are not.
pub fn slug_with(s: &str, sep: &str) -> String {
    let lower: Vec<char> = s.to_lowercase().chars().collect();

    // Contractions: the regex `(\w)'(\w)` replaced left to right, matches not overlapping.
    let mut text = Vec::with_capacity(lower.len());
    let mut i = 0;
    while i < lower.len() {
        let c = lower[i];
        if i + 2 < lower.len() && is_word(c) && lower[i + 1] == '\'' && is_word(lower[i + 2]) {
            text.push(c);
            text.push(lower[i + 2]);
            i += 3;
        } else {
            text.push(c);
            i += 1;
        }
    }

    // Runs of `[\W_]` become one separator.
    let mut joined = String::with_capacity(text.len());
    let mut in_run = false;
    for c in text {
        if is_word(c) && c != '_' {
            joined.push(c);
            in_run = false;
        } else if !in_run {
            joined.push_str(sep);
            in_run = true;
        }
    }
    let stripped = joined.trim_matches(|c: char| sep.contains(c));

    let mapped = stripped.replace('æ', "ae").replace('ß', "ss").replace('ø', "o");
    mapped.nfkd().filter(char::is_ascii).collect()
}

/// Python's `\w` on `str` patterns: `str.isalnum()` or `_`.
fn is_word(c: char) -> bool {
    c == '_'
        || matches!(
            get_general_category(c),
            Gc::UppercaseLetter
                | Gc::LowercaseLetter
                | Gc::TitlecaseLetter
                | Gc::ModifierLetter
                | Gc::OtherLetter
                | Gc::DecimalNumber
                | Gc::LetterNumber
                | Gc::OtherNumber
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn naming(style: NamingStyle, separator: &str) -> Naming {
        Naming { style, separator: separator.into() }
    }

    #[test]
    fn prefixed_and_empty_prefix() {
        let n = naming(NamingStyle::Prefixed, "__");
        assert_eq!(exposed(&n, "exa", "exa", "web_search"), "exa__web_search");
        assert_eq!(exposed(&n, "everything", "", "echo"), "echo");
        assert_eq!(exposed(&n, "exa", "x", "a"), "x__a");
    }

    #[test]
    fn namespaces_follow_the_style() {
        let n = naming(NamingStyle::Prefixed, "__");
        assert_eq!(namespace(&n, "exa", "exa").as_deref(), Some("exa__"));
        assert_eq!(namespace(&n, "everything", ""), None);
        let n = naming(NamingStyle::ContextForge, "-");
        assert_eq!(namespace(&n, "My Server", "ignored").as_deref(), Some("my-server-"));
    }

    #[test]
    fn contextforge_style() {
        let n = naming(NamingStyle::ContextForge, "-");
        assert_eq!(
            exposed(&n, "sequential-thinking", "", "sequential_thinking"),
            "sequential-thinking-sequential-thinking"
        );
        assert_eq!(exposed(&n, "My Server", "p", "Get__Thing"), "my-server-get-thing");
    }

    /// ContextForge's GATEWAY_TOOL_NAME_SEPARATOR (`-`, `--`, `_` or `.`, mcpgateway/config.py)
    /// is used both between the two slugs and inside each slug.
    #[test]
    fn contextforge_style_other_separators() {
        let cases = [("--", "my-server--get--thing"), ("_", "my_server_get_thing"), (".", "my.server.get.thing")];
        for (sep, want) in cases {
            let n = naming(NamingStyle::ContextForge, sep);
            let want = want.replace("my-server", &format!("my{sep}server"));
            assert_eq!(exposed(&n, "My Server", "", "Get__Thing"), want, "separator {sep}");
        }
        let n = naming(NamingStyle::ContextForge, "_");
        assert_eq!(exposed(&n, "github", "", "create_issue"), "github_create_issue");
    }

    /// The doctests of `slugify` in IBM/mcp-context-forge mcpgateway/utils/create_slug.py.
    #[test]
    fn slug_matches_contextforge_doctests() {
        let cases = [
            ("Hello World", "hello-world"),
            ("Test-Case_123", "test-case-123"),
            ("Café & Restaurant", "cafe-restaurant"),
            ("user@example.com", "user-example-com"),
            ("Don't Stop", "dont-stop"),
            ("It's Working", "its-working"),
            ("", ""),
            ("   ", ""),
            ("---test---", "test"),
            ("Multiple   Spaces", "multiple-spaces"),
            ("Naïve résumé", "naive-resume"),
            ("Zürich", "zurich"),
        ];
        for (input, want) in cases {
            assert_eq!(slug(input), want, "slug({input:?})");
        }
    }

    /// Consequences of the order of the steps in create_slug.py (values checked against
    /// CPython 3's `re` and `unicodedata` running those steps).
    #[test]
    fn slug_edge_cases_follow_contextforge() {
        let cases = [
            ("ÆSIR Straße Ørsted", "-", "aesir-strasse-orsted"),
            // Non-ASCII word characters survive the strip, then vanish in the ASCII fold.
            ("中 a", "-", "-a"),
            ("a 中", "-", "a-"),
            // Combining marks and symbols are not word characters in Python's `\w`.
            ("cafe\u{301} x", "-", "cafe-x"),
            ("e\u{301}t\u{301}e", "-", "e-t-e"),
            ("x\u{24d0}y", "-", "x-y"),
            ("İstanbul", "-", "i-stanbul"),
            // Compatibility forms fold to ASCII.
            ("x²", "-", "x2"),
            ("ＡＢＣ", "-", "abc"),
            ("\u{fb01}le", "-", "file"),
            // Matches do not overlap; only the ASCII apostrophe counts.
            ("rock'n'roll", "-", "rockn-roll"),
            ("Don\u{2019}t", "-", "don-t"),
            ("sequential_thinking", "_", "sequential_thinking"),
            ("Get__Thing", "--", "get--thing"),
            ("---test---", ".", "test"),
            ("a 中", "--", "a--"),
        ];
        for (input, sep, want) in cases {
            assert_eq!(slug_with(input, sep), want, "slug_with({input:?}, {sep:?})");
        }
    }
}
