//! Process lifecycle: after the gateway stops, no process of any backend's group remains.

mod common;

use common::*;

/// (pid, ppid, pgid) of every process, from /proc.
fn processes() -> Vec<(i32, i32, i32)> {
    let mut out = Vec::new();
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<i32>() else { continue };
        let Ok(stat) = std::fs::read_to_string(e.path().join("stat")) else { continue };
        // The command name may hold spaces; fields after the closing parenthesis are fixed.
        let Some(rest) = stat.rsplit_once(')').map(|(_, r)| r) else { continue };
        let f: Vec<&str> = rest.split_whitespace().collect();
        if let (Some(ppid), Some(pgid)) = (f.get(1).and_then(|x| x.parse().ok()), f.get(2).and_then(|x| x.parse().ok()))
        {
            out.push((pid, ppid, pgid));
        }
    }
    out
}

#[tokio::test]
async fn sigterm_leaves_no_backend_process_behind() {
    // The backend starts a grandchild of its own (as npx and uvx do) that ignores stdin closing.
    let script = format!("sleep 300 & exec {} \"$@\"", mock_bin().display());
    let config = format!(
        "[[backend]]\nname = \"m\"\nstdio = {{ command = \"sh\", args = [\"-c\", {}, \"sh\"] }}\n",
        lit(script)
    );
    let mut gw = Gateway::start(&config);
    assert_eq!(HttpClient::modern(&gw.url).call("m__echo", serde_json::json!({})).await.status, 200);
    let gateway = gw.child.id() as i32;
    let groups: Vec<i32> = processes().iter().filter(|(_, ppid, _)| *ppid == gateway).map(|(_, _, g)| *g).collect();
    assert!(!groups.is_empty(), "the backend runs as a child of the gateway");
    let in_groups = || processes().iter().filter(|(_, _, g)| groups.contains(g)).count();
    assert!(in_groups() >= 2, "the backend and its grandchild share the backend's process group");

    assert!(std::process::Command::new("kill").args(["-TERM", &gateway.to_string()]).status().unwrap().success());
    let status = tokio::task::spawn_blocking(move || gw.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{status}");
    eventually("no process of the backend's group remains", || async { in_groups() == 0 }).await;
}

/// A session whose call was aborted (the client went away mid-call) is still ended at its
/// idle timeout: the call's in-flight entry is released when the aborted call is dropped, as
/// an answered call's is. Over a JSON answer and over an event stream.
#[tokio::test]
async fn a_session_whose_call_was_aborted_is_reaped() {
    use serde_json::json;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("mock.log");
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\nsession_idle_timeout = \"1s\"\n[auth]\ndisabled = true\n{}",
        mock_stdio_backend("m", None, &["--log", log.to_str().unwrap()])
    );
    std::fs::write(dir.path().join("sentinel.toml"), config).unwrap();
    let gw = Gateway::start_at(std::sync::Arc::new(dir), &[]);
    let open_sessions = || async {
        let text = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap().text().await.unwrap();
        let line = text.lines().find(|l| l.starts_with("sentinel_sessions{transport=\"http\"}")).map(str::to_string);
        line.and_then(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok())).unwrap_or(-1.0)
    };
    for (n, accept) in [(1, "application/json"), (2, "application/json, text/event-stream")] {
        let mut c = HttpClient::legacy(&gw.url, json!({})).await;
        c.accept = accept;
        assert_eq!(open_sessions().await, 1.0);
        let caller = c.clone();
        let call = tokio::spawn(async move { caller.call("m__slow", json!({"ms": 60_000})).await });
        eventually("the call reaches the backend", || async {
            mock_log(&log).iter().filter(|m| m["params"]["name"] == "slow").count() >= n
        })
        .await;
        // The client goes away mid-call: its connection closes, the gateway drops the call.
        call.abort();
        let _ = call.await;
        // Watched through /metrics: a request on the session itself would keep it in use.
        eventually("the session is reaped at its idle timeout", || async { open_sessions().await == 0.0 }).await;
        let ping = c.post_raw(&json!({"jsonrpc":"2.0","id":1,"method":"ping"}).to_string(), &[]).await;
        assert_eq!(ping.status, 404, "{ping:?}");
    }
}
