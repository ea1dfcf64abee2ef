//! The aggregated catalog: every backend's tools, prompts, resources and resource templates
//! under their exposed names, in a deterministic order, with the routing tables built once
//! per catalog version (never per call).

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::config::Naming;
use crate::naming;
use crate::param_headers::{self, ParamHeader};
use crate::schema::Validators;

/// One tool or prompt as a backend listed it: its own name and the raw object.
#[derive(Debug, Clone)]
pub struct Listed {
    pub name: String,
    pub fields: IndexMap<String, Box<RawValue>>,
}

impl Listed {
    /// Parses one listed object; it must have a string `name`.
    pub fn parse(raw: &RawValue) -> Option<Listed> {
        let fields: IndexMap<String, Box<RawValue>> = serde_json::from_str(raw.get()).ok()?;
        let name = serde_json::from_str::<String>(fields.get("name")?.get()).ok()?;
        Some(Listed { name, fields })
    }
}

/// What one backend offers, as it listed it.
#[derive(Debug, Clone, Default)]
pub struct Listing {
    pub tools: Vec<Listed>,
    pub prompts: Vec<Listed>,
    /// (uri, raw resource object)
    pub resources: Vec<(String, Box<RawValue>)>,
    /// (uriTemplate, raw template object)
    pub templates: Vec<(String, Box<RawValue>)>,
    pub has_resources: bool,
    pub has_completions: bool,
}

/// A tool or prompt in the catalog.
#[derive(Debug)]
pub struct Entry {
    pub exposed: String,
    pub backend: usize,
    pub original: String,
    /// The exposed object: the backend's bytes with only `name` rewritten.
    pub json: String,
    /// `x-mcp-header` annotations of a tool's `inputSchema`.
    pub param_headers: Vec<ParamHeader>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    pub tools: Vec<Entry>,
    pub prompts: Vec<Entry>,
    tool_index: HashMap<String, usize>,
    prompt_index: HashMap<String, usize>,
    /// Listed resources; `exposed` and `original` are the URI.
    pub resources: Vec<Entry>,
    resource_index: HashMap<String, usize>,
    /// Resource templates; `exposed` and `original` are the URI template.
    pub templates: Vec<Entry>,
    template_matchers: Vec<Template>,
    resource_backends: Vec<usize>,
    /// Every tool's `inputSchema`, compiled once per catalog version.
    pub validators: Validators,
    /// Problems found while building (name clashes, invalid tool definitions); what they
    /// name was left out.
    pub clashes: Vec<String>,
}

/// A backend as the catalog needs to know it.
pub struct Source<'a> {
    /// The number entries carry to name this backend (the gateway's slot number).
    pub index: usize,
    pub name: &'a str,
    pub prefix: &'a str,
    pub listing: &'a Listing,
}

impl Catalog {
    /// Builds the catalog, in the order of `sources`; entries name their backend by its `index`.
    pub fn build(naming: &Naming, sources: &[Source]) -> Arc<Catalog> {
        let mut c = Catalog::default();
        let mut tools = Vec::new();
        let mut prompts = Vec::new();
        let mut schemas: Vec<(String, serde_json::Value)> = Vec::new();
        for s in sources {
            let i = s.index;
            for t in &s.listing.tools {
                // A tool without an inputSchema takes any object (MCP requires one; be lenient).
                let schema: serde_json::Value = t
                    .fields
                    .get("inputSchema")
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .unwrap_or_else(|| serde_json::json!({ "type": "object" }));
                match param_headers::extract(&schema) {
                    Ok(headers) => {
                        let e = Entry { param_headers: headers, ..entry(naming, s, i, t) };
                        schemas.push((e.exposed.clone(), schema));
                        tools.push(e);
                    }
                    Err(why) => c.clashes.push(format!("tool `{}` of `{}` is hidden: {why}", t.name, s.name)),
                }
            }
            for p in &s.listing.prompts {
                prompts.push(entry(naming, s, i, p));
            }
            if s.listing.has_resources {
                c.resource_backends.push(i);
            }
            for (uri, raw) in &s.listing.resources {
                if c.resource_index.contains_key(uri) {
                    c.clashes
                        .push(format!("resource `{uri}` is offered by two backends; `{}`'s copy is hidden", s.name));
                    continue;
                }
                c.resource_index.insert(uri.clone(), c.resources.len());
                c.resources.push(uri_entry(uri, i, raw));
            }
            for (tpl, raw) in &s.listing.templates {
                c.template_matchers.push(Template::parse(tpl));
                c.templates.push(uri_entry(tpl, i, raw));
            }
        }
        let (tools, tool_index, mut clashes) = index(tools, sources, "tool");
        let (prompts, prompt_index, more) = index(prompts, sources, "prompt");
        clashes.extend(more);
        c.clashes.extend(clashes);
        c.tools = tools;
        c.tool_index = tool_index;
        c.prompts = prompts;
        c.prompt_index = prompt_index;
        let (validators, problems) = Validators::compile(schemas.iter().map(|(n, s)| (n.as_str(), s)));
        c.validators = validators;
        c.clashes.extend(problems);
        Arc::new(c)
    }

    pub fn tool(&self, exposed: &str) -> Option<&Entry> {
        self.tool_index.get(exposed).map(|i| &self.tools[*i])
    }

    pub fn prompt(&self, exposed: &str) -> Option<&Entry> {
        self.prompt_index.get(exposed).map(|i| &self.prompts[*i])
    }

    /// The backend that serves a resource URI: a listed resource, else a matching template,
    /// else the only backend offering resources at all.
    pub fn resource_backend(&self, uri: &str) -> Option<usize> {
        if let Some(i) = self.resource_index.get(uri) {
            return Some(self.resources[*i].backend);
        }
        if let Some(i) = self.template_matchers.iter().position(|t| t.matches(uri)) {
            return Some(self.templates[i].backend);
        }
        match self.resource_backends.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    pub fn tools_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.tools, filter)
    }

    pub fn prompts_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.prompts, filter)
    }

    pub fn resources_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.resources, filter)
    }

    pub fn templates_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.templates, filter)
    }
}

fn join(entries: &[Entry], filter: impl Fn(&Entry) -> bool) -> String {
    let mut s = String::from("[");
    for e in entries.iter().filter(|e| filter(e)) {
        if s.len() > 1 {
            s.push(',');
        }
        s.push_str(&e.json);
    }
    s.push(']');
    s
}

fn uri_entry(uri: &str, backend: usize, raw: &RawValue) -> Entry {
    Entry {
        exposed: uri.to_string(),
        backend,
        original: uri.to_string(),
        json: raw.get().to_string(),
        param_headers: Vec::new(),
    }
}

fn entry(naming: &Naming, s: &Source, backend: usize, item: &Listed) -> Entry {
    let exposed = naming::exposed(naming, s.name, s.prefix, &item.name);
    let mut fields = item.fields.clone();
    let name = serde_json::value::to_raw_value(&exposed).expect("string serializes");
    fields.insert("name".into(), name);
    let json = serde_json::to_string(&fields).expect("raw map serializes");
    Entry { exposed, backend, original: item.name.clone(), json, param_headers: Vec::new() }
}

/// Keeps backends in config order and each backend's own order (servers list
/// deterministically, so the catalog does too, and it reads like the backends' own lists),
/// and drops clashes, keeping the entry of the backend configured first.
fn index(entries: Vec<Entry>, sources: &[Source], what: &str) -> (Vec<Entry>, HashMap<String, usize>, Vec<String>) {
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    let mut clashes = Vec::new();
    for e in entries {
        if let Some(&prev) = index.get(&e.exposed) {
            let first = &out[prev];
            let (a, b) = (name_of(sources, first.backend), name_of(sources, e.backend));
            clashes.push(if first.backend == e.backend {
                // Two names of one server that come out alike (`get_thing` and `get-thing` in the
                // contextforge style): ContextForge refuses such a server; here the second is hidden.
                format!(
                    "{what}s `{}` and `{}` of backend `{a}` are both exposed as `{}`; `{}` is hidden — rename one in the server",
                    first.original, e.original, e.exposed, e.original
                )
            } else {
                format!(
                    "{what} name `{}` is exposed by both `{a}` (its `{}`) and `{b}` (its `{}`); `{b}`'s is hidden — give one backend a distinct `prefix` (or, in the contextforge style, `name`)",
                    e.exposed, first.original, e.original
                )
            });
            continue;
        }
        index.insert(e.exposed.clone(), out.len());
        out.push(e);
    }
    (out, index, clashes)
}

fn name_of<'a>(sources: &[Source<'a>], index: usize) -> &'a str {
    sources.iter().find(|s| s.index == index).map_or("?", |s| s.name)
}

/// An RFC 6570 URI template reduced to what routing needs: literal pieces and variables.
/// Hand-written because routing only asks "could this URI come from this template", which
/// needs no expansion and no regex engine.
#[derive(Debug)]
struct Template {
    parts: Vec<Part>,
}

#[derive(Debug)]
enum Part {
    Literal(String),
    /// A variable; `multi` ones (`{+x}`, `{/x*}`...) may span `/`.
    Var {
        multi: bool,
    },
}

impl Template {
    fn parse(t: &str) -> Template {
        let mut parts = Vec::new();
        let mut rest = t;
        while let Some(start) = rest.find('{') {
            if start > 0 {
                parts.push(Part::Literal(rest[..start].to_string()));
            }
            let Some(end) = rest[start..].find('}') else {
                parts.push(Part::Literal(rest[start..].to_string()));
                rest = "";
                break;
            };
            let expr = &rest[start + 1..start + end];
            let multi = expr.starts_with(['+', '#', '/', '.', ';', '?', '&']) || expr.ends_with('*');
            parts.push(Part::Var { multi });
            rest = &rest[start + end + 1..];
        }
        if !rest.is_empty() {
            parts.push(Part::Literal(rest.to_string()));
        }
        Template { parts }
    }

    fn matches(&self, uri: &str) -> bool {
        // The split search below can backtrack; a client-chosen URI is kept short enough
        // that it stays cheap.
        if uri.len() > 2048 {
            return false;
        }
        fn go(parts: &[Part], s: &str) -> bool {
            match parts.split_first() {
                None => s.is_empty(),
                Some((Part::Literal(l), rest)) => s.strip_prefix(l.as_str()).is_some_and(|t| go(rest, t)),
                Some((Part::Var { multi }, rest)) => {
                    // Try every split point; templates are short, so this stays cheap.
                    for (i, c) in s.char_indices() {
                        if !multi && c == '/' {
                            return go(rest, &s[i..]) && i > 0;
                        }
                        if i > 0 && go(rest, &s[i..]) {
                            return true;
                        }
                    }
                    !s.is_empty() && go(rest, "")
                }
            }
        }
        go(&self.parts, uri)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::NamingStyle;

    fn listed(json: &str) -> Listed {
        Listed::parse(&RawValue::from_string(json.into()).unwrap()).unwrap()
    }

    #[test]
    fn templates_match() {
        let t = Template::parse("test://template/{id}/data");
        assert!(t.matches("test://template/123/data"));
        assert!(!t.matches("test://template/1/2/data"));
        assert!(!t.matches("test://template//data"));
        assert!(Template::parse("file:///{+path}").matches("file:///a/b/c"));
    }

    #[test]
    fn names_are_rewritten_bytes_kept_and_clashes_reported() {
        let naming = Naming { style: NamingStyle::Prefixed, separator: "__".into() };
        let a = Listing {
            tools: vec![
                listed(r#"{"name":"echo","inputSchema":{"type":"object","x":1.0}}"#),
                listed(r#"{"name":"b"}"#),
            ],
            ..Default::default()
        };
        let b = Listing { tools: vec![listed(r#"{"name":"echo"}"#)], ..Default::default() };
        let c = Catalog::build(
            &naming,
            &[
                Source { index: 0, name: "one", prefix: "", listing: &a },
                Source { index: 1, name: "two", prefix: "", listing: &b },
            ],
        );
        assert_eq!(c.tools.len(), 2);
        assert_eq!(c.tool("echo").unwrap().json, r#"{"name":"echo","inputSchema":{"type":"object","x":1.0}}"#);
        assert_eq!(c.tool("echo").unwrap().backend, 0);
        assert_eq!(c.clashes.len(), 1, "{:?}", c.clashes);
        let c = Catalog::build(
            &naming,
            &[
                Source { index: 0, name: "one", prefix: "one", listing: &a },
                Source { index: 1, name: "two", prefix: "two", listing: &b },
            ],
        );
        let names: Vec<_> = c.tools.iter().map(|e| e.exposed.as_str()).collect();
        assert_eq!(names, ["one__echo", "one__b", "two__echo"], "config order, then each backend's own order");
        assert_eq!(c.tool("two__echo").unwrap().original, "echo");
    }
}
