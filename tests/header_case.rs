//! Header names keep their case both ways over HTTP/1.1: a mini program reads `res.header` by
//! name, so through the proxy it must see the server's own spelling, as in production; and the
//! server sees the request's names as the client wrote them. The Host it sees is the one the
//! call was judged for, whatever the client wrote.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use common::*;

/// Read until the end of a head (bounded: 64 KiB, 10 s).
async fn read_head<S: tokio::io::AsyncRead + Unpin>(s: &mut S) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    tokio::time::timeout(Duration::from_secs(10), async {
        while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
            if s.read(&mut byte).await.unwrap() == 0 {
                break;
            }
            head.push(byte[0]);
        }
    })
    .await
    .expect("a head within 10 s");
    String::from_utf8_lossy(&head).into_owned()
}

/// A TLS server that answers every request on a connection with a fixed response whose header
/// names are in mixed case, and keeps the request heads it read.
async fn mixed_case_server(ca: &TestCa) -> (std::net::SocketAddr, Arc<Mutex<Vec<String>>>) {
    let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[API_HOST], &[b"http/1.1"]));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let heads = Arc::new(Mutex::new(Vec::new()));
    let seen = heads.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            let (acceptor, seen) = (acceptor.clone(), seen.clone());
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                for _ in 0..16 {
                    let head = read_head(&mut tls).await;
                    if head.is_empty() {
                        return;
                    }
                    seen.lock().unwrap().push(head);
                    let answer = "HTTP/1.1 200 OK\r\nx-MiXeD-Case: 1\r\ncontent-type: text/plain\r\nContent-Length: 2\r\n\r\nok";
                    if tls.write_all(answer.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    (addr, heads)
}

#[tokio::test]
async fn header_names_keep_their_case_both_ways() {
    init_crypto();
    let ca = TestCa::new("header case CA");
    let (addr, heads) = mixed_case_server(&ca).await;
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[(API_HOST, addr.to_string())],
        &one_app(),
    );
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    let mut tls = tls_via_tunnel(&proxy, API_HOST, "").await;
    // The second call names another host: the server still hears the one the call was judged for.
    for (i, host) in [API_HOST, "unlisted.example.org"].into_iter().enumerate() {
        let request = format!(
            "GET /case/{i} HTTP/1.1\r\nHost: {host}\r\nX-Client-CASE: v\r\naccept: */*\r\n\r\n"
        );
        tls.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut tls).await;
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        assert!(head.contains("\r\nx-MiXeD-Case: 1\r\n"), "{head}");
        assert!(head.contains("\r\ncontent-type: text/plain\r\n"), "{head}");
        let mut body = [0u8; 2];
        tls.read_exact(&mut body).await.unwrap();
        assert_eq!(&body, b"ok");
    }
    let heads = heads.lock().unwrap().clone();
    assert_eq!(heads.len(), 2, "{heads:?}");
    for head in &heads {
        assert!(head.contains("\r\nX-Client-CASE: v\r\n"), "{head}");
        assert!(head.contains("\r\naccept: */*\r\n"), "{head}");
        assert!(
            head.to_ascii_lowercase()
                .contains(&format!("\r\nhost: {API_HOST}\r\n")),
            "{head}"
        );
    }
}
