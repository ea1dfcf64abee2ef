//! The configuration file exactly as written: serde structs that mirror the TOML.
//!
//! Nothing here is trusted or defaulted beyond what serde does; `super::validate` turns a
//! `RawConfig` into the typed runtime `Config`. Unknown keys are collected by the loader
//! (with `serde_ignored`) rather than by `deny_unknown_fields`, so that one run of
//! `sentinel check` can list every unknown key with its line instead of stopping at the first.

use std::collections::BTreeMap;

use indexmap::IndexMap;
use serde::Deserialize;

use super::alerts::RawAlerts;
use super::governance::{RawAudit, RawAuth, RawKillSwitch, RawRateLimit, RawRole, RawValidation};
use super::telemetry::RawTelemetry;

#[derive(Debug, Default, Deserialize)]
pub struct RawConfig {
    #[serde(default)]
    pub server: RawServer,
    #[serde(default)]
    pub naming: RawNaming,
    #[serde(default, rename = "backend")]
    pub backends: Vec<RawBackend>,
    pub auth: Option<RawAuth>,
    #[serde(default)]
    pub roles: IndexMap<String, RawRole>,
    pub rate_limit: Option<RawRateLimit>,
    pub kill_switch: Option<RawKillSwitch>,
    pub validation: Option<RawValidation>,
    pub audit: Option<RawAudit>,
    pub alerts: Option<RawAlerts>,
    pub credentials: Option<super::credentials::RawCredentials>,
    pub telemetry: Option<RawTelemetry>,
    pub cluster: Option<super::cluster::RawCluster>,
    #[serde(default, rename = "profile")]
    pub profiles: Vec<super::catalog::RawProfile>,
    #[serde(default)]
    pub tool_overrides: IndexMap<String, super::catalog::RawOverride>,
    pub pinning: Option<super::catalog::RawPinning>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawServer {
    pub listen: Option<String>,
    pub allow_public: Option<bool>,
    pub allowed_origins: Option<Vec<String>>,
    pub allowed_hosts: Option<Vec<String>>,
    pub max_body_bytes: Option<u64>,
    pub session_idle_timeout: Option<String>,
    pub max_sessions_per_subject: Option<u64>,
    pub stream_reconnect_after: Option<String>,
    pub metrics_token: Option<String>,
    pub metrics_token_file: Option<String>,
    pub discovery: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
pub struct RawNaming {
    pub style: Option<String>,
    pub separator: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawBackend {
    pub name: String,
    pub prefix: Option<String>,
    pub stdio: Option<RawStdio>,
    pub http: Option<RawHttp>,
    pub timeout: Option<String>,
    pub probe_timeout: Option<String>,
    pub required: Option<bool>,
    pub max_message_bytes: Option<u64>,
    pub circuit: Option<RawCircuit>,
    pub roots: Option<Vec<RawRoot>>,
    pub generation: Option<String>,
    pub credentials: Option<super::per_user::RawCredentialMode>,
    pub instances: Option<String>,
    pub idle_timeout: Option<String>,
    pub max_instances: Option<u64>,
    pub list_as: Option<String>,
}

/// One of a backend's `roots`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawRoot {
    pub uri: String,
    pub name: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawStdio {
    pub command: String,
    #[serde(default)]
    pub args: Vec<String>,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Names of Sentinel's own environment variables the child may also see.
    #[serde(default)]
    pub inherit_env: Vec<String>,
    pub cwd: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct RawHttp {
    pub url: String,
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
pub struct RawCircuit {
    pub failures: Option<u32>,
    pub cooldown: Option<String>,
}
