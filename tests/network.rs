//! Network profiles through the real proxy on 127.0.0.1: bandwidth shaping (one call, ten
//! sharing an instance's link), network change, offline and back, a lost call that stalls until
//! its timeout, the per-call header, and the `network:` config findings.
//!
//! The figure as it is: 1 MiB at 1 Mbit/s (1000 kbit/s = 125 000 B/s) takes
//! (1 048 576 - 1 500 burst) / 125 000 = 8.38 s of real time, within ±10% (the one test here
//! that takes seconds: its duration is the thing measured). The other tests use small figures.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::{Duration, Instant};

use common::*;
use futures_util::StreamExt;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

const CHANGE: &str = "errcode:10011 cronet_error_code:0 error_msg:network change, cancel all task";

/// One app with `network:` YAML in front of it.
fn with_network(network: &str, extra_app: &str) -> String {
    format!("network:\n{network}\n{}{extra_app}", one_app())
}

fn api(path: &str) -> String {
    format!("https://{API_HOST}{path}")
}

async fn put_network(proxy: &TestProxy, appid: &str, body: serde_json::Value) -> (u16, String) {
    let r = reqwest::Client::new()
        .put(format!("{}/api/apps/{appid}/network", proxy.control_url()))
        .json(&body)
        .send()
        .await
        .unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

fn within(elapsed: Duration, expected: f64, tolerance: f64) -> bool {
    let s = elapsed.as_secs_f64();
    (expected * (1.0 - tolerance)..=expected * (1.0 + tolerance)).contains(&s)
}

#[tokio::test]
async fn a_download_on_a_1_mbit_profile_takes_its_bytes_over_the_rate() {
    let (proxy, _backend, _ca) = setup(Some(with_network(
        "  default: slow\n  profiles:\n    slow: {down_kbps: 1000}",
        "",
    )))
    .await;
    let c = client(&proxy);
    // A first call opens the tunnel and fills nothing: the link is per instance.
    assert_eq!(c.get(api("/warm")).send().await.unwrap().status(), 200);
    let started = Instant::now();
    let body = c
        .get(api("/bytes/1048576"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let took = started.elapsed();
    assert_eq!(body.len(), 1_048_576);
    assert!(body.iter().enumerate().all(|(i, b)| *b == pattern(i)));
    assert!(within(took, 8.38, 0.10), "1 MiB at 1 Mbit/s took {took:?}");
    let records = records_for(&proxy, "/bytes/1048576").await;
    assert_eq!(records[0]["network"], "slow");
    assert_eq!(
        state(&proxy).await["apps"][0]["instances"][0]["network"],
        "slow"
    );
}

#[tokio::test]
async fn ten_parallel_calls_share_the_instance_bandwidth() {
    let (proxy, _backend, _ca) = setup(Some(with_network(
        "  default: slow\n  profiles:\n    slow: {down_kbps: 1000}",
        "",
    )))
    .await;
    let c = client(&proxy);
    assert_eq!(c.get(api("/warm")).send().await.unwrap().status(), 200);
    let started = Instant::now();
    let calls: Vec<_> = (0..10)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move {
                let r = c.get(api("/bytes/25600")).send().await.unwrap();
                r.bytes().await.unwrap().len()
            })
        })
        .collect();
    for call in calls {
        assert_eq!(call.await.unwrap(), 25_600);
    }
    let took = started.elapsed();
    // 256 000 bytes at 125 000 B/s: ~2.04 s shared; 0.2 s if each call had its own link.
    assert!(within(took, 2.04, 0.10), "10 x 25 KiB took {took:?}");
}

#[tokio::test]
async fn a_network_change_fails_calls_and_sockets_in_flight_and_later_calls_pass() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let calls: Vec<_> = (0..3)
        .map(|_| tokio::spawn(c.get(api("/slow/5000")).send()))
        .collect();
    let mut ws = open_wss(&proxy, "/ws").await.unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            http_in_flight(&proxy).await == 3
        })
        .await
    );
    let sent_at = Instant::now();
    assert_eq!(set_phase(&proxy, APPID, "network-change", None).await, 200);
    for call in calls {
        let (status, errno, errmsg, rule, _) = refusal_of(call.await.unwrap().unwrap()).await;
        assert_eq!(
            (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
            (
                502,
                "600001",
                &*format!("request:fail {CHANGE}"),
                "network-change"
            )
        );
    }
    assert!(sent_at.elapsed() < Duration::from_secs(2), "not at once");
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    match close {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Away);
            assert_eq!(frame.reason, format!("createSocketTask:fail {CHANGE}"));
        }
        other => panic!("expected close 1001 with the errMsg, got {other:?}"),
    }
    // A call made after the change passes.
    let r = c.get(api("/after")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        eventually(Duration::from_secs(3), || async {
            records_for(&proxy, "/ws")
                .await
                .first()
                .is_some_and(|r| r["rule"] == "network-change" && r["outcome"] == "interrupted")
        })
        .await,
        "the socket's record: {:?}",
        records_for(&proxy, "/ws").await
    );
    let slow = records_for(&proxy, "/slow/5000").await;
    assert_eq!(slow.len(), 3);
    assert!(slow.iter().all(|r| r["outcome"] == "interrupted"));
}

#[tokio::test]
async fn offline_refuses_new_calls_cuts_calls_in_flight_and_recovers_online() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    assert_eq!(c.get(api("/first")).send().await.unwrap().status(), 200);
    let in_flight = tokio::spawn(c.get(api("/slow/5000")).send());
    assert!(
        eventually(Duration::from_secs(5), || async {
            http_in_flight(&proxy).await == 1
        })
        .await
    );
    let (status, body) =
        put_network(&proxy, APPID, serde_json::json!({"profile": "offline"})).await;
    assert_eq!(
        (status, body.contains("\"instances\":1")),
        (200, true),
        "{body}"
    );
    let offline = (
        502,
        "600001",
        "request:fail -106:net::ERR_INTERNET_DISCONNECTED",
        "offline",
    );
    let (s, e, m, r, _) = refusal_of(in_flight.await.unwrap().unwrap()).await;
    assert_eq!((s, e.as_str(), m.as_str(), r.as_str()), offline);
    let (s, e, m, r, _) = refusal_of(c.get(api("/new")).send().await.unwrap()).await;
    assert_eq!((s, e.as_str(), m.as_str(), r.as_str()), offline);
    assert_eq!(
        state(&proxy).await["apps"][0]["instances"][0]["network"],
        "offline"
    );
    match open_wss(&proxy, "/ws").await {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            let errmsg = response.headers()["x-wxsandbox-errmsg"].to_str().unwrap();
            assert_eq!(
                errmsg,
                "createSocketTask:fail -106:net::ERR_INTERNET_DISCONNECTED"
            );
        }
        other => panic!(
            "expected the socket refused, got {:?}",
            other.map(|_| "a socket")
        ),
    }
    // Wrong profile: 400; wrong app: 404; then back online.
    let (status, _) = put_network(&proxy, APPID, serde_json::json!({"profile": "5g"})).await;
    assert_eq!(status, 400);
    let (status, _) = put_network(&proxy, OTHER_APPID, serde_json::json!({"profile": "3g"})).await;
    assert_eq!(status, 404);
    let (status, _) = put_network(
        &proxy,
        APPID,
        serde_json::json!({"profile": "online", "client": "127.0.0.1"}),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(c.get(api("/back")).send().await.unwrap().status(), 200);
    let metrics = reqwest::get(format!("{}/metrics", proxy.control_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("wxsandbox_instances{network=\"online\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_lost_call_stalls_until_its_network_timeout() {
    let (proxy, backend, _ca) = setup(Some(with_network(
        "  seed: 7\n  default: lossy\n  profiles:\n    lossy: {loss: 1.0}",
        "    network_timeout: {request: 300}\n",
    )))
    .await;
    let c = client(&proxy);
    let started = Instant::now();
    let (status, errno, errmsg, rule, _) =
        refusal_of(c.get(api("/lost")).send().await.unwrap()).await;
    let took = started.elapsed();
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (504, "5", "request:fail timeout", "timeout")
    );
    assert!(
        took >= Duration::from_millis(280) && took < Duration::from_millis(1500),
        "timed out after {took:?}"
    );
    assert!(
        backend.seen().iter().all(|s| s.path != "/lost"),
        "a lost call never reaches the server"
    );
}

#[tokio::test]
async fn the_network_header_overrides_the_profile_for_one_call() {
    let (proxy, backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let r = c
        .get(api("/override"))
        .header("x-wxsandbox-network", "offline")
        .send()
        .await
        .unwrap();
    let (_, _, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (errmsg.as_str(), rule.as_str()),
        (
            "request:fail -106:net::ERR_INTERNET_DISCONNECTED",
            "offline"
        )
    );
    // A 3g call gets its round-trip latency (100 ms) and the header never reaches upstream.
    let started = Instant::now();
    let r = c
        .get(api("/latency"))
        .header("x-wxsandbox-network", "3g")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(started.elapsed() >= Duration::from_millis(100));
    let seen = backend.seen();
    let call = seen.iter().find(|s| s.path == "/latency").unwrap();
    assert!(!call.headers.contains_key("x-wxsandbox-network"));
    assert_eq!(records_for(&proxy, "/latency").await[0]["network"], "3g");
}

#[test]
fn network_config_findings_name_their_key_paths() {
    let yaml = "network:\n  default: 5g\n  profiles:\n    3g: {down_kbps: 1}\n    flaky: {loss: 1.5}\n    ok: {latency_ms: 20, down_kbps: 100, up_kbps: 50, loss: 0.1}\n";
    let err = wxsandbox::config::Config::from_yaml_str(yaml, "net.yaml")
        .expect_err("three findings")
        .to_string();
    for needle in [
        "5g",
        "3g",
        "1.5",
        "network-profile",
        "net.yaml:2",
        "net.yaml:4",
        "net.yaml:5",
    ] {
        assert!(err.contains(needle), "{needle} missing from:\n{err}");
    }
    let ok = "network:\n  default: ok\n  seed: 3\n  profiles:\n    ok: {latency_ms: 20, down_kbps: 100, up_kbps: 50, loss: 0.1}\n";
    let config = wxsandbox::config::Config::from_yaml_str(ok, "net.yaml").unwrap();
    assert_eq!(config.network.default, "ok");
    assert_eq!(config.network.seed, Some(3));
    let p = config.network.profile("ok").unwrap();
    assert_eq!((p.latency_ms, p.down_kbps, p.up_kbps), (20, 100, 50));
    assert!(config.network.profile("gprs").is_some());
}

/// `scripts/network_bench.sh`: a 1 MiB download and 100 sequential 1 KiB calls on a preset
/// (`NETWORK_BENCH_PROFILE`, default 4g), each beside the same on `online`. Prints the figures.
#[tokio::test]
// Ignored: a measurement, not a check (it prints figures and asserts only that calls pass);
// scripts/network_bench.sh runs it with --ignored. Noted on issue #12.
#[ignore = "a benchmark, run by scripts/network_bench.sh; it measures, it does not check"]
async fn network_bench() {
    let name = std::env::var("NETWORK_BENCH_PROFILE").unwrap_or_else(|_| "4g".to_owned());
    let profile = wxsandbox::policy::network::preset(&name).expect("a preset name");
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let mut figures = Vec::new();
    for network in ["online", name.as_str()] {
        let (status, _) = put_network(&proxy, APPID, serde_json::json!({"profile": network})).await;
        assert_eq!(status, 200);
        assert_eq!(c.get(api("/warm")).send().await.unwrap().status(), 200);
        let started = Instant::now();
        let body = c
            .get(api("/bytes/1048576"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap();
        let download = started.elapsed();
        assert_eq!(body.len(), 1 << 20);
        let started = Instant::now();
        for _ in 0..100 {
            let r = c.get(api("/bytes/1024")).send().await.unwrap();
            assert_eq!(r.bytes().await.unwrap().len(), 1024);
        }
        figures.push((network.to_owned(), download, started.elapsed() / 100));
    }
    println!(
        "profile {name}: latency {} ms, down {} kbit/s, up {} kbit/s",
        profile.latency_ms, profile.down_kbps, profile.up_kbps
    );
    println!("| profile | 1 MiB download s | throughput kbit/s | 1 KiB call ms (mean of 100) |");
    println!("|---|---|---|---|");
    for (network, download, call) in &figures {
        println!(
            "| {network} | {:.3} | {:.0} | {:.1} |",
            download.as_secs_f64(),
            8.0 * 1048.576 / download.as_secs_f64(),
            call.as_secs_f64() * 1000.0
        );
    }
    let added = figures[1].2.as_secs_f64() - figures[0].2.as_secs_f64();
    println!("added per 1 KiB call: {:.1} ms", added * 1000.0);
}
