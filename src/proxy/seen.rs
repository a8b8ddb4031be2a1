//! What a request's head says, read in one pass over its fields when it arrives: the marks
//! (the sandbox's own headers, a CORS preflight, a browser's fetch metadata), the standard
//! fields the stages ask for, and the bytes of its field lines. A lookup per field (a hash and
//! a probe in the `HeaderMap`, seven of them a call) cost more than one walk over the ten
//! fields a phone sends.

use http::header::{
    HeaderMap, HeaderName, HeaderValue, ACCESS_CONTROL_REQUEST_METHOD, CONNECTION, CONTENT_TYPE,
    EXPECT, ORIGIN, PROXY_AUTHORIZATION, REFERER, UPGRADE, USER_AGENT,
};

use crate::proxy::headers::{self, get_str};

/// What a request's header names say: lookups of the sandbox's own headers are skipped when
/// it sends none (as phones do), and the CORS and fetch marks are known.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Marks {
    /// Some `X-Wxsandbox-*` header.
    pub sandbox: bool,
    /// `Access-Control-Request-Method` (a CORS preflight, with the method).
    pub cors_preflight: bool,
    /// Some `Sec-Fetch-*` header (a browser's fetch metadata).
    pub sec_fetch: bool,
    /// An `Expect` header (hyper answers `100-continue` itself; none goes upstream).
    pub expect: bool,
    /// Some hop-by-hop header ([`headers::is_hop_by_hop`]): without one there is nothing to
    /// strip before the request goes upstream.
    pub hop_by_hop: bool,
}

impl Marks {
    /// One of the sandbox's own headers, as text (none looked up when it sent none).
    pub fn ours<'h>(&self, headers: &'h HeaderMap, name: HeaderName) -> Option<&'h str> {
        if self.sandbox {
            get_str(headers, name)
        } else {
            None
        }
    }
}

/// The fields of a request head the stages read, each the first of its name (as
/// `HeaderMap::get` finds it), with the marks and the size, from one pass.
#[derive(Debug, Default)]
pub(crate) struct Seen<'h> {
    pub marks: Marks,
    /// Bytes of the `name: value\r\n` lines (see [`headers::head_size`]).
    pub field_bytes: usize,
    pub proxy_authorization: Option<&'h HeaderValue>,
    pub referer: Option<&'h HeaderValue>,
    pub user_agent: Option<&'h HeaderValue>,
    pub content_type: Option<&'h HeaderValue>,
    pub origin: Option<&'h HeaderValue>,
    pub expect: Option<&'h HeaderValue>,
    pub upgrade: Option<&'h HeaderValue>,
    pub sec_fetch_dest: Option<&'h HeaderValue>,
    /// Some `Connection` field lists `upgrade` (every one is looked at, as for a lookup of all).
    pub connection_upgrade: bool,
}

/// `Sec-Fetch-Dest` (not among http's constants).
const SEC_FETCH_DEST: &str = "sec-fetch-dest";

impl<'h> Seen<'h> {
    pub fn of(fields: &'h HeaderMap) -> Seen<'h> {
        let mut seen = Seen::default();
        for (name, value) in fields {
            seen.field_bytes += name.as_str().len() + value.len() + 4;
            // Standard names compare as one byte each; the rest by their text, below.
            let slot = if *name == PROXY_AUTHORIZATION {
                seen.marks.hop_by_hop = true;
                &mut seen.proxy_authorization
            } else if *name == REFERER {
                &mut seen.referer
            } else if *name == USER_AGENT {
                &mut seen.user_agent
            } else if *name == CONTENT_TYPE {
                &mut seen.content_type
            } else if *name == ORIGIN {
                &mut seen.origin
            } else if *name == EXPECT {
                seen.marks.expect = true;
                &mut seen.expect
            } else if *name == UPGRADE {
                seen.marks.hop_by_hop = true;
                &mut seen.upgrade
            } else if *name == CONNECTION {
                seen.marks.hop_by_hop = true;
                seen.connection_upgrade |= lists_upgrade(value);
                continue;
            } else if *name == ACCESS_CONTROL_REQUEST_METHOD {
                seen.marks.cors_preflight = true;
                continue;
            } else {
                let text = name.as_str();
                // The other hop-by-hop names' lengths (te 2, trailer 7, keep-alive 10,
                // proxy-connection 16, transfer-encoding 17, proxy-authenticate 18) rule out
                // most names before any compare.
                if matches!(text.len(), 2 | 7 | 10 | 16 | 17 | 18) {
                    seen.marks.hop_by_hop |= headers::is_hop_by_hop(name);
                }
                if text.starts_with(headers::SANDBOX_PREFIX) {
                    seen.marks.sandbox = true;
                    continue;
                }
                if !text.starts_with("sec-fetch-") {
                    continue;
                }
                seen.marks.sec_fetch = true;
                if text != SEC_FETCH_DEST {
                    continue;
                }
                &mut seen.sec_fetch_dest
            };
            if slot.is_none() {
                *slot = Some(value);
            }
        }
        seen
    }

    /// A WebSocket handshake: `Upgrade: websocket` with `Connection: upgrade`.
    pub fn websocket(&self) -> bool {
        self.connection_upgrade
            && text(self.upgrade).is_some_and(|v| v.eq_ignore_ascii_case("websocket"))
    }

    /// `Expect: 100-continue`.
    pub fn expects_continue(&self) -> bool {
        text(self.expect).is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }
}

/// A field's value as text, when it is text.
pub(crate) fn text(value: Option<&HeaderValue>) -> Option<&str> {
    value.and_then(|v| v.to_str().ok())
}

fn lists_upgrade(value: &HeaderValue) -> bool {
    value.to_str().is_ok_and(|v| {
        v.split(',')
            .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The lookup `Seen::expects_continue` replaces.
    fn expects_continue(headers: &HeaderMap) -> bool {
        headers
            .get(EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("100-continue"))
    }

    fn fields(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (name, value) in pairs {
            h.append(*name, HeaderValue::from_static(value));
        }
        h
    }

    /// One pass over the names says what the later lookups would find.
    #[test]
    fn marks_say_what_the_names_carry() {
        for (names, sandbox, cors, fetch) in [
            (&["host", "user-agent", "referer"][..], false, false, false),
            (&["x-wxsandbox-timeout"], true, false, false),
            (&["X-Wxsandbox-Url", "accept"], true, false, false),
            (
                &["access-control-request-method", "origin"],
                false,
                true,
                false,
            ),
            (&["sec-fetch-mode", "sec-fetch-dest"], false, false, true),
            (
                &[
                    "x-wxsandbox-api",
                    "access-control-request-method",
                    "sec-fetch-site",
                ],
                true,
                true,
                true,
            ),
            // Near misses.
            (
                &["x-wxsandbox", "sec-fetch", "access-control-request-headers"],
                false,
                false,
                false,
            ),
        ] {
            let pairs: Vec<_> = names.iter().map(|n| (*n, "x")).collect();
            let h = fields(&pairs);
            let m = Seen::of(&h).marks;
            assert_eq!(
                (m.sandbox, m.cors_preflight, m.sec_fetch),
                (sandbox, cors, fetch),
                "{names:?}"
            );
            // A sandbox header is found exactly when one was sent.
            let name = HeaderName::from_static("x-wxsandbox-timeout");
            let found = m.ours(&h, name.clone()).is_some();
            assert_eq!(found, h.contains_key(name), "{names:?}");
        }
    }

    /// Each field is the one `HeaderMap::get` finds (the first of repeated ones), the size is
    /// `head_size`'s, and the WebSocket and 100-continue answers are the lookups' answers.
    #[test]
    fn one_pass_finds_what_each_lookup_finds() {
        let cases: [&[(&'static str, &'static str)]; 14] = [
            &[],
            &[
                ("host", "a.example"),
                ("user-agent", "Mozilla/5.0 MicroMessenger miniProgram"),
                ("referer", "https://servicewechat.com/wx1/1/page-frame.html"),
                ("referer", "https://evil.example/"),
                ("proxy-authorization", "Basic d3gxOg=="),
                ("content-type", "multipart/form-data; boundary=x"),
                ("origin", "https://a.example"),
                ("expect", " 100-Continue "),
                ("sec-fetch-site", "same-origin"),
                ("sec-fetch-dest", "iframe"),
                ("sec-fetch-dest", "document"),
            ],
            &[
                ("Connection", "keep-alive, Upgrade"),
                ("upgrade", "WebSocket"),
                ("expect", "100-continue-later"),
            ],
            // `Upgrade` first, the `Connection` that lists it second: still a handshake.
            &[
                ("connection", "keep-alive"),
                ("upgrade", "websocket"),
                ("connection", "upgrade"),
            ],
            // Upgrade to something else, or Connection without upgrade: not one.
            &[("connection", "upgrade"), ("upgrade", "h2c")],
            &[("connection", "upgraded"), ("upgrade", "websocket")],
            &[("te", "trailers"), ("accept", "*/*")],
            &[("trailer", "x")],
            &[("transfer-encoding", "chunked")],
            &[("proxy-authenticate", "Basic")],
            &[("keep-alive", "timeout=5")],
            &[("proxy-connection", "keep-alive")],
            &[("proxy-authorization", "Basic eA==")],
            &[
                ("host", "a.example"),
                ("x-keep-alive", "1"),
                ("accept", "*/*"),
            ],
        ];
        for pairs in cases {
            let h = fields(pairs);
            let seen = Seen::of(&h);
            for (field, name) in [
                (seen.proxy_authorization, PROXY_AUTHORIZATION),
                (seen.referer, REFERER),
                (seen.user_agent, USER_AGENT),
                (seen.content_type, CONTENT_TYPE),
                (seen.origin, ORIGIN),
                (seen.expect, EXPECT),
                (seen.upgrade, UPGRADE),
                (seen.sec_fetch_dest, HeaderName::from_static(SEC_FETCH_DEST)),
            ] {
                assert_eq!(field, h.get(&name), "{name} in {pairs:?}");
            }
            let mut req = http::Request::new(());
            *req.headers_mut() = h.clone();
            let line = headers::head_size(&http::Request::new(()));
            assert_eq!(
                line + seen.field_bytes,
                headers::head_size(&req),
                "{pairs:?}"
            );
            assert_eq!(
                seen.websocket(),
                headers::is_websocket_upgrade(&h),
                "{pairs:?}"
            );
            assert_eq!(seen.expects_continue(), expects_continue(&h), "{pairs:?}");
            assert_eq!(seen.marks.expect, h.contains_key(EXPECT), "{pairs:?}");
            // A message without the mark is one stripping leaves as it is.
            let mut stripped = h.clone();
            headers::strip_hop_by_hop(&mut stripped, false);
            assert_eq!(!seen.marks.hop_by_hop, stripped == h, "{pairs:?}");
        }
        // The cases above are not all alike: the answers differ between them.
        let h = fields(cases[2]);
        assert!(Seen::of(&h).websocket());
        let h = fields(cases[1]);
        assert!(Seen::of(&h).expects_continue() && !Seen::of(&h).websocket());
    }
}
