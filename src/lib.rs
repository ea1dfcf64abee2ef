//! Sentinel: a governed MCP gateway. One chokepoint between MCP clients and MCP servers.

pub mod alerts;
pub mod audit;
pub mod auth;
pub mod backend;
pub mod catalog;
pub mod cli;
pub mod client_config;
pub mod config;
pub mod credentials;
pub mod error;
pub mod front;
#[doc(hidden)]
pub mod fuzz;
pub mod gateway;
pub mod heap;
pub mod jsonrpc;
pub mod kill_switch;
pub mod line_codec;
pub mod line_writer;
pub mod log;
pub mod method;
pub mod metrics;
pub mod naming;
pub mod net_error;
pub mod ops_cli;
pub mod param_headers;
pub mod policy;
pub mod protocol;
pub mod rate_limit;
pub mod replica;
pub mod schema;
pub mod session;
pub mod std_streams;
pub mod strict_json;
pub mod telemetry;
pub mod uri;
