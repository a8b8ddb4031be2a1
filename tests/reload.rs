//! Config edits apply without a restart: a valid edit replaces the config for new calls while
//! calls in flight keep their verdict; a broken edit keeps the old config and the reload
//! endpoint returns the findings with their lines.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;

struct World {
    proxy: TestProxy,
    _backend: Backend,
    file: PathBuf,
    head: String,
}

/// A proxy whose config is a file, reloaded on change; `api` is listed for requests.
async fn world(listed: &str) -> World {
    init_crypto();
    let ca = TestCa::new("reload test CA");
    let backend = start_backend(Some(
        ca.server_config(&[API_HOST, OTHER_HOST], &[b"h2", b"http/1.1"]),
    ))
    .await;
    let dir = tempfile::tempdir().unwrap();
    let trust = ca.write(dir.path());
    let to = format!("127.0.0.1:{}", backend.addr.port());
    let head = base_yaml(
        dir.path(),
        &trust,
        &[(API_HOST, to.clone()), (OTHER_HOST, to)],
        "",
    );
    let file = dir.path().join("wxsandbox.yaml");
    std::fs::write(&file, format!("{head}{}", apps(listed))).unwrap();
    World {
        proxy: start_reloadable(&file, dir).await,
        _backend: backend,
        file,
        head,
    }
}

fn apps(listed: &str) -> String {
    format!("apps:\n  - appid: {APPID}\n    domains:\n      request: [https://{listed}]\n")
}

async fn reloads(proxy: &TestProxy) -> u64 {
    state(proxy).await["config"]["reloads"]
        .as_u64()
        .unwrap_or(0)
}

#[tokio::test]
async fn an_edit_applies_to_new_calls_while_calls_in_flight_keep_their_verdict() {
    let w = world(API_HOST).await;
    let c = client(&w.proxy);
    let in_flight: Vec<_> = (0..3)
        .map(|i| {
            let c = c.clone();
            tokio::spawn(async move {
                c.get(format!("https://{API_HOST}/slow/1500?{i}"))
                    .send()
                    .await
                    .map(|r| r.status().as_u16())
            })
        })
        .collect();
    assert!(
        eventually(Duration::from_secs(5), || async {
            http_in_flight(&w.proxy).await == 3
        })
        .await
    );
    // The edit: api.example.com leaves the list, other.example.com comes in.
    std::fs::write(&w.file, format!("{}{}", w.head, apps(OTHER_HOST))).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            reloads(&w.proxy).await == 1
        })
        .await,
        "the file change was picked up"
    );
    for call in in_flight {
        assert_eq!(
            call.await.unwrap().unwrap(),
            200,
            "in flight: the old verdict"
        );
    }
    let fresh = client(&w.proxy);
    let r = fresh
        .get(format!("https://{OTHER_HOST}/new"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "the new list applies");
    let refused = fresh.get(format!("https://{API_HOST}/gone")).send().await;
    assert!(
        refused.is_err() || refused.unwrap().status() == 403,
        "api.example.com is no longer listed"
    );
    // The config in force, as JSON.
    let config: serde_json::Value = reqwest::get(format!("{}/api/config", w.proxy.control_url()))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        config["apps"][0]["domains"]["request"][0],
        format!("https://{OTHER_HOST}")
    );
}

#[tokio::test]
async fn a_broken_edit_keeps_the_old_config_and_names_its_lines() {
    let w = world(API_HOST).await;
    let broken = format!(
        "{}apps:\n  - appid: {APPID}\n    domains:\n      request:\n        - https://{API_HOST}\n        - http://plain.example.com\n",
        w.head
    );
    std::fs::write(&w.file, &broken).unwrap();
    let expected_line = broken
        .lines()
        .position(|l| l.contains("http://plain.example.com"))
        .unwrap()
        + 1;
    let r = reqwest::Client::new()
        .post(format!("{}/api/config/reload", w.proxy.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    let body: serde_json::Value = r.json().await.unwrap();
    let finding = &body["findings"][0];
    assert_eq!(finding["line"], expected_line, "{body}");
    assert_eq!(finding["entry"], "http://plain.example.com", "{body}");
    // The old config is still in force, and the state says why the edit was refused.
    let (status, _) = get_via_tunnel(&w.proxy, API_HOST, "/still", "").await;
    assert_eq!(status, 200);
    let s = state(&w.proxy).await;
    assert_eq!(s["config"]["error"][0]["line"], expected_line, "{s}");
    // A fixed edit clears the error.
    std::fs::write(&w.file, format!("{}{}", w.head, apps(API_HOST))).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/config/reload", w.proxy.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(state(&w.proxy).await["config"]["error"].is_null());
}

#[tokio::test]
async fn listen_addresses_are_not_reloadable_and_say_so() {
    let w = world(API_HOST).await;
    let moved = w
        .head
        .replacen("listen: 127.0.0.1:0", "listen: 127.0.0.1:1", 1);
    std::fs::write(&w.file, format!("{moved}{}", apps(API_HOST))).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/api/config/reload", w.proxy.control_url()))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    let notes = body["notes"].to_string();
    assert!(
        notes.contains("proxy.listen") && notes.contains("not reloadable"),
        "{body}"
    );
    let (status, _) = get_via_tunnel(&w.proxy, API_HOST, "/same-port", "").await;
    assert_eq!(status, 200, "still served where it was");
}

/// The dashboard shows a refused edit in a red banner naming the line (headless Chromium).
#[tokio::test]
async fn the_dashboard_shows_a_refused_edit_in_red() {
    let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let chromium =
        PathBuf::from(std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".to_owned()));
    assert!(
        chromium.exists(),
        "apt-get install -y chromium (bash .ci/run does it)"
    );
    assert!(
        repo.join("tests/browser/node_modules/playwright-core")
            .exists(),
        "cd tests/browser && npm ci (bash .ci/run does it)"
    );
    let w = world(API_HOST).await;
    let broken = format!(
        "{}apps:\n  - appid: {APPID}\n    domains:\n      request: [https://{API_HOST}, http://plain.example.com]\n",
        w.head
    );
    let line = broken.lines().count();
    std::fs::write(&w.file, &broken).unwrap();
    assert!(
        eventually(Duration::from_secs(5), || async {
            !state(&w.proxy).await["config"]["error"].is_null()
        })
        .await
    );
    let screenshot = repo.join("target/reload-banner.png");
    let out = tokio::time::timeout(
        Duration::from_secs(40),
        tokio::process::Command::new("node")
            .arg("reload.mjs")
            .arg(w.proxy.control_url())
            .arg(line.to_string())
            .arg(&screenshot)
            .env("CHROMIUM", &chromium)
            .current_dir(repo.join("tests/browser"))
            .output(),
    )
    .await
    .unwrap()
    .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("rgb("), "{stdout}");
    println!("screenshot: {} ({stdout})", screenshot.display());
}
