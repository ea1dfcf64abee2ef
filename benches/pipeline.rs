//! The governance pipeline's own cost per call: authenticate (HS256), then the policy stages
//! of `Gateway::admit` (strict parse, resolve, kill switch, RBAC, rate limit, schema), with
//! every stage switched on. The backend is excluded — nothing is forwarded — and so is the
//! HTTP framing. A plain `serde_json` parse of the same request body runs in the same process
//! as a yardstick: on a shared, noisy machine only ratios from one run mean anything.
//!
//! No tracing subscriber is installed, so the audit log line costs what it costs when the
//! `audit` target is filtered out, not the cost of formatting and writing it.
//!
//! Run with `cargo bench --bench pipeline`.

// `criterion_group!` makes a public function it gives no doc comment.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, criterion_group, criterion_main};
use futures::FutureExt;
use sentinel::audit::{AuditRecord, AuditSink, LogSink};
use sentinel::config::Config;
use sentinel::gateway::{Admission, Caller, Gateway};
use serde_json::value::RawValue;

const SECRET: &str = "bench-secret-bench-secret-bench-secret-0123";
const ISSUER: &str = "https://issuer.bench";
const AUDIENCE: &str = "sentinel-bench";

/// A small `tools/call` to `echo`, whose inputSchema is an open object.
const ECHO: &str = r#"{"name":"mock__echo","arguments":{"text":"hello","count":3}}"#;

/// A `tools/call` to the mock tool with the richest inputSchema: `$ref`/`$anchor`, an enum,
/// `allOf`/`anyOf`, `if`/`then`/`else`, `additionalProperties: false`. The arguments are valid.
const RICH: &str = r#"{"name":"mock__json_schema_2020_12_tool","arguments":{"name":"Ada","address":{"street":"1 Main St","city":"London"},"contactMethod":"email","email":"ada@example.com"}}"#;

/// The whole JSON-RPC body the `echo` call arrives in, for the baseline parse.
fn echo_body() -> String {
    format!(r#"{{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{ECHO}}}"#)
}

fn config_text() -> String {
    // `env!` is set for benches as for integration tests; `cargo bench` builds the binary first.
    let mock = toml::Value::String(env!("CARGO_BIN_EXE_mcp-mock").to_string());
    format!(
        r#"
[auth]
hs256_secret = "{SECRET}"
issuer = "{ISSUER}"
audience = "{AUDIENCE}"

[roles.user]
allow = ["mock__*"]
deny = ["mock__crash"]

# Sized never to trigger, so the limiter's check runs on every call but never refuses.
[rate_limit]
default = {{ per_minute = 1000000000, burst = 1000000000 }}

# Matches no tool the call names: the glob is checked on every call.
[kill_switch]
tools = ["mock__nothing*"]

[validation]
enabled = true

[[backend]]
name = "mock"
stdio = {{ command = {mock} }}
"#
    )
}

fn raw(params: &str) -> Box<RawValue> {
    RawValue::from_string(params.to_string()).expect("valid JSON params")
}

/// HS256 verification never waits: the future is ready on its first poll.
fn authenticate(gw: &Gateway, token: &str) -> Caller {
    gw.authenticate(Some(token)).now_or_never().expect("HS256 authentication does no I/O")
}

fn start_record(caller: &Caller) -> AuditRecord {
    AuditRecord::start("tools/call", "http", caller.subject(), caller.roles(), None)
}

fn pipeline(c: &mut Criterion) {
    let dir = tempfile::tempdir().expect("tempdir");
    let path = dir.path().join("sentinel.toml");
    std::fs::write(&path, config_text()).expect("write config");
    let config = Config::load(Some(&path)).unwrap_or_else(|e| panic!("bench config: {e}"));

    // The runtime stays alive for the whole run: it owns the mock backend's tasks.
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
    let gw: Arc<Gateway> = rt.block_on(Gateway::start(config)).expect("gateway starts");
    assert_eq!(gw.backends_up(), 1, "the mcp-mock backend did not start");

    let token = sentinel::auth::mint_hs256(
        SECRET,
        "bench-client",
        &["user".to_string()],
        Duration::from_secs(3600),
        Some(ISSUER),
        Some(AUDIENCE),
    )
    .expect("mint token");
    let caller = authenticate(&gw, &token);
    let access = caller.access().expect("the token is accepted");

    // Every measured call must take the full success path, not an early refusal.
    for params in [ECHO, RICH] {
        let mut audit = start_record(&caller);
        match admit(&gw, &caller, &access, read(raw(params)), &mut audit) {
            Ok(Admission::Forward(..)) => {}
            Ok(Admission::Answered(_)) => panic!("{params}: arguments refused by the schema"),
            Err(e) => panic!("{params}: refused: {e}"),
        }
    }

    let mut group = c.benchmark_group("pipeline");
    group.sample_size(50).warm_up_time(Duration::from_secs(1)).measurement_time(Duration::from_secs(3));

    let body = echo_body();
    group.bench_function("serde_json parse of the same request body (baseline)", |b| {
        b.iter(|| serde_json::from_str::<serde_json::Value>(black_box(&body)).expect("valid JSON"));
    });

    // A client sends the same token on every call: after the first, it is remembered.
    group.bench_function("authenticate (a token seen before)", |b| {
        b.iter(|| {
            let caller = authenticate(&gw, black_box(&token));
            caller.access().expect("accepted")
        });
    });

    // The first call with a token: signature and claims checked (a fresh subject per token,
    // minted outside the measurement).
    let mut n = 0u64;
    group.bench_function("authenticate (a new token: HS256 verify + claims)", |b| {
        b.iter_batched(
            || {
                n += 1;
                let sub = format!("bench-client-{n}");
                sentinel::auth::mint_hs256(
                    SECRET,
                    &sub,
                    &["user".to_string()],
                    Duration::from_secs(3600),
                    Some(ISSUER),
                    Some(AUDIENCE),
                )
                .expect("mint token")
            },
            |token| {
                let caller = authenticate(&gw, black_box(&token));
                caller.access().expect("accepted")
            },
            BatchSize::SmallInput,
        );
    });

    for (name, params) in
        [("admit tools/call echo small args", ECHO), ("admit tools/call json_schema_2020_12_tool", RICH)]
    {
        group.bench_function(name, |b| {
            b.iter_batched(
                || (raw(params), start_record(&caller)),
                |(params, mut audit)| {
                    let admission = admit(&gw, &caller, &access, read(params), &mut audit);
                    drop(black_box(admission));
                    audit
                },
                BatchSize::SmallInput,
            );
        });
    }

    // What `govern` does around the forward for one call: authenticate, start the audit
    // record, admit, and hand the record to the same sink the gateway uses.
    group.bench_function("full policy path (echo)", |b| {
        b.iter_batched(
            || raw(ECHO),
            |params| {
                let started = Instant::now();
                let caller = authenticate(&gw, black_box(&token));
                let access = caller.access().expect("accepted");
                let mut audit = start_record(&caller);
                let admission = admit(&gw, &caller, &access, read(params), &mut audit);
                drop(black_box(admission));
                audit.set_latency(started.elapsed());
                LogSink.record(audit).now_or_never().expect("the log sink never waits").expect("log sink");
            },
            BatchSize::SmallInput,
        );
    });

    group.finish();
    drop(gw);
    drop(rt);
}

criterion_group!(benches, pipeline);
criterion_main!(benches);

/// A `tools/call`'s params read as the front door reads them (strictly: part of the cost).
fn read(params: Box<serde_json::value::RawValue>) -> sentinel::request::Call {
    match sentinel::request::Request::parse("tools/call".into(), Some(params)) {
        Ok(sentinel::request::Request::Call(call)) => call,
        other => panic!("not a readable call: {other:?}"),
    }
}

/// `Gateway::admit` without `[cluster]`: no I/O, so its future is ready on the first poll.
fn admit(
    gw: &sentinel::gateway::Gateway,
    caller: &sentinel::gateway::Caller,
    access: &sentinel::policy::Access,
    call: sentinel::request::Call,
    audit: &mut sentinel::audit::AuditRecord,
) -> Result<Admission, sentinel::error::Refusal> {
    gw.admit(caller, access, call, audit).now_or_never().expect("admit does no I/O without [cluster]")
}
