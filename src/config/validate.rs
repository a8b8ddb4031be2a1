//! Raw → typed, with the admin console's rules (SPEC section 2). Every problem is a [`Finding`]
//! with the file, the line of the offending entry, the entry and the rule; all of them are
//! collected, not just the first.
//!
//! Each finding names the key path of what it is about (`apps[0].domains.request[3]`); its
//! line is where the YAML parser met that node ([`raw::locate`]), never a text search, so a
//! key name or an entry written twice can't point at the wrong place.

use std::borrow::Cow;
use std::collections::HashSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use crate::policy::network::{preset, Profile};

use super::raw::{self, KeyPath, RawApp, RawConfig, RawTimeouts, Seg};
use super::{
    project, AppConfig, CaConfig, Config, ControlConfig, DomainLists, Finding, Limits, MapTarget,
    NetworkConfig, NetworkTimeout, Origin, Overflow, ProxyConfig, SandboxConfig, Scheme,
    UpstreamConfig,
};

/// Most entries a list may hold (admin console).
pub const MAX_LIST: usize = 200;
/// Most DNS prefetch hosts.
pub const MAX_DNS_PREFETCH: usize = 5;
/// Most business (web-view) domains.
pub const MAX_BUSINESS_DOMAINS: usize = 300;
/// The host the platform never lets a mini program call.
pub const FORBIDDEN_HOST: &str = "api.weixin.qq.com";

const DEFAULT_CLIENTS: [&str; 7] = [
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "fe80::/10",
];

/// `base` followed by `rest`.
fn join(base: &[Seg], rest: &[Seg]) -> KeyPath {
    base.iter().chain(rest).cloned().collect()
}

fn key(k: &'static str) -> Seg {
    Seg::Key(Cow::Borrowed(k))
}

/// The findings so far, each with the key path its line is taken from.
pub(super) struct Checker<'a> {
    file: &'a str,
    /// Finding, its path, and whether the line is that of the entry's value.
    pending: Vec<(Finding, KeyPath, bool)>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a str) -> Self {
        Checker {
            file,
            pending: Vec::new(),
        }
    }

    fn push(&mut self, at: KeyPath, value: bool, entry: &str, rule: &'static str, message: String) {
        self.pending.push((
            Finding {
                file: self.file.to_owned(),
                line: None,
                entry: entry.to_owned(),
                rule,
                message,
            },
            at,
            value,
        ));
    }

    /// Record a finding about the node at `at`: a sequence item, or a mapping entry (the line
    /// of its key).
    pub fn find(&mut self, at: KeyPath, entry: &str, rule: &'static str, message: String) {
        self.push(at, false, entry, rule, message);
    }

    /// Record a finding about the value of the mapping entry at `at` (the line where the value
    /// starts, which differs from the key's in block style).
    pub fn find_value(&mut self, at: KeyPath, entry: &str, rule: &'static str, message: String) {
        self.push(at, true, entry, rule, message);
    }

    fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    /// The findings, with their lines located in `text` (one event walk).
    fn finish(self, text: &str) -> Vec<Finding> {
        if self.pending.is_empty() {
            return Vec::new();
        }
        let lines = raw::locate(text, self.pending.iter().map(|(_, p, _)| p.as_slice()));
        self.pending
            .into_iter()
            .map(|(mut finding, path, value)| {
                finding.line = lines.line(&path, value);
                finding
            })
            .collect()
    }
}

/// Validate `raw` (from `text` in `file`, read relative to `base` for `project:`).
pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    file: &str,
    base: &Path,
) -> Result<Config, Vec<Finding>> {
    let mut c = Checker::new(file);
    let proxy = ProxyConfig {
        listen: listen(&mut c, "proxy", raw.proxy.listen.as_deref(), "0.0.0.0:8080"),
        clients: cidrs(
            &mut c,
            &[key("proxy"), key("clients")],
            raw.proxy
                .clients
                .unwrap_or_else(|| DEFAULT_CLIENTS.map(String::from).to_vec()),
        ),
        idle_timeout: raw
            .proxy
            .idle_timeout_ms
            .filter(|ms| *ms > 0)
            .map_or(super::DEFAULT_IDLE_TIMEOUT, Duration::from_millis),
        header_timeout: raw
            .proxy
            .header_timeout_ms
            .filter(|ms| *ms > 0)
            .map_or(super::DEFAULT_HEADER_TIMEOUT, Duration::from_millis),
        max_connections: raw
            .proxy
            .max_connections
            .filter(|n| *n > 0)
            .unwrap_or(super::DEFAULT_MAX_CONNECTIONS),
    };
    let control_listen_text = raw.control.listen.clone();
    let control = ControlConfig {
        listen: listen(
            &mut c,
            "control",
            control_listen_text.as_deref(),
            "127.0.0.1:8081",
        ),
        token: raw.control.token.filter(|t| !t.is_empty()),
    };
    let ca = CaConfig {
        dir: raw.ca.dir.unwrap_or_else(|| PathBuf::from("certs")),
    };
    let mut map = Vec::new();
    for (host, to) in raw.upstream.map.unwrap_or_default() {
        let at = vec![
            key("upstream"),
            key("map"),
            Seg::Key(Cow::Owned(host.clone())),
        ];
        match (normalize_host(&host), map_target(&to)) {
            (Ok(h), Some(target)) => map.push((h, target)),
            (Err(e), _) => c.find(at, &host, "map", format!("not a host name: {e}")),
            (_, None) => c.find_value(at, &to, "map",
                "write http://service:port (plain HTTP to it) or service:port (TLS kept, SNI unchanged)".to_owned()),
        }
    }
    let upstream = UpstreamConfig {
        trust: raw.upstream.trust,
        map,
        strict_tls: raw.upstream.strict_tls.unwrap_or(true),
    };
    let lan_prefix = raw.sandbox.lan_prefix.unwrap_or(24);
    if lan_prefix > 32 {
        c.find_value(
            vec![key("sandbox"), key("lan_prefix")],
            &lan_prefix.to_string(),
            "lan-prefix",
            "an IPv4 prefix length is 0 to 32".to_owned(),
        );
    }
    let sandbox = SandboxConfig {
        skip_domain_check: raw.sandbox.skip_domain_check.unwrap_or(false),
        lan_prefix,
        refusal: refusal_style(
            &mut c,
            vec![key("sandbox"), key("refusal")],
            raw.sandbox.refusal.as_deref(),
        )
        .unwrap_or_default(),
    };
    let network = network(&mut c, raw.network);
    let mut apps: Vec<AppConfig> = Vec::new();
    for (i, app) in raw.apps.into_iter().enumerate() {
        // The appid is written in the config, or comes from the project folder.
        let appid_at = vec![
            key("apps"),
            Seg::Index(i),
            key(if app.appid.is_some() {
                "appid"
            } else {
                "project"
            }),
        ];
        if let Some(app) = validate_app(&mut c, i, app, base) {
            if apps.iter().any(|a| a.appid == app.appid) {
                c.find_value(
                    appid_at,
                    &app.appid,
                    "duplicate-appid",
                    "this appid is configured twice: merge the two entries".to_owned(),
                );
            }
            apps.push(app);
        }
    }
    if c.is_empty() {
        Ok(Config {
            source: file.to_owned(),
            proxy,
            control,
            ca,
            upstream,
            sandbox,
            network,
            apps,
        })
    } else {
        Err(c.finish(text))
    }
}

/// `network:`: custom profiles (their names, loss in 0..=1) and the default profile.
fn network(c: &mut Checker<'_>, raw: raw::RawNetwork) -> NetworkConfig {
    let mut profiles = std::collections::BTreeMap::new();
    for (name, p) in raw.profiles {
        let at = vec![
            key("network"),
            key("profiles"),
            Seg::Key(Cow::Owned(name.clone())),
        ];
        let valid_name = !name.is_empty()
            && name.len() <= 32
            && name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !valid_name || preset(&name).is_some() {
            c.find(at.clone(), &name, "network-profile",
                "a custom profile is named with 1-32 of a-z, 0-9, - and _, and not like a preset (online, offline, wifi, 4g, 3g, 2g, gprs)".to_owned());
            continue;
        }
        let loss = p.loss.unwrap_or(0.0);
        if !(0.0..=1.0).contains(&loss) {
            c.find_value(
                join(&at, &[key("loss")]),
                &loss.to_string(),
                "network-profile",
                "loss is a chance from 0 (no call lost) to 1 (every call stalls until its timeout)"
                    .to_owned(),
            );
        }
        let profile = Profile {
            latency_ms: p.latency_ms.unwrap_or(0),
            down_kbps: p.down_kbps.unwrap_or(0),
            up_kbps: p.up_kbps.unwrap_or(0),
            loss,
            offline: false,
        };
        profiles.insert(name, profile);
    }
    let mut network = NetworkConfig {
        seed: raw.seed,
        profiles,
        ..NetworkConfig::default()
    };
    if let Some(default) = raw.default {
        if network.profile(&default).is_none() {
            c.find_value(
                vec![key("network"), key("default")],
                &default,
                "network-profile",
                format!(
                    "no such profile: name one of {}",
                    network.names().join(", ")
                ),
            );
        } else {
            network.default = default;
        }
    }
    network
}

/// `section.listen` (`proxy` or `control`).
fn listen(
    c: &mut Checker<'_>,
    section: &'static str,
    value: Option<&str>,
    default: &str,
) -> SocketAddr {
    let text = value.unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        c.find_value(
            vec![key(section), key("listen")],
            text,
            "listen",
            format!("listen: wants IP:PORT, e.g. {default}"),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

/// The list at `at` (`proxy.clients`, `apps[i].clients`).
fn cidrs(c: &mut Checker<'_>, at: &[Seg], values: Vec<String>) -> Vec<IpNet> {
    values
        .into_iter()
        .enumerate()
        .filter_map(|(j, v)| {
            let parsed = v
                .parse::<IpNet>()
                .ok()
                .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from));
            if parsed.is_none() {
                c.find(
                    join(at, &[Seg::Index(j)]),
                    &v,
                    "cidr",
                    "wants a network like 192.168.1.0/24 or an address".to_owned(),
                );
            }
            parsed
        })
        .collect()
}

fn map_target(to: &str) -> Option<MapTarget> {
    let (plain, rest) = match to.split_once("://") {
        Some(("http", rest)) => (true, rest),
        Some(("https", rest)) => (false, rest),
        Some(_) => return None,
        None => (false, to),
    };
    let rest = rest.trim_end_matches('/');
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) if !h.is_empty() && !h.ends_with(':') => {
            (h, p.parse::<u16>().ok().filter(|p| *p != 0)?)
        }
        _ if plain && !rest.is_empty() && !rest.contains(':') => (rest, 80),
        _ if !plain && !rest.is_empty() && !rest.contains(':') => (rest, 443),
        _ => return None,
    };
    let host = host.to_owned();
    Some(if plain {
        MapTarget::PlainHttp { host, port }
    } else {
        MapTarget::Tls { host, port }
    })
}

fn validate_app(c: &mut Checker<'_>, i: usize, raw: RawApp, base: &Path) -> Option<AppConfig> {
    let app = [key("apps"), Seg::Index(i)];
    let at = |rest: &[Seg]| join(&app, rest);
    let imported = raw.project.as_ref().map(|dir| {
        let dir = if dir.is_absolute() {
            dir.clone()
        } else {
            base.join(dir)
        };
        project::import(&dir)
    });
    let mut project_timeouts = RawTimeouts::default();
    let mut appid = raw.appid.clone();
    match imported {
        Some(Ok(p)) => {
            appid = appid.or(p.appid);
            project_timeouts = p.network_timeout;
        }
        Some(Err(message)) => {
            let shown = raw
                .project
                .as_ref()
                .map(|p| p.display().to_string())
                .unwrap_or_default();
            c.find_value(at(&[key("project")]), &shown, "project", message);
        }
        None => {}
    }
    let Some(appid) = appid else {
        c.find(at(&[]), &format!("apps[{i}]"), "appid-format",
            "an app needs appid: (wx + 16 hex digits), or project: pointing at a folder with project.config.json".to_owned());
        return None;
    };
    let appid_at = at(&[key(if raw.appid.is_some() {
        "appid"
    } else {
        "project"
    })]);
    if !is_appid(&appid) {
        c.find_value(appid_at, &appid, "appid-format",
            "an appid is wx followed by 16 lower-case hex digits (admin console > development settings)".to_owned());
    }
    let ms = |c: &mut Checker<'_>, name: &'static str, own: Option<u64>, project: Option<u64>| {
        let v = own.or(project)?;
        if v == 0 {
            // Written under network_timeout, or read from the project's app.json.
            let where_ = if own.is_some() {
                at(&[key("network_timeout"), key(name)])
            } else {
                at(&[key("project")])
            };
            c.find_value(
                where_,
                &format!("{name}: 0"),
                "timeout",
                "a timeout is a positive number of milliseconds".to_owned(),
            );
        }
        Some(Duration::from_millis(v))
    };
    let t = &raw.network_timeout;
    let network_timeout = NetworkTimeout {
        request: ms(c, "request", t.request, project_timeouts.request),
        connect_socket: ms(
            c,
            "connectSocket",
            t.connect_socket,
            project_timeouts.connect_socket,
        ),
        upload_file: ms(c, "uploadFile", t.upload_file, project_timeouts.upload_file),
        download_file: ms(
            c,
            "downloadFile",
            t.download_file,
            project_timeouts.download_file,
        ),
    };
    let d = raw.domains;
    let domains_at = at(&[key("domains")]);
    let domains = DomainLists {
        request: list(c, &domains_at, "request", d.request, ListKind::Https),
        socket: list(c, &domains_at, "socket", d.socket, ListKind::Wss),
        upload_file: list(c, &domains_at, "uploadFile", d.upload_file, ListKind::Https),
        download_file: list(
            c,
            &domains_at,
            "downloadFile",
            d.download_file,
            ListKind::Https,
        ),
        tcp: list(c, &domains_at, "tcp", d.tcp, ListKind::Tcp),
        udp: list(c, &domains_at, "udp", d.udp, ListKind::Udp),
        dns_prefetch: dns_prefetch(
            c,
            &at(&[key("domains"), key("dns_prefetch")]),
            d.dns_prefetch,
        ),
    };
    let business_domains =
        business_domains(c, &at(&[key("business_domains")]), raw.business_domains);
    let l = raw.limits;
    let defaults = Limits::default();
    let overflow = match l.overflow.as_deref() {
        None | Some("queue") => Overflow::Queue,
        Some("fail") => Overflow::Fail,
        Some(other) => {
            c.find_value(
                at(&[key("limits"), key("overflow")]),
                other,
                "overflow",
                "overflow is queue (wait, as today's clients do) or fail".to_owned(),
            );
            Overflow::Queue
        }
    };
    let limits = Limits {
        requests: l.requests.unwrap_or(defaults.requests),
        sockets: l.sockets.unwrap_or(defaults.sockets),
        overflow,
        background_grace: l
            .background_grace_ms
            .map_or(defaults.background_grace, Duration::from_millis),
        tcp_per_5min: l.tcp_per_5min.unwrap_or(defaults.tcp_per_5min),
        tcp_window: l
            .tcp_window_ms
            .map_or(defaults.tcp_window, Duration::from_millis),
    };
    if l.tcp_per_5min == Some(0) {
        c.find_value(
            at(&[key("limits"), key("tcp_per_5min")]),
            "tcp_per_5min: 0",
            "limits",
            "tcp_per_5min is how many TCP sockets an app instance may create in 5 minutes: \
             at least 1 (the platform allows 20)"
                .to_owned(),
        );
    }
    if l.tcp_window_ms == Some(0) {
        c.find_value(
            at(&[key("limits"), key("tcp_window_ms")]),
            "tcp_window_ms: 0",
            "limits",
            "tcp_window_ms is the window of tcp_per_5min in milliseconds (300000 on the \
             platform; shorter only for tests): at least 1"
                .to_owned(),
        );
    }
    if limits.requests == 0 || limits.sockets == 0 {
        let zero = if limits.requests == 0 {
            "requests"
        } else {
            "sockets"
        };
        c.find_value(
            at(&[key("limits"), key(zero)]),
            "limits",
            "limits",
            "requests and sockets must be at least 1".to_owned(),
        );
    }
    let version = raw
        .version
        .map_or_else(|| "devtools".to_owned(), |v| v.text());
    let referer = format!("https://servicewechat.com/{appid}/{version}/page-frame.html");
    let referer = match http::HeaderValue::from_str(&referer) {
        Ok(value) => value,
        Err(_) => {
            c.find_value(
                at(&[key("version")]),
                &version,
                "version",
                "version must be devtools, 0 or a release number (it goes into the Referer)"
                    .to_owned(),
            );
            http::HeaderValue::from_static("https://servicewechat.com/")
        }
    };
    Some(AppConfig {
        id: std::sync::Arc::from(appid.as_str()),
        appid,
        version,
        referer,
        project: raw.project,
        clients: cidrs(c, &at(&[key("clients")]), raw.clients),
        network_timeout,
        domains,
        business_domains,
        limits,
        refusal: refusal_style(c, at(&[key("refusal")]), raw.refusal.as_deref()),
    })
}

/// `auto`, `fail` or `answer`.
fn refusal_style(
    c: &mut Checker<'_>,
    at: KeyPath,
    text: Option<&str>,
) -> Option<super::RefusalStyle> {
    let text = text?;
    let style = super::RefusalStyle::parse(text);
    if style.is_none() {
        c.find_value(
            at,
            text,
            "refusal",
            "refusal is auto (answer harnesses that send X-Wxsandbox-* headers, fail the rest), fail or answer".to_owned(),
        );
    }
    style
}

fn is_appid(s: &str) -> bool {
    s.len() == 18
        && s.starts_with("wx")
        && s[2..]
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Which list an entry is in: what scheme it must have.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ListKind {
    Https,
    Wss,
    Tcp,
    Udp,
}

/// The list `name` under `domains` (at `domains_at`).
fn list(
    c: &mut Checker<'_>,
    domains_at: &[Seg],
    name: &'static str,
    entries: Vec<String>,
    kind: ListKind,
) -> Vec<Origin> {
    let at = join(domains_at, &[key(name)]);
    if entries.len() > MAX_LIST {
        // The line of the list's key.
        c.find(
            at.clone(),
            name,
            "too-many",
            format!(
                "the {name} list has {} entries; the admin console takes at most {MAX_LIST}",
                entries.len()
            ),
        );
    }
    let mut out: Vec<Origin> = Vec::new();
    // Not `out.contains`: quadratic in a long list.
    let mut seen: HashSet<Origin> = HashSet::new();
    for (j, entry) in entries.into_iter().enumerate() {
        let item = join(&at, &[Seg::Index(j)]);
        match parse_entry(&entry, kind) {
            Ok(origin) => {
                if !seen.insert(origin.clone()) {
                    // The line of the second one.
                    c.find(
                        item,
                        &entry,
                        "duplicate",
                        format!("{origin} is already in the {name} list"),
                    );
                } else {
                    out.push(origin);
                }
            }
            Err((rule, message)) => c.find(item, &entry, rule, format!("{name} list: {message}")),
        }
    }
    out
}

/// One list entry, as the admin console would take it.
///
/// # Errors
/// The rule broken and how to fix it.
pub fn parse_entry(entry: &str, kind: ListKind) -> Result<Origin, (&'static str, String)> {
    let s = entry.trim();
    if s.contains('*') {
        return Err((
            "no-wildcard",
            "wildcards are not allowed: list each host (a parent domain doesn't cover subdomains)"
                .to_owned(),
        ));
    }
    let (scheme, rest) = match s.split_once("://") {
        Some((sch, rest)) => (Some(sch.to_ascii_lowercase()), rest),
        None => (None, s),
    };
    let scheme = match (kind, scheme.as_deref()) {
        (ListKind::Https, Some("https")) => Scheme::Https,
        (ListKind::Https, Some("http")) => return Err(("https-only", "http:// is not allowed: only https:// entries (use the LAN rule or the skip switch for local servers)".to_owned())),
        (ListKind::Https, _) => return Err(("https-only", "entries are https://host or https://host:port".to_owned())),
        (ListKind::Wss, Some("wss")) => Scheme::Wss,
        (ListKind::Wss, Some("ws")) => return Err(("wss-only", "ws:// is not allowed: only wss:// entries".to_owned())),
        (ListKind::Wss, _) => return Err(("wss-only", "entries are wss://host".to_owned())),
        (ListKind::Tcp, None | Some("tcp")) => Scheme::Tcp,
        (ListKind::Udp, None | Some("udp")) => Scheme::Udp,
        (ListKind::Tcp | ListKind::Udp, Some(_)) => return Err(("scheme", "entries are host or host:port".to_owned())),
    };
    // A single trailing slash is tolerated (the console strips it); any other path is not.
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err((
            "no-path",
            "an entry is an origin only: remove the path".to_owned(),
        ));
    }
    if rest.contains('@') {
        return Err((
            "invalid-entry",
            "an entry can't carry user:password@".to_owned(),
        ));
    }
    if rest.starts_with('[') {
        return Err((
            "no-ip",
            "IP addresses can't be listed (LAN addresses need no entry)".to_owned(),
        ));
    }
    let (host, port) = match rest.rsplit_once(':') {
        Some((h, p)) => match p.parse::<u16>() {
            Ok(port) if port != 0 => (h, Some(port)),
            _ => return Err(("bad-port", format!("{p:?} is not a port"))),
        },
        None => (rest, None),
    };
    let host = normalize_host(host).map_err(|e| ("invalid-host", e))?;
    if host.parse::<IpAddr>().is_ok() {
        return Err((
            "no-ip",
            "IP addresses can't be listed; LAN addresses in the client's subnet need no entry"
                .to_owned(),
        ));
    }
    if host == "localhost" || host.ends_with(".localhost") {
        return Err(("no-localhost", "localhost can't be listed".to_owned()));
    }
    if host == FORBIDDEN_HOST {
        return Err((
            "forbidden-host",
            "api.weixin.qq.com can never be called from a mini program: call it from your server"
                .to_owned(),
        ));
    }
    Ok(Origin { scheme, host, port })
}

/// ASCII lower-case, IDN as punycode, no trailing dot.
///
/// # Errors
/// Not a host name.
pub fn normalize_host(host: &str) -> Result<String, String> {
    // One trailing dot is the same name (the root); `a.com..` is not `a.com`.
    let host = host.trim();
    let host = host.strip_suffix('.').unwrap_or(host);
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    // The common case, on every call: plain ASCII letters, digits, '-' and '.'.
    if host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        if host.ends_with('.') || host.starts_with('.') || host.contains("..") {
            return Err(format!("{host:?} has an empty label"));
        }
        return Ok(host.to_ascii_lowercase());
    }
    let ascii = idna::domain_to_ascii(host)
        .map_err(|e| format!("{host:?} is not a valid host name ({e})"))?;
    // What WHATWG forbids in a host (':' '%' '/' '@' ...), and controls, are no name.
    let forbidden = |c: char| {
        c.is_control()
            || c.is_whitespace()
            || matches!(
                c,
                '_' | ':' | '%' | '/' | '\\' | '?' | '#' | '@' | '[' | ']' | '<' | '>' | '^' | '|'
            )
    };
    if ascii.is_empty() || ascii.contains(forbidden) || ascii.ends_with('.') {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(ascii)
}

/// `domains.dns_prefetch` (at `at`).
fn dns_prefetch(c: &mut Checker<'_>, at: &[Seg], entries: Vec<String>) -> Vec<String> {
    if entries.len() > MAX_DNS_PREFETCH {
        c.find(
            at.to_vec(),
            "dns_prefetch",
            "too-many",
            format!(
                "{} DNS prefetch hosts; at most {MAX_DNS_PREFETCH}",
                entries.len()
            ),
        );
    }
    let mut out = Vec::new();
    for (j, entry) in entries.into_iter().enumerate() {
        let item = join(at, &[Seg::Index(j)]);
        if entry.contains("://") {
            c.find(
                item,
                &entry,
                "no-scheme",
                "DNS prefetch entries are host names without a scheme".to_owned(),
            );
            continue;
        }
        match parse_entry(&entry, ListKind::Tcp) {
            Ok(o) if o.port.is_none() => out.push(o.host),
            Ok(_) => c.find(
                item,
                &entry,
                "no-port",
                "DNS prefetch entries have no port".to_owned(),
            ),
            Err((rule, message)) => c.find(item, &entry, rule, format!("dns_prefetch: {message}")),
        }
    }
    out
}

/// `business_domains` (at `at`).
fn business_domains(c: &mut Checker<'_>, at: &[Seg], entries: Vec<String>) -> Vec<String> {
    if entries.len() > MAX_BUSINESS_DOMAINS {
        c.find(
            at.to_vec(),
            "business_domains",
            "too-many",
            format!(
                "{} business domains; at most {MAX_BUSINESS_DOMAINS}",
                entries.len()
            ),
        );
    }
    let mut out = Vec::new();
    for (j, entry) in entries.into_iter().enumerate() {
        let item = || join(at, &[Seg::Index(j)]);
        let bare = entry
            .trim()
            .strip_prefix("https://")
            .unwrap_or(entry.trim())
            .trim_end_matches('/');
        if bare.contains("://") {
            c.find(
                item(),
                &entry,
                "https-only",
                "business domains are https only".to_owned(),
            );
        } else if bare.contains(':') {
            c.find(
                item(),
                &entry,
                "no-port",
                "business domains can't carry a port".to_owned(),
            );
        } else if bare.is_empty()
            || !bare
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        {
            c.find(
                item(),
                &entry,
                "business-domain",
                "business domains hold letters, digits, '-' and '.' only".to_owned(),
            );
        } else if bare.parse::<IpAddr>().is_ok() {
            c.find(
                item(),
                &entry,
                "no-ip",
                "business domains can't be IP addresses".to_owned(),
            );
        } else {
            out.push(bare.to_ascii_lowercase());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::{Config, DEFAULT_TCP_PER_5MIN, DEFAULT_TCP_WINDOW};
    use std::time::Duration;

    fn limits(yaml_limits: &str) -> super::Limits {
        let yaml = format!("apps:\n  - appid: wx0123456789abcdef\n{yaml_limits}");
        let config = Config::from_yaml_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        config.apps[0].limits.clone()
    }

    #[test]
    fn the_tcp_quota_defaults_to_the_platforms_20_in_5_minutes() {
        let l = limits("");
        assert_eq!(
            (l.tcp_per_5min, l.tcp_window),
            (20, Duration::from_secs(300))
        );
        assert_eq!(
            (DEFAULT_TCP_PER_5MIN, DEFAULT_TCP_WINDOW),
            (20, Duration::from_millis(300_000))
        );
        let l = limits("    limits: {tcp_per_5min: 3, tcp_window_ms: 250}\n");
        assert_eq!(
            (l.tcp_per_5min, l.tcp_window),
            (3, Duration::from_millis(250))
        );
    }

    #[test]
    fn a_zero_tcp_quota_or_window_is_a_finding_at_its_key() {
        for (written, line) in [
            ("    limits: {tcp_per_5min: 0}\n", 3),
            (
                "    limits:\n      requests: 10\n      tcp_window_ms: 0\n",
                5,
            ),
        ] {
            let yaml = format!("apps:\n  - appid: wx0123456789abcdef\n{written}");
            let err = Config::from_yaml_str(&yaml, "t.yaml").expect_err(written);
            assert_eq!(err.findings.len(), 1, "{err}");
            let f = &err.findings[0];
            assert_eq!((f.rule, f.line), ("limits", Some(line)), "{err}");
        }
    }
}
