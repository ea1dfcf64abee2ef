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
