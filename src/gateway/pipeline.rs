//! The governed path of every request, in one function that reads top to bottom:
//! authenticate, parse strictly, name the target, RBAC, resolve it, kill switch, rate limit,
//! argument schema, forward — and the audit record, written whatever the outcome. Both front
//! doors come through here.

use std::sync::Arc;
use std::time::Instant;

use serde_json::Value;
use serde_json::value::RawValue;
use tracing::Instrument;

use super::Route;
use super::audited::{PendingAudit, error_code, is_tool_error};
use super::{Answer, Caller, Gateway, RequestCtx};
use crate::audit::{AuditRecord, Outcome};
use crate::config::SchemaErrors;
use crate::error::Refusal;
use crate::method::Method;
use crate::policy::Access;
use crate::protocol::Params;
use crate::schema::{self, Violation};

impl Gateway {
    /// Runs one request through the pipeline and audits it: every call, and every refusal.
    /// With `[telemetry]` on, all of it runs in the request's span (src/telemetry.rs).
    pub(super) async fn govern(
        self: &Arc<Self>,
        req: RequestCtx<'_>,
        method: Result<Method, &str>,
        params: Option<Box<RawValue>>,
    ) -> Result<Answer, Refusal> {
        use crate::telemetry::{Trace, TraceParent};
        if !crate::telemetry::enabled() {
            return self.govern_in_span(req, method, params).await;
        }
        // Over HTTP the front door decided whether the request is traced, and its span (the
        // parent of this one) took the client's context (front/http.rs): without it, the
        // request is not traced. Over stdio the decision is made here, from `_meta`.
        let trace = match (tracing::Span::current().is_none(), req.session.transport) {
            (false, _) => Trace::Root,
            (true, "stdio") => crate::telemetry::decide(TraceParent::from_params(params.as_deref()).as_ref()),
            (true, _) => Trace::Not,
        };
        if let Trace::Not = trace {
            return self.govern_in_span(req, method, params).await;
        }
        let label = method.map_or(crate::audit::UNKNOWN_METHOD, Method::as_str);
        let span = crate::telemetry::request_span(label, req.session.transport);
        trace.adopt(&span);
        let generation = match (req.ctx.modern, req.session.generation()) {
            (Some(_), _) => Some(crate::protocol::MODERN),
            (None, Some(g)) => Some(g.version()),
            (None, None) => None,
        };
        crate::telemetry::record_caller(&span, req.ctx.caller.client(), &req.session.id, generation);
        self.govern_in_span(req, method, params).instrument(span).await
    }

    async fn govern_in_span(
        self: &Arc<Self>,
        req: RequestCtx<'_>,
        method: Result<Method, &str>,
        params: Option<Box<RawValue>>,
    ) -> Result<Answer, Refusal> {
        let (session, ctx) = (req.session, req.ctx);
        let started = Instant::now();
        let session_id = (!session.id.is_empty()).then_some(session.id.as_str());
        let label = method.map_or(crate::audit::UNKNOWN_METHOD, Method::as_str);
        let mut audit =
            AuditRecord::start(label, session.transport, ctx.caller.client(), ctx.caller.roles(), session_id);
        audit.trace_id = crate::telemetry::current_trace_id();
        // Until the pipeline has answered, the record waits in a guard that writes it if this
        // future is dropped (the client went away mid-call).
        let mut pending = PendingAudit::new(self.clone(), audit, started, method.is_ok_and(Method::is_call));
        let result = self.pipeline(req, method, params, pending.record()).await;
        let mut audit = pending.take();
        if let Ok(Answer::Stream(body)) = result {
            // A streamed result is audited once its size and outcome are known: before it is
            // answered if it is small, at its end if not.
            return self.audited_stream(body, audit, started).await;
        }
        if method.is_ok_and(Method::is_call) || result.is_err() {
            audit.set_latency(started.elapsed());
            match &result {
                Ok(Answer::Result(r)) => {
                    audit.response_bytes = r.len() as u64;
                    // A schema refusal answered as a tool result keeps its own outcome.
                    if audit.outcome == Outcome::Ok && is_tool_error(r) {
                        audit.outcome = Outcome::ToolError;
                    }
                }
                Ok(Answer::Error(e)) => {
                    audit.response_bytes = e.len() as u64;
                    audit.outcome = Outcome::BackendError;
                    audit.error_code = error_code(e);
                }
                // The client cancelled the call (`notifications/cancelled`, or it closed the
                // session): nothing is answered.
                Ok(Answer::Cancelled) => audit.outcome = Outcome::Cancelled,
                Ok(Answer::Stream(_) | Answer::Listen(_)) => {}
                Err(r) => {
                    audit.outcome = r.outcome();
                    audit.error_code = Some(r.classify().0);
                }
            }
            if audit.outcome == Outcome::DeniedAuth {
                use crate::audit::throttle::Verdict;
                if let Verdict::Suppress { first } = self.denied_auth.check(ctx.peer, Instant::now()) {
                    self.count(&audit);
                    self.metrics.audit_suppressed(crate::metrics::SUPPRESSED_DENIED_AUTH);
                    if first {
                        let peer = ctx.peer.map(|p| p.to_string()).unwrap_or_default();
                        tracing::warn!(%peer, "requests without valid credentials from this source are no longer audited one by one (counted in sentinel_audit_suppressed_total)");
                    }
                    return result;
                }
            }
            self.finish_audit(audit).await?;
        }
        result
    }

    async fn pipeline(
        &self,
        req: RequestCtx<'_>,
        method: Result<Method, &str>,
        params: Option<Box<RawValue>>,
        audit: &mut AuditRecord,
    ) -> Result<Answer, Refusal> {
        let ctx = req.ctx;
        // 1. Authenticate: the front door checked the token; a refused caller stops here.
        let access = ctx.caller.access()?;
        let method = method.map_err(|name| Refusal::MethodNotFound(name.to_string()))?;
        // Methods the stateless revision removed are unknown to a stateless request.
        if ctx.modern.is_some() && method.removed_in_stateless() {
            return Err(Refusal::MethodNotFound(method.as_str().to_string()));
        }
        if !method.is_call() {
            return self.protocol_method(req.session, req.id, method, params, &access, ctx).await;
        }
        // A call that could leave no trace is not made (unless the operator chose fail-open).
        if !self.audit.writable() && !self.config().audit.fail_open {
            return Err(Refusal::AuditUnavailable);
        }

        // 2–8. Parse, name, RBAC, resolve, kill switch, rate limit, schema.
        let admitted =
            crate::stage_span!("sentinel.policy").in_scope(|| self.admit(ctx.caller, &access, method, params, audit));
        let (params, route) = match admitted? {
            Admission::Forward(params, route) => (params, route),
            Admission::Answered(answer) => return Ok(answer),
        };

        // 9. The owning backend, which must be up. The call is counted in until answered: a
        // reload that retires the backend lets it finish.
        let slot = self.slot(route.backend);
        let _in_flight = slot.enter();
        let backend = slot.backend().ok_or_else(|| Refusal::BackendUnavailable {
            backend: slot.name().to_string(),
            reason: "it is down or restarting; see the gateway log".into(),
            retry_after_ms: 1000,
        })?;
        // Subscriptions are counted per backend across clients: only the first subscriber and
        // the last one leaving reach it.
        if let Some(answer) = self.subscription(req.session, &backend, method, &route.name) {
            return Ok(answer);
        }
        let call = self.prepare(req, &backend, method, params, route, audit)?;

        // 10. Circuit breaker: a backend that keeps failing is refused fast rather than waited on.
        let permit = slot.breaker.acquire().map_err(|r| Refusal::BackendUnavailable {
            backend: backend.name().to_string(),
            reason: "its circuit is open after repeated failures".into(),
            retry_after_ms: r.retry_after_ms(),
        })?;

        // 11. Forward, relaying what the backend sends meanwhile to the client.
        let sent = Instant::now();
        let outcome = self.forward(&backend, call).await;
        audit.backend_latency_ms = Some(sent.elapsed().as_secs_f64() * 1000.0);
        if let Some(t) = outcome.as_ref().ok().and_then(|o| o.judge(permit)) {
            self.circuit_changed(backend.name(), t);
        }
        outcome?.into_answer(&backend)

        // 12. Audit: `govern` writes the record, whatever the outcome.
    }

    /// The policy stages of a call, without I/O: what the pipeline checks before anything is
    /// forwarded. Public so that the benchmark can measure the gateway's own cost per call.
    pub fn admit(
        &self,
        caller: &Caller,
        access: &Access,
        method: Method,
        params: Option<Box<RawValue>>,
        audit: &mut AuditRecord,
    ) -> Result<Admission, Refusal> {
        // 2. Parse strictly: duplicate keys and case variants are refused, `arguments` re-serialized.
        let mut params = Params::parse(params.as_deref())?;
        let arguments = strict_arguments(method, &mut params)?;
        let redactor = self.redactor.load();
        audit.arguments = arguments.as_ref().map(|a| redactor.redact(a));

        // 3. The name the call is about, as asked: a tool or prompt name, or a resource URI
        // (which must be in normal form, so that policy judges the resource and not a spelling).
        let name = target(method, &params)?;
        audit.set_target(method, &name, &redactor);
        let policy = self.policy.load();

        // 4. RBAC, on that name, before anything else is said about it: a caller who may not
        // use a name gets the same answer whether it exists, is switched off, or not.
        if !policy.rbac.allows(access, &name) {
            return Err(Refusal::Forbidden { tool: name, roles: caller.roles().to_vec() });
        }

        // 5. Resolve: which backend serves the name or URI, under what name there.
        let route = self.route(method, &mut params, name, arguments.as_ref())?;
        let backend_name = self.slot(route.backend).config.name.clone();
        audit.backend = Some(backend_name.clone());

        // 6. Kill switch.
        if policy.kill.is_killed(&route.exposed, &backend_name) {
            return Err(Refusal::Killed { tool: route.exposed, backend: backend_name });
        }

        // 7. Rate limit, per client per name (or per glob), for every call that reaches a
        // backend's work (without authentication, local callers share the client `anonymous`).
        if method.makes_backend_work() {
            let subject = caller.client().unwrap_or(super::ANONYMOUS);
            self.limiter.load().check(subject, &route.exposed).map_err(|l| Refusal::RateLimited {
                retry_after_ms: l.retry_after_ms(),
                limit: l.limit.clone(),
                scope: l.scope.clone(),
            })?;
        }

        // 8. Arguments against the tool's inputSchema, before any backend sees them.
        if method == Method::ToolsCall && policy.validation.enabled {
            if let Err(violations) = self.catalog().validators.validate_call(&route.exposed, arguments.as_ref()) {
                audit.outcome = Outcome::InvalidArgs;
                return schema_refusal(&route, violations, policy.validation.schema_errors).map(Admission::Answered);
            }
        }
        Ok(Admission::Forward(params, route))
    }
}

/// The name policy judges for a call, exactly as the client asked for it: `name` of a tool or
/// prompt, a resource's `uri`, or the prompt name or URI a completion's `ref` points at.
/// Resource URIs that RFC 3986 normalisation would change are refused (with the normal form
/// in the message): a glob written for `test://docs/*` must not be met by `test://docs/../x`,
/// and refusing keeps "what is authorized is what is forwarded" without the gateway choosing
/// a spelling the backend never saw.
fn target(method: Method, params: &Params) -> Result<String, Refusal> {
    let required = |k: &str| -> Result<String, Refusal> {
        params.str(k)?.ok_or_else(|| Refusal::InvalidParams(format!("`{k}` is required")))
    };
    let normal = |uri: String| -> Result<String, Refusal> {
        match crate::uri::normalize(&uri) {
            std::borrow::Cow::Borrowed(_) => Ok(uri),
            std::borrow::Cow::Owned(n) => Err(Refusal::InvalidParams(format!(
                "the resource URI is not in normal form (RFC 3986: dot-segments, percent-escapes, scheme case); send `{}`",
                crate::audit::bounded(&n, crate::audit::MAX_URI_BYTES)
            ))),
        }
    };
    match method {
        Method::ToolsCall | Method::PromptsGet => required("name"),
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => normal(required("uri")?),
        Method::Complete => {
            #[derive(serde::Deserialize)]
            struct Ref {
                #[serde(rename = "type")]
                kind: Option<String>,
                name: Option<String>,
                uri: Option<String>,
            }
            let r = params.0.get("ref").ok_or_else(|| Refusal::InvalidParams("`ref` is required".into()))?;
            let r: Ref =
                serde_json::from_str(r.get()).map_err(|_| Refusal::InvalidParams("`ref` must be an object".into()))?;
            match r.kind.as_deref() {
                Some("ref/prompt") => Ok(r.name.unwrap_or_default()),
                Some("ref/resource") => normal(r.uri.unwrap_or_default()),
                _ => Err(Refusal::InvalidParams("`ref.type` must be \"ref/prompt\" or \"ref/resource\"".into())),
            }
        }
        _ => Err(Refusal::MethodNotFound(method.as_str().to_string())),
    }
}

/// What the policy stages decided: forward the call, or it is already answered (arguments
/// refused as a tool result).
pub enum Admission {
    Forward(Params, Route),
    Answered(Answer),
}

/// Parses `arguments` (tools and prompts) strictly and puts back its re-serialized form, so
/// the backend gets exactly what was checked, never the client's raw bytes.
fn strict_arguments(method: Method, params: &mut Params) -> Result<Option<Value>, Refusal> {
    let known: &[&'static str] = match method {
        Method::ToolsCall | Method::PromptsGet => &["name", "arguments", "_meta"],
        Method::ResourcesRead | Method::ResourcesSubscribe | Method::ResourcesUnsubscribe => &["uri", "_meta"],
        _ => &["ref", "argument", "context", "_meta"],
    };
    params.check_case_variants(known)?;
    for raw in params.0.values() {
        crate::strict_json::check_unique_keys(raw.get()).map_err(|e| Refusal::InvalidParams(e.to_string()))?;
    }
    if !matches!(method, Method::ToolsCall | Method::PromptsGet) {
        return Ok(None);
    }
    let Some(raw) = params.0.get("arguments") else { return Ok(None) };
    let value: Value =
        serde_json::from_str(raw.get()).map_err(|e| Refusal::InvalidParams(format!("`arguments`: {e}")))?;
    if !value.is_object() {
        return Err(Refusal::InvalidParams("`arguments` must be an object".into()));
    }
    params.0.insert("arguments".into(), serde_json::value::to_raw_value(&value).expect("a value serializes"));
    Ok(Some(value))
}

/// Arguments that fail the schema: by default a tool result with `isError: true` listing every
/// violation (so a model can correct itself) and the violations in `_meta`; or -32602.
fn schema_refusal(route: &Route, violations: Vec<Violation>, mode: SchemaErrors) -> Result<Answer, Refusal> {
    match mode {
        SchemaErrors::JsonRpc => Err(Refusal::InvalidArguments {
            tool: route.exposed.clone(),
            summary: format!("{} violation(s) of the tool's inputSchema", violations.len()),
            violations: violations.into_iter().map(|v| (v.path, v.message)).collect(),
        }),
        SchemaErrors::Result => {
            let text = format!(
                "The arguments do not match the inputSchema of `{}`; nothing was run. Fix these and call again:\n{}",
                route.exposed,
                schema::violations_text(&violations)
            );
            let result = serde_json::json!({
                "content": [{ "type": "text", "text": text }],
                "isError": true,
                "_meta": { "dev.sentinel/violations": violations },
            });
            Ok(Answer::Result(result.to_string()))
        }
    }
}
