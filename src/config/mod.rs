//! Configuration: the YAML file of SPEC section 2, loaded and validated into typed values.
//!
//! Pipeline: file text → [`raw::RawConfig`] (serde, unknown keys refused, mirrors the YAML 1:1)
//! → validation with the admin console's rules (each finding names file, line, entry and rule)
//! → [`Config`], where nothing is a string that should be a type.
//!
//! This module does no network I/O; it reads the config file and, for `project:`, the mini
//! program's `project.config.json`, `project.private.config.json` and `app.json`/`game.json`.
//! Every one of those reads is bounded (`read_bounded`): regular files only (a FIFO is never
//! opened), at most [`MAX_FILE_BYTES`], and nesting deeper than [`MAX_DEPTH`] is refused before
//! serde sees the text.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::policy::network::{self, Profile};

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

/// Largest file the config loader reads: the config itself and every project file. A full
/// config (a few apps, 200 entries a list) is tens of KiB.
pub const MAX_FILE_BYTES: u64 = 4 * 1024 * 1024;
/// [`MAX_FILE_BYTES`] as messages name it.
pub const MAX_FILE_TEXT: &str = "4 MiB";
/// Deepest nesting of sequences and mappings (block or flow, YAML or JSON) the loader accepts.
/// The deepest config path is 4 levels (`apps[0].domains.request[0]`), a project's `app.json`
/// rarely more than 5.
pub const MAX_DEPTH: usize = 32;

/// Rules of the findings that say the config file itself could not be read.
const UNREADABLE_RULES: [&str; 3] = ["io", "not-a-file", "too-large"];

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
    pub network: NetworkConfig,
    pub apps: Vec<AppConfig>,
}

/// `network:`: the profile instances start with, the loss seed, and custom profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct NetworkConfig {
    /// A preset or a custom profile name (`online` unless set).
    pub default: String,
    /// Seeds the loss rolls (`null`: from the clock at start).
    pub seed: Option<u64>,
    /// Custom profiles by name; the presets are not listed here.
    pub profiles: std::collections::BTreeMap<String, Profile>,
}

impl Default for NetworkConfig {
    fn default() -> Self {
        NetworkConfig {
            default: network::ONLINE.to_owned(),
            seed: None,
            profiles: std::collections::BTreeMap::new(),
        }
    }
}

impl NetworkConfig {
    /// A profile by name: a custom one, else a preset.
    pub fn profile(&self, name: &str) -> Option<Profile> {
        self.profiles
            .get(name)
            .copied()
            .or_else(|| network::preset(name))
    }

    /// Every profile name: the presets, then the custom ones.
    pub fn names(&self) -> Vec<String> {
        network::PRESETS
            .iter()
            .map(|p| (*p).to_owned())
            .chain(self.profiles.keys().cloned())
            .collect()
    }
}

#[derive(Debug, Clone)]
pub struct ProxyConfig {
    pub listen: SocketAddr,
    /// Connections from outside these networks are closed at accept.
    pub clients: Vec<IpNet>,
    /// A client connection with no call in flight is closed after this long.
    pub idle_timeout: Duration,
    /// Time for a TLS handshake, the first request and every request head.
    pub header_timeout: Duration,
    /// Client connections open at once; the excess is refused at accept.
    pub max_connections: usize,
}

/// Default of `proxy.idle_timeout_ms` (as browsers and nginx).
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Default of `proxy.header_timeout_ms`.
pub const DEFAULT_HEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// Default of `proxy.max_connections` (lowered at start to fit the descriptor limit).
pub const DEFAULT_MAX_CONNECTIONS: usize = 4096;

/// How a refused call ends (SPEC section 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RefusalStyle {
    /// `answer` when the call carries any `X-Wxsandbox-*` header, `fail` otherwise.
    #[default]
    Auto,
    /// The call fails at the transport, as on the platform.
    Fail,
    /// An HTTP answer with the refusal's status, headers and JSON body.
    Answer,
}

impl RefusalStyle {
    pub fn parse(text: &str) -> Option<RefusalStyle> {
        match text.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(RefusalStyle::Auto),
            "fail" => Some(RefusalStyle::Fail),
            "answer" => Some(RefusalStyle::Answer),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            RefusalStyle::Auto => "auto",
            RefusalStyle::Fail => "fail",
            RefusalStyle::Answer => "answer",
        }
    }
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

#[derive(Debug, Clone, PartialEq, Eq)]
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
    /// How refused calls end, unless the app or the call says otherwise.
    pub refusal: RefusalStyle,
}

/// One mini program.
#[derive(Debug, Clone)]
pub struct AppConfig {
    /// `wx` + 16 hex digits.
    pub appid: String,
    /// `appid` again, shared by every call record of the app (not copied per call).
    pub id: std::sync::Arc<str>,
    /// Referer segment: `devtools`, `0`, or a release number.
    pub version: String,
    pub project: Option<PathBuf>,
    /// Devices that run this app (for phones that can't authenticate to a proxy).
    pub clients: Vec<IpNet>,
    pub network_timeout: NetworkTimeout,
    pub domains: DomainLists,
    pub business_domains: Vec<String>,
    pub limits: Limits,
    /// Overrides `sandbox.refusal` for this app.
    pub refusal: Option<RefusalStyle>,
    /// `https://servicewechat.com/{appid}/{version}/page-frame.html`, built once.
    pub referer: http::HeaderValue,
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
    /// `wx.createTCPSocket` sockets an instance may create per [`Limits::tcp_window`] (20).
    pub tcp_per_5min: usize,
    /// The window of `tcp_per_5min`: 5 minutes on the platform. Configurable
    /// (`tcp_window_ms`) only so that tests can watch it slide.
    pub tcp_window: Duration,
}

/// Default of `limits.tcp_per_5min`: the platform's 20 TCP sockets per 5 minutes.
pub const DEFAULT_TCP_PER_5MIN: usize = 20;
/// Default of `limits.tcp_window_ms`: the platform's 5 minutes.
pub const DEFAULT_TCP_WINDOW: Duration = Duration::from_secs(5 * 60);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            requests: 10,
            sockets: 5,
            overflow: Overflow::Queue,
            background_grace: Duration::from_millis(5000),
            tcp_per_5min: DEFAULT_TCP_PER_5MIN,
            tcp_window: DEFAULT_TCP_WINDOW,
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

impl ConfigError {
    /// The config file itself could not be read (missing, not a regular file, over
    /// [`MAX_FILE_BYTES`]): nothing in it was judged.
    pub fn is_unreadable(&self) -> bool {
        self.findings
            .iter()
            .any(|f| UNREADABLE_RULES.contains(&f.rule))
    }
}

/// Why a file was not read.
#[derive(Debug)]
pub(crate) enum ReadError {
    Io(std::io::Error),
    /// What it is instead: `FIFO`, `directory`, ...
    NotRegular(&'static str),
    /// Its length when known from the metadata; `None` when it grew past the limit while read.
    TooLarge(Option<u64>),
}

impl ReadError {
    pub fn is_not_found(&self) -> bool {
        matches!(self, ReadError::Io(e) if e.kind() == std::io::ErrorKind::NotFound)
    }

    /// The rule of a finding about the config file.
    pub fn rule(&self) -> &'static str {
        match self {
            ReadError::Io(_) => "io",
            ReadError::NotRegular(_) => "not-a-file",
            ReadError::TooLarge(_) => "too-large",
        }
    }
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Io(e) => write!(f, "{e}"),
            ReadError::NotRegular(kind) => write!(
                f,
                "not a regular file but a {kind}: wxsandbox reads its config and project files \
                 only from regular files (a symlink to one is fine)"
            ),
            ReadError::TooLarge(Some(len)) => write!(
                f,
                "{len} bytes: over the {MAX_FILE_TEXT} limit of a file wxsandbox reads"
            ),
            ReadError::TooLarge(None) => write!(
                f,
                "over the {MAX_FILE_TEXT} limit of a file wxsandbox reads (it grew while being read)"
            ),
        }
    }
}

/// What a non-regular file is, for messages.
fn file_kind(file_type: std::fs::FileType) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if file_type.is_fifo() {
            return "FIFO (named pipe)";
        }
        if file_type.is_char_device() {
            return "character device";
        }
        if file_type.is_block_device() {
            return "block device";
        }
        if file_type.is_socket() {
            return "socket";
        }
    }
    if file_type.is_dir() {
        "directory"
    } else {
        "special file"
    }
}

/// Read a text file the config loader needs, bounded: symlinks are followed, then anything
/// but a regular file is refused without being opened (a FIFO would block the open, a device
/// like `/dev/zero` never ends), and so is a file over [`MAX_FILE_BYTES`], by its metadata and
/// again while reading (a file growing underneath can't pass).
///
/// # Errors
/// I/O errors (`NotFound` among them), not a regular file, too large, not UTF-8.
pub(crate) fn read_bounded(path: &Path) -> Result<String, ReadError> {
    let meta = std::fs::metadata(path).map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(file_kind(meta.file_type())));
    }
    if meta.len() > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(Some(meta.len())));
    }
    let file = std::fs::File::open(path).map_err(ReadError::Io)?;
    // The name may point elsewhere by now: look at what was actually opened.
    let meta = file.metadata().map_err(ReadError::Io)?;
    if !meta.is_file() {
        return Err(ReadError::NotRegular(file_kind(meta.file_type())));
    }
    let capacity = usize::try_from(meta.len().min(MAX_FILE_BYTES)).unwrap_or(0);
    let mut bytes = Vec::with_capacity(capacity.saturating_add(1));
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(ReadError::Io)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(ReadError::TooLarge(None));
    }
    String::from_utf8(bytes).map_err(|_| {
        ReadError::Io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            "stream did not contain valid UTF-8",
        ))
    })
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
        let text = read_bounded(path).map_err(|e| ConfigError {
            findings: vec![Finding {
                file: file.clone(),
                line: None,
                entry: file.clone(),
                rule: e.rule(),
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
        let raw = raw::parse(text).map_err(|e| ConfigError {
            findings: vec![Finding {
                file: source.to_owned(),
                line: e.line,
                entry: e.entry,
                rule: e.rule,
                message: e.message,
            }],
        })?;
        validate::validate(raw, text, source, base).map_err(|findings| ConfigError { findings })
    }
}
