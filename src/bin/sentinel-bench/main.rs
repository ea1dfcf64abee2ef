//! `sentinel-bench`: Sentinel measured against the direct call, in one paired run.
//!
//! Starts `mcp-mock` and `sentinel` (found beside this binary), drives N concurrent MCP
//! clients against the backend directly and through the gateway in alternating rounds, checks
//! every answer, and prints throughput, latency percentiles, errors, the gateway's peak RSS
//! and the Sentinel/direct ratios. See docs/performance.md.

mod args;
mod gateway_config;
mod http_client;
mod load;
mod mcp;
mod otlp_sink;
mod pg;
mod process;
mod report;
mod rss;
mod run;
mod scenario;
mod setup;
mod startup;
mod stdio_client;

use clap::Parser;

fn main() -> std::process::ExitCode {
    run::main(args::Args::parse())
}
