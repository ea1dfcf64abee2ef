//! The two front doors clients come in by: Streamable HTTP at `/mcp`, and stdio. Both turn
//! bytes into messages, settle which protocol generation a request speaks, and call
//! `Gateway::handle`.

pub mod http;
pub mod stdio;

use crate::error::Refusal;
use crate::jsonrpc::Message;
use crate::protocol::{self, Params, StatelessMeta};

/// The stateless `_meta` of a request, as sent: `Ok(None)` when it carries no stateless
/// protocol version (a session-based request). Not yet validated: see `check_modern`.
pub fn stateless_meta_raw(msg: &Message) -> Result<Option<StatelessMeta>, Refusal> {
    /// Only `_meta`, borrowed: every request passes here, and the pipeline parses the whole
    /// of `params` strictly later. A duplicate `_meta` fails here as it does there.
    #[derive(serde::Deserialize)]
    struct MetaOnly<'a> {
        #[serde(rename = "_meta", borrow)]
        meta: Option<&'a serde_json::value::RawValue>,
    }
    let Some(params) = msg.params.as_deref() else { return Ok(None) };
    let Ok(p) = serde_json::from_str::<MetaOnly>(params.get()) else { return Ok(None) };
    let Some(raw) = p.meta else { return Ok(None) };
    let meta = Params::meta_of(raw).map_err(|e| Refusal::MalformedStateless(e.to_string()))?;
    StatelessMeta::from_meta(&meta).map_err(|e| Refusal::MalformedStateless(e.to_string()))
}

/// The checks every stateless request passes, in the spec's order: required `_meta` fields
/// (-32602), then a version the gateway speaks (-32022).
pub fn check_stateless(m: &StatelessMeta) -> Result<(), Refusal> {
    if !m.capabilities.is_object() {
        return Err(Refusal::MalformedStateless(format!(
            "a {} request must carry `_meta.{}` (an object)",
            protocol::STATELESS,
            protocol::META_CLIENT_CAPABILITIES
        )));
    }
    if m.version != protocol::STATELESS {
        return Err(Refusal::UnsupportedVersion(m.version.clone()));
    }
    Ok(())
}

/// Both steps, for transports without headers (stdio).
pub fn stateless_meta(msg: &Message) -> Result<Option<StatelessMeta>, Refusal> {
    let m = stateless_meta_raw(msg)?;
    if let Some(m) = &m {
        check_stateless(m)?;
    }
    Ok(m)
}
