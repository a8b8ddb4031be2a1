//! Refusal styles (SPEC section 4): `fail` ends a refused call at the transport (HTTP/1.1: the
//! connection closes with no response byte; HTTP/2: the stream is reset), `answer` sends the
//! HTTP refusal; `auto` answers calls that carry an `X-Wxsandbox-*` header. Call, then app,
//! then global. Every refusal is recorded once whatever its style.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::Empty;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Two apps: the first refuses by the global style, the second says `answer` itself.
fn apps(global: &str) -> String {
    format!(
        "sandbox: {{refusal: {global}}}\napps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n  - appid: {OTHER_APPID}\n    refusal: answer\n    domains: {{request: [https://{API_HOST}]}}\n"
    )
}

/// One raw HTTP/1.1 request inside a tunnel; everything the proxy sent back before closing
/// (bounded), and whether it closed.
async fn raw_h1(proxy: &TestProxy, connect_headers: &str, request: &str) -> (String, bool) {
    let mut tls = tls_via_tunnel(proxy, API_HOST, connect_headers).await;
    tls.write_all(request.as_bytes()).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let closed = loop {
        match tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break true,
            Ok(Ok(n)) => {
                got.extend_from_slice(&buf[..n]);
                if got.windows(4).any(|w| w == b"\r\n\r\n") && got.ends_with(b"}") {
                    break false;
                }
            }
            Err(_) => break false,
        }
    };
    (String::from_utf8_lossy(&got).into_owned(), closed)
}

fn get(path: &str, extra: &str) -> String {
    format!("GET {path} HTTP/1.1\r\nHost: {API_HOST}\r\n{extra}\r\n")
}

#[tokio::test]
async fn fail_style_closes_http1_without_a_byte_and_records_once() {
    let (proxy, backend, _ca) = setup(Some(apps("fail"))).await;
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    let auth = proxy_auth_header(APPID);
    let (got, closed) = raw_h1(&proxy, &auth, &get("/in-background", "")).await;
    assert!(closed, "the connection is closed");
    assert!(got.is_empty(), "no response byte: {got:?}");
    let records = records_for(&proxy, "/in-background").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["rule"], "background");
    assert_eq!(records[0]["errMsg"], "request:fail interrupted");
    assert_eq!(backend.count(), 0);
    assert_eq!(
        proxy.running.shared.refused_total(),
        1,
        "--fail-on-refusal counts it"
    );
}

#[tokio::test]
async fn fail_style_resets_only_the_http2_stream() {
    let (proxy, _backend, _ca) = setup(Some(apps("fail"))).await;
    let mut h2 = h2_via_tunnel(&proxy, API_HOST, None).await;
    let req = |path: &str, hint: Option<&str>| {
        let mut b = http::Request::get(format!("https://{API_HOST}{path}"))
            .header("x-wxsandbox-appid", APPID);
        if let Some(h) = hint {
            // A refusal without any X-Wxsandbox-* header would need another rule; the global
            // style (fail) wins over auto here, so the hint header is fine.
            b = b.header("x-wxsandbox-url", h);
        }
        b.body(Empty::<Bytes>::new()).unwrap()
    };
    let refused = h2
        .send_request(req("/reset", Some("https://api.weixin.qq.com/")))
        .await;
    let err = refused.expect_err("the refused stream is reset");
    let h2_err = std::error::Error::source(&err)
        .and_then(|e| e.downcast_ref::<h2::Error>())
        .map(|e| e.reason());
    assert_ne!(
        h2_err,
        Some(Some(h2::Reason::REFUSED_STREAM)),
        "a reset that invites a retry: {err:?}"
    );
    let ok = h2.send_request(req("/after", None)).await.unwrap();
    assert_eq!(ok.status(), 200, "the connection's other calls go on");
    let records = records_for(&proxy, "api.weixin.qq.com").await;
    assert_eq!(records.len(), 1, "{records:?}");
    assert_eq!(records[0]["rule"], "invalid-url");
}

#[tokio::test]
async fn auto_answers_harnesses_and_fails_the_rest() {
    let (proxy, _backend, _ca) = setup(Some(apps("auto"))).await;
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    let auth = proxy_auth_header(APPID);
    // No X-Wxsandbox-* header: a phone, a browser: fail.
    let (got, closed) = raw_h1(&proxy, &auth, &get("/plain-client", "")).await;
    assert!(closed && got.is_empty(), "{got:?}");
    // Any X-Wxsandbox-* header: a harness that speaks the contract: answer.
    let (got, _) = raw_h1(
        &proxy,
        &auth,
        &get("/harness", "X-Wxsandbox-Api: request\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    assert!(
        got.contains("x-wxsandbox-rule: background")
            || got.contains("X-Wxsandbox-Rule: background"),
        "{got}"
    );
}

#[tokio::test]
async fn the_call_then_the_app_then_the_global_style_wins() {
    let (proxy, _backend, _ca) = setup(Some(apps("fail"))).await;
    for appid in [APPID, OTHER_APPID] {
        assert_eq!(set_phase(&proxy, appid, "background", None).await, 200);
    }
    let first = proxy_auth_header(APPID);
    let second = proxy_auth_header(OTHER_APPID);
    // Global fail.
    let (got, closed) = raw_h1(&proxy, &first, &get("/global", "")).await;
    assert!(closed && got.is_empty(), "{got:?}");
    // The app says answer.
    let (got, _) = raw_h1(&proxy, &second, &get("/app", "")).await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    // The call says answer, over the global fail.
    let (got, _) = raw_h1(
        &proxy,
        &first,
        &get("/call-answer", "X-Wxsandbox-Refusal: answer\r\n"),
    )
    .await;
    assert!(got.starts_with("HTTP/1.1 503"), "{got}");
    // The call says fail, over the app's answer.
    let (got, closed) = raw_h1(
        &proxy,
        &second,
        &get("/call-fail", "X-Wxsandbox-Refusal: fail\r\n"),
    )
    .await;
    assert!(closed && got.is_empty(), "{got:?}");
    for path in ["/global", "/app", "/call-answer", "/call-fail"] {
        assert_eq!(records_for(&proxy, path).await.len(), 1, "{path}");
    }
}

#[tokio::test]
async fn connect_refusals_are_answered_in_every_style() {
    let (proxy, _backend, _ca) = setup(Some(apps("fail"))).await;
    let auth = proxy_auth_header(APPID);
    let (_s, head) = connect_tunnel(proxy.running.proxy_addr, "unlisted.example:443", &auth).await;
    assert!(head.starts_with("HTTP/1.1 403"), "{head}");
    assert_eq!(head_header(&head, "x-wxsandbox-rule"), Some("domain-list"));
}

#[tokio::test]
async fn a_timeout_in_fail_style_ends_at_the_transport_at_the_deadline() {
    let (proxy, _backend, _ca) = setup(Some(apps("fail"))).await;
    let auth = proxy_auth_header(APPID);
    // A short per-call timeout, and an explicit fail (any X-Wxsandbox-* header means answer
    // under auto; the global style here is fail anyway).
    let started = tokio::time::Instant::now();
    let (got, closed) = raw_h1(
        &proxy,
        &auth,
        &get(
            "/slow/3000?t",
            "X-Wxsandbox-Timeout: 300\r\nX-Wxsandbox-Refusal: fail\r\n",
        ),
    )
    .await;
    assert!(closed && got.is_empty(), "{got:?}");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "at the deadline, not the server's answer"
    );
    let records = records_for(&proxy, "/slow/3000?t").await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0]["outcome"], "timeout");
}

/// A browser resends a request whose reused HTTP/1.1 connection closed without an answer
/// (Chromium does, on a fresh connection): one page call stays one refused record.
#[tokio::test]
async fn a_resent_refused_call_is_recorded_once() {
    let (proxy, _backend, _ca) = setup(Some(apps("fail"))).await;
    let auth = proxy_auth_header(APPID);
    let mut tls = tls_via_tunnel(&proxy, API_HOST, &auth).await;
    tls.write_all(get("/first", "").as_bytes()).await.unwrap();
    let mut buf = [0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    // The refused call on the reused connection: closed without a byte.
    tls.write_all(get("/resent", "").as_bytes()).await.unwrap();
    assert!(closed_within(&mut tls, Duration::from_secs(5)).await);
    // The browser's resend, first on a new connection: refused the same way, recorded once.
    let (got, closed) = raw_h1(&proxy, &auth, &get("/resent", "")).await;
    assert!(closed && got.is_empty(), "{got:?}");
    assert_eq!(records_for(&proxy, "/resent").await.len(), 1);
    // The ticket is used up: the app's own next call is recorded again.
    let (_, closed) = raw_h1(&proxy, &auth, &get("/resent", "")).await;
    assert!(closed);
    assert_eq!(records_for(&proxy, "/resent").await.len(), 2);
}
