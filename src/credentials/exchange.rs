//! OAuth 2.0 Token Exchange (RFC 8693): the caller's verified token traded at the identity
//! provider for a token scoped to one backend, so the backend sees the user — never the
//! client's own token, which the MCP rules forbid passing through.
//!
//! Tokens are cached per subject until shortly before they expire. A token close to its end is
//! refreshed in the background while callers go on using it; only a caller with no usable token
//! waits, and concurrent callers of one subject wait on a single exchange.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use serde::Deserialize;

/// The grant type and token types of RFC 8693 §2.1 and §3.
const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
const JWT_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:jwt";

/// A token is not used in its last this-much of life (clock skew, the backend's own check).
const EXPIRY_MARGIN: Duration = Duration::from_secs(30);
/// Within this of its (margin-adjusted) end, a token is refreshed in the background.
const REFRESH_AHEAD: Duration = Duration::from_secs(60);
/// When the provider gives no `expires_in`, a token is kept this long.
const DEFAULT_LIFETIME: Duration = Duration::from_secs(300);
/// How long an exchange may take.
const EXCHANGE_TIMEOUT: Duration = Duration::from_secs(10);
/// Subjects cached at most; past it, expired entries go first, then the ones nearest expiry.
const MAX_SUBJECTS: usize = 10_000;
/// The most of a provider's error text carried into a caller's error.
const MAX_ERROR_TEXT: usize = 300;

/// Where and as whom to exchange.
#[derive(Clone)]
pub struct ExchangeSettings {
    /// The provider's token endpoint.
    pub token_url: reqwest::Url,
    /// Sentinel's client id there.
    pub client_id: String,
    /// Sentinel's client secret there (never logged).
    pub client_secret: String,
    /// The `audience` asked for, if the provider wants one.
    pub audience: Option<String>,
    /// The `scope` asked for, if any.
    pub scope: Option<String>,
}

impl std::fmt::Debug for ExchangeSettings {
    // Never the client secret.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ExchangeSettings")
            .field("token_url", &self.token_url.as_str())
            .field("client_id", &self.client_id)
            .field("audience", &self.audience)
            .field("scope", &self.scope)
            .finish_non_exhaustive()
    }
}

/// Why no token could be had: the provider's answer summarised, never a token.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("token exchange at {url} failed: {reason}")]
pub struct ExchangeError {
    /// The token endpoint, as logs show it.
    pub url: String,
    /// What the provider (or the network) said.
    pub reason: String,
}

#[derive(Clone)]
struct Cached {
    token: Arc<str>,
    /// When it stops being used (its expiry less the margin).
    usable_until: Instant,
}

type Pending = Shared<BoxFuture<'static, Result<Cached, ExchangeError>>>;

#[derive(Default)]
struct Slot {
    current: Option<Cached>,
    pending: Option<Pending>,
}

/// One backend's token exchange, with its cache.
pub struct TokenExchange {
    settings: ExchangeSettings,
    http: reqwest::Client,
    slots: Arc<Mutex<HashMap<String, Slot>>>,
    /// Exchanges made, succeeded and failed (`sentinel_token_exchanges_total`): counted where
    /// they end, background refreshes included.
    counters: Option<Arc<[prometheus_client::metrics::counter::Counter; 2]>>,
}

#[derive(Deserialize)]
struct Answer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<u64>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
}

impl TokenExchange {
    /// An exchanger with an empty cache.
    pub fn new(settings: ExchangeSettings, http: reqwest::Client) -> TokenExchange {
        TokenExchange { settings, http, slots: Arc::default(), counters: None }
    }

    /// Counts each exchange made in `[ok, error]`.
    pub fn counting(mut self, counters: [prometheus_client::metrics::counter::Counter; 2]) -> TokenExchange {
        self.counters = Some(Arc::new(counters));
        self
    }

    /// Forgets `subject`'s token (its next call exchanges again).
    pub fn forget(&self, subject: &str) {
        self.slots.lock().expect("exchange cache lock").remove(subject);
    }

    /// A backend token for `subject`, whose verified token is `subject_token`.
    pub async fn token_for(&self, subject: &str, subject_token: &str) -> Result<Arc<str>, ExchangeError> {
        let now = Instant::now();
        let pending = {
            let mut slots = self.slots.lock().expect("exchange cache lock");
            let slot = slots.entry(subject.to_string()).or_default();
            if let Some(c) = &slot.current
                && c.usable_until > now
            {
                let token = c.token.clone();
                if c.usable_until.saturating_duration_since(now) < REFRESH_AHEAD && slot.pending.is_none() {
                    // Refreshed in the background: this caller goes on with the token it has.
                    // Fire-and-forget by design: no caller waits for it (one that needs the
                    // token meanwhile shares it through `pending`), it is bounded by
                    // `EXCHANGE_TIMEOUT`, and all it touches is this cache.
                    let refresh = self.start(subject, subject_token);
                    slot.pending = Some(refresh.clone());
                    tokio::spawn(refresh);
                }
                return Ok(token);
            }
            match &slot.pending {
                Some(p) => p.clone(),
                None => {
                    let p = self.start(subject, subject_token);
                    slot.pending = Some(p.clone());
                    if slots.len() > MAX_SUBJECTS {
                        evict(&mut slots, now);
                    }
                    p
                }
            }
        };
        pending.await.map(|c| c.token)
    }

    /// An exchange for `subject` that files its result in the cache when done, whoever awaits it.
    fn start(&self, subject: &str, subject_token: &str) -> Pending {
        let (http, settings, slots) = (self.http.clone(), self.settings.clone(), self.slots.clone());
        let (subject, subject_token) = (subject.to_string(), subject_token.to_string());
        let counters = self.counters.clone();
        async move {
            let result = exchange(&http, &settings, &subject_token).await;
            if let Some(c) = &counters {
                c[usize::from(result.is_err())].inc();
            }
            let mut slots = slots.lock().expect("exchange cache lock");
            let slot = slots.entry(subject).or_default();
            slot.pending = None;
            if let Ok(c) = &result {
                slot.current = Some(c.clone());
            }
            result
        }
        .boxed()
        .shared()
    }
}

/// Makes room: drops entries with no usable token and no exchange under way, then, if still
/// full, the ones that expire first.
fn evict(slots: &mut HashMap<String, Slot>, now: Instant) {
    slots.retain(|_, s| s.pending.is_some() || s.current.as_ref().is_some_and(|c| c.usable_until > now));
    if slots.len() > MAX_SUBJECTS {
        let mut by_expiry: Vec<(Instant, String)> = slots
            .iter()
            .filter(|(_, s)| s.pending.is_none())
            .filter_map(|(k, s)| Some((s.current.as_ref()?.usable_until, k.clone())))
            .collect();
        by_expiry.sort();
        let excess = slots.len() - MAX_SUBJECTS;
        for (_, k) in by_expiry.into_iter().take(excess) {
            slots.remove(&k);
        }
    }
}

async fn exchange(http: &reqwest::Client, s: &ExchangeSettings, subject_token: &str) -> Result<Cached, ExchangeError> {
    let fail = |reason: String| ExchangeError { url: s.token_url.to_string(), reason };
    let mut form: Vec<(&str, &str)> =
        vec![("grant_type", GRANT_TYPE), ("subject_token", subject_token), ("subject_token_type", JWT_TOKEN_TYPE)];
    if let Some(a) = &s.audience {
        form.push(("audience", a));
    }
    if let Some(sc) = &s.scope {
        form.push(("scope", sc));
    }
    let sent = Instant::now();
    let response = http
        .post(s.token_url.clone())
        .basic_auth(&s.client_id, Some(&s.client_secret))
        .form(&form)
        .timeout(EXCHANGE_TIMEOUT)
        .send()
        .await
        .map_err(|e| fail(crate::net_error::describe(&s.token_url, e)))?;
    let status = response.status();
    // A token endpoint's answer is small; a huge one is not read whole.
    let body = read_limited(response, 64 * 1024).await.map_err(|e| fail(format!("reading the answer: {e}")))?;
    if !status.is_success() {
        let reason = match serde_json::from_slice::<ErrorAnswer>(&body) {
            Ok(e) => match e.error_description {
                Some(d) => format!("{} ({})", clip(&e.error), clip(&d)),
                None => clip(&e.error),
            },
            Err(_) => format!("HTTP {status}: {}", clip(&String::from_utf8_lossy(&body))),
        };
        return Err(fail(reason));
    }
    let answer: Answer =
        serde_json::from_slice(&body).map_err(|e| fail(format!("the answer is not a token response: {e}")))?;
    if answer.access_token.is_empty() {
        return Err(fail("the answer holds an empty access_token".into()));
    }
    let lifetime = answer.expires_in.map_or(DEFAULT_LIFETIME, Duration::from_secs);
    Ok(Cached { token: answer.access_token.into(), usable_until: sent + lifetime.saturating_sub(EXPIRY_MARGIN) })
}

async fn read_limited(mut response: reqwest::Response, max: usize) -> Result<Vec<u8>, String> {
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await.map_err(|e| e.to_string())? {
        body.extend_from_slice(&chunk);
        if body.len() > max {
            return Err(format!("more than {max} bytes"));
        }
    }
    Ok(body)
}

/// The provider's text, one line and short.
fn clip(s: &str) -> String {
    let one_line: String = s.chars().map(|c| if c.is_control() { ' ' } else { c }).collect();
    crate::audit::bounded(one_line.trim(), MAX_ERROR_TEXT).into_owned()
}

#[cfg(test)]
mod tests;
