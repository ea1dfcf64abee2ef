//! The two front doors clients come in by: Streamable HTTP at `/mcp`, and stdio. Both turn
//! bytes into messages, settle which protocol generation a request speaks, and call
//! `Gateway::handle`.

pub mod http;
pub mod stdio;

use crate::error::Refusal;
use crate::jsonrpc::Message;
use crate::protocol::{self, ModernMeta, Params};

/// The stateless `_meta` of a request, validated: `Ok(None)` when the request carries no
/// modern protocol version (a session-based request).
pub fn modern_meta(msg: &Message) -> Result<Option<ModernMeta>, Refusal> {
    let Some(params) = msg.params.as_deref() else { return Ok(None) };
    let Ok(p) = Params::parse(Some(params)) else { return Ok(None) };
    let meta = match p.meta() {
        Ok(m) => m,
        Err(e) => return Err(Refusal::MalformedModern(e)),
    };
    let Some(m) = ModernMeta::from_meta(&meta).map_err(Refusal::MalformedModern)? else { return Ok(None) };
    if m.version != protocol::MODERN {
        return Err(Refusal::UnsupportedVersion(m.version));
    }
    if !m.capabilities.is_object() {
        return Err(Refusal::MalformedModern(format!(
            "a {} request must carry `_meta.{}` (an object)",
            protocol::MODERN,
            protocol::META_CLIENT_CAPABILITIES
        )));
    }
    Ok(Some(m))
}
