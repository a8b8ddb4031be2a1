//! Configuration: the YAML file of SPEC section 2, loaded and validated into typed values.
//!
//! Pipeline: file text → [`raw::RawConfig`] (serde, unknown keys refused, mirrors the YAML 1:1)
//! → validation with the admin console's rules (each finding names file, line, entry and rule)
//! → [`Config`], where nothing is a string that should be a type.
//!
//! This module does no network I/O; it reads the config file and, for `project:`, the mini
//! program's `project.config.json`, `project.private.config.json` and `app.json`/`game.json`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;

/// Public for the fuzz harness (fuzz/harness.rs) only.
#[doc(hidden)]
pub mod project;
pub mod raw;
mod validate;

pub use validate::{normalize_host, parse_entry, ListKind, FORBIDDEN_HOST};

/// The default config, compiled in: used when `config/wxsandbox.yaml` is missing.
pub const DEFAULT_CONFIG_YAML: &str = include_str!("../../config/wxsandbox.yaml");
/// Where `run` looks for the config when no `-c` is given.
pub const DEFAULT_CONFIG_PATH: &str = "config/wxsandbox.yaml";

/// A validated configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where it came from: a file path, or `<built-in>`; used in messages.
    pub source: String,
    pub proxy: ProxyConfig,
    pub control: ControlConfig,
    pub ca: CaConfig,
    pub upstream: UpstreamConfig,
    pub sandbox: SandboxConfig,
    pub apps: Vec<AppConfig>,
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// Connections from outside these networks are closed at accept.
    pub clients: Vec<IpNet>,
}

#[derive(Debug, Clone)]
pub struct ControlConfig {
    pub listen: SocketAddr,
    /// Bearer token required for mutations when set.
    pub token: Option<String>,
}

#[derive(Debug, Clone)]
pub struct CaConfig {
    pub dir: PathBuf,
}

#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Extra PEM CA files trusted for upstream servers (system roots are always trusted).
    pub trust: Vec<PathBuf>,
    /// Host (lower-case, any port) → where to send it instead.
    pub map: Vec<(String, MapTarget)>,
    /// The upstream TLS audit of SPEC section 5.
    pub strict_tls: bool,
}

/// Where `upstream.map` sends a host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MapTarget {
    /// `http://backend:8080`: plain HTTP to that address (TLS dropped towards upstream).
    PlainHttp { host: String, port: u16 },
    /// `backend:8443`: TLS kept, SNI and Host stay the original host.
    Tls { host: String, port: u16 },
}

#[derive(Debug, Clone)]
pub struct SandboxConfig {
    pub skip_domain_check: bool,
    /// Prefix length of the LAN rule's subnet around the client's IPv4 address.
    pub lan_prefix: u8,
}

/// One mini program.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `wx` + 16 hex digits.
    pub appid: String,
    /// Referer segment: `devtools`, `0`, or a release number.
    pub version: String,
    pub project: Option<PathBuf>,
    /// Devices that run this app (for phones that can't authenticate to a proxy).
    pub clients: Vec<IpNet>,
    pub network_timeout: NetworkTimeout,
    pub domains: DomainLists,
    pub business_domains: Vec<String>,
    pub limits: Limits,
}

/// `networkTimeout` per API; `None` means the platform default (60 s).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkTimeout {
    pub request: Option<Duration>,
    pub connect_socket: Option<Duration>,
    pub upload_file: Option<Duration>,
    pub download_file: Option<Duration>,
}

/// The admin console's server domain lists.
#[derive(Debug, Clone, Default)]
pub struct DomainLists {
    pub request: Vec<Origin>,
    pub socket: Vec<Origin>,
    pub upload_file: Vec<Origin>,
    pub download_file: Vec<Origin>,
    pub tcp: Vec<Origin>,
    pub udp: Vec<Origin>,
    /// Host names only (no scheme).
    pub dns_prefetch: Vec<String>,
}

/// A list entry: scheme, host and optional port; path-less.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Origin {
    pub scheme: Scheme,
    /// ASCII lower-case (IDN as punycode), no trailing dot.
    pub host: String,
    pub port: Option<u16>,
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}://{}", self.scheme.as_str(), self.host)?;
        if let Some(port) = self.port {
            write!(f, ":{port}")?;
        }
        Ok(())
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scheme {
    Http,
    Https,
    Ws,
    Wss,
    Tcp,
    Udp,
}

impl Scheme {
    pub fn as_str(self) -> &'static str {
        match self {
            Scheme::Http => "http",
            Scheme::Https => "https",
            Scheme::Ws => "ws",
            Scheme::Wss => "wss",
            Scheme::Tcp => "tcp",
            Scheme::Udp => "udp",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Limits {
    /// Shared by request, uploadFile and downloadFile (10).
    pub requests: usize,
    /// WebSocket tasks (5).
    pub sockets: usize,
    pub overflow: Overflow,
    pub background_grace: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: 10,
            sockets: 5,
            overflow: Overflow::Queue,
            background_grace: Duration::from_millis(5000),
        }
    }
}

/// What the 11th concurrent HTTP call does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overflow {
    Queue,
    Fail,
}

/// One problem found in a config, as the admin console would name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The config file (or `<built-in>`).
    pub file: String,
    /// 1-based line of the offending entry, when it can be located.
    pub line: Option<usize>,
    /// The entry as written (e.g. `http://api.example.com`), or the key.
    pub entry: String,
    /// Short rule id, e.g. `https-only`, `no-ip`, `unknown-key`, `appid-format`.
    pub rule: &'static str,
    /// What is wrong and how to fix it.
    pub message: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.line {
            Some(line) => write!(f, "{}:{}: ", self.file, line)?,
            None => write!(f, "{}: ", self.file)?,
        }
        write!(f, "[{}] {}: {}", self.rule, self.entry, self.message)
    }
}

/// A config that can't be used: every finding, not just the first.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{}", display_findings(.findings))]
pub struct ConfigError {
    pub findings: Vec<Finding>,
}

fn display_findings(findings: &[Finding]) -> String {
    findings
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join("\n")
}

impl Config {
    /// Read and validate a config file.
    ///
    /// # Errors
    /// Every finding of the validation, each with file and line.
    pub fn load(path: &std::path::Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            findings: vec![Finding {
                file: file.clone(),
                line: None,
                entry: file.clone(),
                rule: "io",
                message: e.to_string(),
            }],
        })?;
        Self::parse(&text, &file, std::path::Path::new("."))
    }

    /// `config/wxsandbox.yaml` when it exists, else the same file compiled in.
    ///
    /// # Errors
    /// Every finding of the validation.
    pub fn load_default() -> Result<Config, ConfigError> {
        let path = std::path::Path::new(DEFAULT_CONFIG_PATH);
        if path.exists() {
            Self::load(path)
        } else {
            Self::from_yaml_str(DEFAULT_CONFIG_YAML, "<built-in>")
        }
    }

    /// Validate YAML text; `source` names it in findings.
    ///
    /// # Errors
    /// Every finding of the validation.
    pub fn from_yaml_str(text: &str, source: &str) -> Result<Config, ConfigError> {
        Self::parse(text, source, std::path::Path::new("."))
    }

    /// Paths in a config (`ca.dir`, `upstream.trust`, `project:`) are relative to the working
    /// directory, as on the command line.
    fn parse(text: &str, source: &str, base: &std::path::Path) -> Result<Config, ConfigError> {
        let raw = raw::parse(text).map_err(|(message, line)| {
            let rule = if message.contains("unknown field") {
                "unknown-key"
            } else {
                "syntax"
            };
            let entry = message.split('`').nth(1).unwrap_or("").to_owned();
            ConfigError {
                findings: vec![Finding {
                    file: source.to_owned(),
                    line,
                    entry,
                    rule,
                    message,
                }],
            }
        })?;
        validate::validate(raw, text, source, base).map_err(|findings| ConfigError { findings })
    }
}
