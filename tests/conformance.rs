//! The official MCP conformance suite (`@modelcontextprotocol/conformance`, server mode) run
//! against `mcp-mock` directly and against Sentinel fronting it (over stdio and over HTTP), for
//! both client generations (the suite's spec version) and every backend generation (the mock
//! speaking both, only the session-based one, or only the stateless one). In front of a mock
//! speaking both, Sentinel must pass exactly the checks the mock passes on its own; in front of
//! a single-generation mock, at least those (it bridges generations, so it may pass more). Every
//! check that does not pass must be explained in `tests/conformance/baseline.md`.
mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{Gateway, LEGACY, MODERN, MockHttp, http_backend, mock_stdio_backend, peers};

/// Which generations the mock speaks (`mcp-mock --generation`).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Speaks {
    Both,
    Legacy,
    Modern,
}

impl Speaks {
    const ALL: [Speaks; 3] = [Speaks::Both, Speaks::Legacy, Speaks::Modern];

    fn args(self) -> &'static [&'static str] {
        match self {
            Speaks::Both => &[],
            Speaks::Legacy => &["--generation", "legacy"],
            Speaks::Modern => &["--generation", "modern"],
        }
    }

    /// What a target's name says of it: nothing for the default mock.
    fn suffix(self) -> &'static str {
        match self {
            Speaks::Both => "",
            Speaks::Legacy => "/legacy",
            Speaks::Modern => "/modern",
        }
    }
}

/// Where a run points the suite, and what the mock behind it speaks. Each run gets processes of
/// its own: scenarios mutate the server (`test_trigger_tool_change`), so two runs must never
/// share one.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
enum Target {
    Direct(Speaks),
    SentinelStdio(Speaks),
    SentinelHttp(Speaks),
}

impl Target {
    fn all() -> impl Iterator<Item = Target> {
        Speaks::ALL.into_iter().flat_map(|s| [Target::Direct(s), Target::SentinelStdio(s), Target::SentinelHttp(s)])
    }

    fn speaks(self) -> Speaks {
        match self {
            Target::Direct(s) | Target::SentinelStdio(s) | Target::SentinelHttp(s) => s,
        }
    }

    /// `direct`, `sentinel-stdio`, `sentinel-http`, with `/legacy` or `/modern` for a
    /// single-generation mock (as the baseline names them).
    fn name(self) -> String {
        let base = match self {
            Target::Direct(_) => "direct",
            Target::SentinelStdio(_) => "sentinel-stdio",
            Target::SentinelHttp(_) => "sentinel-http",
        };
        format!("{base}{}", self.speaks().suffix())
    }

    fn is_sentinel(self) -> bool {
        !matches!(self, Target::Direct(_))
    }
}

/// A check's outcome as the suite reports it: SUCCESS, FAILURE, WARNING or INFO.
#[derive(Clone, Debug)]
struct Outcome {
    status: String,
    message: String,
}

impl Outcome {
    /// FAILURE and WARNING both need an explanation; INFO is the suite saying "not exercised".
    fn is_failure(&self) -> bool {
        matches!(self.status.as_str(), "FAILURE" | "WARNING")
    }
}

/// `scenario:check-id` (the suite's own key for expected failures) to outcome.
type Checks = BTreeMap<String, Outcome>;

/// Runs the whole suite (`--suite all`, pending scenarios included) at one spec version.
fn run_suite(target: Target, version: &str) -> Checks {
    let peers = peers::ensure();
    // Keep the servers alive for the run; they are dropped (killed) at the end of this function.
    let mock;
    let gateway;
    let url = match target {
        Target::Direct(s) => {
            mock = MockHttp::start(s.args());
            mock.url.clone()
        }
        Target::SentinelStdio(s) => {
            gateway = Gateway::start(&mock_stdio_backend("mock", Some(""), s.args()));
            gateway.url.clone()
        }
        Target::SentinelHttp(s) => {
            mock = MockHttp::start(s.args());
            gateway = Gateway::start(&http_backend("mock", Some(""), &mock.url));
            gateway.url.clone()
        }
    };
    let out = tempfile::tempdir().expect("tempdir");
    let mut child = Command::new(peers.node())
        .arg(peers.conformance())
        .args(["server", "--suite", "all", "--url", &url, "--spec-version", version, "-o"])
        .arg(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("run the conformance suite");
    let deadline = Instant::now() + Duration::from_secs(300);
    let status = loop {
        if let Some(s) = child.try_wait().expect("wait for the suite") {
            break s;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the conformance suite ({} {version}) did not finish within 5 minutes", target.name());
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    // The suite exits non-zero when a check fails; that is judged below, check by check.
    let checks = read_results(out.path());
    assert!(
        !checks.is_empty(),
        "the conformance suite ({} {version}) wrote no results (exit: {status})",
        target.name()
    );
    checks
}

/// Reads `-o DIR`: one `server-<scenario>-<timestamp>/checks.json` per scenario.
fn read_results(dir: &Path) -> Checks {
    let mut checks = Checks::new();
    for entry in std::fs::read_dir(dir).expect("results dir") {
        let path = entry.expect("dir entry").path();
        let file = path.join("checks.json");
        if !file.exists() {
            continue;
        }
        let dir_name = path.file_name().unwrap().to_string_lossy().to_string();
        let scenario = scenario_name(&dir_name);
        let list: Vec<serde_json::Value> =
            serde_json::from_str(&std::fs::read_to_string(&file).expect("read checks.json")).expect("checks.json");
        for c in list {
            let key = format!("{scenario}:{}", c["id"].as_str().expect("check id"));
            let outcome = Outcome {
                status: c["status"].as_str().expect("check status").to_string(),
                message: c["errorMessage"].as_str().unwrap_or_default().to_string(),
            };
            // A check reported twice counts as its worse outcome.
            match checks.get(&key) {
                Some(seen) if seen.is_failure() => {}
                _ => {
                    checks.insert(key, outcome);
                }
            }
        }
    }
    checks
}

/// `server-tools-list-2026-11-25T21-22-41-117Z` → `tools-list`.
fn scenario_name(dir_name: &str) -> String {
    const STAMP: usize = "-2026-11-25T21-22-41-117Z".len();
    let name = dir_name.strip_prefix("server-").unwrap_or(dir_name);
    assert!(
        name.len() > STAMP && name.as_bytes()[name.len() - STAMP] == b'-' && name.ends_with('Z'),
        "unexpected result directory name `{dir_name}`"
    );
    name[..name.len() - STAMP].to_string()
}

/// One row of `tests/conformance/baseline.md`: `| spec | targets | scenario:check | reason |`.
#[derive(Debug)]
struct Expected {
    spec: String,
    /// `*` (every target), `sentinel` (both Sentinel targets) or one target's name.
    targets: String,
    check: String,
    reason: String,
}

impl Expected {
    /// `*` covers every run; `sentinel` every run through Sentinel; `sentinel/legacy` (or
    /// `/modern`) both Sentinel runs in front of that mock; any other cell one run by name.
    fn covers(&self, version: &str, target: Target) -> bool {
        let spec = self.spec == "*" || self.spec == version;
        let target = match self.targets.as_str() {
            "*" => true,
            "sentinel" => target.is_sentinel(),
            t if t.starts_with("sentinel/") => {
                target.is_sentinel() && Some(target.speaks().suffix()) == t.strip_prefix("sentinel")
            }
            t => t == target.name(),
        };
        spec && target
    }
}

fn read_baseline() -> Vec<Expected> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/conformance/baseline.md");
    let text = std::fs::read_to_string(&path).expect("read tests/conformance/baseline.md");
    let mut rows = Vec::new();
    for line in text.lines().filter(|l| l.starts_with('|')) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(|c| c.trim().trim_matches('`')).collect();
        if cells.len() != 4 || cells[0] == "spec" || cells[0].starts_with('-') {
            continue;
        }
        let e = Expected {
            spec: cells[0].into(),
            targets: cells[1].into(),
            check: cells[2].into(),
            reason: cells[3].into(),
        };
        assert!(!e.reason.is_empty(), "baseline entry `{}` has no reason", e.check);
        let known = ["*", "sentinel", "sentinel/legacy", "sentinel/modern"].contains(&e.targets.as_str())
            || Target::all().any(|t| t.name() == e.targets);
        assert!(known, "baseline entry `{}`: unknown target `{}`", e.check, e.targets);
        rows.push(e);
    }
    rows
}

#[test]
fn sentinel_passes_what_the_mock_passes() {
    peers::ensure();
    let baseline = read_baseline();

    // Eighteen independent runs (nine targets, two versions), six at a time: each is mostly
    // waiting, and all at once would only crowd two cores.
    let started = Instant::now();
    let all: Vec<(Target, &str)> =
        [LEGACY, MODERN].into_iter().flat_map(|v| Target::all().map(move |t| (t, v))).collect();
    let mut results: BTreeMap<(Target, &str), Checks> = BTreeMap::new();
    for batch in all.chunks(6) {
        let runs: Vec<_> = batch.iter().map(|&(t, v)| ((t, v), std::thread::spawn(move || run_suite(t, v)))).collect();
        results.extend(runs.into_iter().map(|(k, h)| (k, h.join().expect("suite run panicked"))));
    }
    println!("conformance suite: {} runs in {:.1}s", results.len(), started.elapsed().as_secs_f64());
    // `checks` counts distinct `scenario:check` ids; the suite's own total counts a check once
    // per report, and some (the SEP-2243 header checks) report once per tool parameter.

    println!("\n| spec       | target                | checks | passed | failed | warnings | info |");
    println!("|------------|-----------------------|--------|--------|--------|----------|------|");
    for ((target, version), checks) in &results {
        let count = |s: &str| checks.values().filter(|o| o.status == s).count();
        println!(
            "| {version} | {:<21} | {:>6} | {:>6} | {:>6} | {:>8} | {:>4} |",
            target.name(),
            checks.len(),
            count("SUCCESS"),
            count("FAILURE"),
            count("WARNING"),
            count("INFO")
        );
    }
    println!();

    let mut problems = Vec::new();
    for version in [LEGACY, MODERN] {
        for speaks in Speaks::ALL {
            let direct = &results[&(Target::Direct(speaks), version)];
            for target in [Target::SentinelStdio(speaks), Target::SentinelHttp(speaks)] {
                let through = &results[&(target, version)];
                let keys: BTreeSet<&String> = direct.keys().chain(through.keys()).collect();
                for key in keys {
                    let (d, s) = (direct.get(key), through.get(key));
                    let status = |o: Option<&Outcome>| o.map_or("absent", |o| o.status.as_str()).to_string();
                    // In front of the dual mock the passed sets must match; in front of a
                    // single-generation one Sentinel may pass more (it bridges), never less. A
                    // check that passes on neither side is the baseline's business.
                    let (passes_direct, passes_through) = (status(d) == "SUCCESS", status(s) == "SUCCESS");
                    let differs = if speaks == Speaks::Both {
                        passes_direct != passes_through
                    } else {
                        passes_direct && !passes_through
                    };
                    if differs {
                        problems.push(format!(
                            "{version} {}: `{key}` is {} direct but {} through Sentinel{}",
                            target.name(),
                            status(d),
                            status(s),
                            s.filter(|o| !o.message.is_empty())
                                .map(|o| format!(" ({})", o.message))
                                .unwrap_or_default()
                        ));
                    }
                }
            }
        }
    }
    for ((target, version), checks) in &results {
        for (key, outcome) in checks.iter().filter(|(_, o)| o.is_failure()) {
            if !baseline.iter().any(|e| (e.check == *key || e.check == "*") && e.covers(version, *target)) {
                problems.push(format!(
                    "{version} {}: `{key}` {} and is not in tests/conformance/baseline.md: {}",
                    target.name(),
                    outcome.status,
                    outcome.message
                ));
            }
        }
    }
    for e in &baseline {
        let mut covered = results.iter().filter(|((t, v), _)| e.covers(v, *t)).peekable();
        if covered.peek().is_none() {
            problems.push(format!("baseline entry `{}` ({} {}) matches no run", e.check, e.spec, e.targets));
        }
        for ((target, version), checks) in covered {
            // `*` stands for every check of a run that cannot work at all (a client of one
            // generation straight at a mock of the other): stale once nothing fails there.
            let still = if e.check == "*" {
                checks.values().any(Outcome::is_failure)
            } else {
                checks.get(&e.check).is_some_and(Outcome::is_failure)
            };
            if !still {
                problems.push(format!(
                    "stale baseline entry: `{}` now passes (or is gone) for {version} {}; remove it ({})",
                    e.check,
                    target.name(),
                    e.reason
                ));
            }
        }
    }
    assert!(problems.is_empty(), "{} conformance problem(s):\n  {}", problems.len(), problems.join("\n  "));
}
