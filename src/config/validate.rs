//! Raw → typed, with the admin console's rules (SPEC section 2). Every problem is a [`Finding`]
//! with the file, the line of the offending entry, the entry and the rule; all of them are
//! collected, not just the first.
//!
//! Lines are found in the text itself: the entry is searched from the line where its app (or
//! top-level key) starts, which is right for block and flow YAML alike.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;

use super::raw::{RawApp, RawConfig, RawTimeouts};
use super::{
    project, AppConfig, CaConfig, Config, ControlConfig, DomainLists, Finding, Limits, MapTarget,
    NetworkTimeout, Origin, Overflow, ProxyConfig, SandboxConfig, Scheme, UpstreamConfig,
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

/// Where an entry is looked for, and the findings so far.
pub(super) struct Checker<'a> {
    file: &'a str,
    lines: Vec<&'a str>,
    /// 0-based line where each app's list item starts.
    app_starts: Vec<usize>,
    pub findings: Vec<Finding>,
}

impl<'a> Checker<'a> {
    pub fn new(file: &'a str, text: &'a str) -> Self {
        let lines: Vec<&str> = text.lines().collect();
        let app_starts = app_starts(&lines);
        Checker {
            file,
            lines,
            app_starts,
            findings: Vec::new(),
        }
    }

    /// 1-based line of the first line at or after `from` (0-based) containing `needle`.
    fn line_of(&self, needle: &str, from: usize) -> Option<usize> {
        self.lines
            .iter()
            .enumerate()
            .skip(from)
            .find(|(_, l)| !needle.is_empty() && l.contains(needle))
            .map(|(i, _)| i + 1)
    }

    fn app_from(&self, app: Option<usize>) -> usize {
        app.and_then(|i| self.app_starts.get(i).copied())
            .unwrap_or(0)
    }

    /// Record a finding for `entry`, located from the start of app `app` (or the file).
    pub fn find(
        &mut self,
        app: Option<usize>,
        needle: &str,
        entry: &str,
        rule: &'static str,
        message: String,
    ) {
        let from = self.app_from(app);
        let line = self.line_of(needle, from).or_else(|| app.map(|_| from + 1));
        self.findings.push(Finding {
            file: self.file.to_owned(),
            line,
            entry: entry.to_owned(),
            rule,
            message,
        });
    }
}

/// The 0-based lines of the `- ` items directly under `apps:`.
fn app_starts(lines: &[&str]) -> Vec<usize> {
    let Some(apps) = lines.iter().position(|l| l.trim_end().starts_with("apps:")) else {
        return Vec::new();
    };
    let mut indent = None;
    let mut starts = Vec::new();
    for (i, line) in lines.iter().enumerate().skip(apps + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let this = line.len() - trimmed.len();
        if this == 0 && !trimmed.starts_with('-') {
            break;
        }
        if trimmed.starts_with('-') {
            let item_indent = *indent.get_or_insert(this);
            if this == item_indent {
                starts.push(i);
            }
        }
    }
    starts
}

/// Validate `raw` (from `text` in `file`, read relative to `base` for `project:`).
pub(super) fn validate(
    raw: RawConfig,
    text: &str,
    file: &str,
    base: &Path,
) -> Result<Config, Vec<Finding>> {
    let mut c = Checker::new(file, text);
    let proxy = ProxyConfig {
        listen: listen(
            &mut c,
            "listen:",
            raw.proxy.listen.as_deref(),
            "0.0.0.0:8080",
        ),
        clients: cidrs(
            &mut c,
            None,
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
            "listen:",
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
        match (normalize_host(&host), map_target(&to)) {
            (Ok(h), Some(target)) => map.push((h, target)),
            (Err(e), _) => c.find(None, &host, &host, "map", format!("not a host name: {e}")),
            (_, None) => c.find(None, &to, &to, "map",
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
        c.find(
            None,
            "lan_prefix",
            &lan_prefix.to_string(),
            "lan-prefix",
            "an IPv4 prefix length is 0 to 32".to_owned(),
        );
    }
    let sandbox = SandboxConfig {
        skip_domain_check: raw.sandbox.skip_domain_check.unwrap_or(false),
        lan_prefix,
        refusal: refusal_style(&mut c, None, raw.sandbox.refusal.as_deref()).unwrap_or_default(),
    };
    let mut apps: Vec<AppConfig> = Vec::new();
    for (i, app) in raw.apps.into_iter().enumerate() {
        if let Some(app) = validate_app(&mut c, i, app, base) {
            if apps.iter().any(|a| a.appid == app.appid) {
                c.find(
                    Some(i),
                    &app.appid,
                    &app.appid,
                    "duplicate-appid",
                    "this appid is configured twice: merge the two entries".to_owned(),
                );
            }
            apps.push(app);
        }
    }
    if c.findings.is_empty() {
        Ok(Config {
            source: file.to_owned(),
            proxy,
            control,
            ca,
            upstream,
            sandbox,
            apps,
        })
    } else {
        Err(c.findings)
    }
}

fn listen(c: &mut Checker<'_>, key: &str, value: Option<&str>, default: &str) -> SocketAddr {
    let text = value.unwrap_or(default);
    text.parse().unwrap_or_else(|_| {
        c.find(
            None,
            text,
            text,
            "listen",
            format!("{key} wants IP:PORT, e.g. {default}"),
        );
        SocketAddr::from(([127, 0, 0, 1], 0))
    })
}

fn cidrs(c: &mut Checker<'_>, app: Option<usize>, values: Vec<String>) -> Vec<IpNet> {
    values
        .into_iter()
        .filter_map(|v| {
            let parsed = v
                .parse::<IpNet>()
                .ok()
                .or_else(|| v.parse::<IpAddr>().ok().map(IpNet::from));
            if parsed.is_none() {
                c.find(
                    app,
                    &v,
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
    let at = Some(i);
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
            c.find(at, "project", &shown, "project", message);
        }
        None => {}
    }
    let Some(appid) = appid else {
        c.find(at, "-", &format!("apps[{i}]"), "appid-format",
            "an app needs appid: (wx + 16 hex digits), or project: pointing at a folder with project.config.json".to_owned());
        return None;
    };
    if !is_appid(&appid) {
        c.find(at, &appid, &appid, "appid-format",
            "an appid is wx followed by 16 lower-case hex digits (admin console > development settings)".to_owned());
    }
    let ms = |c: &mut Checker<'_>, name: &str, own: Option<u64>, project: Option<u64>| {
        let v = own.or(project)?;
        if v == 0 {
            c.find(
                at,
                name,
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
    let domains = DomainLists {
        request: list(c, at, "request", d.request, ListKind::Https),
        socket: list(c, at, "socket", d.socket, ListKind::Wss),
        upload_file: list(c, at, "uploadFile", d.upload_file, ListKind::Https),
        download_file: list(c, at, "downloadFile", d.download_file, ListKind::Https),
        tcp: list(c, at, "tcp", d.tcp, ListKind::Tcp),
        udp: list(c, at, "udp", d.udp, ListKind::Udp),
        dns_prefetch: dns_prefetch(c, at, d.dns_prefetch),
    };
    let business_domains = business_domains(c, at, raw.business_domains);
    let l = raw.limits;
    let defaults = Limits::default();
    let overflow = match l.overflow.as_deref() {
        None | Some("queue") => Overflow::Queue,
        Some("fail") => Overflow::Fail,
        Some(other) => {
            c.find(
                at,
                other,
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
    };
    if limits.requests == 0 || limits.sockets == 0 {
        c.find(
            at,
            "limits",
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
            c.find(
                at,
                &version,
                &version,
                "version",
                "version must be devtools, 0 or a release number (it goes into the Referer)"
                    .to_owned(),
            );
            http::HeaderValue::from_static("https://servicewechat.com/")
        }
    };
    Some(AppConfig {
        appid,
        version,
        referer,
        project: raw.project,
        clients: cidrs(c, at, raw.clients),
        network_timeout,
        domains,
        business_domains,
        limits,
        refusal: refusal_style(c, at, raw.refusal.as_deref()),
    })
}

/// `auto`, `fail` or `answer`.
fn refusal_style(
    c: &mut Checker<'_>,
    at: Option<usize>,
    text: Option<&str>,
) -> Option<super::RefusalStyle> {
    let text = text?;
    let style = super::RefusalStyle::parse(text);
    if style.is_none() {
        c.find(
            at,
            text,
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

fn list(
    c: &mut Checker<'_>,
    at: Option<usize>,
    name: &str,
    entries: Vec<String>,
    kind: ListKind,
) -> Vec<Origin> {
    if entries.len() > MAX_LIST {
        c.find(
            at,
            &format!("{name}:"),
            name,
            "too-many",
            format!(
                "the {name} list has {} entries; the admin console takes at most {MAX_LIST}",
                entries.len()
            ),
        );
    }
    let mut out: Vec<Origin> = Vec::new();
    for entry in entries {
        match parse_entry(&entry, kind) {
            Ok(origin) => {
                if out.contains(&origin) {
                    c.find(
                        at,
                        &entry,
                        &entry,
                        "duplicate",
                        format!("{origin} is already in the {name} list"),
                    );
                } else {
                    out.push(origin);
                }
            }
            Err((rule, message)) => {
                c.find(at, &entry, &entry, rule, format!("{name} list: {message}"))
            }
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
    let host = host.trim().trim_end_matches('.');
    if host.is_empty() {
        return Err("empty host".to_owned());
    }
    // The common case, on every call: plain ASCII letters, digits, '-' and '.'.
    if host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
    {
        return Ok(host.to_ascii_lowercase());
    }
    let ascii = idna::domain_to_ascii(host)
        .map_err(|e| format!("{host:?} is not a valid host name ({e})"))?;
    if ascii.is_empty() || ascii.contains([' ', '_']) {
        return Err(format!("{host:?} is not a valid host name"));
    }
    Ok(ascii)
}

fn dns_prefetch(c: &mut Checker<'_>, at: Option<usize>, entries: Vec<String>) -> Vec<String> {
    if entries.len() > MAX_DNS_PREFETCH {
        c.find(
            at,
            "dns_prefetch",
            "dns_prefetch",
            "too-many",
            format!(
                "{} DNS prefetch hosts; at most {MAX_DNS_PREFETCH}",
                entries.len()
            ),
        );
    }
    let mut out = Vec::new();
    for entry in entries {
        if entry.contains("://") {
            c.find(
                at,
                &entry,
                &entry,
                "no-scheme",
                "DNS prefetch entries are host names without a scheme".to_owned(),
            );
            continue;
        }
        match parse_entry(&entry, ListKind::Tcp) {
            Ok(o) if o.port.is_none() => out.push(o.host),
            Ok(_) => c.find(
                at,
                &entry,
                &entry,
                "no-port",
                "DNS prefetch entries have no port".to_owned(),
            ),
            Err((rule, message)) => {
                c.find(at, &entry, &entry, rule, format!("dns_prefetch: {message}"))
            }
        }
    }
    out
}

fn business_domains(c: &mut Checker<'_>, at: Option<usize>, entries: Vec<String>) -> Vec<String> {
    if entries.len() > MAX_BUSINESS_DOMAINS {
        c.find(
            at,
            "business_domains",
            "business_domains",
            "too-many",
            format!(
                "{} business domains; at most {MAX_BUSINESS_DOMAINS}",
                entries.len()
            ),
        );
    }
    let mut out = Vec::new();
    for entry in entries {
        let bare = entry
            .trim()
            .strip_prefix("https://")
            .unwrap_or(entry.trim())
            .trim_end_matches('/');
        if bare.contains("://") {
            c.find(
                at,
                &entry,
                &entry,
                "https-only",
                "business domains are https only".to_owned(),
            );
        } else if bare.contains(':') {
            c.find(
                at,
                &entry,
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
                at,
                &entry,
                &entry,
                "business-domain",
                "business domains hold letters, digits, '-' and '.' only".to_owned(),
            );
        } else if bare.parse::<IpAddr>().is_ok() {
            c.find(
                at,
                &entry,
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
