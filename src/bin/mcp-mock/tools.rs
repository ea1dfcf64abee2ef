//! `tools/call`: every tool the mock offers — the official conformance tools, the
//! 2026-07-28 diagnostic hooks, and the scriptable tools for Sentinel's tests.

use crate::content::{EXACT_BYTES_LEGACY, EXACT_BYTES_MODERN, PNG, WAV};
use crate::context::{Ctx, Flow};
use crate::rpc::{META_VERSION, MISSING_CAPABILITY, RpcError};
use crate::server::Era;
use serde_json::{Value, json};

/// A tool result: a JSON value, or raw text that must be written byte for byte.
pub enum ToolOutput {
    Value(Value),
    Raw(String),
}

pub fn text(t: impl Into<String>) -> Result<ToolOutput, Flow> {
    Ok(ToolOutput::Value(json!({"content": [{"type": "text", "text": t.into()}]})))
}

fn content(items: Value) -> Result<ToolOutput, Flow> {
    Ok(ToolOutput::Value(json!({"content": items})))
}

pub fn elicit(message: &str, properties: Value, required: &[&str]) -> Value {
    json!({"message": message, "requestedSchema": {"type": "object", "properties": properties, "required": required}})
}

pub fn sampling(prompt: &str, max_tokens: u32) -> Value {
    json!({"messages": [{"role": "user", "content": {"type": "text", "text": prompt}}], "maxTokens": max_tokens})
}

pub fn elicitation_summary(answer: &Value) -> String {
    let action = answer.get("action").and_then(Value::as_str).unwrap_or("unknown");
    let content = answer.get("content").cloned().unwrap_or(Value::Null);
    format!("action={action}, content={content}")
}

pub fn sampled_text(answer: &Value) -> String {
    answer.pointer("/content/text").and_then(Value::as_str).unwrap_or("").to_string()
}

fn u64_arg(ctx: &Ctx, key: &str, default: u64) -> u64 {
    ctx.args().get(key).and_then(Value::as_u64).unwrap_or(default)
}

fn str_arg<'a>(ctx: &'a Ctx, key: &str) -> &'a str {
    ctx.args().get(key).and_then(Value::as_str).unwrap_or("")
}

pub async fn call(ctx: &Ctx, name: &str) -> Result<ToolOutput, Flow> {
    match name {
        "test_simple_text" => text("This is a simple text response for testing."),
        "test_image_content" => content(json!([{"type": "image", "data": PNG, "mimeType": "image/png"}])),
        "test_audio_content" => content(json!([{"type": "audio", "data": WAV, "mimeType": "audio/wav"}])),
        "test_embedded_resource" => content(json!([{"type": "resource", "resource": {
            "uri": "test://embedded-resource", "mimeType": "text/plain",
            "text": "This is an embedded resource content."}}])),
        "test_multiple_content_types" => content(json!([
            {"type": "text", "text": "Multiple content types test:"},
            {"type": "image", "data": PNG, "mimeType": "image/png"},
            {"type": "resource", "resource": {"uri": "test://mixed-content-resource",
                "mimeType": "application/json", "text": "{\"test\":\"data\",\"value\":123}"}}])),
        "test_tool_with_logging" => {
            ctx.log("info", "Tool execution started");
            ctx.sleep_ms(50).await?;
            ctx.log("info", "Tool processing data");
            ctx.sleep_ms(50).await?;
            ctx.log("info", "Tool execution completed");
            text("Tool with logging executed successfully")
        }
        "test_error_handling" => Err(Flow::ToolError("This tool intentionally returns an error for testing".into())),
        "test_tool_with_progress" => {
            for (i, p) in [0.0, 50.0, 100.0].into_iter().enumerate() {
                if i > 0 {
                    ctx.sleep_ms(50).await?;
                }
                ctx.progress(p, Some(100.0), None);
            }
            text("Tool with progress executed successfully")
        }
        "test_sampling" => {
            let answer = ctx.ask("sampling", "sampling/createMessage", sampling(str_arg(ctx, "prompt"), 100)).await?;
            text(format!("LLM response: {}", sampled_text(&answer)))
        }
        "test_elicitation" => {
            let schema = json!({
                "username": {"type": "string", "description": "User's response"},
                "email": {"type": "string", "description": "User's email address"}});
            let params = elicit(str_arg(ctx, "message"), schema, &["username", "email"]);
            let answer = ctx.ask("elicitation", "elicitation/create", params).await?;
            text(format!("User response: {}", elicitation_summary(&answer)))
        }
        "test_elicitation_sep1034_defaults" => {
            let schema = json!({
                "name": {"type": "string", "description": "User name", "default": "John Doe"},
                "age": {"type": "integer", "description": "User age", "default": 30},
                "score": {"type": "number", "description": "User score", "default": 95.5},
                "status": {"type": "string", "description": "User status",
                    "enum": ["active", "inactive", "pending"], "default": "active"},
                "verified": {"type": "boolean", "description": "Verification status", "default": true}});
            let params = elicit("Please review and update the form fields with defaults", schema, &[]);
            let answer = ctx.ask("elicitation", "elicitation/create", params).await?;
            text(format!("Elicitation completed: {}", elicitation_summary(&answer)))
        }
        "test_elicitation_sep1330_enums" => {
            let schema = json!({
                "untitledSingle": {"type": "string", "description": "Untitled single-select",
                    "enum": ["option1", "option2", "option3"]},
                "titledSingle": {"type": "string", "description": "Titled single-select", "oneOf": [
                    {"const": "value1", "title": "First Option"}, {"const": "value2", "title": "Second Option"},
                    {"const": "value3", "title": "Third Option"}]},
                "legacyEnum": {"type": "string", "description": "Legacy titled enum",
                    "enum": ["opt1", "opt2", "opt3"], "enumNames": ["Option One", "Option Two", "Option Three"]},
                "untitledMulti": {"type": "array", "description": "Untitled multi-select",
                    "items": {"type": "string", "enum": ["option1", "option2", "option3"]}},
                "titledMulti": {"type": "array", "description": "Titled multi-select", "items": {"anyOf": [
                    {"const": "value1", "title": "First Choice"}, {"const": "value2", "title": "Second Choice"},
                    {"const": "value3", "title": "Third Choice"}]}}});
            let params = elicit("Please select options from the enum fields", schema, &[]);
            let answer = ctx.ask("elicitation", "elicitation/create", params).await?;
            text(format!("Elicitation completed: {}", elicitation_summary(&answer)))
        }
        "json_schema_2020_12_tool" => text(format!("json_schema_2020_12_tool called with {}", ctx.args())),
        "test_custom_header" => text(format!("test_custom_header called with {}", ctx.args())),
        "test_trigger_tool_change" => {
            ctx.server.list_changed("tools");
            text("tools/list_changed sent")
        }
        "test_trigger_prompt_change" => {
            ctx.server.list_changed("prompts");
            text("prompts/list_changed sent")
        }
        "test_logging_tool" => {
            ctx.log("info", "test_logging_tool ran");
            text("test_logging_tool done")
        }
        "test_missing_capability" => {
            if ctx.client_caps().get("sampling").is_none() {
                return Err(match ctx.era {
                    Era::Legacy => Flow::ToolError("client did not declare the sampling capability".into()),
                    Era::Modern => Flow::Error(
                        RpcError::new(MISSING_CAPABILITY, "Missing required client capability: sampling")
                            .data(json!({"requiredCapabilities": {"sampling": {}}}))
                            .status(400),
                    ),
                });
            }
            text("sampling capability present")
        }
        name if name.starts_with("test_input_required_result_") || name == "test_streaming_elicitation" => {
            crate::mrtr_tools::call(ctx, name).await
        }
        _ => gateway_tool(ctx, name).await,
    }
}

/// Largest result `bench` builds: the benchmark asks for 1 MB; this only bounds a typo.
const BENCH_MAX_BYTES: u64 = 64 << 20;

/// `sentinel-bench`'s tool: a text of `bytes` x's (or a short text) and `{client, seq}` as
/// structuredContent, so that every answer shows which call it belongs to. Written as raw
/// text rather than through `serde_json::Value`: the mock must not be the bottleneck it measures.
fn bench(ctx: &Ctx) -> ToolOutput {
    let (client, seq) = (u64_arg(ctx, "client", 0), u64_arg(ctx, "seq", 0));
    let text = match ctx.args().get("bytes").and_then(Value::as_u64) {
        Some(n) => "x".repeat(n.min(BENCH_MAX_BYTES) as usize),
        None => format!("{client}-{seq}"),
    };
    let result_type = if ctx.era == Era::Modern { r#""resultType":"complete","# } else { "" };
    ToolOutput::Raw(format!(
        r#"{{{result_type}"content":[{{"type":"text","text":"{text}"}}],"structuredContent":{{"client":{client},"seq":{seq}}}}}"#
    ))
}

async fn gateway_tool(ctx: &Ctx, name: &str) -> Result<ToolOutput, Flow> {
    match name {
        "echo" => {
            let raw = ctx.raw_params.as_deref().and_then(|p| {
                #[derive(serde::Deserialize)]
                struct Args<'a> {
                    #[serde(borrow)]
                    arguments: Option<&'a serde_json::value::RawValue>,
                }
                serde_json::from_str::<Args>(p.get()).ok()?.arguments.map(|a| a.get().to_string())
            });
            let raw = raw.unwrap_or_else(|| "{}".to_string());
            let text = json!([{"type": "text", "text": raw}]);
            let result_type = if ctx.era == Era::Modern { r#""resultType":"complete","# } else { "" };
            Ok(ToolOutput::Raw(format!(r#"{{{result_type}"content":{text},"structuredContent":{raw}}}"#)))
        }
        "exact_bytes" => Ok(ToolOutput::Raw(
            if ctx.era == Era::Modern { EXACT_BYTES_MODERN } else { EXACT_BYTES_LEGACY }.to_string(),
        )),
        "ping_and_roots" => {
            let pong = ctx.request_client("ping", json!({})).await?;
            let roots = ctx.request_client("roots/list", json!({})).await?;
            text(format!("ping answered {pong}; roots/list answered {roots}"))
        }
        "roots_later" => {
            let session = ctx.session.clone().ok_or_else(|| Flow::ToolError("no session".into()))?;
            let ms = u64_arg(ctx, "ms", 100);
            // Detached: the question comes when no call of the client is in flight. The answer
            // is a received message, so `--log` records it.
            tokio::spawn(async move {
                tokio::time::sleep(std::time::Duration::from_millis(ms)).await;
                let id = session.next_request_id();
                let (tx, rx) = tokio::sync::oneshot::channel();
                session.pending.lock().unwrap().insert(id.clone(), tx);
                let request = json!({"jsonrpc": "2.0", "id": id, "method": "roots/list", "params": {}});
                let out = session.stream.lock().unwrap().clone();
                if let Some(out) = out {
                    let _ = out.send(crate::rpc::Frame::Line(request.to_string()));
                }
                let _ = tokio::time::timeout(std::time::Duration::from_secs(10), rx).await;
            });
            text(format!("roots/list will be asked in {ms} ms"))
        }
        "slow" => {
            let ms = u64_arg(ctx, "ms", 1000);
            ctx.sleep_ms(ms).await?;
            text(format!("slept {ms} ms"))
        }
        "progress" => {
            let steps = u64_arg(ctx, "steps", 3);
            let delay = u64_arg(ctx, "delay_ms", 10);
            for step in 1..=steps {
                ctx.progress(step as f64, Some(steps as f64), Some(&format!("step {step}/{steps}")));
                ctx.sleep_ms(delay).await?;
            }
            let token = ctx.meta().get("progressToken").map_or("none".to_string(), Value::to_string);
            text(format!("progress done; progressToken={token}"))
        }
        "crash" => {
            eprintln!("mcp-mock: crash tool called, exiting with code 3");
            std::process::exit(3);
        }
        "garbage" => {
            let _ = ctx.out.send(crate::rpc::Frame::Line("this line is not JSON {{{".to_string()));
            text("garbage sent")
        }
        "stderr" => {
            // Raw bytes, not text: tests send what a real backend might (invalid UTF-8, lines
            // longer than any buffer, a flood nobody reads).
            let bytes = hex::decode(str_arg(ctx, "hex")).map_err(|e| RpcError::invalid_params(format!("hex: {e}")))?;
            let repeat = u64_arg(ctx, "repeat", 1);
            let mut err = std::io::stderr().lock();
            for _ in 0..repeat {
                std::io::Write::write_all(&mut err, &bytes).map_err(|e| RpcError::new(-32603, e.to_string()))?;
            }
            text(format!("wrote {} bytes to stderr", bytes.len() as u64 * repeat))
        }
        "huge" => text("x".repeat(u64_arg(ctx, "bytes", 1_000_000) as usize)),
        "bench" => Ok(bench(ctx)),
        "whoami" => {
            let version = match (&ctx.era, &ctx.session) {
                (Era::Legacy, Some(s)) => json!(s.version()),
                _ => ctx.meta().get(META_VERSION).cloned().unwrap_or(Value::Null),
            };
            let session_id = ctx.session.as_ref().and_then(|s| s.id.clone());
            let report = json!({
                "era": if ctx.era == Era::Modern { "modern" } else { "legacy" },
                "protocolVersion": version,
                "sessionId": session_id,
                "clientCapabilities": ctx.client_caps(),
                "meta": ctx.meta(),
                "headers": ctx.headers,
                // Which process answered, and the variables a per-user child was given
                // (`MOCK_*` only: the rest of the environment is no test's business).
                "pid": std::process::id(),
                "env": std::env::vars().filter(|(k, _)| k.starts_with("MOCK_")).collect::<std::collections::BTreeMap<_, _>>(),
            });
            Ok(ToolOutput::Value(json!({
                "content": [{"type": "text", "text": report.to_string()}], "structuredContent": report})))
        }
        "validated" => text(format!("validated called with {}", ctx.args())),
        "add_tool" => {
            let new = str_arg(ctx, "name");
            if new.is_empty() {
                return Err(RpcError::invalid_params("add_tool needs a name").into());
            }
            ctx.server.add_tool(new);
            ctx.server.list_changed("tools");
            text(format!("added tool {new}"))
        }
        "update_resource" => {
            let uri = str_arg(ctx, "uri");
            ctx.server.resource_updated(uri);
            text(format!("{uri} updated"))
        }
        "redescribe" => {
            let (tool, description) = (str_arg(ctx, "name"), str_arg(ctx, "description"));
            if ctx.server.tool(tool).is_none() {
                return Err(RpcError::invalid_params(format!("redescribe: no tool `{tool}`")).into());
            }
            ctx.server.redescribe(tool, description);
            ctx.server.list_changed("tools");
            text(format!("`{tool}` is now described as: {description}"))
        }
        "log" => {
            let level = ctx.args().get("level").and_then(Value::as_str).unwrap_or("info");
            ctx.log(level, str_arg(ctx, "message"));
            text("logged")
        }
        name if ctx.server.is_dynamic_tool(name) => text(format!("called {name}")),
        _ => Err(RpcError::invalid_params(format!("Unknown tool: {name}")).into()),
    }
}
