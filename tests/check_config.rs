//! Issue 3: `wxsandbox check-config` judges a config as the admin console would: exit 0 for the
//! checked-in configs, exit 1 naming the file, line, entry and rule of each bad case; a bad
//! config at start-up exits 64 and binds nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn wxsandbox(args: &[&str]) -> (i32, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wxsandbox"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text)
}

fn check(yaml: &str) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(&path, yaml).unwrap();
    wxsandbox(&["check-config", "-c", path.to_str().unwrap()])
}

fn app(lines: &str) -> String {
    format!("apps:\n  - appid: wx0123456789abcdef\n{lines}")
}

#[test]
fn the_checked_in_configs_pass() {
    for file in ["config/wxsandbox.yaml", "config/compose.yaml"] {
        let (code, out) = wxsandbox(&["check-config", "-c", file]);
        assert_eq!(code, 0, "{file}: {out}");
    }
    let (code, out) = wxsandbox(&["check-config"]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn each_bad_case_exits_1_naming_its_rule_and_line() {
    let many_prefetch =
        "    domains:\n      dns_prefetch: [a.com, b.com, c.com, d.com, e.com, f.com]\n";
    let many_business: String = (0..301)
        .map(|i| format!("h{i}.example.com"))
        .collect::<Vec<_>>()
        .join(", ");
    let many_business = format!("    business_domains: [{many_business}]\n");
    let cases: Vec<(String, &str, usize)> = vec![
        (
            app("    domains:\n      request: [https://1.2.3.4]\n"),
            "no-ip",
            4,
        ),
        (
            app("    domains:\n      request:\n        - https://localhost\n"),
            "no-localhost",
            5,
        ),
        (
            app("    domains:\n      request: [http://api.example.com]\n"),
            "https-only",
            4,
        ),
        (
            app("    domains:\n      socket: [ws://ws.example.com]\n"),
            "wss-only",
            4,
        ),
        (
            app("    domains:\n      request: [https://*.example.com]\n"),
            "no-wildcard",
            4,
        ),
        (
            app("    domains:\n      request: [https://api.example.com/v1]\n"),
            "no-path",
            4,
        ),
        (
            app("    domains:\n      request: [https://api.weixin.qq.com]\n"),
            "forbidden-host",
            4,
        ),
        (app(many_prefetch), "too-many", 4),
        (
            app("    domains:\n      dns_prefetch: [https://a.com]\n"),
            "no-scheme",
            4,
        ),
        (app(&many_business), "too-many", 3),
        (
            app("    business_domains: [web.example.com:8080]\n"),
            "no-port",
            3,
        ),
        (
            app("    business_domains: [web_site.example.com]\n"),
            "business-domain",
            3,
        ),
        ("apps:\n  - appid: wx123\n".to_owned(), "appid-format", 2),
        (
            "apps:\n  - appid: wx0123456789abcdef\n  - appid: wx0123456789abcdef\n".to_owned(),
            "duplicate-appid",
            3,
        ),
        (
            "proxy:\n  listen: 0.0.0.0:8080\n  bogus: 1\n".to_owned(),
            "unknown-key",
            3,
        ),
        (app("    limits: {overflow: sometimes}\n"), "overflow", 3),
    ];
    for (yaml, rule, line) in cases {
        let (code, out) = check(&yaml);
        assert_eq!(code, 1, "{rule}: {out}");
        assert!(
            out.contains(&format!("[{rule}]")),
            "expected rule {rule}:\n{out}"
        );
        assert!(
            out.contains(&format!("bad.yaml:{line}: [{rule}]")),
            "expected line {line} for {rule}:\n{out}"
        );
    }
}

#[test]
fn every_finding_is_reported_not_just_the_first() {
    let (code, out) = check(&app(
        "    domains:\n      request: [http://a.com, https://1.2.3.4, https://b.com/x]\n",
    ));
    assert_eq!(code, 1);
    for rule in ["https-only", "no-ip", "no-path"] {
        assert!(out.contains(rule), "{rule} missing:\n{out}");
    }
}

#[test]
fn a_bad_config_at_start_up_exits_64_and_binds_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "proxy:\n  listen: 127.0.0.1:0\napps:\n  - appid: nope\n",
    )
    .unwrap();
    let (code, out) = wxsandbox(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("appid-format"), "{out}");
    // A control port on a non-loopback address without a token is refused too.
    std::fs::write(
        &path,
        format!(
            "proxy: {{listen: 127.0.0.1:0}}\ncontrol: {{listen: 0.0.0.0:0}}\nca: {{dir: {}}}\n",
            dir.path().join("ca").display()
        ),
    )
    .unwrap();
    let (code, out) = wxsandbox(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("token"), "{out}");
}
