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

/// Parse a call URL (rule 1). `None`: unparsable or a scheme the APIs don't take. User info
/// (`user:pass@`) is skipped: the host after it is what is judged.
pub fn parse_url(url: &str) -> Option<CallUrl> {
    let (scheme, rest) = url.trim_matches(|c: char| c <= ' ').split_once("://")?;
    let scheme = match scheme.to_ascii_lowercase().as_str() {
        "http" => Scheme::Http,
        "https" => Scheme::Https,
        "ws" => Scheme::Ws,
        "wss" => Scheme::Wss,
        "tcp" => Scheme::Tcp,
        _ => return None,
    };
    let authority = rest.split(['/', '?', '#', '\\']).next()?;
    let authority = authority
        .rsplit_once('@')
        .map_or(authority, |(_, host)| host);
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (addr, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(parse_port(p.strip_prefix(':')?)?),
        };
        (Host::V6(addr.parse().ok()?), port)
    } else {
        let (name, port) = match authority.rsplit_once(':') {
            Some((n, p)) => (n, Some(parse_port(p)?)),
            None => (authority, None),
        };
        let name = percent_encoding::percent_decode_str(name)
            .decode_utf8()
            .ok()?;
        if name.is_empty()
            || name.contains(|c: char| {
                c.is_whitespace() || c.is_ascii_control() || "#%/:<>?@[\\]^|".contains(c)
            })
        {
            return None;
        }
        let name = name.trim_end_matches('.');
        match name.parse::<Ipv4Addr>() {
            Ok(v4) => (Host::V4(v4), port),
            Err(_) => (
                Host::Name(normalize_host(name).ok()?.trim_end_matches('.').to_owned()),
                port,
            ),
        }
    };
    Some(CallUrl { scheme, host, port })
}

fn parse_port(p: &str) -> Option<u16> {
    p.parse::<u16>()
        .ok()
        .filter(|n| *n != 0 && p.bytes().all(|b| b.is_ascii_digit()))
}
