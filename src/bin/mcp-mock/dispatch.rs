//! One `match` arm per MCP method, for each protocol generation, and the shaping
//! of results per generation (`resultType`, caching hints, `serverInfo` in `_meta`).

use crate::content;
use crate::context::{Ctx, Flow};
use crate::rpc::{
    LEGACY_VERSIONS, META_CAPS, META_SERVER_INFO, META_SUBSCRIPTION, META_VERSION, MODERN_VERSION, Reply, RpcError,
    UNSUPPORTED_VERSION,
};
use crate::server::{Era, level_index};
use crate::tools::{self, ToolOutput};
use serde_json::{Value, json};
use std::sync::atomic::Ordering;

/// Cache hint on every cacheable modern result. Short, so a runtime `add_tool` is
/// seen soon even by a cache that ignores list_changed.
const TTL_MS: u64 = 5000;

fn capabilities() -> Value {
    json!({
        "tools": {"listChanged": true},
        "resources": {"subscribe": true, "listChanged": true},
        "prompts": {"listChanged": true},
        "completions": {},
        "logging": {}
    })
}

/// Checks the per-request `_meta` a 2026-07-28 request must carry and returns its
/// protocol version (not yet checked for support).
pub fn modern_meta_version(params: &Value) -> Result<String, RpcError> {
    let meta = params.get("_meta");
    let missing: Vec<&str> =
        [META_VERSION, META_CAPS].into_iter().filter(|k| meta.and_then(|m| m.get(*k)).is_none()).collect();
    if !missing.is_empty() {
        let message = format!("Invalid params: missing _meta keys: {}", missing.join(", "));
        return Err(RpcError::invalid_params(message).status(400));
    }
    match meta.and_then(|m| m.get(META_VERSION)).and_then(Value::as_str) {
        Some(v) => Ok(v.to_string()),
        None => Err(RpcError::invalid_params("_meta protocolVersion must be a string").status(400)),
    }
}

pub fn check_modern_version(version: &str) -> Result<(), RpcError> {
    if version == MODERN_VERSION {
        return Ok(());
    }
    Err(unsupported_version(version))
}

pub fn unsupported_version(requested: &str) -> RpcError {
    RpcError::new(
        UNSUPPORTED_VERSION,
        format!("Unsupported protocol version {requested:?}; this server supports {MODERN_VERSION}"),
    )
    .data(json!({"supported": [MODERN_VERSION], "requested": requested}))
    .status(400)
}

pub async fn handle(mut ctx: Ctx) -> Reply {
    let outcome = match ctx.era {
        Era::Legacy => legacy(&mut ctx).await,
        Era::Modern => modern(&mut ctx).await,
    };
    match outcome {
        Ok(ToolOutput::Value(v)) => Reply::value(finish(&ctx, v)),
        Ok(ToolOutput::Raw(raw)) => Reply::Result(raw),
        Err(Flow::Error(e)) => Reply::Error(e),
        Err(Flow::ToolError(message)) if ctx.method == "tools/call" => {
            Reply::value(finish(&ctx, json!({"isError": true, "content": [{"type": "text", "text": message}]})))
        }
        Err(Flow::ToolError(message)) => Reply::Error(RpcError::new(-32603, message)),
        Err(Flow::InputRequired(v)) => Reply::value(finish(&ctx, v)),
        Err(Flow::Cancelled) => {
            ctx.server.record_event("cancelled", &ctx.id);
            Reply::Silent
        }
    }
}

/// Modern results carry `resultType`, caching hints on cacheable methods, and the
/// server's identity in `_meta`. Legacy results are left as they are.
fn finish(ctx: &Ctx, mut v: Value) -> Value {
    if ctx.era == Era::Legacy {
        return v;
    }
    let obj = v.as_object_mut().expect("results are objects");
    obj.entry("resultType").or_insert(json!("complete"));
    let cacheable = matches!(
        ctx.method.as_str(),
        "server/discover" | "tools/list" | "prompts/list" | "resources/list" | "resources/templates/list"
    ) || (ctx.method == "resources/read" && obj.get("resultType") == Some(&json!("complete")));
    if cacheable {
        obj.entry("ttlMs").or_insert(json!(TTL_MS));
        obj.entry("cacheScope").or_insert(json!("public"));
    }
    let meta = obj.entry("_meta").or_insert(json!({}));
    if let Some(meta) = meta.as_object_mut() {
        meta.insert(META_SERVER_INFO.into(), ctx.server.server_info());
    }
    v
}

fn ok(v: Value) -> Result<ToolOutput, Flow> {
    Ok(ToolOutput::Value(v))
}

fn str_param<'a>(ctx: &'a Ctx, key: &str) -> &'a str {
    ctx.params.get(key).and_then(Value::as_str).unwrap_or("")
}

async fn legacy(ctx: &mut Ctx) -> Result<ToolOutput, Flow> {
    let session = ctx.session.clone().expect("legacy requests have a session");
    match ctx.method.as_str() {
        "initialize" => {
            let asked = str_param(ctx, "protocolVersion");
            let version = if LEGACY_VERSIONS.contains(&asked) { asked } else { LEGACY_VERSIONS[0] };
            *session.version.lock().unwrap() = version.to_string();
            *session.client_caps.lock().unwrap() = ctx.params.get("capabilities").cloned().unwrap_or(json!({}));
            session.ready.store(true, Ordering::SeqCst);
            let mut caps = capabilities();
            if ctx.server.tasks.is_some() {
                caps["tasks"] = crate::tasks::capability();
            }
            ok(json!({
                "protocolVersion": version,
                "capabilities": caps,
                "serverInfo": ctx.server.server_info(),
                "instructions": "mcp-mock: a scriptable MCP test backend"
            }))
        }
        "ping" => ok(json!({})),
        "logging/setLevel" => {
            let level =
                level_index(str_param(ctx, "level")).ok_or_else(|| RpcError::invalid_params("unknown log level"))?;
            *session.log_level.lock().unwrap() = Some(level);
            ok(json!({}))
        }
        "resources/subscribe" => {
            session.subscriptions.lock().unwrap().insert(str_param(ctx, "uri").to_string());
            ok(json!({}))
        }
        "resources/unsubscribe" => {
            session.subscriptions.lock().unwrap().remove(str_param(ctx, "uri"));
            ok(json!({}))
        }
        "server/discover" | "subscriptions/listen" => Err(RpcError::method_not_found(&ctx.method).into()),
        "tools/call" if ctx.params.get("task").is_some() => match &ctx.server.tasks {
            Some(t) => t.create(ctx),
            // A server without the capability ignores the task, as the spec says.
            None => common(ctx).await,
        },
        "tools/call" if ctx.server.tasks.is_some() && str_param(ctx, "name") == "task_work" => {
            crate::tasks::run_plain(ctx).await
        }
        "tasks/get" | "tasks/result" | "tasks/list" | "tasks/cancel" => match &ctx.server.tasks {
            Some(t) => t.handle(ctx).await,
            None => Err(RpcError::method_not_found(&ctx.method).into()),
        },
        _ => common(ctx).await,
    }
}

async fn modern(ctx: &mut Ctx) -> Result<ToolOutput, Flow> {
    match ctx.method.as_str() {
        "server/discover" => ok(json!({
            "supportedVersions": [MODERN_VERSION],
            "capabilities": if ctx.server.tasks.is_some() {
                let mut c = capabilities();
                c["extensions"] = json!({"io.modelcontextprotocol/tasks": {}});
                c
            } else {
                capabilities()
            },
            "instructions": "mcp-mock: a scriptable MCP test backend"
        })),
        "subscriptions/listen" => listen(ctx).await,
        // The 2026-07-28 tasks extension: `task_work` becomes a task when the client declared
        // the extension in this request's capabilities (the server decides, per request).
        "tools/call"
            if str_param(ctx, "name") == "task_work"
                && ctx.client_caps().pointer("/extensions/io.modelcontextprotocol~1tasks").is_some() =>
        {
            match &ctx.server.tasks {
                Some(t) => t.create(ctx),
                None => crate::tasks::run_plain(ctx).await,
            }
        }
        "tools/call" if ctx.server.tasks.is_some() && str_param(ctx, "name") == "task_work" => {
            crate::tasks::run_plain(ctx).await
        }
        "tasks/get" | "tasks/update" | "tasks/cancel" => match &ctx.server.tasks {
            Some(t) => t.handle(ctx).await,
            None => Err(RpcError::method_not_found(&ctx.method).into()),
        },
        "tools/call" | "prompts/get" => {
            let subject = ctx.mrtr_subject();
            ctx.prepare_mrtr(&subject)?;
            common(ctx).await
        }
        _ => common(ctx).await,
    }
}

/// Methods both generations share.
async fn common(ctx: &Ctx) -> Result<ToolOutput, Flow> {
    match ctx.method.as_str() {
        "tools/list" => ok(json!({"tools": ctx.server.tools()})),
        "tools/call" => {
            let name = str_param(ctx, "name").to_string();
            tools::call(ctx, &name).await
        }
        "prompts/list" => ok(json!({"prompts": crate::catalog::prompts()})),
        "prompts/get" if str_param(ctx, "name") == "test_input_required_result_prompt" => {
            let question = tools::elicit(
                "What context should the prompt use?",
                json!({"context": {"type": "string"}}),
                &["context"],
            );
            let answer = ctx.ask("user_context", "elicitation/create", question).await?;
            let context = answer.pointer("/content/context").and_then(Value::as_str).unwrap_or("");
            ok(json!({"messages": [{"role": "user",
                "content": {"type": "text", "text": format!("Prompt with context: {context}")}}]}))
        }
        "prompts/get" => {
            let args = ctx.params.get("arguments").cloned().unwrap_or(json!({}));
            ok(content::get_prompt(str_param(ctx, "name"), &args)?)
        }
        "resources/list" => ok(json!({"resources": crate::catalog::resources()})),
        "resources/templates/list" => ok(json!({"resourceTemplates": crate::catalog::resource_templates()})),
        "resources/read" => ok(content::read_resource(str_param(ctx, "uri"))?),
        "completion/complete" => ok(content::complete(&ctx.params)),
        method => Err(RpcError::method_not_found(method).status(404).into()),
    }
}

/// `subscriptions/listen`: acknowledge, then deliver opted-in notifications until
/// the client closes the stream (HTTP) or cancels the request (stdio).
async fn listen(ctx: &Ctx) -> Result<ToolOutput, Flow> {
    let Some(Value::Object(asked)) = ctx.params.get("notifications") else {
        return Err(RpcError::invalid_params("subscriptions/listen needs a notifications filter").status(400).into());
    };
    let honored: serde_json::Map<String, Value> = asked
        .iter()
        .filter(|(k, _)| {
            ["toolsListChanged", "promptsListChanged", "resourcesListChanged", "resourceSubscriptions"]
                .contains(&k.as_str())
        })
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    let filter = Value::Object(honored);
    let params = json!({"_meta": {META_SUBSCRIPTION: ctx.id}, "notifications": filter});
    ctx.notify("notifications/subscriptions/acknowledged", params);
    let key = ctx.server.listen(ctx.id.clone(), filter, ctx.out.clone());
    ctx.cancel.cancelled().await;
    ctx.server.unlisten(key);
    Err(Flow::Cancelled)
}
