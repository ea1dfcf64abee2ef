//! `sentinel client-config claude-code|json`: what an MCP client needs to connect to this
//! gateway — the `claude mcp add` commands or the `.mcp.json` snippets, over HTTP and stdio.
//!
//! The stdio variant starts a gateway of its own, which reads the same config: it needs every
//! `${VAR}` the file uses, and many clients (the Python SDK's stdio client, several IDEs) start
//! it with an empty environment. So the stdio entry carries them: as `${VAR}` for the shell to
//! fill in (`claude mcp add`), or as their values from this environment (`.mcp.json`, a file
//! nothing expands).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::{Path, PathBuf};

use serde_json::json;

use crate::config::{self, AuthConfig, Config, Needs};

/// The shell placeholder printed when no `--token` is given.
pub const TOKEN_PLACEHOLDER: &str = "${SENTINEL_TOKEN}";

/// What stands for the port when `listen` ends in `:0` and no daemon is running.
pub const PORT_PLACEHOLDER: &str = "<PORT>";

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
    /// `http://HOST:PORT/mcp`, always on a loopback host (`<PORT>` when it is chosen at start).
    pub url: String,
    /// Whether the port is chosen when the daemon starts (`listen = "...:0"`, none running).
    pub port_chosen_at_start: bool,
    /// The absolute config path for the stdio variant (`None`: the embedded default).
    pub config_path: Option<PathBuf>,
    /// Whether callers need a token.
    pub auth: bool,
    /// The variables the config refers to: the stdio gateway needs each one.
    pub variables: Vec<String>,
    /// The `[[profile]]` to connect to (`/mcp/<profile>`, `stdio --profile`); `None`: all of it.
    pub profile: Option<String>,
}

impl Target {
    /// What the snippets need from `config`: the URL (the running daemon's port if it chose one), the path, auth, the variables.
    pub fn from_config(config: &Config) -> Target {
        let config_path = config.path.as_ref().map(|p| std::path::absolute(p).unwrap_or_else(|_| p.clone()));
        // A daemon started on `:0` wrote the port it got to its pid file.
        let listen = match config.server.listen.port() {
            0 => crate::ops_cli::running_daemon_addr(config.path.as_deref()).unwrap_or(config.server.listen),
            _ => config.server.listen,
        };
        let port_chosen_at_start = listen.port() == 0;
        let mut url = client_url(listen);
        if port_chosen_at_start {
            url = url.replacen(":0/mcp", &format!(":{PORT_PLACEHOLDER}/mcp"), 1);
        }
        Target {
            url,
            port_chosen_at_start,
            config_path,
            auth: !matches!(config.auth, AuthConfig::Disabled),
            variables: config.variables.clone(),
            profile: None,
        }
    }

    /// The same gateway's `[[profile]]` `name`: its URL and stdio arguments, and a server name
    /// of its own in the client (`sentinel-<name>`), so that both can be added side by side.
    pub fn in_profile(mut self, name: &str) -> Target {
        self.url = format!("{}/{name}", self.url);
        self.profile = Some(name.to_string());
        self
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

/// Renders the text `client-config` prints on stdout. `env` gives the values the `.mcp.json`
/// stdio entry carries (the process environment; a test passes its own).
pub fn render(format: Format, target: &Target, token: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> String {
    let mut out = String::new();
    out.push_str(&format!("# Sentinel at {}\n", target.url));
    if target.port_chosen_at_start {
        out.push_str(&format!(
            "# `listen` ends in :0: the port is chosen when `sentinel serve` starts (it prints it, and\n\
             # `sentinel client-config` shows it while the daemon runs). Put it where {PORT_PLACEHOLDER} is.\n"
        ));
    }
    if !target.auth {
        out.push_str("# Authentication is disabled in this config: no token is needed.\n");
    }
    // What the stdio gateway's environment must hold, and what each value is printed as.
    let mut needed: Vec<&str> = Vec::new();
    if target.auth {
        needed.push("SENTINEL_TOKEN");
    }
    needed.extend(target.variables.iter().map(String::as_str).filter(|v| *v != "SENTINEL_TOKEN"));
    let value = |name: &str| -> Option<String> {
        match (name, format) {
            ("SENTINEL_TOKEN", _) if token.is_some() => token.map(str::to_string),
            (_, Format::Json) => env(name),
            (_, Format::ClaudeCode) => None,
        }
    };
    let shown = |name: &str| value(name).unwrap_or_else(|| format!("${{{name}}}"));
    let unset: Vec<&str> = needed.iter().copied().filter(|n| value(n).is_none()).collect();
    if target.auth && token.is_none() && env("SENTINEL_TOKEN").is_none() {
        let c = target.config_path.as_ref().map(|p| format!(" -c {}", shell_word(&p.display().to_string())));
        out.push_str(&format!(
            "# No token given: mint one with `sentinel token{} --sub NAME --role ROLE`, then\n\
             # `export SENTINEL_TOKEN=<token>` and run this again (or pass --token <token>).\n",
            c.unwrap_or_default()
        ));
    }
    let carried = needed.iter().filter(|n| **n != "SENTINEL_TOKEN").copied().collect::<Vec<_>>();
    match format {
        Format::ClaudeCode if !carried.is_empty() => out.push_str(&format!(
            "# The stdio variant passes the config's variables on with -e ({}):\n\
             # your shell fills each ${{NAME}} in when you run the command, so export them first.\n",
            carried.join(", ")
        )),
        Format::Json if !needed.is_empty() && unset.len() < needed.len() => out.push_str(&format!(
            "# The stdio entry carries {} with their values from this shell (a client may\n\
             # start it with an empty environment): the snippet holds secrets, keep its file private.\n",
            needed.iter().filter(|n| !unset.contains(n)).copied().collect::<Vec<_>>().join(", ")
        )),
        _ => {}
    }
    if format == Format::Json && !unset.is_empty() {
        out.push_str(&format!(
            "# Not set here, so left as ${{NAME}} (Claude Code fills that in from its environment; other\n\
             # clients do not): {}.\n",
            unset.join(", ")
        ));
    }
    let mut stdio_args = vec!["stdio".to_string()];
    if let Some(p) = &target.config_path {
        stdio_args.push("-c".into());
        stdio_args.push(p.display().to_string());
    }
    if let Some(p) = &target.profile {
        stdio_args.push("--profile".into());
        stdio_args.push(p.clone());
    }
    let server = match &target.profile {
        Some(p) => format!("sentinel-{p}"),
        None => "sentinel".to_string(),
    };
    let token_text = shown("SENTINEL_TOKEN");
    match format {
        Format::ClaudeCode => {
            out.push_str("\n# Over HTTP (a running `sentinel serve`):\n");
            out.push_str(&format!("claude mcp add --transport http {server} {}", target.url));
            if target.auth {
                out.push_str(&format!(" --header \"Authorization: Bearer {token_text}\""));
            }
            out.push_str(&format!(
                "\n\n# Over stdio (Claude Code starts its own gateway process):\nclaude mcp add {server}"
            ));
            for name in &needed {
                out.push_str(&format!(" -e {name}={}", shown(name)));
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
            if !needed.is_empty() {
                let env: serde_json::Map<String, serde_json::Value> =
                    needed.iter().map(|n| (n.to_string(), json!(shown(n)))).collect();
                stdio["env"] = serde_json::Value::Object(env);
            }
            let pretty = |v: serde_json::Value| serde_json::to_string_pretty(&v).expect("json");
            out.push_str("\n# .mcp.json over HTTP (a running `sentinel serve`):\n");
            out.push_str(&pretty(json!({ "mcpServers": { server.as_str(): http } })));
            out.push_str("\n\n# .mcp.json over stdio (the client starts its own gateway process):\n");
            out.push_str(&pretty(json!({ "mcpServers": { server.as_str(): stdio } })));
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

/// Loads the config for `client-config`: only the listen address, whether authentication is on,
/// the file's path and the variables it names matter here, so no variable needs to be set.
fn load(path: Option<&Path>) -> Result<Config, config::ConfigError> {
    let path = config::resolve_path(path);
    Config::load_with(path.as_deref(), Needs::Sections(&[]))
}

/// The command: prints the snippets for `format` and returns the exit code.
pub fn run(
    format: Format,
    path: Option<PathBuf>,
    token: Option<String>,
    profile: Option<String>,
) -> std::process::ExitCode {
    let config = match load(path.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}\nsentinel: the config is invalid; `sentinel check` lists every problem");
            return std::process::ExitCode::FAILURE;
        }
    };
    let mut target = Target::from_config(&config);
    if let Some(p) = &profile {
        if !config.profiles.iter().any(|q| &q.name == p) {
            eprintln!("sentinel: --profile {p}: the config has no such [[profile]]");
            return std::process::ExitCode::FAILURE;
        }
        target = target.in_profile(p);
    }
    let env = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty());
    print!("{}", render(format, &target, token.as_deref(), &env));
    std::process::ExitCode::SUCCESS
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(auth: bool, variables: &[&str]) -> Target {
        Target {
            url: "http://127.0.0.1:1/mcp".into(),
            port_chosen_at_start: false,
            config_path: Some("/etc/s.toml".into()),
            auth,
            variables: variables.iter().map(std::string::ToString::to_string).collect(),
            profile: None,
        }
    }

    #[test]
    fn a_profile_gets_its_path_its_stdio_flag_and_a_name_of_its_own() {
        let t = target(true, &[]).in_profile("research");
        let out = render(Format::ClaudeCode, &t, Some("tok"), &|_| None);
        assert!(
            out.contains("claude mcp add --transport http sentinel-research http://127.0.0.1:1/mcp/research"),
            "{out}"
        );
        assert!(out.contains("-- sentinel stdio -c /etc/s.toml --profile research"), "{out}");
        let out = render(Format::Json, &t, Some("tok"), &|_| None);
        assert!(out.contains(r#""sentinel-research""#), "{out}");
    }

    #[test]
    fn unspecified_listen_becomes_loopback() {
        assert_eq!(client_url("0.0.0.0:8800".parse().unwrap()), "http://127.0.0.1:8800/mcp");
        assert_eq!(client_url("[::]:9000".parse().unwrap()), "http://[::1]:9000/mcp");
        assert_eq!(client_url("127.0.0.1:8800".parse().unwrap()), "http://127.0.0.1:8800/mcp");
    }

    #[test]
    fn no_header_without_auth() {
        let out = render(Format::ClaudeCode, &target(false, &[]), None, &|_| None);
        assert!(!out.contains("Authorization"), "{out}");
        assert!(!out.contains("SENTINEL_TOKEN="), "{out}");
    }

    #[test]
    fn the_stdio_entry_carries_every_variable() {
        let t = target(true, &["SENTINEL_JWT_SECRET", "N8N_TOKEN"]);
        let out = render(Format::ClaudeCode, &t, None, &|_| Some("never printed".into()));
        assert!(
            out.contains(
                "claude mcp add sentinel -e SENTINEL_TOKEN=${SENTINEL_TOKEN} -e SENTINEL_JWT_SECRET=${SENTINEL_JWT_SECRET} -e N8N_TOKEN=${N8N_TOKEN} -- sentinel stdio -c /etc/s.toml"
            ),
            "{out}"
        );
        assert!(!out.contains("never printed"), "claude-code output leaves values to the shell: {out}");
        let env = |k: &str| (k == "SENTINEL_JWT_SECRET").then(|| "s3cret".to_string());
        let out = render(Format::Json, &t, Some("tok"), &env);
        let stdio: serde_json::Value = serde_json::from_str(&out[out.rfind("\n{").unwrap()..]).unwrap();
        assert_eq!(
            stdio["mcpServers"]["sentinel"]["env"],
            json!({"SENTINEL_TOKEN": "tok", "SENTINEL_JWT_SECRET": "s3cret", "N8N_TOKEN": "${N8N_TOKEN}"})
        );
        assert!(out.contains("Not set here") && out.contains("N8N_TOKEN."), "{out}");
        assert!(out.contains("keep its file private"), "{out}");
    }

    #[test]
    fn paths_with_spaces_are_quoted() {
        assert_eq!(shell_word("/a b/c"), "'/a b/c'");
        assert_eq!(shell_word("/etc/sentinel.toml"), "/etc/sentinel.toml");
    }
}
