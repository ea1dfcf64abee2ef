//! `sentinel audit`: reads the audit store and prints records as a table for people or as
//! JSON lines for programs, optionally following new ones as they arrive.

use std::fmt::Write as _;
use std::io::Write as _;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::store::{AuditQuery, SqlError, SqlStore, chain, id_floor};
use super::{AuditRecord, Outcome};

/// Why `sentinel audit` (or `sentinel audit --dead-letter`) could not show the records. Each
/// variant's text includes its cause's.
#[derive(Debug, thiserror::Error)]
pub enum ShowError {
    /// `--outcome` names no outcome.
    #[error("`--outcome {0}` is not an outcome; use one of: {valid}", valid = outcomes())]
    BadOutcome(String),
    /// The SQLite file does not exist (reading must not create it).
    #[error("no audit store at {0} yet: the gateway creates it when it starts")]
    NoStore(String),
    /// The store failed.
    #[error("{0}")]
    Store(SqlError),
    /// Reading the dead-letter file or writing stdout failed.
    #[error("{}", chain(.0))]
    Io(std::io::Error),
    /// A record could not be written as JSON.
    #[error("{}", chain(.0))]
    Json(serde_json::Error),
}

impl From<std::io::Error> for ShowError {
    fn from(e: std::io::Error) -> Self {
        ShowError::Io(e)
    }
}

impl From<serde_json::Error> for ShowError {
    fn from(e: serde_json::Error) -> Self {
        ShowError::Json(e)
    }
}

impl From<SqlError> for ShowError {
    fn from(e: SqlError) -> Self {
        ShowError::Store(e)
    }
}

/// Every outcome's word, comma-separated.
fn outcomes() -> String {
    Outcome::ALL.iter().map(|o| o.as_str()).collect::<Vec<_>>().join(", ")
}

/// Why a line is not a record as `--json` prints it.
#[derive(Debug, thiserror::Error)]
pub enum BadLine {
    /// Not the JSON of a record.
    #[error("{}", chain(.0))]
    Json(serde_json::Error),
    /// `ts` is not an RFC 3339 time.
    #[error("{}", chain(.0))]
    Time(humantime::TimestampError),
    /// `ts` is before the Unix epoch.
    #[error("{}", chain(.0))]
    BeforeEpoch(std::time::SystemTimeError),
    /// `ts` is too far in the future for milliseconds in 64 bits.
    #[error("{}", chain(.0))]
    TooLate(std::num::TryFromIntError),
}

/// How often `--follow` asks the store for new records.
const POLL: Duration = Duration::from_millis(500);

/// How many records one `--follow` poll reads at most; more are read by the next page at once.
const PAGE: usize = 1000;

/// What `sentinel audit` was asked for: the filters, and how to print.
#[derive(Debug, Clone)]
pub struct AuditOpts {
    /// Only records from this time on.
    pub since: Option<SystemTime>,
    /// Only records of this subject (the token's `sub`).
    pub client: Option<String>,
    /// Only records about names matching this glob.
    pub tool: Option<String>,
    /// Only records of this backend.
    pub backend: Option<String>,
    /// An outcome word (`ok`, `denied_rbac`, ...); checked before the store is opened.
    pub outcome: Option<String>,
    /// How many records at most (the newest, printed oldest first).
    pub limit: usize,
    /// One JSON object per line instead of a table.
    pub json: bool,
    /// Keep printing new records as they are stored.
    pub follow: bool,
}

impl Default for AuditOpts {
    fn default() -> Self {
        AuditOpts {
            since: None,
            client: None,
            tool: None,
            backend: None,
            outcome: None,
            limit: 50,
            json: false,
            follow: false,
        }
    }
}

/// Prints the newest `limit` matching records, oldest at the top (so `--follow` continues
/// below them), then with `follow` keeps printing new ones until Ctrl-C.
pub async fn run(url: &str, opts: AuditOpts) -> Result<(), ShowError> {
    let mut q = query(&opts)?;
    // Reading must not leave an empty database behind (connecting would create one).
    let missing = url.strip_prefix("sqlite://").filter(|p| *p != ":memory:" && !std::path::Path::new(p).exists());
    if let Some(path) = missing {
        return Err(ShowError::NoStore(path.to_string()));
    }
    let store = SqlStore::connect(url).await?;
    let mut out = std::io::stdout().lock();
    let mut records = store.query(&q).await?;
    records.reverse();
    if !opts.json && (!records.is_empty() || opts.follow) {
        writeln!(out, "{}", header())?;
    }
    print(&mut out, &records, opts.json)?;
    out.flush()?;
    if !opts.follow {
        if records.is_empty() && !opts.json {
            eprintln!("no audit records match");
        }
        return Ok(());
    }
    // From here on, records whose id sorts after the newest seen. Ids are UUIDv7, so they
    // start with their creation time: without any record yet, "now" is where to start.
    q.after_id = Some(records.iter().map(|r| r.id).max().unwrap_or_else(|| id_floor(now_ms())));
    q.limit = PAGE;
    let ctrl_c = tokio::signal::ctrl_c();
    tokio::pin!(ctrl_c);
    loop {
        tokio::select! {
            _ = &mut ctrl_c => break,
            _ = tokio::time::sleep(POLL) => {}
        }
        loop {
            let page = store.query(&q).await?;
            print(&mut out, &page, opts.json)?;
            out.flush()?;
            let Some(last) = page.last() else { break };
            q.after_id = Some(last.id);
            if page.len() < PAGE {
                break;
            }
        }
    }
    store.close().await;
    Ok(())
}

/// The store query for these options; an unknown outcome word is an error
/// listing the valid ones.
pub fn query(opts: &AuditOpts) -> Result<AuditQuery, ShowError> {
    let outcome = match &opts.outcome {
        None => None,
        Some(word) => Some(Outcome::parse(word).ok_or_else(|| ShowError::BadOutcome(word.clone()))?),
    };
    let since_ms = opts.since.map(|t| match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_millis()).unwrap_or(i64::MAX),
        Err(_) => 0,
    });
    Ok(AuditQuery {
        since_ms,
        client: opts.client.clone(),
        tool: opts.tool.clone(),
        backend: opts.backend.clone(),
        outcome,
        limit: opts.limit,
        after_id: None,
    })
}

/// `--since`: a duration back from now ("15m", "2h", "7d"), or a time in UTC
/// ("2026-12-01T09:00:00Z", "2026-12-01 09:00:00", or a date, meaning its midnight).
pub fn parse_since(s: &str) -> Result<SystemTime, BadSince> {
    if let Ok(d) = humantime::parse_duration(s) {
        return SystemTime::now().checked_sub(d).ok_or_else(|| BadSince::BeforeEpoch(s.to_string()));
    }
    let time = s.trim_end_matches(['Z', 'z']);
    humantime::parse_rfc3339_weak(time)
        .or_else(|_| humantime::parse_rfc3339_weak(&format!("{time} 00:00:00")))
        .map_err(|_| BadSince::NotATime(s.to_string()))
}

/// Why a `--since` value was refused (clap shows it after the value); each holds the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadSince {
    /// A duration longer than the time since 1970.
    #[error("`{0}` reaches back before 1970")]
    BeforeEpoch(String),
    #[error(
        "`{0}` is neither a duration back from now (\"15m\", \"2h\", \"7d\") nor a UTC time \
         (\"2026-12-01T09:00:00Z\", \"2026-12-01 09:00:00\", \"2026-12-01\")"
    )]
    /// Neither a duration nor a time in one of the accepted forms.
    NotATime(String),
}

/// One record as `--json` prints it: `ts` as an RFC 3339 time (UTC, milliseconds) and
/// `arguments` as the JSON object they were, not as the text the store keeps.
#[derive(serde::Serialize)]
struct JsonRecord<'a> {
    id: uuid::Uuid,
    ts: String,
    client: Option<&'a str>,
    roles: &'a [String],
    session: Option<&'a str>,
    transport: &'a str,
    method: &'a str,
    tool: Option<&'a str>,
    backend: Option<&'a str>,
    arguments: Option<Arguments<'a>>,
    outcome: Outcome,
    error_code: Option<i64>,
    latency_ms: f64,
    backend_latency_ms: Option<f64>,
    response_bytes: u64,
    trace_id: Option<&'a str>,
    replica: Option<&'a str>,
    profile: Option<&'a str>,
    credential_mode: Option<&'a str>,
}

#[derive(serde::Serialize)]
#[serde(untagged)]
enum Arguments<'a> {
    Json(&'a serde_json::value::RawValue),
    /// Text that is not JSON (never written by Sentinel) is shown as it is.
    Text(&'a str),
}

impl<'a> JsonRecord<'a> {
    fn of(r: &'a AuditRecord) -> JsonRecord<'a> {
        let arguments = r.arguments.as_deref().map(|a| match serde_json::from_str(a) {
            Ok(raw) => Arguments::Json(raw),
            Err(_) => Arguments::Text(a),
        });
        JsonRecord {
            id: r.id,
            ts: time(r.ts_ms),
            client: r.client.as_deref(),
            roles: &r.roles,
            session: r.session.as_deref(),
            transport: &r.transport,
            method: &r.method,
            tool: r.tool.as_deref(),
            backend: r.backend.as_deref(),
            arguments,
            outcome: r.outcome,
            error_code: r.error_code,
            latency_ms: r.latency_ms,
            backend_latency_ms: r.backend_latency_ms,
            response_bytes: r.response_bytes,
            trace_id: r.trace_id.as_deref(),
            replica: r.replica.as_deref(),
            profile: r.profile.as_deref(),
            credential_mode: r.credential_mode.as_deref(),
        }
    }
}

/// Reads back a line `--json` printed: the record as the store keeps it.
pub fn parse_json_line(line: &str) -> Result<AuditRecord, BadLine> {
    #[derive(serde::Deserialize)]
    struct Line {
        id: uuid::Uuid,
        ts: String,
        client: Option<String>,
        roles: Vec<String>,
        session: Option<String>,
        transport: String,
        method: String,
        tool: Option<String>,
        backend: Option<String>,
        arguments: Option<Box<serde_json::value::RawValue>>,
        outcome: Outcome,
        error_code: Option<i64>,
        latency_ms: f64,
        backend_latency_ms: Option<f64>,
        response_bytes: u64,
        #[serde(default)]
        trace_id: Option<String>,
        #[serde(default)]
        replica: Option<String>,
        #[serde(default)]
        profile: Option<String>,
        credential_mode: Option<String>,
    }
    let l: Line = serde_json::from_str(line).map_err(BadLine::Json)?;
    let ts = humantime::parse_rfc3339(&l.ts)
        .map_err(BadLine::Time)?
        .duration_since(UNIX_EPOCH)
        .map_err(BadLine::BeforeEpoch)?;
    Ok(AuditRecord {
        id: l.id,
        ts_ms: i64::try_from(ts.as_millis()).map_err(BadLine::TooLate)?,
        client: l.client,
        roles: l.roles,
        session: l.session,
        transport: l.transport,
        method: l.method,
        tool: l.tool,
        backend: l.backend,
        arguments: l.arguments.map(|a| a.get().to_string()),
        outcome: l.outcome,
        error_code: l.error_code,
        latency_ms: l.latency_ms,
        backend_latency_ms: l.backend_latency_ms,
        response_bytes: l.response_bytes,
        trace_id: l.trace_id,
        replica: l.replica,
        profile: l.profile,
        credential_mode: l.credential_mode,
    })
}

fn print(out: &mut impl std::io::Write, records: &[AuditRecord], json: bool) -> Result<(), ShowError> {
    for r in records {
        if json {
            writeln!(out, "{}", serde_json::to_string(&JsonRecord::of(r))?)?;
        } else {
            writeln!(out, "{}", row(r))?;
        }
    }
    Ok(())
}

/// Column widths of the table (time, client, tool, outcome, code, latency, bytes, trace).
const WIDTHS: [usize; 8] = [24, 16, 32, 13, 6, 10, 10, 32];

pub(crate) fn header() -> String {
    line(["TIME (UTC)", "CLIENT", "TOOL", "OUTCOME", "CODE", "LATENCY MS", "BYTES", "TRACE"].map(String::from))
}

/// One record as a table row. A call without a tool (e.g. refused before parsing) shows its method.
pub fn row(r: &AuditRecord) -> String {
    let tool = match (&r.tool, r.method.as_str()) {
        (Some(t), _) => t.clone(),
        (None, m) => format!("({m})"),
    };
    line([
        time(r.ts_ms),
        r.client.clone().unwrap_or_else(|| "-".into()),
        tool,
        r.outcome.as_str().to_string(),
        r.error_code.map_or_else(|| "-".into(), |c| c.to_string()),
        format!("{:.1}", r.latency_ms),
        r.response_bytes.to_string(),
        r.trace_id.clone().unwrap_or_else(|| "-".into()),
    ])
}

fn line(cells: [String; 8]) -> String {
    let mut s = String::new();
    for (i, (cell, width)) in cells.iter().zip(WIDTHS).enumerate() {
        let cell = fit(cell, width);
        // Numbers (code, latency, bytes) align right; the last column needs no padding.
        let _ = match i {
            4..=6 => write!(s, "{cell:>width$}"),
            _ => write!(s, "{cell:<width$}"),
        };
        if i < WIDTHS.len() - 1 {
            s.push_str("  ");
        }
    }
    s.trim_end().to_string()
}

/// Cuts a cell to `width` characters (ending in `…` when cut) and replaces control characters:
/// client and tool names come from callers, and an escape sequence must not reach the terminal.
pub(crate) fn fit(cell: &str, width: usize) -> String {
    let clean: String = cell.chars().map(|c| if c.is_control() { '?' } else { c }).collect();
    if clean.chars().count() <= width {
        return clean;
    }
    let mut cut: String = clean.chars().take(width.saturating_sub(1)).collect();
    cut.push('…');
    cut
}

fn time(ts_ms: i64) -> String {
    let t = match u64::try_from(ts_ms) {
        Ok(ms) => UNIX_EPOCH + Duration::from_millis(ms),
        Err(_) => UNIX_EPOCH,
    };
    humantime::format_rfc3339_millis(t).to_string()
}

fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_outcome_lists_the_valid_words() {
        let opts = AuditOpts { outcome: Some("denied".into()), ..AuditOpts::default() };
        let e = query(&opts).unwrap_err().to_string();
        assert!(e.contains("`--outcome denied`") && e.contains("denied_rbac") && e.contains("unavailable"), "{e}");
        let opts = AuditOpts { outcome: Some("rate_limited".into()), ..AuditOpts::default() };
        assert_eq!(query(&opts).unwrap().outcome, Some(Outcome::RateLimited));
    }

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let at = |s: &str| parse_since(s).map(|t| t.duration_since(UNIX_EPOCH).unwrap().as_secs());
        let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs();
        assert!((now - 3600 - 2..=now - 3600).contains(&at("1h").unwrap()));
        assert!((now - 7 * 86400 - 2..=now - 7 * 86400).contains(&at("7d").unwrap()));
        assert_eq!(at("2026-12-01T09:00:00Z"), Ok(1_796_115_600));
        assert_eq!(at("2026-12-01 09:00:00"), Ok(1_796_115_600));
        assert_eq!(at("2026-12-01"), Ok(1_796_083_200));
        assert_eq!(at("yesterday"), Err(BadSince::NotATime("yesterday".into())));
        assert!(at("yesterday").unwrap_err().to_string().contains("neither a duration"));
        let opts = AuditOpts { since: Some(UNIX_EPOCH + Duration::from_secs(40)), limit: 7, ..AuditOpts::default() };
        let q = query(&opts).unwrap();
        assert_eq!((q.since_ms, q.limit), (Some(40_000), 7));
    }

    #[test]
    fn json_lines_have_ts_and_arguments_as_json() {
        let mut r = AuditRecord::start("tools/call", "http", Some("alice"), &[], None);
        r.ts_ms = 1_700_000_000_123;
        r.arguments = Some(r#"{"q":"x","password":"[redacted]"}"#.into());
        let mut out = Vec::new();
        print(&mut out, &[r], true).unwrap();
        let v: serde_json::Value = serde_json::from_slice(&out).unwrap();
        assert_eq!(v["ts"], "2023-11-14T22:13:20.123Z");
        assert_eq!(v["arguments"]["q"], "x");
        assert!(v.get("ts_ms").is_none(), "{v}");
        assert_eq!(v["client"], "alice");
        let back = parse_json_line(std::str::from_utf8(&out).unwrap().trim()).unwrap();
        assert_eq!(
            (back.ts_ms, back.arguments.as_deref()),
            (1_700_000_000_123, Some(r#"{"q":"x","password":"[redacted]"}"#))
        );
    }

    #[test]
    fn rows_are_aligned_truncated_and_safe_for_terminals() {
        let mut r = AuditRecord::start("tools/call", "http", Some("ali\x1b[31mce"), &[], None);
        r.ts_ms = 1_700_000_000_123;
        r.tool = Some("a_very_long_backend__with_a_very_long_tool_name".into());
        r.outcome = Outcome::DeniedRbac;
        r.error_code = Some(-32011);
        r.latency_ms = 1.5;
        r.response_bytes = 512;
        let line = row(&r);
        assert!(line.starts_with("2023-11-14T22:13:20.123Z  ali?[31mce"), "{line}");
        assert!(!line.contains('\x1b'));
        assert!(line.contains("a_very_long_backend__with_a_ver…  denied_rbac"), "{line}");
        assert!(line.ends_with("-32011         1.5         512  -"), "{line}");
        assert_eq!(header().find("CLIENT"), line.find("ali"));
        // With tracing on, the last column is the trace to look up.
        r.trace_id = Some("4bf92f3577b34da6a3ce929d0e0e4736".into());
        let line = row(&r);
        assert!(line.ends_with("-32011         1.5         512  4bf92f3577b34da6a3ce929d0e0e4736"), "{line}");
        let column = |s: &str, at: &str| s.find(at).map(|i| s[..i].chars().count());
        assert_eq!(column(&header(), "TRACE"), column(&line, "4bf92f"));
    }
}
