//! The YAML as written: serde structs that mirror SPEC section 2 one to one, unknown keys refused.
//! The only place that touches serde_yaml (it is archived; keep it swappable).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::Deserialize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub proxy: RawProxy,
    pub control: RawControl,
    pub ca: RawCa,
    pub upstream: RawUpstream,
    pub sandbox: RawSandbox,
    pub apps: Vec<RawApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub clients: Option<Vec<String>>,
    pub idle_timeout_ms: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCa {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub trust: Vec<PathBuf>,
    pub map: Option<BTreeMap<String, String>>,
    pub strict_tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSandbox {
    pub skip_domain_check: Option<bool>,
    pub lan_prefix: Option<u8>,
    pub refusal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApp {
    pub appid: Option<String>,
    /// `devtools`, `0` or a release number: a string or a number in YAML.
    pub version: Option<Scalar>,
    pub project: Option<PathBuf>,
    pub clients: Vec<String>,
    pub network_timeout: RawTimeouts,
    pub domains: RawDomains,
    pub business_domains: Vec<String>,
    pub limits: RawLimits,
    pub refusal: Option<String>,
}

/// A YAML scalar kept as text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub request: Option<u64>,
    #[serde(rename = "connectSocket")]
    pub connect_socket: Option<u64>,
    #[serde(rename = "uploadFile")]
    pub upload_file: Option<u64>,
    #[serde(rename = "downloadFile")]
    pub download_file: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDomains {
    pub request: Vec<String>,
    pub socket: Vec<String>,
    #[serde(rename = "uploadFile")]
    pub upload_file: Vec<String>,
    #[serde(rename = "downloadFile")]
    pub download_file: Vec<String>,
    pub tcp: Vec<String>,
    pub udp: Vec<String>,
    pub dns_prefetch: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub requests: Option<usize>,
    pub sockets: Option<usize>,
    pub overflow: Option<String>,
    pub background_grace_ms: Option<u64>,
}

/// Parse YAML text; on failure, the message and the 1-based line serde_yaml points at.
///
/// # Errors
/// Syntax errors, wrong types, unknown keys.
pub fn parse(text: &str) -> Result<RawConfig, (String, Option<usize>)> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    serde_yaml::from_str(text).map_err(|e| {
        let line = e.location().map(|l| l.line());
        (e.to_string(), line)
    })
}
