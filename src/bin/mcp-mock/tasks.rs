//! `--tasks`: tasks for the `task_work` tool, in both generations' forms. Session-based (the
//! 2025-11-25 experimental tasks): a task-augmented `tools/call` (params carry `task`) answers
//! at once with `{"task": Task}`; `tasks/get`, `tasks/result` (waits for the end), `tasks/list`
//! and `tasks/cancel` see it; a `notifications/tasks/status` goes to the session when it ends.
//! Stateless (the 2026-07-28 `io.modelcontextprotocol/tasks` extension, SEP-2663): a call from a
//! client that declared the extension answers `{"resultType": "task", ...Task}`; `tasks/get`
//! carries the `result` once completed; `tasks/update` and `tasks/cancel`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use serde_json::{Value, json};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::context::{Ctx, Flow};
use crate::rpc::{Frame, RpcError, notification};
use crate::tools::ToolOutput;

/// The tasks of one mock process.
#[derive(Default)]
pub struct Tasks {
    tasks: Mutex<BTreeMap<String, Task>>,
}

struct Task {
    state: watch::Receiver<Value>,
    cancel: CancellationToken,
    result: Arc<Mutex<Option<Value>>>,
}

/// The tool that may run as a task.
pub fn tool() -> Value {
    json!({
        "name": "task_work",
        "description": "Works for `ms` milliseconds, then answers with `text` (may run as a task)",
        "inputSchema": {"type": "object", "properties": {
            "ms": {"type": "integer", "minimum": 0}, "text": {"type": "string"}}},
        "execution": {"taskSupport": "optional"}
    })
}

pub fn capability() -> Value {
    json!({"list": {}, "cancel": {}, "requests": {"tools": {"call": {}}}})
}

fn now() -> String {
    // Seconds since the epoch are enough for a test backend (RFC 3339 needs no precision).
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_secs();
    format!("{secs}")
}

fn task_json(id: &str, status: &str, ttl: u64) -> Value {
    json!({"taskId": id, "status": status, "createdAt": now(), "lastUpdatedAt": now(), "ttl": ttl, "pollInterval": 100})
}

/// `task_work` called the ordinary way.
pub async fn run_plain(ctx: &Ctx) -> Result<ToolOutput, Flow> {
    let args = ctx.params.get("arguments").cloned().unwrap_or(json!({}));
    let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(100);
    ctx.sleep_ms(ms).await?;
    let text = args.get("text").and_then(Value::as_str).unwrap_or("done");
    crate::tools::text(format!("worked {ms} ms: {text}"))
}

impl Tasks {
    /// A task-augmented `tools/call` of `task_work`.
    pub fn create(&self, ctx: &Ctx) -> Result<ToolOutput, Flow> {
        if ctx.params.get("name").and_then(Value::as_str) != Some("task_work") {
            return Err(RpcError::method_not_found("this tool does not run as a task").into());
        }
        let args = ctx.params.get("arguments").cloned().unwrap_or(json!({}));
        let ms = args.get("ms").and_then(Value::as_u64).unwrap_or(100);
        let text = args.get("text").and_then(Value::as_str).unwrap_or("done").to_string();
        let ttl = ctx.params.pointer("/task/ttl").and_then(Value::as_u64).unwrap_or(60_000);
        let id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = watch::channel(task_json(&id, "working", ttl));
        let cancel = CancellationToken::new();
        let result = Arc::new(Mutex::new(None));
        let (c, r, task_id, stream) = (
            cancel.clone(),
            result.clone(),
            id.clone(),
            ctx.session.as_ref().and_then(|s| s.stream.lock().unwrap().clone()),
        );
        tokio::spawn(async move {
            let status = tokio::select! {
                () = tokio::time::sleep(std::time::Duration::from_millis(ms)) => {
                    *r.lock().unwrap() = Some(json!({
                        "content": [{"type": "text", "text": format!("worked {ms} ms: {text}")}],
                        "isError": false,
                        "_meta": {"io.modelcontextprotocol/related-task": {"taskId": task_id}}}));
                    "completed"
                }
                () = c.cancelled() => "cancelled",
            };
            let state = task_json(&task_id, status, ttl);
            let _ = tx.send(state.clone());
            if let Some(out) = stream {
                let _ = out.send(Frame::Line(notification("notifications/tasks/status", state)));
            }
        });
        self.tasks.lock().unwrap().insert(id.clone(), Task { state: rx, cancel, result });
        if ctx.era == crate::server::Era::Modern {
            let mut created = task_json(&id, "working", ttl);
            created["resultType"] = json!("task");
            return Ok(ToolOutput::Value(created));
        }
        Ok(ToolOutput::Value(json!({"task": task_json(&id, "working", ttl)})))
    }

    /// `tasks/get`, `tasks/result`, `tasks/list`, `tasks/cancel`.
    pub async fn handle(&self, ctx: &Ctx) -> Result<ToolOutput, Flow> {
        if ctx.method == "tasks/list" {
            let all: Vec<Value> = self.tasks.lock().unwrap().values().map(|t| t.state.borrow().clone()).collect();
            return Ok(ToolOutput::Value(json!({"tasks": all})));
        }
        let id = ctx.params.get("taskId").and_then(Value::as_str).unwrap_or_default().to_string();
        let (mut state, cancel, result) = {
            let tasks = self.tasks.lock().unwrap();
            let t = tasks.get(&id).ok_or_else(|| RpcError::invalid_params(format!("unknown task {id}")))?;
            (t.state.clone(), t.cancel.clone(), t.result.clone())
        };
        let modern = ctx.era == crate::server::Era::Modern;
        match ctx.method.as_str() {
            // The extension's tasks/get carries the result once the task completed.
            "tasks/get" if modern => {
                let mut t = state.borrow().clone();
                if let Some(r) = result.lock().unwrap().clone() {
                    t["result"] = r;
                }
                t["resultType"] = json!("complete");
                Ok(ToolOutput::Value(t))
            }
            "tasks/update" => Ok(ToolOutput::Value(json!({"resultType": "complete"}))),
            "tasks/get" => Ok(ToolOutput::Value(state.borrow().clone())),
            "tasks/cancel" => {
                cancel.cancel();
                let _ = state.wait_for(|s| s["status"] != "working").await;
                Ok(ToolOutput::Value(state.borrow().clone()))
            }
            "tasks/result" => {
                let _ = state.wait_for(|s| s["status"] != "working").await;
                let done = result.lock().unwrap().clone();
                match done {
                    Some(r) => Ok(ToolOutput::Value(r)),
                    None => Err(RpcError::invalid_params(format!("task {id} was cancelled")).into()),
                }
            }
            m => Err(RpcError::method_not_found(m).into()),
        }
    }
}
