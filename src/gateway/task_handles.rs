//! Backends' tasks (MCP 2025-11-25 experimental tasks) through the gateway. A session-based
//! client's task-augmented `tools/call` goes down the governed path like any call; when the
//! backend answers with a `CreateTaskResult`, its task id is swapped for one of the gateway's,
//! remembered with the backend, the tool and the subject that created it. `tasks/get`,
//! `tasks/result` and `tasks/cancel` then reach that backend only for that subject, and only
//! while the caller may still use the tool (RBAC) and the tool is not switched off; `tasks/list`
//! lists the subject's own tasks; a backend's `notifications/tasks/status` reaches the session
//! that created the task. When a task is seen to end, one audit record says how (the tool's
//! name, outcome, and the time since it was created).
//!
//! Stateless clients get the same for the 2026-07-28 tasks extension
//! (`io.modelcontextprotocol/tasks`, SEP-2663): a client that declared it may get a task handle
//! (`resultType: "task"`) for a `tools/call`; `tasks/get` (which carries the result once the task
//! completed), `tasks/update` and `tasks/cancel` follow it. A client reaches only tasks its own
//! generation created.
//!
//! Across generations the task is bridged: a stateless client's call of a session-based
//! backend's task-capable tool (`execution.taskSupport`) is sent task-augmented, and the
//! backend's `{"task": Task}` is handed on flattened as `resultType: "task"`; its `tasks/get`
//! asks the backend's `tasks/get`, and once completed its `tasks/result`, to carry the result.
//! A session-based client's task-augmented call of a stateless backend is sent declaring the
//! extension, the handle handed on as `{"task": Task}`; its `tasks/result` polls the backend's
//! `tasks/get` until the task ends. `tasks/update` has no 2025-11-25 counterpart.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::Value;

use super::{Answer, Ctx, Gateway};
use crate::audit::{AuditRecord, Outcome};
use crate::backend::{CallOpts, Reply};
use crate::error::Refusal;
use crate::method::Method;
use crate::policy::Access;
use crate::session::Session;

/// How long a task is remembered without a `ttl` of its own, and at most.
const DEFAULT_TTL: Duration = Duration::from_secs(60 * 60);
const MAX_TTL: Duration = Duration::from_secs(24 * 60 * 60);
/// Tasks remembered per subject: a client creating them without end cannot grow the table.
const MAX_PER_SUBJECT: usize = 1000;

/// One backend task as the gateway knows it.
#[derive(Clone)]
pub(super) struct Handle {
    slot: usize,
    backend: String,
    backend_task: String,
    subject: Option<String>,
    session: String,
    tool: String,
    /// Created by a stateless client or a session-based one: each reaches only its own.
    stateless: bool,
    /// The backend's kind of task: the 2026-07-28 extension's (true) or 2025-11-25's.
    extension: bool,
    created: Instant,
    expires: Instant,
    audited: bool,
}

/// The tasks created through this gateway, by the gateway's task id.
#[derive(Default)]
pub(super) struct TaskHandles {
    map: Mutex<HashMap<String, Handle>>,
}

impl TaskHandles {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Handle>> {
        self.map.lock().expect("task handles lock")
    }

    /// Remembers a backend's new task; the gateway's id for it, or `None` when the subject
    /// already has as many as it may.
    fn register(&self, h: Handle) -> Option<String> {
        let mut map = self.lock();
        let now = Instant::now();
        map.retain(|_, h| h.expires > now);
        if map.values().filter(|o| o.subject == h.subject).count() >= MAX_PER_SUBJECT {
            return None;
        }
        let id = format!("sentinel-task-{}", uuid::Uuid::new_v4());
        map.insert(id.clone(), h);
        Some(id)
    }

    /// The task `id`, if `subject` created it from a client of the same generation and it is
    /// still remembered.
    fn get(&self, id: &str, subject: Option<&str>, stateless: bool) -> Option<Handle> {
        self.lock()
            .get(id)
            .filter(|h| h.subject.as_deref() == subject && h.stateless == stateless && h.expires > Instant::now())
            .cloned()
    }

    /// The gateway's id of a backend's task, and its handle.
    fn by_backend(&self, slot: usize, backend_task: &str) -> Option<(String, Handle)> {
        self.lock()
            .iter()
            .find(|(_, h)| h.slot == slot && h.backend_task == backend_task)
            .map(|(k, h)| (k.clone(), h.clone()))
    }

    /// Marks the task's end as audited; true the first time.
    fn first_end(&self, id: &str) -> bool {
        self.lock().get_mut(id).is_some_and(|h| !std::mem::replace(&mut h.audited, true))
    }

    fn of_subject(&self, subject: Option<&str>) -> Vec<(String, Handle)> {
        let now = Instant::now();
        self.lock()
            .iter()
            .filter(|(_, h)| h.subject.as_deref() == subject && !h.stateless && h.expires > now)
            .map(|(k, h)| (k.clone(), h.clone()))
            .collect()
    }
}

/// Whether a `tools/call`'s answer may be a task handle: a session-based client's call carries
/// `task` (2025-11-25); a stateless client declared the tasks extension in its capabilities
/// (2026-07-28, where the server decides).
pub(super) fn may_become_task(
    stateless: Option<&crate::protocol::StatelessMeta>,
    params: &crate::protocol::Params,
) -> bool {
    match stateless {
        None => params.0.contains_key("task"),
        Some(m) => m.capabilities.pointer("/extensions/io.modelcontextprotocol~1tasks").is_some(),
    }
}

/// Replaces the string at `pointer` (a task id) in a JSON text, if it is `from`.
fn swap_id(text: &str, pointer: &str, from: &str, to: &str) -> Option<String> {
    let mut v: Value = serde_json::from_str(text).ok()?;
    let slot = v.pointer_mut(pointer)?;
    if slot.as_str() != Some(from) {
        return None;
    }
    *slot = Value::String(to.to_string());
    Some(v.to_string())
}

/// Whether a stateless client's call of a session-based backend may go task-augmented: the
/// client declared the extension and the backend takes task-augmented tool calls (then the tool
/// must also allow it: [`may_run_as_task`]).
pub(super) fn bridge_as_task(stateless: Option<&crate::protocol::StatelessMeta>, backend_caps: &Value) -> bool {
    stateless.is_some_and(|m| m.capabilities.pointer("/extensions/io.modelcontextprotocol~1tasks").is_some())
        && backend_caps.pointer("/tasks/requests/tools/call").is_some()
}

/// Whether a tool's definition lets it run as a task (`execution.taskSupport`).
pub(super) fn may_run_as_task(tool_json: Option<&str>) -> bool {
    tool_json.and_then(|t| serde_json::from_str::<Value>(t).ok()).is_some_and(|t| {
        matches!(t.pointer("/execution/taskSupport").and_then(Value::as_str), Some("optional" | "required"))
    })
}

/// Capabilities declaring the tasks extension, for a session-based client's call bridged to a
/// stateless backend.
pub(super) fn with_extension(capabilities: Value) -> Value {
    let mut c = if capabilities.is_object() { capabilities } else { serde_json::json!({}) };
    c["extensions"]["io.modelcontextprotocol/tasks"] = serde_json::json!({});
    c
}

/// A Task as the other generation shows it (a create result): flattened with
/// `resultType: "task"` for a stateless client, wrapped as `{"task": …}` for a session-based one,
/// in either case without the fields only the extension's `tasks/get` has.
fn task_for(client_stateless: bool, task: Value) -> Value {
    let task = plain_task(task);
    if client_stateless {
        let mut t = task;
        t["resultType"] = Value::String("task".into());
        t
    } else {
        serde_json::json!({ "task": task })
    }
}

/// A Task without `result`, `error`, `inputRequests` and `resultType` (2025-11-25's shape).
fn plain_task(mut task: Value) -> Value {
    if let Some(o) = task.as_object_mut() {
        for k in ["result", "error", "inputRequests", "resultType"] {
            o.remove(k);
        }
    }
    task
}

impl Gateway {
    /// A backend answered a task-augmented `tools/call` with a `CreateTaskResult`: remember the
    /// task and hand the client the gateway's id for it, in its own generation's shape. Any
    /// other answer is passed on as is.
    pub(super) fn adopt_task(
        &self,
        result: String,
        slot: usize,
        tool: &str,
        session: &Session,
        subject: Option<&str>,
        client_stateless: bool,
    ) -> Result<String, Refusal> {
        let v: Value = match serde_json::from_str(&result) {
            Ok(v) => v,
            Err(_) => return Ok(result),
        };
        // 2025-11-25: `{"task": Task}`; the 2026-07-28 extension: the Task itself, as
        // `resultType: "task"`.
        let at = if v["resultType"] == "task" { "" } else { "/task" };
        let Some(backend_task) = v.pointer(&format!("{at}/taskId")).and_then(Value::as_str) else { return Ok(result) };
        let ttl = v
            .pointer(&format!("{at}/ttl"))
            .and_then(Value::as_u64)
            .map_or(DEFAULT_TTL, Duration::from_millis)
            .min(MAX_TTL);
        let now = Instant::now();
        let handle = Handle {
            slot,
            backend: self.slot(slot).name().to_string(),
            backend_task: backend_task.to_string(),
            subject: subject.map(str::to_string),
            session: session.id.clone(),
            tool: tool.to_string(),
            stateless: client_stateless,
            extension: v["resultType"] == "task",
            created: now,
            expires: now + ttl,
            audited: false,
        };
        let id = self.task_handles.register(handle).ok_or_else(|| {
            Refusal::InvalidRequest(format!("too many tasks ({MAX_PER_SUBJECT}); let some finish or expire first"))
        })?;
        let extension = v["resultType"] == "task";
        if extension == client_stateless {
            return Ok(swap_id(&result, &format!("{at}/taskId"), backend_task, &id).unwrap_or(result));
        }
        // Across generations: the other shape.
        let mut task = if extension { v } else { v["task"].clone() };
        task["taskId"] = Value::String(id);
        Ok(task_for(client_stateless, task).to_string())
    }

    /// `tasks/get`, `tasks/result`, `tasks/cancel` and `tasks/list` of a session-based client.
    pub(super) async fn task_request(
        &self,
        method: Method,
        task: Option<String>,
        mut params: crate::protocol::Params,
        access: &Access,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        // `tasks/update` is the extension's; `tasks/result` and `tasks/list` the session-based
        // protocol's (a stateless request for those never gets here).
        if method == Method::TasksUpdate && ctx.stateless.is_none() {
            return Err(Refusal::MethodNotFound(method.as_str().into()));
        }
        let subject = ctx.caller.subject();
        let Some(id) = task else { return self.task_list(subject).await };
        let unknown = || Refusal::InvalidParams(format!("Unknown task `{id}`"));
        let h = self.task_handles.get(&id, subject, ctx.stateless.is_some()).ok_or_else(unknown)?;
        // The same judgement as the call that created it, made again: a caller who lost the
        // tool, or a tool switched off since, reaches its task no more.
        let policy = self.policy.load();
        if !policy.rbac.allows(access, &h.tool) {
            return Err(Refusal::Forbidden { tool: h.tool, roles: ctx.caller.roles().to_vec() });
        }
        if policy.kill.is_killed(&h.tool, &h.backend) {
            return Err(Refusal::Killed { tool: h.tool, backend: h.backend });
        }
        if h.extension != h.stateless {
            return self.bridged_task_request(method, &id, &h, ctx).await;
        }
        params.0.insert("taskId".into(), crate::backend::raw(Value::String(h.backend_task.clone()).to_string()));
        let caps = ctx.stateless.map(|m| m.capabilities.clone());
        let reply = self.to_task_backend(&h, method.as_str(), params, caps).await?;
        match reply {
            Reply::Result(r) => {
                let r = r.get();
                let pointer = if method == Method::TasksResult {
                    "/_meta/io.modelcontextprotocol~1related-task/taskId"
                } else {
                    "/taskId"
                };
                let out = swap_id(r, pointer, &h.backend_task, &id).unwrap_or_else(|| r.to_string());
                let ended = match method {
                    Method::TasksResult => Some(tool_outcome(&out)),
                    _ => terminal(&out),
                };
                if let Some(outcome) = ended {
                    self.audit_task_end(&id, &h, outcome, ctx).await;
                }
                Ok(Answer::Result(out))
            }
            Reply::Error(e) => {
                if method == Method::TasksResult {
                    self.audit_task_end(&id, &h, Outcome::BackendError, ctx).await;
                }
                Ok(Answer::Error(e.get().to_string()))
            }
            Reply::Streamed(_) => unreachable!("asked for whole"),
        }
    }

    /// A task request to the backend that holds the task, over the connection of the task's
    /// kind (the stateless one for the extension's tasks, the session for 2025-11-25's).
    async fn to_task_backend(
        &self,
        h: &Handle,
        method: &str,
        params: crate::protocol::Params,
        capabilities: Option<Value>,
    ) -> Result<Reply, Refusal> {
        let slot = self.slot(h.slot);
        let backend = slot.backend().ok_or_else(|| Refusal::BackendUnavailable {
            backend: h.backend.clone(),
            reason: "it is down or restarting; see the gateway log".into(),
            retry_after_ms: 1000,
        })?;
        let backend = if h.extension { &backend } else { backend.for_session_based_client() };
        let capabilities = if h.extension { Some(with_extension(capabilities.unwrap_or_default())) } else { None };
        let opts = CallOpts { client_capabilities: capabilities, ..CallOpts::default() };
        backend.call(method, params, &opts).await.map_err(|e| match e {
            crate::backend::BackendError::Timeout => Refusal::BackendTimeout {
                backend: h.backend.clone(),
                timeout_ms: backend.config.timeout.as_millis() as u64,
            },
            crate::backend::BackendError::Unavailable(reason) | crate::backend::BackendError::Unreachable(reason) => {
                Refusal::BackendUnavailable { backend: h.backend.clone(), reason, retry_after_ms: 1000 }
            }
        })
    }

    /// The subject's own tasks, as their backends list them now.
    async fn task_list(&self, subject: Option<&str>) -> Result<Answer, Refusal> {
        let mine = self.task_handles.of_subject(subject);
        let mut slots: Vec<usize> = mine.iter().map(|(_, h)| h.slot).collect();
        slots.sort_unstable();
        slots.dedup();
        let mut tasks = Vec::new();
        // The extension has no tasks/list: a bridged task is asked for itself.
        for (id, h) in mine.iter().filter(|(_, h)| h.extension) {
            let params = task_params(&h.backend_task);
            if let Ok(Reply::Result(r)) = self.to_task_backend(h, Method::TasksGet.as_str(), params, None).await {
                let mut t = plain_task(serde_json::from_str(r.get()).unwrap_or_default());
                t["taskId"] = Value::String(id.clone());
                tasks.push(t);
            }
        }
        for slot in slots {
            let Some((_, any)) = mine.iter().find(|(_, h)| h.slot == slot && !h.extension) else { continue };
            let listed =
                self.to_task_backend(any, Method::TasksList.as_str(), crate::protocol::Params::default(), None);
            let Ok(Reply::Result(r)) = listed.await else {
                continue;
            };
            let listed: Value = serde_json::from_str(r.get()).unwrap_or_default();
            for mut t in listed["tasks"].as_array().cloned().unwrap_or_default() {
                let backend_task = t["taskId"].as_str().unwrap_or_default().to_string();
                if let Some((id, _)) = mine.iter().find(|(_, h)| h.slot == slot && h.backend_task == backend_task) {
                    t["taskId"] = Value::String(id.clone());
                    tasks.push(t);
                }
            }
        }
        Ok(Answer::Result(serde_json::json!({ "tasks": tasks }).to_string()))
    }

    /// One audit record for a task's end: the tool's call, as it turned out.
    async fn audit_task_end(&self, id: &str, h: &Handle, outcome: Outcome, ctx: Ctx<'_>) {
        if !self.task_handles.first_end(id) {
            return;
        }
        let session = (!h.session.is_empty()).then_some(h.session.as_str());
        let mut record = AuditRecord::start("tools/call", "http", ctx.caller.client(), ctx.caller.roles(), session);
        record.tool = Some(h.tool.clone());
        record.backend = Some(h.backend.clone());
        record.outcome = outcome;
        record.set_latency(h.created.elapsed());
        let _ = self.finish_audit(record).await;
    }

    /// A backend's `notifications/tasks/status`: to the session that created the task, with the
    /// gateway's id.
    pub(super) fn task_status(&self, slot: usize, params: &str) {
        let Ok(v) = serde_json::from_str::<Value>(params) else { return };
        let Some(backend_task) = v["taskId"].as_str() else { return };
        let Some((id, h)) = self.task_handles.by_backend(slot, backend_task) else { return };
        let Some(out) = self.sessions.get(&h.session).and_then(|s| s.outbound()) else { return };
        let params = swap_id(params, "/taskId", backend_task, &id).unwrap_or_else(|| params.to_string());
        let _ = out.send(crate::jsonrpc::notification(crate::method::Notification::TaskStatus.as_str(), &params));
    }
}

/// A tool result's outcome: a tool error or not.
fn tool_outcome(result: &str) -> Outcome {
    if super::audited::is_tool_error(result) { Outcome::ToolError } else { Outcome::Ok }
}

/// `{"taskId": id}` as params.
fn task_params(backend_task: &str) -> crate::protocol::Params {
    let mut p = crate::protocol::Params::default();
    p.0.insert("taskId".into(), crate::backend::raw(Value::String(backend_task.to_string()).to_string()));
    p
}

/// How often a session-based client's `tasks/result` of an extension task polls its `tasks/get`,
/// at least and at most (the backend's `pollInterval` in between).
const POLL_MIN: Duration = Duration::from_millis(50);
const POLL_MAX: Duration = Duration::from_secs(2);

impl Gateway {
    /// A task request across generations: the client's method answered with the backend's.
    async fn bridged_task_request(
        &self,
        method: Method,
        id: &str,
        h: &Handle,
        ctx: Ctx<'_>,
    ) -> Result<Answer, Refusal> {
        let call = |m: Method| self.to_task_backend(h, m.as_str(), task_params(&h.backend_task), None);
        let as_value = |r: Reply| -> Result<Value, Answer> {
            match r {
                Reply::Result(r) => Ok(serde_json::from_str(r.get()).unwrap_or_default()),
                Reply::Error(e) => Err(Answer::Error(e.get().to_string())),
                Reply::Streamed(_) => unreachable!("asked for whole"),
            }
        };
        let mine = |mut t: Value| {
            t["taskId"] = Value::String(id.to_string());
            t
        };
        match (h.stateless, method) {
            // A stateless client of a 2025-11-25 task: tasks/get carries the result once done.
            (true, Method::TasksGet | Method::TasksCancel) => {
                let t = match as_value(call(method).await?) {
                    Ok(t) => t,
                    Err(answer) => return Ok(answer),
                };
                let mut out = mine(plain_task(t.clone()));
                out["resultType"] = Value::String("complete".into());
                match t["status"].as_str() {
                    Some("completed") => match as_value(call(Method::TasksResult).await?) {
                        Ok(mut r) => {
                            if let Some(meta) = r.pointer_mut("/_meta/io.modelcontextprotocol~1related-task") {
                                meta["taskId"] = Value::String(id.to_string());
                            }
                            self.audit_task_end(id, h, tool_outcome(&r.to_string()), ctx).await;
                            out["result"] = r;
                        }
                        Err(Answer::Error(e)) => out["error"] = serde_json::from_str(&e).unwrap_or_default(),
                        Err(_) => {}
                    },
                    Some("failed") => self.audit_task_end(id, h, Outcome::BackendError, ctx).await,
                    Some("cancelled") => self.audit_task_end(id, h, Outcome::Cancelled, ctx).await,
                    _ => {}
                }
                Ok(Answer::Result(out.to_string()))
            }
            (true, _) => Err(Refusal::InvalidRequest(format!(
                "`{}` has no counterpart for this task: its backend speaks MCP 2025-11-25",
                method.as_str()
            ))),
            // A session-based client of an extension task.
            (false, Method::TasksGet | Method::TasksCancel) => {
                let t = match as_value(call(method).await?) {
                    Ok(t) => t,
                    Err(answer) => return Ok(answer),
                };
                if let Some(outcome) = terminal(&t.to_string()) {
                    self.audit_task_end(id, h, outcome, ctx).await;
                }
                Ok(Answer::Result(mine(plain_task(t)).to_string()))
            }
            (false, Method::TasksResult) => {
                let deadline = tokio::time::Instant::now() + self.slot(h.slot).config.timeout;
                loop {
                    let t = match as_value(call(Method::TasksGet).await?) {
                        Ok(t) => t,
                        Err(answer) => return Ok(answer),
                    };
                    match t["status"].as_str() {
                        Some("completed") => {
                            let mut r = t["result"].clone();
                            r["_meta"]["io.modelcontextprotocol/related-task"] = serde_json::json!({ "taskId": id });
                            self.audit_task_end(id, h, tool_outcome(&r.to_string()), ctx).await;
                            return Ok(Answer::Result(r.to_string()));
                        }
                        Some(status @ ("failed" | "cancelled")) => {
                            let outcome = if status == "failed" { Outcome::BackendError } else { Outcome::Cancelled };
                            self.audit_task_end(id, h, outcome, ctx).await;
                            let e = if t["error"].is_object() {
                                t["error"].clone()
                            } else {
                                serde_json::json!({ "code": crate::jsonrpc::code::INTERNAL_ERROR, "message": format!("the task was {status}") })
                            };
                            return Ok(Answer::Error(e.to_string()));
                        }
                        _ => {}
                    }
                    let every =
                        t["pollInterval"].as_u64().map_or(POLL_MIN, Duration::from_millis).clamp(POLL_MIN, POLL_MAX);
                    if tokio::time::Instant::now() + every > deadline {
                        return Err(Refusal::BackendTimeout {
                            backend: h.backend.clone(),
                            timeout_ms: self.slot(h.slot).config.timeout.as_millis() as u64,
                        });
                    }
                    tokio::time::sleep(every).await;
                }
            }
            (false, _) => Err(Refusal::MethodNotFound(method.as_str().into())),
        }
    }
}

/// The outcome a task's state says it ended with, if it ended.
fn terminal(task: &str) -> Option<Outcome> {
    let v: Value = serde_json::from_str(task).ok()?;
    match v["status"].as_str()? {
        // The extension's `tasks/get` carries the tool's result once completed.
        "completed" if v["result"].is_object() => Some(tool_outcome(&v["result"].to_string())),
        "completed" => Some(Outcome::Ok),
        "failed" => Some(Outcome::BackendError),
        "cancelled" => Some(Outcome::Cancelled),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_shown_across_generations_has_the_other_shape() {
        let t = serde_json::json!({"taskId": "g", "status": "completed", "result": {"content": []}, "resultType": "complete"});
        assert_eq!(task_for(false, t.clone()), serde_json::json!({"task": {"taskId": "g", "status": "completed"}}));
        assert_eq!(task_for(true, t), serde_json::json!({"taskId": "g", "status": "completed", "resultType": "task"}));
        let caps = with_extension(serde_json::json!({"sampling": {}}));
        assert!(caps["sampling"].is_object() && caps["extensions"]["io.modelcontextprotocol/tasks"].is_object());
        let stateless = crate::protocol::StatelessMeta {
            version: "2026-07-28".into(),
            capabilities: with_extension(serde_json::Value::Null),
            log_level: None,
        };
        let backend = serde_json::json!({"tasks": {"requests": {"tools": {"call": {}}}}});
        let tool = |support: &str| format!(r#"{{"name":"t","execution":{{"taskSupport":"{support}"}}}}"#);
        assert!(bridge_as_task(Some(&stateless), &backend));
        assert!(!bridge_as_task(Some(&stateless), &serde_json::json!({})) && !bridge_as_task(None, &backend));
        assert!(may_run_as_task(Some(&tool("optional"))) && may_run_as_task(Some(&tool("required"))));
        assert!(!may_run_as_task(Some(&tool("forbidden"))) && !may_run_as_task(Some(r#"{"name":"t"}"#)));
    }

    #[test]
    fn ids_are_swapped_only_where_they_are_the_backends() {
        let r = r#"{"task":{"taskId":"b-1","status":"working"}}"#;
        assert_eq!(
            swap_id(r, "/task/taskId", "b-1", "g-1").unwrap(),
            r#"{"task":{"taskId":"g-1","status":"working"}}"#
        );
        assert!(swap_id(r, "/task/taskId", "other", "g-1").is_none());
        let meta = r#"{"content":[],"_meta":{"io.modelcontextprotocol/related-task":{"taskId":"b-1"}}}"#;
        assert!(
            swap_id(meta, "/_meta/io.modelcontextprotocol~1related-task/taskId", "b-1", "g-1").unwrap().contains("g-1")
        );
    }

    #[test]
    fn a_subject_sees_only_its_own_tasks_and_has_a_cap() {
        let t = TaskHandles::default();
        let h = |sub: &str| Handle {
            slot: 0,
            backend: "b".into(),
            backend_task: uuid::Uuid::new_v4().to_string(),
            subject: Some(sub.into()),
            session: String::new(),
            tool: "b__t".into(),
            stateless: false,
            extension: false,
            created: Instant::now(),
            expires: Instant::now() + DEFAULT_TTL,
            audited: false,
        };
        let id = t.register(h("alice")).unwrap();
        assert!(t.get(&id, Some("alice"), false).is_some());
        assert!(t.get(&id, Some("bob"), false).is_none() && t.get(&id, None, false).is_none());
        assert!(t.get(&id, Some("alice"), true).is_none(), "a session-based client's task only");
        assert!(t.first_end(&id) && !t.first_end(&id), "one end record");
        for _ in 1..MAX_PER_SUBJECT {
            t.register(h("alice")).unwrap();
        }
        assert!(t.register(h("alice")).is_none(), "capped");
        assert!(t.register(h("bob")).is_some(), "per subject");
    }
}
