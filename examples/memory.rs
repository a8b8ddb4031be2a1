//! Memory of the proxy (issue #11): the real release binary as a child process, on 127.0.0.1
//! only, its RSS read from `/proc/PID/status` at four points. Run by `scripts/memory.sh`; by hand:
//!
//! ```sh
//! cargo build --release --locked --bin wxsandbox
//! cargo build --release --locked --example memory
//! target/release/examples/memory --bin target/release/wxsandbox
//! ```
//!
//! (a) the baseline after start-up and a few warm-up calls; (b) the call log's ring filled:
//! 12,000 HTTPS GETs of 1 KiB, each with ~1 KiB of request headers, over 16 keep-alive HTTP/1.1
//! tunnels; (c) one `GET /api/har` of that log read to its end (bytes counted, not kept) while
//! the RSS is sampled every 5 ms; (d) 1,000 idle keep-alive tunnels, each after a handshake and one
//! GET. Each figure is printed with its target. Exit 0 whatever the figures (a measurement), 2 when
//! the measurement itself failed (a call failed, the proxy did not start...).

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../tests/common/mod.rs"]
mod common;
#[path = "support/load.rs"]
mod load;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
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

use common::{proxy_auth_header, read_head, tls_client, TestCa};
use load::{
    header, phone_headers, start_backend, Sender, BODY_BYTES, CALL_TIMEOUT, HEADER_LINE, HOST,
};

const APPID: &str = "wx0123456789abcdef";
/// The HAR read, start to end.
const HAR_TIMEOUT: Duration = Duration::from_secs(120);
const WARMUP_CALLS: u64 = 50;
/// More than the ring's 10,000 records: it is full, and the oldest were dropped.
const RING_CALLS: u64 = 12_000;
const RING_CONNECTIONS: u64 = 16;
const IDLE_TUNNELS: usize = 1_000;
/// Tunnels being opened at once in (d).
const OPEN_AT_ONCE: usize = 50;
const SAMPLE_EVERY: Duration = Duration::from_millis(5);

const TARGET_RING_MIB: f64 = 48.0;
const TARGET_HAR_MIB: f64 = 96.0;
const TARGET_IDLE_MIB: f64 = 40.0;

fn request(i: u64, headers: &[(HeaderName, HeaderValue)]) -> Request<Empty<Bytes>> {
    let mut b = Request::get(format!("/bytes/{BODY_BYTES}")).header("host", HOST);
    for (name, value) in headers {
        b = b.header(name, value);
    }
    let (name, value) = header("x-request-id", &format!("req-{i:020}-"));
    b.header(name, value).body(Empty::new()).unwrap()
}

/// CONNECT `HOST:443` through the proxy, TLS, an HTTP/1.1 connection (driven by a task).
async fn open_tunnel(
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
        let tls = tls.connect(HOST.try_into()?, tcp).await?;
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tls)).await?;
        let task = tokio::spawn(async move {
            let _ = conn.await;
        });
        anyhow::Ok((sender, task))
    };
    tokio::time::timeout(CALL_TIMEOUT, open)
        .await
        .context("opening a tunnel timed out")?
}

/// One GET of 1 KiB: 200 and the whole body, or an error.
async fn get(
    sender: &mut Sender,
    i: u64,
    headers: &[(HeaderName, HeaderValue)],
) -> anyhow::Result<()> {
    let call = async {
        sender.ready().await?;
        let resp = sender.send_request(request(i, headers)).await?;
        let status = resp.status();
        let rule = resp
            .headers()
            .get("x-wxsandbox-rule")
            .map(|v| v.to_str().unwrap_or("?").to_owned());
        let body = resp.into_body().collect().await?.to_bytes();
        if status != 200 || body.len() != BODY_BYTES {
            bail!(
                "call {i}: {status} (rule {rule:?}) with {} bytes, expected 200 with {BODY_BYTES}",
                body.len()
            );
        }
        anyhow::Ok(())
    };
    tokio::time::timeout(CALL_TIMEOUT, call)
        .await
        .with_context(|| format!("call {i} timed out"))?
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

/// The app lists the host and may have 200 calls in flight (the 10-call queue of one phone is
/// not what is measured); connections stay open 10 minutes when idle.
fn yaml(dir: &Path, trust: &Path, backend: SocketAddr) -> String {
    format!(
        "proxy: {{listen: 127.0.0.1:0, clients: [127.0.0.0/8], max_connections: {max}, idle_timeout_ms: 600000}}
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
        max = 2 * IDLE_TUNNELS + 500,
        ca = dir.join("ca").display(),
        trust = trust.display(),
        port = backend.port(),
    )
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
// /proc.

fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS:")
}

fn fd_count(pid: u32) -> i64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(-1, |d| d.count() as i64)
}

/// The RSS once the proxy is quiet: after 1 s, the median of 5 samples 100 ms apart.
async fn settled_rss(pid: u32) -> u64 {
    tokio::time::sleep(Duration::from_secs(1)).await;
    let mut v = Vec::new();
    for _ in 0..5 {
        v.push(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    v.sort_unstable();
    v[v.len() / 2]
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

// ---------------------------------------------------------------------------------------------
// The phases.

/// `calls` GETs over `connections` tunnels at once, each tunnel sequential (keep-alive).
async fn calls_over(
    proxy: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    connections: u64,
    calls: u64,
    first_id: u64,
) -> anyhow::Result<()> {
    let headers = Arc::new(phone_headers());
    let mut tasks = Vec::new();
    for c in 0..connections {
        let (tls, headers) = (tls.clone(), headers.clone());
        tasks.push(tokio::spawn(async move {
            let (mut sender, conn) = open_tunnel(proxy, &tls).await?;
            for i in (c..calls).step_by(connections as usize) {
                get(&mut sender, first_id + i, &headers).await?;
            }
            drop(sender);
            let _ = tokio::time::timeout(CALL_TIMEOUT, conn).await;
            anyhow::Ok(())
        }));
    }
    for t in tasks {
        t.await??;
    }
    Ok(())
}

struct Har {
    bytes: u64,
    entries: u64,
    status: u16,
    secs: f64,
    samples: u64,
    peak_kib: u64,
    /// VmHWM after it was reset just before the call (`None` when it could not be reset).
    hwm_kib: Option<u64>,
}

/// `GET /api/har` read to the end (bytes and entries counted, nothing kept), the proxy's RSS
/// sampled every 5 ms meanwhile.
async fn har(pid: u32, control: SocketAddr) -> anyhow::Result<Har> {
    let hwm_reset = std::fs::write(format!("/proc/{pid}/clear_refs"), "5").is_ok();
    let stop = Arc::new(AtomicBool::new(false));
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let (mut peak, mut n) = (rss_kib(pid), 1u64);
            let max_samples = HAR_TIMEOUT.as_millis() / SAMPLE_EVERY.as_millis() + 200;
            while !stop.load(Ordering::Relaxed) && u128::from(n) < max_samples {
                std::thread::sleep(SAMPLE_EVERY);
                peak = peak.max(rss_kib(pid));
                n += 1;
            }
            (peak, n)
        })
    };
    // Let the sampler take its first samples before the call.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let start = Instant::now();
    let read = async {
        let client = reqwest::Client::builder()
            .no_proxy()
            .connect_timeout(CALL_TIMEOUT)
            .read_timeout(CALL_TIMEOUT)
            .build()?;
        let mut r = client
            .get(format!("http://{control}/api/har"))
            .send()
            .await?;
        let status = r.status().as_u16();
        let marker: &[u8] = b"\"startedDateTime\"";
        let count = |hay: &[u8]| hay.windows(marker.len()).filter(|w| *w == marker).count() as u64;
        let (mut bytes, mut entries) = (0u64, 0u64);
        // The last `marker.len() - 1` bytes read: a marker across two chunks is counted in
        // `edge` (the tail and the next chunk's head, too short to hold one on either side).
        let mut tail: Vec<u8> = Vec::new();
        while let Some(chunk) = r.chunk().await? {
            bytes += chunk.len() as u64;
            let keep = marker.len() - 1;
            let mut edge = std::mem::take(&mut tail);
            edge.extend_from_slice(&chunk[..chunk.len().min(keep)]);
            entries += count(&edge) + count(&chunk);
            tail = if chunk.len() >= keep {
                chunk[chunk.len() - keep..].to_vec()
            } else {
                edge[edge.len().saturating_sub(keep)..].to_vec()
            };
        }
        anyhow::Ok((status, bytes, entries))
    };
    let got = tokio::time::timeout(HAR_TIMEOUT, read).await;
    let secs = start.elapsed().as_secs_f64();
    tokio::time::sleep(Duration::from_millis(50)).await;
    stop.store(true, Ordering::Relaxed);
    let (peak_kib, samples) = sampler.join().expect("the sampler thread panicked");
    let hwm_kib = hwm_reset.then(|| status_kib(pid, "VmHWM:"));
    let (status, bytes, entries) = got.context("GET /api/har timed out")??;
    if status != 200 {
        bail!("GET /api/har answered {status}");
    }
    Ok(Har {
        bytes,
        entries,
        status,
        secs,
        samples,
        peak_kib,
        hwm_kib,
    })
}

/// `n` tunnels, each after CONNECT, TLS and one GET, kept open and idle.
async fn idle_tunnels(
    proxy: SocketAddr,
    tls: &tokio_rustls::TlsConnector,
    n: usize,
    first_id: u64,
) -> anyhow::Result<Vec<(Sender, JoinHandle<()>)>> {
    let headers = Arc::new(phone_headers());
    let gate = Arc::new(tokio::sync::Semaphore::new(OPEN_AT_ONCE));
    let mut tasks = Vec::with_capacity(n);
    for k in 0..n {
        let (tls, headers, gate) = (tls.clone(), headers.clone(), gate.clone());
        tasks.push(tokio::spawn(async move {
            let _permit = gate.acquire_owned().await?;
            let (mut sender, conn) = open_tunnel(proxy, &tls).await?;
            get(&mut sender, first_id + k as u64, &headers).await?;
            anyhow::Ok((sender, conn))
        }));
    }
    let mut open = Vec::with_capacity(n);
    for t in tasks {
        open.push(t.await??);
    }
    Ok(open)
}

// ---------------------------------------------------------------------------------------------

fn args() -> anyhow::Result<PathBuf> {
    let mut bin = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/release/wxsandbox");
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        match arg.as_str() {
            "--bin" => bin = it.next().context("--bin needs a path")?.into(),
            other => bail!("unknown argument {other} (--bin PATH)"),
        }
    }
    Ok(bin)
}

fn main() -> std::process::ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    match rt.block_on(run()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("memory: FAILED to measure: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

fn verdict(added_mib: f64, target: f64) -> &'static str {
    if added_mib <= target {
        "PASS"
    } else {
        "over"
    }
}

#[allow(clippy::too_many_lines)]
async fn run() -> anyhow::Result<()> {
    let bin = args()?;
    // The tunnels of (d) and the backend's side of the proxy's upstream connections.
    let nofile = rlimit::increase_nofile_limit(u64::MAX).unwrap_or(0);
    if nofile < 3 * IDLE_TUNNELS as u64 + 200 {
        bail!(
            "the open-files limit is {nofile}: (d) needs about {}",
            3 * IDLE_TUNNELS + 200
        );
    }

    let stop = CancellationToken::new();
    let ca = TestCa::new("wxsandbox memory upstream CA");
    let backend = start_backend(
        ca.server_config(&[HOST], &[b"h2", b"http/1.1"]),
        stop.clone(),
    )
    .await;
    let dir = tempfile::tempdir()?;
    let trust = ca.write(dir.path());
    let config = dir.path().join("memory.yaml");
    std::fs::write(&config, yaml(dir.path(), &trust, backend))?;
    let mut proxy = start_proxy(&bin, &config, &dir.path().join("proxy.log"))?;
    let pid = proxy.pid;
    let ca_pem = std::fs::read_to_string(dir.path().join("ca/wxsandbox-ca.pem"))?;
    let tls = tokio_rustls::TlsConnector::from(tls_client(&ca_pem, &[b"http/1.1"]));
    eprintln!(
        "memory: proxy {} (pid {pid}) on {}, control {}, backend {backend}",
        bin.display(),
        proxy.proxy,
        proxy.control
    );
    let started_kib = settled_rss(pid).await;

    // (a) Baseline.
    calls_over(proxy.proxy, &tls, 2, WARMUP_CALLS, 0)
        .await
        .context("warm-up")?;
    let base = settled_rss(pid).await;
    let fds_base = fd_count(pid);
    eprintln!("memory: (a) baseline {:.1} MiB", mib(base));

    // (b) The call ring.
    let t = Instant::now();
    calls_over(proxy.proxy, &tls, RING_CONNECTIONS, RING_CALLS, 1_000_000)
        .await
        .context("the call ring")?;
    let ring_secs = t.elapsed().as_secs_f64();
    let ring_peak = status_kib(pid, "VmHWM:");
    let after_ring = settled_rss(pid).await;
    eprintln!(
        "memory: (b) {RING_CALLS} calls in {ring_secs:.1} s; RSS {:.1} MiB",
        mib(after_ring)
    );

    // (c) The HAR of the full ring.
    let h = har(pid, proxy.control).await.context("GET /api/har")?;
    let after_har = settled_rss(pid).await;
    eprintln!(
        "memory: (c) HAR {} bytes, {} entries in {:.2} s; peak {:.1} MiB",
        h.bytes,
        h.entries,
        h.secs,
        mib(h.peak_kib)
    );

    // (d) Idle keep-alive tunnels.
    let before_idle = after_har;
    let fds_before_idle = fd_count(pid);
    let t = Instant::now();
    let tunnels = idle_tunnels(proxy.proxy, &tls, IDLE_TUNNELS, 2_000_000)
        .await
        .context("opening the idle tunnels")?;
    let open_secs = t.elapsed().as_secs_f64();
    let with_idle = settled_rss(pid).await;
    let fds_idle = fd_count(pid);
    let still_open = tunnels.iter().filter(|(s, _)| !s.is_closed()).count();
    drop(tunnels);
    eprintln!(
        "memory: (d) {IDLE_TUNNELS} tunnels opened in {open_secs:.1} s; RSS {:.1} MiB",
        mib(with_idle)
    );

    let exit = proxy.terminate();
    stop.cancel();

    let ring_added = mib(after_ring) - mib(base);
    let har_added = mib(h.peak_kib) - mib(base);
    let idle_added = mib(with_idle) - mib(before_idle);
    println!(
        "\n== wxsandbox memory: {} (pid {pid}), 127.0.0.1 only ==",
        bin.display()
    );
    println!(
        "{:<52} {:>10} {:>10} {:>10} {:>9}  verdict",
        "figure", "RSS before", "RSS after", "added", "target"
    );
    println!(
        "{:<52} {:>10} {:>10.1} {:>10} {:>9}",
        format!("(a) baseline: start-up + {WARMUP_CALLS} calls"),
        "-",
        mib(base),
        "-",
        "-"
    );
    println!(
        "{:<52} {:>10.1} {:>10.1} {:>+10.1} {:>9}  {}",
        format!("(b) call ring: {RING_CALLS} GETs over {RING_CONNECTIONS} tunnels"),
        mib(base),
        mib(after_ring),
        ring_added,
        format!("<= {TARGET_RING_MIB:.0}"),
        verdict(ring_added, TARGET_RING_MIB)
    );
    println!(
        "{:<52} {:>10.1} {:>10.1} {:>+10.1} {:>9}  {}",
        "(c) GET /api/har: peak (before = baseline)",
        mib(base),
        mib(h.peak_kib),
        har_added,
        format!("<= {TARGET_HAR_MIB:.0}"),
        verdict(har_added, TARGET_HAR_MIB)
    );
    println!(
        "{:<52} {:>10.1} {:>10.1} {:>+10.1}",
        "    RSS after the HAR",
        mib(after_ring),
        mib(after_har),
        mib(after_har) - mib(after_ring)
    );
    println!(
        "{:<52} {:>10.1} {:>10.1} {:>+10.1} {:>9}  {}",
        format!("(d) {IDLE_TUNNELS} idle keep-alive tunnels"),
        mib(before_idle),
        mib(with_idle),
        idle_added,
        format!("<= {TARGET_IDLE_MIB:.0}"),
        verdict(idle_added, TARGET_IDLE_MIB)
    );
    println!("(MiB; RSS medians of 5 samples after 1 s of quiet; added = after - before)");
    println!(
        "start-up alone: {:.1} MiB; VmHWM during the ring {:.1} MiB; ring {RING_CALLS} calls in {ring_secs:.1} s ({:.0}/s), each ~{} B of request headers, {BODY_BYTES} B of body back",
        mib(started_kib),
        mib(ring_peak),
        RING_CALLS as f64 / ring_secs,
        10 * (HEADER_LINE + 2),
    );
    println!(
        "HAR: {} {} bytes, {} entries in {:.2} s; {} RSS samples (every 5 ms); VmHWM since reset {}",
        h.status,
        h.bytes,
        h.entries,
        h.secs,
        h.samples,
        h.hwm_kib
            .map_or("not available".to_owned(), |k| format!("{:.1} MiB", mib(k)))
    );
    println!(
        "tunnels: {still_open} of {IDLE_TUNNELS} still open when measured (opened in {open_secs:.1} s); proxy fds: baseline {fds_base}, before {fds_before_idle}, with the tunnels {fds_idle} ({:.1} KiB of RSS per tunnel)",
        idle_added * 1024.0 / IDLE_TUNNELS as f64
    );
    println!("proxy exit on SIGTERM: {exit}");
    if still_open < IDLE_TUNNELS {
        bail!(
            "{} idle tunnels were closed before the measurement",
            IDLE_TUNNELS - still_open
        );
    }
    Ok(())
}
