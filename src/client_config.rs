//! `sentinel client-config claude-code|json`: what an MCP client needs to connect to this
//! gateway — the `claude mcp add` commands or the `.mcp.json` snippets, over HTTP and stdio.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::{self, AuthConfig, Config};

/// The shell placeholder printed when no `--token` is given.
pub const TOKEN_PLACEHOLDER: &str = "${SENTINEL_TOKEN}";

/// Which client format to print.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Format {
    /// `claude mcp add ...` commands for Claude Code
    ClaudeCode,
    /// `.mcp.json` snippets (Claude Code project scope, and other clients using that shape)
    Json,
}

/// What the output is made from, taken from the config.
#[derive(Debug, Clone)]
pub struct Target {
    /// `http://HOST:PORT/mcp`, always on a loopback host.
    pub url: String,
    /// The absolute config path for the stdio variant (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// Whether callers need a token.
    pub auth: bool,
}

impl Target {
    pub fn from_config(config: &Config) -> Target {
        let config_path = config.path.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        Target {
            url: client_url(config.server.listen),
            config_path,
            auth: !matches!(config.auth, AuthConfig::Disabled),
        }
    }
}

/// The URL a client on this machine uses: an unspecified listen address (`0.0.0.0`, `::`)
/// becomes the matching loopback address.
pub fn client_url(listen: SocketAddr) -> String {
    let ip = match listen.ip() {
        IpAddr::V4(v) if v.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(v) if v.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    format!("http://{}/mcp", SocketAddr::new(ip, listen.port()))
}

/// Renders the text `client-config` prints on stdout.
pub fn render(format: Format, target: &Target, token: Option<&str>) -> String {
    let token_text = token.unwrap_or(TOKEN_PLACEHOLDER);
    let mut out = String::new();
    out.push_str(&format!("# Sentinel at {}\n", target.url));
    if target.auth && token.is_none() {
        let c = target.config_path.as_ref().map(|p| format!(" -c {}", shell_word(&p.display().to_string())));
        out.push_str(&format!(
            "# {TOKEN_PLACEHOLDER} is a placeholder: mint a token with `sentinel token{} --sub NAME --role ROLE`,\n# then `export SENTINEL_TOKEN=<token>` (or run again with --token <token>).\n",
            c.unwrap_or_default()
        ));
    }
    if !target.auth {
        out.push_str("# Authentication is disabled in this config: no token is needed.\n");
    }
    let mut stdio_args = vec!["stdio".to_string()];
    if let Some(p) = &target.config_path {
        stdio_args.push("-c".into());
        stdio_args.push(p.display().to_string());
    }
    match format {
        Format::ClaudeCode => {
            out.push_str("\n# Over HTTP (a running `sentinel serve`):\n");
            out.push_str(&format!("claude mcp add --transport http sentinel {}", target.url));
            if target.auth {
                out.push_str(&format!(" --header \"Authorization: Bearer {token_text}\""));
            }
            out.push_str("\n\n# Over stdio (Claude Code starts its own gateway process):\nclaude mcp add sentinel");
            if target.auth {
                out.push_str(&format!(" -e SENTINEL_TOKEN={token_text}"));
            }
            out.push_str(" -- sentinel");
            for a in &stdio_args {
                out.push(' ');
                out.push_str(&shell_word(a));
            }
            out.push('\n');
        }
        Format::Json => {
            let mut http = json!({ "type": "http", "url": target.url });
            if target.auth {
                http["headers"] = json!({ "Authorization": format!("Bearer {token_text}") });
            }
            let mut stdio = json!({ "command": "sentinel", "args": stdio_args });
            if target.auth {
                stdio["env"] = json!({ "SENTINEL_TOKEN": token_text });
            }
            let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("json");
            out.push_str("\n# .mcp.json over HTTP (a running `sentinel serve`):\n");
            out.push_str(&pretty(json!({ "mcpServers": { "sentinel": http } })));
            out.push_str("\n\n# .mcp.json over stdio (the client starts its own gateway process):\n");
            out.push_str(&pretty(json!({ "mcpServers": { "sentinel": stdio } })));
            out.push('\n');
        }
    }
    out
}

/// Quotes a word for a POSIX shell when it needs it.
fn shell_word(s: &str) -> String {
    if !s.is_empty() && s.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c)) {
        s.to_string()
    } else {
        format!("'{}'", s.replace('\'', "'\\''"))
    }
}

/// Loads the config for `client-config`. Only the listen address, whether authentication is
/// on and the file's path matter here, so `${VARS}` that are not set (the JWT secret, the
/// database password) are filled with a placeholder instead of failing.
fn load(path: Option<&Path>) -> Result<Config, String> {
    let Some(path) = config::resolve_path(path) else {
        return Config::load(None).map_err(|e| e.to_string());
    };
    let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let env = |k: &str| {
        Some(std::env::var(k).unwrap_or_else(|_| "client-config-placeholder-0123456789abcdef0123456789abcdef".into()))
    };
    Config::parse(&path.display().to_string(), &text, Some(&path), &env).map_err(|e| e.to_string())
}

/// The command: prints the snippets for `format` and returns the exit code.
pub fn run(format: Format, path: Option<PathBuf>, token: Option<String>) -> std::process::ExitCode {
    let config = match load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nsentinel: the config is invalid; `sentinel check` lists every problem");
            return std::process::ExitCode::FAILURE;
        }
    };
    if config.path.is_none() {
        eprintln!(
            "sentinel: no config file: the embedded default makes a new secret at each start; use the token `sentinel serve` prints"
        );
    }
    print!("{}", render(format, &Target::from_config(&config), token.as_deref()));
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_listen_becomes_loopback() {
        assert_eq!(client_url("0.0.0.0:8800".parse().unwrap()), "http://127.0.0.1:8800/mcp");
        assert_eq!(client_url("[::]:9000".parse().unwrap()), "http://[::1]:9000/mcp");
        assert_eq!(client_url("127.0.0.1:8800".parse().unwrap()), "http://127.0.0.1:8800/mcp");
    }

    #[test]
    fn no_header_without_auth() {
        let t = Target { url: "http://127.0.0.1:1/mcp".into(), config_path: None, auth: false };
        let out = render(Format::ClaudeCode, &t, None);
        assert!(!out.contains("Authorization"), "{out}");
        assert!(!out.contains("SENTINEL_TOKEN="), "{out}");
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        assert_eq!(shell_word("/a b/c"), "'/a b/c'");
        assert_eq!(shell_word("/etc/sentinel.toml"), "/etc/sentinel.toml");
    }
}
