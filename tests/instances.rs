//! Issue 4: app instances over time, through the real proxy: the 10-call limit (queue and fail),
//! per-instance slots, the 5-socket limit, timeouts, background interruption, response decoding,
//! and a mini program folder imported as config. Timings are shortened in config, never slept
//! for real.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

fn app_with(limits: &str, extra: &str) -> String {
    format!(
        "apps:\n  - appid: {APPID}\n    domains:\n      request: [https://{API_HOST}]\n      socket: [wss://{WS_HOST}]\n    limits: {limits}\n{extra}"
    )
}

fn api(path: &str) -> String {
    format!("https://{API_HOST}{path}")
}

#[tokio::test]
async fn thirty_parallel_calls_queue_behind_ten_slots_and_all_succeed() {
    let (proxy, backend, _ca) = setup(Some(app_with(
        "{requests: 10, sockets: 5, overflow: queue}",
        "",
    )))
    .await;
    let c = client(&proxy);
    let calls: Vec<_> = (0..30)
        .map(|_| tokio::spawn(c.get(api("/slow/150")).send()))
        .collect();
    // While they run, the state shows 10 in flight and the rest queued.
    let saw_queue = eventually(Duration::from_secs(5), || async {
        let s = state(&proxy).await;
        let i = &s["apps"][0]["instances"][0];
        i["http_in_flight"] == 10 && i["http_queued"].as_u64().unwrap_or(0) > 0
    })
    .await;
    assert!(
        saw_queue,
        "state never showed 10 in flight with a queue: {}",
        state(&proxy).await
    );
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert_eq!(
        backend.gauge.max(),
        10,
        "the backend saw {} at once",
        backend.gauge.max()
    );
    assert_eq!(backend.count(), 30);
}

#[tokio::test]
async fn overflow_fail_refuses_the_eleventh_call() {
    let (proxy, backend, _ca) = setup(Some(app_with(
        "{requests: 10, sockets: 5, overflow: fail}",
        "",
    )))
    .await;
    let c = client(&proxy);
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(c.get(api("/slow/800")).send()))
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || async {
            backend.gauge.now() == 10
        })
        .await
    );
    let r = c.get(api("/eleventh")).send().await.unwrap();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), rule.as_str()),
        (429, "600007", "concurrency")
    );
    assert_eq!(errmsg, "request:fail exceed max task count");
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 200);
    }
    assert!(backend.seen().iter().all(|s| s.path != "/eleventh"));
}

#[tokio::test]
async fn each_appid_and_each_client_ip_gets_its_own_ten() {
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    limits: {{overflow: fail}}\n  - appid: {OTHER_APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    limits: {{overflow: fail}}\n"
    );
    let (proxy, backend, _ca) = setup(Some(apps)).await;
    let mut calls = Vec::new();
    for ip in [1u8, 2] {
        let c = client_builder(&proxy)
            .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, ip)))
            .build()
            .unwrap();
        for appid in [APPID, OTHER_APPID] {
            for _ in 0..10 {
                calls.push(tokio::spawn(
                    c.get(api("/slow/1500"))
                        .header("x-wxsandbox-appid", appid)
                        .send(),
                ));
            }
        }
    }
    for call in calls {
        assert_eq!(
            call.await.unwrap().unwrap().status(),
            200,
            "no instance may exceed its own 10"
        );
    }
    assert_eq!(backend.gauge.max(), 40);
    let s = state(&proxy).await;
    assert_eq!(
        s["apps"][0]["instances"].as_array().unwrap().len(),
        2,
        "{s}"
    );
}

async fn open_ws(proxy: &TestProxy) -> Result<Wss, tokio_tungstenite::tungstenite::Error> {
    open_wss(proxy, "/ws").await
}

#[tokio::test]
async fn the_sixth_socket_is_refused_while_five_stay_open() {
    let (proxy, _backend, _ca) = setup(Some(app_with("{sockets: 5}", ""))).await;
    let mut open = Vec::new();
    for _ in 0..5 {
        open.push(open_ws(&proxy).await.unwrap());
    }
    match open_ws(&proxy).await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            assert_eq!(response.status(), 429);
            assert_eq!(
                response.headers().get("x-wxsandbox-errno").unwrap(),
                "600007"
            );
            assert_eq!(
                response.headers().get("x-wxsandbox-errmsg").unwrap(),
                "createSocketTask:fail wcwss taskID=6 exceed max concurrent count"
            );
        }
        other => panic!(
            "expected a 429 for the 6th socket, got {:?}",
            other.map(|_| "a socket")
        ),
    }
    // The five still work.
    for ws in &mut open {
        futures_util::SinkExt::send(ws, Message::Text("still here".into()))
            .await
            .unwrap();
        let echoed = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(echoed, Message::Text("still here".into()));
    }
    // Closing one frees its slot.
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            state(&proxy).await["apps"][0]["instances"][0]["sockets"] == 4
        })
        .await
    );
    assert!(open_ws(&proxy).await.is_ok());
}

#[tokio::test]
async fn slots_come_back_after_aborts_timeouts_and_interrupts() {
    let (proxy, _backend, _ca) = setup(Some(app_with("{background_grace_ms: 50}", ""))).await;
    // 100 calls aborted by the client.
    let impatient = client_builder(&proxy)
        .timeout(Duration::from_millis(30))
        .build()
        .unwrap();
    for _ in 0..100 {
        assert!(impatient.get(api("/slow/5000")).send().await.is_err());
    }
    assert!(
        eventually(Duration::from_secs(3), || async {
            http_in_flight(&proxy).await == 0
        })
        .await,
        "aborted calls leaked slots: {}",
        state(&proxy).await
    );
    // Timeouts.
    let c = client(&proxy);
    for _ in 0..12 {
        let r = c
            .get(api("/slow/5000"))
            .header("x-wxsandbox-timeout", "20")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 504);
    }
    assert_eq!(http_in_flight(&proxy).await, 0);
    // Interrupts.
    let calls: Vec<_> = (0..10)
        .map(|_| tokio::spawn(c.get(api("/slow/5000")).send()))
        .collect();
    assert!(
        eventually(Duration::from_secs(3), || async {
            http_in_flight(&proxy).await == 10
        })
        .await
    );
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    for call in calls {
        assert_eq!(call.await.unwrap().unwrap().status(), 503);
    }
    assert_eq!(http_in_flight(&proxy).await, 0);
    assert_eq!(set_phase(&proxy, APPID, "foreground", None).await, 200);
    assert_eq!(c.get(api("/after")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn timeout_by_header_and_by_config_with_the_exact_answer() {
    let extra = "    network_timeout: {request: 150}\n";
    let (proxy, _backend, _ca) = setup(Some(app_with("{requests: 10}", extra))).await;
    let c = client(&proxy);
    let started = Instant::now();
    let r = c.get(api("/slow/3000")).send().await.unwrap();
    let elapsed = started.elapsed();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (504, "5", "request:fail timeout", "timeout")
    );
    assert!(
        elapsed < Duration::from_millis(2500),
        "config timeout took {elapsed:?}"
    );
    // The header wins over the config.
    let r = c
        .get(api("/slow/100"))
        .header("x-wxsandbox-timeout", "2000")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = c
        .get(api("/slow/1000"))
        .header("x-wxsandbox-timeout", "30")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 504);
}

#[tokio::test]
async fn a_timeout_after_the_response_started_closes_the_connection() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let r = c
        .get(api("/trickle/3000"))
        .header("x-wxsandbox-timeout", "300")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "headers were sent before the deadline");
    assert!(
        r.bytes().await.is_err(),
        "the body must be cut, not completed"
    );
}

#[tokio::test]
async fn background_cuts_in_flight_calls_and_refuses_new_ones() {
    let (proxy, _backend, _ca) = setup(Some(app_with("{background_grace_ms: 200}", ""))).await;
    let c = client(&proxy);
    let slow = tokio::spawn(c.get(api("/slow/5000")).send());
    let mut ws = open_ws(&proxy).await.unwrap();
    assert!(
        eventually(Duration::from_secs(3), || async {
            http_in_flight(&proxy).await == 1
        })
        .await
    );
    let sent_at = Instant::now();
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    // New calls are refused at once.
    let r = c.get(api("/new")).send().await.unwrap();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (503, "600003", "request:fail interrupted", "background")
    );
    // The in-flight call is cut after the grace, with the exact answer.
    let r = slow.await.unwrap().unwrap();
    let cut_after = sent_at.elapsed();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (503, "600003", "request:fail interrupted", "interrupted")
    );
    assert!(
        cut_after >= Duration::from_millis(150) && cut_after < Duration::from_millis(2000),
        "cut after {cut_after:?}"
    );
    // The socket gets close 1000 "interrupted".
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Normal);
            assert_eq!(frame.reason, "interrupted");
        }
        other => panic!("expected close 1000 interrupted, got {other:?}"),
    }
    // Foreground restores.
    assert_eq!(set_phase(&proxy, APPID, "foreground", None).await, 200);
    assert_eq!(c.get(api("/back")).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn foreground_within_the_grace_cancels_the_cut() {
    let (proxy, _backend, _ca) = setup(Some(app_with("{background_grace_ms: 400}", ""))).await;
    let c = client(&proxy);
    let slow = tokio::spawn(c.get(api("/slow/800")).send());
    assert!(
        eventually(Duration::from_secs(3), || async {
            http_in_flight(&proxy).await == 1
        })
        .await
    );
    // Background while the call is in flight, then back before the grace ends: the call goes on.
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    assert_eq!(http_in_flight(&proxy).await, 1);
    assert_eq!(set_phase(&proxy, APPID, "foreground", None).await, 200);
    assert_eq!(slow.await.unwrap().unwrap().status(), 200);
    assert_eq!(
        set_phase(&proxy, "wx00000000000000ff", "background", None).await,
        404
    );
}

#[tokio::test]
async fn gbk_and_big5_arrive_as_utf8_one_bom_removed_arraybuffer_untouched() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let raw = |ct: &str, bytes: &[u8]| {
        api(&format!(
            "/raw?ct={}&hex={}",
            ct.replace(';', "%3B")
                .replace('=', "%3D")
                .replace('/', "%2F"),
            hex(bytes)
        ))
    };
    let (gbk, _, _) = encoding_rs::GBK.encode("你好，世界");
    let r = c
        .get(raw("text/plain;charset=gbk", &gbk))
        .send()
        .await
        .unwrap();
    assert_eq!(r.text().await.unwrap(), "你好，世界");
    let (big5, _, _) = encoding_rs::BIG5.encode("臺灣");
    let r = c
        .get(raw("application/json;charset=big5", &big5))
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap(), "臺灣".as_bytes());
    let two_boms = [&[0xEF, 0xBB, 0xBF][..], &[0xEF, 0xBB, 0xBF], b"{\"a\":1}"].concat();
    let r = c
        .get(raw("application/json", &two_boms))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.bytes().await.unwrap().as_ref(),
        &two_boms[3..],
        "exactly one BOM removed"
    );
    let r = c
        .get(raw("text/plain;charset=gbk", &gbk))
        .header("x-wxsandbox-response-type", "arraybuffer")
        .send()
        .await
        .unwrap();
    assert_eq!(r.bytes().await.unwrap().as_ref(), &gbk[..]);
}

#[tokio::test]
async fn a_mini_program_folder_is_imported() {
    init_crypto();
    let ca = TestCa::new("wxsandbox test upstream CA");
    let backend = start_backend(Some(ca.server_config(&[API_HOST], &[b"http/1.1"]))).await;
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("miniprogram");
    std::fs::create_dir_all(&project).unwrap();
    std::fs::write(
        project.join("project.config.json"),
        format!("{{\"appid\":\"{OTHER_APPID}\",\"projectname\":\"demo\"}}"),
    )
    .unwrap();
    std::fs::write(
        project.join("project.private.config.json"),
        format!("{{\"appid\":\"{APPID}\"}}"),
    )
    .unwrap();
    std::fs::write(
        project.join("app.json"),
        "{\"pages\":[\"pages/index/index\"],\"networkTimeout\":{\"request\":120}}",
    )
    .unwrap();
    let trust = ca.write(dir.path());
    let apps = format!(
        "apps:\n  - project: {}\n    domains: {{request: [https://{API_HOST}]}}\n",
        project.display()
    );
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[(API_HOST, format!("127.0.0.1:{}", backend.addr.port()))],
        &apps,
    );
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    assert_eq!(
        proxy.running.shared.config().apps[0].appid,
        APPID,
        "project.private.config.json wins"
    );
    let r = client(&proxy).get(api("/slow/2000")).send().await.unwrap();
    let (status, _, errmsg, _, body) = refusal_of(r).await;
    assert_eq!(
        (status, errmsg.as_str()),
        (504, "request:fail timeout"),
        "app.json networkTimeout applies"
    );
    assert_eq!(body["appid"], APPID);
}

/// The instance's calls over time: in flight, and the latest record of `needle`.
async fn settled(proxy: &TestProxy, needle: &str, outcome: &str) -> bool {
    let records = records_for(proxy, needle).await;
    http_in_flight(proxy).await == 0 && records.len() == 1 && records[0]["outcome"] == outcome
}

/// Deadlines 1: an HTTP/1.1 client that stops reading a 20 MiB response is cut at its
/// `X-Wxsandbox-Timeout` (2 s) on the proxy's own clock: within 3 s the slot is free, the call
/// recorded `timeout`, and the next call from that address is served at once.
#[tokio::test]
async fn a_client_that_stops_reading_is_cut_at_its_deadline_http1() {
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    limits: {{requests: 1}}\n"
    );
    let (proxy, _backend, _ca) = setup(Some(apps)).await;
    let mut tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    tls.write_all(
        format!("GET /bytes/20971520?stalled HTTP/1.1\r\nHost: {API_HOST}\r\nX-Wxsandbox-Timeout: 2000\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut first = [0u8; 1024];
    let n = tls.read(&mut first).await.unwrap();
    assert!(String::from_utf8_lossy(&first[..n]).starts_with("HTTP/1.1 200"));
    // The client reads nothing more.
    let started = tokio::time::Instant::now();
    assert!(
        eventually(Duration::from_secs(3), || settled(
            &proxy, "stalled", "timeout"
        ))
        .await,
        "{:?}",
        records_for(&proxy, "stalled").await
    );
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "not before the deadline"
    );
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/next"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(tls);
}

/// Deadlines 1, HTTP/2: a client with a zero stream window is cut at the deadline as well; its
/// stream is reset and the connection's other calls go on.
#[tokio::test]
async fn a_client_with_a_zero_window_is_cut_at_its_deadline_http2() {
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    limits: {{requests: 1}}\n"
    );
    let (proxy, _backend, _ca) = setup(Some(apps)).await;
    let mut h2 = h2_via_tunnel(&proxy, API_HOST, Some(0)).await;
    let req = http::Request::get(format!("https://{API_HOST}/bytes/20971520?zero-window"))
        .header("x-wxsandbox-timeout", "2000")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        eventually(Duration::from_secs(3), || settled(
            &proxy,
            "zero-window",
            "timeout"
        ))
        .await,
        "{:?}",
        records_for(&proxy, "zero-window").await
    );
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/next"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    // The stalled stream was reset: its body ends with an error, not a truncated success.
    let body = tokio::time::timeout(Duration::from_secs(3), resp.into_body().collect()).await;
    assert!(
        matches!(body, Ok(Err(_))),
        "the stalled stream ends with an error"
    );
    assert!(!h2.is_closed(), "only the stream ends, not the connection");
}

/// Deadlines 1, background: a phone whose app went to the background is a client that stops
/// reading; the cut still comes `background_grace_ms` after the event.
#[tokio::test]
async fn a_client_that_stops_reading_is_interrupted_after_the_background_grace() {
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    limits: {{requests: 1, background_grace_ms: 300}}\n"
    );
    let (proxy, _backend, _ca) = setup(Some(apps)).await;
    let mut h2 = h2_via_tunnel(&proxy, API_HOST, Some(0)).await;
    let req = http::Request::get(format!("https://{API_HOST}/bytes/20971520?backgrounded"))
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    assert!(
        eventually(Duration::from_secs(3), || settled(
            &proxy,
            "backgrounded",
            "interrupted"
        ))
        .await,
        "{:?}",
        records_for(&proxy, "backgrounded").await
    );
    assert_eq!(set_phase(&proxy, APPID, "foreground", None).await, 200);
    let r = client(&proxy)
        .get(format!("https://{API_HOST}/next"))
        .timeout(Duration::from_secs(2))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    drop(resp);
}
