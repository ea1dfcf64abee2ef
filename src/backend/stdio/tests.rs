//! The stdio connection against a real child: a short Python script speaking newline-delimited
//! JSON-RPC, scripted by the method each test calls.

use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::backend::{Notice, SlotNotice};

/// Answers by method: `echo` its params; `pair` two calls at once, the second first; `progress`
/// after a progress notification for the token in its params; `announce` after a tools
/// list_changed; `big` after a line of `size` bytes answering it too; `ask` after a `roots/list`
/// request of its own, with the client's answer; `cancelled` with the request ids cancelled so
/// far; `hang` never; `exit` by exiting.
const SCRIPT: &str = r#"
import json, sys
def send(m):
    m["jsonrpc"] = "2.0"
    sys.stdout.write(json.dumps(m) + "\n")
    sys.stdout.flush()
paired, asked, cancelled = [], None, []
for line in sys.stdin:
    m = json.loads(line)
    method, id, params = m.get("method"), m.get("id"), m.get("params") or {}
    if method is None:
        send({"id": asked, "result": {"client_said": m.get("result")}})
    elif method == "notifications/cancelled":
        cancelled.append(params["requestId"])
    elif method == "echo":
        send({"id": id, "result": params})
    elif method == "pair":
        paired.append((id, params))
        if len(paired) == 2:
            for (i, p) in reversed(paired):
                send({"id": i, "result": p})
    elif method == "progress":
        send({"method": "notifications/progress", "params": {"progressToken": params["token"], "progress": 1}})
        send({"id": id, "result": {}})
    elif method == "announce":
        send({"method": "notifications/tools/list_changed"})
        send({"id": id, "result": {}})
    elif method == "big":
        send({"id": id, "result": {"pad": "x" * params["size"]}})
        send({"id": id, "result": {"after": "big"}})
    elif method == "ask":
        asked = id
        send({"id": "s1", "method": "roots/list", "params": {}})
    elif method == "cancelled":
        send({"id": id, "result": {"seen": cancelled}})
    elif method == "exit":
        sys.exit(3)
"#;

/// A generous bound on waiting for something that happens at once when the code is right.
const DEADLINE: Duration = Duration::from_secs(20);

struct Child {
    conn: StdioConn,
    notices: mpsc::UnboundedReceiver<SlotNotice>,
    tasks: Tasks,
}

fn child(max_message_bytes: usize) -> Child {
    let text = "[auth]\ndisabled = true\n[[backend]]\nname = \"script\"\nstdio = { command = \"python3\" }\n";
    let mut config = crate::config::Config::parse("t.toml", text, None, &|_| None).unwrap().backends.remove(0);
    let TransportConfig::Stdio { args, .. } = &mut config.transport else { unreachable!() };
    *args = vec!["-u".into(), "-c".into(), SCRIPT.into()];
    config.max_message_bytes = max_message_bytes;
    let (tx, notices) = mpsc::unbounded_channel();
    let tasks = Tasks::new();
    let conn = StdioConn::spawn(7, &config, tx, &tasks, None).unwrap();
    Child { conn, notices, tasks }
}

async fn call(conn: &StdioConn, method: &str, params: &str) -> Result<serde_json::Value, BackendError> {
    call_with(conn, method, params, &CallOpts::default()).await
}

async fn call_with(
    conn: &StdioConn,
    method: &str,
    params: &str,
    opts: &CallOpts,
) -> Result<serde_json::Value, BackendError> {
    let reply = tokio::time::timeout(DEADLINE, conn.request(method, params.into(), opts)).await.expect("an answer");
    match reply? {
        Reply::Result(r) => Ok(serde_json::from_str(r.get()).unwrap()),
        Reply::Error(e) => panic!("error reply: {}", e.get()),
        Reply::Streamed(_) => panic!("not asked for streamed"),
    }
}

async fn next_notice(notices: &mut mpsc::UnboundedReceiver<SlotNotice>) -> SlotNotice {
    tokio::time::timeout(DEADLINE, notices.recv()).await.expect("a notice in time").expect("notices open")
}

#[tokio::test]
async fn answers_are_matched_to_their_calls_by_id_whatever_their_order() {
    let c = child(1 << 20);
    let (first, second) = tokio::join!(call(&c.conn, "pair", r#"{"n":1}"#), call(&c.conn, "pair", r#"{"n":2}"#));
    assert_eq!(first.unwrap(), serde_json::json!({"n": 1}));
    assert_eq!(second.unwrap(), serde_json::json!({"n": 2}));
}

#[tokio::test]
async fn a_progress_notification_reaches_the_call_with_its_token() {
    let c = child(1 << 20);
    let (tx, mut events) = mpsc::unbounded_channel();
    let opts = CallOpts { events: Some(tx), progress_token: Some("tok-1".into()), ..Default::default() };
    call_with(&c.conn, "progress", r#"{"token":"tok-1"}"#, &opts).await.unwrap();
    match events.try_recv() {
        Ok(Event::Notification { method, params }) => {
            assert_eq!(method, "notifications/progress");
            let params: serde_json::Value = serde_json::from_str(params.unwrap().get()).unwrap();
            assert_eq!(params["progressToken"], "tok-1");
        }
        other => panic!("expected the progress notification before the answer, got {other:?}"),
    }
}

#[tokio::test]
async fn a_list_change_from_the_child_is_a_notice_of_its_slot() {
    let mut c = child(1 << 20);
    call(&c.conn, "announce", "{}").await.unwrap();
    let n = next_notice(&mut c.notices).await;
    assert_eq!(n.slot, 7);
    assert!(matches!(n.notice, Notice::ListChanged("tools")), "{:?}", n.notice);
}

#[tokio::test]
async fn a_request_from_the_child_is_relayed_to_the_caller_and_answered() {
    let c = child(1 << 20);
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
    let (answer, ()) = tokio::join!(call_with(&c.conn, "ask", "{}", &opts), client);
    assert_eq!(answer.unwrap(), serde_json::json!({"client_said": {"roots": []}}));
}

#[tokio::test]
async fn a_call_dropped_before_its_answer_is_cancelled_at_the_child() {
    let c = child(1 << 20);
    let opts = CallOpts::default();
    let mut hanging = Box::pin(c.conn.request("hang", "{}".into(), &opts));
    // Polled once: its line is queued for the child, and it waits for an answer.
    assert!(futures::poll!(&mut hanging).is_pending());
    drop(hanging);
    // The child reads its stdin in order: the cancellation came before this call.
    let seen = call(&c.conn, "cancelled", "{}").await.unwrap();
    assert_eq!(seen, serde_json::json!({"seen": [1]}), "the hanging call was the first request");
}

#[tokio::test]
async fn a_line_over_the_limit_is_dropped_and_the_next_one_read() {
    let c = child(4096);
    let answer = call(&c.conn, "big", r#"{"size":10000}"#).await.unwrap();
    assert_eq!(answer, serde_json::json!({"after": "big"}));
    assert!(c.conn.is_alive());
    assert_eq!(call(&c.conn, "echo", r#"{"still":"here"}"#).await.unwrap(), serde_json::json!({"still": "here"}));
}

#[tokio::test]
async fn a_child_that_exits_fails_its_calls_and_is_reported_closed() {
    let mut c = child(1 << 20);
    let err = call(&c.conn, "exit", "{}").await.unwrap_err();
    assert!(matches!(&err, BackendError::Unreachable(why) if why.contains("exited during the call")), "{err:?}");
    let n = next_notice(&mut c.notices).await;
    assert!(matches!(n.notice, Notice::Closed(_)), "{:?}", n.notice);
    assert!(!c.conn.is_alive());
    let later = call(&c.conn, "echo", "{}").await.unwrap_err();
    assert!(matches!(&later, BackendError::Unreachable(why) if why.contains("exited")), "{later:?}");
}

/// Terminating stops the process and every task of its connection: none is left running.
#[tokio::test]
async fn terminate_leaves_no_task_behind() {
    let c = child(1 << 20);
    call(&c.conn, "echo", "{}").await.unwrap();
    c.conn.terminate(Duration::from_secs(5)).await;
    assert!(!c.conn.is_alive());
    assert!(c.tasks.stop("test", DEADLINE).await, "the writer, reader and stderr drain all ended");
}

/// A connection whose owner stops it without terminating the process first (a backend
/// dropped) still stops and reaps the process: the reader sees the stop.
#[tokio::test]
async fn stopping_the_tasks_stops_the_process() {
    let c = child(1 << 20);
    call(&c.conn, "echo", "{}").await.unwrap();
    assert!(c.tasks.stop("test", DEADLINE).await);
    assert!(!c.conn.is_alive());
    let err = call(&c.conn, "echo", "{}").await.unwrap_err();
    assert!(matches!(err, BackendError::Unreachable(_)), "{err:?}");
}
