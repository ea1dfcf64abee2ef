//! `[telemetry]`: where OpenTelemetry traces go, from raw TOML to `TelemetryConfig`. An absent
//! section means no tracing at all (no exporter, no layer: src/telemetry.rs).

use indexmap::IndexMap;
use serde::Deserialize;

use super::key;
use super::source::{Problem, Source};

#[derive(Debug, Default, Deserialize)]
pub struct RawTelemetry {
    pub otlp_endpoint: Option<String>,
    pub sample_ratio: Option<f64>,
    pub service_name: Option<String>,
    pub resource_attributes: Option<IndexMap<String, String>>,
}

/// Traces exported over OTLP/HTTP (protobuf).
#[derive(Debug, Clone, PartialEq)]
pub struct TelemetryConfig {
    /// The collector's base URL (`http://host:4318`); spans go to `<base>/v1/traces`.
    pub otlp_endpoint: String,
    /// Share of new traces recorded (0.0–1.0); a client's sampled flag is followed either way.
    pub sample_ratio: f64,
    /// The `service.name` spans carry (`sentinel` by default).
    pub service_name: String,
    /// Extra OpenTelemetry resource attributes (`deployment.environment`, …).
    pub resource_attributes: Vec<(String, String)>,
}

/// Longest resource attribute key or value: they go into every export, and into nothing else.
const MAX_ATTRIBUTE_BYTES: usize = 256;
/// Most resource attributes.
const MAX_ATTRIBUTES: usize = 32;

pub fn telemetry(src: &Source, raw: Option<RawTelemetry>, problems: &mut Vec<Problem>) -> Option<TelemetryConfig> {
    let t = raw?;
    let at = |k: &str| key(&["telemetry", k]);
    let endpoint = match t.otlp_endpoint {
        Some(e) => match reqwest::Url::parse(&e) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => e,
            _ => {
                problems
                    .push(src.problem(&at("otlp_endpoint"), "is not an http(s) URL (e.g. \"http://127.0.0.1:4318\")"));
                return None;
            }
        },
        None => {
            problems.push(src.problem(
                &at("otlp_endpoint"),
                "is required in [telemetry] (e.g. \"http://127.0.0.1:4318\"); remove the section to turn tracing off",
            ));
            return None;
        }
    };
    let sample_ratio = t.sample_ratio.unwrap_or(1.0);
    if !(0.0..=1.0).contains(&sample_ratio) {
        problems.push(src.problem(&at("sample_ratio"), "must be between 0.0 and 1.0"));
    }
    let service_name = t.service_name.unwrap_or_else(|| "sentinel".into());
    if service_name.is_empty() || service_name.len() > MAX_ATTRIBUTE_BYTES {
        problems.push(src.problem(&at("service_name"), format!("must be 1 to {MAX_ATTRIBUTE_BYTES} bytes")));
    }
    let attributes: Vec<(String, String)> = t.resource_attributes.unwrap_or_default().into_iter().collect();
    if attributes.len() > MAX_ATTRIBUTES {
        problems.push(src.problem(&at("resource_attributes"), format!("at most {MAX_ATTRIBUTES} attributes")));
    }
    for (k, v) in &attributes {
        if k.is_empty() || k.len() > MAX_ATTRIBUTE_BYTES || v.len() > MAX_ATTRIBUTE_BYTES {
            problems.push(src.problem(
                &key(&["telemetry", "resource_attributes", k]),
                format!("keys must be 1 to {MAX_ATTRIBUTE_BYTES} bytes, values at most {MAX_ATTRIBUTE_BYTES}"),
            ));
        }
    }
    Some(TelemetryConfig {
        otlp_endpoint: endpoint.trim_end_matches('/').to_string(),
        sample_ratio,
        service_name,
        resource_attributes: attributes,
    })
}
