//! `discovery = "meta"`: instead of every tool's definition, a caller's `tools/list` holds
//! three tools — `search_tools` (ranked names with one-line descriptions), `describe_tools`
//! (full definitions of chosen tools) and `call_tool` (a call by name). A model pays for three
//! definitions per turn instead of the whole catalog's, and a round trip or two when it needs a
//! tool it has not seen yet.
//!
//! Search and describe are answered here, from the catalog the caller may use (the very
//! predicate that filters `tools/list`). `call_tool` becomes the call it names, before the
//! policy stages: RBAC, kill switch, pinning, rate limit, schema and audit judge the real tool
//! exactly as for a direct call.

use serde_json::{Value, json};

use super::Gateway;
use crate::audit::AuditRecord;
use crate::catalog::search;
use crate::error::Refusal;
use crate::method::Method;
use crate::policy::Access;
use crate::request::Call;

/// The three tools' names.
pub const SEARCH: &str = "search_tools";
/// See [`SEARCH`].
pub const DESCRIBE: &str = "describe_tools";
/// See [`SEARCH`].
pub const CALL: &str = "call_tool";

/// The `tools` array of a meta `tools/list`.
pub const TOOLS: &str = r#"[{"name":"search_tools","description":"Search the tools this server offers by words (ranked over names, titles and descriptions). Returns names with one-line descriptions; describe_tools gives their full definitions.","inputSchema":{"type":"object","properties":{"query":{"type":"string","description":"Words describing what you want to do"},"limit":{"type":"integer","minimum":1,"maximum":50,"description":"How many tools at most (default 10)"}},"required":["query"]},"annotations":{"readOnlyHint":true}},{"name":"describe_tools","description":"Full definitions (input schemas included) of tools found with search_tools.","inputSchema":{"type":"object","properties":{"names":{"type":"array","items":{"type":"string"},"maxItems":50,"description":"Tool names from search_tools"}},"required":["names"]},"annotations":{"readOnlyHint":true}},{"name":"call_tool","description":"Call a tool by name with its arguments (as its inputSchema from describe_tools says).","inputSchema":{"type":"object","properties":{"name":{"type":"string","description":"The tool's name"},"arguments":{"type":"object","description":"The tool's arguments"}},"required":["name"]}}]"#;

/// How many results `search_tools` gives without `limit`, and at most.
const DEFAULT_LIMIT: usize = 10;
const MAX_LIMIT: usize = 50;

/// What a call in meta mode turned into.
// Not boxed, as `Admission`: made once per call and taken apart at once.
#[allow(clippy::large_enum_variant)]
pub(super) enum Meta {
    /// A search or description, answered here (a tool result).
    Answered(String),
    /// The call to run through the policy stages: the tool `call_tool` named, or a direct call.
    Call(Call),
}

impl Gateway {
    /// A `tools/call` of a caller in meta mode: search and describe are answered, `call_tool`
    /// unwrapped into the call it names; any other call goes on as it is.
    pub(super) fn meta(&self, access: &Access, mut call: Call, audit: &mut AuditRecord) -> Result<Meta, Refusal> {
        let name = call.target.as_str();
        if ![SEARCH, DESCRIBE, CALL].contains(&name) {
            return Ok(Meta::Call(call));
        }
        let args = call.arguments.take().unwrap_or_else(|| json!({}));
        if name == CALL {
            return unwrap_call(call, args).map(Meta::Call);
        }
        let redactor = self.redactor.load();
        audit.arguments = Some(redactor.redact(&args));
        audit.set_target(Method::ToolsCall, name, &redactor);
        let catalog = self.catalog();
        let usable = self.usable_tools(&catalog, access);
        let result = if name == SEARCH {
            let query = args
                .get("query")
                .and_then(Value::as_str)
                .ok_or_else(|| Refusal::InvalidParams("search_tools: `query` (a string) is required".into()))?;
            let limit = match args.get("limit") {
                None => DEFAULT_LIMIT,
                Some(l) => l.as_u64().filter(|l| (1..=MAX_LIMIT as u64).contains(l)).ok_or_else(|| {
                    Refusal::InvalidParams(format!("search_tools: `limit` must be an integer from 1 to {MAX_LIMIT}"))
                })? as usize,
            };
            search_result(&search::rank(usable.iter().copied(), query, limit))
        } else {
            let names: Vec<&str> = match args.get("names").and_then(Value::as_array) {
                Some(a) if a.len() <= MAX_LIMIT => a.iter().filter_map(Value::as_str).collect(),
                _ => {
                    return Err(Refusal::InvalidParams(format!(
                        "describe_tools: `names` (an array of at most {MAX_LIMIT} tool names) is required"
                    )));
                }
            };
            describe_result(&usable, &names)
        };
        Ok(Meta::Answered(result))
    }

    /// The tools the caller may use now: the filter of a full `tools/list`.
    fn usable_tools<'a>(
        &self,
        catalog: &'a crate::catalog::Catalog,
        access: &Access,
    ) -> Vec<&'a crate::catalog::Entry> {
        let policy = self.policy.load();
        let live = self.live.load();
        catalog
            .tools
            .iter()
            .filter(|e| {
                let backend = live.slots[e.backend].name();
                policy.visible(access, &e.exposed, backend) && !self.is_held(&policy, e, backend)
            })
            .collect()
    }
}

/// `call_tool`'s arguments made into the call of the tool they name, with the original
/// call's `_meta` (progress token, trace context) kept.
fn unwrap_call(mut call: Call, args: Value) -> Result<Call, Refusal> {
    let Value::Object(mut args) = args else { unreachable!("arguments are an object when present") };
    let Some(Value::String(name)) = args.remove("name") else {
        return Err(Refusal::InvalidParams("call_tool: `name` (a string) is required".into()));
    };
    let inner = match args.remove("arguments") {
        None | Some(Value::Null) => None,
        Some(v @ Value::Object(_)) => Some(v),
        Some(_) => return Err(Refusal::InvalidParams("call_tool: `arguments` must be an object".into())),
    };
    call.params.set_str("name", &name);
    match &inner {
        Some(v) => {
            call.params.0.insert("arguments".into(), serde_json::value::to_raw_value(v).expect("a value serializes"));
        }
        None => {
            call.params.0.shift_remove("arguments");
        }
    }
    call.target = name;
    call.arguments = inner;
    Ok(call)
}

/// The first line of a description, cut at 200 characters: enough to choose by.
fn one_line(e: &crate::catalog::Entry) -> (Option<String>, String) {
    #[derive(serde::Deserialize, Default)]
    struct T {
        title: Option<String>,
        description: Option<String>,
    }
    let t: T = serde_json::from_str(&e.json).unwrap_or_default();
    let d = t.description.unwrap_or_default();
    let line = d.lines().next().unwrap_or_default();
    let line = match line.char_indices().nth(200) {
        Some((i, _)) => format!("{}…", &line[..i]),
        None => line.to_string(),
    };
    (t.title, line)
}

fn search_result(found: &[&crate::catalog::Entry]) -> String {
    let mut text = String::new();
    let mut items = Vec::with_capacity(found.len());
    for e in found {
        let (title, description) = one_line(e);
        text.push_str(&format!("{}: {description}\n", e.exposed));
        let mut item = json!({ "name": e.exposed, "description": description });
        if let Some(t) = title {
            item["title"] = t.into();
        }
        items.push(item);
    }
    if found.is_empty() {
        text.push_str("No tool matches; try other words.");
    } else {
        text.push_str("Use describe_tools for their input schemas, then call_tool.");
    }
    json!({ "content": [{ "type": "text", "text": text }], "structuredContent": { "tools": items } }).to_string()
}

fn describe_result(usable: &[&crate::catalog::Entry], names: &[&str]) -> String {
    let mut tools = String::from("[");
    let mut unknown = Vec::new();
    for n in names {
        match usable.iter().find(|e| e.exposed == *n) {
            Some(e) => {
                if tools.len() > 1 {
                    tools.push(',');
                }
                tools.push_str(&e.json);
            }
            // A tool the caller may not use is as unknown as one that does not exist.
            None => unknown.push(*n),
        }
    }
    tools.push(']');
    let unknown = serde_json::to_string(&unknown).expect("strings serialize");
    let structured = format!(r#"{{"tools":{tools},"unknown":{unknown}}}"#);
    let text = serde_json::to_string(&structured).expect("a string serializes");
    format!(r#"{{"content":[{{"type":"text","text":{text}}}],"structuredContent":{structured}}}"#)
}
