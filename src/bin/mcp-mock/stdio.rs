//! The stdio transport: one JSON message per line on stdin/stdout. Requests run
//! concurrently; one writer task owns stdout so lines are never interleaved.

use crate::context::Ctx;
use crate::dispatch::{self, check_modern_version, modern_meta_version, unsupported_version};
use crate::rpc::{Emitter, Frame, Incoming, error_line};
use crate::server::{Era, Generation, Server, Session};
use serde_json::Value;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// stdin through the reactor when it is a pipe, as when a gateway or the bench spawns the
/// mock. tokio's own stdin reads on its blocking thread pool, a hand-off per read that made the
/// mock slower than a real server and so flattered the gateway in `sentinel-bench --backend
/// stdio`. The pipe is left non-blocking at exit: only the mock's side of it.
fn input() -> Box<dyn AsyncRead + Unpin + Send> {
    match std::io::stdin().as_fd().try_clone_to_owned().map(tokio::net::unix::pipe::Receiver::from_owned_fd) {
        Ok(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdin()),
    }
}

/// stdout likewise.
fn output() -> Box<dyn AsyncWrite + Unpin + Send> {
    match std::io::stdout().as_fd().try_clone_to_owned().map(tokio::net::unix::pipe::Sender::from_owned_fd) {
        Ok(Ok(pipe)) => Box::new(pipe),
        _ => Box::new(tokio::io::stdout()),
    }
}

pub async fn run(server: Arc<Server>, garbage_at_start: bool) -> anyhow::Result<()> {
    let mut stdout = output();
    if garbage_at_start {
        stdout.write_all(b"mcp-mock says hello; this line is not JSON\n").await?;
        stdout.flush().await?;
    }
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writer = tokio::spawn(async move {
        while let Some(frame) = rx.recv().await {
            let line = match frame {
                Frame::Line(line) | Frame::Final { line, .. } => line,
            };
            if stdout.write_all(format!("{line}\n").as_bytes()).await.is_err() || stdout.flush().await.is_err() {
                break;
            }
        }
    });

    // The process-wide legacy session (stdio has exactly one client).
    let session = Arc::new(Session::new(None));
    *session.stream.lock().unwrap() = Some(tx.clone());
    server.add_legacy_sink(session.clone());

    let tracker = TaskTracker::new();
    let mut lines = BufReader::new(input()).lines();
    while let Some(line) = lines.next_line().await? {
        if line.trim().is_empty() {
            continue;
        }
        server.record(&line);
        match Incoming::parse(&line) {
            Ok(incoming) => on_message(&server, &session, &tx, &tracker, incoming),
            Err(e) => {
                let _ = tx.send(Frame::Line(error_line("null", &e)));
            }
        }
    }

    // EOF: give in-flight answers a moment to be written, then exit.
    tracker.close();
    let _ = tokio::time::timeout(Duration::from_millis(500), tracker.wait()).await;
    *session.stream.lock().unwrap() = None;
    drop(tx);
    let _ = tokio::time::timeout(Duration::from_millis(200), writer).await;
    std::process::exit(0);
}

fn on_message(server: &Arc<Server>, session: &Arc<Session>, tx: &Emitter, tracker: &TaskTracker, incoming: Incoming) {
    if let Some(response) = incoming.response {
        let id = incoming.id.as_ref().and_then(Value::as_str).unwrap_or_default();
        if let Some(waiter) = session.pending.lock().unwrap().remove(id) {
            let _ = waiter.send(response);
        }
        return;
    }
    let Some(method) = incoming.method.clone() else {
        return;
    };
    let Some(id) = incoming.id.clone() else {
        if method == "notifications/cancelled" {
            if let Some(request_id) = incoming.params.get("requestId") {
                if let Some(token) = session.inflight.lock().unwrap().get(&request_id.to_string()) {
                    token.cancel();
                }
            }
        }
        return;
    };
    server.count_request();

    let era = match server.generation {
        Generation::Legacy => Era::Legacy,
        Generation::Modern => Era::Modern,
        Generation::Both if incoming.has_modern_meta() => Era::Modern,
        Generation::Both if method == "initialize" || session.ready.load(Ordering::SeqCst) => Era::Legacy,
        Generation::Both => Era::Modern,
    };
    if era == Era::Modern {
        let checked = if method == "initialize" && !incoming.has_modern_meta() {
            let asked = incoming.params.get("protocolVersion").and_then(Value::as_str).unwrap_or("");
            Err(unsupported_version(asked))
        } else {
            modern_meta_version(&incoming.params).and_then(|v| check_modern_version(&v))
        };
        if let Err(e) = checked {
            let _ = tx.send(Frame::Line(error_line(&id.to_string(), &e)));
            return;
        }
    }

    let cancel = CancellationToken::new();
    let key = id.to_string();
    session.inflight.lock().unwrap().insert(key.clone(), cancel.clone());
    let legacy_session = (era == Era::Legacy).then(|| session.clone());
    let ctx = Ctx::new(
        server.clone(),
        era,
        id.clone(),
        method,
        incoming.params,
        incoming.raw_params,
        legacy_session,
        tx.clone(),
        cancel,
        None,
    );
    let (session, tx) = (session.clone(), tx.clone());
    tracker.spawn(async move {
        let reply = dispatch::handle(ctx).await;
        session.inflight.lock().unwrap().remove(&key);
        if let Some((line, status)) = reply.encode(&id) {
            let _ = tx.send(Frame::Final { line, status });
        }
    });
}
