//! Issue 2: the MITM forward proxy through real sockets: HTTPS GET/POST with byte-exact bodies,
//! HTTP/2, keep-alive, WebSocket, raw TCP, plain HTTP, the leaf and the CA, client filtering,
//! malformed requests, curl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::{IpAddr, Ipv4Addr};
use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures_util::{SinkExt, StreamExt};
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::protocol::CloseFrame;
use tokio_tungstenite::tungstenite::Message;

fn api(path: &str) -> String {
    format!("https://{API_HOST}{path}")
}

#[tokio::test]
async fn https_get_and_post_bodies_are_byte_exact() {
    let (proxy, backend, _ca) = setup(None).await;
    let c = client(&proxy);
    for size in [0usize, 1024, 20 * 1024 * 1024] {
        let got = c.get(api(&format!("/bytes/{size}"))).send().await.unwrap();
        assert_eq!(got.status(), 200);
        let body = got.bytes().await.unwrap();
        let expected: Vec<u8> = (0..size).map(pattern).collect();
        assert_eq!(body.len(), size);
        assert_eq!(sha256(&body), sha256(&expected), "GET of {size} bytes");

        let upload: Vec<u8> = (0..size).map(|i| (i * 7 % 256) as u8).collect();
        let got = c
            .post(api("/echo"))
            .body(upload.clone())
            .send()
            .await
            .unwrap();
        assert_eq!(got.status(), 200);
        let body = got.bytes().await.unwrap();
        assert_eq!(sha256(&body), sha256(&upload), "POST of {size} bytes");
    }
    assert!(backend.count() >= 6);
}

#[tokio::test]
async fn http2_to_the_client_inside_connect() {
    let (proxy, backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let got = c.get(api("/hello")).send().await.unwrap();
    assert_eq!(
        got.version(),
        http::Version::HTTP_2,
        "ALPN on the intercepted TLS should pick h2"
    );
    assert_eq!(got.text().await.unwrap(), "ok");
    // And HTTP/1.1 when the client asks only for it.
    let c1 = client_builder(&proxy).http1_only().build().unwrap();
    let got = c1.get(api("/hello")).send().await.unwrap();
    assert_eq!(got.version(), http::Version::HTTP_11);
    assert_eq!(backend.count(), 2);
}

/// CONNECT once, TLS once, then 200 requests one after the other on that one connection.
#[tokio::test]
async fn two_hundred_requests_on_one_keep_alive_connection() {
    let (proxy, backend, _ca) = setup(None).await;
    let tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    for i in 0..200 {
        let req = http::Request::get(format!("/n/{i}"))
            .header("host", API_HOST)
            .body(Empty::<Bytes>::new())
            .unwrap();
        let resp = sender.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200, "request {i}");
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"ok");
    }
    let seen = backend.seen();
    assert_eq!(seen.len(), 200);
    assert_eq!(seen[199].path, "/n/199");
}

async fn wss_through_proxy(proxy: &TestProxy, path: &str) -> Wss {
    open_wss(proxy, path).await.unwrap()
}

#[tokio::test]
async fn wss_echo_keeps_order_types_and_close_code() {
    let (proxy, backend, _ca) = setup(None).await;
    let mut ws = wss_through_proxy(&proxy, "/ws").await;
    for i in 0..100 {
        let msg = if i % 2 == 0 {
            Message::Text(format!("text {i}").into())
        } else {
            Message::Binary(Bytes::from(vec![i as u8; i + 1]))
        };
        ws.send(msg).await.unwrap();
    }
    for i in 0..100 {
        let got = tokio::time::timeout(WAIT, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if i % 2 == 0 {
            assert_eq!(got, Message::Text(format!("text {i}").into()));
        } else {
            assert_eq!(got, Message::Binary(Bytes::from(vec![i as u8; i + 1])));
        }
    }
    // A ping is answered (by the backend, relayed back as a pong).
    ws.send(Message::Ping(Bytes::from_static(b"p1")))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(pong, Message::Pong(Bytes::from_static(b"p1")));
    ws.send(Message::Close(Some(CloseFrame {
        code: CloseCode::Library(4001),
        reason: "bye".into(),
    })))
    .await
    .unwrap();
    let close = tokio::time::timeout(WAIT, ws.next())
        .await
        .unwrap()
        .unwrap()
        .expect("the echoed close frame");
    match close {
        Message::Close(Some(frame)) => {
            assert_eq!(frame.code, CloseCode::Library(4001));
            assert_eq!(frame.reason, "bye");
        }
        other => panic!("expected the echoed close frame, got {other:?}"),
    }
    let handshake = backend
        .seen()
        .into_iter()
        .find(|s| s.path == "/ws")
        .unwrap();
    assert_eq!(
        handshake.headers.get("referer").unwrap(),
        &format!("https://servicewechat.com/{APPID}/devtools/page-frame.html")
    );
}

#[tokio::test]
async fn raw_tcp_tunnel_relays_bytes() {
    init_crypto();
    let echo = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let echo_port = echo.local_addr().unwrap().port();
    tokio::spawn(async move {
        let (mut s, _) = echo.accept().await.unwrap();
        let mut buf = vec![0u8; 1024];
        loop {
            let n = s.read(&mut buf).await.unwrap_or(0);
            if n == 0 {
                break;
            }
            s.write_all(&buf[..n]).await.unwrap();
        }
    });
    let ca = TestCa::new("unused");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let apps =
        format!("apps:\n  - appid: {APPID}\n    domains:\n      tcp: [tcp.example.com:7000]\n");
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[("tcp.example.com", format!("127.0.0.1:{echo_port}"))],
        &apps,
    );
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let (mut s, head) = connect_tunnel(proxy.running.proxy_addr, "tcp.example.com:7000", "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    for round in 0..20u8 {
        let msg = vec![round; 100 + round as usize];
        s.write_all(&msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(WAIT, s.read_exact(&mut got))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(got, msg);
    }
}

/// A simulator at 127.0.0.2 reaches its LAN neighbour 127.0.0.1 over plain HTTP (the LAN rule).
#[tokio::test]
async fn plain_http_forwarding_in_absolute_form() {
    init_crypto();
    let backend = start_backend(None).await;
    let ca = TestCa::new("unused");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let yaml = base_yaml(dir.path(), &trust, &[], &one_app());
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let c = client_builder(&proxy)
        .local_address(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2)))
        .build()
        .unwrap();
    let url = format!("http://127.0.0.1:{}/echo", backend.addr.port());
    let got = c.post(&url).body("plain body").send().await.unwrap();
    assert_eq!(got.status(), 200);
    assert_eq!(got.text().await.unwrap(), "plain body");
    let seen = backend.seen();
    assert_eq!(seen.len(), 1);
    assert!(seen[0].headers.get("proxy-connection").is_none());
    assert_eq!(
        seen[0].headers.get("host").unwrap(),
        &format!("127.0.0.1:{}", backend.addr.port())
    );
}

#[tokio::test]
async fn leaf_names_the_host_and_chains_to_the_ca() {
    let (proxy, _backend, _ca) = setup(None).await;
    for host in [API_HOST, WS_HOST] {
        // The client trusts only the proxy's CA: the handshake itself proves the chain and name.
        let tls = tls_via_tunnel(&proxy, host, "").await;
        let certs = tls.get_ref().1.peer_certificates().unwrap();
        let (_, leaf) = x509_parser::parse_x509_certificate(&certs[0]).unwrap();
        let san = leaf.subject_alternative_name().unwrap().unwrap();
        let names: Vec<String> = san
            .value
            .general_names
            .iter()
            .map(|n| n.to_string())
            .collect();
        assert!(names.iter().any(|n| n.contains(host)), "{names:?}");
        let days = (leaf.validity().not_after.timestamp() - leaf.validity().not_before.timestamp())
            / 86400;
        assert!(days <= 397, "leaf valid for {days} days");
    }
    assert!(proxy.running.shared.leaves.misses() >= 2);
}

#[tokio::test]
async fn ca_is_reused_across_restarts_and_its_key_is_0600() {
    init_crypto();
    let ca = TestCa::new("unused");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let yaml = base_yaml(dir.path(), &trust, &[], &one_app());
    let config = wxsandbox::config::Config::from_yaml_str(&yaml, "t.yaml").unwrap();
    let first = wxsandbox::start(config.clone()).await.unwrap();
    let fp1 = first.shared.ca.fingerprint_sha256();
    first.shutdown(Duration::from_secs(5)).await;
    let key = dir.path().join("ca").join("wxsandbox-ca.key");
    let mode = std::fs::metadata(&key).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key mode {mode:o}");
    let second = wxsandbox::start(config).await.unwrap();
    assert_eq!(second.shared.ca.fingerprint_sha256(), fp1);
    second.shutdown(Duration::from_secs(5)).await;
}

#[tokio::test]
async fn client_outside_proxy_clients_is_closed_at_accept() {
    init_crypto();
    let ca = TestCa::new("unused");
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let yaml = base_yaml(dir.path(), &trust, &[], &one_app())
        .replace("clients: [127.0.0.0/8]", "clients: [127.0.0.2/32]");
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let mut s = TcpStream::connect(proxy.running.proxy_addr).await.unwrap();
    let _ = s
        .write_all(b"GET http://wxsandbox.cert/ HTTP/1.1\r\nHost: wxsandbox.cert\r\n\r\n")
        .await;
    let mut buf = [0u8; 64];
    let n = tokio::time::timeout(WAIT, s.read(&mut buf))
        .await
        .unwrap()
        .unwrap_or(0);
    assert_eq!(
        n,
        0,
        "expected a close, got {:?}",
        String::from_utf8_lossy(&buf[..n])
    );
    // The allowed address is served.
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind("127.0.0.2:0".parse().unwrap()).unwrap();
    let mut s = sock.connect(proxy.running.proxy_addr).await.unwrap();
    s.write_all(b"GET http://wxsandbox.cert/ HTTP/1.1\r\nHost: wxsandbox.cert\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
}

#[tokio::test]
async fn malformed_requests_get_4xx_or_close_and_the_proxy_keeps_serving() {
    let (proxy, _backend, _ca) = setup(None).await;
    let addr = proxy.running.proxy_addr;
    // Garbage bytes.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"\x00\x01\x02garbage\r\n\r\n").await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.is_empty() || head.starts_with("HTTP/1.1 4"), "{head}");
    // Bad CONNECT authorities.
    for bad in ["nohost", ":443", "host:notaport", "host:0", "[::1:443"] {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("CONNECT {bad} HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
            .await
            .unwrap();
        let head = read_head(&mut s).await;
        assert!(
            head.is_empty() || head.starts_with("HTTP/1.1 4"),
            "CONNECT {bad}: {head}"
        );
    }
    // Oversized headers.
    let mut s = TcpStream::connect(addr).await.unwrap();
    let big = "x".repeat(200 * 1024);
    let _ = s
        .write_all(
            format!("GET http://wxsandbox.cert/ HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes(),
        )
        .await;
    let head = read_head(&mut s).await;
    assert!(head.is_empty() || head.starts_with("HTTP/1.1 4"), "{head}");
    // An origin-form request to the proxy port.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 400"), "{head}");
    // Still serving.
    let got = client(&proxy).get(api("/after")).send().await.unwrap();
    assert_eq!(got.status(), 200);
}

#[tokio::test]
async fn cert_page_and_control_port_serve_the_ca() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let page = c.get("http://wxsandbox.cert/").send().await.unwrap();
    assert_eq!(page.status(), 200);
    let text = page.text().await.unwrap();
    assert!(
        text.contains("Certificate Trust Settings") && text.contains("Android"),
        "{text}"
    );
    let pem = c
        .get("http://wxsandbox.cert/ca.pem")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, proxy.ca_pem);
    let direct = reqwest::Client::new();
    let health = direct
        .get(format!("{}/healthz", proxy.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap().trim(), "ok");
    let pem = direct
        .get(format!("{}/ca.pem", proxy.control_url()))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(pem, proxy.ca_pem);
    let der = direct
        .get(format!("{}/ca.crt", proxy.control_url()))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    assert_eq!(&der[..], proxy.running.shared.ca.cert_der());
}

#[tokio::test]
async fn shutdown_drains_and_stops_accepting() {
    let (proxy, _backend, _ca) = setup(None).await;
    let c = client(&proxy);
    let slow = tokio::spawn({
        let c = c.clone();
        async move { c.get(api("/slow/300")).send().await.map(|r| r.status()) }
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        proxy.running.shutdown(Duration::from_secs(10)).await,
        "drain should finish in time"
    );
    assert_eq!(
        slow.await.unwrap().unwrap(),
        200,
        "the in-flight call completes during the drain"
    );
    assert!(TcpStream::connect(proxy.running.proxy_addr).await.is_err());
}
