//! Test helpers: a test CA made at test time, HTTPS/WSS backends on 127.0.0.1:0 that record what
//! they saw, a proxy started from inline YAML, and clients that go through it.

#![allow(dead_code, unreachable_pub, clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, Once};
use std::time::Duration;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use sha2::{Digest, Sha256};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use wxsandbox::config::Config;
use wxsandbox::Running;

pub const APPID: &str = "wx0123456789abcdef";
pub const OTHER_APPID: &str = "wxfedcba9876543210";
/// The host name the backend's certificate names; `upstream.map` sends it to the backend.
pub const API_HOST: &str = "api.example.com";
pub const WS_HOST: &str = "ws.example.com";
/// In no list, but mapped to the backend too (for the skip switch).
pub const OTHER_HOST: &str = "other.example.com";
/// Every loop and wait in tests is bounded by this.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn init_crypto() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
        if std::env::var("TEST_LOG").is_ok() {
            wxsandbox::telemetry::init(wxsandbox::cli::LogFormat::Pretty);
        }
    });
}

/// A CA made at test time, for backends.
pub struct TestCa {
    pub cert_pem: String,
    pub issuer: Issuer<'static, KeyPair>,
}

impl TestCa {
    pub fn new(name: &str) -> TestCa {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::default();
        p.distinguished_name = rcgen::DistinguishedName::new();
        p.distinguished_name.push(DnType::CommonName, name);
        p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(365);
        let cert = p.self_signed(&key).unwrap();
        TestCa {
            cert_pem: cert.pem(),
            issuer: Issuer::new(p, key),
        }
    }

    /// A rustls server config with a leaf for `names`, signed by this CA.
    pub fn server_config(&self, names: &[&str], alpn: &[&[u8]]) -> Arc<rustls::ServerConfig> {
        let key = KeyPair::generate().unwrap();
        let mut p = CertificateParams::new(names.iter().map(|s| s.to_string()).collect::<Vec<_>>())
            .unwrap();
        p.distinguished_name.push(DnType::CommonName, names[0]);
        p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let now = time::OffsetDateTime::now_utc();
        p.not_before = now - time::Duration::days(1);
        p.not_after = now + time::Duration::days(90);
        let cert = p.signed_by(&key, &self.issuer).unwrap();
        let chain = vec![cert.der().clone()];
        let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
        let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .unwrap();
        config.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
        Arc::new(config)
    }

    pub fn write(&self, dir: &std::path::Path) -> PathBuf {
        let path = dir.join("test-upstream-ca.pem");
        std::fs::write(&path, &self.cert_pem).unwrap();
        path
    }
}

/// What a backend saw of one request.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub version: http::Version,
    pub headers: http::HeaderMap,
}

/// An HTTPS (or plain HTTP) backend on 127.0.0.1:0.
///
/// Routes: `/echo` (the request body back), `/bytes/N` (N bytes of a fixed pattern),
/// `/slow/MS` (answers after MS ms), `/ws` (WebSocket echo), `/close` (200 "ok", then the
/// connection is closed), anything else 200 "ok".
pub struct Backend {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    /// TCP connections accepted so far.
    pub connections: Arc<std::sync::atomic::AtomicUsize>,
    pub stop: CancellationToken,
    /// Requests being answered now, and the most at once.
    pub gauge: Arc<Gauge>,
}

#[derive(Debug, Default)]
pub struct Gauge {
    now: std::sync::atomic::AtomicUsize,
    max: std::sync::atomic::AtomicUsize,
}

impl Gauge {
    fn enter(self: &Arc<Self>) -> GaugeGuard {
        use std::sync::atomic::Ordering::SeqCst;
        let now = self.now.fetch_add(1, SeqCst) + 1;
        self.max.fetch_max(now, SeqCst);
        GaugeGuard(self.clone())
    }
    pub fn max(&self) -> usize {
        self.max.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn now(&self) -> usize {
        self.now.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct GaugeGuard(Arc<Gauge>);

impl Drop for GaugeGuard {
    fn drop(&mut self) {
        self.0.now.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl Backend {
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
    pub fn connection_count(&self) -> usize {
        self.connections.load(std::sync::atomic::Ordering::SeqCst)
    }
    pub fn count(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

pub async fn start_backend(tls: Option<Arc<rustls::ServerConfig>>) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let gauge = Arc::new(Gauge::default());
    let connections = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let (seen2, stop2, gauge2) = (seen.clone(), stop.clone(), gauge.clone());
    let accepted = connections.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop2.cancelled() => break,
                r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
            };
            let _ = stream.set_nodelay(true);
            accepted.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            let seen = seen2.clone();
            let gauge = gauge2.clone();
            let tls = tls.clone();
            let stop = stop2.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req| backend_route(req, seen.clone(), gauge.clone()));
                let mut builder =
                    hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                // Heads as large as the proxy accepts (64 KiB), as nginx-sized servers take.
                builder.http2().max_header_list_size(256 * 1024);
                match tls {
                    Some(cfg) => {
                        let Ok(tls) = tokio_rustls::TlsAcceptor::from(cfg).accept(stream).await
                        else {
                            return;
                        };
                        tokio::select! {
                            _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), svc) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                    None => {
                        tokio::select! {
                            _ = builder.serve_connection_with_upgrades(TokioIo::new(stream), svc) => {}
                            _ = stop.cancelled() => {}
                        }
                    }
                }
            });
        }
    });
    Backend {
        addr,
        seen,
        connections,
        stop,
        gauge,
    }
}

type BBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full_body(b: impl Into<Bytes>) -> BBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

/// The byte at offset `i` of `/bytes/N`.
pub fn pattern(i: usize) -> u8 {
    (i % 251) as u8
}

async fn backend_route(
    mut req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    gauge: Arc<Gauge>,
) -> Result<Response<BBody>, hyper::Error> {
    seen.lock().unwrap().push(Seen {
        method: req.method().to_string(),
        path: req
            .uri()
            .path_and_query()
            .map(|p| p.to_string())
            .unwrap_or_default(),
        version: req.version(),
        headers: req.headers().clone(),
    });
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        return Ok(ws_echo(&mut req));
    }
    if path == "/close" {
        let mut resp = Response::new(full_body("ok"));
        resp.headers_mut()
            .insert("connection", http::HeaderValue::from_static("close"));
        return Ok(resp);
    }
    if path == "/echo" {
        let (parts, body) = req.into_parts();
        let mut resp = Response::new(body.boxed());
        if let Some(ct) = parts.headers.get("content-type") {
            resp.headers_mut().insert("content-type", ct.clone());
        }
        return Ok(resp);
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        // Streamed in 64 KiB frames, never one buffer.
        let chunks = (0..n).step_by(64 * 1024).map(move |start| {
            let end = (start + 64 * 1024).min(n);
            Ok::<_, hyper::Error>(Frame::data(Bytes::from(
                (start..end).map(pattern).collect::<Vec<u8>>(),
            )))
        });
        let body = StreamBody::new(futures_util::stream::iter(chunks));
        let mut resp = Response::new(BodyExt::boxed(body));
        resp.headers_mut().insert("content-length", n.into());
        return Ok(resp);
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0);
        let _in_flight = gauge.enter();
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full_body("slow ok")));
    }
    if let Some(ms) = path.strip_prefix("/trickle/") {
        // Headers and a first chunk at once, the rest after MS ms.
        let ms: u64 = ms.parse().unwrap_or(0);
        let chunks = futures_util::stream::iter(0..2).then(move |i| async move {
            if i == 1 {
                tokio::time::sleep(Duration::from_millis(ms)).await;
            }
            Ok::<_, hyper::Error>(Frame::data(Bytes::from_static(b"chunk ")))
        });
        return Ok(Response::new(BodyExt::boxed(StreamBody::new(chunks))));
    }
    if path == "/raw" {
        // `?ct=<content-type>&hex=<body bytes>`: answers exactly those bytes.
        let query = req.uri().query().unwrap_or_default().to_owned();
        let mut ct = String::new();
        let mut bytes = Vec::new();
        for pair in query.split('&') {
            match pair.split_once('=') {
                Some(("ct", v)) => {
                    ct = v
                        .replace("%3B", ";")
                        .replace("%3D", "=")
                        .replace("%20", " ")
                        .replace("%2F", "/")
                }
                Some(("hex", v)) => {
                    bytes = (0..v.len() / 2)
                        .map(|i| u8::from_str_radix(&v[2 * i..2 * i + 2], 16).unwrap())
                        .collect()
                }
                _ => {}
            }
        }
        let mut r = Response::new(full_body(bytes));
        r.headers_mut().insert("content-type", ct.parse().unwrap());
        return Ok(r);
    }
    if path == "/status/418" {
        let mut r = Response::new(full_body("teapot"));
        *r.status_mut() = StatusCode::IM_A_TEAPOT;
        return Ok(r);
    }
    Ok(Response::new(full_body("ok")))
}

/// Answer a WebSocket handshake and echo every message (text, binary, ping → pong by tungstenite,
/// close code echoed).
fn ws_echo(req: &mut Request<Incoming>) -> Response<BBody> {
    let key = req.headers().get("sec-websocket-key").cloned();
    let Some(key) = key else {
        let mut r = Response::new(full_body("not a websocket"));
        *r.status_mut() = StatusCode::BAD_REQUEST;
        return r;
    };
    let accept = tokio_tungstenite::tungstenite::handshake::derive_accept_key(key.as_bytes());
    let on_upgrade = hyper::upgrade::on(req);
    tokio::spawn(async move {
        let Ok(up) = on_upgrade.await else { return };
        let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
            TokioIo::new(up),
            tokio_tungstenite::tungstenite::protocol::Role::Server,
            None,
        )
        .await;
        while let Some(Ok(msg)) = ws.next().await {
            use tokio_tungstenite::tungstenite::Message;
            match msg {
                Message::Text(_) | Message::Binary(_) => {
                    let sent = ws.send(msg).await;
                    if sent.is_err() {
                        break;
                    }
                }
                // tungstenite answers the close itself; reading on flushes the reply.
                Message::Close(_) => {}
                _ => {}
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(full_body(Bytes::new()))
        .unwrap()
}

/// A running proxy with its temp dir (CA, config) and the test CA its upstream trusts.
pub struct TestProxy {
    pub running: Running,
    pub dir: tempfile::TempDir,
    pub ca_pem: String,
}

impl TestProxy {
    pub fn proxy_url(&self) -> String {
        format!("http://{}", self.running.proxy_addr)
    }
    pub fn control_url(&self) -> String {
        format!("http://{}", self.running.control_addr)
    }
    pub fn ca_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }
}

impl Drop for TestProxy {
    fn drop(&mut self) {
        self.running.shared.shutdown.trigger();
    }
}

/// The YAML of a proxy on 127.0.0.1:0 whose CA lives in `dir/ca`, trusting `trust`, with `rest`
/// appended (apps, map...).
pub fn base_yaml(
    dir: &std::path::Path,
    trust: &std::path::Path,
    map: &[(&str, String)],
    rest: &str,
) -> String {
    let mut y = format!(
        "proxy: {{listen: 127.0.0.1:0, clients: [127.0.0.0/8]}}\ncontrol: {{listen: 127.0.0.1:0}}\nca: {{dir: {}}}\nupstream:\n  trust: [{}]\n",
        dir.join("ca").display(),
        trust.display()
    );
    if map.is_empty() {
        y.push_str("  map: {}\n");
    } else {
        y.push_str("  map:\n");
        for (host, to) in map {
            y.push_str(&format!("    {host}: {to}\n"));
        }
    }
    // Tests speak the contract: refusals are answered unless a test asks for another style.
    if !rest.contains("sandbox:") {
        y.push_str("sandbox: {refusal: answer}\n");
    }
    y.push_str(rest);
    y
}

/// One app with `api.example.com` in request/upload/download and `ws.example.com` in socket.
pub fn one_app() -> String {
    format!(
        "apps:\n  - appid: {APPID}\n    version: devtools\n    domains:\n      request: [https://{API_HOST}]\n      socket: [wss://{WS_HOST}]\n      uploadFile: [https://{API_HOST}]\n      downloadFile: [https://{API_HOST}]\n"
    )
}

/// A proxy started from the config file `file` (in `dir`, which holds its CA), reloaded when
/// the file changes.
pub async fn start_reloadable(file: &std::path::Path, dir: tempfile::TempDir) -> TestProxy {
    let config = Config::load(file).unwrap_or_else(|e| panic!("test config: {e}"));
    let running = wxsandbox::start(config).await.unwrap();
    wxsandbox::reload::enable(&running.shared, file.to_owned(), Box::new(|_| {}));
    let ca_pem = std::fs::read_to_string(dir.path().join("ca").join("wxsandbox-ca.pem")).unwrap();
    TestProxy {
        running,
        dir,
        ca_pem,
    }
}

pub async fn start_proxy_yaml(yaml: String, dir: tempfile::TempDir, ca: &TestCa) -> TestProxy {
    init_crypto();
    let config = Config::from_yaml_str(&yaml, "test.yaml")
        .unwrap_or_else(|e| panic!("test config:\n{e}\n{yaml}"));
    let running = wxsandbox::start(config).await.unwrap();
    let ca_pem = std::fs::read_to_string(dir.path().join("ca").join("wxsandbox-ca.pem")).unwrap();
    let _ = ca;
    TestProxy {
        running,
        dir,
        ca_pem,
    }
}

/// The common set-up: a test CA, an HTTPS backend for api/ws.example.com, a proxy mapping both
/// names to it, with `apps` YAML (default [`one_app`]).
pub async fn setup(apps: Option<String>) -> (TestProxy, Backend, TestCa) {
    setup_with("", apps).await
}

/// [`setup`] with more `proxy:` settings, e.g. `idle_timeout_ms: 1000, max_connections: 50`.
pub async fn setup_with(proxy_opts: &str, apps: Option<String>) -> (TestProxy, Backend, TestCa) {
    init_crypto();
    let ca = TestCa::new("wxsandbox test upstream CA");
    let backend = start_backend(Some(
        ca.server_config(&[API_HOST, WS_HOST, OTHER_HOST], &[b"h2", b"http/1.1"]),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let to = format!("127.0.0.1:{}", backend.addr.port());
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[
            (API_HOST, to.clone()),
            (WS_HOST, to.clone()),
            (OTHER_HOST, to),
        ],
        &apps.unwrap_or_else(one_app),
    );
    let yaml = if proxy_opts.is_empty() {
        yaml
    } else {
        yaml.replacen(
            "clients: [127.0.0.0/8]}",
            &format!("clients: [127.0.0.0/8], {proxy_opts}}}"),
            1,
        )
    };
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    (proxy, backend, ca)
}

/// A reqwest client through the proxy, trusting only the proxy's CA.
pub fn client(proxy: &TestProxy) -> reqwest::Client {
    client_builder(proxy).build().unwrap()
}

pub fn client_builder(proxy: &TestProxy) -> reqwest::ClientBuilder {
    reqwest::Client::builder()
        .proxy(reqwest::Proxy::all(proxy.proxy_url()).unwrap())
        .tls_built_in_root_certs(false)
        .add_root_certificate(reqwest::Certificate::from_pem(proxy.ca_pem.as_bytes()).unwrap())
        .timeout(WAIT)
}

pub fn sha256(bytes: &[u8]) -> String {
    let mut h = Sha256::new();
    h.update(bytes);
    format!("{:x}", h.finalize())
}

/// Open a CONNECT tunnel by hand; returns the stream after the proxy's answer head, and that head.
pub async fn connect_tunnel(
    proxy: SocketAddr,
    authority: &str,
    extra_headers: &str,
) -> (TcpStream, String) {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    s.write_all(
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{extra_headers}\r\n")
            .as_bytes(),
    )
    .await
    .unwrap();
    let head = read_head(&mut s).await;
    (s, head)
}

/// Read an HTTP response head byte by byte (bounded), leaving the body in the stream.
pub async fn read_head(s: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") && head.len() < 64 * 1024 {
        match tokio::time::timeout(WAIT, s.read(&mut byte)).await {
            Ok(Ok(1)) => head.push(byte[0]),
            _ => break,
        }
    }
    String::from_utf8_lossy(&head).into_owned()
}

/// A TLS client config trusting only `ca_pem`, with ALPN `alpn`.
pub fn tls_client(ca_pem: &str, alpn: &[&[u8]]) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pemfile::certs(&mut ca_pem.as_bytes()) {
        roots.add(cert.unwrap()).unwrap();
    }
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    cfg.alpn_protocols = alpn.iter().map(|p| p.to_vec()).collect();
    Arc::new(cfg)
}

/// Read a whole HTTP/1.1 answer with a Content-Length body from a raw stream.
pub async fn read_response(s: &mut TcpStream) -> (String, String) {
    let head = read_head(s).await;
    let len = head
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("content-length")
                .then(|| v.trim().parse::<usize>().ok())
                .flatten()
        })
        .unwrap_or(0);
    let mut body = vec![0u8; len];
    tokio::time::timeout(WAIT, s.read_exact(&mut body))
        .await
        .unwrap()
        .unwrap();
    (head, String::from_utf8_lossy(&body).into_owned())
}

/// A header of a raw response head.
pub fn head_header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.eq_ignore_ascii_case(name).then(|| v.trim())
    })
}

/// Flip the skip switch through the control API.
pub async fn set_skip(proxy: &TestProxy, enabled: bool) {
    let r = reqwest::Client::new()
        .put(format!("{}/api/skip-domain-check", proxy.control_url()))
        .body(format!("{{\"enabled\":{enabled}}}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

/// The refusal triple of a reqwest response, and its JSON body.
pub async fn refusal_of(r: reqwest::Response) -> (u16, String, String, String, serde_json::Value) {
    let status = r.status().as_u16();
    let h = |n: &str| {
        r.headers()
            .get(n)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default()
    };
    let (errno, errmsg, rule) = (
        h("x-wxsandbox-errno"),
        h("x-wxsandbox-errmsg"),
        h("x-wxsandbox-rule"),
    );
    let body: serde_json::Value = r.json().await.unwrap_or(serde_json::Value::Null);
    (status, errno, errmsg, rule, body)
}

/// Lower-case hex of bytes, for `/raw?hex=`.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `GET /api/state` of the proxy.
pub async fn state(proxy: &TestProxy) -> serde_json::Value {
    reqwest::get(format!("{}/api/state", proxy.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// Sum of `http_in_flight` over every instance of every app.
pub async fn http_in_flight(proxy: &TestProxy) -> u64 {
    let s = state(proxy).await;
    s["apps"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|a| a["instances"].as_array().unwrap().iter())
        .map(|i| i["http_in_flight"].as_u64().unwrap())
        .sum()
}

/// Poll `cond` every 20 ms for at most `limit`.
pub async fn eventually<F, Fut>(limit: Duration, mut cond: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// POST background/foreground for an app on the control port.
pub async fn set_phase(proxy: &TestProxy, appid: &str, phase: &str, client: Option<&str>) -> u16 {
    let mut url = format!("{}/api/apps/{appid}/{phase}", proxy.control_url());
    if let Some(c) = client {
        url.push_str(&format!("?client={c}"));
    }
    reqwest::Client::new()
        .post(url)
        .send()
        .await
        .unwrap()
        .status()
        .as_u16()
}

/// One GET through a hand-made CONNECT tunnel (with `connect_headers`, e.g. a phone's
/// Proxy-Authorization), over HTTP/1.1 inside TLS; returns the status and the body.
pub async fn get_via_tunnel(
    proxy: &TestProxy,
    host: &str,
    path: &str,
    connect_headers: &str,
) -> (u16, String) {
    use http_body_util::Empty;
    let tls = tls_via_tunnel(proxy, host, connect_headers).await;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::get(path)
        .header("host", host)
        .body(Empty::<Bytes>::new())
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// `Proxy-Authorization: Basic base64(user:password)` as a header line.
pub fn proxy_auth_header(user: &str) -> String {
    use base64::Engine;
    format!(
        "Proxy-Authorization: Basic {}\r\n",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:x"))
    )
}

/// CONNECT to `host:443` (with `connect_headers`), then TLS trusting only the proxy's CA, HTTP/1.1.
pub async fn tls_via_tunnel(
    proxy: &TestProxy,
    host: &str,
    connect_headers: &str,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let (tcp, head) = connect_tunnel(
        proxy.running.proxy_addr,
        &format!("{host}:443"),
        connect_headers,
    )
    .await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    tokio_rustls::TlsConnector::from(tls_client(&proxy.ca_pem, &[b"http/1.1"]))
        .connect(host.to_owned().try_into().unwrap(), tcp)
        .await
        .unwrap()
}

pub type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

/// A wss client through the proxy to `wss://ws.example.com{path}`.
pub async fn open_wss(
    proxy: &TestProxy,
    path: &str,
) -> Result<Wss, tokio_tungstenite::tungstenite::Error> {
    let tls = tls_via_tunnel(proxy, WS_HOST, "").await;
    tokio_tungstenite::client_async(format!("wss://{WS_HOST}{path}"), tls)
        .await
        .map(|(ws, _)| ws)
}

/// CONNECT to `host:443`, TLS (ALPN h2) trusting the proxy's CA, then an HTTP/2 client whose
/// stream window is `stream_window` (0: the server may send no body byte until released).
pub async fn h2_via_tunnel(
    proxy: &TestProxy,
    host: &str,
    stream_window: Option<u32>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Empty<Bytes>> {
    let (tcp, head) = connect_tunnel(proxy.running.proxy_addr, &format!("{host}:443"), "").await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let tls = tokio_rustls::TlsConnector::from(tls_client(&proxy.ca_pem, &[b"h2"]))
        .connect(host.to_owned().try_into().unwrap(), tcp)
        .await
        .unwrap();
    let mut builder = hyper::client::conn::http2::Builder::new(TokioExecutor::new());
    builder.timer(hyper_util::rt::TokioTimer::new());
    if let Some(w) = stream_window {
        builder.initial_stream_window_size(w).adaptive_window(false);
    }
    let (sender, conn) = builder.handshake(TokioIo::new(tls)).await.unwrap();
    tokio::spawn(conn);
    sender
}

/// The latest records of `/api/log` (newest first).
pub async fn log_records(proxy: &TestProxy) -> Vec<serde_json::Value> {
    let v: serde_json::Value = reqwest::get(format!("{}/api/log?limit=1000", proxy.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let list = v.get("calls").or_else(|| v.get("records")).unwrap_or(&v);
    list.as_array().cloned().unwrap_or_default()
}

/// Records whose URL contains `needle`.
pub async fn records_for(proxy: &TestProxy, needle: &str) -> Vec<serde_json::Value> {
    log_records(proxy)
        .await
        .into_iter()
        .filter(|r| r["url"].as_str().is_some_and(|u| u.contains(needle)))
        .collect()
}

/// Wait (bounded) until the connection is closed by the peer: `true` when it was.
pub async fn closed_within<S: tokio::io::AsyncRead + Unpin>(s: &mut S, limit: Duration) -> bool {
    let mut buf = [0u8; 4096];
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        match tokio::time::timeout_at(deadline, s.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue,
            Err(_) => return false,
        }
    }
}
