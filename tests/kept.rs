//! A tunnel's own upstream connection (issue #11): an HTTP/1.1 client's calls in one tunnel go
//! over the one upstream connection the first call opened, until the server closes it, a reload
//! changes the upstream clients, or the skip switch changes (tests/check_cert.rs).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

use common::*;

/// An HTTP/1.1 client inside one tunnel to `API_HOST`.
async fn tunnel(proxy: &TestProxy) -> SendRequest<Empty<Bytes>> {
    let tls = tls_via_tunnel(proxy, API_HOST, "").await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `path` in the tunnel: the status and the body.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, String) {
    let req = Request::get(path)
        .header("host", API_HOST)
        .body(Empty::new())
        .unwrap();
    answer(sender.send_request(req)).await
}

/// The status and body of a response, within 10 s.
async fn answer(
    response: impl std::future::Future<Output = hyper::Result<http::Response<hyper::body::Incoming>>>,
) -> (u16, String) {
    let resp = tokio::time::timeout(Duration::from_secs(10), response)
        .await
        .expect("an answer within 10 s")
        .unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The backend has accepted `n` connections within 5 s.
async fn connections_reach(backend: &Backend, n: usize) -> bool {
    eventually(Duration::from_secs(5), || async {
        backend.connection_count() == n
    })
    .await
}

/// A proxy whose config file is reloaded on change, with two HTTP/1.1-only backends for
/// `API_HOST`; the config maps it to the first.
struct World {
    proxy: TestProxy,
    first: Backend,
    second: Backend,
    file: std::path::PathBuf,
}

async fn world() -> World {
    world_trusting(true).await
}

/// As [`world`]; `trusted`: the backends' CA is the proxy's upstream trust (else another is).
async fn world_trusting(trusted: bool) -> World {
    init_crypto();
    let ca = TestCa::new("kept test CA");
    let tls = || Some(ca.server_config(&[API_HOST], &[b"http/1.1"]));
    let (first, second) = (start_backend(tls()).await, start_backend(tls()).await);
    let dir = tempfile::tempdir().unwrap();
    let trust = if trusted {
        ca.write(dir.path())
    } else {
        TestCa::new("another CA").write(dir.path())
    };
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[(API_HOST, format!("127.0.0.1:{}", first.addr.port()))],
        &one_app(),
    );
    let file = dir.path().join("wxsandbox.yaml");
    std::fs::write(&file, yaml).unwrap();
    World {
        proxy: start_reloadable(&file, dir).await,
        first,
        second,
        file,
    }
}

#[tokio::test]
async fn calls_in_a_tunnel_share_its_upstream_connection_until_the_server_closes_it() {
    let w = world().await;
    let (proxy, backend) = (&w.proxy, &w.first);
    let mut calls = tunnel(proxy).await;
    for i in 0..3 {
        assert_eq!(get(&mut calls, &format!("/kept/{i}")).await.0, 200);
    }
    assert_eq!(backend.count(), 3);
    assert_eq!(backend.connection_count(), 1, "one upstream connection");
    // The server closes it after this answer: the next call gets a new one.
    assert_eq!(get(&mut calls, "/close").await.0, 200);
    assert_eq!(
        get(&mut calls, "/after-close").await,
        (200, "ok".to_owned())
    );
    assert_eq!(backend.count(), 5);
    assert_eq!(backend.connection_count(), 2);
    // Another tunnel has its own.
    let mut other = tunnel(proxy).await;
    assert_eq!(get(&mut other, "/other").await.0, 200);
    assert_eq!(backend.connection_count(), 3);
    assert_eq!(get(&mut calls, "/first-again").await.0, 200);
    assert_eq!(
        backend.connection_count(),
        3,
        "the first tunnel kept its own"
    );
}

/// The upstream's HTTP/2 (chosen by ALPN) carries a tunnel's calls on one connection as well.
#[tokio::test]
async fn an_http2_upstream_is_kept_too() {
    let (proxy, backend, _ca) = setup(None).await;
    let mut calls = tunnel(&proxy).await;
    for i in 0..3 {
        assert_eq!(get(&mut calls, &format!("/h2/{i}")).await.0, 200);
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 3);
    assert!(seen.iter().all(|s| s.version == http::Version::HTTP_2));
    assert_eq!(backend.connection_count(), 1);
}

#[tokio::test]
async fn a_reload_that_moves_the_host_moves_the_tunnels_calls() {
    let w = world().await;
    let proxy = &w.proxy;
    let mut calls = tunnel(proxy).await;
    assert_eq!(get(&mut calls, "/before").await.0, 200);
    assert_eq!((w.first.count(), w.second.count()), (1, 0));

    let edited = std::fs::read_to_string(&w.file).unwrap().replace(
        &format!("127.0.0.1:{}", w.first.addr.port()),
        &format!("127.0.0.1:{}", w.second.addr.port()),
    );
    std::fs::write(&w.file, edited).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            state(proxy).await["config"]["reloads"].as_u64() == Some(1)
        })
        .await,
        "the edit was picked up"
    );
    assert_eq!(get(&mut calls, "/after").await.0, 200);
    assert_eq!(
        (w.first.count(), w.second.count()),
        (1, 1),
        "the kept connection to the old address is not used after the reload"
    );
}

/// A connection made while the skip switch was on (no certificate check) carries no call once
/// it is off: the tunnel's next call is checked again, on a new connection.
#[tokio::test]
async fn a_connection_kept_while_the_skip_switch_was_on_is_not_used_once_it_is_off() {
    let w = world_trusting(false).await;
    let proxy = &w.proxy;
    set_skip(proxy, true).await;
    let mut calls = tunnel(proxy).await;
    assert_eq!(get(&mut calls, "/unchecked").await.0, 200);
    set_skip(proxy, false).await;
    let (status, body) = get(&mut calls, "/checked").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("ERR_CERT_AUTHORITY_INVALID"), "{body}");
    assert_eq!(
        w.first.count(),
        1,
        "only the call made with the switch on reached it"
    );
}

/// An HTTP/1.1 client inside a tunnel whose CONNECT carries `connect_headers`.
async fn tunnel_with(proxy: &TestProxy, connect_headers: &str) -> SendRequest<Empty<Bytes>> {
    let tls = tls_via_tunnel(proxy, API_HOST, connect_headers).await;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

/// A CONNECT of a running app to a host its HTTPS lists name opens the upstream connection at
/// once, before any request, and the first call goes over it. Not for an app in the background
/// (its calls are refused: no connection is opened for them), nor before the app has run on
/// this client.
#[tokio::test]
async fn a_running_apps_tunnel_opens_its_upstream_connection_ahead_of_its_first_call() {
    let w = world().await;
    let (proxy, backend) = (&w.proxy, &w.first);
    let auth = proxy_auth_header(APPID);
    // Nothing runs yet on this client: nothing is opened ahead.
    let mut first = tunnel_with(proxy, &auth).await;
    assert!(
        !eventually(Duration::from_millis(300), || async {
            backend.connection_count() > 0
        })
        .await,
        "no connection before the app's first call"
    );
    assert_eq!(get(&mut first, "/first").await.0, 200);
    assert_eq!(backend.connection_count(), 1);

    // The app runs: the next tunnel's connection is there before its first request.
    let mut calls = tunnel_with(proxy, &auth).await;
    assert!(
        connections_reach(backend, 2).await,
        "opened ahead of the first request"
    );
    assert_eq!(get(&mut calls, "/ahead").await.0, 200);
    assert_eq!(get(&mut calls, "/ahead-again").await.0, 200);
    assert_eq!(
        backend.connection_count(),
        2,
        "the tunnel's calls went over the connection opened ahead"
    );

    // In the background its calls are refused: a new tunnel opens nothing.
    assert_eq!(set_phase(proxy, APPID, "background", None).await, 200);
    let mut refused = tunnel_with(proxy, &auth).await;
    let (status, body) = get(&mut refused, "/in-background").await;
    assert_ne!(status, 200, "{body}");
    assert!(
        !eventually(Duration::from_millis(300), || async {
            backend.connection_count() > 2
        })
        .await,
        "no connection opened for an app in the background"
    );
    assert_eq!(backend.count(), 3);
}

/// An HTTP/2 client inside a tunnel whose CONNECT carries `connect_headers`.
async fn h2_tunnel_with(
    proxy: &TestProxy,
    connect_headers: &str,
) -> hyper::client::conn::http2::SendRequest<Empty<Bytes>> {
    let authority = format!("{API_HOST}:443");
    let (tcp, head) = connect_tunnel(proxy.running.proxy_addr, &authority, connect_headers).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tls = tokio_rustls::TlsConnector::from(tls_client(&proxy.ca_pem, &[b"h2"]))
        .connect(API_HOST.try_into().unwrap(), tcp)
        .await
        .unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(TokioIo::new(tls))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

/// GET `path` over an HTTP/2 client: the status and the body.
async fn get_h2(
    sender: &mut hyper::client::conn::http2::SendRequest<Empty<Bytes>>,
    path: &str,
) -> (u16, String) {
    let req = Request::get(format!("https://{API_HOST}{path}"))
        .body(Empty::new())
        .unwrap();
    answer(sender.send_request(req)).await
}

/// An HTTP/2 client's tunnel (a browser's, curl's) uses the connection opened ahead at its
/// CONNECT too: its calls go over it while it is free, and the calls that overlap a busy one go
/// through the shared pool, without closing it.
#[tokio::test]
async fn an_http2_clients_tunnel_uses_the_connection_opened_ahead() {
    let w = world().await;
    let (proxy, backend) = (&w.proxy, &w.first);
    let auth = proxy_auth_header(APPID);
    // The app's first call makes it run on this client.
    let mut first = tunnel_with(proxy, &auth).await;
    assert_eq!(get(&mut first, "/first").await.0, 200);
    assert_eq!(backend.connection_count(), 1);

    let mut calls = h2_tunnel_with(proxy, &auth).await;
    assert!(
        connections_reach(backend, 2).await,
        "opened ahead of the first request"
    );
    for i in 0..3 {
        assert_eq!(
            get_h2(&mut calls, &format!("/h2-ahead/{i}")).await,
            (200, "ok".to_owned())
        );
    }
    assert_eq!(
        backend.connection_count(),
        2,
        "the HTTP/2 client's calls went over the connection opened ahead"
    );

    // Overlapping calls: one holds the kept connection, the others go through the pool.
    let overlapping = (0..4).map(|i| {
        let mut sender = calls.clone();
        async move { get_h2(&mut sender, &format!("/slow/{}", 200 + i)).await }
    });
    let answers = futures_util::future::join_all(overlapping).await;
    assert!(
        answers.iter().all(|a| *a == (200, "slow ok".to_owned())),
        "{answers:?}"
    );
    let after_overlap = backend.connection_count();
    assert!(
        after_overlap > 2,
        "the overlapping calls were not queued behind one: {after_overlap}"
    );
    // The kept connection was not closed by a call that found it busy: the next calls reuse
    // connections that are open, none is made for them.
    for i in 0..3 {
        assert_eq!(get_h2(&mut calls, &format!("/after/{i}")).await.0, 200);
    }
    assert_eq!(backend.connection_count(), after_overlap);
}

/// A connection opened ahead that fails (here: the server's certificate is not trusted) fails
/// the first call as its own attempt would have, and is not tried a second time.
#[tokio::test]
async fn a_failed_connection_opened_ahead_is_the_first_calls_failure() {
    let w = world_trusting(false).await;
    let (proxy, backend) = (&w.proxy, &w.first);
    let auth = proxy_auth_header(APPID);
    let mut first = tunnel_with(proxy, &auth).await;
    let (status, body) = get(&mut first, "/first").await;
    assert_eq!(status, 502, "{body}");
    assert_eq!(backend.connection_count(), 1);
    let mut ahead = tunnel_with(proxy, &auth).await;
    let (status, body) = get(&mut ahead, "/ahead").await;
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("ERR_CERT_AUTHORITY_INVALID"), "{body}");
    assert_eq!(backend.connection_count(), 2, "one attempt for the call");
    assert_eq!(backend.count(), 0);
}
