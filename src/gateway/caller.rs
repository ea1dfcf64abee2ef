//! Who is calling and what the front door knows about one request: the caller as
//! authentication established it, and the context a request carries through the pipeline.

use std::sync::Arc;

use serde_json::value::RawValue;
use tokio::sync::mpsc;

use crate::error::Refusal;
use crate::protocol::StatelessMeta;
use crate::session::Session;

/// Who is calling, as the front door established it.
#[derive(Debug, Clone)]
pub enum Caller {
    /// Authentication is disabled (loopback only).
    Anonymous,
    /// A caller whose token was accepted.
    User(crate::auth::Identity),
    /// The credentials were refused: every request is answered -32010 (HTTP 401).
    Refused(crate::auth::AuthError),
}

/// The client name of every caller when authentication is disabled: in audit records, the log
/// and the rate limits (where `[rate_limit] clients` can name it).
pub const ANONYMOUS: &str = "anonymous";

impl Caller {
    /// The name audit records and rate limits know this caller by: the token's `sub`, or
    /// [`ANONYMOUS`] without authentication; none for a refused caller (it proved no name).
    pub fn client(&self) -> Option<&str> {
        match self {
            Caller::Anonymous => Some(ANONYMOUS),
            _ => self.subject(),
        }
    }

    /// The token's `sub` (sessions belong to it).
    pub fn subject(&self) -> Option<&str> {
        match self {
            Caller::User(i) => Some(&i.subject),
            _ => None,
        }
    }

    /// The token's roles (none for an anonymous or refused caller).
    pub fn roles(&self) -> &[String] {
        match self {
            Caller::User(i) => &i.roles,
            _ => &[],
        }
    }
}

/// What the front door knows about one request beyond the message itself.
#[derive(Clone, Copy)]
pub struct Ctx<'a> {
    /// Who is calling.
    pub caller: &'a Caller,
    /// The validated stateless `_meta`, for 2026-07-28 requests.
    pub stateless: Option<&'a StatelessMeta>,
    /// This request's own stream (SSE response, or stdout) for its notifications and
    /// server-to-client requests; `None` when the client asked for a plain JSON answer.
    pub out: Option<&'a mpsc::UnboundedSender<String>>,
    /// The client's address (HTTP), for throttling what refusals cost; `None` on stdio.
    pub peer: Option<std::net::IpAddr>,
    /// Over stdio, the trace context of the request's `_meta` (read only with telemetry on);
    /// over HTTP the front door decided tracing before the request was read.
    pub trace_parent: Option<&'a crate::telemetry::TraceParent>,
    /// The `[[profile]]` the request came in by (`/mcp/<profile>`, `sentinel stdio
    /// --profile`); `None` at `/mcp`. Checked to exist by the front door.
    pub profile: Option<&'a str>,
}

/// One request on its way through the pipeline: the front door's context, the session it
/// came in (a throwaway one for a stateless request) and its id, passed whole instead of as
/// a list of arguments.
#[derive(Clone, Copy)]
pub(crate) struct RequestCtx<'a> {
    pub session: &'a Arc<Session>,
    pub id: &'a RawValue,
    pub ctx: Ctx<'a>,
}

impl RequestCtx<'_> {
    /// The generation the request speaks: stateless when it carries the 2026-07-28 `_meta`,
    /// else its session's (none before `initialize`).
    pub fn generation(&self) -> Option<crate::protocol::Generation> {
        match self.ctx.stateless {
            Some(_) => Some(crate::protocol::Generation::Stateless),
            None => self.session.generation(),
        }
    }
}

/// The caller as the pipeline sees it.
impl Caller {
    /// What the caller may reach (stage 1): refused callers and expired tokens stop here.
    pub fn access(&self) -> Result<crate::policy::Access, Refusal> {
        match self {
            Caller::Anonymous => Ok(crate::policy::Access::unrestricted()),
            Caller::User(i) => {
                // A token that expires during a long session stops working when it does, by the
                // same check (and leeway) that accepted it.
                i.check_time_now()
                    .map_err(|e| Refusal::Unauthenticated { reason: e.reason(), message: e.to_string() })?;
                Ok(crate::policy::Access::roles(i.roles.clone()))
            }
            Caller::Refused(e) => Err(Refusal::Unauthenticated { reason: e.reason(), message: e.to_string() }),
        }
    }
}
