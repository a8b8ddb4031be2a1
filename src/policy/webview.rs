//! `<web-view>` pages (业务域名): a web-view is a browser inside WeChat. Its navigations (top
//! documents and iframes) must be on a business domain or one of its subdomains, https, no port,
//! no IP; what the page loads itself (XHR, images, scripts) is not judged by the mini program's
//! lists. The proxy tells web-view traffic apart as browsers mark it: `Sec-Fetch-*` headers and
//! `miniProgram` in the User-Agent (the web-view's documented mark); `X-Wxsandbox-Api: webview`
//! marks a navigation from a test harness.

use super::url::{parse_url, Host};
use super::{Api, Refusal, Rule, Switches, Verdict};
use crate::config::{AppConfig, Scheme};

/// What a request is, as far as web-views go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebView {
    /// Not web-view traffic: a mini program API call (or an H5 build in a plain browser).
    No,
    /// A web-view page navigation (document or iframe): judged by the business domains.
    Navigation,
    /// A request the web-view page makes itself: not judged by the request lists.
    Subresource,
}

/// Is this request web-view traffic, and which kind?
pub fn webview_kind(
    api_header: Option<&str>,
    user_agent: Option<&str>,
    sec_fetch_dest: Option<&str>,
    has_sec_fetch: bool,
) -> WebView {
    if api_header.is_some_and(|a| a.trim().eq_ignore_ascii_case("webview")) {
        return WebView::Navigation;
    }
    let in_webview = has_sec_fetch
        && user_agent.is_some_and(|ua| ua.to_ascii_lowercase().contains("miniprogram"));
    if !in_webview {
        return WebView::No;
    }
    match sec_fetch_dest.map(str::trim) {
        Some(d) if d.eq_ignore_ascii_case("document") || d.eq_ignore_ascii_case("iframe") => {
            WebView::Navigation
        }
        _ => WebView::Subresource,
    }
}

/// A web-view navigation: https, no port, no IP, on a business domain or a subdomain of one.
/// The skip switch lifts it, as the devtools' checkbox does.
pub fn judge_navigation(app: &AppConfig, url: &str, switches: Switches) -> Verdict {
    if switches.skip_domain_check {
        return Verdict::Allow;
    }
    let refuse = |detail: String| {
        Verdict::Refuse(Refusal {
            status: 403,
            errno: 600002,
            errmsg: "web-view:fail url not in business domain list".to_owned(),
            rule: Rule::BusinessDomain,
            api: Api::WebView,
            url: url.to_owned(),
            detail,
        })
    };
    let Some(parsed) = parse_url(url) else {
        return refuse(format!("{url} does not parse as an https URL"));
    };
    if parsed.scheme != Scheme::Https {
        return refuse(format!("a web-view opens https:// pages only, not {url}"));
    }
    let Host::Name(host) = &parsed.host else {
        return refuse(format!(
            "{} is an IP address: business domains are names",
            parsed.host
        ));
    };
    if let Some(port) = parsed.port {
        return refuse(format!(
            "{host}:{port}: business domains can't carry a port; serve the page on 443"
        ));
    }
    let covered = app
        .business_domains
        .iter()
        .map(|d| d.to_ascii_lowercase())
        .any(|d| *host == d || host.ends_with(&format!(".{d}")));
    if covered {
        return Verdict::Allow;
    }
    let listed = if app.business_domains.is_empty() {
        "the app has no business domains".to_owned()
    } else {
        format!(
            "the business domains are {}",
            app.business_domains.join(", ")
        )
    };
    refuse(format!(
        "{host} is not a business domain ({listed}): add {host} or a parent domain in the admin console (开发管理 > 开发设置 > 业务域名) and to business_domains in the config"
    ))
}
