//! Distributed tracing: OpenTelemetry spans for every MCP request, exported over OTLP/HTTP.
//!
//! Off unless the config has a `[telemetry]` section, and then truly off: no exporter, no
//! `tracing` layer, and the pipeline's spans are never created ([`enabled`] is checked first),
//! so a gateway without tracing pays one relaxed atomic load per span site.
//!
//! On, the pipeline's spans (target [`TARGET`]) go through `tracing-opentelemetry` to the SDK's
//! batch processor, which exports from a thread of its own: a call only ever puts its finished
//! spans on a bounded queue. A full queue drops spans rather than wait, and every dropped span
//! is counted (`sentinel_telemetry_spans_dropped_total`, by reason). The SDK keeps its own
//! drop count private, so [`Counted`] keeps the queue's occupancy itself and drops before the
//! SDK would have to.
//!
//! Context: a client's `traceparent`/`tracestate` (from `_meta` or the HTTP header) is the
//! parent of the request's span; the backend gets the backend span's context in `_meta` and,
//! over HTTP, as headers (src/gateway/forward.rs).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_otlp::WithExportConfig as _;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter, SpanProcessor,
};
use tracing_opentelemetry::OpenTelemetrySpanExt;

use crate::config::TelemetryConfig;

/// The `tracing` target of the spans that are exported; the log's own layer ignores them, and
/// the exporting layer ignores everything else (events, other crates' spans).
pub const TARGET: &str = "sentinel::trace";

/// Spans queued for export before further spans are dropped (the SDK's default).
const QUEUED_SPANS: usize = 2048;
/// Spans per OTLP request.
const BATCH_SPANS: usize = 512;
/// How long a finished span may wait for its batch: short, so a trace shows up while the
/// operator is still looking for it.
const EXPORT_DELAY: Duration = Duration::from_secs(1);
/// How long one export may take before it is given up (its spans counted as dropped).
const EXPORT_TIMEOUT: Duration = Duration::from_secs(10);

static ENABLED: AtomicBool = AtomicBool::new(false);
/// `sample_ratio` as a threshold on a random `u64`: a new trace is sampled when the draw is
/// below it; `u64::MAX` means every trace.
static SAMPLE_BELOW: AtomicU64 = AtomicU64::new(u64::MAX);
static DROPPED_QUEUE_FULL: AtomicU64 = AtomicU64::new(0);
static DROPPED_EXPORT_FAILED: AtomicU64 = AtomicU64::new(0);
/// Whether the last export failed: the log says so when that changes, not at every batch.
static FAILING: AtomicBool = AtomicBool::new(false);

/// The reasons of `sentinel_telemetry_spans_dropped_total`, in [`dropped`]'s order.
pub const DROP_REASONS: [&str; 2] = ["queue_full", "export_failed"];

/// Whether spans are being exported. Every span site asks first.
#[inline]
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Spans dropped so far: queue full, export failed.
pub fn dropped() -> [u64; 2] {
    [DROPPED_QUEUE_FULL.load(Ordering::Relaxed), DROPPED_EXPORT_FAILED.load(Ordering::Relaxed)]
}

/// Flushes and stops the exporter when dropped (at the end of `main`).
pub struct Guard(SdkTracerProvider);

impl Drop for Guard {
    fn drop(&mut self) {
        ENABLED.store(false, Ordering::Relaxed);
        if let Err(e) = self.0.shutdown_with_timeout(Duration::from_secs(5)) {
            eprintln!("sentinel: telemetry: spans not exported at shutdown: {e}");
        }
    }
}

/// Why the OTLP exporter could not be built (the exporter's error, with its causes).
#[derive(Debug, thiserror::Error)]
#[error("{}", crate::audit::store::chain(.0))]
pub struct ExporterError(opentelemetry_otlp::ExporterBuildError);

/// Builds the exporting layer for `[telemetry]`. Nothing is exported until the layer is part
/// of the installed subscriber (`log::init`).
pub fn layer<S>(cfg: &TelemetryConfig) -> Result<(impl tracing_subscriber::Layer<S>, Guard), ExporterError>
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
{
    use tracing_subscriber::Layer as _;
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(opentelemetry_otlp::Protocol::HttpBinary)
        .with_endpoint(traces_url(&cfg.otlp_endpoint))
        .with_timeout(EXPORT_TIMEOUT)
        .build()
        .map_err(ExporterError)?;
    let queued = Arc::new(AtomicUsize::new(0));
    let batch = BatchSpanProcessor::builder(Counted { inner: exporter, queued: queued.clone() })
        .with_batch_config(
            BatchConfigBuilder::default()
                .with_max_queue_size(QUEUED_SPANS)
                .with_max_export_batch_size(BATCH_SPANS)
                .with_scheduled_delay(EXPORT_DELAY)
                .build(),
        )
        .build();
    let mut attributes = vec![opentelemetry::KeyValue::new("service.instance.id", crate::replica::id().to_string())];
    attributes.extend(cfg.resource_attributes.iter().map(|(k, v)| opentelemetry::KeyValue::new(k.clone(), v.clone())));
    let resource = opentelemetry_sdk::Resource::builder_empty()
        .with_service_name(cfg.service_name.clone())
        .with_attributes(attributes)
        .build();
    let provider = SdkTracerProvider::builder()
        .with_span_processor(Bounded { inner: batch, queued })
        // Sampling is decided before a request's first span is made (`decide`): a span that
        // exists is one to record.
        .with_sampler(Sampler::AlwaysOn)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("sentinel");
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        // Only what the spans say is exported: no source locations, thread names or busy times.
        .with_location(false)
        .with_threads(false)
        .with_target(false)
        .with_level(false)
        .with_tracked_inactivity(false)
        .with_filter(tracing_subscriber::filter::filter_fn(|m| m.target() == TARGET));
    SAMPLE_BELOW.store(sample_below(cfg.sample_ratio), Ordering::Relaxed);
    ENABLED.store(true, Ordering::Relaxed);
    Ok((layer, Guard(provider)))
}

/// `http://host:4318` → `http://host:4318/v1/traces` (the OTLP/HTTP path for traces), unless
/// the operator wrote the full URL.
fn traces_url(base: &str) -> String {
    if base.ends_with("/v1/traces") { base.to_string() } else { format!("{base}/v1/traces") }
}

/// The batch processor, with the spans it holds counted: at the queue's size, a span is
/// dropped (and counted) here rather than by the SDK, which would not say how many.
#[derive(Debug)]
struct Bounded {
    inner: BatchSpanProcessor,
    queued: Arc<AtomicUsize>,
}

impl SpanProcessor for Bounded {
    fn on_start(&self, span: &mut opentelemetry_sdk::trace::Span, cx: &opentelemetry::Context) {
        self.inner.on_start(span, cx);
    }

    fn on_end(&self, span: SpanData) {
        // Counted in before it is queued, out once its export is over (`Counted`): the count
        // is never below what the SDK's queue holds, so the SDK never drops one itself.
        if self.queued.fetch_add(1, Ordering::Relaxed) >= QUEUED_SPANS {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            DROPPED_QUEUE_FULL.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.inner.on_end(span);
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// The OTLP exporter, counting spans out of the queue and those it failed to deliver.
#[derive(Debug)]
struct Counted<E> {
    inner: E,
    queued: Arc<AtomicUsize>,
}

impl<E: SpanExporter> SpanExporter for Counted<E> {
    async fn export(&self, batch: Vec<SpanData>) -> opentelemetry_sdk::error::OTelSdkResult {
        let n = batch.len();
        let result = self.inner.export(batch).await;
        self.queued.fetch_sub(n, Ordering::Relaxed);
        if result.is_err() {
            DROPPED_EXPORT_FAILED.fetch_add(n as u64, Ordering::Relaxed);
            // The exporter's error names the endpoint, which may hold a credential: not logged.
            if !FAILING.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    spans = n,
                    "telemetry: the collector did not take a batch of spans; spans are dropped (and counted in sentinel_telemetry_spans_dropped_total) until it does"
                );
            }
        } else if FAILING.swap(false, Ordering::Relaxed) {
            tracing::info!("telemetry: the collector takes spans again");
        }
        result
    }

    fn shutdown_with_timeout(&self, timeout: Duration) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.shutdown_with_timeout(timeout)
    }

    fn force_flush(&self) -> opentelemetry_sdk::error::OTelSdkResult {
        self.inner.force_flush()
    }

    fn set_resource(&mut self, resource: &opentelemetry_sdk::Resource) {
        self.inner.set_resource(resource);
    }
}

/// A W3C trace context as it travels: `traceparent` and optional `tracestate`.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct TraceParent {
    /// The `traceparent` header value.
    pub traceparent: String,
    /// The `tracestate` header value, when there is one.
    pub tracestate: Option<String>,
}

impl opentelemetry::propagation::Extractor for TraceParent {
    fn get(&self, key: &str) -> Option<&str> {
        match key {
            "traceparent" => Some(&self.traceparent),
            "tracestate" => self.tracestate.as_deref(),
            _ => None,
        }
    }

    fn keys(&self) -> Vec<&str> {
        ["traceparent"].into_iter().chain(self.tracestate.as_ref().map(|_| "tracestate")).collect()
    }
}

/// Longest `traceparent`/`tracestate` taken from a client (W3C: 55 and 512 bytes); a longer
/// one is ignored, not truncated.
const MAX_TRACESTATE_BYTES: usize = 512;
const MAX_TRACEPARENT_BYTES: usize = 64;

impl TraceParent {
    /// From a request's `params._meta`, if it carries one.
    pub fn from_params(params: Option<&serde_json::value::RawValue>) -> Option<TraceParent> {
        #[derive(serde::Deserialize)]
        struct P<'a> {
            #[serde(borrow, rename = "_meta")]
            meta: Option<M<'a>>,
        }
        #[derive(serde::Deserialize)]
        struct M<'a> {
            #[serde(borrow)]
            traceparent: Option<std::borrow::Cow<'a, str>>,
            #[serde(borrow)]
            tracestate: Option<std::borrow::Cow<'a, str>>,
        }
        let p: P = serde_json::from_str(params?.get()).ok()?;
        let m = p.meta?;
        TraceParent::new(m.traceparent.as_deref()?, m.tracestate.as_deref())
    }

    /// From an HTTP request's body: its `params._meta` (a JSON-RPC request object).
    pub fn from_body(body: &[u8]) -> Option<TraceParent> {
        #[derive(serde::Deserialize)]
        struct B<'a> {
            #[serde(borrow)]
            params: Option<&'a serde_json::value::RawValue>,
        }
        let b: B = serde_json::from_slice(body).ok()?;
        TraceParent::from_params(b.params)
    }

    /// From HTTP headers.
    pub fn from_headers(h: &http::HeaderMap) -> Option<TraceParent> {
        let get = |k| h.get(k).and_then(|v| v.to_str().ok());
        TraceParent::new(get("traceparent")?, get("tracestate"))
    }

    fn new(traceparent: &str, tracestate: Option<&str>) -> Option<TraceParent> {
        (traceparent.len() <= MAX_TRACEPARENT_BYTES).then(|| TraceParent {
            traceparent: traceparent.to_string(),
            tracestate: tracestate.filter(|s| s.len() <= MAX_TRACESTATE_BYTES).map(str::to_string),
        })
    }

    fn context(&self) -> opentelemetry::Context {
        // The propagator reads the two fields in place: no map of copies per request.
        TraceContextPropagator::new().extract(self)
    }

    /// The context of `span`, to send on; `None` when the span is not recorded. Written as
    /// the W3C propagator writes it (version 00, only the sampled flag), without its map.
    pub fn of(span: &tracing::Span) -> Option<TraceParent> {
        let cx = span.context();
        let span = cx.span();
        let sc = span.span_context();
        sc.is_valid().then(|| TraceParent::of_context(sc))
    }

    fn of_context(sc: &opentelemetry::trace::SpanContext) -> TraceParent {
        let flags = sc.trace_flags() & opentelemetry::trace::TraceFlags::SAMPLED;
        let traceparent = format!("00-{}-{}-{:02x}", sc.trace_id(), sc.span_id(), flags.to_u8());
        let tracestate = Some(sc.trace_state().header()).filter(|s| !s.is_empty());
        TraceParent { traceparent, tracestate }
    }
}

/// Whether a new request is traced, decided before its first span is made: a request that is
/// not makes no span at all, so with `sample_ratio` below 1 the calls left out cost (almost)
/// nothing. The SDK's own sampler would decide only once `tracing` had built each span, and
/// half of what tracing costs a call is that building (docs/performance.md, "Tracing").
pub enum Trace {
    /// Not traced: the client's context said so (sampled flag 0, passed on untouched in
    /// `_meta`), or the draw at `sample_ratio` did.
    Not,
    /// A trace of its own.
    Root,
    /// A child of the client's span, which is sampled.
    Child(opentelemetry::Context),
}

/// Decides for a request whose client sent `parent` (from `_meta`, or the `traceparent`
/// header): a valid client context's sampled flag is followed; otherwise a draw at
/// `sample_ratio`. An invalid `traceparent` counts as none.
pub fn decide(parent: Option<&TraceParent>) -> Trace {
    if let Some(cx) = parent.map(TraceParent::context) {
        let (valid, sampled) = {
            let span = cx.span();
            let sc = span.span_context();
            (sc.is_valid(), sc.is_sampled())
        };
        if valid {
            return if sampled { Trace::Child(cx) } else { Trace::Not };
        }
    }
    if draw(SAMPLE_BELOW.load(Ordering::Relaxed)) { Trace::Root } else { Trace::Not }
}

/// A draw that is true with probability `below / 2^64` (always at `u64::MAX`).
fn draw(below: u64) -> bool {
    // uuid's v4 comes from a thread-local generator: no system call per request. Its high half:
    // the low half starts with the fixed variant bits (0b10), which would put every draw in
    // the upper half of the range.
    below == u64::MAX || ((uuid::Uuid::new_v4().as_u128() >> 64) as u64) < below
}

impl Trace {
    /// Makes the client's span the parent of `span` (the request's first), for a child.
    pub fn adopt(self, span: &tracing::Span) {
        if let Trace::Child(cx) = self {
            let _ = span.set_parent(cx);
        }
    }
}

fn sample_below(ratio: f64) -> u64 {
    if ratio >= 1.0 { u64::MAX } else { (ratio.max(0.0) * u64::MAX as f64) as u64 }
}

/// The server span of one HTTP request to `/mcp` (`POST`), the first of a traced request.
pub fn http_span(path: &str) -> tracing::Span {
    tracing::info_span!(
        target: TARGET,
        "http.request",
        "otel.name" = "POST /mcp",
        "otel.kind" = "server",
        "http.request.method" = "POST",
        "url.path" = path,
        "http.response.status_code" = tracing::field::Empty,
    )
}

/// The trace id of `span` (32 hex digits), for the audit record; `None` when not recorded.
pub fn trace_id(span: &tracing::Span) -> Option<String> {
    let cx = span.context();
    let sc = cx.span().span_context().clone();
    sc.is_valid().then(|| sc.trace_id().to_string())
}

/// The span of one MCP request (`rpc.system = "jsonrpc"`): every stage's span is its child.
/// Fields left `Empty` are recorded once known ([`record_request`]).
pub fn request_span(method: &str, transport: &str) -> tracing::Span {
    if !enabled() {
        return tracing::Span::none();
    }
    tracing::info_span!(
        target: TARGET,
        "mcp.request",
        "otel.name" = method,
        "otel.kind" = "server",
        "otel.status_code" = tracing::field::Empty,
        "rpc.system" = "jsonrpc",
        "rpc.method" = method,
        "network.transport" = transport,
        "mcp.method.name" = method,
        "mcp.session.id" = tracing::field::Empty,
        "mcp.protocol.version" = tracing::field::Empty,
        "gen_ai.tool.name" = tracing::field::Empty,
        "sentinel.backend" = tracing::field::Empty,
        "sentinel.outcome" = tracing::field::Empty,
        "rpc.jsonrpc.error_code" = tracing::field::Empty,
        "enduser.id" = tracing::field::Empty,
        "sentinel.replica" = crate::replica::id(),
        "sentinel.audit.id" = tracing::field::Empty,
    )
}

/// A stage of the pipeline, as a child of the current span; none when the request is not
/// traced (no current span: see [`decide`]), rather than a trace of its own.
#[macro_export]
macro_rules! stage_span {
    ($name:literal $(, $($field:tt)*)?) => {
        if $crate::telemetry::enabled() && !tracing::Span::current().is_none() {
            tracing::info_span!(target: $crate::telemetry::TARGET, $name $(, $($field)*)?)
        } else {
            tracing::Span::none()
        }
    };
}

/// The trace id of the current span, for the audit record; `None` with telemetry off.
pub fn current_trace_id() -> Option<String> {
    if !enabled() {
        return None;
    }
    trace_id(&tracing::Span::current())
}

/// Who is calling, in which session, speaking which revision.
pub fn record_caller(span: &tracing::Span, subject: Option<&str>, session: &str, generation: Option<&str>) {
    if let Some(s) = subject {
        span.record("enduser.id", s);
    }
    if !session.is_empty() {
        span.record("mcp.session.id", session);
    }
    if let Some(g) = generation {
        span.record("mcp.protocol.version", g);
    }
}

/// What the audit record says of the request, on its span: the same words (outcome, error
/// code) an operator finds in `sentinel audit`. `span` is the request's span, or none.
pub fn record_outcome(span: &tracing::Span, r: &crate::audit::AuditRecord) {
    if !enabled() {
        return;
    }
    if let Some(t) = &r.tool {
        span.record("gen_ai.tool.name", t.as_str());
    }
    if let Some(b) = &r.backend {
        span.record("sentinel.backend", b.as_str());
    }
    span.record("sentinel.outcome", r.outcome.as_str());
    span.record("sentinel.audit.id", tracing::field::display(r.id));
    if let Some(code) = r.error_code {
        span.record("rpc.jsonrpc.error_code", code);
    }
    if r.outcome != crate::audit::Outcome::Ok {
        span.record("otel.status_code", "error");
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn the_client_context_is_read_from_meta_body_and_headers() {
        let params = serde_json::value::to_raw_value(
            &serde_json::json!({"name": "t", "_meta": {"traceparent": TP, "tracestate": "a=b", "progressToken": 1}}),
        )
        .unwrap();
        let want = TraceParent { traceparent: TP.into(), tracestate: Some("a=b".into()) };
        assert_eq!(TraceParent::from_params(Some(&params)), Some(want.clone()));
        let body = format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{}}}"#, params.get());
        assert_eq!(TraceParent::from_body(body.as_bytes()), Some(want));
        let mut h = http::HeaderMap::new();
        h.insert("traceparent", TP.parse().unwrap());
        assert_eq!(TraceParent::from_headers(&h), Some(TraceParent { traceparent: TP.into(), tracestate: None }));
        // Absent, malformed or oversized: no parent (the span starts a trace of its own).
        assert_eq!(TraceParent::from_params(None), None);
        assert_eq!(TraceParent::from_body(b"[1,2]"), None);
        assert_eq!(TraceParent::from_body(br#"{"params":{"_meta":{"traceparent":7}}}"#), None);
        let long = format!("{TP}{}", "0".repeat(64));
        assert_eq!(TraceParent::new(&long, None), None);
        let state = "k=v,".repeat(200);
        assert_eq!(TraceParent::new(TP, Some(&state)).unwrap().tracestate, None, "an oversized tracestate is dropped");
        assert!(!TraceParent::new("not a traceparent", None).unwrap().context().span().span_context().is_valid());
        assert!(TraceParent::new(TP, None).unwrap().context().span().span_context().is_valid());
    }

    /// What is sent on is what the W3C propagator would write, read back to the same context.
    #[test]
    fn the_context_sent_on_is_the_propagators() {
        for (tp, state) in [(TP, Some("a=b,c=d")), ("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00", None)] {
            let parent = TraceParent::new(tp, state).unwrap();
            let cx = parent.context();
            let mut carrier = HashMap::new();
            TraceContextPropagator::new().inject_context(&cx, &mut carrier);
            let ours = TraceParent::of_context(cx.span().span_context());
            assert_eq!(ours.traceparent, carrier["traceparent"]);
            assert_eq!(ours.tracestate.as_deref(), Some(carrier["tracestate"].as_str()).filter(|s| !s.is_empty()));
            assert_eq!(ours, parent, "read back unchanged");
        }
    }

    #[test]
    fn the_sampling_threshold_follows_the_ratio() {
        assert_eq!(sample_below(1.0), u64::MAX);
        assert_eq!(sample_below(0.0), 0);
        assert_eq!(sample_below(-1.0), 0);
        let half = sample_below(0.5);
        assert!(half.abs_diff(u64::MAX / 2) < u64::MAX / 1000, "{half}");
        // The draws follow the ratio (100,000 draws: 5 standard deviations is under 0.2% at 1%).
        for (ratio, lo, hi) in [(0.0, 0, 0), (0.01, 800, 1200), (0.5, 49_000, 51_000), (1.0, 100_000, 100_000)] {
            let n = (0..100_000).filter(|_| draw(sample_below(ratio))).count();
            assert!((lo..=hi).contains(&n), "ratio {ratio}: {n} of 100000");
        }
    }

    #[test]
    fn the_traces_path_is_added_once() {
        assert_eq!(traces_url("http://c:4318"), "http://c:4318/v1/traces");
        assert_eq!(traces_url("http://c:4318/v1/traces"), "http://c:4318/v1/traces");
    }

    /// Off, no span is made at all: not even one the log's layer would see.
    #[test]
    fn off_means_no_spans() {
        assert!(!enabled());
        assert!(request_span("tools/call", "http").is_none());
        assert!(crate::stage_span!("sentinel.policy").is_none());
        assert_eq!(current_trace_id(), None);
    }
}
