//! Tool argument validation: each tool's `inputSchema`, compiled once per catalog version, checks the arguments of
//! every `tools/call` before any backend sees them.
//!
//! Schemas are JSON Schema 2020-12 unless their `$schema` names an older draft (4, 6, 7, 2019-09). They are compiled
//! with three choices a gateway needs and `jsonschema`'s defaults do not give:
//! - **offline**: only references inside the schema itself (`$defs`, `#/...`, `$anchor`) resolve; an `http(s):` or
//!   `file:` `$ref` (or an unknown `$schema`) is never fetched, the schema fails to compile instead. A backend must
//!   not make the gateway fetch URLs or read files. The crate is also built without its HTTP and file resolvers.
//! - **linear-time patterns**: `pattern` and `patternProperties` use the `regex` engine, whose matching time is
//!   linear in the input. The default, `fancy-regex`, backtracks: `^(a+)+$` on a hostile string would stall a worker.
//!   A pattern that needs look-around or backreferences fails to compile.
//! - **formats asserted**: `email`, `date-time`, `uri`, ... are checked, not just annotations. Unknown formats are
//!   ignored, as the specification allows, so that a backend's own formats do not break its tools.
//!
//! A tool whose schema fails to compile is refused on every call (fail closed): the gateway promises that arguments
//! were checked against the schema, and letting them through unchecked would turn a broken (or hostile) schema into
//! a way around that. The problem is reported once at compile time so that it is logged.

use std::collections::HashMap;
use std::fmt::Write as _;

use jsonschema::{PatternCache, PatternOptions, Validator};
use serde_json::Value;

/// One reason the arguments fail the schema.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Violation {
    /// JSON pointer to the offending value inside `arguments`: `"/address/city"`, or `""` for `arguments` itself.
    pub path: String,
    /// What is wrong with the value, without the value itself.
    pub message: String,
}

/// The compiled `inputSchema` of every tool of one catalog version.
#[derive(Debug, Default)]
pub struct Validators {
    tools: HashMap<String, Compiled>,
}

#[derive(Debug)]
enum Compiled {
    Ready(Validator),
    /// The schema did not compile; the text says why. Calls are refused.
    Broken(String),
}

impl Validators {
    /// Compiles every tool's `inputSchema`. Returns the validators and one line per tool whose schema did not
    /// compile (calls to those tools are then refused).
    pub fn compile<'a>(tools: impl IntoIterator<Item = (&'a str, &'a Value)>) -> (Validators, Vec<String>) {
        // Tools of one backend often repeat patterns; each is compiled once across the catalog.
        let patterns = PatternCache::new();
        let mut problems = Vec::new();
        let tools = tools
            .into_iter()
            .map(|(name, schema)| {
                let compiled = match compile_one(schema, &patterns) {
                    Ok(v) => Compiled::Ready(v),
                    Err(why) => {
                        let why = why.to_string();
                        problems.push(format!("tool {name:?}: inputSchema does not compile, calls are refused: {why}"));
                        Compiled::Broken(why)
                    }
                };
                (name.to_owned(), compiled)
            })
            .collect();
        (Validators { tools }, problems)
    }

    /// Checks `arguments` against the tool's schema and returns every violation, not just the first.
    /// A tool with no compiled schema (unknown, or its schema did not compile) is refused.
    pub fn validate(&self, tool: &str, arguments: &Value) -> Result<(), Vec<Violation>> {
        let validator = match self.tools.get(tool) {
            Some(Compiled::Ready(v)) => v,
            Some(Compiled::Broken(why)) => {
                return Err(vec![root(format!("this tool's inputSchema could not be compiled by the gateway: {why}"))]);
            }
            None => return Err(vec![root("the gateway has no inputSchema for this tool".to_owned())]),
        };
        // `masked` keeps argument values out of the messages: they reach the audit log and the client's
        // `_meta`, and a value can be a secret or megabytes long. The path says which value it is.
        let violations: Vec<Violation> = validator
            .iter_errors(arguments)
            .map(|e| Violation { path: e.instance_path().as_str().to_owned(), message: e.masked().to_string() })
            .collect();
        if violations.is_empty() { Ok(()) } else { Err(violations) }
    }

    /// [`validate`](Self::validate) for a call whose `arguments` may be missing: MCP treats that as `{}`.
    pub fn validate_call(&self, tool: &str, arguments: Option<&Value>) -> Result<(), Vec<Violation>> {
        match arguments {
            Some(arguments) => self.validate(tool, arguments),
            None => self.validate(tool, &Value::Object(serde_json::Map::new())),
        }
    }

    /// How many tools have a compiled (or broken) schema.
    pub fn len(&self) -> usize {
        self.tools.len()
    }

    /// No tool at all.
    pub fn is_empty(&self) -> bool {
        self.tools.is_empty()
    }
}

/// Text for an `isError` tool result: one line per violation, `"/path: message"` (`"(root)"` for the arguments).
pub fn violations_text(violations: &[Violation]) -> String {
    let mut text = String::new();
    for v in violations {
        let path = if v.path.is_empty() { "(root)" } else { &v.path };
        let _ = writeln!(text, "{path}: {}", v.message);
    }
    text.truncate(text.trim_end().len());
    text
}

fn compile_one(schema: &Value, patterns: &PatternCache) -> Result<Validator, jsonschema::ValidationError<'static>> {
    jsonschema::options()
        .offline()
        .with_pattern_options(PatternOptions::regex())
        .with_pattern_cache(patterns.clone())
        .should_validate_formats(true)
        .build(schema)
}

fn root(message: String) -> Violation {
    Violation { path: String::new(), message }
}

#[cfg(test)]
mod tests;
