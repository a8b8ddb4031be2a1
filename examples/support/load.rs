//! What `examples/allocs.rs` and `examples/memory.rs` both need: the 1 KiB backend (HTTP/2 or
//! HTTP/1.1 over TLS, on 127.0.0.1) and a phone's request headers. Included with `#[path]`.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// The host name every call names (mapped to the backend by `upstream.map`).
pub const HOST: &str = "api.example.com";
/// Bound on one call, one TLS handshake.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// The backend's answer to every GET.
pub const BODY_BYTES: usize = 1024;
static BODY: [u8; BODY_BYTES] = [b'x'; BODY_BYTES];
/// Bytes of each phone header line (`name: value`).
pub const HEADER_LINE: usize = 100;

// ---------------------------------------------------------------------------------------------
// The backend: 1 KiB for every GET, HTTP/2 or HTTP/1.1.

type BBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

async fn route(_req: Request<Incoming>) -> Result<Response<BBody>, hyper::Error> {
    let body = Full::new(Bytes::from_static(&BODY))
        .map_err(|never| match never {})
        .boxed();
    let mut resp = Response::new(body);
    resp.headers_mut()
        .insert("content-type", HeaderValue::from_static("application/json"));
    Ok(resp)
}

pub async fn start_backend(tls: Arc<rustls::ServerConfig>, stop: CancellationToken) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                () = stop.cancelled() => break,
                r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
            };
            let _ = stream.set_nodelay(true);
            let (tls, stop) = (tls.clone(), stop.clone());
            tokio::spawn(async move {
                let Ok(Ok(tls)) = tokio::time::timeout(
                    CALL_TIMEOUT,
                    tokio_rustls::TlsAcceptor::from(tls).accept(stream),
                )
                .await
                else {
                    return;
                };
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                tokio::select! {
                    _ = builder.serve_connection(TokioIo::new(tls), service_fn(route)) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The client: TLS trusting one CA, HTTP/1.1 keep-alive; through a CONNECT tunnel or not.

pub type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

/// A `name: value` line of exactly [`HEADER_LINE`] bytes: `text` cut or padded with `0`.
pub fn header(name: &'static str, text: &str) -> (HeaderName, HeaderValue) {
    let room = HEADER_LINE - name.len() - 2;
    let mut v: String = text.chars().take(room).collect();
    while v.len() < room {
        v.push('0');
    }
    (
        HeaderName::from_static(name),
        HeaderValue::from_str(&v).unwrap(),
    )
}

/// What a phone's mini program sends besides Host and the request id (9 + 1 headers).
pub fn phone_headers() -> Vec<(HeaderName, HeaderValue)> {
    vec![
        header("user-agent", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Mobile/15E148 MicroMessenger/8.0.47"),
        header("accept", "application/json, text/plain, */*;q=0.8"),
        header("accept-language", "zh-CN,zh;q=0.9,en-US;q=0.8,en;q=0.7;"),
        header("cookie", "session=9f8e7d6c5b4a39281706f5e4d3c2b1a0; uid=1234567890; theme=dark; ab=exp42-"),
        header("authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0."),
        header("x-device-id", "iPhone15,2-4C1F2A9E-7B3D-4E5F-8A9B-0C1D2E3F4A5B-"),
        header("x-app-version", "3.14.159-build.2653589793-release-"),
        header("x-session-token", "st-6a7b8c9d0e1f2a3b4c5d6e7f8a9b0c1d-"),
        header("x-trace-id", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-"),
    ]
}
