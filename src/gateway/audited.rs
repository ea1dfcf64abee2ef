//! Stage 12, the audit record of a request, written whatever the outcome: completed from
//! how the request ended, counted in the metrics, and stored; a streamed result's record is
//! written once its size and outcome are known, and a call whose client went away leaves
//! one too (`cancelled`).

use std::sync::Arc;
use std::time::Instant;

use tracing::Instrument;

use super::{Answer, Gateway};
use crate::audit::{AuditRecord, Outcome};
use crate::error::Refusal;

/// A call's record until it is written. Dropped before that — the client went away: its HTTP
/// request was dropped mid-call or mid-result, or `sentinel stdio` lost its client — it is
/// written as `cancelled`, with the bytes that had gone by: every call that reached the
/// pipeline leaves a record, answered or not.
pub(super) struct PendingAudit {
    gw: Arc<Gateway>,
    audit: Option<AuditRecord>,
    started: Instant,
    bytes: u64,
    /// Only calls leave a record when dropped: a dropped `tools/list` leaves none, as an
    /// answered one does not.
    call: bool,
    /// The request's span: the record is written after it has closed, and is still its child.
    span: tracing::Span,
}

impl PendingAudit {
    /// Holds `audit` for a request that started at `started`; `call` says whether it is a call.
    pub(super) fn new(gw: Arc<Gateway>, audit: AuditRecord, started: Instant, call: bool) -> PendingAudit {
        PendingAudit { gw, audit: Some(audit), started, bytes: 0, call, span: tracing::Span::current() }
    }

    pub(super) fn record(&mut self) -> &mut AuditRecord {
        self.audit.as_mut().expect("a pending record is taken once")
    }

    /// The record, to be written by its owner now (the guard is disarmed).
    pub(super) fn take(&mut self) -> AuditRecord {
        self.audit.take().expect("a pending record is taken once")
    }
}

impl Drop for PendingAudit {
    fn drop(&mut self) {
        let Some(mut audit) = self.audit.take().filter(|_| self.call) else { return };
        audit.set_latency(self.started.elapsed());
        audit.response_bytes = self.bytes;
        audit.outcome = Outcome::Cancelled;
        audit.error_code = None;
        // A drop cannot wait: the record is written by a task of its own. Outside a runtime
        // (never on the request path) there is nothing to spawn it on.
        if tokio::runtime::Handle::try_current().is_ok() {
            let gw = self.gw.clone();
            let span = self.span.clone();
            self.gw.tasks.spawn(async move {
                let _ = gw.finish_audit(audit).instrument(span).await;
            });
        }
    }
}

/// How much of a streamed result is read before any of it is sent (see `audited_stream`):
/// enough for nearly every tool result, so that those keep the contract's fail-closed answer
/// (-32016); small enough that 256 calls holding it at once stay within the memory target
/// (docs/performance.md).
const HOLD_BEFORE_STREAMING: usize = 256 * 1024;

impl Gateway {
    /// Logs, counts and stores a call's record. With the store unreachable and the policy
    /// fail-closed, the client gets no answer it could act on without one (the call itself
    /// may have run).
    pub(super) async fn finish_audit(&self, audit: AuditRecord) -> Result<(), Refusal> {
        crate::audit::LogSink.write(&audit);
        self.count(&audit);
        crate::telemetry::record_outcome(&tracing::Span::current(), &audit);
        if let Err(e) = self.audit.record(audit).instrument(crate::stage_span!("sentinel.audit.write")).await {
            tracing::error!("{e}");
            return Err(Refusal::AuditUnavailable);
        }
        Ok(())
    }

    /// Audits a streamed result. One of at most `HOLD_BEFORE_STREAMING` bytes (nearly every
    /// result) is read whole first, so its record is written before anything is sent and a call
    /// whose record cannot be written under fail-closed is answered -32016, as every other call
    /// is; one that breaks off meanwhile is answered with its error. A larger result starts to
    /// flow once that much has arrived, and is audited at its end (`audited_at_end`).
    pub(super) async fn audited_stream(
        self: &Arc<Self>,
        mut body: crate::backend::ResultBody,
        audit: AuditRecord,
        started: Instant,
    ) -> Result<Answer, Refusal> {
        use crate::backend::{BackendError, Piece, ResultBody};
        use futures::StreamExt;
        // Dropped while holding (the client went away), the call is recorded as cancelled.
        let mut pending = PendingAudit::new(self.clone(), audit, started, true);
        let mut held = Vec::new();
        let mut held_bytes = 0;
        while held_bytes <= HOLD_BEFORE_STREAMING {
            let piece = body
                .next()
                .await
                .unwrap_or_else(|| Err(BackendError::Unavailable("the result ended before its end was seen".into())));
            let summary = match piece {
                Ok(Piece::Data(d)) => {
                    held_bytes += d.len();
                    held.push(Ok(Piece::Data(d)));
                    continue;
                }
                Ok(Piece::End(summary)) => summary,
                // The backend's answer broke off before anything was sent: the client gets the
                // error, as for a result that was never streamed.
                Err(e) => {
                    let mut audit = pending.take();
                    audit.set_latency(started.elapsed());
                    let refusal = self.refusal_of(e, audit.backend.clone().unwrap_or_default());
                    audit.outcome = refusal.outcome();
                    audit.error_code = Some(refusal.classify().0);
                    self.finish_audit(audit).await?;
                    return Err(refusal);
                }
            };
            let mut audit = pending.take();
            audit.set_latency(started.elapsed());
            audit.response_bytes = summary.bytes;
            if audit.outcome == Outcome::Ok && summary.is_error {
                audit.outcome = Outcome::ToolError;
            }
            self.finish_audit(audit).await?;
            held.push(Ok(Piece::End(summary)));
            return Ok(Answer::Stream(ResultBody::from_pieces(futures::stream::iter(held))));
        }
        // Past the threshold: what is held goes first, the rest as it arrives.
        let audit = pending.take();
        let rest = futures::stream::iter(held).chain(body);
        Ok(Answer::Stream(self.audited_at_end(ResultBody::from_pieces(rest), audit, started)))
    }

    /// Passes a streamed result on and audits it at its end: its size, and `isError` for the
    /// outcome. The result's closing bytes wait for the record to be stored, so that under a
    /// fail-closed policy a client whose call left no trace never gets a complete answer (its
    /// response is cut off instead). A client that goes away mid-result still gets its call
    /// audited, with the bytes that had gone by.
    fn audited_at_end(
        self: &Arc<Self>,
        body: crate::backend::ResultBody,
        audit: AuditRecord,
        started: Instant,
    ) -> crate::backend::ResultBody {
        use crate::backend::{BackendError, Piece};
        use futures::StreamExt;
        let pending = PendingAudit::new(self.clone(), audit, started, true);
        let pieces = futures::stream::unfold((body, pending), |(mut body, mut pending)| async move {
            let piece = body.next().await?;
            let mut audit = pending.audit.take()?;
            audit.set_latency(pending.started.elapsed());
            let out = match piece {
                Ok(Piece::Data(d)) => {
                    pending.bytes += d.len() as u64;
                    pending.audit = Some(audit);
                    return Some((Ok(Piece::Data(d)), (body, pending)));
                }
                Ok(Piece::End(summary)) => {
                    audit.response_bytes = summary.bytes;
                    if audit.outcome == Outcome::Ok && summary.is_error {
                        audit.outcome = Outcome::ToolError;
                    }
                    match pending.gw.finish_audit(audit).instrument(pending.span.clone()).await {
                        Ok(()) => Ok(Piece::End(summary)),
                        Err(_) => Err(BackendError::Unavailable("the audit trail is unavailable".into())),
                    }
                }
                Err(e) => {
                    audit.response_bytes = pending.bytes;
                    let refusal = pending.gw.refusal_of(e.clone(), audit.backend.clone().unwrap_or_default());
                    audit.outcome = refusal.outcome();
                    audit.error_code = Some(refusal.classify().0);
                    let _ = pending.gw.finish_audit(audit).instrument(pending.span.clone()).await;
                    Err(e)
                }
            };
            Some((out, (body, pending)))
        });
        crate::backend::ResultBody::from_pieces(pieces)
    }

    /// The refusal a backend's failure mid-result stands for (its code and audit outcome).
    fn refusal_of(&self, e: crate::backend::BackendError, backend: String) -> Refusal {
        use crate::backend::BackendError;
        match e {
            BackendError::Timeout => {
                let config = self.config();
                let timeout = config.backends.iter().find(|b| b.name == backend).map(|b| b.timeout);
                Refusal::BackendTimeout { backend, timeout_ms: timeout.map_or(0, |t| t.as_millis() as u64) }
            }
            BackendError::Unavailable(reason) | BackendError::Unreachable(reason) => {
                Refusal::BackendUnavailable { backend, reason, retry_after_ms: 1000 }
            }
        }
    }

    /// Exports one audited request to `/metrics`; unknown names share one series.
    pub(super) fn count(&self, audit: &AuditRecord) {
        let tool = audit.tool.as_deref().unwrap_or("");
        let known = self.catalog().tool(tool).is_some() || self.catalog().prompt(tool).is_some();
        let tool = crate::metrics::tool_label(known, tool);
        self.metrics.request(tool, audit.backend.as_deref().unwrap_or(""), audit.outcome, audit.latency_ms / 1000.0);
        if audit.outcome == Outcome::RateLimited {
            self.metrics.rate_limited(tool);
        }
        if let Some(p) = &audit.profile {
            self.metrics.profile_request(p, audit.outcome);
        }
    }
}

/// Whether a result says the tool ran and failed (`isError: true`), without a full parse
/// when the key is not there at all.
pub(super) fn is_tool_error(result: &str) -> bool {
    #[derive(serde::Deserialize)]
    struct R {
        #[serde(rename = "isError", default)]
        is_error: bool,
    }
    result.contains("\"isError\"") && serde_json::from_str::<R>(result).is_ok_and(|r| r.is_error)
}

pub(super) fn error_code(error: &str) -> Option<i64> {
    #[derive(serde::Deserialize)]
    struct E {
        code: i64,
    }
    serde_json::from_str::<E>(error).ok().map(|e| e.code)
}
