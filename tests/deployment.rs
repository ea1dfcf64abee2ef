//! Deployment files (Dockerfile, docker-compose.yml, deploy/): there is no container engine
//! here, so they are checked by construction — every JSON and YAML file parses, every metric
//! the dashboard and the alert rules use exists in a running gateway's `/metrics`, the
//! container config passes `sentinel check`, and the compose file has the services and the
//! safety properties the docs promise.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use common::*;
use serde_json::{Value, json};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(files(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn read(p: &Path) -> String {
    std::fs::read_to_string(p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// One YAML document, merge keys (`<<: *anchor`) applied as Compose applies them.
fn yaml(p: &Path) -> Value {
    let mut v: serde_norway::Value =
        serde_norway::from_str(&read(p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    v.apply_merge().unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    serde_json::to_value(v).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

fn ext(p: &Path) -> &str {
    p.extension().and_then(|e| e.to_str()).unwrap_or("")
}

#[test]
fn every_json_and_yaml_file_parses() {
    let mut seen = 0;
    for p in files(&root().join("deploy")) {
        match ext(&p) {
            "json" => {
                serde_json::from_str::<Value>(&read(&p)).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            }
            "yml" | "yaml" => {
                yaml(&p);
            }
            _ => continue,
        }
        seen += 1;
    }
    assert!(seen >= 5, "expected the Prometheus and Grafana files under deploy/, found {seen}");
}

/// `sentinel_[a-z_]+` names, without the histogram's `_bucket`/`_count`/`_sum` series suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let b = text.as_bytes();
    let mut i = 0;
    while let Some(off) = text[i..].find("sentinel_") {
        let start = i + off;
        let word_start = start == 0 || !(b[start - 1].is_ascii_alphanumeric() || b[start - 1] == b'_');
        let mut end = start + "sentinel_".len();
        while end < b.len() && (b[end].is_ascii_lowercase() || b[end] == b'_') {
            end += 1;
        }
        if word_start {
            let mut n = text[start..end].trim_end_matches('_');
            for s in ["_bucket", "_count", "_sum"] {
                n = n.strip_suffix(s).unwrap_or(n);
            }
            names.insert(n.to_string());
        }
        i = end;
    }
    names
}

#[tokio::test]
async fn dashboard_and_alert_metrics_exist_in_a_running_gateway() {
    let mut referenced = BTreeSet::new();
    let mut sources = files(&root().join("deploy/grafana/dashboards"));
    sources.push(root().join("deploy/prometheus/alerts.yml"));
    for p in &sources {
        let names = metric_names(&read(p));
        assert!(!names.is_empty(), "{} uses no sentinel_ metric", p.display());
        referenced.extend(names);
    }
    for n in [
        "sentinel_requests_total",
        "sentinel_request_duration_seconds",
        "sentinel_backend_up",
        "sentinel_circuit_state",
        "sentinel_backend_restarts_total",
        "sentinel_rate_limited_total",
        "sentinel_audit_queue_depth",
    ] {
        assert!(referenced.contains(n), "{n} is used by no panel or alert: {referenced:?}");
    }
    // The dashboard's latency panel is a histogram quantile.
    let dash = read(&root().join("deploy/grafana/dashboards/sentinel.json"));
    assert!(dash.contains("histogram_quantile") && dash.contains("sentinel_request_duration_seconds_bucket"));

    let config =
        mock_stdio_backend("m", None, &[]) + "[rate_limit]\ntools = { \"m__slow\" = { per_minute = 1, burst = 1 } }\n";
    let gw = Gateway::start(&config);
    let c = HttpClient::legacy(&gw.url, json!({})).await;
    c.call("m__echo", json!({})).await;
    c.call("m__slow", json!({"ms": 1})).await;
    c.call("m__slow", json!({"ms": 1})).await;
    let r = reqwest::get(format!("{}/metrics", gw.base())).await.unwrap();
    assert_eq!(r.status(), 200);
    let text = r.text().await.unwrap();
    let mut exposed = BTreeSet::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            exposed.extend(rest.split(' ').next().map(str::to_string));
        } else if !line.starts_with('#') {
            let name = line.split(['{', ' ']).next().unwrap_or_default();
            exposed.insert(name.to_string());
            for s in ["_bucket", "_count", "_sum"] {
                if let Some(n) = name.strip_suffix(s) {
                    exposed.insert(n.to_string());
                }
            }
        }
    }
    let missing: Vec<_> = referenced.iter().filter(|n| !exposed.contains(*n)).collect();
    assert!(missing.is_empty(), "metrics used in deploy/ but not exposed: {missing:?}\n/metrics:\n{text}");
}

#[test]
fn alert_rules_have_names_and_expressions() {
    let alerts = yaml(&root().join("deploy/prometheus/alerts.yml"));
    let rules: Vec<&Value> =
        alerts["groups"].as_array().unwrap().iter().flat_map(|g| g["rules"].as_array().unwrap()).collect();
    let exprs: Vec<String> = rules
        .iter()
        .map(|r| {
            assert!(r["alert"].is_string(), "{r}");
            r["expr"].as_str().unwrap_or_else(|| panic!("no expr: {r}")).to_string()
        })
        .collect();
    for needle in [
        "sentinel_backend_up == 0",
        "increase(sentinel_backend_restarts_total[10m]) > 3",
        "sentinel_circuit_state == 2",
        "sentinel_audit_queue_depth > 1000",
        "result=\"spooled\"",
        "sentinel_requests_total{outcome=~",
    ] {
        assert!(exprs.iter().any(|e| e.contains(needle)), "no alert uses `{needle}`");
    }
    let prom = yaml(&root().join("deploy/prometheus/prometheus.yml"));
    let job = &prom["scrape_configs"][0];
    assert_eq!(job["metrics_path"], "/metrics");
    assert_eq!(job["static_configs"][0]["targets"][0], "sentinel:8800");
}

/// `sentinel check` on a shipped config with placeholder values for every variable the
/// deployment files set: (passed, what it printed).
fn check_config(path: &Path, jwt_secret: &str) -> (bool, String) {
    let out = std::process::Command::new(sentinel_bin())
        .args(["check", "-c"])
        .arg(path)
        .env("SENTINEL_JWT_SECRET", jwt_secret)
        .env("POSTGRES_USER", "sentinel")
        .env("POSTGRES_PASSWORD", "placeholder")
        .env("POSTGRES_DB", "sentinel")
        .env("REDIS_PASSWORD", "placeholder")
        .env("SENTINEL_REPLICA_ID", "sentinel-1")
        .env("SENTINEL_CLUSTER_SECRET", PLACEHOLDER_SECRET)
        .output()
        .unwrap();
    (out.status.success(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

const PLACEHOLDER_SECRET: &str = "placeholder-secret-0123456789abcdef0123456789";

#[test]
fn docker_and_cluster_configs_pass_check() {
    for file in ["deploy/sentinel.docker.toml", "deploy/sentinel.cluster.toml"] {
        let (ok, out) = check_config(&root().join(file), PLACEHOLDER_SECRET);
        assert!(ok, "{file}: {out}");
        assert!(!out.contains("warning"), "{file}: {out}");
        let text = read(&root().join(file));
        assert!(text.contains("listen = \"0.0.0.0:8800\"") && text.contains("allow_public = true"), "{file}");
    }
    let cluster = read(&root().join("deploy/sentinel.cluster.toml"));
    assert!(cluster.contains("[cluster]") && cluster.contains("replica_id = \"${SENTINEL_REPLICA_ID}\""));
    assert!(cluster.contains("secret = \"${SENTINEL_CLUSTER_SECRET}\""), "the replicas seal what they share");
}

#[test]
fn compose_names_the_services_and_keeps_sentinel_on_loopback() {
    let c = yaml(&root().join("docker-compose.yml"));
    let services = c["services"].as_object().expect("services");
    for s in ["sentinel", "postgres", "prometheus", "grafana"] {
        assert!(services.contains_key(s), "no `{s}` service");
    }
    let sentinel = &services["sentinel"];
    assert_eq!(sentinel["ports"], json!(["127.0.0.1:8800:8800"]));
    assert_eq!(sentinel["depends_on"]["postgres"]["condition"], "service_healthy");
    assert!(sentinel["healthcheck"]["test"].to_string().contains("/health"));
    assert!(services["postgres"]["image"].as_str().unwrap().starts_with("postgres:16"));
    assert!(services["postgres"]["healthcheck"].is_object());
    assert!(services["postgres"]["volumes"][0].as_str().unwrap().starts_with("pgdata:"));
    assert!(c["volumes"].as_object().unwrap().contains_key("pgdata"));
    for s in ["prometheus", "grafana", "jaeger"] {
        assert_eq!(services[s]["profiles"], json!(["monitoring"]), "{s}");
    }
    // Jaeger takes OTLP inside the network only; its UI is on loopback, and Grafana reads it.
    assert_eq!(services["jaeger"]["ports"], json!(["127.0.0.1:16686:16686"]));
    let jaeger = read(&root().join("deploy/grafana/provisioning/datasources/jaeger.yml"));
    assert!(jaeger.contains("type: jaeger") && jaeger.contains("url: http://jaeger:16686"), "{jaeger}");
    // Every file the compose file mounts from the repository exists.
    for s in services.values() {
        for v in s["volumes"].as_array().into_iter().flatten() {
            let v = v.as_str().unwrap();
            if let Some(local) = v.strip_prefix("./") {
                let local = local.split(':').next().unwrap();
                assert!(root().join(local).exists(), "mounted path {local} is missing");
            }
        }
    }
}

#[test]
fn dockerfile_is_multi_stage_non_root_with_healthcheck() {
    let d = read(&root().join("Dockerfile"));
    for needle in [
        "FROM rust:1",
        "cargo build --release --locked --bins",
        "FROM debian:bookworm-slim",
        "USER 10001:10001",
        "EXPOSE 8800",
        "HEALTHCHECK",
        "/health",
        "CMD [\"sentinel\", \"serve\", \"-c\", \"/etc/sentinel/sentinel.toml\"]",
    ] {
        assert!(d.contains(needle), "Dockerfile lacks `{needle}`");
    }
    let ignore = read(&root().join(".dockerignore"));
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == "target"));
    assert!(ignore.lines().any(|l| l.trim_end_matches('/') == ".git"));
    let unit = read(&root().join("deploy/sentinel.service"));
    for needle in [
        "User=sentinel",
        "NoNewPrivileges=yes",
        "ProtectSystem=strict",
        "ProtectHome=yes",
        "PrivateTmp=yes",
        "ReadWritePaths=/var/lib/sentinel",
        "ExecReload=/bin/kill -HUP $MAINPID",
        "Restart=on-failure",
    ] {
        assert!(unit.contains(needle), "sentinel.service lacks `{needle}`");
    }
}

/// hadolint (installed into target/peers from PyPI) finds nothing in the Dockerfile, with the
/// settings in `.hadolint.yaml`.
#[test]
fn dockerfile_passes_hadolint() {
    let peers = common::peers::ensure();
    let hadolint = peers.dir.join("venv/bin/hadolint");
    let out = std::process::Command::new(&hadolint)
        .args(["--config", ".hadolint.yaml", "--no-color", "Dockerfile"])
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", hadolint.display()));
    assert!(
        out.status.success(),
        "hadolint:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// docker-compose.yml is valid against the Compose specification (the schema vendored in
/// check-jsonschema, installed into target/peers from PyPI), and a broken copy is caught.
#[test]
fn compose_file_passes_the_compose_spec_schema() {
    let peers = common::peers::ensure();
    let check = peers.dir.join("venv/bin/check-jsonschema");
    let run = |file: &Path| {
        std::process::Command::new(&check)
            .args(["--builtin-schema", "vendor.compose-spec"])
            .arg(file)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", check.display()))
    };
    let out = run(&root().join("docker-compose.yml"));
    assert!(
        out.status.success(),
        "compose schema:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("docker-compose.yml");
    std::fs::write(&broken, "services:\n  sentinel:\n    image: x\n    ports: 8800\n    restart: sometimes\n").unwrap();
    assert!(!run(&broken).status.success(), "the schema check rejects an invalid compose file");
}

/// The `scale` profile: three replicas on the cluster config, each with its id and volume,
/// Redis and HAProxy; HAProxy's servers are exactly those replicas, round robin with no
/// stickiness (tests/load_balancer.rs runs this HAProxy config in front of real replicas).
#[test]
fn compose_scale_profile_runs_three_replicas_behind_haproxy() {
    let c = yaml(&root().join("docker-compose.yml"));
    let services = c["services"].as_object().expect("services");
    let replicas = ["sentinel-1", "sentinel-2", "sentinel-3"];
    for s in replicas.iter().chain(&["redis", "haproxy"]) {
        assert_eq!(services[*s]["profiles"], json!(["scale"]), "{s}");
    }
    for r in replicas {
        let s = &services[r];
        assert_eq!(s["environment"]["SENTINEL_REPLICA_ID"], r);
        for var in ["REDIS_PASSWORD", "SENTINEL_JWT_SECRET", "SENTINEL_CLUSTER_SECRET"] {
            assert!(s["environment"][var].is_string(), "{r} gets {var}");
        }
        assert_eq!(
            s["volumes"],
            json!([
                "./deploy/sentinel.cluster.toml:/etc/sentinel/sentinel.toml:ro",
                format!("{r}-data:/var/lib/sentinel")
            ]),
            "{r}: the cluster config, and a spool volume of its own"
        );
        assert!(c["volumes"].as_object().unwrap().contains_key(&format!("{r}-data")));
        for dep in ["postgres", "redis"] {
            assert_eq!(s["depends_on"][dep]["condition"], "service_healthy", "{r} waits for {dep}");
        }
        assert!(s["healthcheck"]["test"].to_string().contains("/health"));
        assert!(s.get("ports").is_none(), "{r} is reached through HAProxy only");
        assert_eq!(s["image"], services["sentinel"]["image"], "{r} runs the gateway's image");
    }
    // Compose checks `${VAR:?}` in every profile's services: the single gateway's `.env` must
    // not need the scale profile's Redis password. Redis refuses to start without it instead.
    assert!(!read(&root().join("docker-compose.yml")).contains("REDIS_PASSWORD:?"));
    assert!(services["redis"]["command"].to_string().contains("set REDIS_PASSWORD in .env"));
    let haproxy = &services["haproxy"];
    assert_eq!(haproxy["ports"], json!(["127.0.0.1:8880:8800"]));
    assert_eq!(haproxy["volumes"], json!(["./deploy/haproxy/haproxy.cfg:/usr/local/etc/haproxy/haproxy.cfg:ro"]));
    for r in replicas {
        assert_eq!(haproxy["depends_on"][r]["condition"], "service_healthy");
    }

    let cfg = read(&root().join("deploy/haproxy/haproxy.cfg"));
    let servers: Vec<(&str, &str)> = cfg
        .lines()
        .filter_map(|l| l.trim().strip_prefix("server "))
        .map(|l| {
            let mut w = l.split_whitespace();
            (w.next().unwrap(), w.next().unwrap())
        })
        .collect();
    let expected: Vec<(&str, String)> = replicas.iter().map(|r| (*r, format!("{r}:8800"))).collect();
    assert_eq!(servers.iter().map(|(n, a)| (*n, a.to_string())).collect::<Vec<_>>(), expected);
    for needle in [
        "bind :8800",
        "balance roundrobin",
        "option redispatch",
        "retries 3",
        "retry-on conn-failure",
        "uri /ready",
        "hdr Host localhost",
        "No stickiness",
    ] {
        assert!(cfg.contains(needle), "haproxy.cfg lacks `{needle}`");
    }
    assert!(!cfg.contains("stick-table") && !cfg.contains("stick match"), "sessions are shared: no stick table");
}

/// Every manifest under deploy/kubernetes/, parsed.
fn manifests() -> Vec<(PathBuf, Value)> {
    files(&root().join("deploy/kubernetes"))
        .into_iter()
        .filter(|p| ext(p) == "yaml")
        .map(|p| (p.clone(), yaml(&p)))
        .collect()
}

fn manifest(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests().into_iter().map(|(_, v)| v).filter(|v| v["kind"] == kind).collect();
    assert_eq!(found.len(), 1, "one {kind} in deploy/kubernetes/");
    found.remove(0)
}

/// kubernetes-validate (installed into target/peers from PyPI; the schemas are in the package,
/// so no network is needed) finds every manifest valid in strict mode (no unknown fields), and
/// catches a broken one.
#[test]
fn kubernetes_manifests_pass_the_schema_validator() {
    let peers = common::peers::ensure();
    let validate = peers.dir.join("venv/bin/kubernetes-validate");
    let run = |files: &[PathBuf]| {
        std::process::Command::new(&validate)
            .args(["--strict", "--kubernetes-version", "1.33"])
            .args(files)
            .output()
            .unwrap_or_else(|e| panic!("run {}: {e}", validate.display()))
    };
    let files: Vec<PathBuf> = manifests().into_iter().map(|(p, _)| p).collect();
    assert!(files.len() >= 4, "Deployment, Service, ConfigMap, Secret: {files:?}");
    let out = run(&files);
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && !text.contains("WARN"), "kubernetes-validate:\n{text}");

    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("deployment.yaml");
    let text = read(&root().join("deploy/kubernetes/deployment.yaml"));
    std::fs::write(
        &broken,
        text.replace("replicas: 3", "replicas: three").replace("readinessProbe:", "readinesProbe:"),
    )
    .unwrap();
    assert!(!run(&[broken]).status.success(), "the validator rejects an invalid manifest");
}

/// What docs/scaling.md promises of the manifests: three replicas, probed on /health and
/// /ready with a Host the gateway accepts, non-root, secrets from the Secret, the ConfigMap's
/// config valid and clustered, and the Secret's placeholder refused by the gateway.
#[test]
fn kubernetes_manifests_run_three_probed_non_root_replicas() {
    let d = manifest("Deployment");
    let spec = &d["spec"];
    assert_eq!(spec["replicas"], 3);
    let pod = &spec["template"]["spec"];
    let labels = &spec["template"]["metadata"]["labels"];
    assert_eq!(&spec["selector"]["matchLabels"], labels);
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(pod["securityContext"]["runAsUser"], 10001, "the image's user");
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
    assert!(c["resources"]["requests"]["memory"].is_string() && c["resources"]["limits"]["memory"].is_string());
    for (probe, path) in [("livenessProbe", "/health"), ("readinessProbe", "/ready"), ("startupProbe", "/health")] {
        let get = &c[probe]["httpGet"];
        assert_eq!(get["path"], path, "{probe}");
        assert_eq!(
            get["httpHeaders"],
            json!([{"name": "Host", "value": "localhost"}]),
            "{probe}: a Host Sentinel accepts"
        );
    }

    let secret = manifest("Secret");
    let env = c["env"].as_array().unwrap();
    let from_secret = |var: &str| {
        let e = env.iter().find(|e| e["name"] == var).unwrap_or_else(|| panic!("no {var}"));
        let r = &e["valueFrom"]["secretKeyRef"];
        assert_eq!(r["name"], secret["metadata"]["name"], "{var}");
        let key = r["key"].as_str().unwrap();
        assert!(secret["stringData"][key].is_string(), "{var}: the Secret has no `{key}`");
        secret["stringData"][key].as_str().unwrap().to_string()
    };
    let jwt_placeholder = from_secret("SENTINEL_JWT_SECRET");
    from_secret("REDIS_PASSWORD");
    from_secret("POSTGRES_PASSWORD");
    let id = env.iter().find(|e| e["name"] == "SENTINEL_REPLICA_ID").expect("SENTINEL_REPLICA_ID");
    assert_eq!(id["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name");

    // The ConfigMap is mounted as the config file, which is valid, clustered and needs only
    // the variables the Deployment sets.
    let cm = manifest("ConfigMap");
    let volume =
        pod["volumes"].as_array().unwrap().iter().find(|v| v["configMap"].is_object()).expect("a ConfigMap volume");
    assert_eq!(volume["configMap"]["name"], cm["metadata"]["name"]);
    let mount = c["volumeMounts"].as_array().unwrap().iter().find(|m| m["name"] == volume["name"]).unwrap();
    assert_eq!(mount["mountPath"], "/etc/sentinel");
    assert!(c["args"].to_string().contains("/etc/sentinel/sentinel.toml"));
    let toml = cm["data"]["sentinel.toml"].as_str().expect("sentinel.toml in the ConfigMap");
    assert!(toml.contains("[cluster]"));
    for var in ["SENTINEL_JWT_SECRET", "REDIS_PASSWORD", "POSTGRES_PASSWORD", "SENTINEL_REPLICA_ID"] {
        assert!(toml.contains(&format!("${{{var}}}")) && env.iter().any(|e| e["name"] == var), "{var}");
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("sentinel.toml");
    std::fs::write(&file, toml).unwrap();
    let (ok, out) = check_config(&file, PLACEHOLDER_SECRET);
    assert!(ok && !out.contains("warning"), "the ConfigMap's sentinel.toml: {out}");
    let (ok, out) = check_config(&file, &jwt_placeholder);
    assert!(!ok, "the Secret's placeholder JWT secret is refused: {out}");

    let svc = manifest("Service");
    assert_eq!(&svc["spec"]["selector"], labels);
    assert_eq!(svc["spec"]["ports"][0]["targetPort"], c["ports"][0]["name"]);
    assert!(read(&root().join("deploy/kubernetes/secret.yaml")).contains("EXAMPLE ONLY"));
}
