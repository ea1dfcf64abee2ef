//! Alerts: webhooks (generic JSON, Discord, Slack) told when a backend goes down or comes
//! back, a circuit opens or closes, a backend crash-loops, or the audit trail degrades.
//!
//! `Alerter::notify` never blocks its caller: it decides (de-duplication) under a short lock
//! and hands the alert to a bounded queue that one sender task drains. A full queue drops the
//! alert with a counted warning; a webhook that fails is logged (by host only — the URL may
//! carry a token) and retried once, never more, so a broken channel cannot pile up work.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::tasks::Tasks;

/// Longest one webhook delivery may take.
const DELIVERY_TIMEOUT: Duration = Duration::from_secs(5);
/// Wait before the single retry of a failed delivery.
const RETRY_DELAY: Duration = Duration::from_secs(1);
/// How often held problems are looked at (see `Dedup::held`).
const HELD_CHECK: Duration = Duration::from_secs(5);
/// Alerts waiting for the sender task at most; beyond it they are dropped (and counted).
const QUEUE: usize = 64;
/// Discord refuses `content` longer than 2000 characters.
const MAX_TEXT_CHARS: usize = 1900;

/// What happened; each kind has a recovery kind or none, and is deduplicated per subject.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AlertKind {
    /// A stdio backend exited (or an HTTP one stopped answering) and is being restarted.
    BackendDown,
    /// A backend that was down or crash-looping answers again.
    BackendUp,
    /// A backend's circuit breaker opened: its calls are refused until a probe succeeds.
    CircuitOpen,
    /// The circuit closed again after a successful probe.
    CircuitClosed,
    /// A backend keeps dying soon after each restart.
    CrashLoop,
    /// The audit store stopped answering: records pile up in the local spool.
    AuditSpooling,
    /// Not even the audit spool can be written (calls refused, or let through with `fail_open`).
    AuditFailClosed,
    /// The audit store has not answered for a while; the spool holds the backlog.
    AuditStoreDown,
    /// The audit store refused records for good; they went to the dead-letter file.
    AuditDeadLetter,
    /// A name or resource URI hidden because it falls in another backend's namespace, or two
    /// backends offer it.
    NameClash,
    /// The Redis of `[cluster]` stopped answering: limits fall back per `on_redis_failure`.
    RedisDown,
    /// A backend served a tool definition that differs from its pin (`[pinning]`).
    ToolChanged,
}

impl AlertKind {
    /// The stable machine word for this kind, as webhooks and logs show it.
    pub fn as_str(self) -> &'static str {
        match self {
            AlertKind::BackendDown => "backend_down",
            AlertKind::BackendUp => "backend_up",
            AlertKind::CircuitOpen => "circuit_open",
            AlertKind::CircuitClosed => "circuit_closed",
            AlertKind::CrashLoop => "crash_loop",
            AlertKind::AuditSpooling => "audit_spooling",
            AlertKind::AuditFailClosed => "audit_fail_closed",
            AlertKind::AuditStoreDown => "audit_store_down",
            AlertKind::AuditDeadLetter => "audit_dead_letter",
            AlertKind::NameClash => "name_clash",
            AlertKind::RedisDown => "redis_down",
            AlertKind::ToolChanged => "tool_definition_changed",
        }
    }

    /// For a problem, the alert that announces its end; `None` for a recovery itself (and
    /// for audit problems, which have no recovery alert).
    fn recovered_by(self) -> Option<AlertKind> {
        match self {
            AlertKind::BackendDown | AlertKind::CrashLoop => Some(AlertKind::BackendUp),
            AlertKind::CircuitOpen => Some(AlertKind::CircuitClosed),
            _ => None,
        }
    }

    fn is_recovery(self) -> bool {
        matches!(self, AlertKind::BackendUp | AlertKind::CircuitClosed)
    }
}

/// One event to report to the webhooks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Alert {
    /// What happened.
    pub kind: AlertKind,
    /// The backend's name, or `"audit"`.
    pub subject: String,
    /// One line for a human, sent as the alert's text.
    pub message: String,
}

impl Alert {
    /// An alert of `kind` about `subject` (a backend's name, or `"audit"`).
    pub fn new(kind: AlertKind, subject: impl Into<String>, message: impl Into<String>) -> Alert {
        Alert { kind, subject: subject.into(), message: message.into() }
    }
}

/// The body a webhook expects: Sentinel's own JSON, or a chat service's.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// `{"kind","subject","message","ts","gateway":"sentinel"}`.
    Generic,
    /// `{"content": "..."}`.
    Discord,
    /// `{"text": "..."}`.
    Slack,
}

/// One `[[alerts.webhook]]`: where alerts are posted and in which format.
#[derive(Clone, PartialEq)]
pub struct Webhook {
    /// A secret: Discord and Slack URLs are their own credential. Only `host()` is ever logged.
    pub url: String,
    /// The shape of the body posted.
    pub format: Format,
}

impl Webhook {
    /// The URL's host alone: the one part of a webhook that may be logged.
    pub fn host(&self) -> String {
        reqwest::Url::parse(&self.url).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
    }
}

impl fmt::Debug for Webhook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Webhook").field("host", &self.host()).field("format", &self.format).finish()
    }
}

/// `[alerts]`: the webhooks and how often one alert may repeat.
#[derive(Debug, Clone, PartialEq)]
pub struct AlertsConfig {
    /// Every webhook receives every alert.
    pub webhooks: Vec<Webhook>,
    /// The same (kind, subject) is sent at most once per this window.
    pub min_interval: Duration,
}

impl Default for AlertsConfig {
    fn default() -> Self {
        AlertsConfig { webhooks: Vec::new(), min_interval: Duration::from_secs(300) }
    }
}

/// Which alerts go out: the de-duplication and rate limit, kept apart from delivery so it
/// can be tested on a paused clock.
#[derive(Debug)]
struct Dedup {
    min_interval: Duration,
    /// When each (kind, subject) was last sent.
    last_sent: HashMap<(AlertKind, String), Instant>,
    /// Problems announced and not yet recovered: their recovery goes out whatever the window,
    /// once, so a channel never stays on "down" for something that came back.
    announced: HashSet<(AlertKind, String)>,
    /// Problems kept back by the window while the channel's last word on them is a recovery:
    /// each goes out when its window ends, unless its recovery comes first. So a backend that
    /// flaps and then stays down does not leave the channel saying "up".
    held: HashMap<(AlertKind, String), Alert>,
}

impl Dedup {
    fn new(min_interval: Duration) -> Dedup {
        Dedup { min_interval, last_sent: HashMap::new(), announced: HashSet::new(), held: HashMap::new() }
    }

    fn admit(&mut self, alert: &Alert, now: Instant) -> bool {
        let key = (alert.kind, alert.subject.clone());
        if alert.kind.is_recovery() {
            // It came back before a held problem went out: the channel never heard of it.
            self.held.retain(|(kind, subject), _| subject != &alert.subject || kind.recovered_by() != Some(alert.kind));
        }
        let owed = alert.kind.is_recovery() && self.announced.remove(&key);
        let recent = self.last_sent.get(&key).is_some_and(|t| now.duration_since(*t) < self.min_interval);
        if !owed && recent {
            let channel_says_fine =
                alert.kind.recovered_by().is_some_and(|r| !self.announced.contains(&(r, alert.subject.clone())));
            if channel_says_fine {
                self.held.insert(key, alert.clone());
            }
            return false;
        }
        self.sent(alert, now);
        true
    }

    /// Held problems whose window has ended: they go out now.
    fn due(&mut self, now: Instant) -> Vec<Alert> {
        let ready: Vec<(AlertKind, String)> = self
            .held
            .keys()
            .filter(|k| self.last_sent.get(*k).is_none_or(|t| now.duration_since(*t) >= self.min_interval))
            .cloned()
            .collect();
        let out: Vec<Alert> = ready.into_iter().filter_map(|k| self.held.remove(&k)).collect();
        for a in &out {
            self.sent(a, now);
        }
        out
    }

    fn sent(&mut self, alert: &Alert, now: Instant) {
        let key = (alert.kind, alert.subject.clone());
        if let Some(recovery) = alert.kind.recovered_by() {
            self.announced.insert((recovery, alert.subject.clone()));
        }
        self.last_sent.insert(key, now);
    }
}

/// Sends alerts to the configured webhooks without ever making the caller wait.
pub struct Alerter {
    /// Shared with the sender task, which sends held problems when their window ends.
    dedup: Arc<Mutex<Dedup>>,
    /// `None` without webhooks: every alert is a no-op.
    tx: Option<mpsc::Sender<Alert>>,
    dropped: AtomicU64,
    /// The sender task.
    tasks: Tasks,
}

impl Alerter {
    /// Starts the sender task (inside a tokio runtime) when any webhook is configured; it ends
    /// when the `Alerter` is closed or dropped, once the alerts queued have gone out.
    pub fn start(config: &AlertsConfig, client: reqwest::Client) -> Alerter {
        let dedup = Arc::new(Mutex::new(Dedup::new(config.min_interval)));
        let tasks = Tasks::new();
        let tx = (!config.webhooks.is_empty()).then(|| {
            let (tx, rx) = mpsc::channel(QUEUE);
            let sender = send_loop(rx, dedup.clone(), config.webhooks.clone(), client, tasks.token());
            tasks.spawn_to_completion(sender);
            tx
        });
        Alerter { dedup, tx, dropped: AtomicU64::new(0), tasks }
    }

    /// Stops taking alerts and waits up to `grace` for those queued to go out (shutdown, and
    /// an `Alerter` a reload replaced); later ones are dropped as by a full queue. False if
    /// they had not gone out within `grace`.
    pub async fn close(&self, grace: std::time::Duration) -> bool {
        self.tasks.stop("alerts", grace).await
    }

    /// Whether any webhook is configured (without one, `notify` does nothing).
    pub fn enabled(&self) -> bool {
        self.tx.is_some()
    }

    /// Queues `alert` for the webhooks, unless the same kind and subject went out within
    /// `min_interval`. Never waits: a full queue drops the alert (and logs the count).
    pub fn notify(&self, alert: Alert) {
        let Some(tx) = &self.tx else { return };
        if !self.dedup.lock().expect("alerts lock").admit(&alert, Instant::now()) {
            tracing::debug!(kind = alert.kind.as_str(), subject = %alert.subject, "alert suppressed (sent recently)");
            return;
        }
        match tx.try_send(alert) {
            Ok(()) => {}
            Err(mpsc::error::TrySendError::Full(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::warn!(dropped, "alert queue full: alert dropped");
            }
            Err(mpsc::error::TrySendError::Closed(_)) => {
                let dropped = self.dropped.fetch_add(1, Ordering::Relaxed) + 1;
                tracing::debug!(dropped, "alerts closed (shutdown or reload): alert dropped");
            }
        }
    }
}

impl Drop for Alerter {
    fn drop(&mut self) {
        self.tasks.cancel();
    }
}

/// Sends each alert as it comes, and held problems when their window ends, until `stop`:
/// then the alerts already queued still go out, and it ends.
async fn send_loop(
    mut rx: mpsc::Receiver<Alert>,
    dedup: Arc<Mutex<Dedup>>,
    webhooks: Vec<Webhook>,
    client: reqwest::Client,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(HELD_CHECK);
    loop {
        let alerts = tokio::select! {
            alert = rx.recv() => match alert {
                Some(a) => vec![a],
                None => break,
            },
            _ = tick.tick() => dedup.lock().expect("alerts lock").due(Instant::now()),
            () = stop.cancelled(), if !rx.is_closed() => {
                rx.close();
                continue;
            }
        };
        for alert in alerts {
            let ts = humantime::format_rfc3339_millis(std::time::SystemTime::now()).to_string();
            let deliveries = webhooks.iter().map(|w| deliver(&client, w, payload(w.format, &alert, &ts)));
            futures::future::join_all(deliveries).await;
        }
    }
}

/// Posts one payload, retrying once; failures are logged, never returned.
async fn deliver(client: &reqwest::Client, webhook: &Webhook, body: String) {
    for attempt in 1..=2 {
        let sent = client
            .post(&webhook.url)
            .header(http::header::CONTENT_TYPE, "application/json")
            .body(body.clone())
            .timeout(DELIVERY_TIMEOUT)
            .send()
            .await;
        let failure = match sent {
            Ok(r) if r.status().is_success() => return,
            Ok(r) => format!("HTTP {}", r.status()),
            Err(e) => error_chain(&e.without_url()),
        };
        tracing::warn!(host = %webhook.host(), attempt, "alert webhook delivery failed: {failure}");
        if attempt == 1 {
            tokio::time::sleep(RETRY_DELAY).await;
        }
    }
}

/// An error and its causes on one line (reqwest's own Display hides the cause).
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(cause) = source {
        s.push_str(": ");
        s.push_str(&cause.to_string());
        source = cause.source();
    }
    s
}

/// The request body for one webhook format.
pub fn payload(format: Format, alert: &Alert, ts: &str) -> String {
    let value = match format {
        Format::Generic => serde_json::json!({
            "kind": alert.kind.as_str(),
            "subject": alert.subject,
            "message": alert.message,
            "ts": ts,
            "gateway": "sentinel",
        }),
        Format::Discord => serde_json::json!({ "content": text(alert) }),
        Format::Slack => serde_json::json!({ "text": text(alert) }),
    };
    value.to_string()
}

fn text(alert: &Alert) -> String {
    let s = format!("[sentinel] {} `{}`: {}", alert.kind.as_str(), alert.subject, alert.message);
    if s.chars().count() <= MAX_TEXT_CHARS {
        return s;
    }
    s.chars().take(MAX_TEXT_CHARS).chain(std::iter::once('…')).collect()
}

#[cfg(test)]
mod tests;
