//! `[alerts]`: the webhooks told of backend and audit trouble, from raw TOML to
//! `crate::alerts::AlertsConfig`.

use std::time::Duration;

use serde::Deserialize;

use super::source::{Problem, Source};
use super::{duration, key};
use crate::alerts::{AlertsConfig, Format, Webhook};

#[derive(Debug, Default, Deserialize)]
pub struct RawAlerts {
    pub min_interval: Option<String>,
    #[serde(default, rename = "webhook")]
    pub webhooks: Vec<RawWebhook>,
}

#[derive(Debug, Deserialize)]
pub struct RawWebhook {
    pub url: String,
    pub format: Option<String>,
}

pub fn alerts(src: &Source, raw: Option<RawAlerts>, problems: &mut Vec<Problem>) -> AlertsConfig {
    let a = raw.unwrap_or_default();
    let min_interval =
        duration(src, &key(&["alerts", "min_interval"]), a.min_interval.as_deref(), Duration::from_secs(300), problems);
    let mut webhooks = Vec::new();
    for (i, w) in a.webhooks.into_iter().enumerate() {
        let at = |k: &str| key(&["alerts", "webhook", &i.to_string(), k]);
        match reqwest::Url::parse(&w.url) {
            Ok(u) if (u.scheme() == "http" || u.scheme() == "https") && u.host_str().is_some() => {}
            // The URL is a secret (Discord and Slack put the token in it): never echoed.
            _ => problems.push(src.problem(&at("url"), "is not an http(s) URL")),
        }
        let format = match w.format.as_deref() {
            None | Some("generic") => Format::Generic,
            Some("discord") => Format::Discord,
            Some("slack") => Format::Slack,
            Some(other) => {
                problems.push(
                    src.problem(&at("format"), format!("`{other}` is not one of \"generic\", \"discord\", \"slack\"")),
                );
                Format::Generic
            }
        };
        webhooks.push(Webhook { url: w.url, format });
    }
    AlertsConfig { webhooks, min_interval }
}
