//! The call log as other tools read it: HAR 1.2 (`/api/har`) and Prometheus text (`/metrics`).

use std::fmt::Write;

use serde::Serialize;

use super::Handle;
use crate::calllog::{Entry, Headers, LATENCY_BUCKETS};

/// What a HAR 1.2 document holds before its entries (then [`har_entry`]s joined by commas, then
/// [`HAR_TAIL`]).
pub fn har_head() -> String {
    format!(
        r#"{{"log":{{"version":"1.2","creator":{{"name":"wxsandbox","version":{}}},"pages":[],"entries":["#,
        serde_json::Value::from(env!("CARGO_PKG_VERSION"))
    )
}

/// What closes a HAR document.
pub const HAR_TAIL: &str = "]}}";

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarEntry<'a> {
    started_date_time: String,
    time: u64,
    request: HarRequest<'a>,
    response: HarResponse<'a>,
    cache: Empty,
    timings: Timings,
    comment: String,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarRequest<'a> {
    method: &'a str,
    url: &'a str,
    http_version: &'a str,
    cookies: [(); 0],
    headers: &'a Headers,
    query_string: Vec<NameValue<'a>>,
    headers_size: i64,
    body_size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct HarResponse<'a> {
    status: u16,
    status_text: &'static str,
    http_version: &'a str,
    cookies: [(); 0],
    headers: &'a Headers,
    content: Content<'a>,
    #[serde(rename = "redirectURL")]
    redirect_url: &'static str,
    headers_size: i64,
    body_size: u64,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Content<'a> {
    size: u64,
    mime_type: &'a str,
}

#[derive(Serialize)]
struct NameValue<'a> {
    name: &'a str,
    value: &'a str,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
struct Timings {
    blocked: u64,
    send: u64,
    wait: u64,
    receive: u64,
}

/// One HAR entry (headers as stored: clipped and redacted; bodies not kept), appended to `out`.
pub fn har_entry(r: &Entry, out: &mut Vec<u8>) {
    let query_string: Vec<NameValue<'_>> = r
        .url
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (name, value) = p.split_once('=').unwrap_or((p, ""));
                    NameValue { name, value }
                })
                .collect()
        })
        .unwrap_or_default();
    let status = r.status.unwrap_or(0);
    let mime_type = r
        .response_header("content-type")
        .unwrap_or(if r.errno.is_some() {
            "application/json".into()
        } else {
            "".into()
        });
    let entry = HarEntry {
        started_date_time: time::OffsetDateTime::from(r.ts)
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        time: r.duration_ms,
        request: HarRequest {
            method: &r.method,
            url: &r.url,
            http_version: r.http_version,
            cookies: [],
            headers: &r.request_headers,
            query_string,
            headers_size: -1,
            body_size: r.bytes_up,
        },
        response: HarResponse {
            status,
            status_text: http::StatusCode::from_u16(status)
                .ok()
                .and_then(|s| s.canonical_reason())
                .unwrap_or(""),
            http_version: r.http_version,
            cookies: [],
            headers: &r.response_headers,
            content: Content {
                size: r.bytes_down,
                mime_type: &mime_type,
            },
            redirect_url: "",
            headers_size: -1,
            body_size: r.bytes_down,
        },
        cache: Empty {},
        timings: Timings {
            blocked: r.queue_ms,
            send: 0,
            wait: r.duration_ms.saturating_sub(r.queue_ms),
            receive: 0,
        },
        comment: r
            .errmsg
            .as_deref()
            .map(|m| format!("{m} ({})", r.rule.unwrap_or_default()))
            .unwrap_or_default(),
    };
    // Plain data with string keys: serialising it can't fail.
    let _ = serde_json::to_writer(out, &entry);
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition: calls by api/outcome/rule, in flight / queued / sockets by app,
/// the latency histogram, the leaf cache.
pub fn metrics(shared: &Handle) -> String {
    let c = shared.log().counters();
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# HELP wxsandbox_calls_total Calls by API, outcome and refusal rule."
    );
    let _ = writeln!(out, "# TYPE wxsandbox_calls_total counter");
    for ((api, outcome, rule), n) in &c.calls {
        let _ = writeln!(
            out,
            "wxsandbox_calls_total{{api=\"{}\",outcome=\"{outcome}\",rule=\"{}\"}} {n}",
            label(api),
            label(rule)
        );
    }
    let apps = shared.instances().snapshot();
    for (name, help, pick) in [
        (
            "wxsandbox_http_in_flight",
            "HTTP calls holding a slot, by app.",
            0,
        ),
        (
            "wxsandbox_http_queued",
            "HTTP calls waiting for a slot, by app.",
            1,
        ),
        ("wxsandbox_sockets_open", "Open sockets, by app.", 2),
    ] {
        let _ = writeln!(out, "# HELP {name} {help}");
        let _ = writeln!(out, "# TYPE {name} gauge");
        for app in &apps {
            let v: usize = app
                .instances
                .iter()
                .map(|i| match pick {
                    0 => i.http_in_flight,
                    1 => i.http_queued,
                    _ => i.sockets,
                })
                .sum();
            let _ = writeln!(out, "{name}{{appid=\"{}\"}} {v}", label(&app.appid));
        }
    }
    let _ = writeln!(
        out,
        "# HELP wxsandbox_instances App instances by network profile."
    );
    let _ = writeln!(out, "# TYPE wxsandbox_instances gauge");
    for (network, n) in apps.iter().flat_map(|a| &a.instances).fold(
        std::collections::BTreeMap::new(),
        |mut m, i| {
            *m.entry(i.network.as_str()).or_insert(0usize) += 1;
            m
        },
    ) {
        let _ = writeln!(
            out,
            "wxsandbox_instances{{network=\"{}\"}} {n}",
            label(network)
        );
    }
    let _ = writeln!(
        out,
        "# HELP wxsandbox_call_duration_seconds Call durations, arrival to last byte."
    );
    let _ = writeln!(out, "# TYPE wxsandbox_call_duration_seconds histogram");
    for (le, n) in LATENCY_BUCKETS.iter().zip(c.latency_buckets) {
        let _ = writeln!(
            out,
            "wxsandbox_call_duration_seconds_bucket{{le=\"{le}\"}} {n}"
        );
    }
    let _ = writeln!(
        out,
        "wxsandbox_call_duration_seconds_bucket{{le=\"+Inf\"}} {}",
        c.latency_count
    );
    let _ = writeln!(
        out,
        "wxsandbox_call_duration_seconds_sum {}",
        c.latency_sum_seconds
    );
    let _ = writeln!(
        out,
        "wxsandbox_call_duration_seconds_count {}",
        c.latency_count
    );
    let _ = writeln!(
        out,
        "# HELP wxsandbox_leaf_cache_hits_total Leaf certificates served from the cache."
    );
    let _ = writeln!(out, "# TYPE wxsandbox_leaf_cache_hits_total counter");
    let _ = writeln!(
        out,
        "wxsandbox_leaf_cache_hits_total {}",
        shared.leaf_counts().0
    );
    let _ = writeln!(
        out,
        "# HELP wxsandbox_leaf_cache_misses_total Leaf certificates minted."
    );
    let _ = writeln!(out, "# TYPE wxsandbox_leaf_cache_misses_total counter");
    let _ = writeln!(
        out,
        "wxsandbox_leaf_cache_misses_total {}",
        shared.leaf_counts().1
    );
    out
}
