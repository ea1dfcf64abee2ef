//! Distributed tracing (`[telemetry]`, issue #20): a local OTLP/HTTP receiver decodes what the
//! gateway exports (with `opentelemetry-proto`), and the mock backends report the `_meta` and
//! headers they received.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use common::governance::{ADMIN_ROLE, hs256_auth, secret_env, token};
use common::*;
use opentelemetry_proto::tonic::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use serde_json::{Value, json};

/// What the receiver was sent: every span, and how many export requests came.
#[derive(Default)]
struct Received {
    spans: Vec<Span>,
    resources: Vec<Vec<(String, String)>>,
    requests: usize,
}

/// An OTLP/HTTP collector on loopback: `POST /v1/traces` with a protobuf body.
struct Receiver {
    url: String,
    got: Arc<Mutex<Received>>,
}

impl Receiver {
    async fn start() -> Receiver {
        let got = Arc::new(Mutex::new(Received::default()));
        let store = got.clone();
        let app = axum::Router::new().route(
            "/v1/traces",
            axum::routing::post(move |body: Bytes| {
                let store = store.clone();
                async move {
                    let req = ExportTraceServiceRequest::decode(body).expect("an OTLP trace export");
                    let mut got = store.lock().unwrap();
                    got.requests += 1;
                    for rs in req.resource_spans {
                        let attrs = rs.resource.map(|r| r.attributes).unwrap_or_default();
                        got.resources.push(attrs.iter().map(|kv| (kv.key.clone(), text(&kv.value))).collect());
                        for ss in rs.scope_spans {
                            got.spans.extend(ss.spans);
                        }
                    }
                    (
                        [("content-type", "application/x-protobuf")],
                        ExportTraceServiceResponse::default().encode_to_vec(),
                    )
                }
            }),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Receiver { url, got }
    }

    /// The spans of one trace, once `names` have all arrived (the gateway exports every second).
    async fn trace(&self, trace_id: &str, names: &[&str]) -> Vec<Span> {
        let mut spans = Vec::new();
        eventually_within(Duration::from_secs(15), &format!("spans {names:?} of trace {trace_id}"), || {
            spans = self.got.lock().unwrap().spans.iter().filter(|s| hex(&s.trace_id) == trace_id).cloned().collect();
            let done = names.iter().all(|n| spans.iter().any(|s| s.name == *n));
            async move { done }
        })
        .await;
        spans
    }
}

fn text(v: &Option<opentelemetry_proto::tonic::common::v1::AnyValue>) -> String {
    match v.as_ref().and_then(|v| v.value.as_ref()) {
        Some(Any::StringValue(s)) => s.clone(),
        Some(Any::IntValue(i)) => i.to_string(),
        Some(Any::BoolValue(b)) => b.to_string(),
        Some(Any::DoubleValue(d)) => d.to_string(),
        other => format!("{other:?}"),
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<String> {
    s.attributes.iter().find(|kv| kv.key == key).map(|kv| text(&kv.value))
}

fn named<'a>(spans: &'a [Span], name: &str) -> &'a Span {
    spans
        .iter()
        .find(|s| s.name == name)
        .unwrap_or_else(|| panic!("no span `{name}` among {:?}", spans.iter().map(|s| &s.name).collect::<Vec<_>>()))
}

/// `00-<trace>-<parent>-<flags>` → (trace, parent).
fn parse_traceparent(tp: &str) -> (String, String) {
    let parts: Vec<&str> = tp.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent: {tp}");
    (parts[1].to_string(), parts[2].to_string())
}

const CLIENT_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

fn client_traceparent() -> String {
    format!("00-{CLIENT_TRACE}-{CLIENT_SPAN}-01")
}

fn telemetry_section(endpoint: &str) -> String {
    format!(
        "[telemetry]\notlp_endpoint = {}\nsample_ratio = 1.0\nservice_name = \"sentinel-test\"\n\
         resource_attributes = {{ \"deployment.environment\" = \"test\" }}\n",
        lit(endpoint)
    )
}

/// `sentinel audit --json` of this gateway, as JSON values (newest first).
fn audit_json(gw: &Gateway) -> Vec<Value> {
    let out = std::process::Command::new(sentinel_bin())
        .args(["audit", "-c"])
        .arg(gw.config_path())
        .args(["--json", "--limit", "50"])
        .envs(secret_env())
        .output()
        .expect("run sentinel audit");
    assert!(out.status.success(), "sentinel audit: {}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap().lines().map(|l| serde_json::from_str(l).unwrap()).collect()
}

/// A call with the client's `_meta.traceparent` continues the client's trace: the HTTP request's
/// span is the client span's child, authentication and the MCP request its children, the policy,
/// backend and audit spans the request's; the stdio and HTTP backends get the backend span's
/// context (in `_meta`, and as headers over HTTP), never the client's; the audit record names
/// the trace.
#[tokio::test]
async fn a_call_continues_the_client_trace_to_the_backend() {
    let receiver = Receiver::start().await;
    let http = MockHttp::start(&["--generation", "legacy"]);
    let config = format!(
        "{}{ADMIN_ROLE}{}{}{}",
        hs256_auth(""),
        telemetry_section(&receiver.url),
        mock_stdio_backend("s", None, &[]),
        http_backend("h", None, &http.url)
    );
    let gw = Gateway::start_with_env(&config, &secret_env());
    let c = HttpClient::modern(&gw.url).with_token(&token("ann", &["admin"]));

    // Over stdio: `_meta` only.
    let meta = json!({"traceparent": client_traceparent(), "tracestate": "vendor=client"});
    let r = c.request("tools/call", json!({"name": "s__whoami", "arguments": {}, "_meta": meta})).await;
    let got = r.json()["result"]["structuredContent"]["meta"].clone();
    let sent = got["traceparent"].as_str().unwrap_or_else(|| panic!("no traceparent in the backend's _meta: {r:?}"));
    let (trace, parent) = parse_traceparent(sent);
    assert_eq!(trace, CLIENT_TRACE, "the backend continues the client's trace");
    assert_ne!(parent, CLIENT_SPAN, "the backend's parent is Sentinel's span, not the client's");
    assert_eq!(got["tracestate"], "vendor=client", "tracestate travels on");

    let spans = receiver
        .trace(
            CLIENT_TRACE,
            &[
                "POST /mcp",
                "sentinel.authenticate",
                "tools/call",
                "sentinel.policy",
                "tools/call s",
                "sentinel.audit.write",
            ],
        )
        .await;
    let http_span = named(&spans, "POST /mcp");
    assert_eq!(hex(&http_span.parent_span_id), CLIENT_SPAN, "the HTTP request's span is the client span's child");
    let request = named(&spans, "tools/call");
    let request_id = hex(&request.span_id);
    assert_eq!(hex(&request.parent_span_id), hex(&http_span.span_id));
    assert_eq!(hex(&named(&spans, "sentinel.authenticate").parent_span_id), hex(&http_span.span_id));
    for child in ["sentinel.policy", "tools/call s", "sentinel.audit.write"] {
        assert_eq!(hex(&named(&spans, child).parent_span_id), request_id, "{child} is the request's child");
    }
    let backend = named(&spans, "tools/call s");
    assert_eq!(hex(&backend.span_id), parent, "the backend's parent is the backend span");
    assert_eq!(backend.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Client as i32);
    assert_eq!(request.kind, opentelemetry_proto::tonic::trace::v1::span::SpanKind::Server as i32);
    for (k, v) in [
        ("rpc.system", "jsonrpc"),
        ("rpc.method", "tools/call"),
        ("gen_ai.tool.name", "s__whoami"),
        ("sentinel.backend", "s"),
        ("sentinel.outcome", "ok"),
        ("enduser.id", "ann"),
        ("mcp.protocol.version", MODERN),
    ] {
        assert_eq!(attr(request, k).as_deref(), Some(v), "{k} of the request span");
    }
    assert!(attr(request, "sentinel.replica").is_some_and(|r| !r.is_empty()));
    assert_eq!(attr(backend, "sentinel.backend").as_deref(), Some("s"));
    assert_eq!(attr(backend, "gen_ai.tool.name").as_deref(), Some("whoami"), "the backend's own name");
    {
        let got = receiver.got.lock().unwrap();
        let resource = &got.resources[0];
        assert!(resource.contains(&("service.name".into(), "sentinel-test".into())), "{resource:?}");
        assert!(resource.contains(&("deployment.environment".into(), "test".into())), "{resource:?}");
    }
    // The audit record names the trace, and the span the record.
    let records = audit_json(&gw);
    let record = records.iter().find(|r| r["tool"] == "s__whoami").expect("the call's record");
    assert_eq!(record["trace_id"], CLIENT_TRACE, "{record}");
    assert_eq!(attr(request, "sentinel.audit.id").as_deref(), record["id"].as_str());

    // Over HTTP, with the context in the `traceparent` header only: headers and `_meta` both.
    let header_trace = "0af7651916cd43dd8448eb211c80319c";
    let header_tp = format!("00-{header_trace}-b7ad6b7169203331-01");
    let body = c.request_body(json!(7), "tools/call", json!({"name": "h__whoami", "arguments": {}}));
    let r = c
        .post_raw(&body, &[("mcp-method", "tools/call"), ("mcp-name", "h__whoami"), ("traceparent", &header_tp)])
        .await;
    let report = r.json()["result"]["structuredContent"].clone();
    let in_header =
        report["headers"]["traceparent"].as_str().unwrap_or_else(|| panic!("no traceparent header: {report}"));
    assert_eq!(report["meta"]["traceparent"].as_str(), Some(in_header), "the same context in _meta and header");
    let (trace, parent) = parse_traceparent(in_header);
    assert_eq!(trace, header_trace);
    let spans = receiver.trace(header_trace, &["POST /mcp", "tools/call h"]).await;
    assert_eq!(hex(&named(&spans, "POST /mcp").parent_span_id), "b7ad6b7169203331");
    assert_eq!(hex(&named(&spans, "tools/call h").span_id), parent);
    let records = audit_json(&gw);
    assert!(records.iter().any(|r| r["tool"] == "h__whoami" && r["trace_id"] == header_trace), "{records:?}");

    // A refusal: its outcome and error code on the span, and an error status.
    let r = c.request("tools/call", json!({"name": "nope__x", "arguments": {}, "_meta": {"traceparent": format!("00-{}-{CLIENT_SPAN}-01", "1".repeat(32))}})).await;
    assert!(r.json()["error"].is_object(), "{r:?}");
    let spans = receiver.trace(&"1".repeat(32), &["tools/call", "sentinel.audit.write"]).await;
    let request = named(&spans, "tools/call");
    assert_eq!(attr(request, "rpc.jsonrpc.error_code"), r.json()["error"]["code"].as_i64().map(|c| c.to_string()));
    assert_ne!(attr(request, "sentinel.outcome").as_deref(), Some("ok"));
    assert_eq!(
        request.status.as_ref().map(|s| s.code),
        Some(opentelemetry_proto::tonic::trace::v1::status::StatusCode::Error as i32)
    );
}

/// `sentinel stdio`: the MCP request's span is the child of the client's `_meta.traceparent`.
#[tokio::test]
async fn stdio_front_door_takes_the_context_from_meta() {
    let receiver = Receiver::start().await;
    let dir = tempfile::tempdir().unwrap();
    let config =
        format!("[auth]\ndisabled = true\n{}{}", telemetry_section(&receiver.url), mock_stdio_backend("s", None, &[]));
    let path = dir.path().join("sentinel.toml");
    std::fs::write(&path, config).unwrap();
    let mut c = StdioClient::spawn(&sentinel_bin(), &["stdio", "-c", path.to_str().unwrap()], Some(dir.path()));
    c.initialize().await;
    let trace = "2".repeat(32);
    let meta = json!({"traceparent": format!("00-{trace}-{CLIENT_SPAN}-01")});
    let r = c.request(json!(2), "tools/call", json!({"name": "s__whoami", "arguments": {}, "_meta": meta})).await;
    let r: Value = serde_json::from_str(&r).unwrap();
    let sent = r["result"]["structuredContent"]["meta"]["traceparent"].as_str().expect("traceparent").to_string();
    let spans = receiver.trace(&trace, &["tools/call", "tools/call s"]).await;
    let request = named(&spans, "tools/call");
    assert_eq!(hex(&request.parent_span_id), CLIENT_SPAN);
    assert_eq!(attr(request, "network.transport").as_deref(), Some("stdio"));
    assert_eq!(parse_traceparent(&sent).1, hex(&named(&spans, "tools/call s").span_id));
}

/// With no `[telemetry]`, nothing is exported, not even to the collector the standard
/// `OTEL_EXPORTER_OTLP_*` variables name; the client's `_meta` reaches the backend as it was
/// (as before this feature), no trace header is added, and records carry no trace id.
#[tokio::test]
async fn telemetry_off_exports_nothing() {
    let receiver = Receiver::start().await;
    let http = MockHttp::start(&["--generation", "legacy"]);
    let env = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", receiver.url.as_str()),
        ("OTEL_TRACES_EXPORTER", "otlp"),
        ("OTEL_SDK_DISABLED", "false"),
    ];
    let gw = Gateway::start_with_env(&http_backend("h", None, &http.url), &env);
    let c = HttpClient::modern(&gw.url);
    let body = c.request_body(
        json!(1),
        "tools/call",
        json!({"name": "h__whoami", "arguments": {}, "_meta": {"traceparent": client_traceparent()}}),
    );
    let r = c
        .post_raw(
            &body,
            &[("mcp-method", "tools/call"), ("mcp-name", "h__whoami"), ("traceparent", &client_traceparent())],
        )
        .await;
    let report = r.json()["result"]["structuredContent"].clone();
    assert_eq!(report["meta"]["traceparent"], client_traceparent(), "passed on untouched: {report}");
    assert!(report["headers"].get("traceparent").is_none(), "no header added: {report}");
    // Longer than the export interval (1 s) twice over.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(receiver.got.lock().unwrap().requests, 0, "no export was attempted");
    let records = audit_json(&gw);
    let record = records.iter().find(|r| r["tool"] == "h__whoami").expect("the call's record");
    assert!(record.get("trace_id").is_none_or(Value::is_null), "{record}");
    assert!(!gw.log().contains("trace_id="), "no trace id in the access log");
}

/// Sampling is decided before a request makes any span: at `sample_ratio = 0.0` a call without
/// a client context is not traced at all, a client's sampled context is followed (traced), and
/// a client's unsampled one is too (no span; its context goes on to the backend untouched).
#[tokio::test]
async fn sampling_is_decided_before_any_span_is_made() {
    let receiver = Receiver::start().await;
    let http = MockHttp::start(&["--generation", "legacy"]);
    let telemetry = telemetry_section(&receiver.url).replace("sample_ratio = 1.0", "sample_ratio = 0.0");
    let gw = Gateway::start(&format!("{telemetry}{}", http_backend("h", None, &http.url)));
    let c = HttpClient::modern(&gw.url);
    let whoami = |meta: Option<Value>| {
        let mut params = json!({"name": "h__whoami", "arguments": {}});
        if let Some(m) = meta {
            params["_meta"] = m;
        }
        params
    };

    // No client context, ratio 0: not traced.
    let r = c.request("tools/call", whoami(None)).await;
    assert!(r.json()["result"].is_object(), "{r:?}");
    let report = r.json()["result"]["structuredContent"].clone();
    assert!(report["meta"].get("traceparent").is_none() && report["headers"].get("traceparent").is_none(), "{report}");

    // The client's unsampled context: not traced, passed on as it came.
    let unsampled = format!("00-{}-{CLIENT_SPAN}-00", "2".repeat(32));
    let r = c.request("tools/call", whoami(Some(json!({"traceparent": unsampled})))).await;
    assert_eq!(r.json()["result"]["structuredContent"]["meta"]["traceparent"], unsampled.as_str(), "{r:?}");

    // The client's sampled context: traced, whatever the ratio.
    let r = c.request("tools/call", whoami(Some(json!({"traceparent": client_traceparent()})))).await;
    let sent = r.json()["result"]["structuredContent"]["meta"]["traceparent"].as_str().unwrap_or_default().to_string();
    assert_eq!(parse_traceparent(&sent).0, CLIENT_TRACE, "{r:?}");
    receiver.trace(CLIENT_TRACE, &["POST /mcp", "tools/call", "sentinel.policy", "tools/call h"]).await;

    // Longer than the export interval (1 s) twice over: nothing else was exported.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let traces: std::collections::BTreeSet<String> =
        receiver.got.lock().unwrap().spans.iter().map(|s| hex(&s.trace_id)).collect();
    assert_eq!(traces, [CLIENT_TRACE.to_string()].into(), "only the sampled call made spans");
    let records = audit_json(&gw);
    let traced: Vec<_> = records.iter().filter(|r| r["tool"] == "h__whoami").map(|r| r["trace_id"].clone()).collect();
    assert_eq!(traced.len(), 3, "{records:?}");
    assert_eq!(traced.iter().filter(|t| !t.is_null()).collect::<Vec<_>>(), [&Value::from(CLIENT_TRACE)]);
}

/// A collector that is down costs calls nothing, and the spans it did not take are counted.
#[tokio::test]
async fn spans_not_exported_are_counted() {
    // A port nobody listens on.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let gw = Gateway::start(&format!("{}{}", telemetry_section(&url), mock_stdio_backend("s", None, &[])));
    let c = HttpClient::modern(&gw.url);
    let r = c.call("s__echo", json!({"x": 1})).await;
    assert_eq!(r.status, 200, "{r:?}");
    let metrics = format!("{}/metrics", gw.base());
    eventually_within(
        Duration::from_secs(20),
        "sentinel_telemetry_spans_dropped_total{reason=\"export_failed\"} > 0",
        || {
            let metrics = metrics.clone();
            async move {
                let text = reqwest::get(&metrics).await.unwrap().text().await.unwrap();
                text.lines().any(|l| {
                    l.strip_prefix("sentinel_telemetry_spans_dropped_total{reason=\"export_failed\"} ")
                        .and_then(|v| v.parse::<f64>().ok())
                        .is_some_and(|v| v > 0.0)
                })
            }
        },
    )
    .await;
    assert!(gw.log().contains("telemetry: the collector did not take a batch of spans"), "said once in the log");
}
