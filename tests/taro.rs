//! Issue "A refused call fails, as on the platform": a real client. Taro's H5 `request` (what
//! `wx.request` is in an H5 build of a mini program; npm `@tarojs/taro-h5`, bundled by esbuild)
//! runs in headless Chromium (Debian's, driven by playwright-core: tests/browser/taro.mjs) whose
//! proxy is wxsandbox with the refusal style left at its default, `auto`.
//!
//! A page call carries no `X-Wxsandbox-*` header, so a refusal fails at the transport and Taro
//! calls `fail`, as the platform does: a host not in the list (refused at the CONNECT), a listed
//! host whose certificate has expired, a call made in the background. Each refused call leaves
//! exactly one record (Chromium must not retry it on its own). A call that asks for an answer
//! (`X-Wxsandbox-Refusal: answer`), or any call once the style is switched to `answer` with
//! `PUT /api/refusal`, gets `success` with the refusal's status and JSON.
//!
//! `.ci/run` installs chromium, node and the npm packages; this test builds the bundle
//! (`npm run build` in tests/browser).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
use serde_json::{json, Value};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, Lines};
use tokio::net::TcpListener;
use tokio::process::{ChildStdin, ChildStdout, Command};
use tokio_util::sync::CancellationToken;

/// Listed, but its server's certificate expired yesterday.
const EXPIRED_HOST: &str = "expired.example.com";
/// In no list.
const UNLISTED_HOST: &str = "unlisted.example.com";

fn require(path: &Path, how: &str) {
    assert!(
        path.exists(),
        "{} is missing: {how} (bash .ci/run does it)",
        path.display()
    );
}

/// A server config for `name` whose certificate, signed by `ca`, expired a day ago.
fn expired_server_config(ca: &TestCa, name: &str) -> Arc<rustls::ServerConfig> {
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::days(30);
    p.not_after = now - time::Duration::days(1);
    let cert = p.signed_by(&key, &ca.issuer).unwrap();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into());
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(vec![cert.der().clone()], key)
    .unwrap();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Arc::new(config)
}

/// An HTTPS API server that answers CORS, as a server an H5 page calls must: a preflight gets
/// 204 allowing the asked method and headers (not cached: `Max-Age: 0`); anything else 200
/// `{"ok":true,"path":...}` with `Access-Control-Allow-Origin`. Records `METHOD /path` of each
/// request.
struct CorsBackend {
    addr: std::net::SocketAddr,
    seen: Arc<Mutex<Vec<String>>>,
    stop: CancellationToken,
}

impl Drop for CorsBackend {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

impl CorsBackend {
    fn saw(&self, path: &str) -> Vec<String> {
        let suffix = format!(" {path}");
        self.seen
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.ends_with(&suffix))
            .cloned()
            .collect()
    }
}

async fn start_cors_backend(tls: Arc<rustls::ServerConfig>) -> CorsBackend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let stop = CancellationToken::new();
    let (seen2, stop2) = (seen.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            let (stream, _) = tokio::select! {
                _ = stop2.cancelled() => break,
                r = listener.accept() => match r { Ok(a) => a, Err(_) => continue },
            };
            let (seen, tls, stop) = (seen2.clone(), tls.clone(), stop2.clone());
            tokio::spawn(async move {
                let Ok(tls) = tokio_rustls::TlsAcceptor::from(tls).accept(stream).await else {
                    return;
                };
                let svc = service_fn(move |req| cors_route(req, seen.clone()));
                let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                tokio::select! {
                    _ = builder.serve_connection(TokioIo::new(tls), svc) => {}
                    _ = stop.cancelled() => {}
                }
            });
        }
    });
    CorsBackend { addr, seen, stop }
}

async fn cors_route(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<String>>>,
) -> Result<Response<Full<Bytes>>, hyper::Error> {
    let path = req.uri().path().to_owned();
    seen.lock()
        .unwrap()
        .push(format!("{} {path}", req.method()));
    let h = req.headers();
    let origin = h
        .get("origin")
        .cloned()
        .unwrap_or_else(|| http::HeaderValue::from_static("*"));
    let mut r = if req.method() == http::Method::OPTIONS {
        let mut r = Response::new(Full::new(Bytes::new()));
        *r.status_mut() = StatusCode::NO_CONTENT;
        let rh = r.headers_mut();
        if let Some(m) = h.get("access-control-request-method") {
            rh.insert("access-control-allow-methods", m.clone());
        }
        if let Some(asked) = h.get("access-control-request-headers") {
            rh.insert("access-control-allow-headers", asked.clone());
        }
        rh.insert(
            "access-control-max-age",
            http::HeaderValue::from_static("0"),
        );
        r
    } else {
        let body = json!({"ok": true, "path": path}).to_string();
        let mut r = Response::new(Full::new(Bytes::from(body)));
        r.headers_mut().insert(
            "content-type",
            http::HeaderValue::from_static("application/json"),
        );
        r
    };
    r.headers_mut()
        .insert("access-control-allow-origin", origin);
    Ok(r)
}

/// The browser side: tests/browser/taro.mjs, one call a line.
struct Page {
    stdin: ChildStdin,
    stdout: Lines<BufReader<ChildStdout>>,
    _node: tokio::process::Child,
}

impl Page {
    async fn line(&mut self, what: &str) -> String {
        tokio::time::timeout(Duration::from_secs(40), self.stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser never answered {what}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the browser script ended before {what}"))
    }

    /// `window.call(url, headers)` in the page: Taro's callback and what Chromium showed.
    async fn call(&mut self, url: &str, headers: Value) -> Value {
        let line = json!({"id": url, "url": url, "headers": headers}).to_string() + "\n";
        self.stdin.write_all(line.as_bytes()).await.unwrap();
        let answer = self.line(url).await;
        println!("page: {answer}");
        let v: Value = serde_json::from_str(&answer)
            .unwrap_or_else(|e| panic!("not a JSON line from the page ({e}): {answer}"));
        assert_eq!(v["id"], url, "{answer}");
        v
    }
}

/// Records of `/api/log` whose URL contains `needle`, with their method.
async fn records(proxy: &TestProxy, needle: &str) -> Vec<Value> {
    let log: Value = reqwest::get(format!("{}/api/log?limit=10000", proxy.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    log.as_array()
        .unwrap()
        .iter()
        .filter(|r| r["url"].as_str().unwrap_or_default().contains(needle))
        .cloned()
        .collect()
}

/// The records of a refused page call, not counting its CORS preflight: waits (bounded) for
/// the first, then a little longer for a retry Chromium might make on its own.
async fn call_records(proxy: &TestProxy, needle: &str) -> Vec<Value> {
    let not_preflight = |rs: Vec<Value>| -> Vec<Value> {
        rs.into_iter()
            .filter(|r| r["method"] != "OPTIONS")
            .collect()
    };
    eventually(Duration::from_secs(5), || async {
        !not_preflight(records(proxy, needle).await).is_empty()
    })
    .await;
    // No settling time needed: the page has its callback, and the proxy records a refusal (or
    // a cut) before it answers or fails the transport, so a resend Chromium made before calling
    // back is already in the log.
    not_preflight(records(proxy, needle).await)
}

/// What the proxy did wrong in a scenario, kept until its end so every step still runs; the
/// test fails with all of them. (The proxy's code is not this test's to change: each message
/// says what Chromium did.)
#[derive(Default)]
struct Findings(Vec<String>);

impl Findings {
    fn check(&mut self, ok: bool, message: impl FnOnce() -> String) {
        if !ok {
            let m = message();
            println!("FINDING: {m}");
            self.0.push(m);
        }
    }
}

/// A refused call left exactly one record, with this errMsg. More than one means Chromium sent
/// the call again on its own after the refusal: a finding.
async fn one_record(
    proxy: &TestProxy,
    needle: &str,
    errmsg: &str,
    page: &Value,
    findings: &mut Findings,
) {
    let found = call_records(proxy, needle).await;
    assert!(
        !found.is_empty(),
        "no record for the refused call {needle}; the page saw {page}"
    );
    for r in &found {
        println!("record: {r}");
        assert_ne!(r["outcome"], "ok", "{r}");
        assert_eq!(r["errMsg"], errmsg, "{r}");
    }
    findings.check(found.len() == 1, || {
        format!(
            "a refused page call must leave exactly ONE record in /api/log, but {needle} left {} \
             (ids {:?}): Chromium sent the call again on its own after the refusal; the page \
             saw {} with net errors {}",
            found.len(),
            found.iter().map(|r| r["id"].clone()).collect::<Vec<_>>(),
            page["cb"],
            page["net"]
        )
    });
}

async fn put_refusal(proxy: &TestProxy, style: &str) {
    let r = reqwest::Client::new()
        .put(format!("{}/api/refusal", proxy.control_url()))
        .header("content-type", "application/json")
        .body(json!({ "style": style }).to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(state(proxy).await["refusal"], style);
}

fn assert_fail(v: &Value, why: &str) {
    assert_eq!(
        v["cb"], "fail",
        "{why}: Taro must call fail (the platform does), the page saw {v}"
    );
}

/// `success` with the refusal as the answer: its status, and its JSON as `data`.
fn assert_answered(v: &Value, status: u16, errmsg: &str, why: &str) {
    assert_eq!(v["cb"], "success", "{why}: the page saw {v}");
    assert_eq!(v["statusCode"], status, "{why}: the page saw {v}");
    assert_eq!(v["data"]["errMsg"], errmsg, "{why}: the page saw {v}");
}

/// The page's bundle, from taro/page.js (git-ignored; built once a run so it is never stale).
fn build_bundle(browser_dir: &Path) {
    static BUILT: OnceLock<bool> = OnceLock::new();
    let ok = *BUILT.get_or_init(|| {
        std::process::Command::new("npm")
            .args(["run", "--silent", "build"])
            .current_dir(browser_dir)
            .status()
            .expect("npm must be installed")
            .success()
    });
    assert!(ok, "npm run build in tests/browser failed");
}

#[tokio::test]
async fn taro_request_over_http2_fails_on_a_refusal_as_on_the_platform() {
    scenario(Inner::Http2).await;
}

#[tokio::test]
async fn taro_request_over_http1_fails_on_a_refusal_as_on_the_platform() {
    scenario(Inner::Http1).await;
}

/// What Chromium speaks inside the tunnel: the proxy offers h2 and http/1.1; `--disable-http2`
/// makes Chromium take http/1.1, where a refusal closes the connection.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Inner {
    Http2,
    Http1,
}

async fn scenario(inner: Inner) {
    let mut findings = Findings::default();
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let browser_dir = repo.join("tests/browser");
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    require(&chromium, "apt-get install -y chromium");
    require(
        &browser_dir.join("node_modules/@tarojs/taro-h5"),
        "cd tests/browser && npm ci",
    );
    build_bundle(&browser_dir);

    init_crypto();
    let ca = TestCa::new("wxsandbox test upstream CA");
    let api = start_cors_backend(ca.server_config(&[API_HOST], &[b"h2", b"http/1.1"])).await;
    let expired = start_backend(Some(expired_server_config(&ca, EXPIRED_HOST))).await;
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    // `sandbox:` given, so the tests' default style (`answer`) is not added: `auto`, the
    // product's default, as a developer runs it.
    let rest = format!(
        "sandbox: {{refusal: auto}}\napps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}, https://{EXPIRED_HOST}]}}\n    limits: {{background_grace_ms: 300}}\n"
    );
    let yaml = base_yaml(
        dir.path(),
        &trust,
        &[
            (API_HOST, format!("127.0.0.1:{}", api.addr.port())),
            (EXPIRED_HOST, format!("127.0.0.1:{}", expired.addr.port())),
        ],
        &rest,
    );
    let proxy = start_proxy_yaml(yaml, dir, &ca).await;
    assert_eq!(state(&proxy).await["refusal"], "auto");

    let mut command = Command::new("node");
    command
        .arg("taro.mjs")
        .arg(proxy.proxy_url())
        .arg(proxy.ca_dir().join("wxsandbox-ca.pem"));
    if inner == Inner::Http1 {
        command.arg("--disable-http2");
    }
    let mut node = command
        .env("CHROMIUM", &chromium)
        .current_dir(&browser_dir)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut page = Page {
        stdin: node.stdin.take().unwrap(),
        stdout: BufReader::new(node.stdout.take().unwrap()).lines(),
        _node: node,
    };
    let ready = page.line("ready").await;
    assert!(ready.starts_with("ready http://127.0.0.1:"), "{ready}");
    println!("{inner:?}: {ready}");

    // 1. An allowed call: success, 200, the server's JSON.
    let url = format!("https://{API_HOST}/allowed");
    let v = page.call(&url, json!({})).await;
    assert_eq!(v["cb"], "success", "{v}");
    assert_eq!(v["statusCode"], 200, "{v}");
    assert_eq!(v["data"], json!({"ok": true, "path": "/allowed"}), "{v}");
    assert_eq!(api.saw("/allowed"), ["GET /allowed"]);

    // 2. A host in no list: refused at the CONNECT (403 to the CONNECT), the call fails.
    let url = format!("https://{UNLISTED_HOST}/unlisted");
    let v = page.call(&url, json!({})).await;
    assert_fail(&v, "a host in no list");
    one_record(
        &proxy,
        UNLISTED_HOST,
        "request:fail url not in domain list",
        &v,
        &mut findings,
    )
    .await;

    // 3. A listed host whose certificate has expired: the call fails; the server sees nothing.
    let url = format!("https://{EXPIRED_HOST}/expired");
    let v = page.call(&url, json!({})).await;
    assert_fail(&v, "a listed host with an expired certificate");
    one_record(
        &proxy,
        "/expired",
        "request:fail -201:net::ERR_CERT_DATE_INVALID",
        &v,
        &mut findings,
    )
    .await;
    assert_eq!(expired.count(), 0, "{:?}", expired.seen());

    // 4. In the background: the call fails; the server sees nothing. It goes on the connection
    //    the allowed call opened (HTTP/1.1 keep-alive, or the HTTP/2 session).
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    let url = format!("https://{API_HOST}/background");
    let v = page.call(&url, json!({})).await;
    assert_fail(&v, "a call made in the background");
    one_record(
        &proxy,
        "/background",
        "request:fail interrupted",
        &v,
        &mut findings,
    )
    .await;
    assert!(
        api.saw("/background").is_empty(),
        "{:?}",
        api.saw("/background")
    );

    // 5. Per call: the same refused call with `X-Wxsandbox-Refusal: answer` gets `success`
    //    with the refusal's status and errMsg. The header makes Chromium send a CORS preflight
    //    first, which the proxy judges by rules 1-4 only (SPEC section 3) and forwards to the
    //    server, which allows the header.
    let url = format!("https://{API_HOST}/background-asked");
    let v = page
        .call(&url, json!({"X-Wxsandbox-Refusal": "answer"}))
        .await;
    if v["cb"] == "success" {
        assert_answered(&v, 503, "request:fail interrupted", "background, asked");
        one_record(
            &proxy,
            "/background-asked",
            "request:fail interrupted",
            &v,
            &mut findings,
        )
        .await;
    } else {
        let found = records(&proxy, "/background-asked").await;
        let preflight_refused = found
            .iter()
            .any(|r| r["method"] == "OPTIONS" && r["outcome"] != "ok");
        let shown: Vec<String> = found
            .iter()
            .map(|r| {
                format!(
                    "{} {} rule {} errMsg {}",
                    r["method"], r["outcome"], r["rule"], r["errMsg"]
                )
            })
            .collect();
        let why = if preflight_refused {
            "its CORS preflight was refused (rule above) instead of being judged by rules 1-4 \
             only and forwarded (SPEC section 3); a preflight carries no X-Wxsandbox-* header, \
             so `auto` failed it at the transport and Chromium never sent the call"
        } else {
            "see the records"
        };
        findings.check(false, || {
            format!(
                "a page call in the background with `X-Wxsandbox-Refusal: answer` must get \
                 success 503 with errMsg `request:fail interrupted`, but Taro called {} (net \
                 errors {}). Records for the URL: {shown:?}: {why}; the server saw {:?}",
                v["cb"],
                v["net"],
                api.saw("/background-asked")
            )
        });
    }

    // 6. The style switched to `answer` at run time: refused calls get `success` with the
    //    refusal's status and JSON (the answer carries Access-Control-Allow-Origin), no header
    //    needed. A refusal at the CONNECT is answered to the CONNECT, which a page can't read:
    //    still fail.
    put_refusal(&proxy, "answer").await;
    let url = format!("https://{API_HOST}/background-answered");
    let v = page.call(&url, json!({})).await;
    assert_answered(
        &v,
        503,
        "request:fail interrupted",
        "background, style answer",
    );
    one_record(
        &proxy,
        "/background-answered",
        "request:fail interrupted",
        &v,
        &mut findings,
    )
    .await;
    assert_eq!(set_phase(&proxy, APPID, "foreground", None).await, 200);
    let url = format!("https://{EXPIRED_HOST}/expired-answered");
    let v = page.call(&url, json!({})).await;
    assert_answered(
        &v,
        502,
        "request:fail -201:net::ERR_CERT_DATE_INVALID",
        "expired certificate, style answer",
    );
    one_record(
        &proxy,
        "/expired-answered",
        "request:fail -201:net::ERR_CERT_DATE_INVALID",
        &v,
        &mut findings,
    )
    .await;
    let url = format!("https://{UNLISTED_HOST}/unlisted-answered");
    let v = page.call(&url, json!({})).await;
    assert_fail(&v, "a host in no list, style answer (403 to the CONNECT)");
    put_refusal(&proxy, "auto").await;

    // 7. In the foreground with `auto` again, calls pass.
    let url = format!("https://{API_HOST}/again");
    let v = page.call(&url, json!({})).await;
    assert_eq!(
        (&v["cb"], &v["statusCode"]),
        (&json!("success"), &json!(200)),
        "{v}"
    );
    assert_eq!(expired.count(), 0, "{:?}", expired.seen());
    assert!(
        findings.0.is_empty(),
        "{inner:?} inside the tunnel: the proxy misbehaved with a real client:\n- {}",
        findings.0.join("\n- ")
    );
}
