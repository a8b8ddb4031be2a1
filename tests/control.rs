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
        .get(format!("https://{API_HOST}/"))
        .header("x-wxsandbox-url", "https://unlisted.example/")
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
    assert_eq!(first["url"], "https://unlisted.example/");
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
    c.get(format!("https://{API_HOST}/"))
        .header("x-wxsandbox-url", "https://unlisted.example/")
        .send()
        .await
        .unwrap();
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
    c.get(format!("https://{API_HOST}/"))
        .header("x-wxsandbox-url", "https://unlisted.example/")
        .send()
        .await
        .unwrap();
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
