//! Table-driven tests of the pure policy: every rule, every URL/app refusal row, the edge cases.

use std::net::IpAddr;

use super::*;
use crate::config::{
    parse_entry, AppConfig, Config, DomainLists, Limits, ListKind, NetworkTimeout,
};

const APPID: &str = "wx0123456789abcdef";

fn app(request: &[&str], socket: &[&str], download: &[&str], tcp: &[&str]) -> AppConfig {
    let list = |entries: &[&str], kind| {
        entries
            .iter()
            .map(|e| parse_entry(e, kind).unwrap())
            .collect()
    };
    AppConfig {
        appid: APPID.to_owned(),
        id: APPID.into(),
        version: "devtools".to_owned(),
        project: None,
        clients: vec![],
        network_timeout: NetworkTimeout::default(),
        domains: DomainLists {
            request: list(request, ListKind::Https),
            socket: list(socket, ListKind::Wss),
            upload_file: vec![],
            download_file: list(download, ListKind::Https),
            tcp: list(tcp, ListKind::Tcp),
            udp: vec![],
            dns_prefetch: vec![],
        },
        business_domains: vec![],
        limits: Limits::default(),
        refusal: None,
        referer: http::HeaderValue::from_static(
            "https://servicewechat.com/wx0123456789abcdef/devtools/page-frame.html",
        ),
    }
}

fn standard() -> AppConfig {
    app(
        &[
            "https://api.example.com",
            "https://port.example.com:8443",
            "https://a.com",
            "https://xn--fiqs8s.cn",
        ],
        &["wss://ws.example.com"],
        &["https://cdn.example.com"],
        &[
            "tcp.example.com:7000",
            "db.example.com:3306",
            "any.example.com",
        ],
    )
}

const SWITCHES: Switches = Switches {
    skip_domain_check: false,
    lan_prefix: 24,
};
const SKIP: Switches = Switches {
    skip_domain_check: true,
    lan_prefix: 24,
};

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// (rule, status, errno, errMsg) of a verdict, or None for Allow.
fn verdict(
    app: &AppConfig,
    client: &str,
    api: Api,
    url: &str,
    method: &str,
    sw: Switches,
) -> Option<(Rule, u16, i64, String, String)> {
    match judge(
        app,
        &Call {
            client: ip(client),
            api,
            url,
            method,
        },
        sw,
    ) {
        Verdict::Allow => None,
        Verdict::Refuse(r) => Some((r.rule, r.status, r.errno, r.errmsg, r.detail)),
    }
}

mod judge {
    use super::*;

    const PHONE: &str = "192.168.1.20";

    #[test]
    fn allows_and_refuses_by_the_domain_lists() {
        let a = standard();
        let allowed: &[(Api, &str)] = &[
            (Api::Request, "https://api.example.com/v1/user?id=1#frag"),
            (Api::Request, "https://API.Example.COM/"),
            (Api::Request, "https://api.example.com./trailing-dot"),
            (Api::Request, "https://port.example.com:8443/x"),
            (Api::Request, "https://user:pw@api.example.com/"),
            (Api::Request, "https://中国.cn/"),
            (Api::ConnectSocket, "wss://ws.example.com/chat"),
            (Api::ConnectSocket, "wss://ws.example.com:9443/chat"),
            (Api::DownloadFile, "https://cdn.example.com/file.zip"),
            (Api::Tcp, "tcp://tcp.example.com:7000"),
            (Api::Tcp, "tcp://any.example.com:7777"),
        ];
        for (api, url) in allowed {
            assert_eq!(
                verdict(&a, PHONE, *api, url, "GET", SWITCHES),
                None,
                "{api:?} {url}"
            );
        }
        let refused: &[(Api, &str, Rule, &str)] = &[
            (
                Api::Request,
                "https://api.example.com:443/v1",
                Rule::DomainList,
                "matches only URLs without a port",
            ),
            (
                Api::Request,
                "https://port.example.com/x",
                Rule::DomainList,
                "matches only port 8443",
            ),
            (
                Api::Request,
                "https://port.example.com:9443/x",
                Rule::DomainList,
                "matches only port 8443",
            ),
            (
                Api::Request,
                "http://api.example.com/",
                Rule::DomainList,
                "https only",
            ),
            (
                Api::Request,
                "https://sub.a.com/",
                Rule::DomainList,
                "parent domains don't cover subdomains",
            ),
            (
                Api::Request,
                "https://other.example.org/",
                Rule::DomainList,
                "is not in the request list",
            ),
            (
                Api::Request,
                "https://cdn.example.com/",
                Rule::DomainList,
                "request list",
            ),
            (
                Api::UploadFile,
                "https://api.example.com/",
                Rule::DomainList,
                "the uploadFile list is empty",
            ),
            (
                Api::ConnectSocket,
                "ws://ws.example.com/",
                Rule::DomainList,
                "wss only",
            ),
            (
                Api::ConnectSocket,
                "wss://api.example.com/",
                Rule::DomainList,
                "socket list",
            ),
            (
                Api::Tcp,
                "tcp://tcp.example.com:7005",
                Rule::DomainList,
                "matches only port 7000",
            ),
            (Api::Tcp, "tcp://db.example.com:3306", Rule::TcpPort, "3306"),
            (
                Api::Tcp,
                "tcp://any.example.com:80",
                Rule::TcpPort,
                "port 80",
            ),
            (
                Api::Tcp,
                "tcp://any.example.com:8050",
                Rule::TcpPort,
                "8050",
            ),
        ];
        for (api, url, rule, detail) in refused {
            let (got, status, errno, errmsg, got_detail) =
                verdict(&a, PHONE, *api, url, "GET", SWITCHES)
                    .unwrap_or_else(|| panic!("{url} allowed"));
            assert_eq!((got, status, errno), (*rule, 403, 600002), "{url}");
            assert_eq!(
                errmsg,
                format!("{}:fail url not in domain list", api.errmsg_name()),
                "{url}"
            );
            assert!(got_detail.contains(detail), "{url}: {got_detail}");
        }
    }

    #[test]
    fn invalid_urls_schemes_and_methods_are_400_600009() {
        let a = standard();
        for (api, url, method) in [
            (Api::Request, "/relative/path", "GET"),
            (Api::Request, "xxxhttps://api.example.com/", "GET"),
            (Api::Request, "ftp://api.example.com/", "GET"),
            (Api::Request, "https://[::1/nohost", "GET"),
            (Api::Request, "https://api.example.com:99999/", "GET"),
            (Api::Request, "https://[::1/", "GET"),
            (Api::Request, "wss://ws.example.com/", "GET"),
            (Api::ConnectSocket, "https://ws.example.com/", "GET"),
        ] {
            let (rule, status, errno, errmsg, _) =
                verdict(&a, PHONE, api, url, method, SWITCHES).unwrap();
            assert_eq!(
                (rule, status, errno),
                (Rule::InvalidUrl, 400, 600009),
                "{url}"
            );
            assert_eq!(
                errmsg,
                format!("{}:fail invalid url \"{url}\"", api.errmsg_name())
            );
        }
        let (rule, status, errno, errmsg, _) = verdict(
            &a,
            PHONE,
            Api::Request,
            "https://api.example.com/",
            "PATCH",
            SWITCHES,
        )
        .unwrap();
        assert_eq!(
            (rule, status, errno, errmsg.as_str()),
            (
                Rule::InvalidUrl,
                400,
                600009,
                "request:fail method is invalid"
            )
        );
        assert_eq!(
            verdict(
                &a,
                PHONE,
                Api::Request,
                "https://api.example.com/",
                "options",
                SWITCHES
            ),
            None
        );
    }

    #[test]
    fn api_weixin_qq_com_is_refused_even_with_the_skip_switch() {
        let a = standard();
        for sw in [SWITCHES, SKIP] {
            for url in [
                "https://api.weixin.qq.com/cgi-bin/token",
                "https://API.WEIXIN.QQ.COM./sns",
            ] {
                let (rule, status, errno, _, _) =
                    verdict(&a, PHONE, Api::Request, url, "GET", sw).unwrap();
                assert_eq!((rule, status, errno), (Rule::ForbiddenHost, 403, 600002));
            }
        }
    }

    #[test]
    fn the_lan_rule() {
        let a = standard();
        let cases: &[(&str, &str, bool)] = &[
            (PHONE, "http://192.168.1.30:8080/api", true),
            (PHONE, "ws://192.168.1.30:8080/ws", true),
            (PHONE, "https://192.168.1.1/", true),
            (PHONE, "http://192.168.1.20/", false), // its own address
            (PHONE, "http://192.168.2.30/", false), // another subnet
            (PHONE, "http://127.0.0.1:8080/", false), // loopback seen from a phone
            (PHONE, "http://[fe80::1]/", false),    // IPv6 literals
            (PHONE, "http://localhost:8080/", false),
            (PHONE, "http://dev.localhost/", false),
            ("127.0.0.2", "http://127.0.0.1:8080/", true), // a simulator and its host
            ("::ffff:192.168.1.20", "http://192.168.1.30/", true), // a v4-mapped client
            ("fe80::2", "http://192.168.1.30/", false),
        ];
        for (client, url, allowed) in cases {
            let api = if url.starts_with("ws") {
                Api::ConnectSocket
            } else {
                Api::Request
            };
            let got = verdict(&a, client, api, url, "GET", SWITCHES);
            assert_eq!(got.is_none(), *allowed, "{client} -> {url}: {got:?}");
            if let Some((rule, status, errno, _, _)) = got {
                assert_eq!((rule, status, errno), (Rule::DomainList, 403, 600002));
            }
        }
        // The prefix is configurable.
        let wide = Switches {
            skip_domain_check: false,
            lan_prefix: 16,
        };
        assert_eq!(
            verdict(&a, PHONE, Api::Request, "http://192.168.7.1/", "GET", wide),
            None
        );
        // TCP to a LAN neighbour still can't use a forbidden port.
        let (rule, ..) = verdict(
            &a,
            PHONE,
            Api::Tcp,
            "tcp://192.168.1.30:6379",
            "CONNECT",
            SWITCHES,
        )
        .unwrap();
        assert_eq!(rule, Rule::TcpPort);
        assert_eq!(
            verdict(
                &a,
                PHONE,
                Api::Tcp,
                "tcp://192.168.1.30:9000",
                "CONNECT",
                SWITCHES
            ),
            None
        );
    }

    #[test]
    fn the_skip_switch_skips_rules_3_and_4_only() {
        let a = standard();
        for url in [
            "https://unlisted.example/",
            "http://1.2.3.4/",
            "http://localhost/",
            "https://api.example.com:443/",
        ] {
            assert_eq!(
                verdict(&a, PHONE, Api::Request, url, "GET", SKIP),
                None,
                "{url}"
            );
        }
        assert!(
            verdict(&a, PHONE, Api::Request, "ftp://x/", "GET", SKIP).is_some(),
            "rule 1 still applies"
        );
    }

    #[test]
    fn ip_refusals_say_why() {
        let a = standard();
        let (_, _, _, _, detail) = verdict(
            &a,
            PHONE,
            Api::Request,
            "http://192.168.1.20/",
            "GET",
            SWITCHES,
        )
        .unwrap();
        assert!(detail.contains("own address"), "{detail}");
        let (_, _, _, _, detail) =
            verdict(&a, PHONE, Api::Request, "http://8.8.8.8/", "GET", SWITCHES).unwrap();
        assert!(detail.contains("outside the client's /24"), "{detail}");
    }
}

/// A tunnel's upstream connection opened before its first call: only where an HTTPS call of
/// the app could go.
#[test]
fn opens_ahead_only_where_an_https_call_could_go() {
    let a = standard();
    for (host, port, sw, ahead) in [
        ("api.example.com", 443, SWITCHES, true),
        ("port.example.com", 8443, SWITCHES, true),
        ("cdn.example.com", 443, SWITCHES, true),
        ("api.example.com.", 443, SWITCHES, true),
        // Listed, but not with this port.
        ("api.example.com", 8443, SWITCHES, false),
        ("port.example.com", 443, SWITCHES, false),
        // Only in the socket or TCP lists: no HTTPS call goes there.
        ("ws.example.com", 443, SWITCHES, false),
        ("tcp.example.com", 7000, SWITCHES, false),
        ("unlisted.example", 443, SWITCHES, false),
        // Judged call by call (the LAN rule), never ahead.
        ("192.168.1.30", 443, SWITCHES, false),
        ("[::1]", 443, SKIP, false),
        ("127.0.0.1", 443, SKIP, false),
        // The skip switch opens any name but these.
        ("unlisted.example", 443, SKIP, true),
        ("localhost", 443, SKIP, false),
        ("api.weixin.qq.com", 443, SKIP, false),
        ("API.WEIXIN.QQ.COM.", 443, SKIP, false),
    ] {
        assert_eq!(
            super::may_open_ahead(&a, host, port, sw),
            ahead,
            "{host}:{port} skip={}",
            sw.skip_domain_check
        );
    }
}

mod judge_connect {
    use super::*;

    fn connect(app: &AppConfig, host: &str, port: u16, sw: Switches) -> Option<Rule> {
        match super::super::judge_connect(app, ip("192.168.1.20"), host, port, sw) {
            Verdict::Allow => None,
            Verdict::Refuse(r) => {
                assert_eq!((r.status, r.errno), (403, 600002));
                Some(r.rule)
            }
        }
    }

    #[test]
    fn allows_what_a_request_could_still_allow() {
        let a = standard();
        for (host, port) in [
            ("api.example.com", 443),
            ("API.example.com", 443),
            ("port.example.com", 8443),
            ("ws.example.com", 443),
            ("ws.example.com", 9443),
            ("cdn.example.com", 443),
            ("tcp.example.com", 7000),
            ("192.168.1.30", 8080),
            ("xn--fiqs8s.cn", 443),
        ] {
            assert_eq!(connect(&a, host, port, SWITCHES), None, "{host}:{port}");
        }
    }

    #[test]
    fn refuses_what_no_list_could_match() {
        let a = standard();
        for (host, port, rule) in [
            ("unlisted.example", 443, Rule::DomainList),
            ("api.example.com", 8443, Rule::DomainList),
            ("port.example.com", 443, Rule::DomainList),
            ("127.0.0.1", 8080, Rule::DomainList),
            ("[::1]", 443, Rule::DomainList),
            ("localhost", 443, Rule::DomainList),
            ("api.weixin.qq.com", 443, Rule::ForbiddenHost),
        ] {
            assert_eq!(
                connect(&a, host, port, SWITCHES),
                Some(rule),
                "{host}:{port}"
            );
        }
        assert_eq!(connect(&a, "unlisted.example", 443, SKIP), None);
        assert_eq!(
            connect(&a, "api.weixin.qq.com", 443, SKIP),
            Some(Rule::ForbiddenHost)
        );
    }
}

mod identify_app {
    use super::*;
    use base64::Engine;

    fn config(apps: Vec<AppConfig>) -> Config {
        let mut c = Config::from_yaml_str("", "t").unwrap();
        c.apps = apps;
        c
    }

    fn named(appid: &str, clients: &[&str]) -> AppConfig {
        let mut a = standard();
        a.appid = appid.to_owned();
        a.id = appid.into();
        a.clients = clients.iter().map(|c| c.parse().unwrap()).collect();
        a
    }

    fn basic(user: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:secret"))
        )
    }

    #[test]
    fn in_spec_order() {
        let one = "wx1111111111111111";
        let two = "wx2222222222222222";
        let c = config(vec![named(one, &[]), named(two, &["192.168.1.0/24"])]);
        fn hints<'a>(
            auth: Option<&'a str>,
            header: Option<&'a str>,
            referer: Option<&'a str>,
            client: &str,
        ) -> AppHints<'a> {
            AppHints {
                proxy_authorization: auth,
                tunnel_user: None,
                appid_header: header,
                referer,
                client: ip(client),
            }
        }
        let auth_one = basic(one);
        let id = |h: AppHints<'_>| identify_app(&c, &h).map(|a| a.appid.clone());
        assert_eq!(
            id(hints(Some(&auth_one), Some(two), None, "192.168.1.5")).as_deref(),
            Some(one)
        );
        assert_eq!(
            id(hints(None, Some(one), None, "192.168.1.5")).as_deref(),
            Some(one)
        );
        let referer = format!("https://servicewechat.com/{one}/0/page-frame.html");
        assert_eq!(
            id(hints(None, None, Some(&referer), "192.168.1.5")).as_deref(),
            Some(one)
        );
        assert_eq!(
            id(hints(None, None, None, "192.168.1.5")).as_deref(),
            Some(two),
            "clients CIDR"
        );
        assert_eq!(
            id(hints(None, None, None, "10.0.0.5")),
            None,
            "two apps, nothing names one"
        );
        assert_eq!(
            id(hints(None, Some("wx9999999999999999"), None, "192.168.1.5")),
            None,
            "named but unknown"
        );
        assert_eq!(
            id(hints(Some("Bearer x"), None, None, "192.168.1.5")).as_deref(),
            Some(two),
            "not Basic: ignored"
        );
        let only = config(vec![named(one, &[])]);
        let h = hints(None, None, None, "10.0.0.5");
        assert_eq!(
            identify_app(&only, &h).map(|a| a.appid.as_str()),
            Some(one),
            "the only app"
        );
    }

    #[test]
    fn unknown_app_is_407_600000() {
        let r = unknown_app(Api::Request, "https://x/");
        assert_eq!(
            (r.status, r.errno, r.errmsg.as_str(), r.rule),
            (407, 600000, "request:fail unknown appid", Rule::Appid)
        );
        let r = unknown_app(Api::ConnectSocket, "wss://x/");
        assert_eq!(r.errmsg, "createSocketTask:fail unknown appid");
    }
}

mod detect_api {
    use super::*;

    fn hints<'a>(
        ws: bool,
        header: Option<&'a str>,
        method: &'a str,
        ct: Option<&'a str>,
    ) -> ApiHints<'a> {
        ApiHints {
            is_websocket_upgrade: ws,
            api_header: header,
            method,
            content_type: ct,
        }
    }

    #[test]
    fn in_spec_order() {
        let a = standard();
        let u = "https://api.example.com/";
        assert_eq!(
            detect_api(&a, &hints(true, Some("request"), "GET", None), u),
            Api::ConnectSocket
        );
        assert_eq!(
            detect_api(&a, &hints(false, Some("uploadFile"), "GET", None), u),
            Api::UploadFile
        );
        assert_eq!(
            detect_api(&a, &hints(false, Some("downloadFile"), "GET", None), u),
            Api::DownloadFile
        );
        assert_eq!(
            detect_api(&a, &hints(false, Some("bogus"), "GET", None), u),
            Api::Request
        );
        let mp = Some("multipart/form-data; boundary=x");
        assert_eq!(
            detect_api(&a, &hints(false, None, "POST", mp), u),
            Api::UploadFile
        );
        assert_eq!(
            detect_api(&a, &hints(false, None, "PUT", mp), u),
            Api::Request
        );
        assert_eq!(
            detect_api(
                &a,
                &hints(false, None, "GET", None),
                "https://cdn.example.com/f"
            ),
            Api::DownloadFile
        );
        assert_eq!(
            detect_api(&a, &hints(false, None, "GET", None), u),
            Api::Request
        );
    }
}

mod refusal {
    use super::*;

    #[test]
    fn json_body_and_ascii_header() {
        let r = Refusal::charset(Api::Request, "https://a.com/", "bad".to_owned());
        let v: serde_json::Value = serde_json::from_str(&r.refusal_json(Some(APPID))).unwrap();
        for key in ["errMsg", "errno", "rule", "appid", "api", "url", "detail"] {
            assert!(v.get(key).is_some(), "{key} missing in {v}");
        }
        assert_eq!(v["errno"], 602302);
        assert_eq!(v["rule"], "charset");
        let mut r = r;
        r.errmsg = "request:fail 超时 100%".to_owned();
        assert_eq!(r.errmsg_header(), "request:fail %E8%B6%85%E6%97%B6 100%25");
        assert!(r.errmsg_header().is_ascii());
    }

    #[test]
    fn run_time_rows() {
        let rows = [
            (
                Refusal::background(Api::Request, "u"),
                503,
                600003,
                "request:fail interrupted",
                Rule::Background,
            ),
            (
                Refusal::interrupted(Api::UploadFile, "u", 5000),
                503,
                600003,
                "uploadFile:fail interrupted",
                Rule::Interrupted,
            ),
            (
                Refusal::concurrency(Api::Request, "u", 10),
                429,
                600007,
                "request:fail exceed max task count",
                Rule::Concurrency,
            ),
            (
                Refusal::socket_concurrency("u", 6, 5),
                429,
                600007,
                "createSocketTask:fail wcwss taskID=6 exceed max concurrent count",
                Rule::Concurrency,
            ),
            (
                Refusal::tcp_quota("tcp://u:9000", 20, 300_000, 1234),
                429,
                600007,
                "[TCPSocket] created too much.",
                Rule::TcpQuota,
            ),
            (
                Refusal::timeout(Api::DownloadFile, "u", 60000),
                504,
                5,
                "downloadFile:fail timeout",
                Rule::Timeout,
            ),
            (
                Refusal::net(
                    Api::Request,
                    "u",
                    Rule::Upstream,
                    &NetError {
                        code: -102,
                        name: "ERR_CONNECTION_REFUSED",
                        detail: String::new(),
                    },
                ),
                502,
                600001,
                "request:fail -102:net::ERR_CONNECTION_REFUSED",
                Rule::Upstream,
            ),
        ];
        for (r, status, errno, errmsg, rule) in rows {
            assert_eq!(
                (r.status, r.errno, r.errmsg.as_str(), r.rule),
                (status, errno, errmsg, rule)
            );
        }
    }

    #[test]
    fn tcp_quota_names_the_limit_the_window_and_the_wait() {
        let r = Refusal::tcp_quota("tcp://u:9000", 20, 300_000, 1234);
        assert_eq!((r.api, r.rule.as_str()), (Api::Tcp, "tcp-quota"));
        assert_eq!(
            r.detail,
            "20 TCP sockets were already created by this app instance in the last 5 minutes \
             (limits.tcp_per_5min); the next one can be created in 1234 ms"
        );
        for (window, text) in [
            (60_000, "last minute "),
            (2000, "last 2 s "),
            (300, "last 300 ms "),
        ] {
            let detail = Refusal::tcp_quota("u", 2, window, 1).detail;
            assert!(detail.contains(text), "{window}: {detail}");
        }
    }
}

mod decisions {
    use super::*;
    use crate::config::RefusalStyle::{Answer, Auto, Fail};
    use crate::policy::{
        call_timeout, hint_matches, is_preflight, normalize_target_host, parse_url, refusal_style,
        Style,
    };
    use std::time::Duration;

    #[test]
    fn refusal_style_call_then_app_then_global() {
        // (call header, carries X-Wxsandbox-*, app, global) -> style
        let rows: [(
            Option<&str>,
            bool,
            Option<crate::config::RefusalStyle>,
            _,
            Style,
        ); 10] = [
            (None, false, None, Auto, Style::Fail),
            (None, true, None, Auto, Style::Answer),
            (None, false, None, Answer, Style::Answer),
            (None, true, None, Fail, Style::Fail),
            (None, true, Some(Fail), Answer, Style::Fail),
            (None, false, Some(Answer), Fail, Style::Answer),
            (Some("fail"), true, Some(Answer), Answer, Style::Fail),
            (Some("answer"), true, Some(Fail), Fail, Style::Answer),
            (Some("ANSWER"), true, None, Fail, Style::Answer),
            // An unknown value is ignored: the app's choice stands.
            (Some("maybe"), true, Some(Fail), Answer, Style::Fail),
        ];
        for (call, carries, app, global, want) in rows {
            assert_eq!(
                refusal_style(call, carries, app, global),
                want,
                "{call:?} {carries} {app:?} {global:?}"
            );
        }
    }

    #[test]
    fn timeout_header_then_network_timeout_then_default() {
        let mut a = standard();
        a.network_timeout.request = Some(Duration::from_millis(1500));
        a.network_timeout.upload_file = Some(Duration::from_millis(2500));
        let rows = [
            (Some("3000"), Api::Request, 3000),
            (Some(" 40 "), Api::UploadFile, 40),
            (Some("soon"), Api::Request, 1500),
            (None, Api::Request, 1500),
            (None, Api::UploadFile, 2500),
            (None, Api::DownloadFile, 60_000),
            (None, Api::ConnectSocket, 60_000),
        ];
        for (header, api, ms) in rows {
            assert_eq!(
                call_timeout(header, &a, api),
                Duration::from_millis(ms),
                "{header:?} {api:?}"
            );
        }
    }

    #[test]
    fn preflight_is_options_with_request_method() {
        assert!(is_preflight("OPTIONS", true));
        assert!(is_preflight("options", true));
        assert!(!is_preflight("OPTIONS", false));
        assert!(!is_preflight("GET", true));
    }

    #[test]
    fn urls_parse_as_browsers_read_them() {
        // (url, host as judged, written port)
        let rows = [
            (
                "https://evil.example\\@api.example.com/",
                Some(("evil.example", None)),
            ),
            (
                "https://user:pw@api.example.com/",
                Some(("api.example.com", None)),
            ),
            (
                "https://api.example.com:443/",
                Some(("api.example.com", Some(443))),
            ),
            (
                "https://api.example.com:0443/x",
                Some(("api.example.com", Some(443))),
            ),
            ("https://API.Example.com./", Some(("api.example.com", None))),
            ("http://0x7f.1/", Some(("127.0.0.1", None))),
            ("https://[::1]:8443/", Some(("[::1]", Some(8443)))),
            ("wss://ws.example.com/chat", Some(("ws.example.com", None))),
            ("xx中文://bad", None),
            ("https://api.example.com../", None),
            ("https://", None),
            ("ftp://a.com/", None),
        ];
        for (text, want) in rows {
            let got = parse_url(text).map(|u| (u.host.to_string(), u.port));
            assert_eq!(got, want.map(|(h, p)| (h.to_owned(), p)), "{text}");
        }
    }

    #[test]
    fn hint_must_name_the_real_target() {
        let target = parse_url("https://api.example.com:443/").unwrap();
        let rows = [
            ("https://api.example.com/", true),
            ("https://api.example.com:443/v1", true),
            ("https://API.example.com./", true),
            ("https://api.example.com:8443/", false),
            ("http://api.example.com/", false),
            ("https://evil.example\\@api.example.com/", false),
            ("https://other.example.com/", false),
            ("https://api.weixin.qq.com/", false),
        ];
        for (hint, same) in rows {
            let parsed = parse_url(hint).unwrap();
            assert_eq!(hint_matches(&parsed, &target), same, "{hint}");
        }
    }

    #[test]
    fn target_hosts_are_normalised_once() {
        let rows = [
            ("api.example.com.", Some("api.example.com")),
            ("API.EXAMPLE.COM", Some("api.example.com")),
            ("[::1]", Some("[::1]")),
            ("0x7f.1", Some("127.0.0.1")),
            ("bad host", None),
        ];
        for (host, want) in rows {
            assert_eq!(normalize_target_host(host).as_deref(), want, "{host}");
        }
    }

    #[test]
    fn connect_to_a_tcp_only_host_at_a_forbidden_port_is_refused() {
        let a = app(
            &["https://api.example.com"],
            &[],
            &[],
            &["tcp://dev.example.com"],
        );
        let client: std::net::IpAddr = "192.168.1.20".parse().unwrap();
        let sw = Switches {
            skip_domain_check: false,
            lan_prefix: 24,
        };
        let rule = |host: &str, port| match judge_connect(&a, client, host, port, sw) {
            Verdict::Allow => None,
            Verdict::Refuse(r) => Some(r.rule),
        };
        assert_eq!(rule("dev.example.com", 3306), Some(Rule::TcpPort));
        assert_eq!(rule("dev.example.com", 9000), None);
        assert_eq!(rule("api.example.com", 443), None);
        assert_eq!(rule("nowhere.example.com", 443), Some(Rule::DomainList));
        // A LAN address may carry https at any port: judged inside the tunnel.
        assert_eq!(rule("192.168.1.30", 3306), None);
    }
}

mod webviews {
    use super::*;
    use crate::policy::{judge_navigation, webview_kind, WebView};

    #[test]
    fn web_view_traffic_is_told_by_its_marks() {
        let ua = Some("Mozilla/5.0 ... MicroMessenger/8.0 miniProgram");
        let plain = Some("Mozilla/5.0 Chrome/120");
        // (X-Wxsandbox-Api, User-Agent, Sec-Fetch-Dest, any Sec-Fetch-*) -> kind
        let rows = [
            (Some("webview"), None, None, false, WebView::Navigation),
            (None, ua, Some("document"), true, WebView::Navigation),
            (None, ua, Some("iframe"), true, WebView::Navigation),
            (None, ua, Some("empty"), true, WebView::Subresource),
            (None, ua, Some("image"), true, WebView::Subresource),
            (None, ua, None, false, WebView::No),
            (None, plain, Some("document"), true, WebView::No),
            (Some("request"), ua, None, false, WebView::No),
        ];
        for (api, agent, dest, sec, want) in rows {
            assert_eq!(
                webview_kind(api, agent, dest, sec),
                want,
                "{api:?} {agent:?} {dest:?}"
            );
        }
    }

    #[test]
    fn navigations_need_a_business_domain_or_a_subdomain_of_one() {
        let mut a = standard();
        a.business_domains = vec!["biz.example.com".to_owned()];
        let sw = Switches {
            skip_domain_check: false,
            lan_prefix: 24,
        };
        let rows = [
            ("https://biz.example.com/", true),
            ("https://shop.biz.example.com/a?b", true),
            ("https://BIZ.example.com./", true),
            ("https://notbiz.example.com/", false),
            ("https://example.com/", false),
            ("http://biz.example.com/", false),
            ("https://biz.example.com:8443/", false),
            ("https://192.168.1.2/", false),
            ("https://evil.example\\biz.example.com/", false),
        ];
        for (url, allowed) in rows {
            let verdict = judge_navigation(&a, url, sw);
            assert_eq!(verdict == Verdict::Allow, allowed, "{url}: {verdict:?}");
            if let Verdict::Refuse(r) = verdict {
                assert_eq!(
                    (r.status, r.errno, r.rule),
                    (403, 600002, Rule::BusinessDomain)
                );
            }
        }
        let skip = Switches {
            skip_domain_check: true,
            lan_prefix: 24,
        };
        assert_eq!(
            judge_navigation(&a, "https://example.com/", skip),
            Verdict::Allow
        );
    }
}

#[test]
fn an_ipv4_mapped_ipv6_literal_is_not_a_lan_address() {
    let a = standard();
    let client: IpAddr = "192.168.1.20".parse().unwrap();
    let sw = Switches {
        skip_domain_check: false,
        lan_prefix: 24,
    };
    for url in ["https://[::ffff:192.168.1.7]/", "http://[::ffff:c0a8:107]/"] {
        let call = Call {
            client,
            api: Api::Request,
            url,
            method: "GET",
        };
        match judge(&a, &call, sw) {
            Verdict::Refuse(r) => assert_eq!(r.rule, Rule::DomainList, "{url}"),
            Verdict::Allow => panic!("{url} passed the LAN rule"),
        }
    }
    // The same address written as IPv4 is a LAN neighbour.
    let call = Call {
        client,
        api: Api::Request,
        url: "http://192.168.1.7/",
        method: "GET",
    };
    assert_eq!(judge(&a, &call, sw), Verdict::Allow);
}

/// The proxy parses a call's URL once and hands the parsed value to every decision: the
/// decisions on a parsed URL are the decisions on its text, row by row.
#[test]
fn decisions_on_a_parsed_url_are_the_decisions_on_its_text() {
    use crate::policy::{detect_api, detect_api_parsed, judge_parsed, parse_url};
    let a = standard();
    let urls = [
        "https://api.example.com/",
        "https://api.example.com:443/x?y=1",
        "https://API.Example.com./",
        "https://api.example.com:8443/",
        "http://api.example.com/",
        "https://other.example.com/",
        "https://192.168.1.7/",
        "https://api.weixin.qq.com/",
        "wss://ws.example.com/",
        "tcp://tcp.example.com:7000",
        "https://中国.cn/",
        "not a url",
        "",
        "https://[::1]/",
    ];
    let apis = [
        Api::Request,
        Api::UploadFile,
        Api::DownloadFile,
        Api::ConnectSocket,
        Api::Tcp,
    ];
    let mut rows = 0;
    for url in urls {
        let parsed = parse_url(url);
        for api in apis {
            for (skip, method) in [(false, "GET"), (true, "POST"), (false, "PATCH")] {
                let sw = Switches {
                    skip_domain_check: skip,
                    lan_prefix: 24,
                };
                let call = Call {
                    client: ip("192.168.1.20"),
                    api,
                    url,
                    method,
                };
                assert_eq!(
                    judge(&a, &call, sw),
                    judge_parsed(&a, &call, parsed.as_ref(), sw),
                    "{url} {api:?} {method} skip={skip}"
                );
                rows += 1;
            }
        }
        let hints = ApiHints {
            is_websocket_upgrade: false,
            api_header: None,
            method: "GET",
            content_type: None,
        };
        assert_eq!(
            detect_api(&a, &hints, url),
            detect_api_parsed(&a, &hints, parsed.as_ref()),
            "{url}"
        );
    }
    assert_eq!(rows, urls.len() * apis.len() * 3);
}

/// A tunnel's URL, parsed once at its CONNECT, is what parsing each call's URL would give.
#[test]
fn tunnel_url_is_each_calls_url_parsed() {
    let table: &[(&str, u16)] = &[
        ("api.example.com", 443),
        ("api.example.com", 8443),
        ("127.0.0.1", 443),
        ("10.0.0.1", 80),
        ("[::1]", 443),
        ("[2001:db8::1]", 9443),
        ("xn--fiqs8s.example", 443),
    ];
    for &(host, port) in table {
        let written = if port == 443 {
            format!("https://{host}/a/b?c=d")
        } else {
            format!("https://{host}:{port}/a/b?c=d")
        };
        let once = super::tunnel_url(host, port);
        assert!(once.is_some(), "{host}:{port}");
        assert_eq!(once, super::parse_url(&written), "{host}:{port}");
    }
    // A host no call can be parsed for gives nothing to judge by.
    assert_eq!(super::tunnel_url("bad host", 443), None);
}
