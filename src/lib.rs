//! Sentinel: a governed MCP gateway. One chokepoint between MCP clients and MCP servers.

pub mod backend;
pub mod catalog;
pub mod cli;
pub mod config;
pub mod error;
pub mod front;
pub mod gateway;
pub mod jsonrpc;
pub mod naming;
pub mod param_headers;
pub mod protocol;
pub mod session;
pub mod strict_json;
