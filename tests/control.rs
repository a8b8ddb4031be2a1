//! Issue 6: the control API through real sockets: state counts move, refused calls show up in
//! /api/log and live in /api/events with rule and errMsg, /api/har is HAR 1.2, /metrics parses
//! and grows, mutations need the token when one is set, credentials are redacted.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use common::*;
use futures_util::StreamExt;

async fn get_json(url: String) -> serde_json::Value {
    reqwest::get(url).await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn a_refused_call_appears_in_the_log_and_live_in_events() {
    let (proxy, _backend, _ca) = setup(None).await;
    // Subscribe first, then make the call.
    let events = reqwest::get(format!("{}/api/events", proxy.control_url()))
        .await
        .unwrap();
    assert_eq!(events.headers()["content-type"], "text/event-stream");
    let mut stream = events.bytes_stream();
    let r = client(&proxy)
        .get("http://unlisted.example/")
        .header("cookie", "session=secret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let mut seen = String::new();
    let found = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(chunk) = stream.next().await {
            seen.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
            if seen.contains("unlisted.example") {
                return true;
            }
        }
        false
    })
    .await;
    assert_eq!(found, Ok(true), "no live event within a second: {seen}");
    let line = seen
        .lines()
        .find(|l| l.starts_with("data: ") && l.contains("unlisted"))
        .unwrap();
    let event: serde_json::Value = serde_json::from_str(&line["data: ".len()..]).unwrap();
    assert_eq!(event["rule"], "domain-list");
    assert_eq!(event["errMsg"], "request:fail url not in domain list");
    assert_eq!(event["outcome"], "refused");
    assert_eq!(event["errno"], 600002);

    let log = get_json(format!("{}/api/log?limit=5", proxy.control_url())).await;
    let first = &log.as_array().unwrap()[0];
    assert_eq!(first["url"], "http://unlisted.example/");
    assert_eq!(first["rule"], "domain-list");
    for key in [
        "id",
        "ts",
        "appid",
        "client",
        "api",
        "method",
        "url",
        "outcome",
        "status",
        "errno",
        "errMsg",
        "rule",
        "detail",
        "queue_ms",
        "duration_ms",
        "bytes_up",
        "bytes_down",
    ] {
        assert!(first.get(key).is_some(), "{key} missing in {first}");
    }
    // Filters.
    let none = get_json(format!("{}/api/log?outcome=ok", proxy.control_url())).await;
    assert!(none
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["outcome"] == "ok"));
    let by_text = get_json(format!("{}/api/log?q=unlisted", proxy.control_url())).await;
    assert_eq!(by_text.as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn state_counts_move_while_calls_run() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(c.get(format!("https://{API_HOST}/slow/600")).send()))
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || async {
            http_in_flight(&proxy).await == 3
        })
        .await
    );
    let s = state(&proxy).await;
    assert_eq!(s["apps"][0]["appid"], APPID);
    assert_eq!(s["apps"][0]["instances"][0]["client"], "127.0.0.1");
    assert_eq!(s["apps"][0]["instances"][0]["state"], "foreground");
    for call in calls {
        call.await.unwrap().unwrap();
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            http_in_flight(&proxy).await == 0
        })
        .await
    );
    let log = get_json(format!("{}/api/log", proxy.control_url())).await;
    assert_eq!(
        log.as_array()
            .unwrap()
            .iter()
            .filter(|r| r["outcome"] == "ok")
            .count(),
        3
    );
}

#[tokio::test]
async fn har_is_valid_har_1_2_with_credentials_redacted() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    c.get(format!("https://{API_HOST}/a?x=1"))
        .header("authorization", "Bearer hunter2")
        .send()
        .await
        .unwrap();
    c.get("http://unlisted.example/").send().await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            get_json(format!("{}/api/log", proxy.control_url()))
                .await
                .as_array()
                .unwrap()
                .len()
                == 2
        })
        .await
    );
    let text = reqwest::get(format!("{}/api/har", proxy.control_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(!text.contains("hunter2"), "credentials leaked into the HAR");
    let har: serde_json::Value = serde_json::from_str(&text).unwrap();
    let log = &har["log"];
    assert_eq!(log["version"], "1.2");
    assert!(log["creator"]["name"].is_string() && log["creator"]["version"].is_string());
    let entries = log["entries"].as_array().unwrap();
    assert_eq!(entries.len(), 2);
    for e in entries {
        // HAR 1.2 required fields.
        let started = e["startedDateTime"].as_str().unwrap();
        assert!(
            time::OffsetDateTime::parse(started, &time::format_description::well_known::Rfc3339)
                .is_ok(),
            "{started} is not ISO 8601"
        );
        assert!(e["time"].is_number());
        for (obj, keys) in [
            (
                &e["request"],
                &[
                    "method",
                    "url",
                    "httpVersion",
                    "cookies",
                    "headers",
                    "queryString",
                    "headersSize",
                    "bodySize",
                ][..],
            ),
            (
                &e["response"],
                &[
                    "status",
                    "statusText",
                    "httpVersion",
                    "cookies",
                    "headers",
                    "content",
                    "redirectURL",
                    "headersSize",
                    "bodySize",
                ][..],
            ),
        ] {
            for k in keys {
                assert!(obj.get(*k).is_some(), "{k} missing in {obj}");
            }
        }
        assert!(
            e["response"]["content"]["size"].is_number()
                && e["response"]["content"]["mimeType"].is_string()
        );
        assert!(e["cache"].is_object());
        for k in ["send", "wait", "receive"] {
            assert!(e["timings"][k].is_number(), "timings.{k}");
        }
    }
    assert_eq!(entries[0]["request"]["queryString"][0]["name"], "x");
    let auth = entries[0]["request"]["headers"]
        .as_array()
        .unwrap()
        .iter()
        .find(|h| h["name"] == "authorization")
        .unwrap();
    assert_eq!(auth["value"], "<redacted>");
    assert_eq!(entries[1]["response"]["status"], 403);
}

/// Every sample line is `name{labels} value` with a float value.
fn parse_metrics(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            assert!(name.chars().next().unwrap().is_ascii_alphabetic(), "{l}");
            if let Some(open) = name.find('{') {
                assert!(name.ends_with('}'), "{l}");
                assert!(name[open..].contains('='), "{l}");
            }
            (
                name.to_owned(),
                value
                    .parse::<f64>()
                    .unwrap_or_else(|_| panic!("bad value in {l:?}")),
            )
        })
        .collect()
}

#[tokio::test]
async fn metrics_parse_and_grow() {
    let (proxy, _backend, _ca) = setup(None).await;
    let metrics = || async {
        reqwest::get(format!("{}/metrics", proxy.control_url()))
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let sum = |m: &[(String, f64)], prefix: &str| {
        m.iter()
            .filter(|(n, _)| n.starts_with(prefix))
            .map(|(_, v)| v)
            .sum::<f64>()
    };
    let before = parse_metrics(&metrics().await);
    let c = client(&proxy);
    c.get(format!("https://{API_HOST}/"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    c.get("http://unlisted.example/").send().await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            let m = parse_metrics(&metrics().await);
            sum(&m, "wxsandbox_calls_total") >= sum(&before, "wxsandbox_calls_total") + 2.0
        })
        .await
    );
    let text = metrics().await;
    let m = parse_metrics(&text);
    assert!(
        text.contains(
            "wxsandbox_calls_total{api=\"request\",outcome=\"refused\",rule=\"domain-list\"} 1"
        ),
        "{text}"
    );
    assert!(sum(&m, "wxsandbox_call_duration_seconds_count") >= 2.0);
    assert!(sum(&m, "wxsandbox_leaf_cache_misses_total") >= 1.0);
    assert!(m
        .iter()
        .any(|(n, _)| n == &format!("wxsandbox_http_in_flight{{appid=\"{APPID}\"}}")));
    assert!(text.contains("# TYPE wxsandbox_call_duration_seconds histogram"));
}

#[tokio::test]
async fn mutations_need_the_token_when_one_is_set() {
    init_crypto();
    let ca = TestCa::new("t");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let yaml = base_yaml(dir.path(), &trust, &[], &one_app()).replace(
        "control: {listen: 127.0.0.1:0}",
        "control: {listen: 127.0.0.1:0, token: s3cret}",
    );
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let http = reqwest::Client::new();
    let base = proxy.control_url();
    let calls = [
        (
            "PUT",
            format!("{base}/api/skip-domain-check"),
            "{\"enabled\":true}",
        ),
        ("POST", format!("{base}/api/apps/{APPID}/background"), ""),
        ("POST", format!("{base}/api/apps/{APPID}/foreground"), ""),
        ("PUT", format!("{base}/api/refusal"), "{\"style\":\"fail\"}"),
    ];
    for (method, url, body) in &calls {
        let m = http::Method::from_bytes(method.as_bytes()).unwrap();
        let r = http
            .request(m.clone(), url)
            .body(*body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {url} without a token");
        let r = http
            .request(m.clone(), url)
            .bearer_auth("wrong")
            .body(*body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 401, "{method} {url} with a wrong token");
        let r = http
            .request(m, url)
            .bearer_auth("s3cret")
            .body(*body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{method} {url} with the token");
    }
    // Reads stay open.
    assert_eq!(
        http.get(format!("{base}/api/state"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );
    // Unknown apps and bad clients.
    let r = http
        .post(format!("{base}/api/apps/wx9999999999999999/background"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = http
        .post(format!("{base}/api/apps/{APPID}/background?client=nope"))
        .bearer_auth("s3cret")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
}

/// `PUT /api/refusal` and the `refusal` of `GET /api/state`.
async fn put_refusal(proxy: &TestProxy, body: &str) -> (u16, serde_json::Value) {
    let r = reqwest::Client::new()
        .put(format!("{}/api/refusal", proxy.control_url()))
        .header("content-type", "application/json")
        .body(body.to_owned())
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(serde_json::Value::Null))
}

#[tokio::test]
async fn the_refusal_style_switches_at_run_time() {
    init_crypto();
    let ca = TestCa::new("t");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    // `sandbox:` given, so the tests' default (`answer`) is not added: the product's default.
    let rest = format!("sandbox: {{refusal: auto}}\n{}", one_app());
    let yaml = base_yaml(dir.path(), &trust, &[], &rest);
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let s = state(&proxy).await;
    assert_eq!(s["refusal"], "auto", "{s}");
    assert_eq!(s["skip_domain_check"], false, "{s}");
    assert!(s["apps"].is_array(), "{s}");

    // A fresh client a call: a refused call in `fail` style closes its connection.
    let plain = || client(&proxy).get("http://unlisted.example/");
    let with_header = || {
        client(&proxy)
            .get("http://unlisted.example/")
            .header("x-wxsandbox-appid", APPID)
    };
    // auto: fail without an X-Wxsandbox-* header, answer with one.
    assert!(plain().send().await.is_err(), "auto, no header: fails");
    assert_eq!(with_header().send().await.unwrap().status(), 403);

    // answer: every refusal answered.
    let (status, body) = put_refusal(&proxy, r#"{"style":"answer"}"#).await;
    assert_eq!(
        (status, &body),
        (200, &serde_json::json!({"refusal": "answer"}))
    );
    assert_eq!(state(&proxy).await["refusal"], "answer");
    let r = plain().send().await.unwrap();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (
            403,
            "600002",
            "request:fail url not in domain list",
            "domain-list"
        )
    );

    // fail: even a call with a sandbox header fails, unless it asks for an answer itself.
    let (status, _) = put_refusal(&proxy, r#"{"style":"fail"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(state(&proxy).await["refusal"], "fail");
    assert!(with_header().send().await.is_err(), "fail, with a header");
    let r = plain()
        .header("x-wxsandbox-refusal", "answer")
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.status(),
        403,
        "the call's own X-Wxsandbox-Refusal comes first"
    );

    // Anything else is a 400, and the style stays.
    for bad in [
        r#"{"style":"never"}"#,
        r#"{"style":"FAIL"}"#,
        r#"{"style":""}"#,
        r#"{"style":1}"#,
        r#"{"enabled":true}"#,
        r#"{}"#,
        "[]",
        "fail",
        "",
    ] {
        let (status, body) = put_refusal(&proxy, bad).await;
        assert_eq!(status, 400, "{bad} -> {body}");
        assert!(body["error"].is_string(), "{bad} -> {body}");
        assert_eq!(state(&proxy).await["refusal"], "fail", "after {bad}");
    }
    // Only PUT.
    let r = reqwest::Client::new()
        .post(format!("{}/api/refusal", proxy.control_url()))
        .header("content-type", "application/json")
        .body(r#"{"style":"auto"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    // A mutation like the others: not from another site, JSON only.
    let r = reqwest::Client::new()
        .put(format!("{}/api/refusal", proxy.control_url()))
        .header("content-type", "text/plain")
        .body(r#"{"style":"auto"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = reqwest::Client::new()
        .put(format!("{}/api/refusal", proxy.control_url()))
        .header("content-type", "application/json")
        .header("origin", "https://evil.example")
        .body(r#"{"style":"auto"}"#)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    assert_eq!(state(&proxy).await["refusal"], "fail");
    let (status, _) = put_refusal(&proxy, r#"{"style":"auto"}"#).await;
    assert_eq!(status, 200);
    assert_eq!(state(&proxy).await["refusal"], "auto");
}

#[tokio::test]
async fn dashboard_and_qr_are_served() {
    let (proxy, _backend, _ca) = setup(None).await;
    let page = reqwest::get(format!("{}/", proxy.control_url()))
        .await
        .unwrap();
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    let html = page.text().await.unwrap();
    for id in [
        "skip-switch",
        "id=\"calls\"",
        "id=\"apps\"",
        "/api/events",
        "qr.svg",
        "/ca.pem",
    ] {
        assert!(html.contains(id), "{id} missing from the dashboard");
    }
    let qr = reqwest::get(format!("{}/qr.svg", proxy.control_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        qr.starts_with("<?xml") || qr.starts_with("<svg"),
        "{}",
        &qr[..qr.len().min(80)]
    );
    assert!(qr.contains("<path") || qr.contains("<rect"));
}

/// One hand-written request to the control port (reqwest would set its own Host), with
/// `Connection: close`; the status, the head and the body (de-chunked when chunked).
async fn raw(
    proxy: &TestProxy,
    method: &str,
    path: &str,
    headers: &[(&str, String)],
    body: &str,
) -> (u16, String, Vec<u8>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut request = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(body);
    let mut s = tokio::net::TcpStream::connect(proxy.running.control_addr)
        .await
        .unwrap();
    s.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, s.read_to_end(&mut answer))
        .await
        .expect("the control port answers within WAIT")
        .unwrap();
    let split = answer
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a whole response head");
    let head = String::from_utf8_lossy(&answer[..split]).into_owned();
    let status: u16 = head
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line in {head}"));
    let mut body = answer[split + 4..].to_vec();
    if head_header(&head, "transfer-encoding").is_some_and(|t| t.eq_ignore_ascii_case("chunked")) {
        body = dechunk(&body);
    }
    (status, head, body)
}

/// The payload of a chunked body (panics on a malformed one).
fn dechunk(mut rest: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    loop {
        let eol = rest
            .windows(2)
            .position(|w| w == b"\r\n")
            .expect("a chunk size line");
        let line = std::str::from_utf8(&rest[..eol]).unwrap();
        let size = usize::from_str_radix(line.split(';').next().unwrap().trim(), 16).unwrap();
        rest = &rest[eol + 2..];
        if size == 0 {
            return out;
        }
        out.extend_from_slice(&rest[..size]);
        assert_eq!(&rest[size..size + 2], b"\r\n", "chunk without its CRLF");
        rest = &rest[size + 2..];
    }
}

/// The `error` of a refused control request.
fn error_of(body: &[u8]) -> String {
    let v: serde_json::Value = serde_json::from_slice(body)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(body)));
    v["error"].as_str().unwrap().to_owned()
}

fn instance_state(s: &serde_json::Value) -> String {
    s["apps"][0]["instances"][0]["state"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn the_host_must_name_the_control_address() {
    let (proxy, _backend, _ca) = setup(None).await;
    let port = proxy.running.control_addr.port();
    for host in [
        "evil.example:8081".to_owned(),
        format!("evil.example:{port}"),
        "evil.example".to_owned(),
        format!("localhost.evil.example:{port}"),
        format!("127.0.0.1.nip.io:{port}"),
        format!("192.0.2.1:{port}"),
        format!("localhost:{port}@evil.example"),
    ] {
        let (status, head, body) =
            raw(&proxy, "GET", "/api/har", &[("Host", host.clone())], "").await;
        assert_eq!(status, 403, "Host: {host}\n{head}");
        assert_eq!(
            head_header(&head, "content-type"),
            Some("application/json"),
            "{head}"
        );
        assert!(error_of(&body).contains("Host"), "{host}");
    }
    // No Host at all (HTTP/1.0): refused too.
    let (status, _, _) = raw(&proxy, "GET", "/api/har", &[], "").await;
    assert_eq!(status, 403);
    // An absolute-form target naming another host.
    let (status, _, _) = raw(
        &proxy,
        "GET",
        "http://evil.example/api/state",
        &[("Host", format!("127.0.0.1:{port}"))],
        "",
    )
    .await;
    assert_eq!(status, 403);
    for host in [
        format!("localhost:{port}"),
        "LOCALHOST".to_owned(),
        format!("127.0.0.1:{port}"),
        "127.0.0.1".to_owned(),
        "127.0.0.2:9999".to_owned(),
        format!("[::1]:{port}"),
        "[::1]".to_owned(),
    ] {
        let (status, head, body) =
            raw(&proxy, "GET", "/api/har", &[("Host", host.clone())], "").await;
        assert_eq!(status, 200, "Host: {host}\n{head}");
        let har: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(har["log"]["version"], "1.2");
    }
    // A rebinding page can't flip the switch, even when same-origin with its own Host.
    let evil = format!("evil.example:{port}");
    let (status, _, _) = raw(
        &proxy,
        "PUT",
        "/api/skip-domain-check",
        &[
            ("Host", evil.clone()),
            ("Origin", format!("http://{evil}")),
            ("Content-Type", "application/json".to_owned()),
        ],
        r#"{"enabled":true}"#,
    )
    .await;
    assert_eq!(status, 403);
    assert_eq!(state(&proxy).await["skip_domain_check"], false);
}

#[tokio::test]
async fn cross_site_and_non_json_mutations_are_refused() {
    let (proxy, _backend, _ca) = setup(None).await;
    let port = proxy.running.control_addr.port();
    // One call makes the instance.
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(instance_state(&state(&proxy).await), "foreground");
    let host = format!("127.0.0.1:{port}");
    let background = format!("/api/apps/{APPID}/background");
    // (extra headers, body, what the error names)
    type Case<'a> = (Vec<(&'a str, String)>, &'a str, &'a str);
    let refused: Vec<Case<'_>> = vec![
        (
            vec![("Origin", "http://evil.example".to_owned())],
            "",
            "Origin",
        ),
        (vec![("Origin", "null".to_owned())], "", "Origin"),
        // Same host, another scheme or name: not the same origin.
        (vec![("Origin", format!("https://{host}"))], "", "Origin"),
        (
            vec![("Origin", format!("http://localhost:{port}"))],
            "",
            "Origin",
        ),
        (
            vec![("Origin", "http://127.0.0.1:1".to_owned())],
            "",
            "Origin",
        ),
        // The simple requests a page may send anywhere.
        (
            vec![("Content-Type", "text/plain".to_owned())],
            "{}",
            "Content-Type",
        ),
        (
            vec![(
                "Content-Type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            "a=b",
            "Content-Type",
        ),
        (
            vec![("Content-Type", "multipart/form-data; boundary=x".to_owned())],
            "",
            "Content-Type",
        ),
    ];
    for (extra, body, why) in refused {
        let mut headers = vec![("Host", host.clone())];
        headers.extend(extra.clone());
        let (status, head, answer) = raw(&proxy, "POST", &background, &headers, body).await;
        assert_eq!(status, 403, "{extra:?}\n{head}");
        assert!(error_of(&answer).contains(why), "{extra:?}");
        assert_eq!(
            instance_state(&state(&proxy).await),
            "foreground",
            "{extra:?} moved the app"
        );
    }
    // The skip switch from the page itself: JSON with a charset, same-origin Origin.
    let (status, head, _) = raw(
        &proxy,
        "PUT",
        "/api/skip-domain-check",
        &[
            ("Host", host.clone()),
            ("Origin", format!("http://{host}")),
            ("Content-Type", "application/json; charset=utf-8".to_owned()),
        ],
        r#"{"enabled":true}"#,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(state(&proxy).await["skip_domain_check"], true);
    // The same through localhost.
    let (status, head, _) = raw(
        &proxy,
        "PUT",
        "/api/skip-domain-check",
        &[
            ("Host", format!("localhost:{port}")),
            ("Origin", format!("http://localhost:{port}")),
            ("Content-Type", "application/json".to_owned()),
        ],
        r#"{"enabled":false}"#,
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(state(&proxy).await["skip_domain_check"], false);
    // curl -X POST: no body, no Content-Type, no Origin.
    let (status, head, _) = raw(&proxy, "POST", &background, &[("Host", host.clone())], "").await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(instance_state(&state(&proxy).await), "background");
    // The dashboard's foreground button: same origin, JSON type, no body.
    let (status, head, _) = raw(
        &proxy,
        "POST",
        &format!("/api/apps/{APPID}/foreground"),
        &[
            ("Host", host.clone()),
            ("Origin", format!("http://{host}")),
            ("Content-Type", "application/json".to_owned()),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{head}");
    assert_eq!(instance_state(&state(&proxy).await), "foreground");
    // Reads don't care about Origin (the browser's CORS keeps their answers from other sites).
    let (status, _, _) = raw(
        &proxy,
        "GET",
        "/api/state",
        &[
            ("Host", host.clone()),
            ("Origin", "http://evil.example".to_owned()),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200);
}

#[tokio::test]
async fn records_are_clipped_and_log_and_har_stream() {
    use wxsandbox::calllog::{MAX_HEADER_VALUE_BYTES, MAX_URL_BYTES};
    let (proxy, _backend, _ca) = setup(None).await;
    let port = proxy.running.control_addr.port();
    // HTTP/1.1 in the tunnel; the head stays under the 64 KiB a head may take.
    let c = client_builder(&proxy).http1_only().build().unwrap();
    let big = "h".repeat(48 * 1024);
    let query = "q".repeat(10 * 1024);
    const CALLS: usize = 50;
    for i in 0..CALLS {
        let r = c
            .get(format!("https://{API_HOST}/big/{i}?q={query}"))
            .header("x-big", &big)
            .send()
            .await
            .unwrap();
        // The test backend speaks HTTP/2 to the proxy and answers 431 past its 16 KiB header
        // list; the call is recorded with its request head either way.
        assert!(
            matches!(r.status().as_u16(), 200 | 431),
            "call {i}: {}",
            r.status()
        );
        r.bytes().await.unwrap();
    }
    // The marker says how much was cut; some slack for it.
    let marked = |text: &str, cap: usize| {
        text.len() <= cap + "…[truncated 1234567 bytes]".len() && text.contains("…[truncated ")
    };
    assert!(
        eventually(Duration::from_secs(3), || async {
            get_json(format!("{}/api/log?limit=100", proxy.control_url()))
                .await
                .as_array()
                .unwrap()
                .len()
                == CALLS
        })
        .await
    );
    let (status, head, body) = raw(
        &proxy,
        "GET",
        "/api/log?limit=100",
        &[("Host", format!("127.0.0.1:{port}"))],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(head_header(&head, "content-length").is_none(), "{head}");
    assert_eq!(head_header(&head, "transfer-encoding"), Some("chunked"));
    let log: serde_json::Value = serde_json::from_slice(&body).unwrap();
    let records = log.as_array().unwrap();
    assert_eq!(records.len(), CALLS);
    for r in records {
        let url = r["url"].as_str().unwrap();
        assert!(
            url.starts_with(&format!("https://{API_HOST}/big/")),
            "{url}"
        );
        assert!(marked(url, MAX_URL_BYTES), "{} bytes", url.len());
    }

    let (status, head, body) = raw(
        &proxy,
        "GET",
        "/api/har",
        &[("Host", format!("localhost:{port}"))],
        "",
    )
    .await;
    assert_eq!(status, 200);
    assert!(head_header(&head, "content-length").is_none(), "{head}");
    assert_eq!(head_header(&head, "transfer-encoding"), Some("chunked"));
    assert_eq!(head_header(&head, "content-type"), Some("application/json"));
    // 50 entries of a few KiB, not of 60 KiB.
    assert!(body.len() < CALLS * 16 * 1024, "{} bytes", body.len());
    let har: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(har["log"]["version"], "1.2");
    let entries = har["log"]["entries"].as_array().unwrap();
    assert_eq!(entries.len(), CALLS);
    for e in entries {
        assert!(marked(e["request"]["url"].as_str().unwrap(), MAX_URL_BYTES));
        let headers = e["request"]["headers"].as_array().unwrap();
        let value = headers
            .iter()
            .find(|h| h["name"] == "x-big")
            .and_then(|h| h["value"].as_str())
            .unwrap();
        assert!(
            marked(value, MAX_HEADER_VALUE_BYTES),
            "{} bytes",
            value.len()
        );
        assert!(value.starts_with("hhhh"));
        for h in headers {
            assert!(h["value"].as_str().unwrap().len() <= MAX_HEADER_VALUE_BYTES + 32);
        }
    }
    // Oldest first.
    assert!(entries[0]["request"]["url"]
        .as_str()
        .unwrap()
        .starts_with(&format!("https://{API_HOST}/big/0?")));
}

/// The install page's iOS downloads, as served through the proxy (and the profile on the control
/// port): content types, and the profile parsed as a property list whose root payload carries
/// exactly the CA's DER.
#[tokio::test]
async fn ios_downloads_carry_the_ca() {
    let (proxy, _backend, _ca) = setup(None).await;
    let der = proxy.running.shared.ca.cert_der().to_vec();
    let c = client(&proxy);

    let page = c
        .get("http://wxsandbox.cert/")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(page.contains("href=\"/ca.mobileconfig\"") && page.contains("href=\"/ca-ios.pem\""));

    let pem = c
        .get("http://wxsandbox.cert/ca-ios.pem")
        .send()
        .await
        .unwrap();
    assert_eq!(pem.status(), 200);
    assert_eq!(pem.headers()["content-type"], "application/x-x509-ca-cert");
    let disposition = pem.headers()["content-disposition"].to_str().unwrap();
    assert!(disposition.starts_with("inline"), "{disposition}");
    assert_eq!(pem.text().await.unwrap(), proxy.ca_pem);

    let through_proxy = c
        .get("http://wxsandbox.cert/ca.mobileconfig")
        .send()
        .await
        .unwrap();
    let on_control = reqwest::get(format!("{}/ca.mobileconfig", proxy.control_url()))
        .await
        .unwrap();
    let mut profiles = Vec::new();
    for r in [through_proxy, on_control] {
        assert_eq!(r.status(), 200);
        assert_eq!(
            r.headers()["content-type"],
            "application/x-apple-aspen-config"
        );
        profiles.push(r.bytes().await.unwrap());
    }
    assert_eq!(profiles[0], profiles[1], "one profile, stable");

    let profile: plist::Value = plist::from_bytes(&profiles[0]).unwrap();
    let top = profile.as_dictionary().unwrap();
    let text =
        |d: &plist::Dictionary, k: &str| d.get(k).and_then(|v| v.as_string()).map(str::to_owned);
    assert_eq!(text(top, "PayloadType").as_deref(), Some("Configuration"));
    assert_eq!(
        top.get("PayloadVersion")
            .and_then(|v| v.as_signed_integer()),
        Some(1)
    );
    let payloads = top.get("PayloadContent").unwrap().as_array().unwrap();
    assert_eq!(payloads.len(), 1);
    let root = payloads[0].as_dictionary().unwrap();
    assert_eq!(
        text(root, "PayloadType").as_deref(),
        Some("com.apple.security.root")
    );
    assert_eq!(
        root.get("PayloadVersion")
            .and_then(|v| v.as_signed_integer()),
        Some(1)
    );
    for d in [top, root] {
        for key in ["PayloadIdentifier", "PayloadDisplayName", "PayloadUUID"] {
            assert!(text(d, key).is_some_and(|v| !v.is_empty()), "{key} missing");
        }
        let uuid = text(d, "PayloadUUID").unwrap();
        let groups: Vec<usize> = uuid.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{uuid}");
        assert!(
            uuid.chars().all(|c| c == '-' || c.is_ascii_hexdigit()),
            "{uuid}"
        );
    }
    assert_ne!(text(top, "PayloadUUID"), text(root, "PayloadUUID"));
    assert_ne!(
        text(top, "PayloadIdentifier"),
        text(root, "PayloadIdentifier")
    );
    assert_eq!(
        root.get("PayloadContent").unwrap().as_data().unwrap(),
        &der[..]
    );
}
