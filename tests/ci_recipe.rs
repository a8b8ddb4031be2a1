//! Issue 7: the README's CI recipe, followed literally where the machine allows: the proxy runs
//! with `--fail-on-refusal`, a client goes through it, the proxy gets SIGTERM, and its exit
//! status says whether any call was refused (3) or none was (0). The README's curl through the
//! proxy to the install page works too.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

async fn wait_healthy(control: u16) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let ok = Command::new("curl")
            .args(["-fsS", &format!("http://127.0.0.1:{control}/healthz")])
            .output()
            .is_ok_and(|o| o.status.success());
        if ok {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the proxy never became healthy");
}

async fn run_recipe(refuse: bool) -> i32 {
    let dir = tempfile::tempdir().unwrap();
    let (proxy, control) = (free_port(), free_port());
    let config = dir.path().join("ci.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy: {{listen: 127.0.0.1:{proxy}}}\ncontrol: {{listen: 127.0.0.1:{control}}}\nca: {{dir: {}}}\napps:\n  - appid: wx0123456789abcdef\n    domains: {{request: [https://api.example.com]}}\n",
            dir.path().join("ca").display()
        ),
    )
    .unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_wxsandbox"))
        .args(["run", "-c", config.to_str().unwrap(), "--fail-on-refusal"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    wait_healthy(control).await;
    let proxy_url = format!("http://127.0.0.1:{proxy}");
    // The test suite: the install page always works; an unlisted host is refused.
    let page = Command::new("curl")
        .args(["-fsS", "-x", &proxy_url, "http://wxsandbox.cert/"])
        .output()
        .unwrap();
    assert!(
        page.status.success() && String::from_utf8_lossy(&page.stdout).contains("wxsandbox CA")
    );
    if refuse {
        let ca = dir.path().join("ca/wxsandbox-ca.pem");
        let out = Command::new("curl")
            .args([
                "-s",
                "-o",
                "/dev/null",
                "-w",
                "%{http_connect}",
                "-x",
                &proxy_url,
                "--cacert",
                ca.to_str().unwrap(),
                "https://unlisted.example/",
            ])
            .output()
            .unwrap();
        assert_eq!(String::from_utf8_lossy(&out.stdout), "403");
        let log = Command::new("curl")
            .args([
                "-s",
                &format!("http://127.0.0.1:{control}/api/log?limit=50"),
            ])
            .output()
            .unwrap();
        assert!(String::from_utf8_lossy(&log.stdout).contains("unlisted.example"));
    }
    // kill -TERM $proxy; wait $proxy
    assert!(Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            return status.code().unwrap_or(-1);
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not exit after SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn a_refused_call_makes_the_job_fail_with_exit_3() {
    assert_eq!(run_recipe(true).await, 3);
}

#[tokio::test]
async fn no_refusal_exits_0() {
    assert_eq!(run_recipe(false).await, 0);
}
