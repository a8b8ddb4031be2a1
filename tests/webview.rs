//! `<web-view>` business domains: a navigation (Sec-Fetch-Dest: document, `miniProgram` in the
//! User-Agent, or `X-Wxsandbox-Api: webview`) must be on a business domain or a subdomain of
//! one; a refused one gets an HTML page with the X-Wxsandbox-* headers; what the page loads is
//! not judged by the request lists; the skip switch lifts it; a plain browser (H5 build) is
//! still judged as wx.request.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;

const BIZ: &str = "biz.example.com";
const PAGE: &str = "shop.biz.example.com";
const ELSEWHERE: &str = "elsewhere.example.com";
const WEBVIEW_UA: &str = "Mozilla/5.0 (iPhone; CPU iPhone OS 17_0 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.50 NetType/WIFI Language/zh_CN miniProgram";

async fn world() -> (TestProxy, Backend) {
    init_crypto();
    let ca = TestCa::new("web-view test CA");
    let backend = start_backend(Some(
        ca.server_config(&[API_HOST, PAGE, ELSEWHERE], &[b"h2", b"http/1.1"]),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let to = format!("127.0.0.1:{}", backend.addr.port());
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    business_domains: [{BIZ}]\n"
    );
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[(API_HOST, to.clone()), (PAGE, to.clone()), (ELSEWHERE, to)],
        &apps,
    );
    (start_proxy_yaml(yaml, dir, &ca).await, backend)
}

fn navigate(c: &reqwest::Client, url: &str) -> reqwest::RequestBuilder {
    c.get(url)
        .header("user-agent", WEBVIEW_UA)
        .header("sec-fetch-dest", "document")
        .header("sec-fetch-mode", "navigate")
        .header("sec-fetch-site", "none")
}

#[tokio::test]
async fn navigations_are_judged_by_the_business_domains() {
    let (proxy, backend) = world().await;
    let c = client(&proxy);
    // A subdomain of a business domain opens.
    let r = navigate(&c, &format!("https://{PAGE}/index.html"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // Another domain: the refusal page, for a person, with the headers for tools.
    let r = navigate(&c, &format!("https://{ELSEWHERE}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(r.headers()["x-wxsandbox-rule"], "business-domain");
    assert_eq!(r.headers()["x-wxsandbox-errno"], "600002");
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    let page = r.text().await.unwrap();
    assert!(
        page.contains("无法打开该页面") && page.contains("不支持打开非业务域名"),
        "{page}"
    );
    assert!(
        page.contains(ELSEWHERE) && page.contains("业务域名"),
        "{page}"
    );
    // The harness's mark works the same way.
    let r = c
        .get(format!("https://{ELSEWHERE}/"))
        .header("x-wxsandbox-api", "webview")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        backend.count(),
        1,
        "only the allowed navigation reached a server"
    );
    let records = records_for(&proxy, ELSEWHERE).await;
    assert!(records
        .iter()
        .all(|r| r["rule"] == "business-domain" && r["api"] == "webview"));
}

#[tokio::test]
async fn what_the_page_loads_is_not_judged_by_the_request_lists() {
    let (proxy, backend) = world().await;
    let r = client(&proxy)
        .get(format!("https://{ELSEWHERE}/api/data"))
        .header("user-agent", WEBVIEW_UA)
        .header("sec-fetch-dest", "empty")
        .header("sec-fetch-mode", "cors")
        .header("origin", format!("https://{PAGE}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "an XHR from the web-view page passes");
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn a_plain_browser_is_still_judged_as_wx_request() {
    let (proxy, backend) = world().await;
    // An H5 build in a browser: Sec-Fetch headers, no miniProgram mark.
    let r = client(&proxy)
        .get(format!("https://{ELSEWHERE}/api/data"))
        .header(
            "user-agent",
            "Mozilla/5.0 (X11; Linux x86_64) Chrome/120.0 Safari/537.36",
        )
        .header("sec-fetch-dest", "empty")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    let (status, _, _, rule, _) = refusal_of(r).await;
    assert_eq!((status, rule.as_str()), (403, "domain-list"));
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn the_skip_switch_lifts_the_business_domain_check() {
    let (proxy, backend) = world().await;
    set_skip(&proxy, true).await;
    let r = navigate(&client(&proxy), &format!("https://{ELSEWHERE}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.count(), 1);
}

/// The web-view marks are the client's to send: for an app without business domains (no page
/// can exist) they lift nothing, and the call is judged as the API call it is (here a method
/// wx.request doesn't take, in a tunnel to a listed host).
#[tokio::test]
async fn the_web_view_marks_lift_nothing_for_an_app_without_pages() {
    let (proxy, backend, _ca) = setup(None).await;
    let r = client(&proxy)
        .patch(format!("https://{API_HOST}/api/data"))
        .header("user-agent", WEBVIEW_UA)
        .header("sec-fetch-dest", "empty")
        .header("sec-fetch-mode", "cors")
        .send()
        .await
        .unwrap();
    let (status, _, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!((status, rule.as_str()), (400, "invalid-url"));
    assert_eq!(errmsg, "request:fail method is invalid");
    assert_eq!(backend.count(), 0);
}
