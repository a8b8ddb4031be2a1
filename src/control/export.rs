//! The call log as other tools read it: HAR 1.2 (`/api/har`) and Prometheus text (`/metrics`).

use std::fmt::Write;

use serde_json::{json, Value};

use crate::calllog::{Record, LATENCY_BUCKETS};
use crate::state::Shared;

/// HAR 1.2 of the records (oldest first), headers redacted, bodies not kept.
pub fn har(records: &[Record]) -> String {
    let entries: Vec<Value> = records.iter().rev().map(har_entry).collect();
    json!({
        "log": {
            "version": "1.2",
            "creator": { "name": "wxsandbox", "version": env!("CARGO_PKG_VERSION") },
            "pages": [],
            "entries": entries,
        }
    })
    .to_string()
}

/// Headers as HAR name/value pairs, credentials redacted.
fn headers(map: &http::HeaderMap) -> Value {
    Value::Array(
        crate::calllog::redact(map)
            .into_iter()
            .map(|(n, v)| json!({ "name": n, "value": v }))
            .collect(),
    )
}

fn har_entry(r: &Record) -> Value {
    let query: Vec<Value> = r
        .url
        .split_once('?')
        .map(|(_, q)| {
            q.split('&')
                .filter(|p| !p.is_empty())
                .map(|p| {
                    let (n, v) = p.split_once('=').unwrap_or((p, ""));
                    json!({ "name": n, "value": v })
                })
                .collect()
        })
        .unwrap_or_default();
    let status = r.status.unwrap_or(0);
    let mime = r
        .response_headers
        .get(http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .map_or_else(
            || {
                if r.errno.is_some() {
                    "application/json".to_owned()
                } else {
                    String::new()
                }
            },
            str::to_owned,
        );
    let wait = r.duration_ms.saturating_sub(r.queue_ms);
    json!({
        "startedDateTime": r.ts.format(&time::format_description::well_known::Rfc3339).unwrap_or_default(),
        "time": r.duration_ms,
        "request": {
            "method": r.method,
            "url": r.url,
            "httpVersion": r.http_version,
            "cookies": [],
            "headers": headers(&r.request_headers),
            "queryString": query,
            "headersSize": -1,
            "bodySize": r.bytes_up,
        },
        "response": {
            "status": status,
            "statusText": http::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or(""),
            "httpVersion": r.http_version,
            "cookies": [],
            "headers": headers(&r.response_headers),
            "content": { "size": r.bytes_down, "mimeType": mime },
            "redirectURL": "",
            "headersSize": -1,
            "bodySize": r.bytes_down,
        },
        "cache": {},
        "timings": { "blocked": r.queue_ms, "send": 0, "wait": wait, "receive": 0 },
        "comment": r.errmsg.clone().map(|m| format!("{m} ({})", r.rule.unwrap_or_default())).unwrap_or_default(),
    })
}

fn label(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// Prometheus text exposition: calls by api/outcome/rule, in flight / queued / sockets by app,
/// the latency histogram, the leaf cache.
pub fn metrics(shared: &Shared) -> String {
    let c = shared.log.counters();
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
    let apps = shared.instances.snapshot();
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
        shared.leaves.hits()
    );
    let _ = writeln!(
        out,
        "# HELP wxsandbox_leaf_cache_misses_total Leaf certificates minted."
    );
    let _ = writeln!(out, "# TYPE wxsandbox_leaf_cache_misses_total counter");
    let _ = writeln!(
        out,
        "wxsandbox_leaf_cache_misses_total {}",
        shared.leaves.misses()
    );
    out
}
