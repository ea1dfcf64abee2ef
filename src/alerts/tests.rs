use super::*;

fn alert(kind: AlertKind, subject: &str) -> Alert {
    Alert::new(kind, subject, "why")
}

const WINDOW: Duration = Duration::from_secs(300);

#[tokio::test(start_paused = true)]
async fn the_same_kind_and_subject_is_sent_once_per_window() {
    let mut d = Dedup::new(WINDOW);
    let t = Instant::now();
    assert!(d.admit(&alert(AlertKind::CircuitOpen, "a"), t));
    assert!(!d.admit(&alert(AlertKind::CircuitOpen, "a"), t + Duration::from_secs(10)));
    assert!(d.admit(&alert(AlertKind::CircuitOpen, "b"), t), "another subject is another alert");
    assert!(d.admit(&alert(AlertKind::BackendDown, "a"), t), "another kind is another alert");
    assert!(d.admit(&alert(AlertKind::CircuitOpen, "a"), t + WINDOW), "the window has passed");
}

#[tokio::test(start_paused = true)]
async fn a_recovery_of_an_announced_problem_always_goes_out_once() {
    let mut d = Dedup::new(WINDOW);
    let t = Instant::now();
    let s = Duration::from_secs(1);
    assert!(d.admit(&alert(AlertKind::BackendDown, "m"), t));
    assert!(d.admit(&alert(AlertKind::BackendUp, "m"), t + s));
    // Flapping: the second down is within the window, so is its recovery, and it was never
    // announced: both are quiet, and the channel's last word ("up") is still true.
    assert!(!d.admit(&alert(AlertKind::BackendDown, "m"), t + 2 * s));
    assert!(!d.admit(&alert(AlertKind::BackendUp, "m"), t + 3 * s));
    // A crash loop is news of its own, and its recovery is owed even inside the window.
    assert!(d.admit(&alert(AlertKind::CrashLoop, "m"), t + 4 * s));
    assert!(d.admit(&alert(AlertKind::BackendUp, "m"), t + 5 * s));
    assert!(!d.admit(&alert(AlertKind::BackendUp, "m"), t + 6 * s), "owed once, not twice");
}

#[tokio::test(start_paused = true)]
async fn a_problem_after_a_sent_recovery_is_held_and_goes_out_when_the_window_ends() {
    let mut d = Dedup::new(WINDOW);
    let t = Instant::now();
    let s = Duration::from_secs(1);
    assert!(d.admit(&alert(AlertKind::BackendDown, "m"), t));
    assert!(d.admit(&alert(AlertKind::BackendUp, "m"), t + s));
    // Down again inside the window, and it stays down: the channel must not keep saying "up".
    assert!(!d.admit(&alert(AlertKind::BackendDown, "m"), t + 2 * s));
    assert!(!d.admit(&alert(AlertKind::BackendDown, "m"), t + 3 * s), "repeats are not news");
    assert!(d.due(t + WINDOW - s).is_empty(), "not before the window ends");
    let due = d.due(t + WINDOW);
    assert_eq!(due.iter().map(|a| (a.kind, a.subject.as_str())).collect::<Vec<_>>(), [(AlertKind::BackendDown, "m")]);
    assert!(d.due(t + 2 * WINDOW).is_empty(), "sent once");
    // Its recovery is owed now, whatever the window.
    assert!(d.admit(&alert(AlertKind::BackendUp, "m"), t + WINDOW + s));
}

#[tokio::test(start_paused = true)]
async fn a_held_problem_that_recovers_first_is_never_sent() {
    let mut d = Dedup::new(WINDOW);
    let t = Instant::now();
    let s = Duration::from_secs(1);
    assert!(d.admit(&alert(AlertKind::CircuitOpen, "m"), t));
    assert!(d.admit(&alert(AlertKind::CircuitClosed, "m"), t + s));
    assert!(!d.admit(&alert(AlertKind::CircuitOpen, "m"), t + 2 * s));
    assert!(!d.admit(&alert(AlertKind::CircuitClosed, "m"), t + 3 * s), "the channel already says closed");
    assert!(d.due(t + 2 * WINDOW).is_empty());
    // A problem repeated while the channel already says so is not held either.
    assert!(d.admit(&alert(AlertKind::BackendDown, "n"), t));
    assert!(!d.admit(&alert(AlertKind::BackendDown, "n"), t + s));
    assert!(d.due(t + 2 * WINDOW).is_empty());
}

#[test]
fn payloads_have_each_format_s_shape() {
    let a = Alert::new(AlertKind::BackendDown, "m", "process exited");
    let generic: serde_json::Value =
        serde_json::from_str(&payload(Format::Generic, &a, "2026-01-01T00:00:00Z")).unwrap();
    assert_eq!(
        generic,
        serde_json::json!({"kind": "backend_down", "subject": "m", "message": "process exited",
            "ts": "2026-01-01T00:00:00Z", "gateway": "sentinel"})
    );
    let discord: serde_json::Value = serde_json::from_str(&payload(Format::Discord, &a, "t")).unwrap();
    assert_eq!(discord.as_object().unwrap().len(), 1);
    assert_eq!(discord["content"], "[sentinel] backend_down `m`: process exited");
    let slack: serde_json::Value = serde_json::from_str(&payload(Format::Slack, &a, "t")).unwrap();
    assert_eq!(slack, serde_json::json!({"text": "[sentinel] backend_down `m`: process exited"}));
}

#[test]
fn long_messages_fit_discord_s_limit() {
    let a = Alert::new(AlertKind::CrashLoop, "m", "x".repeat(5000));
    let v: serde_json::Value = serde_json::from_str(&payload(Format::Discord, &a, "t")).unwrap();
    assert!(v["content"].as_str().unwrap().chars().count() <= 2000);
}

#[test]
fn a_webhook_s_debug_print_shows_the_host_only() {
    let w = Webhook { url: "https://discord.com/api/webhooks/1/SECRET-TOKEN".into(), format: Format::Discord };
    let s = format!("{w:?}");
    assert!(s.contains("discord.com") && !s.contains("SECRET"), "{s}");
}

#[tokio::test]
async fn notify_returns_at_once_and_counts_what_a_full_queue_drops() {
    // A webhook nobody answers quickly (a non-routable address): the sender task is stuck on
    // its first delivery while notify keeps returning.
    let config = AlertsConfig {
        webhooks: vec![Webhook { url: "http://10.255.255.1:9/hook".into(), format: Format::Generic }],
        min_interval: WINDOW,
    };
    let alerter = Alerter::start(&config, reqwest::Client::new());
    let t = std::time::Instant::now();
    for i in 0..(QUEUE + 20) {
        alerter.notify(alert(AlertKind::BackendDown, &format!("b{i}")));
    }
    assert!(t.elapsed() < Duration::from_millis(500), "{:?}", t.elapsed());
    assert!(alerter.dropped.load(Ordering::Relaxed) >= 19);
}

/// Closing (shutdown, or a reload replacing the alerter) sends what was queued, then ends the
/// sender; later alerts are dropped.
#[tokio::test]
async fn close_sends_what_was_queued_then_ends() {
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let app = axum::Router::new()
        .route(
            "/hook",
            axum::routing::post(
                |axum::extract::State(r): axum::extract::State<Arc<Mutex<Vec<String>>>>, body: String| async move {
                    r.lock().unwrap().push(body);
                },
            ),
        )
        .with_state(received.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    let config = AlertsConfig { webhooks: vec![Webhook { url, format: Format::Generic }], min_interval: WINDOW };
    let alerter = Alerter::start(&config, reqwest::Client::new());
    alerter.notify(alert(AlertKind::BackendDown, "a"));
    alerter.notify(alert(AlertKind::BackendDown, "b"));
    assert!(alerter.close(Duration::from_secs(20)).await, "the sender ended");
    let sent = received.lock().unwrap().clone();
    assert_eq!(sent.len(), 2, "{sent:?}");
    alerter.notify(alert(AlertKind::BackendDown, "c"));
    assert_eq!(alerter.dropped.load(Ordering::Relaxed), 1);
}

#[test]
fn without_webhooks_nothing_is_started() {
    // No runtime here: starting a task would panic.
    let alerter = Alerter::start(&AlertsConfig::default(), reqwest::Client::new());
    assert!(!alerter.enabled());
    alerter.notify(alert(AlertKind::BackendDown, "m"));
}
