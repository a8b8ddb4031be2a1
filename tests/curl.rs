//! curl through the proxy, as the README shows it: `curl -x http://127.0.0.1:PORT --cacert
//! certs/wxsandbox-ca.pem https://...`. `.ci/run` installs curl.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use common::*;
use tokio::process::Command;

async fn curl(args: &[&str]) -> (i32, Vec<u8>, String) {
    let out = tokio::time::timeout(
        WAIT,
        Command::new("curl")
            .args(["--max-time", "15"])
            .args(args)
            .output(),
    )
    .await
    .expect("curl timed out")
    .expect("curl must be installed (apt-get install -y curl)");
    (
        out.status.code().unwrap_or(-1),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[tokio::test]
async fn curl_get_and_post_with_expect_100_continue() {
    let (proxy, backend, _ca) = setup(None).await;
    let ca = proxy.ca_dir().join("wxsandbox-ca.pem");
    let ca = ca.to_str().unwrap();
    let proxy_url = proxy.proxy_url();
    let (code, body, err) = curl(&[
        "-sS",
        "-x",
        &proxy_url,
        "--cacert",
        ca,
        &format!("https://{API_HOST}/bytes/1024"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(body, (0..1024).map(pattern).collect::<Vec<u8>>());

    // 2 MiB upload with Expect: 100-continue over HTTP/1.1: curl waits up to 30 s for the 100
    // before sending the body, so this finishing in time proves the proxy sent it.
    let upload: Vec<u8> = (0..2 * 1024 * 1024).map(|i| (i % 253) as u8).collect();
    let file = proxy.dir.path().join("upload.bin");
    std::fs::write(&file, &upload).unwrap();
    let data = format!("@{}", file.display());
    let (code, body, err) = curl(&[
        "-sS",
        "-x",
        &proxy_url,
        "--cacert",
        ca,
        "-H",
        "Expect: 100-continue",
        "-H",
        "Content-Type: application/octet-stream",
        "--http1.1",
        "--expect100-timeout",
        "30",
        "--data-binary",
        &data,
        &format!("https://{API_HOST}/echo"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256(&upload));
    // Over HTTP/2 hyper can't send a 100 (no informational responses): curl sends the body after
    // its expect timeout (1 s by default) and the upload still passes byte-exact.
    let (code, body, err) = curl(&[
        "-sS",
        "-x",
        &proxy_url,
        "--cacert",
        ca,
        "--http2",
        "-H",
        "Expect: 100-continue",
        "--data-binary",
        &data,
        &format!("https://{API_HOST}/echo"),
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    assert_eq!(sha256(&body), sha256(&upload));
    let seen = backend.seen();
    let post = seen.iter().find(|s| s.path == "/echo").unwrap();
    assert!(
        post.headers.get("expect").is_none(),
        "Expect is answered by the proxy, not forwarded"
    );

    // Without the proxy's CA, curl refuses the proxy's leaf: proof that it really re-signs.
    let (code, _, _) = curl(&["-sS", "-x", &proxy_url, &format!("https://{API_HOST}/")]).await;
    assert_ne!(code, 0);
}

/// Refusal styles with a real client: in `fail` style a refused call inside the tunnel makes
/// curl fail (non-zero exit, over HTTP/1.1 and HTTP/2); `X-Wxsandbox-Refusal: answer` gets
/// the HTTP answer (curl exits 0 and prints the JSON).
#[tokio::test]
async fn curl_fails_on_a_refused_call_in_fail_style() {
    let apps = format!(
        "sandbox: {{refusal: fail}}\napps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n"
    );
    let (proxy, backend, _ca) = setup(Some(apps)).await;
    assert_eq!(set_phase(&proxy, APPID, "background", None).await, 200);
    let ca = proxy.ca_dir().join("wxsandbox-ca.pem");
    let ca = ca.to_str().unwrap();
    let proxy_url = proxy.proxy_url();
    let url = format!("https://{API_HOST}/refused");
    for version in ["--http1.1", "--http2"] {
        let (code, body, err) =
            curl(&["-sS", "-x", &proxy_url, "--cacert", ca, version, &url]).await;
        assert_ne!(code, 0, "{version}: curl must fail: {err}");
        assert!(body.is_empty(), "{version}: no response: {body:?}");
    }
    let (code, body, err) = curl(&[
        "-sS",
        "-x",
        &proxy_url,
        "--cacert",
        ca,
        "-H",
        "X-Wxsandbox-Refusal: answer",
        &url,
    ])
    .await;
    assert_eq!(code, 0, "{err}");
    let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(json["errMsg"], "request:fail interrupted");
    assert_eq!(backend.count(), 0);
    assert_eq!(
        records_for(&proxy, "/refused").await.len(),
        3,
        "one record per call"
    );
}
