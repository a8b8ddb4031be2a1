//! The call log: every call recorded once with its final outcome, in a bounded ring, with a
//! live feed for `/api/events` and the counters behind `/metrics`.

use serde::Serialize;
use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Records kept in the ring.
pub const DEFAULT_CAPACITY: usize = 10_000;

/// How a call ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    Ok,
    Refused,
    Timeout,
    Interrupted,
    UpstreamError,
    Aborted,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Refused => "refused",
            Outcome::Timeout => "timeout",
            Outcome::Interrupted => "interrupted",
            Outcome::UpstreamError => "upstream_error",
            Outcome::Aborted => "aborted",
        }
    }
}

/// One call, as SPEC section 6 names its fields. Credentials never appear here: headers are
/// recorded already redacted (see [`redact`]).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: u64,
    /// RFC 3339 UTC.
    #[serde(with = "time::serde::rfc3339")]
    pub ts: time::OffsetDateTime,
    pub appid: Option<String>,
    pub client: std::net::IpAddr,
    pub api: &'static str,
    pub method: String,
    pub url: String,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub errno: Option<i64>,
    #[serde(rename = "errMsg")]
    pub errmsg: Option<String>,
    pub rule: Option<&'static str>,
    pub detail: Option<String>,
    pub queue_ms: u64,
    pub duration_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    /// For HAR: request and response headers (redacted), and the HTTP version.
    #[serde(skip)]
    pub request_headers: http::HeaderMap,
    #[serde(skip)]
    pub response_headers: http::HeaderMap,
    #[serde(skip)]
    pub http_version: String,
}

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Counters behind `/metrics`, kept for every call (the ring forgets, these don't).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// (api, outcome, rule or "") → calls.
    pub calls: std::collections::BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then the total.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    pub latency_count: u64,
    pub latency_sum_seconds: f64,
}

/// The bounded ring and its live feed.
#[derive(Debug)]
pub struct CallLog {
    ring: Mutex<VecDeque<Record>>,
    capacity: usize,
    next_id: std::sync::atomic::AtomicU64,
    feed: broadcast::Sender<Record>,
    counters: Mutex<Counters>,
}

impl CallLog {
    pub fn new(capacity: usize) -> Self {
        let (feed, _) = broadcast::channel(1024);
        CallLog {
            ring: Mutex::new(VecDeque::with_capacity(capacity.min(1024))),
            capacity,
            next_id: std::sync::atomic::AtomicU64::new(1),
            feed,
            counters: Mutex::new(Counters::default()),
        }
    }

    /// A fresh record id.
    pub fn next_id(&self) -> u64 {
        self.next_id
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    }

    /// Record a finished call.
    pub fn push(&self, record: Record) {
        {
            let mut c = self
                .counters
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            let key = (
                record.api,
                record.outcome.as_str(),
                record.rule.unwrap_or(""),
            );
            *c.calls.entry(key).or_default() += 1;
            let seconds = record.duration_ms as f64 / 1000.0;
            for (i, le) in LATENCY_BUCKETS.iter().enumerate() {
                if seconds <= *le {
                    c.latency_buckets[i] += 1;
                }
            }
            c.latency_count += 1;
            c.latency_sum_seconds += seconds;
        }
        // No subscriber is not an error: nobody is watching the live feed.
        if self.feed.receiver_count() > 0 {
            let _ = self.feed.send(record.clone());
        }
        let mut ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if ring.len() == self.capacity {
            ring.pop_front();
        }
        ring.push_back(record);
    }

    /// The latest `limit` records, newest first.
    pub fn latest(&self, limit: usize) -> Vec<Record> {
        let ring = self
            .ring
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        ring.iter().rev().take(limit).cloned().collect()
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.counters
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Live records from now on.
    pub fn subscribe(&self) -> broadcast::Receiver<Record> {
        self.feed.subscribe()
    }
}

/// Header names whose values are never recorded.
pub const REDACTED: [&str; 4] = [
    "authorization",
    "cookie",
    "proxy-authorization",
    "set-cookie",
];

/// Headers as (name, value) pairs with credentials replaced by `<redacted>`.
pub fn redact(headers: &http::HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(k, v)| {
            let value = if REDACTED.contains(&k.as_str()) {
                "<redacted>".to_owned()
            } else {
                String::from_utf8_lossy(v.as_bytes()).into_owned()
            };
            (k.as_str().to_owned(), value)
        })
        .collect()
}
