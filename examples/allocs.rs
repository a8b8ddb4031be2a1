//! Heap allocations per call (issue #11): the proxy in this process (the library, started as
//! the tests start it), an HTTPS backend and a client, all on 127.0.0.1. N sequential 1 KiB GETs
//! over one keep-alive HTTP/1.1 connection through the proxy (CONNECT, TLS to the proxy's leaf),
//! then the same N directly client → backend (same client code, same TLS); the difference is the
//! proxy's share. Two request shapes: ten 100-byte headers (a phone's user-agent, cookie, ...)
//! and a bare GET.
//!
//! Counting: the crate forbids `unsafe_code` (Cargo.toml `[lints.rust]`, which binds examples
//! too), so this example can't hold a `#[global_allocator]` (an `unsafe impl GlobalAlloc`).
//! The counting is one level down instead: `scripts/allocs.sh` builds a small `LD_PRELOAD`
//! library that counts every malloc, calloc, realloc and memalign (each `GlobalAlloc` call of
//! `std::alloc::System` is exactly one of them) and the bytes asked, in a file it maps shared
//! (`ALLOCS_COUNTERS`); this example reads that file before and after each run. Run it by
//! `scripts/allocs.sh [N]`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{bail, Context as _};
use bytes::Bytes;
use http::header::{HeaderName, HeaderValue};
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use common::{proxy_auth_header, read_head, tls_client, TestCa, APPID};
use load::{header, phone_headers, start_backend, Sender, BODY_BYTES, CALL_TIMEOUT, HOST};

const WARMUP_CALLS: u64 = 200;
const DEFAULT_CALLS: u64 = 2_000;
const MAX_CALLS: u64 = 1_000_000;

// ---------------------------------------------------------------------------------------------
// The counters of the LD_PRELOAD library: allocations, bytes asked, frees (u64, native order).

#[derive(Debug, Clone, Copy)]
struct Counts {
    allocs: u64,
    bytes: u64,
}

struct Counter {
    path: PathBuf,
}

impl Counter {
    fn from_env() -> anyhow::Result<Counter> {
        let path: PathBuf = std::env::var_os("ALLOCS_COUNTERS")
            .context("ALLOCS_COUNTERS is not set: run this example by scripts/allocs.sh (it preloads the counting library)")?
            .into();
        let c = Counter { path };
        let before = c.read()?;
        let v = std::hint::black_box(vec![7u8; 1000]);
        drop(v);
        let after = c.read()?;
        if after.allocs <= before.allocs || after.bytes < before.bytes + 1000 {
            bail!(
                "{} does not count this process's allocations: is the library preloaded (LD_PRELOAD)?",
                c.path.display()
            );
        }
        Ok(c)
    }

    fn read(&self) -> anyhow::Result<Counts> {
        let b = std::fs::read(&self.path)
            .with_context(|| format!("can't read {}", self.path.display()))?;
        if b.len() < 16 {
            bail!(
                "{} holds {} bytes, not the counters",
                self.path.display(),
                b.len()
            );
        }
        let word = |i: usize| u64::from_ne_bytes(b[8 * i..8 * i + 8].try_into().unwrap());
        Ok(Counts {
            allocs: word(0),
            bytes: word(1),
        })
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Shape {
    /// Ten 100-byte headers besides Host.
    Phone,
    /// Host only.
    Bare,
}

fn request(i: u64, shape: Shape, headers: &[(HeaderName, HeaderValue)]) -> Request<Empty<Bytes>> {
    let mut b = Request::get(format!("/bytes/{BODY_BYTES}")).header("host", HOST);
    if shape == Shape::Phone {
        for (name, value) in headers {
            b = b.header(name, value);
        }
        let (name, value) = header("x-request-id", &format!("req-{i:020}-"));
        b = b.header(name, value);
    }
    b.body(Empty::new()).unwrap()
}

/// TLS (SNI `HOST`) and an HTTP/1.1 connection over `tcp` (driven by a task).
async fn http1_over(
    tcp: TcpStream,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<(Sender, JoinHandle<()>)> {
    let tls = tls.connect(HOST.try_into()?, tcp).await?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok((sender, task))
}

/// Through the proxy: CONNECT `HOST:443`, then TLS to the proxy's leaf.
async fn via_proxy(
    proxy: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<(Sender, JoinHandle<()>)> {
    let open = async {
        let mut tcp = TcpStream::connect(proxy).await?;
        tcp.set_nodelay(true)?;
        let auth = proxy_auth_header(APPID);
        tcp.write_all(
            format!("CONNECT {HOST}:443 HTTP/1.1\r\nHost: {HOST}:443\r\n{auth}\r\n").as_bytes(),
        )
        .await?;
        let head = read_head(&mut tcp).await;
        if !head.starts_with("HTTP/1.1 200") {
            bail!("CONNECT answered {:?}", head.lines().next().unwrap_or(""));
        }
        http1_over(tcp, tls).await
    };
    tokio::time::timeout(CALL_TIMEOUT, open)
        .await
        .context("opening the tunnel timed out")?
}

/// Directly to the backend.
async fn direct(
    backend: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
) -> anyhow::Result<(Sender, JoinHandle<()>)> {
    let open = async {
        let tcp = TcpStream::connect(backend).await?;
        tcp.set_nodelay(true)?;
        http1_over(tcp, tls).await
    };
    tokio::time::timeout(CALL_TIMEOUT, open)
        .await
        .context("connecting to the backend timed out")?
}

/// One GET of 1 KiB: 200 and the whole body, or an error.
async fn get(
    sender: &mut Sender,
    i: u64,
    shape: Shape,
    headers: &[(HeaderName, HeaderValue)],
) -> anyhow::Result<()> {
    let call = async {
        sender.ready().await?;
        let resp = sender.send_request(request(i, shape, headers)).await?;
        let status = resp.status();
        let body = resp.into_body().collect().await?.to_bytes();
        if status != 200 || body.len() != BODY_BYTES {
            bail!(
                "call {i}: {status} with {} bytes, expected 200 with {BODY_BYTES}",
                body.len()
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .with_context(|| format!("call {i} timed out"))?
}

struct Measured {
    allocs_per_call: f64,
    bytes_per_call: f64,
    us_per_call: f64,
}

/// Warm-up calls, then `n` calls counted, on one connection.
async fn measure(
    counter: &Counter,
    mut sender: Sender,
    conn: JoinHandle<()>,
    shape: Shape,
    n: u64,
) -> anyhow::Result<Measured> {
    let headers = phone_headers();
    for i in 0..WARMUP_CALLS {
        get(&mut sender, i, shape, &headers).await?;
    }
    let before = counter.read()?;
    let t = Instant::now();
    for i in 0..n {
        get(&mut sender, WARMUP_CALLS + i, shape, &headers).await?;
    }
    let secs = t.elapsed().as_secs_f64();
    let after = counter.read()?;
    drop(sender);
    let _ = tokio::time::timeout(CALL_TIMEOUT, conn).await;
    Ok(Measured {
        allocs_per_call: (after.allocs - before.allocs) as f64 / n as f64,
        bytes_per_call: (after.bytes - before.bytes) as f64 / n as f64,
        us_per_call: secs * 1e6 / n as f64,
    })
}

// ---------------------------------------------------------------------------------------------

fn args() -> anyhow::Result<u64> {
    let mut n = DEFAULT_CALLS;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--calls" => n = it.next().context("--calls needs a number")?.parse()?,
            other => bail!("unknown argument {other} (--calls N)"),
        }
    }
    if !(1..=MAX_CALLS).contains(&n) {
        bail!("--calls must be in 1..={MAX_CALLS}");
    }
    Ok(n)
}

fn main() -> std::process::ExitCode {
    common::init_crypto();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("allocs: FAILED to measure: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<()> {
    let n = args()?;
    let counter = Counter::from_env()?;

    let stop = CancellationToken::new();
    let ca = TestCa::new("wxsandbox allocs upstream CA");
    let backend = start_backend(
        ca.server_config(&[HOST], &[b"h2", b"http/1.1"]),
        stop.clone(),
    )
    .await;
    let dir = tempfile::tempdir()?;
    let trust = ca.write(dir.path());
    let yaml = format!(
        "proxy: {{listen: 127.0.0.1:0, clients: [127.0.0.0/8]}}
control: {{listen: 127.0.0.1:0}}
ca: {{dir: {ca}}}
upstream:
  trust: [{trust}]
  map:
    {HOST}: 127.0.0.1:{port}
apps:
  - appid: {APPID}
    version: devtools
    domains:
      request: [https://{HOST}]
    limits: {{requests: 200}}
",
        ca = dir.path().join("ca").display(),
        trust = trust.display(),
        port = backend.port(),
    );
    let proxy = common::start_proxy_yaml(yaml, dir, &ca).await;
    let proxy_addr = proxy.running.proxy_addr;
    let to_proxy = tokio_rustls::TlsConnector::from(tls_client(&proxy.ca_pem, &[b"http/1.1"]));
    let to_backend = tokio_rustls::TlsConnector::from(tls_client(&ca.cert_pem, &[b"http/1.1"]));

    let mut rows = Vec::new();
    for (shape, label) in [
        (Shape::Phone, "10 headers x 100 B"),
        (Shape::Bare, "bare GET (Host only)"),
    ] {
        let (s, c) = via_proxy(proxy_addr, &to_proxy).await?;
        let proxied = measure(&counter, s, c, shape, n)
            .await
            .with_context(|| format!("{label} through the proxy"))?;
        let (s, c) = direct(backend, &to_backend).await?;
        let plain = measure(&counter, s, c, shape, n)
            .await
            .with_context(|| format!("{label} directly"))?;
        rows.push((label, proxied, plain));
    }
    let drained = proxy.running.shutdown(Duration::from_secs(5)).await;
    stop.cancel();

    println!(
        "\n== wxsandbox allocations per call: {n} sequential GETs of {BODY_BYTES} B on one keep-alive HTTP/1.1 connection, after {WARMUP_CALLS} warm-up calls =="
    );
    println!(
        "{:<22} {:<26} {:>12} {:>12} {:>10}",
        "request", "path", "allocs/call", "bytes/call", "us/call"
    );
    for (label, p, d) in &rows {
        println!(
            "{label:<22} {:<26} {:>12.1} {:>12.0} {:>10.1}",
            "client -> proxy -> backend", p.allocs_per_call, p.bytes_per_call, p.us_per_call
        );
        println!(
            "{:<22} {:<26} {:>12.1} {:>12.0} {:>10.1}",
            "", "client -> backend", d.allocs_per_call, d.bytes_per_call, d.us_per_call
        );
        println!(
            "{:<22} {:<26} {:>12.1} {:>12.0} {:>10.1}",
            "",
            "attributable to the proxy",
            p.allocs_per_call - d.allocs_per_call,
            p.bytes_per_call - d.bytes_per_call,
            p.us_per_call - d.us_per_call
        );
    }
    println!(
        "(one process: client, proxy (the library, no log subscriber) and backend; counted: malloc, calloc, realloc and memalign calls and the bytes asked, by the LD_PRELOAD counter)"
    );
    if !drained {
        println!("note: the in-process proxy did not drain within 5 s at shutdown");
    }
    Ok(())
}
