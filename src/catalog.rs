//! The aggregated catalog: every backend's tools, prompts, resources and resource templates
//! under their exposed names, in a deterministic order, with the routing tables built once
//! per catalog version (never per call).

use std::collections::HashMap;
use std::sync::Arc;

use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::config::{Naming, ToolOverride};
use crate::naming;
use crate::pins::Definition;

mod overrides;
pub mod search;

/// `[tool_overrides]`, by the exposed name they change.
pub type Overrides = IndexMap<String, ToolOverride>;
use crate::param_headers::{self, ParamHeader};
use crate::schema::Validators;

/// One tool or prompt as a backend listed it: its own name and the raw object.
#[derive(Debug, Clone)]
pub struct Listed {
    /// Its name at the backend.
    pub name: String,
    /// The object's members, raw and in the backend's order.
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
    /// Its tools, in its order.
    pub tools: Vec<Listed>,
    /// Its prompts, in its order.
    pub prompts: Vec<Listed>,
    /// (uri, raw resource object)
    pub resources: Vec<(String, Box<RawValue>)>,
    /// (uriTemplate, raw template object)
    pub templates: Vec<(String, Box<RawValue>)>,
    /// It declared the `resources` capability.
    pub has_resources: bool,
    /// It declared the `completions` capability.
    pub has_completions: bool,
}

/// A tool or prompt in the catalog.
#[derive(Debug)]
pub struct Entry {
    /// The name clients see (`<backend>__<tool>`, or as `naming` and `prefix` make it).
    pub exposed: String,
    /// The slot number of the backend that serves it.
    pub backend: usize,
    /// Its name at that backend.
    pub original: String,
    /// The exposed object: the backend's bytes with only `name` rewritten.
    pub json: String,
    /// `x-mcp-header` annotations of a tool's `inputSchema`.
    pub param_headers: Vec<ParamHeader>,
    /// A tool's definition as its backend listed it (before any override), as pinning judges it.
    pub pin: Option<Definition>,
}

/// Everything the backends offer, under the names clients see: built once per change of any listing and shared.
#[derive(Debug, Default)]
pub struct Catalog {
    /// Every tool, in config order and each backend's own order.
    pub tools: Vec<Entry>,
    /// Every prompt, likewise.
    pub prompts: Vec<Entry>,
    tool_index: HashMap<String, usize>,
    prompt_index: HashMap<String, usize>,
    /// Listed resources; `exposed` and `original` are the URI.
    pub resources: Vec<Entry>,
    resource_index: HashMap<String, usize>,
    /// Resource templates; `exposed` and `original` are the URI template.
    pub templates: Vec<Entry>,
    template_matchers: Vec<Template>,
    /// URIs two backends claim: routed to neither.
    contested: std::collections::HashSet<String>,
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
    /// The backend's name in the config.
    pub name: &'a str,
    /// What its names are prefixed with (may be empty).
    pub prefix: &'a str,
    /// What it listed.
    pub listing: &'a Listing,
}

impl Catalog {
    /// Builds the catalog, in the order of `sources`; entries name their backend by its `index`.
    ///
    /// Names follow backends, not strings: an entry whose exposed name falls in another
    /// backend's namespace (a backend with `prefix = ""` listing `other__tool`) is hidden, and
    /// a name (or resource URI, or template) that two backends offer is served by neither until
    /// the clash is resolved. Each such problem is reported in `clashes`.
    pub fn build(naming: &Naming, overrides: &Overrides, sources: &[Source]) -> Arc<Catalog> {
        let mut c = Catalog::default();
        let mut tools = Vec::new();
        let mut prompts = Vec::new();
        let mut schemas: Vec<(String, serde_json::Value)> = Vec::new();
        let spaces: Vec<(usize, &str, String)> = sources
            .iter()
            .filter_map(|s| naming::namespace(naming, s.name, s.prefix).map(|ns| (s.index, s.name, ns)))
            .collect();
        // The other backend whose namespace an entry of `s` would fall in.
        // Whether an entry of `s` falls in another backend's namespace (then it is reported and left out).
        let trespasses = |s: &Source, what: &str, exposed: &str, clashes: &mut Vec<String>| {
            let owner = spaces.iter().find(|(i, _, ns)| *i != s.index && exposed.starts_with(ns.as_str()));
            if let Some((_, owner, _)) = owner {
                clashes.push(format!(
                    "{what} `{exposed}` of `{}` falls in backend `{owner}`'s namespace; it is hidden and refused",
                    s.name
                ));
            }
            owner.is_some()
        };
        let mut resources: Vec<Entry> = Vec::new();
        let mut templates: Vec<Entry> = Vec::new();
        for s in sources {
            let i = s.index;
            for t in &s.listing.tools {
                // A tool without an inputSchema takes any object (MCP requires one; be lenient).
                let schema: serde_json::Value = t
                    .fields
                    .get("inputSchema")
                    .and_then(|r| serde_json::from_str(r.get()).ok())
                    .unwrap_or_else(|| serde_json::json!({ "type": "object" }));
                let e = tool_entry(naming, overrides, s, i, t);
                if trespasses(s, "tool", &e.exposed, &mut c.clashes) {
                    continue;
                }
                match param_headers::extract(&schema) {
                    Ok(headers) => {
                        schemas.push((e.exposed.clone(), schema));
                        tools.push(Entry { param_headers: headers, ..e });
                    }
                    Err(why) => c.clashes.push(format!("tool `{}` of `{}` is hidden: {why}", t.name, s.name)),
                }
            }
            for p in &s.listing.prompts {
                let e = entry(naming, s, i, p);
                if !trespasses(s, "prompt", &e.exposed, &mut c.clashes) {
                    prompts.push(e);
                }
            }
            if s.listing.has_resources {
                c.resource_backends.push(i);
            }
            for (uri, raw) in &s.listing.resources {
                if !crate::uri::is_normal(uri) {
                    c.clashes.push(format!(
                        "resource `{uri}` of `{}` is hidden: its URI is not in RFC 3986 normal form, and reads of such URIs are refused",
                        s.name
                    ));
                    continue;
                }
                resources.push(uri_entry(uri, i, raw));
            }
            for (tpl, raw) in &s.listing.templates {
                templates.push(uri_entry(tpl, i, raw));
            }
        }
        let (tools, tool_index, clashes, _) = index(tools, sources, "tool name");
        c.clashes.extend(clashes);
        let (prompts, prompt_index, clashes, _) = index(prompts, sources, "prompt name");
        c.clashes.extend(clashes);
        let (templates, _, clashes, _) = index(templates, sources, "resource template");
        c.clashes.extend(clashes);
        c.template_matchers = templates.iter().map(|t| Template::parse(&t.exposed)).collect();
        c.templates = templates;
        // A listed URI inside another backend's template is claimed by both: neither serves it.
        let mut listed = Vec::with_capacity(resources.len());
        for r in resources {
            let owners = c.template_owners(&r.exposed);
            if let Some(&other) = owners.iter().find(|&&b| b != r.backend) {
                c.clashes.push(format!(
                    "resource `{}` of `{}` falls in a resource template of `{}`; neither serves it until one changes",
                    r.exposed,
                    name_of(sources, r.backend),
                    name_of(sources, other)
                ));
                c.contested.insert(r.exposed.clone());
                continue;
            }
            listed.push(r);
        }
        let (resources, resource_index, clashes, contested) = index(listed, sources, "resource");
        c.clashes.extend(clashes);
        c.contested.extend(contested);
        c.resources = resources;
        c.resource_index = resource_index;
        c.tools = tools;
        c.tool_index = tool_index;
        c.prompts = prompts;
        c.prompt_index = prompt_index;
        let (validators, problems) = Validators::compile(schemas.iter().map(|(n, s)| (n.as_str(), s)));
        c.validators = validators;
        c.clashes.extend(problems);
        Arc::new(c)
    }

    /// The backends whose templates match `uri`, each once.
    fn template_owners(&self, uri: &str) -> Vec<usize> {
        let mut owners: Vec<usize> = Vec::new();
        for (t, e) in self.template_matchers.iter().zip(&self.templates) {
            if !owners.contains(&e.backend) && t.matches(uri) {
                owners.push(e.backend);
            }
        }
        owners
    }

    /// The tool clients know as `exposed`.
    pub fn tool(&self, exposed: &str) -> Option<&Entry> {
        self.tool_index.get(exposed).map(|i| &self.tools[*i])
    }

    /// The prompt clients know as `exposed`.
    pub fn prompt(&self, exposed: &str) -> Option<&Entry> {
        self.prompt_index.get(exposed).map(|i| &self.prompts[*i])
    }

    /// The backend that serves a resource URI: a listed resource, else a matching template,
    /// else the only backend offering resources at all.
    ///
    /// A URI two backends claim (listed by one inside the other's template, or matching
    /// templates of two backends) is served by neither.
    pub fn resource_backend(&self, uri: &str) -> Option<usize> {
        if let Some(i) = self.resource_index.get(uri) {
            return Some(self.resources[*i].backend);
        }
        if self.contested.contains(uri) {
            return None;
        }
        match self.template_owners(uri).as_slice() {
            [one] => return Some(*one),
            [] => {}
            _ => return None,
        }
        match self.resource_backends.as_slice() {
            [only] => Some(*only),
            _ => None,
        }
    }

    /// The `tools` array of a `tools/list` result: the tools `filter` keeps, as JSON text.
    pub fn tools_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.tools, filter)
    }

    /// The `prompts` array of a `prompts/list` result, likewise.
    pub fn prompts_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.prompts, filter)
    }

    /// The `resources` array of a `resources/list` result, likewise.
    pub fn resources_json(&self, filter: impl Fn(&Entry) -> bool) -> String {
        join(&self.resources, filter)
    }

    /// The `resourceTemplates` array of a `resources/templates/list` result, likewise.
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
        pin: None,
    }
}

fn entry(naming: &Naming, s: &Source, backend: usize, item: &Listed) -> Entry {
    let exposed = naming::exposed(naming, s.name, s.prefix, &item.name);
    let mut fields = item.fields.clone();
    let name = serde_json::value::to_raw_value(&exposed).expect("string serializes");
    fields.insert("name".into(), name);
    let json = serde_json::to_string(&fields).expect("raw map serializes");
    Entry { exposed, backend, original: item.name.clone(), json, param_headers: Vec::new(), pin: None }
}

/// A tool's entry: its exposed object as `[tool_overrides]` has it (keyed by the name the
/// naming gives it), and its definition as the backend listed it, for pinning.
fn tool_entry(naming: &Naming, overrides: &Overrides, s: &Source, backend: usize, item: &Listed) -> Entry {
    let named = naming::exposed(naming, s.name, s.prefix, &item.name);
    let o = overrides.get(&named);
    let exposed = o.and_then(|o| o.name.clone()).unwrap_or(named);
    let mut fields = item.fields.clone();
    fields.insert("name".into(), serde_json::value::to_raw_value(&exposed).expect("string serializes"));
    if let Some(o) = o {
        overrides::apply(o, &mut fields);
    }
    let json = serde_json::to_string(&fields).expect("raw map serializes");
    let pin = Some(Definition::of(&item.fields));
    Entry { exposed, backend, original: item.name.clone(), json, param_headers: Vec::new(), pin }
}

/// Keeps backends in config order and each backend's own order (servers list
/// deterministically, so the catalog does too, and it reads like the backends' own lists).
/// A name two backends offer is served by neither (which one a client meant cannot be known,
/// and keeping the first would let a later backend's listing decide for an earlier one).
fn index(entries: Vec<Entry>, sources: &[Source], what: &str) -> Indexed {
    let mut owners: HashMap<&str, Vec<usize>> = HashMap::new();
    for e in &entries {
        let o = owners.entry(e.exposed.as_str()).or_default();
        if !o.contains(&e.backend) {
            o.push(e.backend);
        }
    }
    let mut clashes = Vec::new();
    let mut reported = std::collections::HashSet::new();
    let contested: std::collections::HashSet<String> =
        owners.iter().filter(|(_, o)| o.len() > 1).map(|(n, _)| n.to_string()).collect();
    for e in &entries {
        if contested.contains(&e.exposed) && reported.insert(e.exposed.clone()) {
            let names: Vec<&str> = owners[e.exposed.as_str()].iter().map(|&b| name_of(sources, b)).collect();
            clashes.push(format!(
                "{what} `{}` is offered by {}; none of them serves it until the clash is resolved (give one backend a distinct `prefix`)",
                e.exposed,
                names.iter().map(|n| format!("`{n}`")).collect::<Vec<_>>().join(" and ")
            ));
        }
    }
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    let mut index: HashMap<String, usize> = HashMap::with_capacity(entries.len());
    for e in entries {
        if contested.contains(&e.exposed) {
            continue;
        }
        if let Some(&prev) = index.get(&e.exposed) {
            // Two names of one server that come out alike (`get_thing` and `get-thing` in the
            // contextforge style; names of different backends are contested above): ContextForge
            // refuses such a server; here the second is hidden.
            let first = &out[prev];
            let a = name_of(sources, first.backend);
            let kind = what.strip_suffix(" name").unwrap_or(what);
            clashes.push(format!(
                "{kind}s `{}` and `{}` of backend `{a}` are both exposed as `{}`; `{}` is hidden — rename one in the server",
                first.original, e.original, e.exposed, e.original
            ));
            continue;
        }
        index.insert(e.exposed.clone(), out.len());
        out.push(e);
    }
    (out, index, clashes, contested)
}

/// What `index` keeps, its index, the clashes it found, and the names they were about.
type Indexed = (Vec<Entry>, HashMap<String, usize>, Vec<String>, std::collections::HashSet<String>);

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
            &Overrides::new(),
            &[
                Source { index: 0, name: "one", prefix: "", listing: &a },
                Source { index: 1, name: "two", prefix: "", listing: &b },
            ],
        );
        assert_eq!(c.tools.len(), 1, "`echo` is offered by both: neither serves it");
        assert!(c.tool("echo").is_none());
        assert_eq!(c.tool("b").unwrap().json, r#"{"name":"b"}"#);
        assert_eq!(c.clashes.len(), 1, "{:?}", c.clashes);
        let c = Catalog::build(
            &naming,
            &Overrides::new(),
            &[
                Source { index: 0, name: "one", prefix: "one", listing: &a },
                Source { index: 1, name: "two", prefix: "two", listing: &b },
            ],
        );
        let names: Vec<_> = c.tools.iter().map(|e| e.exposed.as_str()).collect();
        assert_eq!(names, ["one__echo", "one__b", "two__echo"], "config order, then each backend's own order");
        assert_eq!(c.tool("two__echo").unwrap().original, "echo");
        assert_eq!(
            c.tool("one__echo").unwrap().json,
            r#"{"name":"one__echo","inputSchema":{"type":"object","x":1.0}}"#
        );
    }

    /// A backend without a prefix cannot list names inside another backend's namespace: they
    /// would reach it instead of the other, and be granted by the other's `allow` globs.
    #[test]
    fn names_in_another_backends_namespace_are_hidden() {
        let naming = Naming { style: NamingStyle::Prefixed, separator: "__".into() };
        let other = Listing { tools: vec![listed(r#"{"name":"read"}"#)], ..Default::default() };
        let squatter = Listing {
            tools: vec![
                listed(r#"{"name":"other__read"}"#),
                listed(r#"{"name":"other__write"}"#),
                listed(r#"{"name":"own"}"#),
            ],
            prompts: vec![listed(r#"{"name":"other__p"}"#)],
            ..Default::default()
        };
        let c = Catalog::build(
            &naming,
            &Overrides::new(),
            &[
                Source { index: 0, name: "squatter", prefix: "", listing: &squatter },
                Source { index: 1, name: "other", prefix: "other", listing: &other },
            ],
        );
        assert_eq!(c.tool("other__read").unwrap().backend, 1, "the namespace's owner serves it");
        assert!(c.tool("other__write").is_none(), "nothing added to another's namespace");
        assert!(c.prompt("other__p").is_none());
        assert_eq!(c.tool("own").unwrap().backend, 0);
        assert_eq!(
            c.clashes.iter().filter(|m| m.contains("falls in backend `other`'s namespace")).count(),
            3,
            "{:?}",
            c.clashes
        );
    }

    /// Resource URIs: one offered by two backends, or listed by one inside another's template,
    /// is served by neither; a URI matching templates of two backends too.
    #[test]
    fn contested_resource_uris_are_served_by_neither() {
        let naming = Naming { style: NamingStyle::Prefixed, separator: "__".into() };
        let raw = |s: &str| RawValue::from_string(s.into()).unwrap();
        let a = Listing {
            resources: vec![("test://shared/1".into(), raw("{}")), ("test://a/1".into(), raw("{}"))],
            templates: vec![("test://files/{id}".into(), raw("{}"))],
            has_resources: true,
            ..Default::default()
        };
        let b = Listing {
            resources: vec![("test://shared/1".into(), raw("{}")), ("test://files/secret".into(), raw("{}"))],
            templates: vec![("test://{kind}/x".into(), raw("{}"))],
            has_resources: true,
            ..Default::default()
        };
        let c = Catalog::build(
            &naming,
            &Overrides::new(),
            &[
                Source { index: 0, name: "a", prefix: "a", listing: &a },
                Source { index: 1, name: "b", prefix: "b", listing: &b },
            ],
        );
        assert_eq!(c.resource_backend("test://a/1"), Some(0));
        assert_eq!(c.resource_backend("test://shared/1"), None, "listed by both");
        assert_eq!(c.resource_backend("test://files/secret"), None, "b's listing inside a's template");
        assert_eq!(c.resource_backend("test://files/7"), Some(0));
        assert_eq!(c.resource_backend("test://files/x"), None, "both templates match");
        assert_eq!(c.resources.len(), 1, "{:?}", c.clashes);
    }
}
