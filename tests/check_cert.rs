//! Issue 5: the upstream TLS audit, against local TLS servers whose certificates are made at test
//! time with each defect. Each bad one gives its exact errMsg through the proxy and a failing
//! line in `check-cert`; the good one passes both; the skip switch lets the bad ones through.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use wxsandbox::check_cert::{check_cert, CheckCertOptions};

const DAY: time::Duration = time::Duration::days(1);

struct Pki {
    dir: tempfile::TempDir,
    root: Issuer<'static, KeyPair>,
    root_key_pem: String,
    inter_pem: String,
    inter: Issuer<'static, KeyPair>,
}

fn ca_params(name: &str) -> CertificateParams {
    let mut p = CertificateParams::default();
    p.distinguished_name = rcgen::DistinguishedName::new();
    p.distinguished_name.push(DnType::CommonName, name);
    p.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    p.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - DAY;
    p.not_after = now + time::Duration::days(3650);
    p
}

impl Pki {
    fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let root_key = KeyPair::generate().unwrap();
        let root_params = ca_params("Audit Test Root");
        let root_cert = root_params.self_signed(&root_key).unwrap();
        let root_key_pem = root_key.serialize_pem();
        let root = Issuer::new(root_params, root_key);
        let inter_key = KeyPair::generate().unwrap();
        let inter_params = ca_params("Audit Test Intermediate");
        let inter_cert = inter_params.signed_by(&inter_key, &root).unwrap();
        std::fs::write(dir.path().join("root.pem"), root_cert.pem()).unwrap();
        std::fs::write(dir.path().join("root.key"), &root_key_pem).unwrap();
        Pki {
            root,
            root_key_pem,
            inter_pem: inter_cert.pem(),
            inter: Issuer::new(inter_params, inter_key),
            dir,
        }
    }
    fn root_path(&self) -> PathBuf {
        self.dir.path().join("root.pem")
    }
}

fn leaf_params(name: &str, from: time::OffsetDateTime, days: i64) -> CertificateParams {
    let mut p = CertificateParams::new(vec![name.to_owned()]).unwrap();
    p.distinguished_name.push(DnType::CommonName, name);
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    p.not_before = from;
    p.not_after = from + time::Duration::days(days);
    p
}

/// A TLS server on 127.0.0.1:0 serving `chain` (PEM) with `key` (PEM), answering "ok" over HTTP/1.1.
async fn rustls_server(chain_pem: &str, key_pem: &str) -> SocketAddr {
    let chain: Vec<_> = rustls_pemfile::certs(&mut chain_pem.as_bytes())
        .map(Result::unwrap)
        .collect();
    let key = rustls_pemfile::private_key(&mut key_pem.as_bytes())
        .unwrap()
        .unwrap();
    let mut config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(chain, key)
    .unwrap();
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((tcp, _)) = listener.accept().await else {
                break;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = [0u8; 4096];
                let _ = tls.read(&mut buf).await;
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    addr
}

fn openssl(dir: &Path, args: &[&str]) -> bool {
    std::process::Command::new("openssl")
        .current_dir(dir)
        .args(args)
        .output()
        .expect("openssl must be installed")
        .status
        .success()
}

/// An `openssl s_server` on 127.0.0.1 with extra `args`; killed on drop.
struct OpensslServer {
    _child: tokio::process::Child,
    addr: SocketAddr,
}

async fn openssl_server(dir: &Path, args: &[&str]) -> OpensslServer {
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
    let child = tokio::process::Command::new("openssl")
        .current_dir(dir)
        .args(["s_server", "-accept", &addr.to_string(), "-www", "-quiet"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("openssl must be installed");
    // Wait (bounded) until it listens.
    assert!(
        eventually(Duration::from_secs(5), || async {
            tokio::net::TcpStream::connect(addr).await.is_ok()
        })
        .await
    );
    OpensslServer {
        _child: child,
        addr,
    }
}

struct Fixture {
    host: &'static str,
    addr: SocketAddr,
    /// Chromium code and name, or None for the good chain.
    expect: Option<(i32, &'static str)>,
    _keep: Option<OpensslServer>,
}

async fn fixtures(pki: &Pki) -> Vec<Fixture> {
    let now = time::OffsetDateTime::now_utc();
    let mut out = Vec::new();
    let served = |leaf: &rcgen::Certificate, with_inter: bool| {
        if with_inter {
            format!("{}{}", leaf.pem(), pki.inter_pem)
        } else {
            leaf.pem()
        }
    };
    let mut add = async |host: &'static str,
                         params: CertificateParams,
                         by_root: bool,
                         with_inter: bool,
                         expect| {
        let key = KeyPair::generate().unwrap();
        let cert = params
            .signed_by(&key, if by_root { &pki.root } else { &pki.inter })
            .unwrap();
        let addr = rustls_server(&served(&cert, with_inter), &key.serialize_pem()).await;
        out.push(Fixture {
            host,
            addr,
            expect,
            _keep: None,
        });
    };
    add(
        "good.test",
        leaf_params("good.test", now - DAY, 90),
        false,
        true,
        None,
    )
    .await;
    add(
        "expired.test",
        leaf_params("expired.test", now - time::Duration::days(100), 30),
        false,
        true,
        Some((-201, "ERR_CERT_DATE_INVALID")),
    )
    .await;
    add(
        "future.test",
        leaf_params("future.test", now + time::Duration::days(10), 30),
        false,
        true,
        Some((-201, "ERR_CERT_DATE_INVALID")),
    )
    .await;
    add(
        "wrongname.test",
        leaf_params("other.test", now - DAY, 90),
        false,
        true,
        Some((-200, "ERR_CERT_COMMON_NAME_INVALID")),
    )
    .await;
    add(
        "incomplete.test",
        leaf_params("incomplete.test", now - DAY, 90),
        false,
        false,
        Some((-202, "ERR_CERT_AUTHORITY_INVALID")),
    )
    .await;
    add(
        "longlived.test",
        leaf_params("longlived.test", now - DAY, 5 * 365),
        true,
        false,
        Some((-213, "ERR_CERT_VALIDITY_TOO_LONG")),
    )
    .await;
    // Self-signed leaf, even when trusted through upstream.trust.
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params("selfsigned.test", now - DAY, 90)
        .self_signed(&key)
        .unwrap();
    std::fs::write(pki.dir.path().join("selfsigned.pem"), cert.pem()).unwrap();
    let addr = rustls_server(&cert.pem(), &key.serialize_pem()).await;
    out.push(Fixture {
        host: "selfsigned.test",
        addr,
        expect: Some((-202, "ERR_CERT_AUTHORITY_INVALID")),
        _keep: None,
    });
    // Unknown CA.
    let stranger = Issuer::new(ca_params("Stranger CA"), KeyPair::generate().unwrap());
    let key = KeyPair::generate().unwrap();
    let cert = leaf_params("unknownca.test", now - DAY, 90)
        .signed_by(&key, &stranger)
        .unwrap();
    let addr = rustls_server(&cert.pem(), &key.serialize_pem()).await;
    out.push(Fixture {
        host: "unknownca.test",
        addr,
        expect: Some((-202, "ERR_CERT_AUTHORITY_INVALID")),
        _keep: None,
    });
    // SHA-1 and RSA-1024 leaves, signed by the root with openssl (rcgen/ring can't make them).
    let d = pki.dir.path();
    let ext = "subjectAltName=DNS:{host}\nextendedKeyUsage=serverAuth\n";
    for (host, keygen, digest, expect) in [
        (
            "sha1.test",
            vec![
                "ecparam",
                "-name",
                "prime256v1",
                "-genkey",
                "-noout",
                "-out",
                "sha1.key",
            ],
            "-sha1",
            (-208, "ERR_CERT_WEAK_SIGNATURE_ALGORITHM"),
        ),
        (
            "rsa1024.test",
            vec!["genrsa", "-out", "rsa1024.key", "1024"],
            "-sha256",
            (-211, "ERR_CERT_WEAK_KEY"),
        ),
    ] {
        let stem = host.trim_end_matches(".test");
        assert!(openssl(d, &keygen), "openssl keygen for {host}");
        std::fs::write(d.join(format!("{stem}.ext")), ext.replace("{host}", host)).unwrap();
        assert!(openssl(
            d,
            &[
                "req",
                "-new",
                "-key",
                &format!("{stem}.key"),
                "-subj",
                &format!("/CN={host}"),
                "-out",
                &format!("{stem}.csr")
            ]
        ));
        assert!(
            openssl(
                d,
                &[
                    "x509",
                    "-req",
                    "-in",
                    &format!("{stem}.csr"),
                    "-CA",
                    "root.pem",
                    "-CAkey",
                    "root.key",
                    "-CAcreateserial",
                    "-days",
                    "90",
                    digest,
                    "-extfile",
                    &format!("{stem}.ext"),
                    "-out",
                    &format!("{stem}.pem")
                ]
            ),
            "openssl signing {host}"
        );
        let server = openssl_server(
            d,
            &[
                "-cert",
                &format!("{stem}.pem"),
                "-key",
                &format!("{stem}.key"),
                "-cipher",
                "DEFAULT@SECLEVEL=0",
            ],
        )
        .await;
        out.push(Fixture {
            host,
            addr: server.addr,
            expect: Some(expect),
            _keep: Some(server),
        });
    }
    let _ = &pki.root_key_pem;
    out
}

#[tokio::test]
async fn check_cert_names_each_defect_and_passes_the_good_chain() {
    init_crypto();
    let pki = Pki::new();
    let trust = vec![pki.root_path(), pki.dir.path().join("selfsigned.pem")];
    let fixtures = fixtures(&pki).await;
    for f in &fixtures {
        let opts = CheckCertOptions {
            url: format!("https://{}/", f.host),
            trust: trust.clone(),
            resolve: vec![(f.host.to_owned(), f.addr)],
        };
        let report = check_cert(&opts).await.unwrap();
        let text = report.render_text();
        match f.expect {
            None => {
                assert!(report.passed(), "{} should pass:\n{text}", f.host);
                assert!(
                    text.contains("result: pass") && text.contains("chain as served"),
                    "{text}"
                );
                assert_eq!(report.chain.len(), 2, "leaf + intermediate");
            }
            Some((code, name)) => {
                assert!(!report.passed(), "{} should fail:\n{text}", f.host);
                let failing = report.checks.iter().find(|c| c.error == Some((code, name)));
                assert!(
                    failing.is_some(),
                    "{}: expected a FAIL line with {code} {name}:\n{text}",
                    f.host
                );
                assert!(text.contains(&format!("[{code} {name}]")), "{text}");
                let json: serde_json::Value = serde_json::from_str(&report.render_json()).unwrap();
                assert_eq!(json["passed"], false);
            }
        }
    }
    let incomplete = fixtures
        .iter()
        .find(|f| f.host == "incomplete.test")
        .unwrap();
    let opts = CheckCertOptions {
        url: "https://incomplete.test/".into(),
        trust: trust.clone(),
        resolve: vec![("incomplete.test".into(), incomplete.addr)],
    };
    let text = check_cert(&opts).await.unwrap().render_text();
    assert!(text.contains("full chain (leaf + intermediate)"), "{text}");
}

#[tokio::test]
async fn the_proxy_refuses_each_defect_with_its_errmsg_and_the_skip_switch_lets_them_through() {
    init_crypto();
    let pki = Pki::new();
    let fixtures = fixtures(&pki).await;
    let dir = tempfile::tempdir().unwrap();
    let map: Vec<(&str, String)> = fixtures
        .iter()
        .map(|f| (f.host, f.addr.to_string()))
        .collect();
    let hosts: Vec<String> = fixtures
        .iter()
        .map(|f| format!("https://{}", f.host))
        .collect();
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains:\n      request: [{}]\n",
        hosts.join(", ")
    );
    let mut yaml = base_yaml(dir.path(), &pki.root_path(), &map, &apps);
    yaml = yaml.replace(
        &format!("  trust: [{}]", pki.root_path().display()),
        &format!(
            "  trust: [{}, {}]",
            pki.root_path().display(),
            pki.dir.path().join("selfsigned.pem").display()
        ),
    );
    let proxy = start_proxy_yaml(yaml, dir, &TestCa::new("unused")).await;
    let c = client_builder(&proxy).http1_only().build().unwrap();
    for f in &fixtures {
        let r = c.get(format!("https://{}/", f.host)).send().await.unwrap();
        match f.expect {
            None => assert_eq!(r.status(), 200, "{}", f.host),
            Some((code, name)) => {
                let (status, errno, errmsg, rule, body) = refusal_of(r).await;
                assert_eq!(
                    (status, errno.as_str(), rule.as_str()),
                    (502, "600001", "tls"),
                    "{}: {body}",
                    f.host
                );
                assert_eq!(
                    errmsg,
                    format!("request:fail {code}:net::{name}"),
                    "{}: {body}",
                    f.host
                );
                assert!(!body["detail"].as_str().unwrap().is_empty());
            }
        }
    }
    set_skip(&proxy, true).await;
    for f in &fixtures {
        let r = c.get(format!("https://{}/", f.host)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{} with the skip switch", f.host);
    }
}

#[tokio::test]
async fn a_tls_1_1_only_server_is_err_ssl_version_or_cipher_mismatch() {
    init_crypto();
    let pki = Pki::new();
    let d = pki.dir.path();
    assert!(openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "old.key",
            "-out",
            "old.pem",
            "-subj",
            "/CN=old.test",
            "-days",
            "30"
        ]
    ));
    // Can this openssl speak TLS 1.1 at all? (Debian's allows it at security level 0.)
    let probe = std::process::Command::new("openssl")
        .args(["s_server", "-help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&probe.stderr).into_owned()
        + &String::from_utf8_lossy(&probe.stdout);
    assert!(
        help.contains("-tls1_1"),
        "this openssl has no -tls1_1: {help}"
    );
    let server = openssl_server(
        d,
        &[
            "-cert",
            "old.pem",
            "-key",
            "old.key",
            "-tls1_1",
            "-cipher",
            "DEFAULT@SECLEVEL=0",
        ],
    )
    .await;
    let opts = CheckCertOptions {
        url: "https://old.test/".into(),
        trust: vec![d.join("old.pem")],
        resolve: vec![("old.test".into(), server.addr)],
    };
    let report = check_cert(&opts).await.unwrap();
    let line = report
        .checks
        .iter()
        .find(|c| c.name == "tls-version")
        .unwrap();
    assert_eq!(
        line.error,
        Some((-113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH")),
        "{}",
        report.render_text()
    );
    assert!(!report.passed());
    drop(server);
}

// --- Item 12: a handshake_failure alert in answer to the ClientHello (no common cipher) ---

/// The alert a server with no cipher in common sends: fatal (2), handshake_failure (40).
const HANDSHAKE_FAILURE_ALERT: [u8; 7] = [0x15, 0x03, 0x03, 0x00, 0x02, 0x02, 0x28];

/// A TCP server on 127.0.0.1:0 that reads one TLS record (the ClientHello), answers it with a
/// fatal handshake_failure alert and closes, as a server offering only RSA key exchange does.
/// The counter says how many ClientHellos it answered.
async fn alert_server() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
    use std::sync::atomic::{AtomicUsize, Ordering};
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hellos = Arc::new(AtomicUsize::new(0));
    let counter = hellos.clone();
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok(Ok((mut tcp, _))) = tokio::time::timeout(WAIT, listener.accept()).await else {
                break;
            };
            let counter = counter.clone();
            tokio::spawn(async move {
                let mut header = [0u8; 5];
                let read = tokio::time::timeout(WAIT, tcp.read_exact(&mut header)).await;
                if !matches!(read, Ok(Ok(_))) || header[0] != 0x16 {
                    return;
                }
                let len = usize::from(u16::from_be_bytes([header[3], header[4]]));
                let mut body = vec![0u8; len];
                let read = tokio::time::timeout(WAIT, tcp.read_exact(&mut body)).await;
                if !matches!(read, Ok(Ok(_))) || body.first() != Some(&0x01) {
                    return;
                }
                counter.fetch_add(1, Ordering::SeqCst);
                let _ = tcp.write_all(&HANDSHAKE_FAILURE_ALERT).await;
                let _ = tcp.shutdown().await;
                // Drain until the client closes (bounded), so closing never resets the alert away.
                let mut sink = [0u8; 1024];
                for _ in 0..64 {
                    match tokio::time::timeout(WAIT, tcp.read(&mut sink)).await {
                        Ok(Ok(n)) if n > 0 => {}
                        _ => break,
                    }
                }
            });
        }
    });
    (addr, hellos)
}

const CIPHER_MISMATCH: (i32, &str) = (-113, "ERR_SSL_VERSION_OR_CIPHER_MISMATCH");

/// `wxsandbox check-cert ARGS` (bounded): exit code and stdout.
async fn check_cert_bin(args: &[&str]) -> (Option<i32>, String) {
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_wxsandbox"))
        .arg("check-cert")
        .args(args)
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output();
    let out = tokio::time::timeout(WAIT, child).await.unwrap().unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

#[tokio::test]
async fn a_handshake_failure_alert_to_the_client_hello_is_a_cipher_mismatch_in_check_cert() {
    init_crypto();
    let (addr, hellos) = alert_server().await;
    let url = format!("https://cipher.test:{}/", addr.port());
    let (code, out) = check_cert_bin(&[&url, "--resolve", "cipher.test=127.0.0.1"]).await;
    assert_eq!(code, Some(1), "{out}");
    let line = out
        .lines()
        .find(|l| l.starts_with("FAIL "))
        .unwrap_or_else(|| panic!("no FAIL line:\n{out}"));
    assert!(line.starts_with("FAIL cipher "), "{out}");
    assert!(
        line.ends_with("[-113 ERR_SSL_VERSION_OR_CIPHER_MISMATCH]"),
        "{out}"
    );
    assert!(line.contains("no forward-secret cipher"), "{out}");
    assert!(out.contains("fix: enable ECDHE cipher suites"), "{out}");
    assert!(
        !out.contains("tls-version"),
        "not a version failure:\n{out}"
    );
    assert!(hellos.load(std::sync::atomic::Ordering::SeqCst) >= 1);

    // The same through the library, and as JSON.
    let report = check_cert(&CheckCertOptions {
        url: url.clone(),
        trust: vec![],
        resolve: vec![("cipher.test".into(), addr)],
    })
    .await
    .unwrap();
    assert!(!report.passed());
    let failing: Vec<_> = report.checks.iter().filter(|c| !c.passed).collect();
    assert_eq!(failing.len(), 1, "{}", report.render_text());
    assert_eq!(
        (failing[0].name, failing[0].error),
        ("cipher", Some(CIPHER_MISMATCH))
    );
    let json: serde_json::Value = serde_json::from_str(&report.render_json()).unwrap();
    assert_eq!(json["checks"][0]["name"], "cipher");
}

#[tokio::test]
async fn the_proxy_refuses_a_server_with_no_common_cipher_with_err_ssl_version_or_cipher_mismatch()
{
    init_crypto();
    let pki = Pki::new();
    let (alert_addr, hellos) = alert_server().await;
    // A real one: openssl offering TLS 1.2 with RSA key exchange only.
    let d = pki.dir.path();
    assert!(openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            "rsakx.key",
            "-out",
            "rsakx.pem",
            "-subj",
            "/CN=rsakx.test",
            "-days",
            "30",
            "-addext",
            "subjectAltName=DNS:rsakx.test",
        ]
    ));
    let rsakx = openssl_server(
        d,
        &[
            "-cert",
            "rsakx.pem",
            "-key",
            "rsakx.key",
            "-tls1_2",
            "-cipher",
            "AES128-SHA256",
        ],
    )
    .await;
    // check-cert names the openssl one a cipher failure too.
    let report = check_cert(&CheckCertOptions {
        url: "https://rsakx.test/".into(),
        trust: vec![d.join("rsakx.pem")],
        resolve: vec![("rsakx.test".into(), rsakx.addr)],
    })
    .await
    .unwrap();
    let line = report.checks.iter().find(|c| !c.passed).unwrap();
    assert_eq!(
        (line.name, line.error),
        ("cipher", Some(CIPHER_MISMATCH)),
        "{}",
        report.render_text()
    );

    let dir = tempfile::tempdir().unwrap();
    let map = vec![
        ("cipher.test", alert_addr.to_string()),
        ("rsakx.test", rsakx.addr.to_string()),
    ];
    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains:\n      request: [https://cipher.test, https://rsakx.test]\n"
    );
    let yaml = base_yaml(dir.path(), &pki.root_path(), &map, &apps);
    let proxy = start_proxy_yaml(yaml, dir, &TestCa::new("unused")).await;
    let c = client_builder(&proxy).http1_only().build().unwrap();
    // `cipher.test.` (a trailing dot) is mapped like `cipher.test`.
    for url in [
        "https://cipher.test/",
        "https://cipher.test./",
        "https://rsakx.test/",
    ] {
        let r = c.get(url).send().await.unwrap();
        let (status, errno, errmsg, rule, body) = refusal_of(r).await;
        assert_eq!(
            (status, errno.as_str(), rule.as_str()),
            (502, "600001", "tls"),
            "{url}: {body}"
        );
        assert_eq!(
            errmsg, "request:fail -113:net::ERR_SSL_VERSION_OR_CIPHER_MISMATCH",
            "{url}: {body}"
        );
        let detail = body["detail"].as_str().unwrap();
        assert!(
            detail.starts_with("cipher check failed") && detail.contains("ECDHE"),
            "{url}: {detail}"
        );
    }
    assert!(hellos.load(std::sync::atomic::Ordering::SeqCst) >= 2);
}

// --- Item 15: the CA files ---

/// `wxsandbox ca --dir DIR` under `umask`, (bounded by the command's own work): exit code, output.
fn ca_bin(dir: &Path, umask: &str) -> (Option<i32>, String) {
    let out = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("umask {umask}; exec \"$0\" ca --dir \"$1\""))
        .arg(env!("CARGO_BIN_EXE_wxsandbox"))
        .arg(dir)
        .env_remove("WXSANDBOX_CA_DIR")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr),
    )
}

fn mode(path: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

#[test]
fn ca_makes_a_0700_directory_under_umask_000_and_warns_about_an_open_key() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("new").join("sub");
    let (code, out) = ca_bin(&dir, "000");
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(mode(&tmp.path().join("new")), 0o700, "{out}");
    assert_eq!(mode(&dir), 0o700, "{out}");
    let key = dir.join("wxsandbox-ca.key");
    assert_eq!(mode(&key), 0o600);
    assert_eq!(mode(&dir.join("wxsandbox-ca.pem")) & 0o022, 0, "{out}");
    assert!(out.contains(&format!("{} (0600)", key.display())), "{out}");
    assert!(!out.contains("warning"), "{out}");

    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o644)).unwrap();
    let (code, out) = ca_bin(&dir, "022");
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&format!("{} (0644)", key.display())), "{out}");
    assert!(!out.contains("(0600)"), "{out}");
    let warning = out
        .lines()
        .find(|l| l.starts_with("warning:"))
        .unwrap_or_else(|| panic!("no warning line:\n{out}"));
    assert!(
        warning.contains("group or others can read it")
            && warning.contains(&format!("chmod 600 {}", key.display())),
        "{out}"
    );
    assert_eq!(mode(&key), 0o644, "the user's file is not chmod-ed");
}

#[test]
fn ca_refuses_an_rsa_1024_ca_as_too_small() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    assert!(openssl(
        d,
        &[
            "req",
            "-x509",
            "-newkey",
            "rsa:1024",
            "-nodes",
            "-keyout",
            "wxsandbox-ca.key",
            "-out",
            "wxsandbox-ca.pem",
            "-subj",
            "/CN=Old CA",
            "-days",
            "30",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
        ]
    ));
    let (code, out) = ca_bin(d, "022");
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("too small") && out.contains("RSA 1024") && out.contains("2048"),
        "{out}"
    );
}
