//! Header hygiene between client and upstream: hop-by-hop headers (RFC 9110 §7.6.1), our own
//! `X-Wxsandbox-*` headers, proxy credentials, and HTTP/2 → HTTP/1.1 cookie joining.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one hop and never pass the proxy (as names: no parsing per call).
/// `Connection` first: [`strip_hop_by_hop`] reads the names it lists when bit 0 is set.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

/// Bit n set: some name of [`HOP_BY_HOP`] (or `upgrade`) is n bytes long.
const HOP_BY_HOP_LENGTHS: u64 = {
    let names: [&str; 9] = [
        "connection",
        "keep-alive",
        "proxy-connection",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    ];
    let mut mask = 0u64;
    let mut i = 0;
    while i < names.len() {
        mask |= 1 << names[i].len();
        i += 1;
    }
    mask
};

/// Prefix of the headers a client uses to talk to the sandbox; never forwarded.
pub const SANDBOX_PREFIX: &str = "x-wxsandbox-";

/// Is `name` one of the hop-by-hop headers (or `Upgrade`) [`strip_hop_by_hop`] removes by name?
pub fn is_hop_by_hop(name: &HeaderName) -> bool {
    *name == header::UPGRADE || HOP_BY_HOP.contains(name)
}

/// Remove hop-by-hop headers, plus every header that `Connection` names. `Upgrade` is kept only
/// for a WebSocket handshake (`keep_upgrade`), with `Connection: upgrade` restored.
pub fn strip_hop_by_hop(headers: &mut HeaderMap, keep_upgrade: bool) {
    // One look at each field: which hop-by-hop names the message carries (most carry none,
    // responses often `Connection: keep-alive` alone), so only those are removed, and whether
    // a `Connection` names other fields (the usual options, keep-alive and close, name none).
    let mut carried = 0u16;
    for name in headers.keys() {
        // Most names have a length no hop-by-hop name has: one shift rejects them.
        if (HOP_BY_HOP_LENGTHS >> name.as_str().len().min(63)) & 1 == 0 {
            continue;
        }
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            carried |= 1 << i;
        } else if name == header::UPGRADE {
            carried |= 1 << HOP_BY_HOP.len();
        }
    }
    let names_fields = carried & 1 != 0
        && headers
            .get_all(header::CONNECTION)
            .iter()
            .any(connection_names_fields);
    if names_fields {
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim)
            // The usual options name no header (or one removed below anyway).
            .filter(|t| !t.eq_ignore_ascii_case("keep-alive") && !t.eq_ignore_ascii_case("close"))
            .filter_map(|name| HeaderName::from_bytes(name.as_bytes()).ok())
            .collect();
        for name in named {
            if keep_upgrade && name == header::UPGRADE {
                continue;
            }
            headers.remove(&name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if carried & (1 << i) != 0 {
            headers.remove(name);
        }
    }
    if keep_upgrade {
        headers.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
    } else if carried & (1 << HOP_BY_HOP.len()) != 0 {
        headers.remove(header::UPGRADE);
    }
}

/// Does a `Connection` value list anything but the `keep-alive` and `close` options (a field
/// to remove with it)? Read as bytes, in place; a `true` sends [`strip_hop_by_hop`] the long way.
fn connection_names_fields(value: &HeaderValue) -> bool {
    value.as_bytes().split(|b| *b == b',').any(|token| {
        let token = token.trim_ascii();
        !token.is_empty()
            && !token.eq_ignore_ascii_case(b"keep-alive")
            && !token.eq_ignore_ascii_case(b"close")
    })
}

/// Remove every `X-Wxsandbox-*` header.
pub fn strip_sandbox_headers(headers: &mut HeaderMap) {
    let ours: Vec<HeaderName> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(SANDBOX_PREFIX))
        .cloned()
        .collect();
    for name in ours {
        headers.remove(name);
    }
}

/// HTTP/2 allows several `cookie` fields; HTTP/1.1 servers expect one, joined with "; ".
pub fn join_cookies(headers: &mut HeaderMap) {
    let values: Vec<&[u8]> = headers
        .get_all(header::COOKIE)
        .iter()
        .map(HeaderValue::as_bytes)
        .collect();
    if values.len() < 2 {
        return;
    }
    let joined = values.join(&b"; "[..]);
    if let Ok(value) = HeaderValue::from_bytes(&joined) {
        headers.insert(header::COOKIE, value);
    }
}

/// About how many bytes a request head took: the request line and every `name: value\r\n`.
/// The same count for HTTP/1.1 and HTTP/2, so one limit means the same everywhere.
pub fn head_size<B>(req: &http::Request<B>) -> usize {
    req.headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum::<usize>()
        + head_line_size(req)
}

/// [`head_size`]'s share of the request line.
pub fn head_line_size<B>(req: &http::Request<B>) -> usize {
    let uri = req.uri();
    let uri_len = uri.scheme_str().map_or(0, |s| s.len() + 3)
        + uri.authority().map_or(0, |a| a.as_str().len())
        + uri.path_and_query().map_or(1, |p| p.as_str().len());
    req.method().as_str().len() + uri_len + 12
}

/// A header as a string, when it is one.
pub fn get_str<K: header::AsHeaderName>(headers: &HeaderMap, name: K) -> Option<&str> {
    headers.get(name).and_then(|v| v.to_str().ok())
}

/// Is this request a WebSocket handshake (`Upgrade: websocket` with `Connection: upgrade`)?
/// The lookups' form, the oracle `Seen::websocket` (one pass, in admit) is tested against.
#[cfg(test)]
pub fn is_websocket_upgrade(headers: &HeaderMap) -> bool {
    let upgrade =
        get_str(headers, header::UPGRADE).is_some_and(|v| v.eq_ignore_ascii_case("websocket"));
    let connection = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|v| {
            v.split(',')
                .any(|t| t.trim().eq_ignore_ascii_case("upgrade"))
        });
    upgrade && connection
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn strips_named_and_standard_hop_by_hop() {
        let mut h = HeaderMap::new();
        h.insert(
            "connection",
            HeaderValue::from_static("keep-alive, x-custom"),
        );
        h.insert("x-custom", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert(
            "proxy-authorization",
            HeaderValue::from_static("Basic eA=="),
        );
        h.insert("upgrade", HeaderValue::from_static("h2c"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
        assert_eq!(h.get("x-kept").unwrap(), "yes");
    }

    /// Each hop-by-hop header goes even when it is the only one (the one-look check sees it),
    /// and a message without any keeps every header.
    #[test]
    fn each_hop_by_hop_header_alone_goes() {
        for name in HOP_BY_HOP.iter().chain([&header::UPGRADE]) {
            let mut h = HeaderMap::new();
            h.insert(name.clone(), HeaderValue::from_static("x"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h, false);
            assert_eq!(h.len(), 1, "{name}: {h:?}");
        }
        let mut h = HeaderMap::new();
        h.insert("x-kept", HeaderValue::from_static("yes"));
        h.insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain"));
        let before = h.clone();
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h, before);
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("close, X-Named"));
        h.insert("x-named", HeaderValue::from_static("1"));
        h.insert("x-kept", HeaderValue::from_static("yes"));
        strip_hop_by_hop(&mut h, false);
        assert_eq!(h.len(), 1, "{h:?}");
    }

    /// The usual options alone (any case, spaces, empty items, repeated fields) name no field
    /// and are removed with their `Connection`; a name among them, in any field, still goes.
    #[test]
    fn connection_options_alone_name_nothing() {
        for (values, named) in [
            (&["keep-alive"][..], false),
            (&["Keep-Alive"], false),
            (&[" close , "], false),
            (&["keep-alive", "close"], false),
            (&[""], false),
            (&["keep-alive", "x-named"], true),
            (&["close, X-Named"], true),
            (&["keep-alivex"], true),
        ] {
            let mut h = HeaderMap::new();
            for v in values {
                h.append(header::CONNECTION, HeaderValue::from_static(v));
            }
            let connection_values: Vec<_> = h.get_all(header::CONNECTION).iter().cloned().collect();
            assert_eq!(
                connection_values.iter().any(connection_names_fields),
                named,
                "{values:?}"
            );
            h.insert("x-named", HeaderValue::from_static("1"));
            h.insert("keep-alivex", HeaderValue::from_static("1"));
            h.insert("x-kept", HeaderValue::from_static("yes"));
            strip_hop_by_hop(&mut h, false);
            assert!(!h.contains_key(header::CONNECTION), "{values:?}");
            assert!(h.contains_key("x-kept"), "{values:?}");
            let gone = !h.contains_key("x-named") || !h.contains_key("keep-alivex");
            assert_eq!(gone, named, "{values:?}: {h:?}");
        }
    }

    #[test]
    fn keeps_upgrade_for_websocket() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("Upgrade"));
        h.insert("upgrade", HeaderValue::from_static("websocket"));
        assert!(is_websocket_upgrade(&h));
        strip_hop_by_hop(&mut h, true);
        assert_eq!(h.get("upgrade").unwrap(), "websocket");
        assert_eq!(h.get("connection").unwrap(), "upgrade");
    }

    #[test]
    fn strips_sandbox_headers_only() {
        let mut h = HeaderMap::new();
        h.insert("x-wxsandbox-appid", HeaderValue::from_static("wx"));
        h.insert("x-wxsandbox-url", HeaderValue::from_static("u"));
        h.insert("x-other", HeaderValue::from_static("o"));
        strip_sandbox_headers(&mut h);
        assert_eq!(h.len(), 1);
    }

    #[test]
    fn joins_h2_cookies() {
        let mut h = HeaderMap::new();
        h.append("cookie", HeaderValue::from_static("a=1"));
        h.append("cookie", HeaderValue::from_static("b=2"));
        join_cookies(&mut h);
        assert_eq!(h.get_all("cookie").iter().count(), 1);
        assert_eq!(h.get("cookie").unwrap(), "a=1; b=2");
    }
}
