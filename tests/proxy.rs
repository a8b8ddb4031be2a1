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

/// A CONNECT inside a tunnel asks the tunnel's server to open another tunnel (here to a host no
/// list has): it is not forwarded, over HTTP/1.1 or HTTP/2. It gets a 405, the server sees
/// nothing of it, and the same connection then carries a call as before.
#[tokio::test]
async fn a_connect_inside_a_tunnel_gets_405_and_reaches_no_server() {
    let (proxy, backend, _ca) = setup(None).await;
    let connect = || {
        http::Request::connect("evil.example:443")
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let get = |path: &str| {
        http::Request::get(format!("https://{API_HOST}{path}"))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    let (mut h1, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let refused = h1.send_request(connect()).await.unwrap();
    assert_eq!(refused.status(), 405, "HTTP/1.1");
    let _ = refused.into_body().collect().await.unwrap();
    let after = h1.send_request(get("/h1-after")).await.unwrap();
    assert_eq!(after.status(), 200, "HTTP/1.1, after");
    let mut h2 = h2_via_tunnel(&proxy, API_HOST, None).await;
    let refused = h2.send_request(connect()).await.unwrap();
    assert_eq!(refused.status(), 405, "HTTP/2");
    let after = h2.send_request(get("/h2-after")).await.unwrap();
    assert_eq!(after.status(), 200, "HTTP/2, after");
    let seen: Vec<(String, String)> = backend
        .seen()
        .into_iter()
        .map(|s| (s.method, s.path))
        .collect();
    assert_eq!(
        seen,
        [
            ("GET".to_owned(), "/h1-after".to_owned()),
            ("GET".to_owned(), "/h2-after".to_owned())
        ]
    );
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

/// A proxy whose app may open TCP sockets to `tcp.example.com:7000`, an echo server.
async fn tcp_echo_proxy() -> TestProxy {
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
    proxy
}

/// A client may send its first bytes in the same write as its CONNECT (hyper then reads them
/// with the CONNECT's head): they are the tunnel's first bytes all the same, a TLS ClientHello
/// is answered and the call inside goes through.
#[tokio::test]
async fn a_client_hello_sent_with_the_connect_starts_the_tunnel() {
    let (proxy, _backend, _ca) = setup(None).await;
    let name = rustls::pki_types::ServerName::try_from(API_HOST).unwrap();
    let mut tls =
        rustls::ClientConnection::new(tls_client(&proxy.ca_pem, &[b"http/1.1"]), name).unwrap();
    let mut first =
        format!("CONNECT {API_HOST}:443 HTTP/1.1\r\nHost: {API_HOST}:443\r\n\r\n").into_bytes();
    let connect_len = first.len();
    tls.write_tls(&mut first).unwrap();
    assert!(first.len() > connect_len, "a ClientHello follows the head");
    let mut s = TcpStream::connect(proxy.running.proxy_addr).await.unwrap();
    s.write_all(&first).await.unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    use std::io::{Read, Write};
    tls.writer()
        .write_all(
            format!("GET /bytes/3000 HTTP/1.1\r\nHost: {API_HOST}\r\nConnection: close\r\n\r\n")
                .as_bytes(),
        )
        .unwrap();
    // Drive the handshake and the call by hand (bounded: 200 reads, WAIT each).
    let (mut plain, mut buf) = (Vec::new(), vec![0u8; 16 * 1024]);
    for _ in 0..200 {
        while tls.wants_write() {
            let mut out = Vec::new();
            tls.write_tls(&mut out).unwrap();
            s.write_all(&out).await.unwrap();
        }
        let n = tokio::time::timeout(WAIT, s.read(&mut buf))
            .await
            .unwrap()
            .unwrap();
        if n == 0 {
            break;
        }
        tls.read_tls(&mut &buf[..n]).unwrap();
        tls.process_new_packets().unwrap();
        let mut chunk = Vec::new();
        match tls.reader().read_to_end(&mut chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("{e}"),
        }
        plain.extend_from_slice(&chunk);
    }
    let text = String::from_utf8_lossy(&plain);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    let body = &plain[plain.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4..];
    assert_eq!(body.len(), 3000);
    assert!(body.iter().enumerate().all(|(i, b)| *b == pattern(i)));
}

/// The same for a plain TCP tunnel: bytes sent with the CONNECT reach the server first, once.
#[tokio::test]
async fn bytes_sent_with_a_tcp_connect_reach_the_server_once() {
    let proxy = tcp_echo_proxy().await;
    let mut s = TcpStream::connect(proxy.running.proxy_addr).await.unwrap();
    s.write_all(
        b"CONNECT tcp.example.com:7000 HTTP/1.1\r\nHost: tcp.example.com:7000\r\n\r\nearly bytes|",
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(b"later").await.unwrap();
    let want = b"early bytes|later";
    let mut got = vec![0u8; want.len()];
    tokio::time::timeout(WAIT, s.read_exact(&mut got))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&got, want);
    // Nothing more comes back: the early bytes were sent once.
    let mut more = [0u8; 1];
    let extra = tokio::time::timeout(Duration::from_millis(300), s.read(&mut more)).await;
    assert!(extra.is_err(), "an extra byte came back: {extra:?}");
}

#[tokio::test]
async fn raw_tcp_tunnel_relays_bytes() {
    let proxy = tcp_echo_proxy().await;
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
    // Shut down once the call is in flight (not after a guessed delay).
    assert!(
        eventually(Duration::from_secs(5), || async {
            http_in_flight(&proxy).await == 1
        })
        .await
    );
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

/// Hardening 3 and deadlines 2: a tunnel or connection that never speaks, or stops speaking,
/// is closed at its deadline (head timeout 500 ms, idle 1 s): no descriptor is pinned.
#[tokio::test]
async fn silent_and_idle_connections_are_closed_at_their_deadlines() {
    let (proxy, _backend, _ca) =
        setup_with("header_timeout_ms: 500, idle_timeout_ms: 1000", None).await;
    let addr = proxy.running.proxy_addr;
    let limit = Duration::from_secs(3);
    // Nothing at all.
    let mut s = TcpStream::connect(addr).await.unwrap();
    assert!(
        closed_within(&mut s, limit).await,
        "silent plain connection"
    );
    // CONNECT, then one TLS handshake byte and silence.
    let (mut s, head) = connect_tunnel(addr, &format!("{API_HOST}:443"), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    s.write_all(&[0x16]).await.unwrap();
    assert!(closed_within(&mut s, limit).await, "one 0x16 byte");
    // A complete TLS handshake, then silence (HTTP/1.1 and HTTP/2 by ALPN).
    for alpn in [&b"http/1.1"[..], &b"h2"[..]] {
        let (tcp, _) = connect_tunnel(addr, &format!("{API_HOST}:443"), "").await;
        let mut tls = tokio_rustls::TlsConnector::from(tls_client(&proxy.ca_pem, &[alpn]))
            .connect(API_HOST.try_into().unwrap(), tcp)
            .await
            .unwrap();
        assert!(
            closed_within(&mut tls, limit).await,
            "TLS then silence ({alpn:?})"
        );
    }
    // HTTP/2: the preface and SETTINGS, then nothing.
    let sender = h2_via_tunnel(&proxy, API_HOST, None).await;
    assert!(
        eventually(limit, || async { sender.is_closed() }).await,
        "h2 without a request"
    );
    // Idle keep-alive after a request, HTTP/1.1 and HTTP/2.
    let mut tls = tunnel_after_one_get(&proxy).await;
    assert!(
        closed_within(&mut tls, Duration::from_secs(2)).await,
        "idle HTTP/1.1"
    );
    let mut h2 = h2_via_tunnel(&proxy, API_HOST, None).await;
    let req = http::Request::get(format!("https://{API_HOST}/"))
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = h2.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let _ = resp.into_body().collect().await.unwrap();
    assert!(
        eventually(Duration::from_secs(2), || async { h2.is_closed() }).await,
        "idle HTTP/2"
    );
}

/// An HTTP/1.1 connection in a tunnel to the API host, with one GET answered 200 on it.
async fn tunnel_after_one_get(proxy: &TestProxy) -> tokio_rustls::client::TlsStream<TcpStream> {
    let mut tls = tls_via_tunnel(proxy, API_HOST, "").await;
    tls.write_all(format!("GET / HTTP/1.1\r\nHost: {API_HOST}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = vec![0u8; 1024];
    let n = tls.read(&mut buf).await.unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
    tls
}

/// Hardening 3: on a kept-alive HTTP/1.1 connection inside a tunnel, the next request's head
/// has the head deadline (500 ms), not the idle one (5 s): a head trickled after a call, then
/// stopped, closes the connection at the head deadline, and a silent one too.
#[tokio::test]
async fn a_later_head_on_a_kept_alive_connection_has_the_head_deadline() {
    let (proxy, _backend, _ca) =
        setup_with("header_timeout_ms: 500, idle_timeout_ms: 5000", None).await;
    for partial in [&b"GET / HTTP/1.1\r\nHost: "[..], &b""[..]] {
        let mut tls = tunnel_after_one_get(&proxy).await;
        tls.write_all(partial).await.unwrap();
        assert!(
            closed_within(&mut tls, Duration::from_millis(2500)).await,
            "a later head ({:?}) outlived the head deadline",
            String::from_utf8_lossy(partial)
        );
    }
}

/// Deadlines 2: with `max_connections: 50`, the 51st client is refused at accept while the 50
/// are served, and a new client is served once one of them closes.
#[tokio::test]
async fn the_connection_cap_refuses_the_excess_and_recovers() {
    let (proxy, _backend, _ca) = setup_with("max_connections: 50", None).await;
    let addr = proxy.running.proxy_addr;
    let ask = b"GET http://wxsandbox.cert/ca.pem HTTP/1.1\r\nHost: wxsandbox.cert\r\n\r\n";
    let mut open = Vec::new();
    for _ in 0..50 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(ask).await.unwrap();
        let (head, _) = read_response(&mut s).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        open.push(s);
    }
    let mut extra = TcpStream::connect(addr).await.unwrap();
    let head = read_head(&mut extra).await;
    assert!(head.starts_with("HTTP/1.1 503"), "the 51st: {head}");
    assert!(closed_within(&mut extra, Duration::from_secs(3)).await);
    // The 50 are still served.
    let first = &mut open[0];
    first.write_all(ask).await.unwrap();
    let (head, _) = read_response(first).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    // One leaves: a new client is served.
    drop(open.pop());
    let served = eventually(Duration::from_secs(5), || async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(ask).await.unwrap();
        read_head(&mut s).await.starts_with("HTTP/1.1 200")
    })
    .await;
    assert!(served, "a new client once a slot is free");
}

/// Hardening 6 and deadlines 3: one head limit (64 KiB) everywhere, answered with the JSON
/// refusal (431) and recorded; over HTTP/2 only the offending stream ends.
#[tokio::test]
async fn heads_over_64_kib_get_431_with_the_refusal_everywhere() {
    let (proxy, _backend, _ca) = setup(None).await;
    let addr = proxy.running.proxy_addr;
    let big = "b".repeat(100 * 1024);
    let check = |head: &str, body: &str, what: &str| {
        assert!(head.starts_with("HTTP/1.1 431"), "{what}: {head}");
        assert_eq!(
            head_header(head, "x-wxsandbox-errno"),
            Some("600009"),
            "{what}"
        );
        assert_eq!(
            head_header(head, "x-wxsandbox-rule"),
            Some("invalid-url"),
            "{what}"
        );
        let json: serde_json::Value = serde_json::from_str(body).unwrap();
        assert!(json["errMsg"]
            .as_str()
            .unwrap()
            .ends_with(":fail request header too large"));
    };
    // Outer: a CONNECT, and an absolute-form request.
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("CONNECT {API_HOST}:443 HTTP/1.1\r\nX-Big: {big}\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let (head, body) = read_response(&mut s).await;
    check(&head, &body, "CONNECT");
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(
        format!("GET http://{API_HOST}/ HTTP/1.1\r\nHost: {API_HOST}\r\nX-Big: {big}\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let (head, body) = read_response(&mut s).await;
    check(&head, &body, "absolute-form");
    // Inside a tunnel, HTTP/1.1.
    let mut tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    tls.write_all(
        format!("GET /inner HTTP/1.1\r\nHost: {API_HOST}\r\nX-Big: {big}\r\n\r\n").as_bytes(),
    )
    .await
    .unwrap();
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.windows(4).any(|w| w == b"\r\n\r\n") && raw.ends_with(b"}") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    check(head, body, "inner HTTP/1.1");
    // Inside a tunnel, HTTP/2: a 20 KB head passes, a 100 KB head is refused on its stream
    // only, and a call on the same connection completes.
    let mut h2 = h2_via_tunnel(&proxy, API_HOST, None).await;
    let get = |path: &str, size: usize| {
        http::Request::get(format!("https://{API_HOST}{path}"))
            .header("x-big", "c".repeat(size))
            .body(Empty::<Bytes>::new())
            .unwrap()
    };
    let ok = h2.send_request(get("/h2-20k", 20 * 1024)).await.unwrap();
    assert_eq!(ok.status(), 200);
    let refused = h2.send_request(get("/h2-100k", 100 * 1024)).await.unwrap();
    assert_eq!(refused.status(), 431);
    assert_eq!(refused.headers()["x-wxsandbox-rule"], "invalid-url");
    let after = h2.send_request(get("/h2-after", 10)).await.unwrap();
    assert_eq!(after.status(), 200);
    for needle in ["/inner", "/h2-100k"] {
        let records = records_for(&proxy, needle).await;
        assert_eq!(records.len(), 1, "{needle}: {records:?}");
        assert_eq!(records[0]["status"], 431, "{needle}");
    }
}

/// Hardening 8: a call whose response was delivered in full is `ok` over HTTP/1.1 too, with
/// keep-alive or not, for every size.
#[tokio::test]
async fn completed_http1_calls_are_recorded_ok() {
    let (proxy, _backend, _ca) = setup(None).await;
    let h1 = client_builder(&proxy).http1_only().build().unwrap();
    let sizes = [0usize, 1, 1024, 70_000, 1 << 20];
    for (i, n) in sizes.iter().enumerate() {
        let r = h1
            .get(format!("https://{API_HOST}/bytes/{n}?i={i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.bytes().await.unwrap().len(), *n);
    }
    let r = h1
        .head(format!("https://{API_HOST}/bytes/5?head"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let (status, _) = get_via_tunnel(&proxy, API_HOST, "/?close", "").await;
    assert_eq!(status, 200);
    assert!(
        eventually(Duration::from_secs(3), || async {
            let records = records_for(&proxy, API_HOST).await;
            records.len() == sizes.len() + 2 && records.iter().all(|r| r["outcome"] == "ok")
        })
        .await,
        "{:?}",
        records_for(&proxy, API_HOST).await
    );
}

/// Hardening 9: a client's own broken chunked body is a 400 from the proxy, the client's
/// fault: not an upstream error, not a refusal for --fail-on-refusal.
#[tokio::test]
async fn a_broken_chunked_body_is_the_clients_fault() {
    let (proxy, _backend, _ca) = setup(None).await;
    let mut tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    tls.write_all(
        format!("POST /echo HTTP/1.1\r\nHost: {API_HOST}\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\nxx\r\n0\r\n\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(Duration::from_secs(5), tls.read(&mut buf))
        .await
        .map_or(0, |r| r.unwrap_or(0));
    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
    assert!(
        text.starts_with("HTTP/1.1 400"),
        "a 400 from the proxy: {text}"
    );
    assert!(text.contains("client-error"), "{text}");
    assert!(
        eventually(Duration::from_secs(3), || async {
            !records_for(&proxy, "/echo").await.is_empty()
        })
        .await
    );
    let record = &records_for(&proxy, "/echo").await[0];
    assert_ne!(record["outcome"], "upstream_error", "{record}");
    assert_eq!(record["rule"], "client-error", "{record}");
    assert_eq!(proxy.running.shared.refused_total(), 0);
}

/// Hardening 10: a refused upload is answered while the client is still sending its body: the
/// rest is read and discarded (bounded), so the client reads the 403 instead of a reset.
#[tokio::test]
async fn a_refused_upload_is_read_to_the_end_and_answered() {
    let apps =
        format!("apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n");
    let (proxy, backend, _ca) = setup(Some(apps)).await;
    let mut tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    let body = vec![b'u'; 1 << 20];
    let head = format!(
        "POST /upload HTTP/1.1\r\nHost: {API_HOST}\r\nContent-Type: multipart/form-data; boundary=x\r\nContent-Length: {}\r\n\r\n",
        body.len()
    );
    tls.write_all(head.as_bytes()).await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), tls.write_all(&body))
        .await
        .expect("the proxy keeps reading")
        .expect("no reset while sending");
    let mut raw = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), async {
        let mut buf = [0u8; 4096];
        while let Ok(n) = tls.read(&mut buf).await {
            if n == 0 || raw.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
            raw.extend_from_slice(&buf[..n]);
            if raw.ends_with(b"\r\n0\r\n\r\n") {
                break;
            }
        }
    })
    .await;
    let text = String::from_utf8_lossy(&raw);
    assert!(text.starts_with("HTTP/1.1 403"), "{text}");
    assert!(
        text.contains("uploadFile:fail url not in domain list"),
        "{text}"
    );
    assert_eq!(backend.count(), 0);
}
