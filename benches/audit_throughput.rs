//! What a durable audit trail costs a busy gateway: end-to-end throughput of `tools/call`
//! with `[audit] url = "postgres://..."`, in each `durability` mode, against the same gateway
//! with `[audit] url = "none"`.
//!
//! Three real `sentinel serve` processes (release build) front one shared `mcp-mock --http`
//! backend, so the `[audit]` table is the only difference between them. Gateway W writes to a
//! fresh PostgreSQL database with the default `durability = "write"`, gateway F to another with
//! `durability = "fsync"` (both created here, dropped at the end); gateway N keeps nothing. A
//! load generator in this process runs N concurrent stateless 2026-07-28 clients calling
//! `mock__echo` for a fixed time per round, rotating W, F, N, W, F, N... so that the noise of a
//! shared machine falls on all alike; only the ratios from one run mean anything. Every answer
//! is checked, and at the end each store must hold exactly one record per call its gateway
//! answered (the drainer moves them from the spool into PostgreSQL after the answers). The CPU
//! time each gateway, and the PostgreSQL backends serving its database, spent per call answered
//! is printed too: on a busy machine it is steadier than throughput.
//!
//! Before the gateways, it measures the store alone: the CPU time PostgreSQL's backend spends
//! per record for batches inserted through `SqlStore` (as the drainer does), and the CPU time
//! this process spends per record with SQLite (which runs in the gateway's own process).
//!
//! Run with `cargo bench --bench audit_throughput`. Settings, from the environment:
//! `AUDIT_BENCH_CLIENTS` (`16,64`: one pass per count; `none`: the store alone),
//! `AUDIT_BENCH_SECS` per round (3),
//! `AUDIT_BENCH_ROUNDS` per gateway (3), and `SENTINEL_TEST_PG`, the server's maintenance
//! database (`postgres://postgres@127.0.0.1:5432/postgres`). Any wrong answer exits non-zero.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail, ensure};
use serde_json::Value;
use sqlx::Connection;

const STATELESS: &str = "2026-07-28";
const TOOL: &str = "mock__echo";

struct Settings {
    clients: Vec<usize>,
    round: Duration,
    rounds: usize,
    pg_admin: String,
}

impl Settings {
    fn from_env() -> anyhow::Result<Settings> {
        fn number(name: &str, default: u64) -> anyhow::Result<u64> {
            match std::env::var(name) {
                Ok(v) => v.parse().with_context(|| format!("{name}={v} is not a whole number")),
                Err(_) => Ok(default),
            }
        }
        let s = Settings {
            clients: match std::env::var("AUDIT_BENCH_CLIENTS") {
                Ok(v) if v == "none" => vec![],
                Ok(v) => v
                    .split(',')
                    .map(|n| n.trim().parse().with_context(|| format!("AUDIT_BENCH_CLIENTS={v}: `{n}`")))
                    .collect::<anyhow::Result<_>>()?,
                Err(_) => vec![16, 64],
            },
            round: Duration::from_secs(number("AUDIT_BENCH_SECS", 3)?),
            rounds: number("AUDIT_BENCH_ROUNDS", 3)? as usize,
            pg_admin: std::env::var("SENTINEL_TEST_PG")
                .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into()),
        };
        ensure!(
            s.clients.iter().all(|&c| c > 0) && s.rounds > 0 && !s.round.is_zero(),
            "clients, seconds and rounds must be > 0"
        );
        Ok(s)
    }
}

/// A child process (gateway or mock), killed when dropped.
struct Process {
    child: Child,
    url: String,
}

impl Process {
    /// Starts `cmd` and reads the URL from its `... listening on http://ADDR/mcp` line.
    fn start(mut cmd: Command, what: &str) -> anyhow::Result<Process> {
        let mut child = cmd.stdout(Stdio::piped()).spawn().with_context(|| format!("start {what}"))?;
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        // Keeps reading after the URL so the child never blocks on a full pipe.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if !line.contains("listening on ") {
                    continue;
                }
                if let Some(tx) = tx.take() {
                    let _ = tx.send(line.rsplit(' ').next().unwrap_or_default().to_string());
                }
            }
        });
        let mut process = Process { child, url: String::new() };
        process.url = rx.recv_timeout(Duration::from_secs(60)).with_context(|| format!("{what} announced no URL"))?;
        Ok(process)
    }

    fn base(&self) -> &str {
        self.url.trim_end_matches("/mcp")
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `sentinel serve` from a config written into `dir`, which is also its working folder (the
/// audit spool goes there). `[audit]` gets `url` and, when given, `durability`.
fn gateway(dir: &Path, audit_url: &str, durability: Option<&str>, backend_url: &str) -> anyhow::Result<Process> {
    let lit = |s: &str| toml::Value::String(s.to_string()).to_string();
    let durability = durability.map(|d| format!("durability = {}\n", lit(d))).unwrap_or_default();
    let config = format!(
        "[server]\nlisten = \"127.0.0.1:0\"\n\n[auth]\ndisabled = true\n\n[audit]\nurl = {}\n{durability}\n\
         [[backend]]\nname = \"mock\"\nhttp = {{ url = {} }}\n",
        lit(audit_url),
        lit(backend_url)
    );
    let path = dir.join("sentinel.toml");
    std::fs::write(&path, config)?;
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_sentinel"));
    cmd.args(["serve", "-c"])
        .arg(&path)
        .current_dir(dir)
        // The default level: one `audit` log line per call, as in production, on both gateways.
        .env("SENTINEL_LOG", "info")
        .stderr(Stdio::from(std::fs::File::create(dir.join("stderr.log"))?));
    Process::start(cmd, "sentinel serve")
}

/// A database of its own for this run, dropped (with any connection still open) when it goes,
/// also when the bench fails.
struct PgDb {
    admin: String,
    name: String,
    url: String,
}

impl PgDb {
    async fn create(admin: &str) -> anyhow::Result<PgDb> {
        let name = format!("sentinel_bench_{}", uuid::Uuid::new_v4().simple());
        let mut conn = sqlx::PgConnection::connect(admin)
            .await
            .with_context(|| format!("this bench needs PostgreSQL at {admin} (set SENTINEL_TEST_PG)"))?;
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut conn).await?;
        conn.close().await?;
        let url = format!("{}/{name}", admin.rsplit_once('/').context("no database in SENTINEL_TEST_PG")?.0);
        Ok(PgDb { admin: admin.to_string(), name, url })
    }

    /// The server processes serving this database now (the gateway's pool), to read their CPU time.
    async fn backends(&self) -> anyhow::Result<Vec<u32>> {
        let mut conn = sqlx::PgConnection::connect(&self.admin).await?;
        let pids: Vec<(i32,)> = sqlx::query_as("SELECT pid FROM pg_stat_activity WHERE datname = $1")
            .bind(&self.name)
            .fetch_all(&mut conn)
            .await?;
        conn.close().await?;
        Ok(pids.into_iter().map(|(p,)| p as u32).collect())
    }

    async fn records(&self) -> anyhow::Result<i64> {
        let mut conn = sqlx::PgConnection::connect(&self.url).await?;
        let (n,): (i64,) = sqlx::query_as("SELECT count(*) FROM audit_records").fetch_one(&mut conn).await?;
        conn.close().await?;
        Ok(n)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        // Drop cannot await and runs inside the bench's runtime: a thread with a runtime of its own.
        let (admin, name) = (self.admin.clone(), self.name.clone());
        let dropped = std::thread::spawn(move || -> anyhow::Result<()> {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            rt.block_on(async {
                let mut conn = sqlx::PgConnection::connect(&admin).await?;
                sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&mut conn).await?;
                anyhow::Ok(())
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) {
            eprintln!("could not drop the bench database {}", self.name);
        }
    }
}

/// One round's answers.
#[derive(Default)]
struct Round {
    calls: u64,
    errors: u64,
    /// The first few wrong answers, to print.
    samples: Vec<String>,
    latencies: Vec<Duration>,
    elapsed: Duration,
}

impl Round {
    fn merge(&mut self, other: Round) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.samples.extend(other.samples);
        self.samples.truncate(5);
        self.latencies.extend(other.latencies);
    }

    fn throughput(&self) -> f64 {
        self.calls as f64 / self.elapsed.as_secs_f64()
    }

    /// p50 and p99, in milliseconds.
    fn percentiles(&mut self) -> (f64, f64) {
        self.latencies.sort_unstable();
        let at = |q: f64| {
            let i = ((self.latencies.len() as f64 * q).ceil() as usize).clamp(1, self.latencies.len().max(1)) - 1;
            self.latencies.get(i).map_or(f64::NAN, |d| d.as_secs_f64() * 1000.0)
        };
        (at(0.50), at(0.99))
    }
}

/// `clients` concurrent callers, each sending its next call as soon as the last is answered,
/// until `length` has passed.
async fn round(http: &reqwest::Client, url: &str, clients: usize, length: Duration) -> Round {
    let start = Instant::now();
    let deadline = start + length;
    let workers: Vec<_> = (0..clients)
        .map(|client| {
            let (http, url) = (http.clone(), url.to_string());
            tokio::spawn(async move {
                let mut r = Round::default();
                let mut seq = 0u64;
                while Instant::now() < deadline {
                    seq += 1;
                    let sent = Instant::now();
                    match call(&http, &url, client, seq).await {
                        Ok(()) => {
                            r.calls += 1;
                            r.latencies.push(sent.elapsed());
                        }
                        Err(e) => {
                            r.errors += 1;
                            if r.samples.len() < 5 {
                                r.samples.push(format!("{e:#}"));
                            }
                        }
                    }
                }
                r
            })
        })
        .collect();
    let mut total = Round::default();
    for w in workers {
        match w.await {
            Ok(r) => total.merge(r),
            Err(e) => {
                total.errors += 1;
                total.samples.push(format!("load task failed: {e}"));
            }
        }
    }
    total.elapsed = start.elapsed();
    total
}

/// One stateless `tools/call`, checked: HTTP 200, our id, and `echo` handing back exactly the
/// arguments sent.
async fn call(http: &reqwest::Client, url: &str, client: usize, seq: u64) -> anyhow::Result<()> {
    let id = format!("{client}-{seq}");
    let body = format!(
        r#"{{"jsonrpc":"2.0","id":"{id}","method":"tools/call","params":{{"name":"{TOOL}","arguments":{{"client":{client},"seq":{seq}}},"_meta":{{"io.modelcontextprotocol/protocolVersion":"{STATELESS}","io.modelcontextprotocol/clientCapabilities":{{}}}}}}}}"#
    );
    let resp = http
        .post(url)
        .header("content-type", "application/json")
        .header("accept", "application/json, text/event-stream")
        .header("mcp-protocol-version", STATELESS)
        .header("mcp-method", "tools/call")
        .header("mcp-name", TOOL)
        .body(body)
        .send()
        .await?;
    let status = resp.status();
    let sse = resp.headers().get("content-type").is_some_and(|c| c.as_bytes().starts_with(b"text/event-stream"));
    let text = resp.text().await?;
    ensure!(status == 200, "HTTP {status}: {text}");
    // A JSON body, or an SSE stream whose last event is the response.
    let message = if sse {
        text.lines().filter_map(|l| l.strip_prefix("data:")).next_back().context("SSE without data")?.trim_start()
    } else {
        text.as_str()
    };
    let v: Value = serde_json::from_str(message).with_context(|| format!("not JSON: {message}"))?;
    let echoed = &v["result"]["structuredContent"];
    if v["id"] != id.as_str() || echoed["client"] != client || echoed["seq"] != seq {
        bail!("wrong answer to {id}: {message}");
    }
    Ok(())
}

async fn health(http: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let text = http.get(format!("{base}/health")).send().await?.error_for_status()?.text().await?;
    Ok(serde_json::from_str(&text)?)
}

/// Waits until gateway A's drainer has moved every spooled record into PostgreSQL.
async fn drained(http: &reqwest::Client, base: &str) -> anyhow::Result<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let h = health(http, base).await?;
        let audit = &h["audit"];
        if audit["backlog"] == 0 && audit["queue_depth"] == 0 {
            return Ok(h);
        }
        ensure!(Instant::now() < deadline, "audit backlog not drained within 30 s: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// CPU time (user + system) a process has used so far; zero once it is gone (a PostgreSQL
/// backend that closed takes its time with it, so figures can only be under-counted).
#[allow(unsafe_code)]
fn cpu_time(pid: u32) -> Duration {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return Duration::ZERO };
    // Fields after the parenthesised command name, which may itself hold spaces.
    let fields: Vec<&str> = stat.rsplit_once(')').map_or(vec![], |(_, rest)| rest.split_whitespace().collect());
    let ticks = |i: usize| fields.get(i).and_then(|f| f.parse::<u64>().ok()).unwrap_or(0);
    // utime and stime are the 14th and 15th fields; `fields` starts at the 3rd.
    // SAFETY: sysconf only reads a constant of the system.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as f64;
    Duration::from_secs_f64((ticks(11) + ticks(12)) as f64 / hz)
}

/// One gateway under test, with the database it writes to (none for `url = "none"`).
struct Target<'a> {
    name: &'static str,
    gateway: &'a Process,
    db: Option<&'a PgDb>,
    http: reqwest::Client,
    /// Calls answered over the whole run, warm-ups included: each one's record must be stored.
    answered: u64,
    /// The gateway's log, shown when it fails.
    log: std::path::PathBuf,
}

impl Target<'_> {
    /// Waits until the gateway's drainer has stored everything; on failure, says which gateway
    /// and shows the end of its log.
    async fn drained(&self) -> anyhow::Result<Value> {
        drained(&self.http, self.gateway.base()).await.with_context(|| {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().filter(|l| !l.contains(" call ")).take(20).collect();
            format!("{}: log tail (newest first):\n{}", self.name, tail.join("\n"))
        })
    }

    /// CPU used so far by the gateway, and by the PostgreSQL backends serving its database.
    async fn cpu(&self) -> anyhow::Result<(Duration, Duration)> {
        let pg = match self.db {
            Some(db) => db.backends().await?.into_iter().map(cpu_time).sum(),
            None => Duration::ZERO,
        };
        Ok((cpu_time(self.gateway.child.id()), pg))
    }
}

/// One pass at `clients` concurrent clients: a warm-up of each gateway, then `rounds` rounds of
/// each, rotating; prints each round, the totals and the ratios to the unaudited gateway.
async fn pass(s: &Settings, clients: usize, targets: &mut [Target<'_>]) -> anyhow::Result<Vec<f64>> {
    println!(
        "\n{clients} clients, {} rounds of {:?} per gateway, rotating; one shared mcp-mock backend",
        s.rounds, s.round
    );
    let mut cpu_before = Vec::new();
    for t in targets.iter() {
        cpu_before.push(t.cpu().await?);
    }
    let mut calls = vec![0u64; targets.len()];
    // A short warm-up of each (connections, caches, the PostgreSQL pool); its calls are audited
    // too, so they count toward the records each store must hold.
    for (i, t) in targets.iter_mut().enumerate() {
        let w = round(&t.http, &t.gateway.url, clients, Duration::from_millis(500)).await;
        ensure!(w.errors == 0, "warm-up of {}: {} wrong answers, e.g. {:?}", t.name, w.errors, w.samples);
        t.answered += w.calls;
        calls[i] += w.calls;
    }
    let mut totals: Vec<Round> = targets.iter().map(|_| Round::default()).collect();
    for r in 1..=s.rounds {
        for (i, t) in targets.iter_mut().enumerate() {
            let mut res = round(&t.http, &t.gateway.url, clients, s.round).await;
            let (p50, p99) = res.percentiles();
            println!(
                "round {r} {:<28}: {:>8.0} calls/s  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  ({} calls, {} errors)",
                t.name,
                res.throughput(),
                res.calls,
                res.errors
            );
            t.answered += res.calls;
            calls[i] += res.calls;
            totals[i].elapsed += res.elapsed;
            totals[i].merge(res);
        }
    }
    for (i, t) in targets.iter().enumerate() {
        ensure!(totals[i].errors == 0, "{}: {} wrong answers, e.g. {:?}", t.name, totals[i].errors, totals[i].samples);
        if t.db.is_some() {
            t.drained().await?;
        }
    }
    println!("total at {clients} clients:");
    let off = totals.last().map_or(f64::NAN, Round::throughput);
    let mut ratios = Vec::new();
    for (i, t) in targets.iter().enumerate() {
        let (gw, pg) = t.cpu().await?;
        let per_call =
            |now: Duration, before: Duration| now.saturating_sub(before).as_secs_f64() * 1e6 / calls[i].max(1) as f64;
        let (cpu_gw, cpu_pg) = (per_call(gw, cpu_before[i].0), per_call(pg, cpu_before[i].1));
        let total = &mut totals[i];
        let (p50, p99) = total.percentiles();
        let ratio = total.throughput() / off;
        println!(
            "  {:<28}: {:>8.0} calls/s  x{ratio:.3}  p50 {p50:>6.2} ms  p99 {p99:>6.2} ms  CPU/call: gateway {cpu_gw:>4.0} µs, PostgreSQL {cpu_pg:>3.0} µs",
            t.name,
            total.throughput(),
        );
        ratios.push(ratio);
    }
    Ok(ratios)
}

/// Records per batch in `store_cost`: about what the drainer gathers in its 100 ms at the
/// gateways' throughput below.
const STORE_BATCH: usize = 300;
/// Batches per measurement in `store_cost`, after a few to warm up.
const STORE_BATCHES: usize = 400;

/// A record as the gateway below makes it for a call of `echo`: with `client`, as an
/// authenticated caller with one role; without, as the gateways here (auth disabled) do.
fn echo_record(n: usize, client: bool) -> sentinel::audit::AuditRecord {
    let who = format!("client-{}", n % 16);
    let roles = if client { vec!["dev".to_string()] } else { vec![] };
    let mut r = sentinel::audit::AuditRecord::start("tools/call", "http", client.then_some(who.as_str()), &roles, None);
    r.tool = Some(TOOL.into());
    r.backend = Some("mock".into());
    r.arguments = Some(format!(r#"{{"client":{},"seq":{n}}}"#, n % 16));
    r.latency_ms = 0.4;
    r.backend_latency_ms = Some(0.2);
    r.response_bytes = 180;
    r
}

/// Inserts `STORE_BATCHES` batches of `STORE_BATCH` records into `store` and returns the CPU
/// time per record that `cpu` reports (a warm-up of 10 batches is not counted).
async fn insert_cost(
    store: &sentinel::audit::store::SqlStore,
    client: bool,
    mut cpu: impl AsyncFnMut() -> anyhow::Result<Duration>,
) -> anyhow::Result<f64> {
    let batches: Vec<Vec<_>> = (0..STORE_BATCHES + 10)
        .map(|b| (0..STORE_BATCH).map(|i| echo_record(b * STORE_BATCH + i, client)).collect())
        .collect();
    for b in &batches[..10] {
        store.insert_batch(b).await?;
    }
    let before = cpu().await?;
    for b in &batches[10..] {
        store.insert_batch(b).await?;
    }
    let used = cpu().await?.saturating_sub(before);
    ensure!(store.count().await? == batches.len() as u64 * STORE_BATCH as u64, "records missing from the store");
    Ok(used.as_secs_f64() * 1e6 / (STORE_BATCHES * STORE_BATCH) as f64)
}

/// CPU time (user + system) of this whole process so far.
#[allow(unsafe_code)]
fn own_cpu_time() -> Duration {
    // SAFETY: `rusage` is a C struct of integers, for which all zeroes is a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage only writes the struct it is given.
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// The store alone: CPU per record stored, in PostgreSQL's backend and (SQLite) in this process.
async fn store_cost(pg_admin: &str) -> anyhow::Result<()> {
    use sentinel::audit::store::SqlStore;
    println!("store alone: {STORE_BATCHES} batches of {STORE_BATCH} `echo` records into a fresh store, CPU per record");
    for client in [true, false] {
        let who = if client { "authenticated client" } else { "anonymous (auth disabled, as the gateways below)" };
        let db = PgDb::create(pg_admin).await?;
        let store = SqlStore::connect(&db.url).await?;
        store.migrate().await?;
        let pg = insert_cost(&store, client, async || Ok(db.backends().await?.into_iter().map(cpu_time).sum())).await?;
        store.close().await;
        let dir = tempfile::tempdir()?;
        let store = SqlStore::connect(&format!("sqlite://{}", dir.path().join("audit.db").display())).await?;
        store.migrate().await?;
        let lite = insert_cost(&store, client, async || Ok(own_cpu_time())).await?;
        store.close().await;
        println!("  {who:<50}: PostgreSQL backend {pg:>5.1} µs, SQLite (in process) {lite:>5.1} µs");
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let s = Settings::from_env()?;
    store_cost(&s.pg_admin).await?;
    if s.clients.is_empty() {
        return Ok(());
    }
    let (db_write, db_fsync) = (PgDb::create(&s.pg_admin).await?, PgDb::create(&s.pg_admin).await?);
    let mock = {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_mcp-mock"));
        cmd.args(["--http", "127.0.0.1:0"]).stderr(Stdio::null());
        Process::start(cmd, "mcp-mock")?
    };
    let dirs = [tempfile::tempdir()?, tempfile::tempdir()?, tempfile::tempdir()?];
    let w = gateway(dirs[0].path(), &db_write.url, None, &mock.url)?;
    let f = gateway(dirs[1].path(), &db_fsync.url, Some("fsync"), &mock.url)?;
    let n = gateway(dirs[2].path(), "none", None, &mock.url)?;
    // One connection pool per gateway, as N clients of one gateway would have. The unaudited
    // gateway goes last: the ratios are to it.
    let target = |name, gateway, db, dir: &tempfile::TempDir| Target {
        name,
        gateway,
        db,
        http: reqwest::Client::new(),
        answered: 0,
        log: dir.path().join("stderr.log"),
    };
    let mut targets = [
        target("W postgres, durability=write", &w, Some(&db_write), &dirs[0]),
        target("F postgres, durability=fsync", &f, Some(&db_fsync), &dirs[1]),
        target("N audit off (url = \"none\")", &n, None, &dirs[2]),
    ];
    println!("audit_throughput: throughput with the audit trail in PostgreSQL, relative to none (goal >= 0.95)");
    let mut summary = Vec::new();
    for &clients in &s.clients {
        summary.push((clients, pass(&s, clients, &mut targets).await?));
    }
    println!("\nratios to audit off (goal >= 0.95):");
    for (clients, ratios) in &summary {
        println!("  {clients:>3} clients: durability=write x{:.3}, durability=fsync x{:.3}", ratios[0], ratios[1]);
    }

    for t in &targets {
        let Some(db) = t.db else { continue };
        let h = t.drained().await?;
        let stored = db.records().await?;
        println!("{}: PostgreSQL holds {stored} records for {} calls answered", t.name, t.answered);
        ensure!(
            stored == t.answered as i64,
            "{}: the store holds {stored} records, {} calls answered",
            t.name,
            t.answered
        );
        ensure!(h["audit"]["failed"] == 0, "{}: the writer counted failed records: {}", t.name, h["audit"]);
    }
    Ok(())
}
