//! The HTTP connection, started as a `Backend`, against a small session-based MCP server on
//! loopback in this process: every message it gets is kept for the test to look at.

use std::convert::Infallible;
use std::sync::atomic::AtomicUsize;
use std::time::Duration;

use axum::body::Body;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

use crate::backend::{Backend, Notice, SlotNotice};
use crate::protocol::Params;

use super::*;

/// A generous bound on waiting for something that happens at once when the code is right.
const DEADLINE: Duration = Duration::from_secs(20);

/// A session-based server: `initialize` opens a session (`s1`, `s2`, ...), anything else
/// needs one it knows (404 otherwise). Methods: `echo` answers the session it came in;
/// `sse` answers on an event stream after a progress notification for its `token`; `ask`
/// asks the client `roots/list` on the stream and answers what the client said; `hang` never
/// answers. GET opens the session's stream, which announces a tools list change.
#[derive(Default)]
struct Server {
    sessions: Mutex<Vec<String>>,
    opened: AtomicUsize,
    /// Every message POSTed, with the session it carried.
    posted: Mutex<Vec<(Option<String>, Value)>>,
    /// GET streams the client holds open.
    streams: AtomicUsize,
    /// Bumped on each of the above, so a test can wait for a condition.
    changed: tokio::sync::watch::Sender<()>,
}

impl Server {
    async fn start() -> (Arc<Server>, String) {
        let server = Arc::new(Server::default());
        let app = axum::Router::new().route("/mcp", axum::routing::post(post).get(get)).with_state(server.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move { axum::serve(listener, app).await });
        (server, format!("http://{addr}/mcp"))
    }

    /// Forgets every session, as a restarted server would.
    fn forget(&self) {
        self.sessions.lock().unwrap().clear();
    }

    fn posted(&self, method: &str) -> Vec<(Option<String>, Value)> {
        self.posted.lock().unwrap().iter().filter(|(_, m)| m["method"] == method).cloned().collect()
    }

    fn streams(&self) -> usize {
        self.streams.load(Ordering::SeqCst)
    }

    fn bump(&self) {
        self.changed.send_replace(());
    }

    /// Waits until `cond` holds (panics after `DEADLINE`).
    async fn until(&self, what: &str, cond: impl Fn(&Server) -> bool) {
        let mut changed = self.changed.subscribe();
        let deadline = tokio::time::Instant::now() + DEADLINE;
        while !cond(self) {
            match tokio::time::timeout_at(deadline, changed.changed()).await {
                Ok(r) => r.unwrap(),
                Err(_) => panic!("still waiting for {what}"),
            }
        }
    }
}

fn session_of(headers: &HeaderMap) -> Option<String> {
    headers.get("mcp-session-id").and_then(|v| v.to_str().ok()).map(str::to_string)
}

fn sse_event(message: &Value) -> String {
    format!("event: message\ndata: {message}\n\n")
}

fn sse(events: impl futures::Stream<Item = String> + Send + 'static) -> Response {
    let body = Body::from_stream(events.map(Ok::<_, Infallible>));
    ([(http::header::CONTENT_TYPE, "text/event-stream")], body).into_response()
}

async fn post(State(s): State<Arc<Server>>, headers: HeaderMap, body: String) -> Response {
    let msg: Value = serde_json::from_str(&body).unwrap();
    let session = session_of(&headers);
    s.posted.lock().unwrap().push((session.clone(), msg.clone()));
    s.bump();
    let id = msg["id"].clone();
    let answer = |result: Value| axum::Json(json!({"jsonrpc": "2.0", "id": id, "result": result})).into_response();
    let method = msg["method"].as_str().unwrap_or_default();
    match method {
        "server/discover" => axum::Json(json!({
            "jsonrpc": "2.0", "id": id, "error": {"code": -32601, "message": "method not found"}
        }))
        .into_response(),
        "initialize" => {
            let sid = format!("s{}", s.opened.fetch_add(1, Ordering::SeqCst) + 1);
            s.sessions.lock().unwrap().push(sid.clone());
            let result = json!({
                "protocolVersion": protocol::SESSION_BASED[0],
                "capabilities": {"tools": {"listChanged": true}},
                "serverInfo": {"name": "test", "version": "1"},
            });
            ([("mcp-session-id", sid)], answer(result)).into_response()
        }
        _ if !session.is_some_and(|sid| s.sessions.lock().unwrap().contains(&sid)) => {
            (StatusCode::NOT_FOUND, "no such session").into_response()
        }
        // Notifications, and the client's answers to the server's requests.
        _ if id.is_null() || msg.get("method").is_none() => StatusCode::ACCEPTED.into_response(),
        "echo" => answer(json!({"session": session_of(&headers)})),
        "sse" => {
            let token = msg["params"]["token"].clone();
            let progress = json!({"jsonrpc": "2.0", "method": "notifications/progress", "params": {"progressToken": token, "progress": 1}});
            let done = json!({"jsonrpc": "2.0", "id": id, "result": {"streamed": true}});
            sse(futures::stream::iter([sse_event(&progress), sse_event(&done)]))
        }
        "ask" => {
            let ask = json!({"jsonrpc": "2.0", "id": "r1", "method": "roots/list", "params": {}});
            let server = s.clone();
            let then = async move {
                let said = |s: &Server| {
                    s.posted.lock().unwrap().iter().find(|(_, m)| m["id"] == "r1" && m.get("method").is_none()).cloned()
                };
                server.until("the client's answer", |s| said(s).is_some()).await;
                let (_, answer) = said(&server).unwrap();
                sse_event(&json!({"jsonrpc": "2.0", "id": id, "result": {"client_said": answer["result"]}}))
            };
            sse(futures::stream::once(async move { sse_event(&ask) }).chain(futures::stream::once(then)))
        }
        "hang" => std::future::pending().await,
        other => panic!("the test server has no method {other}"),
    }
}

/// Counts a GET stream as open until its body is dropped (the client went away).
struct OpenStream(Arc<Server>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        self.0.streams.fetch_sub(1, Ordering::SeqCst);
        self.0.bump();
    }
}

async fn get(State(s): State<Arc<Server>>, headers: HeaderMap) -> Response {
    if !session_of(&headers).is_some_and(|sid| s.sessions.lock().unwrap().contains(&sid)) {
        return StatusCode::NOT_FOUND.into_response();
    }
    s.streams.fetch_add(1, Ordering::SeqCst);
    s.bump();
    let open = OpenStream(s.clone());
    let changed = json!({"jsonrpc": "2.0", "method": "notifications/tools/list_changed"});
    // Comments keep the connection busy, so that a client gone is noticed on the next write.
    let keepalive = tokio_stream::wrappers::IntervalStream::new(tokio::time::interval(Duration::from_millis(50)))
        .map(|_| ": keepalive\n\n".to_string());
    sse(futures::stream::once(async move { sse_event(&changed) }).chain(keepalive).map(move |e| {
        let _ = &open;
        e
    }))
}

struct Started {
    server: Arc<Server>,
    backend: Backend,
    notices: mpsc::UnboundedReceiver<SlotNotice>,
}

async fn started() -> Started {
    let (server, url) = Server::start().await;
    let text = format!("[auth]\ndisabled = true\n[[backend]]\nname = \"web\"\nhttp = {{ url = \"{url}\" }}\n");
    let config = crate::config::Config::parse("t.toml", &text, None, &|_| None).unwrap().backends.remove(0);
    let (tx, notices) = mpsc::unbounded_channel();
    let client = BackendClient::new("sentinel-test").unwrap();
    let backend = Backend::start(4, config, client, tx).await.unwrap();
    Started { server, backend, notices }
}

fn params(v: Value) -> Params {
    serde_json::from_str(&v.to_string()).unwrap()
}

async fn call(backend: &Backend, method: &str, p: Value, opts: &CallOpts) -> Value {
    match backend.call(method, params(p), opts).await {
        Ok(Reply::Result(r)) => serde_json::from_str(r.get()).unwrap(),
        Ok(Reply::Error(e)) => panic!("error reply: {}", e.get()),
        Ok(Reply::Streamed(_)) => panic!("not asked for streamed"),
        Err(e) => panic!("{e}"),
    }
}

#[tokio::test]
async fn the_handshake_opens_a_session_that_later_calls_carry() {
    let s = started().await;
    assert_eq!(s.backend.generation, Generation::SessionBased(protocol::SESSION_BASED[0]));
    assert_eq!(s.server.posted("initialize").len(), 1);
    assert_eq!(s.server.posted("notifications/initialized")[0].0.as_deref(), Some("s1"));
    let answer = call(&s.backend, "echo", json!({}), &CallOpts::default()).await;
    assert_eq!(answer, json!({"session": "s1"}));
}

#[tokio::test]
async fn a_forgotten_session_is_reopened_and_the_call_sent_again() {
    let s = started().await;
    s.server.forget();
    let answer = call(&s.backend, "echo", json!({}), &CallOpts::default()).await;
    assert_eq!(answer, json!({"session": "s2"}));
    let echoes: Vec<_> = s.server.posted("echo").into_iter().map(|(sid, _)| sid).collect();
    assert_eq!(echoes, [Some("s1".to_string()), Some("s2".to_string())], "refused on the old, run on the new");
    assert_eq!(s.server.posted("initialize").len(), 2);
    assert_eq!(s.server.posted("notifications/initialized")[1].0.as_deref(), Some("s2"));
    assert!(s.backend.is_alive());
}

#[tokio::test]
async fn a_call_dropped_before_its_answer_is_cancelled_at_the_backend() {
    let s = started().await;
    let opts = CallOpts::default();
    let mut hanging = Box::pin(s.backend.call("hang", Params::default(), &opts));
    tokio::select! {
        _ = &mut hanging => panic!("`hang` never answers"),
        () = s.server.until("the hanging call", |s| !s.posted("hang").is_empty()) => {}
    }
    drop(hanging);
    s.server.until("its cancellation", |s| !s.posted("notifications/cancelled").is_empty()).await;
    let hang_id = s.server.posted("hang")[0].1["id"].clone();
    let (session, cancel) = s.server.posted("notifications/cancelled").remove(0);
    assert_eq!(cancel["params"]["requestId"], hang_id);
    assert_eq!(session.as_deref(), Some("s1"));
}

#[tokio::test]
async fn an_answer_on_an_event_stream_comes_after_its_notifications() {
    let s = started().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let opts = CallOpts { events: Some(tx), ..Default::default() };
    let answer = call(&s.backend, "sse", json!({"token": "tok-9"}), &opts).await;
    assert_eq!(answer, json!({"streamed": true}));
    match events.try_recv() {
        Ok(Event::Notification { method, params }) => {
            assert_eq!(method, "notifications/progress");
            let params: Value = serde_json::from_str(params.unwrap().get()).unwrap();
            assert_eq!(params["progressToken"], "tok-9");
        }
        other => panic!("expected the progress notification, got {other:?}"),
    }
}

#[tokio::test]
async fn a_request_on_an_event_stream_is_relayed_and_the_answer_posted_back() {
    let s = started().await;
    let (tx, mut events) = mpsc::unbounded_channel();
    let opts = CallOpts { events: Some(tx), ..Default::default() };
    let client = async {
        match tokio::time::timeout(DEADLINE, events.recv()).await.expect("a request in time") {
            Some(Event::Request { method, reply, .. }) => {
                assert_eq!(method, "roots/list");
                let _ = reply.send(Reply::Result(crate::backend::raw(r#"{"roots":[]}"#.into())));
            }
            other => panic!("expected a relayed request, got {other:?}"),
        }
    };
    let (answer, ()) = tokio::join!(call(&s.backend, "ask", json!({}), &opts), client);
    assert_eq!(answer, json!({"client_said": {"roots": []}}));
}

/// The session's GET stream brings list changes; it is the backend's task, ended when the
/// backend is terminated — the one the session had before a re-initialize too.
#[tokio::test]
async fn the_get_streams_bring_list_changes_and_end_when_the_backend_is_terminated() {
    let mut s = started().await;
    let notice = tokio::time::timeout(DEADLINE, s.notices.recv()).await.expect("a notice in time").unwrap();
    assert_eq!(notice.slot, 4);
    assert!(matches!(notice.notice, Notice::ListChanged("tools")), "{:?}", notice.notice);
    s.server.until("the first stream", |s| s.streams() == 1).await;
    s.server.forget();
    call(&s.backend, "echo", json!({}), &CallOpts::default()).await;
    // This test server keeps a forgotten session's stream open; the backend holds both.
    s.server.until("the new session's stream", |s| s.streams() == 2).await;
    s.backend.terminate(DEADLINE).await;
    s.server.until("both streams closed", |s| s.streams() == 0).await;
}

#[tokio::test]
async fn a_backend_dropped_ends_its_get_stream() {
    let s = started().await;
    s.server.until("the stream", |s| s.streams() == 1).await;
    drop(s.backend);
    s.server.until("the stream closed", |s| s.streams() == 0).await;
}
