//! Real networks, real tools: a small world of network namespaces, built and always torn down by
//! this test, in which the built `wxsandbox` binary serves phones with real addresses.
//!
//! ```text
//!   iphone 192.168.77.23 ─┐                      ┌─ proxy 192.168.77.1 (wxsandbox; control on 127.0.0.1)
//!  android 192.168.77.24 ─┼── lan (bridge br0) ──┤      ├─ 10.88.0.1 ── compose 10.88.0.2:8080 (HTTP backend)
//!      dev 192.168.77.40 ─┘                      │      └─ 192.168.78.1 ── outside 192.168.78.9
//! ```
//!
//! No namespace has a default route or a link to the machine's own namespace: every veth pair is
//! made with both ends inside namespaces of this world (checked before a byte is sent). Each
//! namespace is named `wxs-<pid>-<role>`; leftovers of earlier runs whose process is gone are
//! removed first, and a Drop guard kills every process left in the world and deletes it.
//!
//! Skips (prints why, and passes) when not root or when `ip netns` does not work here.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const APPID: &str = "wx0123456789abcdef";
const OTHER_APPID: &str = "wxfedcba9876543210";
const PROXY: &str = "192.168.77.1:8080";
const CONTROL: &str = "127.0.0.1:8081";
const IPHONE: &str = "192.168.77.23";
const ANDROID: &str = "192.168.77.24";
const DEVICE: &str = "192.168.77.40";
const COMPOSE: &str = "10.88.0.2";
const OUTSIDE: &str = "192.168.78.9";
const REFERER: &str = "https://servicewechat.com/wx0123456789abcdef/devtools/page-frame.html";
/// Every wait of this test is bounded by this.
const WAIT: Duration = Duration::from_secs(20);

/// The tiny servers of the world: `http HOST PORT NAME` answers every GET with the request's
/// headers, one per line (as traefik/whoami does); `echo HOST PORT` echoes each connection's
/// bytes until the first newline, then closes. Both exit by themselves after 150 s.
const HELPER: &str = r#"
import http.server, os, socket, sys, threading
threading.Timer(150, lambda: os._exit(0)).start()
role, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
if role == "http":
    name = sys.argv[4]
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        def do_GET(self):
            lines = ["Hostname: " + name, "GET " + self.path + " " + self.request_version]
            lines += [k + ": " + v for k, v in self.headers.items()]
            body = ("\n".join(lines) + "\n").encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        def log_message(self, *args):
            pass
    server = http.server.ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True
    server.serve_forever()
else:
    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind((host, port))
    listener.listen(16)
    def serve(conn):
        conn.settimeout(10)
        try:
            data = b""
            while b"\n" not in data:
                chunk = conn.recv(4096)
                if not chunk:
                    break
                conn.sendall(chunk)
                data += chunk
        except OSError:
            pass
        conn.close()
    while True:
        conn, _ = listener.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
"#;

/// A line on the real stderr (not captured by the test harness), so CI logs show it.
fn say(line: &str) {
    let _ = writeln!(std::io::stderr(), "{line}");
}

fn ip(args: &[&str]) -> Output {
    Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("ip runs")
}

/// `ip ARGS`, which must succeed.
fn ip_ok(args: &[&str]) {
    let out = ip(args);
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|v| v.split_whitespace().nth(1).map(|e| e == "0"))
        })
        .unwrap_or(false)
}

/// Namespaces named `wxs-<pid>-...` whose process is gone: kill what runs in them, delete them.
fn remove_leftovers() {
    let list = ip(&["netns", "list"]);
    for line in String::from_utf8_lossy(&list.stdout).lines() {
        let name = line.split_whitespace().next().unwrap_or("");
        let Some(pid) = name
            .strip_prefix("wxs-")
            .and_then(|r| r.split('-').next())
            .and_then(|p| p.parse::<u32>().ok())
        else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            say(&format!("netns: removing leftover namespace {name}"));
            kill_all_in(name);
            let _ = ip(&["netns", "del", name]);
        }
    }
}

/// SIGKILL every process inside namespace `ns` (only ever one this test made).
fn kill_all_in(ns: &str) {
    let pids = ip(&["netns", "pids", ns]);
    for pid in String::from_utf8_lossy(&pids.stdout).split_whitespace() {
        if pid.bytes().all(|b| b.is_ascii_digit()) {
            let _ = Command::new("kill").args(["-KILL", pid]).output();
        }
    }
}

/// The namespaces of the world, its processes and files; dropped = gone.
struct World {
    prefix: String,
    namespaces: Vec<String>,
    children: Vec<(String, Child)>,
    dir: tempfile::TempDir,
    proxy_log: PathBuf,
}

impl World {
    fn ns(&self, role: &str) -> String {
        format!("{}{role}", self.prefix)
    }

    fn add_ns(&mut self, role: &str) {
        let name = self.ns(role);
        ip_ok(&["netns", "add", &name]);
        self.namespaces.push(name.clone());
        ip_ok(&["-n", &name, "link", "set", "lo", "up"]);
    }

    /// A veth pair with one end `a_if` in `a` and the other `b_if` in `b`, both made inside
    /// the namespaces (never in the machine's own).
    fn veth(&self, a: &str, a_if: &str, b: &str, b_if: &str) {
        let (a, b) = (self.ns(a), self.ns(b));
        ip_ok(&[
            "-n", &a, "link", "add", a_if, "type", "veth", "peer", "name", b_if, "netns", &b,
        ]);
        ip_ok(&["-n", &a, "link", "set", a_if, "up"]);
        ip_ok(&["-n", &b, "link", "set", b_if, "up"]);
    }

    fn addr(&self, role: &str, cidr: &str, dev: &str) {
        ip_ok(&["-n", &self.ns(role), "addr", "add", cidr, "dev", dev]);
    }

    /// A command run inside namespace `role`.
    fn exec(&self, role: &str, program: &str) -> Command {
        let mut c = Command::new("ip");
        c.args(["netns", "exec", &self.ns(role), program]);
        for var in [
            "http_proxy",
            "https_proxy",
            "HTTP_PROXY",
            "HTTPS_PROXY",
            "ALL_PROXY",
            "all_proxy",
            "NO_PROXY",
            "no_proxy",
        ] {
            c.env_remove(var);
        }
        c.stdin(Stdio::null());
        c
    }

    fn spawn(&mut self, what: &str, mut command: Command) {
        let child = command.spawn().unwrap_or_else(|e| panic!("{what}: {e}"));
        self.children.push((what.to_owned(), child));
    }

    /// curl inside namespace `role`, bounded; its exit code, the HTTP status, the CONNECT
    /// status and the output (headers with `-D -`, then the body).
    fn curl(&self, role: &str, args: &[&str]) -> Curl {
        let out = self
            .exec(role, "curl")
            .args(["-sS", "-m", "10", "--connect-timeout", "5"])
            .args(args)
            .args(["-w", "\nWXS %{http_code} %{http_connect}\n"])
            .output()
            .expect("curl runs");
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let (body, tail) = stdout.rsplit_once("\nWXS ").unwrap_or((&stdout, "000 000"));
        let mut codes = tail.split_whitespace();
        let mut code = || codes.next().and_then(|c| c.parse().ok()).unwrap_or(0);
        Curl {
            exit: out.status.code().unwrap_or(-1),
            status: code(),
            connect: code(),
            out: body.to_owned(),
            err: String::from_utf8_lossy(&out.stderr).into_owned(),
        }
    }

    /// Everything this world started is killed and waited for, and its namespaces deleted.
    /// Idempotent.
    fn teardown(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.children.clear();
        for ns in self.namespaces.drain(..).rev() {
            kill_all_in(&ns);
            let _ = ip(&["netns", "del", &ns]);
        }
    }

    fn proxy_log(&self) -> String {
        std::fs::read_to_string(&self.proxy_log).unwrap_or_default()
    }
}

impl Drop for World {
    fn drop(&mut self) {
        if std::thread::panicking() {
            say(&format!("netns: proxy log:\n{}", self.proxy_log()));
        }
        self.teardown();
    }
}

#[derive(Debug)]
struct Curl {
    exit: i32,
    status: u16,
    connect: u16,
    out: String,
    err: String,
}

impl Curl {
    fn header(&self, name: &str) -> Option<&str> {
        self.out.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim().eq_ignore_ascii_case(name).then(|| v.trim())
        })
    }
}

/// Why the world can't be built here, or `None` when it can.
fn unavailable(prefix: &str) -> Option<String> {
    if !is_root() {
        return Some("not root".to_owned());
    }
    let probe = format!("{prefix}probe");
    match Command::new("ip").args(["netns", "add", &probe]).output() {
        Ok(out) if out.status.success() => {
            let _ = ip(&["netns", "del", &probe]);
            None
        }
        Ok(out) => Some(format!(
            "`ip netns add` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )),
        Err(e) => Some(format!("`ip` can't run: {e}")),
    }
}

/// The links of a namespace (names without `@peer`) and their details.
fn links(ns: &str) -> Vec<(String, String)> {
    let out = ip(&["-n", ns, "-d", "-o", "link", "show"]);
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            let name = l.split(": ").nth(1)?.split('@').next()?.to_owned();
            Some((name, l.to_owned()))
        })
        .collect()
}

fn build_world(prefix: &str) -> World {
    let dir = tempfile::tempdir().unwrap();
    let proxy_log = dir.path().join("proxy.log");
    let mut w = World {
        prefix: prefix.to_owned(),
        namespaces: Vec::new(),
        children: Vec::new(),
        dir,
        proxy_log,
    };
    for role in [
        "lan", "proxy", "iphone", "android", "dev", "compose", "outside",
    ] {
        w.add_ns(role);
    }
    ip_ok(&["-n", &w.ns("lan"), "link", "add", "br0", "type", "bridge"]);
    ip_ok(&["-n", &w.ns("lan"), "link", "set", "br0", "up"]);
    for (role, addr) in [
        ("proxy", "192.168.77.1/24"),
        ("iphone", "192.168.77.23/24"),
        ("android", "192.168.77.24/24"),
        ("dev", "192.168.77.40/24"),
    ] {
        let port = format!("p-{role}");
        w.veth("lan", &port, role, "eth0");
        ip_ok(&["-n", &w.ns("lan"), "link", "set", &port, "master", "br0"]);
        w.addr(role, addr, "eth0");
    }
    w.veth("proxy", "to-compose", "compose", "eth0");
    w.addr("proxy", "10.88.0.1/24", "to-compose");
    w.addr("compose", "10.88.0.2/24", "eth0");
    w.veth("proxy", "to-outside", "outside", "eth0");
    w.addr("proxy", "192.168.78.1/24", "to-outside");
    w.addr("outside", &format!("{OUTSIDE}/24"), "eth0");
    ip_ok(&[
        "-n",
        &w.ns("outside"),
        "route",
        "add",
        "192.168.77.0/24",
        "via",
        "192.168.78.1",
    ]);
    w
}

/// Before a byte is sent: no default route anywhere, and each namespace has exactly lo and the
/// links this test made, every veth's peer inside this world.
fn check_isolation(w: &World) {
    let expected: [(&str, &[&str]); 7] = [
        (
            "lan",
            &["lo", "br0", "p-proxy", "p-iphone", "p-android", "p-dev"],
        ),
        ("proxy", &["lo", "eth0", "to-compose", "to-outside"]),
        ("iphone", &["lo", "eth0"]),
        ("android", &["lo", "eth0"]),
        ("dev", &["lo", "eth0"]),
        ("compose", &["lo", "eth0"]),
        ("outside", &["lo", "eth0"]),
    ];
    for (role, want) in expected {
        let ns = w.ns(role);
        for family in ["-4", "-6"] {
            let routes = ip(&[family, "-n", &ns, "route", "show", "table", "all"]);
            let text = String::from_utf8_lossy(&routes.stdout);
            assert!(
                !text.lines().any(|l| l.starts_with("default")),
                "{ns} has a default route ({family}):\n{text}"
            );
        }
        let found = links(&ns);
        let mut names: Vec<&str> = found.iter().map(|(n, _)| n.as_str()).collect();
        names.sort_unstable();
        let mut want = want.to_vec();
        want.sort_unstable();
        assert_eq!(names, want, "links of {ns}");
        for (name, detail) in &found {
            if detail.contains(" veth ") || detail.contains("veth ") {
                assert!(
                    detail.contains(&format!("link-netns {}", w.prefix)),
                    "{ns}: {name} is a veth whose peer is not in this world: {detail}"
                );
            } else {
                assert!(
                    name == "lo" || name == "br0",
                    "{ns}: unexpected link {detail}"
                );
            }
        }
    }
}

fn wait_until(what: &str, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while Instant::now() < deadline {
        if ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("{what} never became ready");
}

fn start_services(w: &mut World) -> PathBuf {
    let helper = w.dir.path().join("helper.py");
    std::fs::write(&helper, HELPER).unwrap();
    let helper = helper.to_str().unwrap().to_owned();
    let python = |w: &mut World, role: &str, args: &[&str]| {
        let mut c = w.exec(role, "python3");
        c.arg(&helper)
            .args(args)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        w.spawn(&format!("{role} {}", args[0]), c);
    };
    python(w, "dev", &["http", DEVICE, "8000", "lan-device"]);
    python(w, "dev", &["echo", DEVICE, "9000"]);
    python(w, "compose", &["http", COMPOSE, "8080", "compose-backend"]);

    let ca_dir = w.dir.path().join("ca");
    let config = w.dir.path().join("netns.yaml");
    std::fs::write(
        &config,
        format!(
            "proxy: {{listen: {PROXY}, clients: [192.168.77.0/24]}}\n\
             control: {{listen: {CONTROL}}}\n\
             ca: {{dir: {ca}}}\n\
             upstream:\n  map:\n    api.example.com: http://{COMPOSE}:8080\n\
             sandbox: {{lan_prefix: 24}}\n\
             apps:\n\
             \x20 - appid: {APPID}\n    version: devtools\n    clients: [{ANDROID}/32]\n    domains:\n      request: [https://api.example.com]\n\
             \x20 - appid: {OTHER_APPID}\n    version: devtools\n    domains:\n      request: [https://api.example.com]\n",
            ca = ca_dir.display()
        ),
    )
    .unwrap();
    let log = std::fs::File::create(&w.proxy_log).unwrap();
    let mut proxy = w.exec("proxy", env!("CARGO_BIN_EXE_wxsandbox"));
    proxy
        .args(["run", "-c", config.to_str().unwrap()])
        .args(["--listen", PROXY, "--control", CONTROL])
        .stdout(Stdio::null())
        .stderr(log);
    w.spawn("wxsandbox", proxy);

    wait_until("the proxy", || {
        w.curl("proxy", &["-f", &format!("http://{CONTROL}/healthz")])
            .exit
            == 0
    });
    wait_until("the LAN device", || {
        w.curl("proxy", &[&format!("http://{DEVICE}:8000/")]).status == 200
    });
    wait_until("the compose backend", || {
        w.curl("proxy", &[&format!("http://{COMPOSE}:8080/")])
            .status
            == 200
    });
    wait_until("the TCP echo", || {
        let echo = w
            .exec("proxy", "timeout")
            .args([
                "5",
                "bash",
                "-c",
                &format!("exec 3<>/dev/tcp/{DEVICE}/9000 && echo ping >&3 && head -c 5 <&3"),
            ])
            .output()
            .unwrap();
        echo.stdout == b"ping\n"
    });
    ca_dir.join("wxsandbox-ca.pem")
}

#[test]
fn phones_on_a_real_lan() {
    let started = Instant::now();
    let prefix = format!("wxs-{}-", std::process::id());
    if let Some(why) = unavailable(&prefix) {
        say(&format!(
            "netns: skipped: {why} (the network namespace world needs root and `ip netns`)"
        ));
        return;
    }
    remove_leftovers();
    let links_before = links_of_host();
    let mut w = build_world(&prefix);
    check_isolation(&w);
    let ca = start_services(&mut w);
    let ca_arg = ca.to_str().unwrap().to_owned();
    let iphone_proxy = format!("http://{APPID}:x@{PROXY}");
    let android_proxy = format!("http://{PROXY}");
    let answer = "X-Wxsandbox-Refusal: answer";

    // An allowed HTTPS call from the iPhone reaches the compose backend through upstream.map,
    // with the servicewechat Referer.
    let r = w.curl(
        "iphone",
        &[
            "-x",
            &iphone_proxy,
            "--cacert",
            &ca_arg,
            "https://api.example.com/v1/user",
        ],
    );
    assert_eq!((r.exit, r.status), (0, 200), "{r:?}");
    assert!(r.out.contains("Hostname: compose-backend"), "{r:?}");
    assert!(r.out.contains(&format!("Referer: {REFERER}")), "{r:?}");
    assert!(r.out.contains("GET /v1/user"), "{r:?}");

    // The LAN device: plain http (absolute form) and raw TCP through a CONNECT tunnel.
    let r = w.curl(
        "iphone",
        &["-x", &iphone_proxy, &format!("http://{DEVICE}:8000/lan")],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.out.contains("Hostname: lan-device"), "{r:?}");
    assert!(r.out.contains(&format!("Referer: {REFERER}")), "{r:?}");
    let r = w.curl(
        "iphone",
        &[
            "-p",
            "-x",
            &iphone_proxy,
            &format!("gopher://{DEVICE}:9000/_hello%20lan"),
        ],
    );
    assert_eq!((r.exit, r.connect), (0, 200), "{r:?}");
    assert!(
        r.out.contains("hello lan"),
        "TCP echo through CONNECT: {r:?}"
    );

    // The phone's own address and 127.0.0.1: refused, inside tunnels and at the CONNECT.
    for url in [
        format!("http://{IPHONE}:8000/"),
        "http://127.0.0.1:8000/".to_owned(),
    ] {
        let r = w.curl(
            "iphone",
            &["-D", "-", "-x", &iphone_proxy, "-H", answer, &url],
        );
        assert_eq!(r.status, 403, "{url}: {r:?}");
        assert_eq!(r.header("x-wxsandbox-rule"), Some("domain-list"), "{r:?}");
    }
    for url in [
        format!("https://{IPHONE}/"),
        "https://127.0.0.1/".to_owned(),
    ] {
        let r = w.curl(
            "iphone",
            &["-D", "-", "-x", &iphone_proxy, "--cacert", &ca_arg, &url],
        );
        assert_eq!(r.connect, 403, "{url}: {r:?}");
        assert_eq!(r.header("x-wxsandbox-rule"), Some("domain-list"), "{r:?}");
    }

    // The Android phone sends no credentials: its address names the app. The iPhone without
    // credentials can't be told apart (two apps): 407.
    let r = w.curl(
        "android",
        &[
            "-x",
            &android_proxy,
            "--cacert",
            &ca_arg,
            "https://api.example.com/android",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.out.contains(&format!("Referer: {REFERER}")), "{r:?}");
    let r = w.curl(
        "iphone",
        &[
            "-D",
            "-",
            "-x",
            &android_proxy,
            "--cacert",
            &ca_arg,
            "-H",
            answer,
            "https://api.example.com/",
        ],
    );
    assert_eq!(r.status, 407, "{r:?}");
    assert_eq!(r.header("x-wxsandbox-rule"), Some("appid"), "{r:?}");

    // The install page from a phone, and the CA it serves is the proxy's.
    let r = w.curl("android", &["-x", &android_proxy, "http://wxsandbox.cert/"]);
    assert_eq!(r.status, 200, "{r:?}");
    assert!(r.out.contains("wxsandbox CA"), "{r:?}");
    let r = w.curl(
        "iphone",
        &["-x", &iphone_proxy, "http://wxsandbox.cert/ca.pem"],
    );
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.out.trim(), std::fs::read_to_string(&ca).unwrap().trim());

    // The control port: not listening on the LAN, and never reached through the proxy.
    let r = w.curl("iphone", &["http://192.168.77.1:8081/api/state"]);
    assert_eq!(
        r.exit, 7,
        "the control port must refuse a phone's connection: {}",
        r.err
    );
    let r = w.curl(
        "iphone",
        &[
            "-D",
            "-",
            "-x",
            &iphone_proxy,
            "-H",
            answer,
            &format!("http://{CONTROL}/api/state"),
        ],
    );
    assert_eq!(r.status, 403, "{r:?}");
    assert_eq!(r.header("x-wxsandbox-rule"), Some("domain-list"), "{r:?}");
    assert!(!r.out.contains("skip_domain_check"), "{r:?}");

    // docker/e2e.sh's checks, run from the iPhone against this world's proxy.
    e2e_from_iphone(&w, &iphone_proxy);

    // Two phones of one app: the iPhone goes to the background, the Android stays in front.
    let r = w.curl(
        "proxy",
        &[
            "-X",
            "POST",
            &format!("http://{CONTROL}/api/apps/{APPID}/background?client={IPHONE}"),
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let r = w.curl(
        "iphone",
        &[
            "-D",
            "-",
            "-x",
            &iphone_proxy,
            "--cacert",
            &ca_arg,
            "-H",
            answer,
            "https://api.example.com/",
        ],
    );
    assert_eq!(r.status, 503, "{r:?}");
    assert_eq!(r.header("x-wxsandbox-rule"), Some("background"), "{r:?}");
    let r = w.curl(
        "android",
        &[
            "-x",
            &android_proxy,
            "--cacert",
            &ca_arg,
            "https://api.example.com/",
        ],
    );
    assert_eq!(r.status, 200, "{r:?}");
    let state = w.curl("proxy", &[&format!("http://{CONTROL}/api/state")]);
    let state: serde_json::Value = serde_json::from_str(&state.out).unwrap();
    let instances = state["apps"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["appid"] == APPID)
        .unwrap()["instances"]
        .as_array()
        .unwrap()
        .clone();
    let phase_of = |client: &str| {
        instances
            .iter()
            .find(|i| i["client"] == client)
            .map(|i| i["state"].as_str().unwrap_or("").to_owned())
    };
    assert_eq!(phase_of(IPHONE).as_deref(), Some("background"), "{state}");
    assert_eq!(phase_of(ANDROID).as_deref(), Some("foreground"), "{state}");

    // The outside host is not in proxy.clients: its connection is closed at accept.
    let r = w.curl(
        "outside",
        &[
            "-x",
            &android_proxy,
            "--cacert",
            &ca_arg,
            "https://api.example.com/",
        ],
    );
    assert!(
        r.status == 0 && r.connect == 0 && matches!(r.exit, 52 | 56),
        "the outside host must be connected, then closed without an answer: {r:?}"
    );

    // The call log saw the raw TCP socket to the LAN device, and each phone as its own client.
    let log = w.curl("proxy", &[&format!("http://{CONTROL}/api/log?limit=100")]);
    let log: serde_json::Value = serde_json::from_str(&log.out).unwrap();
    let records = log.as_array().unwrap();
    assert!(
        records.iter().any(|r| r["api"] == "tcp"
            && r["outcome"] == "ok"
            && r["client"] == IPHONE
            && r["url"]
                .as_str()
                .unwrap_or("")
                .contains("192.168.77.40:9000")),
        "no TCP record: {log}"
    );
    assert!(
        records
            .iter()
            .any(|r| r["client"] == ANDROID && r["appid"] == APPID && r["outcome"] == "ok"),
        "no Android record: {log}"
    );

    // The proxy stops on SIGTERM with status 0; then the world goes.
    let pid = w
        .children
        .iter()
        .find(|(what, _)| what == "wxsandbox")
        .map(|(_, c)| c.id())
        .unwrap();
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .output();
    let (_, mut proxy) = w
        .children
        .iter()
        .position(|(what, _)| what == "wxsandbox")
        .map(|i| w.children.remove(i))
        .unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = proxy.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the proxy did not stop on SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "proxy exit: {status}");
    let pids: Vec<u32> = w.children.iter().map(|(_, c)| c.id()).collect();
    w.teardown();
    let left = String::from_utf8_lossy(&ip(&["netns", "list"]).stdout).into_owned();
    assert!(!left.contains(&prefix), "namespaces left: {left}");
    for pid in pids {
        assert!(
            !Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} left"
        );
    }
    assert_eq!(links_of_host(), links_before, "the machine's links changed");
    say(&format!(
        "netns: the namespace world passed in {:.1}s",
        started.elapsed().as_secs_f64()
    ));
}

/// The machine's own links, by name.
fn links_of_host() -> Vec<String> {
    let out = ip(&["-o", "link", "show"]);
    let mut names: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| Some(l.split(": ").nth(1)?.split('@').next()?.to_owned()))
        .collect();
    names.sort();
    names
}

/// `docker/e2e.sh` against the running world (no Docker): from the iPhone's namespace.
fn e2e_from_iphone(w: &World, proxy: &str) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("docker/e2e.sh");
    let out = w
        .exec("iphone", "timeout")
        .args(["60", "bash"])
        .arg(&script)
        .env("E2E_PROXY", proxy)
        .env("E2E_APPID", APPID)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("e2e: ok"),
        "docker/e2e.sh against the world: {}\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}
