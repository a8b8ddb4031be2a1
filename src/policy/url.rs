//! The URL of a call as the client wrote it: scheme, host, and the port only when written
//! (`https://a.com:443/` keeps its 443, which the domain lists tell apart from no port).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use crate::config::{normalize_host, Scheme};

/// A call's host: a name (ASCII lower-case, punycode, no trailing dot) or an IP literal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    Name(String),
    V4(Ipv4Addr),
    V6(Ipv6Addr),
}

impl Host {
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            Host::Name(_) => None,
            Host::V4(v4) => Some(IpAddr::V4(*v4)),
            Host::V6(v6) => Some(IpAddr::V6(*v6)),
        }
    }
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::V4(v4) => write!(f, "{v4}"),
            Host::V6(v6) => write!(f, "[{v6}]"),
        }
    }
}

/// A parsed call URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallUrl {
    pub scheme: Scheme,
    pub host: Host,
    /// Only when the URL has one written.
    pub port: Option<u16>,
}

impl CallUrl {
    /// The port the connection goes to.
    pub fn effective_port(&self) -> u16 {
        self.port.unwrap_or(match self.scheme {
            Scheme::Https | Scheme::Wss => 443,
            _ => 80,
        })
    }

    /// `scheme://host[:port]`, as it is searched in the lists.
    pub fn origin(&self) -> String {
        match self.port {
            Some(p) => format!("{}://{}:{p}", self.scheme.as_str(), self.host),
            None => format!("{}://{}", self.scheme.as_str(), self.host),
        }
    }
}

/// Parse a call URL (rule 1) as browsers do (the WHATWG URL standard: `\\` ends the authority
/// of an http(s)/ws(s) URL, user info is skipped, `0x7f.1` is an IPv4 address). `None`:
/// unparsable or a scheme the APIs don't take. The port is kept only when written, default or not.
pub fn parse_url(url: &str) -> Option<CallUrl> {
    let text = url.trim_matches(|c: char| c <= ' ');
    let (scheme, rest) = text.split_once(':')?;
    if scheme.eq_ignore_ascii_case("tcp") {
        return parse_tcp(rest.strip_prefix("//")?);
    }
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        _ => return None,
    };
    let parsed = ::url::Url::parse(text).ok()?;
    let host = host_of(parsed.host()?)?;
    let port = parsed.port().or_else(|| {
        let default = parsed.port_or_known_default()?;
        (written_port(rest) == Some(default)).then_some(default)
    });
    if port == Some(0) {
        return None;
    }
    Some(CallUrl { scheme, host, port })
}

/// The URL of every call in a tunnel to `host:port` (the host as [`normalize_target_host`]
/// gave it), parsed once at the CONNECT: `https://host` written as a call would write it, the
/// port kept only when it is not 443. `None` when no call to it can be parsed.
pub fn tunnel_url(host: &str, port: u16) -> Option<CallUrl> {
    let mut url = parse_url(&format!("https://{host}:{port}/"))?;
    url.port = (port != 443).then_some(port);
    Some(url)
}

/// A host as the WHATWG parser gave it, names normalised as the lists are (no trailing dot).
fn host_of(host: ::url::Host<&str>) -> Option<Host> {
    match host {
        ::url::Host::Domain(name) => Some(Host::Name(normalize_host(name).ok()?)),
        ::url::Host::Ipv4(v4) => Some(Host::V4(v4)),
        ::url::Host::Ipv6(v6) => Some(Host::V6(v6)),
    }
}

/// Normalise a host as a client named it (CONNECT authority, absolute-form URI): names in
/// ASCII lower case without a trailing dot, IP literals canonical (IPv6 in brackets), as the
/// WHATWG parser reads them. The proxy routes and judges this one value.
pub fn normalize_target_host(host: &str) -> Option<String> {
    let host = ::url::Host::parse(host).ok()?;
    host_of(match &host {
        ::url::Host::Domain(d) => ::url::Host::Domain(d.as_str()),
        ::url::Host::Ipv4(v4) => ::url::Host::Ipv4(*v4),
        ::url::Host::Ipv6(v6) => ::url::Host::Ipv6(*v6),
    })
    .map(|h| h.to_string())
}

/// The port written in a special URL's authority (after `scheme:`), read the way the WHATWG
/// parser delimits it, so `https://h:443/` can be told from `https://h/`.
fn written_port(after_scheme: &str) -> Option<u16> {
    let cleaned: String = after_scheme
        .chars()
        .filter(|c| !matches!(c, '\t' | '\n' | '\r'))
        .collect();
    let rest = cleaned.trim_start_matches(['/', '\\']);
    let authority = rest.split(['/', '\\', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let port = match host_port.rsplit_once(']') {
        Some((_, after)) => after.strip_prefix(':')?,
        None => host_port.rsplit_once(':')?.1,
    };
    if port.is_empty() || !port.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    port.trim_start_matches('0').parse::<u16>().ok().or(Some(0))
}

/// `tcp://host:port`, as the proxy writes it for a raw tunnel.
fn parse_tcp(authority: &str) -> Option<CallUrl> {
    let (host, port) = authority.rsplit_once(':')?;
    let port = parse_port(port)?;
    let host = match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(v6) => Host::V6(v6.parse().ok()?),
        None => match host.parse::<Ipv4Addr>() {
            Ok(v4) => Host::V4(v4),
            Err(_) => Host::Name(normalize_host(host).ok()?),
        },
    };
    Some(CallUrl {
        scheme: Scheme::Tcp,
        host,
        port: Some(port),
    })
}

/// Does the hint (`X-Wxsandbox-Url`) name the call's real target? Scheme family (TLS or not),
/// host and port must agree; a default port may be written or not.
pub fn hint_matches(hint: &CallUrl, target: &CallUrl) -> bool {
    is_tls(hint.scheme) == is_tls(target.scheme)
        && hint.host == target.host
        && hint.effective_port() == target.effective_port()
}

fn is_tls(scheme: Scheme) -> bool {
    matches!(scheme, Scheme::Https | Scheme::Wss)
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>().ok().filter(|p| *p != 0)
}
