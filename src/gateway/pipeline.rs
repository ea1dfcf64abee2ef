//! The governed path of every request, in one function that reads top to bottom:
//! authenticate, the request as read (strictly, by src/request.rs), name the target, RBAC,
//! resolve it, kill switch, rate limit, argument schema, the backend, its circuit breaker,
//! forward — and the audit record, written whatever the outcome. Both front doors come
//! through here.

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::Route;
use super::audited::{PendingAudit, error_code, is_tool_error};
use super::meta::Meta;
use super::per_user;
use super::{Answer, Caller, Gateway, RequestCtx};
use crate::audit::{AuditRecord, Outcome};
use crate::config::{Discovery, SchemaErrors};
use crate::error::Refusal;
use crate::method::Method;
use crate::policy::Access;
use crate::request::{BadRequest, Call, Request, method_of};
use crate::schema::{self, Violation};

impl Gateway {
    /// Runs one request through the pipeline and audits it: every call, and every refusal.
    /// With `[telemetry]` on, all of it runs in the request's span (src/telemetry.rs).
    pub(super) async fn govern(
        self: &Arc<Self>,
        req: RequestCtx<'_>,
        request: Result<Request, Box<BadRequest>>,
    ) -> Result<Answer, Refusal> {
        use crate::telemetry::Trace;
        if !crate::telemetry::enabled() {
            return self.govern_in_span(req, request).await;
        }
        // Over HTTP the front door decided whether the request is traced, and its span (the
        // parent of this one) took the client's context (front/http.rs): without it, the
        // request is not traced. Over stdio the decision is made here, from `_meta`.
        let trace = match (tracing::Span::current().is_none(), req.session.transport) {
            (false, _) => Trace::Root,
            (true, "stdio") => crate::telemetry::decide(req.ctx.trace_parent),
            (true, _) => Trace::Not,
        };
        if let Trace::Not = trace {
            return self.govern_in_span(req, request).await;
        }
        let label = method_of(&request).map_or(crate::audit::UNKNOWN_METHOD, Method::as_str);
        let span = crate::telemetry::request_span(label, req.session.transport);
        trace.adopt(&span);
        let version = req.generation().map(crate::protocol::Generation::version);
        crate::telemetry::record_caller(&span, req.ctx.caller.client(), &req.session.id, version);
        self.govern_in_span(req, request).instrument(span).await
    }

    async fn govern_in_span(
        self: &Arc<Self>,
        req: RequestCtx<'_>,
        request: Result<Request, Box<BadRequest>>,
    ) -> Result<Answer, Refusal> {
        let (session, ctx) = (req.session, req.ctx);
        let started = Instant::now();
        let method = method_of(&request);
        let session_id = (!session.id.is_empty()).then_some(session.id.as_str());
        let label = method.map_or(crate::audit::UNKNOWN_METHOD, Method::as_str);
        let is_call = method.is_some_and(Method::is_call);
        let mut audit =
            AuditRecord::start(label, session.transport, ctx.caller.client(), ctx.caller.roles(), session_id);
        audit.trace_id = crate::telemetry::current_trace_id();
        audit.profile = ctx.profile.map(str::to_string);
        // Until the pipeline has answered, the record waits in a guard that writes it if this
        // future is dropped (the client went away mid-call).
        let mut pending = PendingAudit::new(self.clone(), audit, started, is_call);
        let result = self.pipeline(req, request, pending.record()).await;
        let mut audit = pending.take();
        if let Ok(Answer::Stream(body)) = result {
            // A streamed result is audited once its size and outcome are known: before it is
            // answered if it is small, at its end if not.
            return self.audited_stream(body, audit, started).await;
        }
        if is_call || result.is_err() {
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
        request: Result<Request, Box<BadRequest>>,
        audit: &mut AuditRecord,
    ) -> Result<Answer, Refusal> {
        let ctx = req.ctx;
        // 1. Authenticate: the front door checked the token; a refused caller stops here.
        let access = ctx.caller.access()?.in_profile(ctx.profile);
        // 2. The request as its front door read it (src/request.rs): a method the gateway does
        // not serve, one the stateless revision removed, or params that cannot be read for it
        // are refused here, after authentication.
        if let Some(m) = method_of(&request).filter(|m| ctx.stateless.is_some() && m.removed_in_stateless()) {
            return Err(Refusal::MethodNotFound(m.as_str().into()));
        }
        let call = match request {
            Ok(Request::Other(name)) => return Err(Refusal::MethodNotFound(name)),
            Ok(Request::Call(call)) => Ok(call),
            Ok(own) => return self.protocol_method(req.session, req.id, own, &access, ctx).await,
            Err(bad) if !bad.method.is_call() => return Err(bad.refusal),
            Err(bad) => Err(bad),
        };
        // A call that could leave no trace is not made (unless the operator chose fail-open).
        if !self.audit.writable() && !self.config().audit.fail_open {
            return Err(Refusal::AuditUnavailable);
        }
        let call = call.map_err(|bad| {
            audit.arguments = bad.arguments.as_ref().map(|a| self.redactor.load().redact(a));
            bad.refusal
        })?;
        // In `discovery = "meta"`, search and describe are answered here and `call_tool`
        // becomes the call it names, which the stages below judge as a direct call.
        let call = match self.policy.load().discovery(&access) {
            Discovery::Meta if call.method == Method::ToolsCall => match self.meta(&access, call, audit)? {
                Meta::Answered(result) => return Ok(Answer::Result(result)),
                Meta::Call(call) => call,
            },
            _ => call,
        };

        // 3–8. Name, RBAC, resolve, kill switch, rate limit, schema.
        let admitted =
            self.admit(ctx.caller, &access, call, audit).instrument(crate::stage_span!("sentinel.policy")).await;
        let (call, route) = match admitted? {
            Admission::Forward(call, route) => (call, route),
            Admission::Answered(answer) => return Ok(answer),
        };
        let method = call.method;

        // 9. The owning backend, which must be up. The call is counted in until answered: a
        // reload that retires the backend lets it finish.
        let slot = self.slot(route.backend);
        let _in_flight = slot.enter();
        // A backend acting for each caller is served by the caller's own instance, with the
        // caller's credential (src/gateway/per_user.rs); without one, nothing is sent.
        audit.credential_mode = Some(slot.config.credentials.as_str().into());
        let serving = self.serving(route.backend, &slot, ctx.caller).await?;
        let backend = serving.backend().clone();
        // Subscriptions are counted per backend across clients: only the first subscriber and
        // the last one leaving reach it.
        if let Some(answer) = self.subscription(req.session, &backend, method, &route.name).await {
            return Ok(answer);
        }
        // A session-based client's task-augmented tool call: its task is handed back under an
        // id of the gateway's (task_handles.rs).
        let tasked = (method == Method::ToolsCall && super::task_handles::may_become_task(ctx.stateless, &call.params))
            .then(|| (route.backend, route.exposed.clone(), req.session));
        let call = self.prepare(req, &backend, call, route, audit)?;

        // 10. Circuit breaker: a backend that keeps failing is refused fast rather than waited on.
        let permit = serving.breaker(&slot).acquire().map_err(|r| Refusal::BackendUnavailable {
            backend: backend.name().to_string(),
            reason: "its circuit is open after repeated failures".into(),
            retry_after_ms: r.retry_after_ms(),
        })?;

        // 11. Forward, relaying what the backend sends meanwhile to the client.
        let sent = Instant::now();
        let outcome = self.forward(&backend, call).await;
        audit.backend_latency_ms = Some(sent.elapsed().as_secs_f64() * 1000.0);
        if let Some(t) = outcome.as_ref().ok().and_then(|o| o.judge(permit)) {
            match &serving {
                per_user::Serving::Shared(_) => self.circuit_changed(backend.name(), t),
                // One caller's instance: its circuit is that caller's, not the backend's.
                per_user::Serving::Own(..) => {
                    tracing::warn!(backend = %backend.name(), client = ?ctx.caller.client(), "per-user instance circuit {:?}", t.to);
                }
            }
        }
        match (outcome?.into_answer(&backend)?, serving, tasked) {
            // The caller's instance stays counted in use until its result has streamed.
            (Answer::Stream(body), per_user::Serving::Own(_, used), _) => Ok(Answer::Stream(body.holding(used))),
            (Answer::Result(r), _, Some((slot, tool, session))) => self
                .adopt_task(r, slot, &tool, session, ctx.caller.subject(), ctx.stateless.is_some())
                .map(Answer::Result),
            (answer, _, _) => Ok(answer),
        }

        // 12. Audit: `govern` writes the record, whatever the outcome.
    }

    /// The policy stages of a call: what the pipeline checks before anything is forwarded.
    /// Without `[cluster]` there is no I/O (the future is ready at once); with it, the rate
    /// limit is one Redis round trip. Public so that the benchmark can measure the gateway's
    /// own cost per call.
    pub async fn admit(
        &self,
        caller: &Caller,
        access: &Access,
        mut call: Call,
        audit: &mut AuditRecord,
    ) -> Result<Admission, Refusal> {
        let redactor = self.redactor.load();
        audit.arguments = call.arguments.as_ref().map(|a| redactor.redact(a));

        // 3. The name the call is about, as asked (read strictly with the request: a resource
        // URI is in normal form, so that policy judges the resource and not a spelling).
        let method = call.method;
        let name = std::mem::take(&mut call.target);
        audit.set_target(method, &name, &redactor);
        let policy = self.policy.load();

        // 4. RBAC, on that name, before anything else is said about it: a caller who may not
        // use a name gets the same answer whether it exists, is switched off, or not.
        if !policy.rbac.allows(access, &name) {
            return Err(Refusal::Forbidden { tool: name, roles: caller.roles().to_vec() });
        }

        // 5. Resolve: which backend serves the name or URI, under what name there.
        let route = self.route(&mut call, name)?;
        let backend_name = self.slot(route.backend).config.name.clone();
        audit.backend = Some(backend_name.clone());

        // 6. Kill switch, and pinning: a tool whose changed definition is held is refused
        // until an operator approves it.
        if policy.kill.is_killed(&route.exposed, &backend_name) {
            return Err(Refusal::Killed { tool: route.exposed, backend: backend_name });
        }
        if method == Method::ToolsCall && policy.pin_mode == crate::config::PinMode::Hold {
            let catalog = self.catalog();
            if catalog.tool(&route.exposed).is_some_and(|e| self.is_held(&policy, e, &backend_name)) {
                return Err(Refusal::Held { tool: route.exposed, backend: backend_name });
            }
        }

        // 7. Rate limit, per client per name (or per glob), for every call that reaches a
        // backend's work (without authentication, local callers share the client `anonymous`);
        // with `[cluster]`, the bucket is in Redis, shared by every replica.
        if method.makes_backend_work() {
            let subject = caller.client().unwrap_or(super::ANONYMOUS);
            self.rate_limit(subject, &route.exposed, &backend_name).await?;
        }

        // 8. Arguments against the tool's inputSchema, before any backend sees them.
        if method == Method::ToolsCall && policy.validation.enabled {
            if let Err(violations) = self.catalog().validators.validate_call(&route.exposed, call.arguments.as_ref()) {
                audit.outcome = Outcome::InvalidArgs;
                return schema_refusal(&route, violations, policy.validation.schema_errors).map(Admission::Answered);
            }
        }
        Ok(Admission::Forward(call, route))
    }
}

/// What the policy stages decided: forward the call, or it is already answered (arguments
/// refused as a tool result).
impl Gateway {
    /// Stage 7: one cell from the caller's bucket for `name`, in this process or, with
    /// `[cluster]`, in Redis; when Redis does not decide in time, `on_redis_failure` does.
    async fn rate_limit(&self, subject: &str, name: &str, backend: &str) -> Result<(), Refusal> {
        let limiter = self.limiter.load();
        let refused = |l: crate::rate_limit::RateLimited| Refusal::RateLimited {
            retry_after_ms: l.retry_after_ms(),
            limit: l.limit,
            scope: l.scope,
        };
        let Some(cluster) = &self.cluster else { return limiter.check(subject, name).map_err(refused) };
        let Some(bucket) = limiter.bucket(subject, name) else { return Ok(()) };
        match cluster.take(&bucket).await {
            Ok(decided) => decided.map_err(refused),
            Err(outage) => {
                if outage.first {
                    use crate::alerts::{Alert, AlertKind};
                    let text = format!("Redis does not answer ({}); {}", outage.reason, cluster.effect());
                    self.alerter.load().notify(Alert::new(AlertKind::RedisDown, "redis", text));
                }
                match cluster.on_failure() {
                    crate::config::OnRedisFailure::Local => limiter.check(subject, name).map_err(refused),
                    crate::config::OnRedisFailure::FailClosed => Err(Refusal::BackendUnavailable {
                        backend: backend.to_string(),
                        reason: "the shared rate limits (Redis) cannot be checked and [cluster] on_redis_failure is \"fail_closed\"; retry when Redis is back".into(),
                        retry_after_ms: 1000,
                    }),
                }
            }
        }
    }
}

// Not boxed: it is returned once per call and taken apart at once; boxing the call would
// cost an allocation on every call to save a move.
#[allow(clippy::large_enum_variant)]
/// What the policy stages decided about a call.
pub enum Admission {
    /// Forward the call (rewritten for its backend) along this route.
    Forward(Call, Route),
    /// Already answered (arguments refused as a tool result).
    Answered(Answer),
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
