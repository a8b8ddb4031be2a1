//! Soak: the real release binary under a bounded-rate mix of every kind of call, on loopback
//! only, with an oracle for every verdict and samples of the proxy's RSS, descriptors and slots.
//! Run by `scripts/soak.sh [MINUTES]`; by hand:
//!
//! ```sh
//! cargo build --release --locked --bin wxsandbox
//! cargo run --example soak -- --minutes 1 --bin target/release/wxsandbox --out target/soak
//! ```
//!
//! Exit 0 when every call got its expected verdict, RSS grew at most 10% after the warm-up, and
//! descriptors and slots came back to their value before the load; 1 otherwise (why is printed).
//! Every address it uses is in 127.0.0.0/8: the hosts of the config are `upstream.map`ped to
//! backends in this process, and the refused targets never get a byte.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpSocket, TcpStream};
use tokio::time::Instant;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;

use common::{head_header, proxy_auth_header, read_head, sha256, tls_client, TestCa};

/// The main app: api.example.com, the mint names, ws.example.com.
const APP_A: &str = "wx0123456789abcdef";
/// `limits: {requests: 2, overflow: fail}`: the third call at once is refused.
const APP_B: &str = "wxfedcba9876543210";
/// Sent to the background and back by the phase worker.
const APP_C: &str = "wx00112233445566aa";
/// Named by a CONNECT, in no app: 407.
const APP_UNKNOWN: &str = "wx9999999999999999";
const API: &str = "api.example.com";
const WS: &str = "ws.example.com";
const UNLISTED: &str = "unlisted.example";
const WEIXIN: &str = "api.weixin.qq.com";
const MINT_NAMES: usize = 50;
/// Every call, handshake and read is bounded by this.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
const SAMPLE_EVERY: Duration = Duration::from_secs(5);
/// Records in the proxy's call log (its ring's capacity): filled before the baseline.
const PREFILL_CALLS: usize = 10_000;
/// Calls of the load after which the ring holds only the load's records (with a margin).
const RING_TURNOVER: u64 = 12_000;
/// Descriptors the control client may hold open beyond the baseline.
const FD_SLACK: i64 = 2;
const GRACE_MS: u64 = 300;
/// wx.createTCPSocket's forbidden ports (SPEC section 3, rule 4).
const FORBIDDEN_TCP: &[(u16, u16)] = &[
    (0, 1023),
    (1099, 1099),
    (1433, 1433),
    (1521, 1521),
    (1719, 1720),
    (1723, 1723),
    (2049, 2049),
    (2375, 2375),
    (3128, 3128),
    (3306, 3306),
    (3389, 3389),
    (3659, 3659),
    (4045, 4045),
    (5060, 5061),
    (5432, 5432),
    (5984, 5984),
    (6000, 6000),
    (6379, 6379),
    (6566, 6566),
    (7001, 7002),
    (8000, 8100),
    (8443, 8443),
    (8888, 8888),
    (9200, 9200),
    (9300, 9300),
    (10051, 10051),
    (10080, 10080),
    (11211, 11211),
    (27017, 27019),
];

fn mint_host(k: usize) -> String {
    format!("n{}.mint.example", k % MINT_NAMES)
}

// ---------------------------------------------------------------------------------------------
// The oracle's book: calls by kind, wrong verdicts, latencies of the interval.

#[derive(Default)]
struct Stats {
    calls: Mutex<BTreeMap<&'static str, u64>>,
    total: AtomicU64,
    wrong: AtomicU64,
    wrong_by_kind: Mutex<BTreeMap<&'static str, u64>>,
    wrong_list: Mutex<Vec<String>>,
    /// Latencies (µs) of allowed 1 KiB GETs since the last sample.
    lat: Mutex<Vec<u64>>,
    sse_events: AtomicU64,
}

impl Stats {
    fn verdict(&self, kind: &'static str, expected: &str, got: &str) {
        *self.calls.lock().unwrap().entry(kind).or_default() += 1;
        self.total.fetch_add(1, Ordering::Relaxed);
        if expected != got {
            let n = self.wrong.fetch_add(1, Ordering::Relaxed) + 1;
            *self.wrong_by_kind.lock().unwrap().entry(kind).or_default() += 1;
            let line = format!("{kind}: expected `{expected}`, got `{got}`");
            if n <= 20 {
                eprintln!("soak: WRONG VERDICT #{n}: {line}");
                self.wrong_list.lock().unwrap().push(line);
            }
        }
    }
}

struct Ctx {
    proxy: SocketAddr,
    control: String,
    ca_pem: String,
    tcp_echo: SocketAddr,
    stats: Arc<Stats>,
    /// Load stops at this instant.
    end: Instant,
    stop: CancellationToken,
    ctl: reqwest::Client,
}

impl Ctx {
    fn running(&self) -> bool {
        Instant::now() < self.end && !self.stop.is_cancelled()
    }

    /// A client through the proxy as `appid`; HTTP/1.1 only or ALPN (h2 first); pooled or not.
    fn client(&self, appid: &str, h1: bool, pooled: bool) -> reqwest::Client {
        let proxy = reqwest::Proxy::all(format!("http://{}", self.proxy))
            .unwrap()
            .basic_auth(appid, "x");
        let mut b = reqwest::Client::builder()
            .proxy(proxy)
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(self.ca_pem.as_bytes()).unwrap())
            .timeout(CALL_TIMEOUT)
            .connect_timeout(CALL_TIMEOUT);
        if h1 {
            b = b.http1_only();
        }
        if !pooled {
            b = b.pool_max_idle_per_host(0);
        }
        b.build().unwrap()
    }

    async fn state(&self) -> anyhow::Result<serde_json::Value> {
        let r = self
            .ctl
            .get(format!("{}/api/state", self.control))
            .send()
            .await?;
        Ok(r.error_for_status()?.json().await?)
    }

    /// `http_in_flight` of `appid`'s instances, summed.
    async fn in_flight_of(&self, appid: &str) -> u64 {
        let Ok(s) = self.state().await else { return 0 };
        s["apps"]
            .as_array()
            .into_iter()
            .flatten()
            .filter(|a| a["appid"] == appid)
            .flat_map(|a| a["instances"].as_array().into_iter().flatten())
            .filter_map(|i| i["http_in_flight"].as_u64())
            .sum()
    }

    /// Poll (every 20 ms, at most 5 s) until `appid` has `n` calls in flight.
    async fn wait_in_flight(&self, appid: &str, n: u64) -> u64 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            let now = self.in_flight_of(appid).await;
            if now == n || Instant::now() >= deadline {
                return now;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    async fn set_phase(&self, appid: &str, phase: &str) -> String {
        match self
            .ctl
            .post(format!("{}/api/apps/{appid}/{phase}", self.control))
            .send()
            .await
        {
            Ok(r) => r.status().as_u16().to_string(),
            Err(e) => format!("error: {}", chain(&e)),
        }
    }
}

fn chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut source = e.source();
    while let Some(inner) = source {
        let _ = write!(s, ": {inner}");
        source = inner.source();
    }
    s
}

fn short_sha(bytes: &[u8]) -> String {
    sha256(bytes)[..16].to_owned()
}

/// `/bytes/N`'s body.
fn pattern_bytes(n: usize) -> Vec<u8> {
    (0..n).map(common::pattern).collect()
}

/// Bytes that differ call to call (the echo must give back these, not another call's).
fn noise(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// What a call got, in the oracle's words: `STATUS VERSION sha=…` when allowed (no rule
/// header), `STATUS RULE` when refused, `error: …` when the transport failed.
async fn outcome(
    call: impl std::future::Future<Output = reqwest::Result<reqwest::Response>>,
) -> String {
    let r = match call.await {
        Ok(r) => r,
        Err(e) => return format!("error: {}", chain(&e)),
    };
    let status = r.status().as_u16();
    let version = r.version();
    let rule = r
        .headers()
        .get("x-wxsandbox-rule")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    match (r.bytes().await, rule) {
        (Ok(_), Some(rule)) => format!("{status} {rule}"),
        (Ok(body), None) => format!("{status} {version:?} sha={}", short_sha(&body)),
        (Err(e), _) => format!("{status} body error: {}", chain(&e)),
    }
}

fn allowed(version: &str, body: &[u8]) -> String {
    format!("200 {version} sha={}", short_sha(body))
}

fn version_of(h1: bool) -> &'static str {
    if h1 {
        "HTTP/1.1"
    } else {
        "HTTP/2.0"
    }
}

/// `STATUS RULE` of a raw response head.
fn head_verdict(head: &str) -> String {
    let status = head.split_whitespace().nth(1).unwrap_or("no-answer");
    match head_header(head, "x-wxsandbox-rule") {
        Some(rule) => format!("{status} {rule}"),
        None => status.to_owned(),
    }
}

/// A CONNECT by hand, from `local` (127.0.0.1 by default), as `appid`.
async fn connect(
    ctx: &Ctx,
    authority: &str,
    appid: &str,
    local: Option<Ipv4Addr>,
) -> anyhow::Result<(TcpStream, String)> {
    let socket = TcpSocket::new_v4()?;
    if let Some(ip) = local {
        socket.bind(SocketAddr::new(IpAddr::V4(ip), 0))?;
    }
    let mut s = tokio::time::timeout(CALL_TIMEOUT, socket.connect(ctx.proxy)).await??;
    let auth = proxy_auth_header(appid);
    s.write_all(
        format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n{auth}\r\n").as_bytes(),
    )
    .await?;
    let head = read_head(&mut s).await;
    Ok((s, head))
}

/// What the peer does within `limit` after we wrote: `closed` (EOF or error), `N bytes`, `open`.
async fn after_write(s: &mut TcpStream, limit: Duration) -> String {
    let mut buf = [0u8; 1024];
    match tokio::time::timeout(limit, s.read(&mut buf)).await {
        Ok(Ok(0)) | Ok(Err(_)) => "closed".to_owned(),
        Ok(Ok(n)) => format!("{n} bytes"),
        Err(_) => "open".to_owned(),
    }
}

type Wss = tokio_tungstenite::WebSocketStream<tokio_rustls::client::TlsStream<TcpStream>>;

async fn open_ws(ctx: &Ctx, appid: &str) -> Result<Wss, String> {
    let (tcp, head) = connect(ctx, &format!("{WS}:443"), appid, None)
        .await
        .map_err(|e| format!("error: {e:#}"))?;
    if !head.starts_with("HTTP/1.1 200") {
        return Err(format!("connect {}", head_verdict(&head)));
    }
    let tls = tokio_rustls::TlsConnector::from(tls_client(&ctx.ca_pem, &[b"http/1.1"]))
        .connect(WS.try_into().unwrap(), tcp)
        .await
        .map_err(|e| format!("tls error: {e}"))?;
    let handshake = tokio_tungstenite::client_async(format!("wss://{WS}/ws"), tls);
    match tokio::time::timeout(CALL_TIMEOUT, handshake).await {
        Err(_) => Err("handshake timed out".to_owned()),
        Ok(Ok((ws, _))) => Ok(ws),
        Ok(Err(tokio_tungstenite::tungstenite::Error::Http(r))) => {
            let rule = r
                .headers()
                .get("x-wxsandbox-rule")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("-");
            Err(format!("{} {rule}", r.status().as_u16()))
        }
        Ok(Err(e)) => Err(format!("ws error: {e}")),
    }
}

/// Send `msg`, read the next message: `echo ok` when it is the same.
async fn ws_roundtrip(ws: &mut Wss, msg: Message) -> String {
    if let Err(e) = ws.send(msg.clone()).await {
        return format!("send error: {e}");
    }
    match tokio::time::timeout(CALL_TIMEOUT, ws.next()).await {
        Ok(Some(Ok(got))) if got == msg => "echo ok".to_owned(),
        Ok(Some(Ok(got))) => format!("other message: {:.60}", format!("{got:?}")),
        Ok(Some(Err(e))) => format!("ws error: {e}"),
        Ok(None) => "closed".to_owned(),
        Err(_) => "timed out".to_owned(),
    }
}

/// Read until the stream ends (bounded): tungstenite answers a close and flushes it.
async fn drain_ws(ws: &mut Wss) {
    let deadline = Instant::now() + Duration::from_secs(5);
    while let Ok(Some(Ok(_))) = tokio::time::timeout_at(deadline, ws.next()).await {}
}

// ---------------------------------------------------------------------------------------------
// Backends in this process: HTTPS (h2 and http/1.1) for every mapped name, and a TCP echo.

type BBody = http_body_util::combinators::BoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> BBody {
    Full::new(b.into()).map_err(|never| match never {}).boxed()
}

async fn route(mut req: Request<Incoming>) -> Result<Response<BBody>, hyper::Error> {
    let path = req.uri().path().to_owned();
    if path == "/ws" {
        return Ok(ws_echo(&mut req));
    }
    if path == "/echo" {
        return Ok(Response::new(req.into_body().boxed()));
    }
    if let Some(n) = path.strip_prefix("/bytes/") {
        let n: usize = n.parse().unwrap_or(0);
        let chunks = (0..n).step_by(64 * 1024).map(move |start| {
            let end = (start + 64 * 1024).min(n);
            Ok::<_, hyper::Error>(Frame::data(Bytes::from(
                (start..end).map(common::pattern).collect::<Vec<u8>>(),
            )))
        });
        let mut resp = Response::new(BodyExt::boxed(StreamBody::new(futures_util::stream::iter(
            chunks,
        ))));
        resp.headers_mut().insert("content-length", n.into());
        return Ok(resp);
    }
    if let Some(ms) = path.strip_prefix("/slow/") {
        let ms: u64 = ms.parse().unwrap_or(0).min(10_000);
        tokio::time::sleep(Duration::from_millis(ms)).await;
        return Ok(Response::new(full("slow ok")));
    }
    Ok(Response::new(full("ok")))
}

fn ws_echo(req: &mut Request<Incoming>) -> Response<BBody> {
    let Some(key) = req.headers().get("sec-websocket-key").cloned() else {
        let mut r = Response::new(full("not a websocket"));
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
        // Bounded by the peer: the proxy closes it at the latest when the client goes.
        while let Some(Ok(msg)) = ws.next().await {
            if (msg.is_text() || msg.is_binary()) && ws.send(msg).await.is_err() {
                break;
            }
        }
    });
    Response::builder()
        .status(StatusCode::SWITCHING_PROTOCOLS)
        .header("upgrade", "websocket")
        .header("connection", "upgrade")
        .header("sec-websocket-accept", accept)
        .body(full(Bytes::new()))
        .unwrap()
}

/// The HTTPS backend; `stop` closes the listener and every connection it served.
async fn start_backend(tls: Arc<rustls::ServerConfig>, stop: CancellationToken) -> SocketAddr {
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
                    _ = builder.serve_connection_with_upgrades(TokioIo::new(tls), service_fn(route)) => {}
                    () = stop.cancelled() => {}
                }
            });
        }
    });
    addr
}

/// A TCP echo server on 127.0.0.2 (a LAN neighbour of 127.0.0.x) at a port TCP sockets may use.
async fn start_tcp_echo(stop: CancellationToken) -> anyhow::Result<SocketAddr> {
    for _ in 0..50 {
        let listener = TcpListener::bind("127.0.0.2:0").await?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        if FORBIDDEN_TCP
            .iter()
            .any(|&(lo, hi)| (lo..=hi).contains(&port))
        {
            continue;
        }
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tokio::select! {
                    () = stop.cancelled() => break,
                    r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
                };
                let stop = stop.clone();
                tokio::spawn(async move {
                    let (mut r, mut w) = s.split();
                    tokio::select! {
                        _ = tokio::io::copy(&mut r, &mut w) => {}
                        () = stop.cancelled() => {}
                        () = tokio::time::sleep(CALL_TIMEOUT) => {}
                    }
                });
            }
        });
        return Ok(addr);
    }
    bail!("no port on 127.0.0.2 outside the forbidden TCP ports in 50 tries")
}

// ---------------------------------------------------------------------------------------------
// The proxy: the real binary as a child process.

struct ProxyProcess {
    child: Child,
    pid: u32,
    proxy: SocketAddr,
    control: SocketAddr,
}

impl ProxyProcess {
    fn terminate(&mut self) -> String {
        let _ = Command::new("kill")
            .args(["-TERM", &self.pid.to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(15);
        while std::time::Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return status.to_string();
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        "killed after 15 s (did not drain)".to_owned()
    }
}

impl Drop for ProxyProcess {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn yaml(dir: &Path, trust: &Path, backend: SocketAddr) -> String {
    let to = format!("127.0.0.1:{}", backend.port());
    let mints: Vec<String> = (0..MINT_NAMES).map(mint_host).collect();
    let mut y = format!(
        "proxy: {{listen: 127.0.0.1:0, clients: [127.0.0.0/8]}}\ncontrol: {{listen: 127.0.0.1:0}}\nca: {{dir: {}}}\nupstream:\n  trust: [{}]\n  map:\n",
        dir.join("ca").display(),
        trust.display()
    );
    // Every name the soak uses goes to the backend, refused ones too: a wrong verdict can't
    // reach outside the machine.
    for host in [API, WS, UNLISTED, WEIXIN]
        .into_iter()
        .chain(mints.iter().map(String::as_str))
    {
        let _ = writeln!(y, "    {host}: {to}");
    }
    let request: Vec<String> = std::iter::once(format!("https://{API}"))
        .chain(mints.iter().map(|h| format!("https://{h}")))
        .collect();
    let _ = write!(
        y,
        "sandbox: {{refusal: answer}}\napps:\n  - appid: {APP_A}\n    version: devtools\n    domains:\n      request: [{}]\n      socket: [wss://{WS}]\n    limits: {{requests: 10, sockets: 5, overflow: queue, background_grace_ms: {GRACE_MS}}}\n  - appid: {APP_B}\n    domains:\n      request: [https://{API}]\n    limits: {{requests: 2, overflow: fail, background_grace_ms: {GRACE_MS}}}\n  - appid: {APP_C}\n    domains:\n      request: [https://{API}]\n      socket: [wss://{WS}]\n    limits: {{background_grace_ms: {GRACE_MS}}}\n",
        request.join(", ")
    );
    y
}

/// Start the binary and read its start line (`proxy on ADDR ...; dashboard http://ADDR/`).
fn start_proxy(bin: &Path, config: &Path, log: &Path) -> anyhow::Result<ProxyProcess> {
    let log_file = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(["run", "-c"])
        .arg(config)
        .env("RUST_LOG", "wxsandbox=warn")
        .stdin(Stdio::null())
        .stdout(log_file.try_clone()?)
        .stderr(log_file)
        .spawn()
        .with_context(|| format!("can't start {}", bin.display()))?;
    let pid = child.id();
    let mut process = ProxyProcess {
        child,
        pid,
        proxy: "0.0.0.0:0".parse()?,
        control: "0.0.0.0:0".parse()?,
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        let text = std::fs::read_to_string(log).unwrap_or_default();
        if let Some(line) = text.lines().find(|l| l.contains("proxy on ")) {
            let word_after = |marker: &str| -> Option<String> {
                let rest = &line[line.find(marker)? + marker.len()..];
                Some(
                    rest.split(|c: char| c.is_whitespace() || c == '/' || c == ';')
                        .next()?
                        .to_owned(),
                )
            };
            process.proxy = word_after("proxy on ")
                .context("no proxy address")?
                .parse()?;
            process.control = word_after("dashboard http://")
                .context("no dashboard address")?
                .parse()?;
            return Ok(process);
        }
        if let Ok(Some(status)) = process.child.try_wait() {
            bail!("the proxy exited ({status}) before listening:\n{text}");
        }
        if std::time::Instant::now() >= deadline {
            bail!("the proxy printed no start line in 20 s:\n{text}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

// ---------------------------------------------------------------------------------------------
// Samples.

#[derive(Debug, Clone, Default)]
struct Sample {
    t: f64,
    phase: &'static str,
    rss_kib: u64,
    fds: i64,
    in_flight: u64,
    queued: u64,
    sockets: u64,
    instances: u64,
    calls: u64,
    wrong: u64,
    p50_ms: Option<f64>,
    p99_ms: Option<f64>,
    /// The interval's 1 KiB GET latencies (µs, sorted), for the 5-minute windows.
    lat_us: Vec<u64>,
}

/// The p99 windows: the first and the last 5 minutes of the load.
const WINDOW_S: f64 = 300.0;

/// p99 (ms) of the 1 KiB GETs in the first and in the last [`WINDOW_S`] of the load; `None` when
/// the load is shorter than two windows (they would overlap).
fn p99_windows(load: &[&Sample]) -> Option<(f64, f64)> {
    let (from, to) = (load.first()?.t, load.last()?.t);
    if to - from < 2.0 * WINDOW_S {
        return None;
    }
    let p99 = |keep: &dyn Fn(f64) -> bool| {
        let mut v: Vec<u64> = load
            .iter()
            .filter(|s| keep(s.t))
            .flat_map(|s| s.lat_us.iter().copied())
            .collect();
        v.sort_unstable();
        percentile(&v, 99)
    };
    // A sample holds the 5 s before it: the first window's samples end within WINDOW_S + 5 s.
    let first = p99(&|t| t <= from + WINDOW_S)?;
    let last = p99(&|t| t > to - WINDOW_S)?;
    Some((first, last))
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn fd_count(pid: u32) -> i64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(-1, |d| d.count() as i64)
}

fn percentile(sorted: &[u64], p: usize) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let i = (sorted.len() * p / 100).min(sorted.len() - 1);
    Some(sorted[i] as f64 / 1000.0)
}

async fn sample(ctx: &Ctx, pid: u32, t0: Instant, phase: &'static str) -> Sample {
    let mut lat = std::mem::take(&mut *ctx.stats.lat.lock().unwrap());
    lat.sort_unstable();
    let mut s = Sample {
        t: t0.elapsed().as_secs_f64(),
        phase,
        rss_kib: rss_kib(pid),
        fds: fd_count(pid),
        calls: ctx.stats.total.load(Ordering::Relaxed),
        wrong: ctx.stats.wrong.load(Ordering::Relaxed),
        p50_ms: percentile(&lat, 50),
        p99_ms: percentile(&lat, 99),
        lat_us: lat,
        ..Sample::default()
    };
    if let Ok(state) = ctx.state().await {
        for app in state["apps"].as_array().into_iter().flatten() {
            for i in app["instances"].as_array().into_iter().flatten() {
                s.instances += 1;
                s.in_flight += i["http_in_flight"].as_u64().unwrap_or(0);
                s.queued += i["http_queued"].as_u64().unwrap_or(0);
                s.sockets += i["sockets"].as_u64().unwrap_or(0);
            }
        }
    }
    s
}

fn csv(samples: &[Sample]) -> String {
    let mut out =
        "t_s,phase,rss_kib,fds,in_flight,queued,sockets,instances,calls,wrong,p50_ms,p99_ms\n"
            .to_owned();
    let opt = |v: Option<f64>| v.map_or_else(|| "NaN".to_owned(), |v| format!("{v:.2}"));
    for s in samples {
        let _ = writeln!(
            out,
            "{:.1},{},{},{},{},{},{},{},{},{},{},{}",
            s.t,
            s.phase,
            s.rss_kib,
            s.fds,
            s.in_flight,
            s.queued,
            s.sockets,
            s.instances,
            s.calls,
            s.wrong,
            opt(s.p50_ms),
            opt(s.p99_ms)
        );
    }
    out
}

/// A gnuplot script for soak.png: RSS and fds, slots, latency.
fn gnuplot_script(out: &Path, minutes: f64) -> String {
    format!(
        r#"set datafile separator ','
set terminal pngcairo size 1100,900 noenhanced
set output '{png}'
set key top left
set grid
set xlabel 'seconds since start'
set multiplot layout 3,1 title 'wxsandbox soak, {minutes} min of load (target/soak/soak.csv)'
set ylabel 'RSS MiB'
set y2label 'open fds'
set ytics nomirror
set y2tics
plot '{csv}' using 1:($3/1024) skip 1 with linespoints title 'RSS (MiB)', '' using 1:4 skip 1 axes x1y2 with linespoints title 'fds'
unset y2label
unset y2tics
set ylabel 'slots'
plot '{csv}' using 1:5 skip 1 with linespoints title 'in flight', '' using 1:6 skip 1 with linespoints title 'queued', '' using 1:7 skip 1 with linespoints title 'sockets'
set ylabel 'ms'
plot '{csv}' using 1:11 skip 1 with linespoints title 'p50 1 KiB GET', '' using 1:12 skip 1 with linespoints title 'p99 1 KiB GET'
unset multiplot
"#,
        png = out.join("soak.png").display(),
        csv = out.join("soak.csv").display(),
    )
}

// ---------------------------------------------------------------------------------------------
// Workers: each loop is bounded by the end instant and a count, each call by CALL_TIMEOUT.

/// Sleep until the next tick of `period`, or until the load stops.
async fn pace(ctx: &Ctx, next: &mut Instant, period: Duration) {
    *next += period;
    let now = Instant::now();
    if *next < now {
        *next = now;
    }
    tokio::select! {
        () = tokio::time::sleep_until((*next).min(ctx.end)) => {}
        () = ctx.stop.cancelled() => {}
    }
}

fn max_iterations(ctx: &Ctx, period: Duration) -> u64 {
    let left = ctx.end.saturating_duration_since(Instant::now());
    (left.as_millis() / period.as_millis().max(1)) as u64 + 10
}

struct Clients {
    unknown: reqwest::Client,
    h1: reqwest::Client,
    h2: reqwest::Client,
    mint: reqwest::Client,
}

/// Allowed calls of app A: 1 KiB GETs (timed), 1 KiB and 1 MiB echoes, 1 MiB GETs, aborted
/// 5 MB downloads, new host names.
async fn allowed_worker(ctx: Arc<Ctx>, w: u64, clients: Arc<Clients>, mint_seq: Arc<AtomicU64>) {
    let period = Duration::from_millis(70);
    let mut next = Instant::now();
    for i in 0..max_iterations(&ctx, period) {
        if !ctx.running() {
            break;
        }
        let h1 = (i + w) % 2 == 0;
        let c = if h1 { &clients.h1 } else { &clients.h2 };
        let v = version_of(h1);
        match i % 20 {
            0 => {
                let body = noise(1 << 20, i * 7 + w);
                let expected = allowed(v, &body);
                let got = outcome(c.post(format!("https://{API}/echo")).body(body).send()).await;
                ctx.stats.verdict("echo-1MiB", &expected, &got);
            }
            5 => {
                let expected = allowed(v, &pattern_bytes(1 << 20));
                let got = outcome(c.get(format!("https://{API}/bytes/1048576")).send()).await;
                ctx.stats.verdict("get-1MiB", &expected, &got);
            }
            10 => {
                let got = abort_mid_body(c).await;
                ctx.stats.verdict("abort-mid-body", "200 first chunk", &got);
            }
            3 | 13 => {
                let host = mint_host(mint_seq.fetch_add(1, Ordering::Relaxed) as usize);
                let expected = allowed("HTTP/2.0", &pattern_bytes(16));
                let got =
                    outcome(clients.mint.get(format!("https://{host}/bytes/16")).send()).await;
                ctx.stats.verdict("mint-host", &expected, &got);
            }
            1 | 6 | 11 | 16 => {
                let body = noise(1024, i * 13 + w);
                let expected = allowed(v, &body);
                let got = outcome(c.post(format!("https://{API}/echo")).body(body).send()).await;
                ctx.stats.verdict("echo-1KiB", &expected, &got);
            }
            _ => {
                let expected = allowed(v, &pattern_bytes(1024));
                let started = Instant::now();
                let got = outcome(c.get(format!("https://{API}/bytes/1024")).send()).await;
                if got == expected {
                    let us = started.elapsed().as_micros() as u64;
                    ctx.stats.lat.lock().unwrap().push(us);
                }
                ctx.stats.verdict("get-1KiB", &expected, &got);
            }
        }
        pace(&ctx, &mut next, period).await;
    }
}

/// GET 5 MB, read the first chunk, drop the response (the client goes away mid-body).
async fn abort_mid_body(c: &reqwest::Client) -> String {
    let mut r = match c.get(format!("https://{API}/bytes/5000000")).send().await {
        Ok(r) => r,
        Err(e) => return format!("error: {}", chain(&e)),
    };
    let status = r.status().as_u16();
    match r.chunk().await {
        Ok(Some(chunk)) if !chunk.is_empty() => format!("{status} first chunk"),
        Ok(_) => format!("{status} no body"),
        Err(e) => format!("{status} body error: {}", chain(&e)),
    }
}

/// Every refusal rule this set-up can trigger, one after another.
async fn refusal_worker(ctx: Arc<Ctx>, clients: Arc<Clients>) {
    let period = Duration::from_millis(100);
    let mut next = Instant::now();
    let c = &clients.h1;
    for i in 0..max_iterations(&ctx, period) {
        if !ctx.running() {
            break;
        }
        let raw = |authority: String, appid: &'static str| {
            let ctx = ctx.clone();
            async move {
                match connect(&ctx, &authority, appid, None).await {
                    Ok((_s, head)) => head_verdict(&head),
                    Err(e) => format!("error: {e:#}"),
                }
            }
        };
        let (kind, expected, got): (&'static str, &str, String) = match i % 11 {
            0 => (
                "refuse-unlisted-connect",
                "403 domain-list",
                raw(format!("{UNLISTED}:443"), APP_A).await,
            ),
            1 => (
                "refuse-forbidden-host",
                "403 forbidden-host",
                raw(format!("{WEIXIN}:443"), APP_A).await,
            ),
            2 => (
                "refuse-http-to-https-host",
                "403 domain-list",
                outcome(c.get(format!("http://{API}/plain")).send()).await,
            ),
            3 => (
                "refuse-ip-literal",
                "403 domain-list",
                raw("127.0.1.9:443".to_owned(), APP_A).await,
            ),
            4 => (
                "refuse-own-address",
                "403 domain-list",
                outcome(c.get("http://127.0.0.1:9/own").send()).await,
            ),
            5 => (
                "refuse-bad-hint",
                "400 invalid-url",
                outcome(
                    c.get(format!("https://{API}/hint"))
                        .header("x-wxsandbox-url", format!("https://{}/hint", mint_host(1)))
                        .send(),
                )
                .await,
            ),
            6 => (
                "refuse-method",
                "400 invalid-url",
                outcome(c.patch(format!("https://{API}/patch")).send()).await,
            ),
            7 => (
                "refuse-timeout",
                "504 timeout",
                outcome(
                    c.get(format!("https://{API}/slow/1500"))
                        .header("x-wxsandbox-timeout", "150")
                        .send(),
                )
                .await,
            ),
            8 => (
                "refuse-tcp-port",
                "200 closed",
                match connect(&ctx, "127.0.0.2:3306", APP_A, None).await {
                    Ok((mut s, head)) if head.starts_with("HTTP/1.1 200") => {
                        let _ = s.write_all(b"hello 3306\n").await;
                        format!("200 {}", after_write(&mut s, Duration::from_secs(5)).await)
                    }
                    Ok((_s, head)) => head_verdict(&head),
                    Err(e) => format!("error: {e:#}"),
                },
            ),
            // A named appid that no app has: the tunnel is opened, its calls get 407.
            9 => (
                "refuse-unknown-appid",
                "407 appid",
                outcome(clients.unknown.get(format!("https://{API}/who")).send()).await,
            ),
            _ => (
                "refuse-wrong-port",
                "403 domain-list",
                raw(format!("{API}:444"), APP_A).await,
            ),
        };
        ctx.stats.verdict(kind, expected, &got);
        pace(&ctx, &mut next, period).await;
    }
}

/// App B (2 slots, overflow fail): hold both, the third is refused, the two finish.
async fn concurrency_worker(ctx: Arc<Ctx>) {
    let period = Duration::from_millis(1500);
    let c = ctx.client(APP_B, true, true);
    let mut next = Instant::now();
    let slow_ok = allowed("HTTP/1.1", b"slow ok");
    for _ in 0..max_iterations(&ctx, period) {
        if !ctx.running() {
            break;
        }
        let held: Vec<_> = (0..2)
            .map(|_| tokio::spawn(outcome(c.get(format!("https://{API}/slow/1000")).send())))
            .collect();
        let now = ctx.wait_in_flight(APP_B, 2).await;
        ctx.stats.verdict(
            "concurrency-held",
            "2 in flight",
            &format!("{now} in flight"),
        );
        if now == 2 {
            let got = outcome(c.get(format!("https://{API}/bytes/16")).send()).await;
            ctx.stats
                .verdict("refuse-concurrency", "429 concurrency", &got);
        }
        for h in held {
            let got = h.await.unwrap_or_else(|e| format!("join error: {e}"));
            ctx.stats.verdict("concurrency-slot-call", &slow_ok, &got);
        }
        pace(&ctx, &mut next, period).await;
    }
}

/// App C: foreground calls and a socket; background: new calls and sockets refused, the
/// socket closed 1000 `interrupted`, the call in flight cut `interrupted`; foreground again.
async fn phase_worker(ctx: Arc<Ctx>) {
    let period = Duration::from_millis(3000);
    let c = ctx.client(APP_C, true, true);
    let small = allowed("HTTP/1.1", &pattern_bytes(16));
    let mut next = Instant::now();
    for _ in 0..max_iterations(&ctx, period) {
        if !ctx.running() {
            break;
        }
        let get = || outcome(c.get(format!("https://{API}/bytes/16")).send());
        ctx.stats
            .verdict("phase-foreground-call", &small, &get().await);
        let mut ws = match open_ws(&ctx, APP_C).await {
            Ok(ws) => Some(ws),
            Err(e) => {
                ctx.stats.verdict("phase-ws-open", "open", &e);
                None
            }
        };
        if let Some(ws) = ws.as_mut() {
            let got = ws_roundtrip(ws, Message::Text("before background".into())).await;
            ctx.stats.verdict("phase-ws-echo", "echo ok", &got);
        }
        let slow = tokio::spawn(outcome(c.get(format!("https://{API}/slow/3000")).send()));
        let now = ctx.wait_in_flight(APP_C, 1).await;
        ctx.stats
            .verdict("phase-held", "1 in flight", &format!("{now} in flight"));
        ctx.stats.verdict(
            "control-background",
            "200",
            &ctx.set_phase(APP_C, "background").await,
        );
        ctx.stats
            .verdict("refuse-background", "503 background", &get().await);
        let ws_got = match open_ws(&ctx, APP_C).await {
            Ok(mut ws) => {
                let _ = ws.close(None).await;
                "open".to_owned()
            }
            Err(e) => e,
        };
        ctx.stats
            .verdict("refuse-background-ws", "503 background", &ws_got);
        if let Some(mut ws) = ws {
            let got = match tokio::time::timeout(CALL_TIMEOUT, ws.next()).await {
                Ok(Some(Ok(Message::Close(Some(f))))) => {
                    format!("close {} {}", u16::from(f.code), f.reason)
                }
                other => format!("{:.80}", format!("{other:?}")),
            };
            let expected = format!("close {} interrupted", u16::from(CloseCode::Normal));
            ctx.stats.verdict("ws-cut-by-background", &expected, &got);
            drain_ws(&mut ws).await;
        }
        let got = slow.await.unwrap_or_else(|e| format!("join error: {e}"));
        ctx.stats
            .verdict("interrupted-in-flight", "503 interrupted", &got);
        ctx.stats.verdict(
            "control-foreground",
            "200",
            &ctx.set_phase(APP_C, "foreground").await,
        );
        ctx.stats
            .verdict("phase-foreground-call", &small, &get().await);
        pace(&ctx, &mut next, period).await;
    }
}

/// WebSockets of app A: open, echo text and a 64 KiB binary, close.
async fn ws_worker(ctx: Arc<Ctx>) {
    let period = Duration::from_millis(500);
    let mut next = Instant::now();
    for i in 0..max_iterations(&ctx, period) {
        if !ctx.running() {
            break;
        }
        match open_ws(&ctx, APP_A).await {
            Ok(mut ws) => {
                let mut got = "echo ok".to_owned();
                for j in 0..5 {
                    let r =
                        ws_roundtrip(&mut ws, Message::Text(format!("soak {i} {j}").into())).await;
                    if r != "echo ok" {
                        got = r;
                        break;
                    }
                }
                if got == "echo ok" {
                    got = ws_roundtrip(&mut ws, Message::Binary(noise(64 * 1024, i).into())).await;
                }
                let _ = ws.close(None).await;
                drain_ws(&mut ws).await;
                ctx.stats.verdict("websocket-echo", "echo ok", &got);
            }
            Err(e) => ctx.stats.verdict("websocket-echo", "echo ok", &e),
        }
        pace(&ctx, &mut next, period).await;
    }
}

/// Raw TCP tunnels to the LAN neighbour 127.0.0.2, from 127.0.0.10-39 in turn (each instance
/// stays far under 20 TCP sockets in 5 minutes).
async fn tcp_worker(ctx: Arc<Ctx>) {
    let period = Duration::from_millis(2000);
    let mut next = Instant::now();
    for i in 0..max_iterations(&ctx, period) {
        if !ctx.running() {
            break;
        }
        let local = Ipv4Addr::new(127, 0, 0, 10 + (i % 30) as u8);
        let got = match connect(&ctx, &ctx.tcp_echo.to_string(), APP_A, Some(local)).await {
            Ok((mut s, head)) if head.starts_with("HTTP/1.1 200") => {
                let msg = format!("soak tcp {i}\n").into_bytes();
                let mut back = vec![0u8; msg.len()];
                let r = async {
                    s.write_all(&msg).await?;
                    s.read_exact(&mut back).await?;
                    anyhow::Ok(())
                };
                match tokio::time::timeout(CALL_TIMEOUT, r).await {
                    Ok(Ok(())) if back == msg => "echo ok".to_owned(),
                    Ok(Ok(())) => "other bytes".to_owned(),
                    Ok(Err(e)) => format!("error: {e:#}"),
                    Err(_) => "timed out".to_owned(),
                }
            }
            Ok((_s, head)) => head_verdict(&head),
            Err(e) => format!("error: {e:#}"),
        };
        ctx.stats.verdict("tcp-tunnel-echo", "echo ok", &got);
        pace(&ctx, &mut next, period).await;
    }
}

/// The control client: `/api/events` open the whole time, `/api/har` every 10 s.
async fn events_reader(ctx: Arc<Ctx>, stop: CancellationToken) {
    // No total timeout on an endless stream: a read timeout (the proxy sends a keep-alive
    // comment every 15 s), and the stop token.
    let client = reqwest::Client::builder()
        .no_proxy()
        .connect_timeout(CALL_TIMEOUT)
        .read_timeout(CALL_TIMEOUT)
        .build()
        .unwrap();
    let r = client
        .get(format!("{}/api/events", ctx.control))
        .send()
        .await;
    let mut r = match r {
        Ok(r) if r.status() == 200 => r,
        Ok(r) => {
            return ctx
                .stats
                .verdict("events-stream", "200", &r.status().to_string())
        }
        Err(e) => return ctx.stats.verdict("events-stream", "200", &chain(&e)),
    };
    loop {
        tokio::select! {
            () = stop.cancelled() => break,
            chunk = r.chunk() => match chunk {
                Ok(Some(c)) => {
                    let n = c.windows(6).filter(|w| w == b"data: ").count() as u64;
                    ctx.stats.sse_events.fetch_add(n, Ordering::Relaxed);
                }
                Ok(None) => return ctx.stats.verdict("events-stream", "open", "ended"),
                Err(e) => return ctx.stats.verdict("events-stream", "open", &chain(&e)),
            }
        }
    }
    ctx.stats.verdict("events-stream", "open", "open");
}

async fn har_worker(ctx: Arc<Ctx>) {
    let period = Duration::from_secs(10);
    let mut next = Instant::now();
    for _ in 0..max_iterations(&ctx, period) {
        pace(&ctx, &mut next, period).await;
        if !ctx.running() {
            break;
        }
        let got = async {
            let r = ctx
                .ctl
                .get(format!("{}/api/har", ctx.control))
                .send()
                .await?;
            let status = r.status();
            let v: serde_json::Value = serde_json::from_slice(&r.bytes().await?)?;
            let n = v["log"]["entries"].as_array().map_or(0, Vec::len);
            anyhow::Ok(if status == 200 && n > 0 {
                "200 har with entries".to_owned()
            } else {
                format!("{status} har with {n} entries")
            })
        };
        let got = match tokio::time::timeout(CALL_TIMEOUT, got).await {
            Ok(Ok(g)) => g,
            Ok(Err(e)) => format!("error: {e:#}"),
            Err(_) => "timed out".to_owned(),
        };
        ctx.stats
            .verdict("control-har", "200 har with entries", &got);
    }
}

/// Before the baseline: every mint name once, and the call log's ring filled (bounded rate).
async fn prefill(ctx: Arc<Ctx>, clients: Arc<Clients>) {
    let mut tasks = Vec::new();
    for t in 0..8usize {
        let (ctx, clients) = (ctx.clone(), clients.clone());
        tasks.push(tokio::spawn(async move {
            let small = pattern_bytes(16);
            for k in (t..MINT_NAMES).step_by(8) {
                let got = outcome(
                    clients
                        .mint
                        .get(format!("https://{}/bytes/16", mint_host(k)))
                        .send(),
                )
                .await;
                ctx.stats
                    .verdict("prefill", &allowed("HTTP/2.0", &small), &got);
            }
            let period = Duration::from_millis(8); // at most ~1000 calls/s over 8 tasks
            let mut next = Instant::now();
            let deadline = Instant::now() + Duration::from_secs(120);
            for _ in (t..PREFILL_CALLS).step_by(8) {
                if Instant::now() > deadline || ctx.stop.is_cancelled() {
                    break;
                }
                let got = outcome(clients.h2.get(format!("https://{API}/bytes/16")).send()).await;
                ctx.stats
                    .verdict("prefill", &allowed("HTTP/2.0", &small), &got);
                next += period;
                tokio::time::sleep_until(next.max(Instant::now())).await;
            }
        }));
    }
    for t in tasks {
        let _ = t.await;
    }
}

// ---------------------------------------------------------------------------------------------

struct Args {
    minutes: f64,
    bin: PathBuf,
    out: PathBuf,
}

fn args() -> anyhow::Result<Args> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut a = Args {
        minutes: 1.0,
        bin: root.join("target/release/wxsandbox"),
        out: root.join("target/soak"),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().context("a value is missing");
        match arg.as_str() {
            "--minutes" => a.minutes = value()?.parse()?,
            "--bin" => a.bin = value()?.into(),
            "--out" => a.out = value()?.into(),
            other => bail!("unknown argument {other} (--minutes M --bin PATH --out DIR)"),
        }
    }
    if !(a.minutes > 0.0 && a.minutes <= 24.0 * 60.0) {
        bail!("--minutes must be in (0, 1440]");
    }
    Ok(a)
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(run()) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("soak: FAILED to run: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

#[allow(clippy::too_many_lines)]
async fn run() -> anyhow::Result<bool> {
    let args = args()?;
    std::fs::create_dir_all(&args.out)?;
    let load = Duration::from_secs_f64(args.minutes * 60.0);
    let warmup = Duration::from_secs(30).max(load / 5);

    // Backends and the proxy.
    let backend_stop = CancellationToken::new();
    let ca = TestCa::new("wxsandbox soak upstream CA");
    let mints: Vec<String> = (0..MINT_NAMES).map(mint_host).collect();
    let names: Vec<&str> = [API, WS, UNLISTED, WEIXIN]
        .into_iter()
        .chain(mints.iter().map(String::as_str))
        .collect();
    let backend = start_backend(
        ca.server_config(&names, &[b"h2", b"http/1.1"]),
        backend_stop.clone(),
    )
    .await;
    let tcp_echo = start_tcp_echo(backend_stop.clone()).await?;
    let dir = tempfile::tempdir()?;
    let trust = ca.write(dir.path());
    let config = dir.path().join("soak.yaml");
    std::fs::write(&config, yaml(dir.path(), &trust, backend))?;
    let mut proxy = start_proxy(&args.bin, &config, &args.out.join("proxy.log"))?;
    let pid = proxy.pid;
    let ca_pem = std::fs::read_to_string(dir.path().join("ca/wxsandbox-ca.pem"))?;
    eprintln!(
        "soak: proxy pid {pid} on {} (control {}), backend {backend}, tcp echo {tcp_echo}; \
         load {:.1} min after the prefill, warm-up {} s",
        proxy.proxy,
        proxy.control,
        args.minutes,
        warmup.as_secs()
    );

    let t0 = Instant::now();
    let ctx = Arc::new(Ctx {
        proxy: proxy.proxy,
        control: format!("http://{}", proxy.control),
        ca_pem,
        tcp_echo,
        stats: Arc::new(Stats::default()),
        end: t0 + Duration::from_secs(24 * 3600),
        stop: CancellationToken::new(),
        ctl: reqwest::Client::builder()
            .no_proxy()
            .timeout(CALL_TIMEOUT)
            .build()?,
    });
    let mut samples = Vec::new();
    let start = sample(&ctx, pid, t0, "start").await;
    eprintln!("soak: before the load: {start:?}");
    samples.push(start.clone());

    // Prefill: mint names and the call log's ring, so a full ring isn't counted as a leak.
    let clients = Arc::new(Clients {
        unknown: ctx.client(APP_UNKNOWN, true, true),
        h1: ctx.client(APP_A, true, true),
        h2: ctx.client(APP_A, false, true),
        mint: ctx.client(APP_A, false, false),
    });
    prefill(ctx.clone(), clients.clone()).await;
    let s = sample(&ctx, pid, t0, "prefill").await;
    eprintln!(
        "soak: prefill done in {:.1} s: {} calls, rss {} KiB, fds {}",
        s.t, s.calls, s.rss_kib, s.fds
    );
    samples.push(s);

    // The load.
    let load_start = Instant::now();
    let load_t = t0.elapsed().as_secs_f64();
    let ctx = Arc::new(Ctx {
        proxy: ctx.proxy,
        control: ctx.control.clone(),
        ca_pem: ctx.ca_pem.clone(),
        tcp_echo,
        stats: ctx.stats.clone(),
        end: load_start + load,
        stop: CancellationToken::new(),
        ctl: reqwest::Client::builder()
            .no_proxy()
            .timeout(CALL_TIMEOUT)
            .build()?,
    });
    let events_stop = CancellationToken::new();
    let events = tokio::spawn(events_reader(ctx.clone(), events_stop.clone()));
    let mut workers = Vec::new();
    let mint_seq = Arc::new(AtomicU64::new(0));
    for w in 0..4 {
        workers.push(tokio::spawn(allowed_worker(
            ctx.clone(),
            w,
            clients.clone(),
            mint_seq.clone(),
        )));
    }
    workers.push(tokio::spawn(refusal_worker(ctx.clone(), clients.clone())));
    workers.push(tokio::spawn(concurrency_worker(ctx.clone())));
    workers.push(tokio::spawn(phase_worker(ctx.clone())));
    workers.push(tokio::spawn(ws_worker(ctx.clone())));
    workers.push(tokio::spawn(tcp_worker(ctx.clone())));
    workers.push(tokio::spawn(har_worker(ctx.clone())));

    let load_from = samples.len();
    let prefill_calls = ctx.stats.total.load(Ordering::Relaxed);
    let mut next = load_start;
    let mut baseline: Option<Sample> = None;
    let max_samples = load.as_secs() / SAMPLE_EVERY.as_secs() + 2;
    for _ in 0..max_samples {
        next += SAMPLE_EVERY;
        if next > ctx.end + Duration::from_millis(500) {
            break;
        }
        tokio::time::sleep_until(next).await;
        let mut s = sample(&ctx, pid, t0, "load").await;
        let since = load_start.elapsed();
        // The warm-up also waits until the load's own records have replaced the prefill's in
        // the call log's ring (10,000 records, ~2.5 min at this rate): until then the ring's
        // memory grows by design. A shorter run falls back to 30 s before its end.
        let in_load = s.calls.saturating_sub(prefill_calls);
        let turned_over = in_load >= RING_TURNOVER || since + Duration::from_secs(30) >= load;
        if baseline.is_none() && since + Duration::from_millis(500) >= warmup && turned_over {
            s.phase = "baseline";
            baseline = Some(s.clone());
        }
        eprintln!(
            "soak: {:>5.0} s  rss {:>7} KiB  fds {:>4}  in flight {:>2} queued {:>2} sockets {:>2}  calls {:>6}  wrong {}  p50 {} p99 {} ms",
            since.as_secs_f64(),
            s.rss_kib,
            s.fds,
            s.in_flight,
            s.queued,
            s.sockets,
            s.calls,
            s.wrong,
            s.p50_ms.map_or("-".into(), |v| format!("{v:.2}")),
            s.p99_ms.map_or("-".into(), |v| format!("{v:.2}")),
        );
        samples.push(s);
    }
    let end_sample = samples.last().cloned().unwrap_or_default();
    let mut lost_workers = 0;
    for w in workers {
        if tokio::time::timeout(Duration::from_secs(90), w)
            .await
            .is_err()
        {
            lost_workers += 1;
        }
    }
    // The load has stopped: close what this side holds, and the backends (the proxy's idle
    // upstream pool would otherwise keep its connections for 60 s).
    tokio::time::sleep(Duration::from_secs(3)).await;
    let after_load = sample(&ctx, pid, t0, "after-load").await;
    samples.push(after_load.clone());
    events_stop.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(10), events).await;
    drop(clients);
    backend_stop.cancel();
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut last = sample(&ctx, pid, t0, "final").await;
    while Instant::now() < deadline
        && (last.fds > start.fds + FD_SLACK
            || last.in_flight + last.queued + last.sockets
                > start.in_flight + start.queued + start.sockets)
    {
        tokio::time::sleep(Duration::from_millis(500)).await;
        let _ = std::mem::take(&mut *ctx.stats.lat.lock().unwrap());
        last = sample(&ctx, pid, t0, "final").await;
    }
    samples.push(last.clone());
    let exit = proxy.terminate();

    std::fs::write(args.out.join("soak.csv"), csv(&samples))?;
    std::fs::write(
        args.out.join("soak.gp"),
        gnuplot_script(&args.out, args.minutes),
    )?;

    // The verdict.
    let stats = &ctx.stats;
    let wrong = stats.wrong.load(Ordering::Relaxed);
    // RSS moves by a MiB or so sample to sample (allocator): the baseline is the median of the
    // warm-up sample and the two after it, the end the median of the last three under load.
    let under_load: Vec<&Sample> = samples[load_from..]
        .iter()
        .filter(|s| s.phase == "load" || s.phase == "baseline")
        .collect();
    let at = under_load
        .iter()
        .position(|s| s.phase == "baseline")
        .unwrap_or(0);
    let median = |window: &[&Sample]| -> u64 {
        let mut v: Vec<u64> = window.iter().map(|s| s.rss_kib).collect();
        v.sort_unstable();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    let base_rss = median(&under_load[at..(at + 3).min(under_load.len())]);
    let end_rss = median(&under_load[under_load.len().saturating_sub(3)..]);
    let baseline = baseline.unwrap_or_else(|| end_sample.clone());
    let first_p99 = samples
        .iter()
        .find(|s| s.phase != "start" && s.phase != "prefill" && s.p99_ms.is_some());
    let last_p99 = samples
        .iter()
        .rev()
        .find(|s| s.p99_ms.is_some() && s.phase != "final");
    let windows = p99_windows(&under_load);
    let mut failures = Vec::new();
    if let Some((first, last)) = windows {
        // Growth is what a leak or a slowing ring would show: the last window may not be more
        // than 20% slower than the first.
        if last > first * 1.2 {
            failures.push(format!(
                "p99 of 1 KiB GETs in the last {WINDOW_S:.0} s {last:.2} ms vs {first:.2} ms in the first {WINDOW_S:.0} s: more than 20% slower"
            ));
        }
    }
    if wrong > 0 {
        failures.push(format!("{wrong} wrong verdict(s)"));
    }
    if end_rss > base_rss + base_rss / 10 {
        failures.push(format!(
            "RSS grew from {base_rss} KiB (median from t={:.0} s) to {end_rss} KiB (median of the last 3 samples under load): more than 10%",
            baseline.t
        ));
    }
    if last.fds > start.fds + FD_SLACK {
        failures.push(format!(
            "open fds {} after the load, {} before it (slack {FD_SLACK})",
            last.fds, start.fds
        ));
    }
    if (last.in_flight, last.queued, last.sockets) != (start.in_flight, start.queued, start.sockets)
    {
        failures.push(format!(
            "slots after the load: in flight {} queued {} sockets {} (before: {} {} {})",
            last.in_flight, last.queued, last.sockets, start.in_flight, start.queued, start.sockets
        ));
    }
    if lost_workers > 0 {
        failures.push(format!("{lost_workers} worker(s) did not stop within 90 s"));
    }
    if !exit.contains("exit status: 0") {
        failures.push(format!("the proxy's exit on SIGTERM: {exit}"));
    }

    println!(
        "\n== wxsandbox soak: {:.1} min of load (plus prefill and drain) ==",
        args.minutes
    );
    println!("calls by kind:");
    let calls = stats.calls.lock().unwrap();
    for (kind, n) in calls.iter() {
        println!("  {kind:<28} {n:>7}");
    }
    let total: u64 = calls.values().sum();
    let in_load = total - calls.get("prefill").copied().unwrap_or(0);
    println!(
        "  {:<28} {total:>7}  ({in_load} during the load: {:.1}/s)",
        "total",
        in_load as f64 / load.as_secs_f64()
    );
    // Kinds that are not a call through the proxy (or not a new one): every other verdict is
    // one call, and each call should be one record on /api/events.
    let not_calls = [
        "prefill",
        "control-background",
        "control-foreground",
        "control-har",
        "events-stream",
        "concurrency-held",
        "phase-held",
        "ws-cut-by-background",
    ];
    let proxied: u64 = calls
        .iter()
        .filter(|(k, _)| !not_calls.contains(k))
        .map(|(_, n)| n)
        .sum();
    println!(
        "events read from /api/events during the load: {} for {proxied} calls through the proxy",
        stats.sse_events.load(Ordering::Relaxed)
    );
    println!("wrong verdicts: {wrong}");
    for (kind, n) in stats.wrong_by_kind.lock().unwrap().iter() {
        println!("  {kind:<28} {n:>7} wrong");
    }
    if wrong > 0 {
        println!("the first {}:", wrong.min(20));
    }
    for line in stats.wrong_list.lock().unwrap().iter() {
        println!("  {line}");
    }
    println!(
        "RSS KiB: start {} / after prefill {} / baseline {base_rss} (median from t={:.0} s; load from t={:.0} s) / end of load {end_rss} (median of the last 3; {:+.1}%) / max under load {} / after load {} / final {}",
        start.rss_kib,
        samples.get(1).map_or(0, |s| s.rss_kib),
        baseline.t,
        load_t,
        (end_rss as f64 / base_rss.max(1) as f64 - 1.0) * 100.0,
        under_load.iter().map(|s| s.rss_kib).max().unwrap_or(0),
        after_load.rss_kib,
        last.rss_kib
    );
    println!(
        "fds: start {} / end of load {} / after load (pools warm) {} / final (backends closed) {}",
        start.fds, end_sample.fds, after_load.fds, last.fds
    );
    println!(
        "slots (in flight, queued, sockets): start ({}, {}, {}) / final ({}, {}, {}); instances {}",
        start.in_flight,
        start.queued,
        start.sockets,
        last.in_flight,
        last.queued,
        last.sockets,
        last.instances
    );
    let ms = |s: Option<&Sample>| {
        s.map_or("-".to_owned(), |s| {
            format!(
                "p50 {:.2} / p99 {:.2} ms (at {:.0} s)",
                s.p50_ms.unwrap_or(f64::NAN),
                s.p99_ms.unwrap_or(f64::NAN),
                s.t
            )
        })
    };
    println!(
        "1 KiB GET latency: first interval {}; last interval {}",
        ms(first_p99),
        ms(last_p99)
    );
    match windows {
        Some((first, last)) => println!(
            "1 KiB GET p99 over {WINDOW_S:.0} s windows: first {first:.2} ms, last {last:.2} ms ({:+.1}%)",
            (last / first - 1.0) * 100.0
        ),
        None => println!(
            "1 KiB GET p99 over {WINDOW_S:.0} s windows: the load is shorter than two windows (not checked)"
        ),
    }
    println!("proxy exit on SIGTERM: {exit}");
    println!("samples: {}", args.out.join("soak.csv").display());
    if failures.is_empty() {
        println!("SOAK PASSED");
        Ok(true)
    } else {
        println!("SOAK FAILED:");
        for f in &failures {
            println!("  - {f}");
        }
        Ok(false)
    }
}
