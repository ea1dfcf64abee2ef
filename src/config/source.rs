//! Reading a config file's text: syntax, `${ENV}` interpolation, unknown keys, and the
//! line each problem sits on.
//!
//! Locating a key path in the original text is hand-written over `toml_edit`'s spans:
//! serde's error types carry a path but no position, and users need `file:line`.

use std::fmt;

use serde::de::DeserializeOwned;
use toml_edit::{Document, Item};

/// One thing wrong with a config file, as `sentinel check` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// `file:line` when the key could be located, else just the file name.
    pub location: String,
    /// Dotted key path (`backend.1.http.url`), empty for whole-file problems.
    pub key: String,
    /// What is wrong, for the operator.
    pub message: String,
}

impl Problem {
    /// A problem with the whole file (it cannot be read, or made).
    pub fn whole(location: &str, message: impl Into<String>) -> Problem {
        Problem { location: location.to_string(), key: String::new(), message: message.into() }
    }
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.key.is_empty() {
            write!(f, "{}: {}", self.location, self.message)
        } else {
            write!(f, "{}: `{}`: {}", self.location, self.key, self.message)
        }
    }
}

/// The text of one config file plus what is needed to point at a line in it.
pub struct Source<'a> {
    pub name: &'a str,
    pub text: &'a str,
    doc: Option<Document<String>>,
}

impl<'a> Source<'a> {
    pub fn new(name: &'a str, text: &'a str) -> Self {
        let doc = Document::parse(text.to_string()).ok();
        Source { name, text, doc }
    }

    fn line_of_offset(&self, offset: usize) -> usize {
        self.text[..offset.min(self.text.len())].matches('\n').count() + 1
    }

    /// `file:line` of a dotted key path, falling back to the nearest enclosing key found.
    pub fn locate(&self, path: &[String]) -> String {
        let Some(doc) = &self.doc else {
            return self.name.to_string();
        };
        let mut node = Node::Item(doc.as_item());
        let mut best = None;
        for seg in path {
            let index = seg.parse::<usize>().ok();
            let (span, next) = match node {
                Node::Item(Item::Table(t)) | Node::Table(t) => match t.get_key_value(seg) {
                    Some((k, v)) => (k.span(), Node::Item(v)),
                    None => break,
                },
                Node::Item(Item::Value(v)) | Node::Value(v) => match (v, index) {
                    (toml_edit::Value::InlineTable(t), _) => match t.get_key_value(seg) {
                        Some((k, v)) => (k.span(), Node::Item(v)),
                        None => break,
                    },
                    (toml_edit::Value::Array(a), Some(i)) => match a.get(i) {
                        Some(v) => (v.span(), Node::Value(v)),
                        None => break,
                    },
                    _ => break,
                },
                Node::Item(Item::ArrayOfTables(a)) => match index.and_then(|i| a.get(i)) {
                    Some(t) => (t.span(), Node::Table(t)),
                    None => break,
                },
                Node::Item(Item::None) => break,
            };
            if let Some(span) = span {
                best = Some(span.start);
            }
            node = next;
        }
        match best {
            Some(offset) => format!("{}:{}", self.name, self.line_of_offset(offset)),
            None => self.name.to_string(),
        }
    }

    /// A string value exactly as written in the file (before `${ENV}` interpolation).
    pub fn raw_string(&self, path: &[String]) -> Option<String> {
        self.raw_item(path)?.as_str().map(str::to_string)
    }

    /// Whether the file itself sets this key (rather than leaving it to its default).
    pub fn raw_value_exists(&self, path: &[String]) -> bool {
        self.raw_item(path).is_some_and(|i| !i.is_none())
    }

    fn raw_item(&self, path: &[String]) -> Option<&Item> {
        let mut item = self.doc.as_ref()?.as_item();
        for seg in path {
            item = match seg.parse::<usize>() {
                Ok(i) if item.is_array() || item.is_array_of_tables() => item.get(i)?,
                _ => item.get(seg.as_str())?,
            };
        }
        Some(item)
    }

    /// What a TOML syntax error says, naming the key of a duplicate (toml says only "duplicate
    /// key"; the span points at the second one).
    fn syntax_message(&self, e: &toml::de::Error) -> String {
        let what = e.message().trim_end_matches('.');
        let named = e.span().and_then(|span| self.text.get(span)).map(|t| t.trim().trim_matches(['[', ']']).trim());
        match named {
            Some(name) if what.starts_with("duplicate key") && !name.is_empty() => {
                format!("invalid TOML: `{name}` is defined twice (a table or key may appear only once: merge the two)")
            }
            _ => format!("invalid TOML: {what}"),
        }
    }

    pub fn problem(&self, path: &[String], message: impl Into<String>) -> Problem {
        Problem { location: self.locate(path), key: path.join("."), message: message.into() }
    }

    /// Parses, interpolates `${ENV}` and deserializes into `T`, collecting every problem
    /// it can find rather than stopping at the first (unset variables go to `found`). `None`
    /// when the file could not be read as a `T` at all (syntax or type error): then there is
    /// nothing to validate further.
    pub fn deserialize<T: DeserializeOwned>(
        &self,
        env: &dyn Fn(&str) -> Option<String>,
        needs: Needs,
        found: &mut Interpolation,
        problems: &mut Vec<Problem>,
    ) -> Option<T> {
        let mut table: toml::Table = match self.text.parse() {
            Ok(t) => t,
            Err(e) => {
                let e: toml::de::Error = e;
                let location = match e.span() {
                    Some(span) => format!("{}:{}", self.name, self.line_of_offset(span.start)),
                    None => self.name.to_string(),
                };
                problems.push(Problem { location, key: String::new(), message: self.syntax_message(&e) });
                return None;
            }
        };
        let mut path = Vec::new();
        let mut unset = Vec::new();
        for (k, v) in &mut table {
            path.push(k.clone());
            let needed = needs.covers(k);
            interpolate(v, &mut path, env, found, &mut |p, m| {
                if needed {
                    unset.push(self.problem(p, m));
                }
            });
            path.pop();
        }
        found.problems = unset;

        let mut unknown = Vec::new();
        let mut on_unknown = |p: serde_ignored::Path| unknown.push(p.to_string());
        let de = serde_ignored::Deserializer::new(toml::Value::Table(table), &mut on_unknown);
        let parsed = serde_path_to_error::deserialize::<_, T>(de);
        for key in unknown {
            // serde_ignored marks `Option` layers with `?`; they are not part of the key.
            let path: Vec<String> = key.split('.').filter(|s| *s != "?").map(str::to_string).collect();
            problems
                .push(self.problem(&path, "unknown key (check its spelling and section; see docs/configuration.md)"));
        }
        match parsed {
            Ok(v) => Some(v),
            Err(e) => {
                let path: Vec<String> = e
                    .path()
                    .to_string()
                    .split('.')
                    .filter(|s| !s.is_empty() && *s != "?")
                    .map(str::to_string)
                    .collect();
                problems.push(self.problem(&path, e.into_inner().message().to_string()));
                None
            }
        }
    }
}

/// A position in the parsed document: `toml_edit` hands out tables inside arrays of tables
/// and values inside inline tables as different types, so the walk carries whichever it has.
enum Node<'d> {
    Item(&'d Item),
    Table(&'d toml_edit::Table),
    Value(&'d toml_edit::Value),
}

/// Which `${VAR}`s a command needs: every one (`serve`, `stdio`, `check`, `doctor`, `reload`),
/// or only those in some top-level sections — `sentinel token` needs the `[auth]` secret, not a
/// backend's API key. A variable a command does not need may be unset: its value stays as
/// written, and nothing is said about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Needs {
    /// Every section's variables.
    All,
    /// Only the variables of these top-level sections.
    Sections(&'static [&'static str]),
}

impl Needs {
    /// Whether the variables of top-level `section` must be set.
    pub fn covers(self, section: &str) -> bool {
        match self {
            Needs::All => true,
            Needs::Sections(s) => s.contains(&section),
        }
    }
}

/// What interpolation found besides the values.
#[derive(Debug, Default)]
pub struct Interpolation {
    /// Every variable the file refers to, once each, in file order (`client-config` hands them
    /// to the stdio gateway it prints).
    pub variables: Vec<String>,
    /// Dotted keys whose value could not be filled in. Whatever else is wrong with such a value
    /// is a consequence (an unset secret is not also "too short"), so it is not reported.
    pub unresolved: Vec<String>,
    /// The variables the command needs that are not set, one problem each.
    pub problems: Vec<Problem>,
}

impl Interpolation {
    /// Whether `key` is, or sits inside, a value that could not be filled in.
    pub fn covers(&self, key: &str) -> bool {
        self.unresolved.iter().any(|u| key == u || key.strip_prefix(u.as_str()).is_some_and(|r| r.starts_with('.')))
    }
}

/// Replaces `${NAME}` in every string with the environment variable's value; `$${` is a
/// literal `${`. Interpolation happens after parsing, so a value can never inject TOML.
fn interpolate(
    v: &mut toml::Value,
    path: &mut Vec<String>,
    env: &dyn Fn(&str) -> Option<String>,
    found: &mut Interpolation,
    report: &mut dyn FnMut(&[String], String),
) {
    match v {
        toml::Value::String(s) if s.contains('$') => {
            for name in references(s) {
                if !found.variables.contains(&name) {
                    found.variables.push(name);
                }
            }
            match expand(s, env) {
                Ok(out) => *s = out,
                Err(e) => {
                    found.unresolved.push(path.join("."));
                    report(path, e.to_string());
                }
            }
        }
        toml::Value::Array(a) => {
            for (i, x) in a.iter_mut().enumerate() {
                path.push(i.to_string());
                interpolate(x, path, env, found, report);
                path.pop();
            }
        }
        toml::Value::Table(t) => {
            for (k, x) in t.iter_mut() {
                path.push(k.clone());
                interpolate(x, path, env, found, report);
                path.pop();
            }
        }
        _ => {}
    }
}

/// The variable names `${NAME}` references in `s` (not the `$${` escape).
pub fn references(s: &str) -> Vec<String> {
    let names = std::cell::RefCell::new(Vec::new());
    let _ = expand(s, &|name| {
        names.borrow_mut().push(name.to_string());
        Some(String::new())
    });
    names.into_inner()
}

/// Why a `${NAME}` reference in a config value cannot be replaced.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ExpandError {
    /// A `${` without its `}`.
    #[error("unterminated `${{` (write `$${{` for a literal `${{`)")]
    Unterminated,
    /// What stands between the braces (empty, or not letters, digits and `_`).
    #[error("`${{{0}}}` is not a valid environment variable reference")]
    BadName(String),
    /// The variable the environment does not have.
    #[error("environment variable `{0}` is not set (export it, or put the value in the file)")]
    Unset(String),
}

/// `s` with every `${NAME}` replaced by `env`'s value for it and `$${` by a literal `${`.
pub fn expand(s: &str, env: &dyn Fn(&str) -> Option<String>) -> Result<String, ExpandError> {
    let mut out = String::with_capacity(s.len());
    let mut rest = s;
    while let Some(pos) = rest.find('$') {
        out.push_str(&rest[..pos]);
        let after = &rest[pos + 1..];
        if let Some(tail) = after.strip_prefix("${") {
            out.push_str("${");
            rest = tail;
        } else if let Some(tail) = after.strip_prefix('{') {
            let Some(end) = tail.find('}') else {
                return Err(ExpandError::Unterminated);
            };
            let name = &tail[..end];
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                return Err(ExpandError::BadName(name.to_string()));
            }
            match env(name) {
                Some(val) => out.push_str(&val),
                None => return Err(ExpandError::Unset(name.to_string())),
            }
            rest = &tail[end + 1..];
        } else {
            out.push('$');
            rest = after;
        }
    }
    out.push_str(rest);
    Ok(out)
}
