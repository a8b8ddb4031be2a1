//! Rules 1-4 of SPEC section 3: the URL parses, `api.weixin.qq.com` never, the LAN rule, the
//! domain lists (with TCP's forbidden ports). Every refusal's detail names the list searched and
//! the nearest entry, so the developer knows what to change.

use std::net::IpAddr;

use super::url::{parse_url, CallUrl, Host};
use super::{Api, Call, Refusal, Rule, Switches, Verdict};
use crate::config::{AppConfig, Origin, Scheme, FORBIDDEN_HOST};

/// The methods `wx.request` takes.
pub const METHODS: [&str; 8] = [
    "OPTIONS", "GET", "HEAD", "POST", "PUT", "DELETE", "TRACE", "CONNECT",
];

/// `wx.createTCPSocket` can't reach these ports, even when the host is listed.
pub fn tcp_port_forbidden(port: u16) -> bool {
    const SINGLE: [u16; 30] = [
        1099, 1433, 1521, 1719, 1720, 1723, 2049, 2375, 3128, 3306, 3389, 3659, 4045, 5060, 5061,
        5432, 5984, 6000, 6379, 6566, 7001, 7002, 8443, 8888, 9200, 9300, 10051, 10080, 11211,
        27017,
    ];
    port < 1024
        || SINGLE.contains(&port)
        || (8000..=8100).contains(&port)
        || (27017..=27019).contains(&port)
}

/// Rules 1-4 of SPEC section 3 for one call of one app.
pub fn judge(app: &AppConfig, call: &Call<'_>, switches: Switches) -> Verdict {
    judge_parsed(app, call, parse_url(call.url).as_ref(), switches)
}

/// [`judge`] with `call.url` already parsed (`None`: it does not parse): the proxy parses a
/// call's URL once for every decision.
pub fn judge_parsed(
    app: &AppConfig,
    call: &Call<'_>,
    parsed: Option<&CallUrl>,
    switches: Switches,
) -> Verdict {
    let api = call.api;
    let refuse = |status, errno, errmsg: String, rule, detail: String| {
        Verdict::Refuse(Refusal {
            status,
            errno,
            errmsg,
            rule,
            api,
            url: call.url.to_owned(),
            detail,
        })
    };
    let name = api.errmsg_name();
    let invalid = |detail: String| {
        refuse(
            400,
            600009,
            format!("{name}:fail invalid url \"{}\"", call.url),
            Rule::InvalidUrl,
            detail,
        )
    };
    // Rule 1.
    let Some(url) = parsed else {
        return invalid("the URL does not parse as scheme://host[:port]/path".to_owned());
    };
    let scheme_fits = match api {
        Api::Request | Api::UploadFile | Api::DownloadFile => {
            matches!(url.scheme, Scheme::Http | Scheme::Https)
        }
        Api::ConnectSocket => matches!(url.scheme, Scheme::Ws | Scheme::Wss),
        Api::WebView => url.scheme == Scheme::Https,
        Api::Tcp => url.scheme == Scheme::Tcp,
    };
    if !scheme_fits {
        return invalid(format!(
            "{} takes {} URLs, not {}://",
            api.as_str(),
            schemes_of(api),
            url.scheme.as_str()
        ));
    }
    // Compared without case, in place (no upper-case copy per call).
    if api.is_http() && !METHODS.iter().any(|m| m.eq_ignore_ascii_case(call.method)) {
        return refuse(
            400,
            600009,
            format!("{name}:fail method is invalid"),
            Rule::InvalidUrl,
            format!(
                "{} is not a method wx.request takes ({})",
                call.method,
                METHODS.join(" ")
            ),
        );
    }
    // Rule 2.
    if matches!(&url.host, Host::Name(host) if host == FORBIDDEN_HOST) {
        return refuse(403, 600002, not_in_list(name), Rule::ForbiddenHost,
            "api.weixin.qq.com can't be called from a mini program (not even in debug mode): call it from your server".to_owned());
    }
    if switches.skip_domain_check {
        return Verdict::Allow;
    }
    let domain_list =
        |detail: String| refuse(403, 600002, not_in_list(name), Rule::DomainList, detail);
    let tcp_port = |port: u16| {
        refuse(403, 600002, not_in_list(name), Rule::TcpPort,
            format!("port {port} is one wx.createTCPSocket may not use (below 1024, databases, proxies, 8000-8100, ...)"))
    };
    // Rule 3.
    if let Some(ip) = url.host.ip() {
        return match lan_verdict(ip, call.client, switches.lan_prefix) {
            Ok(()) if api == Api::Tcp && tcp_port_forbidden(url.effective_port()) => {
                tcp_port(url.effective_port())
            }
            Ok(()) => Verdict::Allow,
            Err(detail) => domain_list(detail),
        };
    }
    if let Host::Name(host) = &url.host {
        if host == "localhost" || host.ends_with(".localhost") {
            return domain_list(format!("{host} is never allowed: use the machine's LAN address (same subnet as the phone) or a listed domain"));
        }
    }
    // Rule 4.
    if api == Api::Tcp && tcp_port_forbidden(url.effective_port()) {
        return tcp_port(url.effective_port());
    }
    let (list_name, list) = list_of(app, api);
    if list.iter().any(|entry| matches(entry, url, api)) {
        return Verdict::Allow;
    }
    domain_list(explain(url, list_name, list))
}

fn not_in_list(name: &str) -> String {
    format!("{name}:fail url not in domain list")
}

fn schemes_of(api: Api) -> &'static str {
    match api {
        Api::Request | Api::UploadFile | Api::DownloadFile => {
            "https:// (or http:// to a LAN address)"
        }
        Api::ConnectSocket => "wss:// (or ws:// to a LAN address)",
        Api::WebView => "https://",
        Api::Tcp => "tcp",
    }
}

/// The list an API is judged against, and its name as in the config.
pub(super) fn list_of(app: &AppConfig, api: Api) -> (&'static str, &[Origin]) {
    let d = &app.domains;
    match api {
        Api::Request => ("request", &d.request),
        Api::UploadFile => ("uploadFile", &d.upload_file),
        Api::DownloadFile => ("downloadFile", &d.download_file),
        Api::ConnectSocket => ("socket", &d.socket),
        Api::WebView => ("business_domains", &[]),
        Api::Tcp => ("tcp", &d.tcp),
    }
}

/// Scheme, host (case-insensitive) and port. An https entry without a port matches only URLs
/// without one; with a port, only that port. Socket entries match every port; tcp entries
/// without a port match every port.
pub(super) fn matches(entry: &Origin, url: &CallUrl, api: Api) -> bool {
    let Host::Name(host) = &url.host else {
        return false;
    };
    if entry.scheme != url.scheme || &entry.host != host {
        return false;
    }
    match api {
        Api::ConnectSocket => true,
        Api::WebView => false,
        Api::Tcp => entry.port.is_none_or(|p| p == url.effective_port()),
        _ => entry.port == url.port,
    }
}

/// The LAN rule: an IPv4 literal in the client's subnet that is not the client's own address.
fn lan_verdict(ip: IpAddr, client: IpAddr, prefix: u8) -> Result<(), String> {
    let client = client.to_canonical();
    // An IPv4-mapped IPv6 literal is an IPv6 literal: only IPv4 literals pass the LAN rule.
    let (IpAddr::V4(target), IpAddr::V4(own)) = (ip, client) else {
        return Err(format!(
            "{ip} is an IP address: only IPv4 LAN addresses in the client's /{prefix} are allowed (client {client}); list a domain instead"
        ));
    };
    if target == own {
        return Err(format!(
            "{ip} is the client's own address, which the LAN rule never allows"
        ));
    }
    let mask = if prefix == 0 {
        0
    } else {
        u32::MAX << (32 - u32::from(prefix.min(32)))
    };
    if u32::from(target) & mask == u32::from(own) & mask {
        Ok(())
    } else {
        Err(format!(
            "{ip} is an IP address outside the client's /{prefix} ({own}): IP addresses are allowed only on the client's LAN; list a domain instead"
        ))
    }
}

/// Why `url` matched nothing in `list`: the nearest entry and what it would take.
fn explain(url: &CallUrl, list_name: &str, list: &[Origin]) -> String {
    let origin = url.origin();
    if list.is_empty() {
        return format!(
            "the {list_name} list is empty: add {origin} in the admin console (and to the config)"
        );
    }
    let Host::Name(host) = &url.host else {
        return format!("{origin} is not in the {list_name} list");
    };
    let same_host: Vec<&Origin> = list.iter().filter(|e| &e.host == host).collect();
    if let Some(entry) = same_host.iter().find(|e| e.scheme != url.scheme) {
        return format!(
            "{origin} is not in the {list_name} list; the list has {entry} ({} only)",
            entry.scheme.as_str()
        );
    }
    if let Some(entry) = same_host.first() {
        return match (entry.port, url.port) {
            (None, Some(_)) => format!(
                "{origin} is not in the {list_name} list; the list has {entry}, which matches only URLs without a port"
            ),
            (Some(p), _) => format!(
                "{origin} is not in the {list_name} list; the list has {entry}, which matches only port {p}"
            ),
            (None, None) => format!("{origin} is not in the {list_name} list"),
        };
    }
    if let Some(parent) = list
        .iter()
        .find(|e| host.ends_with(&format!(".{}", e.host)))
    {
        return format!(
            "{host} is not in the {list_name} list; parent domains don't cover subdomains (the list has {parent}): add {origin}"
        );
    }
    let shown: Vec<String> = list.iter().take(3).map(ToString::to_string).collect();
    let more = if list.len() > 3 {
        format!(" and {} more", list.len() - 3)
    } else {
        String::new()
    };
    format!(
        "{origin} is not in the {list_name} list (it has {}{more})",
        shown.join(", ")
    )
}

/// May the proxy open a tunnel's upstream connection before its first call (so that the upstream
/// handshake runs while the client's own is under way)? Only to a host name that an HTTPS list
/// of the app names with this very port (request, uploadFile, downloadFile), or to any name but
/// `localhost` and the forbidden host with the skip switch on: a host no HTTPS call could reach
/// gets no connection ahead of a verdict. IP literals (the LAN rule) wait for their call.
pub fn may_open_ahead(app: &AppConfig, host: &str, port: u16, switches: Switches) -> bool {
    if host.starts_with('[') || host.parse::<IpAddr>().is_ok() {
        return false;
    }
    let name = host.strip_suffix('.').unwrap_or(host).to_ascii_lowercase();
    if name == FORBIDDEN_HOST || name == "localhost" {
        return false;
    }
    if switches.skip_domain_check {
        return true;
    }
    let d = &app.domains;
    d.request
        .iter()
        .chain(&d.upload_file)
        .chain(&d.download_file)
        .any(|e| e.host == name && e.port.map_or(port == 443, |p| p == port))
}

/// The CONNECT-level check: refuse a tunnel to `host:port` that no entry of any list could
/// match and that is not a LAN target (and `api.weixin.qq.com` always).
pub fn judge_connect(
    app: &AppConfig,
    client: IpAddr,
    host: &str,
    port: u16,
    switches: Switches,
) -> Verdict {
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    let shown = if port == 443 {
        format!("https://{host}")
    } else {
        format!("https://{host}:{port}")
    };
    let refuse = |rule, detail: String| {
        Verdict::Refuse(Refusal {
            status: 403,
            errno: 600002,
            errmsg: not_in_list("request"),
            rule,
            api: Api::Request,
            url: shown.clone(),
            detail,
        })
    };
    let name = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
    if name == FORBIDDEN_HOST {
        return refuse(Rule::ForbiddenHost,
            "api.weixin.qq.com can't be called from a mini program (not even in debug mode): call it from your server".to_owned());
    }
    if switches.skip_domain_check {
        return Verdict::Allow;
    }
    if let Ok(ip) = bare.parse::<IpAddr>() {
        return match lan_verdict(ip, client, switches.lan_prefix) {
            Ok(()) => Verdict::Allow,
            Err(detail) => refuse(Rule::DomainList, detail),
        };
    }
    let Ok(name) = crate::config::normalize_host(&name) else {
        return refuse(Rule::DomainList, format!("{host} is not a valid host name"));
    };
    let d = &app.domains;
    let https = d
        .request
        .iter()
        .chain(&d.upload_file)
        .chain(&d.download_file);
    let fits_https = |e: &Origin| e.host == name && e.port.map_or(port == 443, |p| p == port);
    let allowed = https.clone().any(fits_https) || d.socket.iter().any(|e| e.host == name);
    let in_tcp = d
        .tcp
        .iter()
        .any(|e| e.host == name && e.port.is_none_or(|p| p == port));
    if allowed || (in_tcp && !tcp_port_forbidden(port)) {
        return Verdict::Allow;
    }
    if in_tcp {
        return Verdict::Refuse(Refusal {
            status: 403,
            errno: 600002,
            errmsg: not_in_list(Api::Tcp.errmsg_name()),
            rule: Rule::TcpPort,
            api: Api::Tcp,
            url: format!("tcp://{name}:{port}"),
            detail: format!(
                "{name} is only in the tcp list, and port {port} is one wx.createTCPSocket may not use (below 1024, databases, proxies, 8000-8100, ...)"
            ),
        });
    }
    refuse(Rule::DomainList, format!(
        "{name}:{port} is in none of the app's lists (request, uploadFile, downloadFile, socket, tcp){}",
        if name == "localhost" { "; localhost is never allowed" } else { "" }
    ))
}
