//! Issue 6: the dashboard in a real browser (Debian's chromium driven by playwright-core, see
//! tests/browser/). It sees a refused call appear live, clicks "Background" for an app and a slow
//! call through the proxy fails with `fail interrupted`, then clicks the skip switch. A
//! screenshot is saved and its path printed. `.ci/run` installs chromium, node and the package.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use common::*;
use futures_util::StreamExt;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::Command;

fn require(path: &std::path::Path, how: &str) {
    assert!(
        path.exists(),
        "{} is missing: {how} (bash .ci/run does it)",
        path.display()
    );
}

#[tokio::test]
async fn dashboard_shows_refusals_live_and_drives_background_and_the_skip_switch() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    require(&chromium, "apt-get install -y chromium");
    require(
        &repo.join("tests/browser/node_modules/playwright-core"),
        "cd tests/browser && npm ci",
    );

    let apps = format!(
        "apps:\n  - appid: {APPID}\n    domains: {{request: [https://{API_HOST}]}}\n    limits: {{background_grace_ms: 300}}\n"
    );
    let (proxy, _backend, _ca) = setup(Some(apps)).await;
    let screenshot = repo.join("target/dashboard.png");
    let _ = std::fs::create_dir_all(repo.join("target"));
    let mut node = Command::new("node")
        .arg("dashboard.mjs")
        .arg(proxy.control_url())
        .arg(APPID)
        .arg(&screenshot)
        .env("CHROMIUM", &chromium)
        .current_dir(repo.join("tests/browser"))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node must be installed");
    let mut stdin = node.stdin.take().unwrap();
    let mut stdout = BufReader::new(node.stdout.take().unwrap()).lines();
    let mut expect = async |want: &str| {
        let line = tokio::time::timeout(Duration::from_secs(30), stdout.next_line())
            .await
            .unwrap_or_else(|_| panic!("the browser never said {want}"))
            .unwrap()
            .unwrap_or_else(|| panic!("the browser script ended before {want}"));
        assert!(
            line.starts_with(want),
            "expected {want}, the browser said {line}"
        );
        line
    };
    expect("opened").await;

    // 1. A refused call appears live.
    let c = client(&proxy);
    let r = c.get("http://unlisted.example/").send().await.unwrap();
    assert_eq!(r.status(), 403);
    stdin.write_all(b"expect-refused\n").await.unwrap();
    expect("refused-seen").await;

    // 2. A slow call in flight, then "Background" clicked: the call fails with interrupted.
    let slow = tokio::spawn(c.get(format!("https://{API_HOST}/slow/8000")).send());
    assert!(
        eventually(Duration::from_secs(5), || async {
            http_in_flight(&proxy).await == 1
        })
        .await
    );
    stdin.write_all(b"click-background\n").await.unwrap();
    expect("clicked-background").await;
    let r = slow.await.unwrap().unwrap();
    let (status, errno, errmsg, rule, _) = refusal_of(r).await;
    assert_eq!(
        (status, errno.as_str(), errmsg.as_str(), rule.as_str()),
        (503, "600003", "request:fail interrupted", "interrupted")
    );
    expect("interrupted-seen").await;

    // 3. The skip switch.
    stdin.write_all(b"click-skip\n").await.unwrap();
    expect("skip-on").await;
    assert_eq!(state(&proxy).await["skip_domain_check"], true);

    // 3b. The refusal style select: it shows the style in force (the tests' `answer`) and
    // switches it at run time; back to `answer` for step 4.
    assert_eq!(state(&proxy).await["refusal"], "answer");
    stdin.write_all(b"refusal fail\n").await.unwrap();
    let line = expect("refusal").await;
    assert_eq!(line, "refusal answer->fail");
    assert_eq!(state(&proxy).await["refusal"], "fail");
    let r = c.get("http://unlisted.example/").send().await;
    assert!(
        r.is_err(),
        "with the style `fail` a refused call gets no HTTP answer: {r:?}"
    );
    stdin.write_all(b"refusal answer\n").await.unwrap();
    assert_eq!(expect("refusal").await, "refusal fail->answer");
    assert_eq!(state(&proxy).await["refusal"], "answer");
    stdin.write_all(b"refusal-done\n").await.unwrap();
    let line = expect("screenshot").await;
    println!("dashboard screenshot: {}", screenshot.display());
    assert!(line.ends_with(&screenshot.display().to_string()));
    assert!(std::fs::metadata(&screenshot).unwrap().len() > 1000);

    // 4. A full ring (10,000 calls): the page still loads, caps its rows and filters.
    let fast = client_builder(&proxy).build().unwrap();
    let mut calls = futures_util::stream::iter(0..10_000)
        .map(|i| {
            let fast = fast.clone();
            async move {
                fast.get(format!("https://{API_HOST}/"))
                    .header(
                        "x-wxsandbox-url",
                        format!("https://api.weixin.qq.com/needle-{i}"),
                    )
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            }
        })
        .buffer_unordered(64);
    let mut refused = 0;
    while let Some(status) = calls.next().await {
        // A hint naming another target than the tunnel's is refused 400 (invalid-url).
        assert_eq!(status.unwrap(), 400);
        refused += 1;
    }
    assert_eq!(refused, 10_000);
    stdin.write_all(b"check-full-ring\n").await.unwrap();
    let line = expect("full-ring").await;
    println!("dashboard with a full ring: {line}");
    drop(stdin);
    let status = tokio::time::timeout(Duration::from_secs(30), node.wait())
        .await
        .unwrap()
        .unwrap();
    assert!(status.success(), "the browser script failed");
}
