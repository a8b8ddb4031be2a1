//! Issue 3: `wxsandbox check-config` judges a config as the admin console would: exit 0 for the
//! checked-in configs, exit 1 naming the file, line, entry and rule of each bad case; a bad
//! config at start-up exits 64 and binds nothing.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

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

// Hardening item 7: every file the config loader reads is bounded.

/// How long a refused config may take before the test calls it a hang.
const DEADLINE: Duration = Duration::from_secs(10);

/// Run the binary with a deadline: a hang (a FIFO opened for reading) or an endless read
/// (`/dev/zero`) fails the test instead of blocking it. The child's address space is capped
/// (`ulimit -v`, 2 GiB) so that an unbounded read dies quickly instead of eating the memory of
/// the machine; output goes to files, so a chatty child can't block on a full pipe.
fn wxsandbox_bounded(args: &[&str]) -> (i32, String) {
    let dir = tempfile::tempdir().unwrap();
    let out_path = dir.path().join("out");
    let err_path = dir.path().join("err");
    let mut child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -v 2097152 && exec "$0" "$@""#)
        .arg(env!("CARGO_BIN_EXE_wxsandbox"))
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(std::fs::File::create(&err_path).unwrap())
        .spawn()
        .unwrap();
    let started = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if started.elapsed() > DEADLINE {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "wxsandbox {args:?} still running after {DEADLINE:?}: {}{}",
                std::fs::read_to_string(&out_path).unwrap_or_default(),
                std::fs::read_to_string(&err_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let text = format!(
        "{}{}",
        std::fs::read_to_string(&out_path).unwrap(),
        std::fs::read_to_string(&err_path).unwrap()
    );
    (status.code().unwrap_or(-1), text)
}

/// The head of a config that binds nothing shared if it were ever accepted by mistake.
fn loopback_head(dir: &Path) -> String {
    format!(
        "proxy: {{listen: 127.0.0.1:0}}\ncontrol: {{listen: 127.0.0.1:0}}\nca: {{dir: {}}}\n",
        dir.join("ca").display()
    )
}

fn mkfifo(path: &Path) {
    let status = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(status.success(), "mkfifo {}", path.display());
}

#[test]
fn dev_zero_as_the_config_exits_64_without_reading_it() {
    for command in ["run", "check-config"] {
        let (code, out) = wxsandbox_bounded(&[command, "-c", "/dev/zero"]);
        assert_eq!(code, 64, "{command}: {out}");
        assert!(out.contains("/dev/zero"), "{command}: {out}");
        assert!(out.contains("not a regular file"), "{command}: {out}");
    }
}

#[test]
fn a_fifo_as_the_config_exits_64_instead_of_hanging() {
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("config.yaml");
    mkfifo(&fifo);
    for command in ["run", "check-config"] {
        let (code, out) = wxsandbox_bounded(&[command, "-c", fifo.to_str().unwrap()]);
        assert_eq!(code, 64, "{command}: {out}");
        assert!(out.contains("not a regular file"), "{command}: {out}");
        assert!(out.contains("FIFO"), "{command}: {out}");
    }
}

#[test]
fn a_config_over_4_mib_exits_64_naming_the_limit() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.yaml");
    // A valid config padded with comments to 5 MiB: only the size can refuse it.
    let mut text = loopback_head(dir.path());
    let comment = format!("# {}\n", "x".repeat(1021));
    while text.len() < 5 * 1024 * 1024 {
        text.push_str(&comment);
    }
    std::fs::write(&path, &text).unwrap();
    for command in ["run", "check-config"] {
        let (code, out) = wxsandbox_bounded(&[command, "-c", path.to_str().unwrap()]);
        assert_eq!(code, 64, "{command}: {out}");
        assert!(out.contains("big.yaml"), "{command}: {out}");
        assert!(out.contains("4 MiB"), "{command}: {out}");
        assert!(out.contains("[too-large]"), "{command}: {out}");
    }
    // Just under the limit, the same text is read and judged.
    text.truncate(4 * 1024 * 1024 - 1024);
    std::fs::write(&path, &text).unwrap();
    let (code, out) = wxsandbox_bounded(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 0, "{out}");
}

#[test]
fn deep_nesting_is_refused_quickly_naming_the_line() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    // 100,000 nested flow sequences on line 3.
    std::fs::write(
        &path,
        format!("# deep\nproxy:\n  clients: {}\n", "[".repeat(100_000)),
    )
    .unwrap();
    let started = Instant::now();
    let (code, out) = wxsandbox_bounded(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml:3: [too-deep]"), "{out}");
    assert!(out.contains("deeper than 32"), "{out}");
    assert!(started.elapsed() < Duration::from_secs(5), "{out}");
    let (code, out) = wxsandbox_bounded(&["run", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("[too-deep]"), "{out}");
    // Block nesting counts too: 40 nested mappings, the 33rd level on line 33.
    let block: String = (0..40)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    std::fs::write(&path, format!("{block}{}x\n", " ".repeat(40))).unwrap();
    let (code, out) = wxsandbox_bounded(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml:33: [too-deep]"), "{out}");
    // 32 levels are fine as far as nesting goes (serde_yaml then refuses the unknown key).
    let block: String = (0..32)
        .map(|i| format!("{}k{i}:\n", " ".repeat(i)))
        .collect();
    std::fs::write(&path, format!("{block}{}x\n", " ".repeat(32))).unwrap();
    let (code, out) = wxsandbox_bounded(&["check-config", "-c", path.to_str().unwrap()]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("[too-deep]"), "{out}");
    assert!(out.contains("[unknown-key]"), "{out}");
}

/// A config whose one app is the mini program folder `project`.
fn project_config(dir: &Path, project: &Path) -> std::path::PathBuf {
    let path = dir.join("wxsandbox.yaml");
    std::fs::write(
        &path,
        format!(
            "{}apps:\n  - project: {}\n",
            loopback_head(dir),
            project.display()
        ),
    )
    .unwrap();
    path
}

#[test]
fn project_files_are_bounded_too() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("miniprogram");
    std::fs::create_dir(&project).unwrap();
    let config = project_config(dir.path(), &project);
    let config = config.to_str().unwrap();
    let public = project.join("project.config.json");

    // project.config.json is a symlink to /dev/zero.
    std::os::unix::fs::symlink("/dev/zero", &public).unwrap();
    let (code, out) = wxsandbox_bounded(&["run", "-c", config]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("project.config.json"), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    let (code, out) = wxsandbox_bounded(&["check-config", "-c", config]);
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("[project]"), "{out}");

    // A good project.config.json, and app.json is a FIFO: refused, not a hang.
    std::fs::remove_file(&public).unwrap();
    std::fs::write(&public, r#"{"appid": "wx0123456789abcdef"}"#).unwrap();
    let (code, out) = wxsandbox_bounded(&["check-config", "-c", config]);
    assert_eq!(code, 0, "the folder is fine so far: {out}");
    mkfifo(&project.join("app.json"));
    let (code, out) = wxsandbox_bounded(&["run", "-c", config]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("app.json"), "{out}");
    assert!(out.contains("not a regular file"), "{out}");
    std::fs::remove_file(project.join("app.json")).unwrap();

    // project.private.config.json over 4 MiB.
    let private = project.join("project.private.config.json");
    let big = format!(
        r#"{{"appid": "wx0123456789abcdef", "x": "{}"}}"#,
        "y".repeat(5 << 20)
    );
    std::fs::write(&private, big).unwrap();
    let (code, out) = wxsandbox_bounded(&["run", "-c", config]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("project.private.config.json"), "{out}");
    assert!(out.contains("4 MiB"), "{out}");
    std::fs::remove_file(&private).unwrap();

    // game.json nested 100,000 deep: refused before serde_json, naming the line.
    std::fs::write(
        project.join("game.json"),
        format!("{{\n\"x\": {}", "[".repeat(100_000)),
    )
    .unwrap();
    let (code, out) = wxsandbox_bounded(&["run", "-c", config]);
    assert_eq!(code, 64, "{out}");
    assert!(out.contains("game.json"), "{out}");
    assert!(
        out.contains("nested deeper than 32 levels at line 2"),
        "{out}"
    );
}

// Hardening item 14: a finding's line is where the YAML parser met its node, never the first
// line that happens to contain the same text.

#[test]
fn too_many_entries_point_at_the_lists_own_key() {
    // `request:` under network_timeout (line 4) comes before `request:` under domains (line 6):
    // the finding names line 6, the key of the list (not the 201st entry).
    let entries: String = (0..201)
        .map(|i| format!("        - https://h{i}.example.com\n"))
        .collect();
    let (code, out) = check(&app(&format!(
        "    network_timeout:\n      request: 1000\n    domains:\n      request:\n{entries}"
    )));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad.yaml:6: [too-many] request: the request list has 201 entries"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn the_same_entry_in_two_lists_gets_two_lines() {
    let (code, out) = check(&app(concat!(
        "    domains:\n",                               // 3
        "      request:\n",                             // 4
        "        - http://x.com\n",                     // 5
        "      uploadFile: [https://ok.example.com,\n", // 6
        "        http://x.com]\n",                      // 7
    )));
    assert_eq!(code, 1, "{out}");
    assert!(
        out.contains("bad.yaml:5: [https-only] http://x.com: request list"),
        "{out}"
    );
    assert!(
        out.contains("bad.yaml:7: [https-only] http://x.com: uploadFile list"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 2, "{out}");
}

#[test]
fn repeated_text_elsewhere_does_not_move_a_finding() {
    let (code, out) = check(concat!(
        "proxy: {listen: nope}\n",           // 1
        "control:\n",                        // 2
        "  listen: nope\n",                  // 3
        "apps:\n",                           // 4
        "  - appid: wx0123456789abcdef\n",   // 5
        "    domains:\n",                    // 6
        "      request:\n",                  // 7
        "        - https://a.example.com\n", // 8
        "        - https://a.example.com\n", // 9: the duplicate
    ));
    assert_eq!(code, 1, "{out}");
    assert!(out.contains("bad.yaml:1: [listen] nope"), "{out}");
    assert!(out.contains("bad.yaml:3: [listen] nope"), "{out}");
    assert!(
        out.contains("bad.yaml:9: [duplicate] https://a.example.com"),
        "{out}"
    );
}
