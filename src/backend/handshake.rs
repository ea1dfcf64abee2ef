//! Learning a backend's generation: probe with `server/discover` (stateless 2026-07-28),
//! fall back to the `initialize` handshake for session-based servers, as the spec's
//! backward-compatibility rules describe.

use serde_json::Value;

use super::{BackendError, CallOpts, Conn, HandshakeError, Reply};
use crate::config::BackendConfig;
use crate::jsonrpc::code;
use crate::method::Method;
use crate::protocol::{self, Generation};

pub struct Handshake {
    pub generation: Generation,
    pub capabilities: Value,
}

fn stateless_meta() -> Value {
    serde_json::json!({
        protocol::META_PROTOCOL_VERSION: protocol::STATELESS,
        protocol::META_CLIENT_CAPABILITIES: {},
        protocol::META_CLIENT_INFO: protocol::server_info(),
    })
}

/// What the gateway sends a session-based backend in `initialize`.
pub(super) fn initialize_params() -> String {
    serde_json::json!({
        "protocolVersion": protocol::SESSION_BASED[0],
        "capabilities": super::gateway_client_capabilities(),
        "clientInfo": protocol::server_info(),
    })
    .to_string()
}

pub(super) async fn handshake(conn: &Conn, config: &BackendConfig) -> Result<Handshake, HandshakeError> {
    if config.generation == crate::config::BackendGeneration::SessionBased {
        return initialize(conn, config).await;
    }
    let params = serde_json::json!({ "_meta": stateless_meta() }).to_string();
    let probe = tokio::time::timeout(
        config.probe_timeout,
        conn.request(Method::Discover.as_str(), params, &CallOpts::default()),
    )
    .await;
    match probe {
        Ok(Ok(Reply::Streamed(_))) => unreachable!("the probe is not asked for as a stream"),
        Ok(Ok(Reply::Result(r))) => {
            let v: Value = serde_json::from_str(r.get()).unwrap_or_default();
            let speaks_stateless =
                v["supportedVersions"].as_array().is_some_and(|a| a.iter().any(|x| x == protocol::STATELESS));
            if speaks_stateless {
                return Ok(Handshake { generation: Generation::Stateless, capabilities: v["capabilities"].clone() });
            }
            tracing::info!(backend = %config.name, "server/discover lists no version Sentinel speaks statelessly; trying initialize");
        }
        Ok(Ok(Reply::Error(e))) => {
            let v: Value = serde_json::from_str(e.get()).unwrap_or_default();
            if v["code"] == code::UNSUPPORTED_PROTOCOL_VERSION {
                tracing::info!(backend = %config.name, supported = %v["data"]["supported"], "backend is stateless but not 2026-07-28; trying initialize");
            }
        }
        // An HTTP server that answers the probe with a bare 4xx is a session-based one; one
        // that cannot be reached is nothing yet, so report it rather than fall back.
        Ok(Err(BackendError::Unreachable(why))) => {
            return Err(HandshakeError::ProbeUnreachable { backend: config.name.clone(), why });
        }
        Ok(Err(BackendError::Unavailable(why))) => {
            tracing::info!(backend = %config.name, "server/discover failed ({why}); trying initialize");
        }
        Ok(Err(BackendError::Timeout)) | Err(_) => {
            tracing::info!(backend = %config.name, "no answer to server/discover in {:?}; trying initialize", config.probe_timeout);
        }
    }

    if config.generation == crate::config::BackendGeneration::Stateless {
        return Err(HandshakeError::NotStateless { backend: config.name.clone() });
    }
    initialize(conn, config).await
}

/// The session-based handshake alone: `initialize`, then `notifications/initialized`.
pub(super) async fn initialize(conn: &Conn, config: &BackendConfig) -> Result<Handshake, HandshakeError> {
    let init = tokio::time::timeout(
        super::HANDSHAKE_TIMEOUT,
        conn.request(Method::Initialize.as_str(), initialize_params(), &CallOpts::default()),
    )
    .await
    .map_err(|_| HandshakeError::InitializeTimeout { backend: config.name.clone(), timeout: super::HANDSHAKE_TIMEOUT })?
    .map_err(|cause| HandshakeError::InitializeFailed { backend: config.name.clone(), cause })?;
    let result = match init {
        Reply::Result(r) => r,
        Reply::Error(e) => {
            return Err(HandshakeError::Refused { backend: config.name.clone(), error: e.get().to_string() });
        }
        Reply::Streamed(_) => unreachable!("initialize is not asked for as a stream"),
    };
    let v: Value = serde_json::from_str(result.get()).map_err(HandshakeError::BadAnswer)?;
    let version = v["protocolVersion"].as_str().unwrap_or_default();
    let Some(version) = protocol::known_session_based(version) else {
        return Err(HandshakeError::UnknownVersion { backend: config.name.clone(), version: version.to_string() });
    };
    conn.notify(crate::method::Notification::Initialized.as_str(), "{}".into()).await;
    Ok(Handshake { generation: Generation::SessionBased(version), capabilities: v["capabilities"].clone() })
}
