//! Issue 3: every call judged as the WeChat client would, through the real proxy: the refusal
//! rows of SPEC section 4 with their exact status, errno, errMsg and rule; refused calls never
//! reach the backend; allowed calls carry the platform Referer and no X-Wxsandbox-* header; the
//! skip switch flips at run time.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};

use common::*;
use std::time::Duration;

use tokio::io::AsyncWriteExt;

fn two_apps() -> String {
    format!(
        "apps:\n  - appid: {APPID}\n    domains:\n      request: [https://{API_HOST}]\n      socket: [wss://{WS_HOST}]\n  - appid: {OTHER_APPID}\n    version: '3'\n    domains:\n      request: [https://{OTHER_HOST}]\n"
    )
}

#[tokio::test]
async fn allowed_call_gets_the_platform_referer_and_loses_sandbox_headers() {
    let (proxy, backend, _ca) = setup(None).await;
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/v1/user?id=1"))
        .header("referer", "https://evil.example/")
        .header("x-wxsandbox-appid", APPID)
        .header("x-wxsandbox-api", "request")
        .header("origin", "https://servicewechat.com")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    let h = &seen[0].headers;
    assert_eq!(
        h.get("referer").unwrap(),
        &format!("https://servicewechat.com/{APPID}/devtools/page-frame.html")
    );
    assert!(
        h.keys().all(|k| !k.as_str().starts_with("x-wxsandbox-")),
        "{h:?}"
    );
    assert_eq!(
        h.get("origin").unwrap(),
        "https://servicewechat.com",
        "other headers pass as sent"
    );
    assert_eq!(seen[0].path, "/v1/user?id=1");
}

#[tokio::test]
async fn unlisted_host_is_refused_at_the_connect_and_never_reaches_upstream() {
    let (proxy, backend, _ca) = setup(None).await;
    let mut s = tokio::net::TcpStream::connect(proxy.running.proxy_addr)
        .await
        .unwrap();
    s.write_all(
        format!("CONNECT {OTHER_HOST}:443 HTTP/1.1\r\nHost: {OTHER_HOST}:443\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(head_header(&head, "x-wxsandbox-errno"), Some("600002"));
    assert_eq!(
        head_header(&head, "x-wxsandbox-errmsg"),
        Some("request:fail url not in domain list")
    );
    assert_eq!(head_header(&head, "x-wxsandbox-rule"), Some("domain-list"));
    let json: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(json["errno"], 600002);
    assert_eq!(json["appid"], APPID);
    assert!(
        json["detail"].as_str().unwrap().contains("request"),
        "{json}"
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn explicit_443_is_not_the_listed_origin_without_port() {
    let (proxy, backend, _ca) = setup(None).await;
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/v1/user"))
        .header("x-wxsandbox-url", format!("https://{API_HOST}:443/v1/user"))
        .send()
        .await
        .unwrap();
    let (status, errno, errmsg, rule, body) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (
            403,
            "600002",
            "request:fail url not in domain list",
            "domain-list"
        )
    );
    assert_eq!(body["url"], format!("https://{API_HOST}:443/v1/user"));
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(&format!("https://{API_HOST}")) && detail.contains("port"),
        "{detail}"
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn invalid_url_is_400_600009() {
    let (proxy, backend, _ca) = setup(None).await;
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/"))
        .header("x-wxsandbox-url", "htp:/broken url")
        .send()
        .await
        .unwrap();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), rule.as_str()),
        (400, "600009", "invalid-url")
    );
    assert_eq!(errmsg, "request:fail invalid url \"htp:/broken url\"");
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn api_weixin_qq_com_is_refused_even_with_the_skip_switch() {
    let (proxy, backend, _ca) = setup(None).await;
    for skip in [false, true] {
        set_skip(&proxy, skip).await;
        let mut s = tokio::net::TcpStream::connect(proxy.running.proxy_addr)
            .await
            .unwrap();
        s.write_all(
            b"CONNECT api.weixin.qq.com:443 HTTP/1.1\r\nHost: api.weixin.qq.com:443\r\n\r\n",
        )
        .await
        .unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 403"), "skip={skip}: {head}");
        assert_eq!(
            head_header(&head, "x-wxsandbox-rule"),
            Some("forbidden-host")
        );
        assert_eq!(
            head_header(&head, "x-wxsandbox-errmsg"),
            Some("request:fail url not in domain list")
        );
        // A hint header can't name it from a tunnel to a listed host: that is another target.
        let r = client(&proxy)
            .get(format!("https://{API_HOST}/"))
            .header("x-wxsandbox-url", "https://api.weixin.qq.com/cgi-bin/token")
            .send()
            .await
            .unwrap();
        let (status, errno, _, rule, _) = refusal_of(r).await;
        assert_eq!(
            (status, errno.as_str(), rule.as_str()),
            (400, "600009", "invalid-url"),
            "skip={skip}"
        );
    }
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn unknown_app_is_407_with_proxy_authenticate() {
    let (proxy, backend, _ca) = setup(Some(two_apps())).await;
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 407);
    assert_eq!(
        r.headers().get("proxy-authenticate").unwrap(),
        "Basic realm=\"wxsandbox appid\""
    );
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (407, "600000", "request:fail unknown appid", "appid")
    );
    assert_eq!(backend.count(), 0);
}

#[tokio::test]
async fn apps_are_told_apart_by_proxy_user_header_and_referer() {
    let (proxy, backend, _ca) = setup(Some(two_apps())).await;
    // Proxy-Authorization user on the CONNECT (how a phone authenticates).
    let (status, _) =
        get_via_tunnel(&proxy, OTHER_HOST, "/", &proxy_auth_header(OTHER_APPID)).await;
    assert_eq!(status, 200);
    // The same host is not in the first app's list: X-Wxsandbox-Appid names that one.
    let r = client(&proxy)
        .get(format!("https://{OTHER_HOST}/"))
        .header("x-wxsandbox-appid", APPID)
        .send()
        .await
        .unwrap();
    let (status, _, _, rule, body) = refusal_of(r).await;
    assert_eq!((status, rule.as_str()), (403, "domain-list"));
    assert_eq!(body["appid"], APPID);
    // A servicewechat Referer, as real WeChat clients send it.
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/"))
        .header(
            "referer",
            format!("https://servicewechat.com/{APPID}/0/page-frame.html"),
        )
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let seen = backend.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        seen[0].headers.get("referer").unwrap(),
        &format!("https://servicewechat.com/{OTHER_APPID}/3/page-frame.html")
    );
}

#[tokio::test]
async fn ip_and_localhost_are_refused_but_lan_neighbours_are_allowed() {
    let (proxy, _backend, _ca) = setup(None).await;
    // From 127.0.0.1: its own address and localhost are refused.
    for url in [
        "http://127.0.0.1:9/",
        "http://localhost:9/",
        "http://LOCALHOST.:9/",
        "http://[::1]:9/",
        "http://0x7f.1:9/",
    ] {
        let r = client(&proxy).get(url).send().await.unwrap();
        let (status, errno, errmsg, rule, _) = refusal_of(r).await;
        assert_eq!(
            (status, errno.as_str(), rule.as_str()),
            (403, "600002", "domain-list"),
            "{url}"
        );
        assert_eq!(errmsg, "request:fail url not in domain list");
    }
    // http:// to a listed https host.
    let r = client(&proxy)
        .get(format!("http://{API_HOST}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(refusal_of(r).await.3, "domain-list");
    // A simulator at 127.0.0.2 may reach 127.0.0.1 (same /24, not itself): plain HTTP passes.
    let plain = start_backend(None).await;
    let sim = client_builder(&proxy)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let r = sim
        .get(format!("http://127.0.0.1:{}/", plain.addr.port()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(plain.count(), 1);
}

#[tokio::test]
async fn skip_switch_flips_at_run_time_both_ways() {
    let (proxy, backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let state: serde_json::Value = reqwest::get(format!("{}/api/state", proxy.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["skip_domain_check"], false);
    let refused = c.get(format!("https://{OTHER_HOST}/")).send().await;
    assert!(refused.is_err() || refused.unwrap().status() == 403);
    set_skip(&proxy, true).await;
    let state: serde_json::Value = reqwest::get(format!("{}/api/state", proxy.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(state["skip_domain_check"], true);
    let r = c
        .get(format!("https://{OTHER_HOST}/skipped"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(backend.count(), 1);
    set_skip(&proxy, false).await;
    let c2 = client(&proxy); // a new connection: the CONNECT is judged again
    let refused = c2.get(format!("https://{OTHER_HOST}/again")).send().await;
    assert!(refused.is_err() || refused.unwrap().status() == 403);
    // A connection opened while the switch was on is judged per request once it is off.
    let r = c
        .get(format!("https://{OTHER_HOST}/on-old-connection"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(backend.count(), 1);
}

#[tokio::test]
async fn refusal_answers_carry_cors_headers_for_pages() {
    let (proxy, _backend, _ca) = setup(None).await;
    let r = client(&proxy)
        .get("http://unlisted.example/")
        .header("origin", "http://localhost:5173")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(
        r.headers().get("access-control-allow-origin").unwrap(),
        "http://localhost:5173"
    );
    let expose = r
        .headers()
        .get("access-control-expose-headers")
        .unwrap()
        .to_str()
        .unwrap();
    assert!(expose.contains("X-Wxsandbox-Errmsg"));
}

#[tokio::test]
async fn upstream_refused_is_502_with_the_chromium_error() {
    init_crypto();
    let ca = TestCa::new("t");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    // A port nobody listens on.
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[(API_HOST, format!("127.0.0.1:{port}"))],
        &one_app(),
    );
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/"))
        .send()
        .await
        .unwrap();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), rule.as_str()),
        (502, "600001", "upstream")
    );
    assert_eq!(errmsg, "request:fail -102:net::ERR_CONNECTION_REFUSED");
}

/// Hardening 1: `X-Wxsandbox-Url` may only say how the real target was written. With a listed
/// host in the header, a client can't reach another host, plain http, api.weixin.qq.com or the
/// control API; a default port written or not is the same target.
#[tokio::test]
async fn the_url_hint_cannot_name_another_target() {
    let (proxy, backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let control = proxy.running.control_addr;
    // Plain http to the control port, dressed as a listed https host: refused, switch untouched.
    let r = c
        .put(format!(
            "http://127.0.0.1:{}/api/skip-domain-check",
            control.port()
        ))
        .header("x-wxsandbox-url", format!("https://{API_HOST}/"))
        .header("content-type", "application/json")
        .body(r#"{"enabled":true}"#)
        .send()
        .await
        .unwrap();
    let (status, errno, _, rule, body) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), rule.as_str()),
        (400, "600009", "invalid-url")
    );
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.contains(API_HOST) && detail.contains("127.0.0.1"),
        "{detail}"
    );
    assert_eq!(state(&proxy).await["skip_domain_check"], false);
    // Inside a tunnel to a listed host: the hint names api.weixin.qq.com, another port, http,
    // or (as browsers read it) another host behind a backslash.
    for hint in [
        "https://api.weixin.qq.com/cgi-bin/token".to_owned(),
        format!("https://{API_HOST}:8443/"),
        format!("http://{API_HOST}/"),
        format!("https://evil.example\\@{API_HOST}/"),
    ] {
        let r = c
            .get(format!("https://{API_HOST}/x"))
            .header("x-wxsandbox-url", &hint)
            .send()
            .await
            .unwrap();
        let (status, _, errmsg, rule, _) = refusal_of(r).await;
        assert_eq!((status, rule.as_str()), (400, "invalid-url"), "{hint}");
        assert!(
            errmsg.starts_with("request:fail invalid url"),
            "{hint}: {errmsg}"
        );
    }
    assert_eq!(backend.count(), 0, "no refused call reached the backend");
    // The same target written with its default port, or in another case: allowed.
    for hint in [
        format!("https://{API_HOST}:443/v"),
        "https://API.example.com./v".to_owned(),
    ] {
        let r = c
            .get(format!("https://{API_HOST}/v"))
            .header("x-wxsandbox-url", &hint)
            .send()
            .await
            .unwrap();
        // `:443` is not in the list (the list entry has no port): judged, not escaped.
        let want = if hint.contains(":443") { 403 } else { 200 };
        assert_eq!(r.status(), want, "{hint}");
    }
}

/// Hardening 2: the control port is never reachable through the proxy: not by the LAN rule
/// (a simulator at 127.0.0.2 may reach 127.0.0.1), not with the skip switch.
#[tokio::test]
async fn the_control_port_is_not_reachable_through_the_proxy() {
    let (proxy, _backend, _ca) = setup(None).await;
    let control = proxy.running.control_addr;
    let sim = client_builder(&proxy)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    for skip in [false, true] {
        set_skip(&proxy, skip).await;
        for url in [
            format!("http://127.0.0.1:{}/api/state", control.port()),
            format!("http://127.0.0.1:{}/api/har", control.port()),
            format!("http://127.0.0.1:{}/", proxy.running.proxy_addr.port()),
        ] {
            let r = sim.get(&url).send().await.unwrap();
            let (status, errno, _, rule, body) = refusal_of(r).await;
            assert_eq!(
                (status, errno.as_str(), rule.as_str()),
                (403, "600002", "forbidden-host"),
                "skip={skip} {url}: {body}"
            );
        }
    }
}

/// Hardening 4: a trailing dot is the same host: judged and routed as `api.example.com`
/// (through `upstream.map`), never by real DNS.
#[tokio::test]
async fn a_trailing_dot_is_judged_and_routed_as_the_same_host() {
    let (proxy, backend, _ca) = setup(None).await;
    let (status, body) = get_via_tunnel(&proxy, &format!("{API_HOST}."), "/dot", "").await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(backend.count(), 1, "the mapped backend got the call");
    // Absolute-form, upper case with a dot: the same host (http to it is refused, judged alike).
    let r = client(&proxy)
        .get("http://API.EXAMPLE.COM./plain")
        .send()
        .await
        .unwrap();
    let (status, _, _, rule, body) = refusal_of(r).await;
    assert_eq!((status, rule.as_str()), (403, "domain-list"));
    assert!(
        body["url"]
            .as_str()
            .unwrap()
            .starts_with("http://api.example.com/"),
        "{body}"
    );
}

/// Hardening 11: a CONNECT no API could allow is refused at the CONNECT, with its rule: a host
/// only in the tcp list, at a port wx.createTCPSocket may not use.
#[tokio::test]
async fn a_connect_only_a_forbidden_tcp_port_could_match_is_refused_with_its_rule() {
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains:\n      request: [https://{API_HOST}]\n      tcp: [tcp://db.example.com]\n"
    );
    let (proxy, _backend, _ca) = setup(Some(apps)).await;
    let (_s, head) = connect_tunnel(proxy.running.proxy_addr, "db.example.com:3306", "").await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(head_header(&head, "x-wxsandbox-rule"), Some("tcp-port"));
    assert_eq!(
        head_header(&head, "x-wxsandbox-errmsg"),
        Some("createTCPSocket:fail url not in domain list")
    );
    // A LAN address at that port is judged by the tcp rule too (inside the tunnel).
    let (mut s, head) = connect_tunnel(proxy.running.proxy_addr, "127.0.0.9:3306", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"hello").await.unwrap();
    assert!(closed_within(&mut s, Duration::from_secs(5)).await);
    let records = records_for(&proxy, "tcp://127.0.0.9:3306").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["rule"], "tcp-port");
}

/// Hardening 13: a hint with non-ASCII bytes is judged, not ignored.
#[tokio::test]
async fn a_non_ascii_url_hint_is_judged() {
    let (proxy, backend, _ca) = setup(None).await;
    let hint = "xx中文://bad";
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/"))
        .header(
            "x-wxsandbox-url",
            http::HeaderValue::from_bytes(hint.as_bytes()).unwrap(),
        )
        .send()
        .await
        .unwrap();
    let (status, errno, errmsg_header, rule, body) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), rule.as_str()),
        (400, "600009", "invalid-url")
    );
    assert_eq!(body["errMsg"], "request:fail invalid url \"xx中文://bad\"");
    assert_eq!(
        errmsg_header,
        "request:fail invalid url \"xx%E4%B8%AD%E6%96%87://bad\""
    );
    assert_eq!(backend.count(), 0);
}
