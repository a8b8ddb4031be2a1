//! The call log: every call recorded once with its final outcome, in a ring bounded in count and
//! in bytes, with a live feed for `/api/events` and the counters behind `/metrics`.
//!
//! A pushed [`Record`] is turned into a compact [`Entry`] at once: the URL, header values and
//! texts clipped (with a `…[truncated N bytes]` marker), at most [`MAX_HEADERS`] headers a side,
//! credentials redacted, and no `http::HeaderMap` kept (its values may pin hyper's read buffers).
//! Readers get `Arc`s of the entries and serialise them one by one, never the ring as one string.

use std::borrow::Cow;
use std::collections::{BTreeMap, VecDeque};
use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::SystemTime;

use bytes::Bytes;
use serde::Serialize;
use tokio::sync::broadcast;

/// Records kept in the ring.
pub const DEFAULT_CAPACITY: usize = 10_000;
/// Bytes the ring's entries may take, by [`Entry::size`].
pub const DEFAULT_BYTE_BUDGET: usize = 32 * 1024 * 1024;
/// A recycled entry's buffer larger than this is dropped rather than kept for the next record.
const REFILL_MAX_BYTES: usize = 16 * 1024;
/// Longest URL kept; longer ones are clipped with a marker.
pub const MAX_URL_BYTES: usize = 2048;
/// Longest header value kept.
pub const MAX_HEADER_VALUE_BYTES: usize = 1024;
/// Longest header name kept.
pub const MAX_HEADER_NAME_BYTES: usize = 256;
/// Headers kept per side (request, response); the rest become one marker entry.
pub const MAX_HEADERS: usize = 100;
/// Longest errMsg and detail kept.
pub const MAX_TEXT_BYTES: usize = 2048;
/// Longest method, appid and HTTP version kept.
pub const MAX_SHORT_BYTES: usize = 128;
/// Name of the header entry that stands for the headers not kept.
pub const TRUNCATED_HEADERS_NAME: &str = "…";

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
    /// Every outcome, in declaration order (`self as usize` is the position).
    pub const ALL: [Outcome; 6] = [
        Outcome::Ok,
        Outcome::Refused,
        Outcome::Timeout,
        Outcome::Interrupted,
        Outcome::UpstreamError,
        Outcome::Aborted,
    ];

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

/// One call, as SPEC section 6 names its fields, as the proxy hands it over. Credentials never
/// appear in what is kept: headers are redacted when the record is stored (see [`redact`]).
#[derive(Debug, Clone, Serialize)]
pub struct Record {
    pub id: u64,
    /// When the call arrived; serialised as RFC 3339 UTC (formatted when served: calls
    /// outnumber reads).
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    pub appid: Option<Arc<str>>,
    pub client: std::net::IpAddr,
    pub api: &'static str,
    pub method: Cow<'static, str>,
    pub url: Arc<str>,
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
    /// The network profile the call ran under (none when no app instance was found).
    pub network: Option<Arc<str>>,
    /// For HAR: request and response headers (redacted), and the HTTP version.
    #[serde(skip)]
    pub request_headers: Headers,
    #[serde(skip)]
    pub response_headers: Headers,
    #[serde(skip)]
    pub http_version: &'static str,
}

/// Headers as kept for HAR, captured once per call: one buffer of `name\nvalue\n` pairs (an
/// HTTP field never holds a line feed), names clipped to [`MAX_HEADER_NAME_BYTES`], values to
/// [`MAX_HEADER_VALUE_BYTES`], credentials redacted, at most [`MAX_HEADERS`] then one marker
/// pair. One allocation a side, no `HeaderMap` kept (its values may pin hyper's read buffers).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Headers(Vec<u8>);

impl Headers {
    /// Capture `map` as kept: one walk over the fields copies them into the thread's scratch
    /// buffer, which is then copied whole into a buffer of the exact size (one walk, not one to
    /// size and one to copy; the scratch keeps its room between calls).
    pub fn capture(map: &http::HeaderMap) -> Headers {
        let total = map.len();
        if total == 0 {
            return Headers::default();
        }
        SCRATCH.with_borrow_mut(|buf| {
            buf.clear();
            for (name, value) in map.iter().take(MAX_HEADERS) {
                let (name, value) = field(name, value);
                if name.len() <= MAX_HEADER_NAME_BYTES && value.len() <= MAX_HEADER_VALUE_BYTES {
                    buf.extend_from_slice(name);
                    buf.push(b'\n');
                    buf.extend_from_slice(value);
                } else {
                    push_clipped(buf, name, MAX_HEADER_NAME_BYTES);
                    buf.push(b'\n');
                    push_clipped(buf, value, MAX_HEADER_VALUE_BYTES);
                }
                buf.push(b'\n');
            }
            if total > MAX_HEADERS {
                buf.extend_from_slice(TRUNCATED_HEADERS_NAME.as_bytes());
                buf.push(b'\n');
                buf.extend_from_slice(
                    format!("[truncated {} headers]", total - MAX_HEADERS).as_bytes(),
                );
                buf.push(b'\n');
            }
            let kept = Headers(buf.as_slice().to_vec());
            // An unusual head's room is not kept for the usual ones.
            if buf.capacity() > REFILL_MAX_BYTES {
                *buf = Vec::new();
            }
            kept
        })
    }

    /// Take `from`'s pairs in place of these, in this buffer (no allocation when it is large
    /// enough: the ring writes each record into the memory of the one it evicted).
    fn refill(&mut self, from: &Headers) {
        self.0.clear();
        self.0.extend_from_slice(&from.0);
    }

    /// The (name, value) pairs as kept, raw bytes.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        let mut fields = self.0.split(|b| *b == b'\n');
        std::iter::from_fn(move || {
            let name = fields.next()?;
            let value = fields.next()?;
            Some((name, value))
        })
    }

    /// How many pairs are kept.
    pub fn len(&self) -> usize {
        self.iter().count()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Bytes held (the buffer's room, used or not).
    pub fn bytes(&self) -> usize {
        self.0.capacity()
    }

    /// The value kept for `name` (lower-case), as text.
    pub fn get(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.iter()
            .find(|(n, _)| *n == name.as_bytes())
            .map(|(_, v)| String::from_utf8_lossy(v))
    }
}

/// HAR's `[{"name","value"}]`, text made from the bytes kept (invalid UTF-8 replaced).
impl Serialize for Headers {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeSeq;
        #[derive(Serialize)]
        struct Pair<'a> {
            name: std::borrow::Cow<'a, str>,
            value: std::borrow::Cow<'a, str>,
        }
        let mut seq = serializer.serialize_seq(None)?;
        for (name, value) in self.iter() {
            seq.serialize_element(&Pair {
                name: String::from_utf8_lossy(name),
                value: String::from_utf8_lossy(value),
            })?;
        }
        seq.end()
    }
}

/// A field as kept: its name, and its value or `<redacted>`.
type Field<'a> = (&'a [u8], &'a [u8]);

const REDACTED_VALUE: &[u8] = b"<redacted>";

fn field<'a>(name: &'a http::HeaderName, value: &'a http::HeaderValue) -> Field<'a> {
    let text = name.as_str().as_bytes();
    // By name, not text: the four are standard names, and their lengths tell most others apart.
    let redacted = matches!(text.len(), 6 | 10 | 13 | 19) && REDACTED_NAMES.contains(name);
    (
        text,
        if redacted {
            REDACTED_VALUE
        } else {
            value.as_bytes()
        },
    )
}

thread_local! {
    /// Where [`Headers::capture`] writes a head before it is copied at its exact size.
    static SCRATCH: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Append `bytes` cut to at most `max` (at a UTF-8 boundary when the cut falls in a sequence)
/// with a `…[truncated N bytes]` marker when anything was cut.
fn push_clipped(buf: &mut Vec<u8>, bytes: &[u8], max: usize) {
    if bytes.len() <= max {
        buf.extend_from_slice(bytes);
        return;
    }
    let cut = utf8_cut(bytes, max);
    buf.extend_from_slice(&bytes[..cut]);
    buf.extend_from_slice(format!("…[truncated {} bytes]", bytes.len() - cut).as_bytes());
}

/// `max`, backed up to the start of a UTF-8 sequence (at most 3 continuation bytes).
fn utf8_cut(bytes: &[u8], max: usize) -> usize {
    let mut cut = max;
    for _ in 0..3 {
        if cut > 0 && bytes.get(cut).is_some_and(|b| b & 0xC0 == 0x80) {
            cut -= 1;
        } else {
            break;
        }
    }
    cut
}

/// A record as the ring keeps it: clipped, redacted, owned. Serialises as the record of SPEC
/// section 6 (headers and HTTP version are for HAR only).
#[derive(Debug, Serialize)]
pub struct Entry {
    pub id: u64,
    /// When the call arrived; serialised as RFC 3339 UTC (formatted when served: calls
    /// outnumber reads).
    #[serde(serialize_with = "rfc3339")]
    pub ts: SystemTime,
    pub appid: Option<Arc<str>>,
    pub client: IpAddr,
    pub api: &'static str,
    pub method: Cow<'static, str>,
    /// Owned (a copy of the call's): the ring reuses its buffer for a later record.
    pub url: String,
    pub outcome: Outcome,
    pub status: Option<u16>,
    pub errno: Option<i64>,
    #[serde(rename = "errMsg")]
    pub errmsg: Option<Box<str>>,
    pub rule: Option<&'static str>,
    pub detail: Option<Box<str>>,
    pub queue_ms: u64,
    pub duration_ms: u64,
    pub bytes_up: u64,
    pub bytes_down: u64,
    pub network: Option<Arc<str>>,
    #[serde(skip)]
    pub request_headers: Headers,
    #[serde(skip)]
    pub response_headers: Headers,
    #[serde(skip)]
    pub http_version: &'static str,
    #[serde(skip)]
    size: usize,
}

impl Entry {
    /// The compact form of a record.
    pub fn from_record(record: Record) -> Entry {
        let mut entry = Entry {
            id: 0,
            ts: record.ts,
            appid: None,
            client: record.client,
            api: "",
            method: Cow::Borrowed(""),
            url: String::new(),
            outcome: record.outcome,
            status: None,
            errno: None,
            errmsg: None,
            rule: None,
            detail: None,
            queue_ms: 0,
            duration_ms: 0,
            bytes_up: 0,
            bytes_down: 0,
            network: None,
            request_headers: Headers::default(),
            response_headers: Headers::default(),
            http_version: "",
            size: 0,
        };
        entry.refill(record);
        entry
    }

    /// Make this entry the compact form of `record`, in its own buffers. Records live long in
    /// the ring, so the memory an evicted one leaves is cold: handed back to the allocator, the
    /// next calls' short-lived allocations would land on it. The ring writes the next record
    /// into it instead.
    fn refill(&mut self, record: Record) {
        self.fill_text(
            &record.url,
            &record.request_headers,
            &record.response_headers,
        );
        self.id = record.id;
        self.ts = record.ts;
        self.appid = record.appid.map(|a| keep_shared(a, MAX_SHORT_BYTES));
        self.client = record.client;
        self.api = record.api;
        self.method = match record.method {
            Cow::Owned(m) => Cow::Owned(keep(m, MAX_SHORT_BYTES).into()),
            standard => standard,
        };
        self.outcome = record.outcome;
        self.status = record.status;
        self.errno = record.errno;
        self.errmsg = record.errmsg.map(|m| keep(m, MAX_TEXT_BYTES));
        self.rule = record.rule;
        self.detail = record.detail.map(|d| keep(d, MAX_TEXT_BYTES));
        self.queue_ms = record.queue_ms;
        self.duration_ms = record.duration_ms;
        self.bytes_up = record.bytes_up;
        self.bytes_down = record.bytes_down;
        self.network = record.network.map(|n| keep_shared(n, MAX_SHORT_BYTES));
        self.http_version = record.http_version;
        self.size = self.measure();
    }

    /// The URL (clipped) and headers, copied into this entry's buffers.
    fn fill_text(&mut self, url: &str, request: &Headers, response: &Headers) {
        // A buffer grown by an unusual record is not kept at that size for the usual ones.
        for buffer in [&mut self.request_headers.0, &mut self.response_headers.0] {
            if buffer.capacity() > REFILL_MAX_BYTES {
                *buffer = Vec::new();
            }
        }
        if self.url.capacity() > REFILL_MAX_BYTES {
            self.url = String::new();
        }
        self.url.clear();
        if url.len() <= MAX_URL_BYTES {
            self.url.push_str(url);
        } else {
            self.url.push_str(&clip(url, MAX_URL_BYTES));
        }
        self.request_headers.refill(request);
        self.response_headers.refill(response);
    }

    /// Bytes this entry holds: the struct, its `Arc`, its strings and header slices.
    pub fn size(&self) -> usize {
        self.size
    }

    fn measure(&self) -> usize {
        // Shared strings are counted whole in every entry: the bound holds if nothing is shared.
        let opt = |s: &Option<Box<str>>| s.as_deref().map_or(0, str::len);
        let shared = |s: &Option<Arc<str>>| s.as_deref().map_or(0, str::len);
        let headers = |h: &Headers| h.bytes();
        std::mem::size_of::<Entry>()
            + 2 * std::mem::size_of::<usize>()
            + shared(&self.appid)
            + self.method.len()
            + self.url.capacity()
            + opt(&self.errmsg)
            + opt(&self.detail)
            + shared(&self.network)
            + headers(&self.request_headers)
            + headers(&self.response_headers)
    }

    /// A response header's value (names are kept lower-case).
    pub fn response_header(&self, name: &str) -> Option<std::borrow::Cow<'_, str>> {
        self.response_headers.get(name)
    }
}

/// `text` kept as it is when it fits (no copy), else [`clip`]ped.
/// `text` as kept: shared as it is when short enough, else a clipped copy.
fn keep_shared(text: Arc<str>, max: usize) -> Arc<str> {
    if text.len() <= max {
        text
    } else {
        Arc::from(clip(&text, max))
    }
}

fn keep(text: String, max: usize) -> Box<str> {
    if text.len() <= max {
        text.into_boxed_str()
    } else {
        clip(&text, max)
    }
}

/// `text` cut to at most `max` bytes (at a UTF-8 boundary), followed by `…[truncated N bytes]`
/// when anything was cut.
pub fn clip(text: &str, max: usize) -> Box<str> {
    clip_bytes(text.as_bytes(), max)
}

/// Like [`clip`] for bytes that may not be UTF-8 (header values): invalid sequences become U+FFFD.
pub fn clip_bytes(bytes: &[u8], max: usize) -> Box<str> {
    if bytes.len() <= max {
        return String::from_utf8_lossy(bytes).into();
    }
    let cut = utf8_cut(bytes, max);
    let mut text = String::from_utf8_lossy(&bytes[..cut]).into_owned();
    text.push_str(&format!("…[truncated {} bytes]", bytes.len() - cut));
    text.into_boxed_str()
}

/// Upper bounds (seconds) of the latency histogram's buckets.
pub const LATENCY_BUCKETS: [f64; 12] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 60.0,
];

/// Counters behind `/metrics`, kept for every call (the ring forgets, these don't).
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// (api, outcome, rule or "") → calls.
    pub calls: BTreeMap<(&'static str, &'static str, &'static str), u64>,
    /// Cumulative counts per bucket of [`LATENCY_BUCKETS`], then the total.
    pub latency_buckets: [u64; LATENCY_BUCKETS.len()],
    pub latency_count: u64,
    pub latency_sum_seconds: f64,
}

/// The `api` values of records, by position in the counter table.
const APIS: [&str; 6] = [
    "request",
    "uploadFile",
    "downloadFile",
    "connectSocket",
    "tcp",
    "webview",
];
/// The `rule` values of records ("" for none), by position in the counter table.
const RULES: [&str; 18] = [
    "",
    "invalid-url",
    "domain-list",
    "forbidden-host",
    "tcp-port",
    "tcp-quota",
    "appid",
    "background",
    "interrupted",
    "concurrency",
    "timeout",
    "upstream",
    "tls",
    "charset",
    "offline",
    "network-change",
    "client-error",
    "business-domain",
];

/// The counters as atomics: a table indexed by (api, outcome, rule) positions, a map behind a
/// mutex only for values outside the table, and the histogram's per-bucket counts.
#[derive(Debug)]
struct Tally {
    calls: Box<[AtomicU64]>,
    other: Mutex<BTreeMap<(&'static str, &'static str, &'static str), u64>>,
    /// Calls per bucket, not cumulative; the last one is over the largest bound.
    buckets: [AtomicU64; LATENCY_BUCKETS.len() + 1],
    count: AtomicU64,
    sum_ms: AtomicU64,
}

impl Tally {
    fn new() -> Self {
        Tally {
            calls: (0..APIS.len() * Outcome::ALL.len() * RULES.len())
                .map(|_| AtomicU64::new(0))
                .collect(),
            other: Mutex::new(BTreeMap::new()),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            count: AtomicU64::new(0),
            sum_ms: AtomicU64::new(0),
        }
    }

    fn slot(api: usize, outcome: usize, rule: usize) -> usize {
        (api * Outcome::ALL.len() + outcome) * RULES.len() + rule
    }

    fn add(&self, api: &'static str, outcome: Outcome, rule: Option<&'static str>, ms: u64) {
        let rule = rule.unwrap_or("");
        match (
            APIS.iter().position(|a| *a == api),
            RULES.iter().position(|r| *r == rule),
        ) {
            (Some(a), Some(r)) => {
                self.calls[Self::slot(a, outcome as usize, r)].fetch_add(1, Ordering::Relaxed);
            }
            _ => {
                *self
                    .other
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .entry((api, outcome.as_str(), rule))
                    .or_default() += 1;
            }
        }
        // The count first, the bucket after; `snapshot` reads in the other order, so the
        // buckets it sees never exceed the count.
        self.count.fetch_add(1, Ordering::SeqCst);
        self.sum_ms.fetch_add(ms, Ordering::SeqCst);
        let seconds = ms as f64 / 1000.0;
        let bucket = LATENCY_BUCKETS
            .iter()
            .position(|le| seconds <= *le)
            .unwrap_or(LATENCY_BUCKETS.len());
        self.buckets[bucket].fetch_add(1, Ordering::SeqCst);
    }

    fn snapshot(&self) -> Counters {
        let mut c = Counters::default();
        let mut cumulative = 0;
        for (i, bucket) in c.latency_buckets.iter_mut().enumerate() {
            cumulative += self.buckets[i].load(Ordering::SeqCst);
            *bucket = cumulative;
        }
        c.latency_sum_seconds = self.sum_ms.load(Ordering::SeqCst) as f64 / 1000.0;
        c.latency_count = self.count.load(Ordering::SeqCst);
        for (a, api) in APIS.iter().enumerate() {
            for (o, outcome) in Outcome::ALL.iter().enumerate() {
                for (r, rule) in RULES.iter().enumerate() {
                    let n = self.calls[Self::slot(a, o, r)].load(Ordering::Relaxed);
                    if n > 0 {
                        c.calls.insert((api, outcome.as_str(), rule), n);
                    }
                }
            }
        }
        for (key, n) in self
            .other
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
        {
            *c.calls.entry(*key).or_default() += n;
        }
        c
    }
}

#[derive(Debug, Default)]
struct Ring {
    entries: VecDeque<Arc<Entry>>,
    /// Sum of the entries' [`Entry::size`].
    bytes: usize,
    /// An evicted entry nobody else holds, for the next record to be written into.
    spare: Option<Arc<Entry>>,
}

/// The bounded ring and its live feed.
#[derive(Debug)]
pub struct CallLog {
    ring: Mutex<Ring>,
    capacity: usize,
    byte_budget: usize,
    next_id: AtomicU64,
    /// Each record's JSON (as `/api/log` serialises it), for `/api/events`.
    feed: broadcast::Sender<Bytes>,
    tally: Tally,
}

impl CallLog {
    /// A ring of at most `capacity` records and [`DEFAULT_BYTE_BUDGET`] bytes.
    pub fn new(capacity: usize) -> Self {
        Self::with_budget(capacity, DEFAULT_BYTE_BUDGET)
    }

    /// A ring of at most `capacity` records and `byte_budget` bytes (by [`Entry::size`]).
    pub fn with_budget(capacity: usize, byte_budget: usize) -> Self {
        let (feed, _) = broadcast::channel(1024);
        CallLog {
            ring: Mutex::new(Ring {
                entries: VecDeque::with_capacity(capacity.min(1024)),
                bytes: 0,
                spare: None,
            }),
            capacity,
            byte_budget,
            next_id: AtomicU64::new(1),
            feed,
            tally: Tally::new(),
        }
    }

    /// A fresh record id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// Record a finished call: count it, store its compact form (evicting the oldest past the
    /// count or byte bound), and send it to live subscribers.
    pub fn push(&self, record: Record) {
        self.tally
            .add(record.api, record.outcome, record.rule, record.duration_ms);
        let spare = self
            .ring
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .spare
            .take();
        let entry = match spare {
            Some(mut spare) => match Arc::get_mut(&mut spare) {
                Some(entry) => {
                    entry.refill(record);
                    spare
                }
                None => Arc::new(Entry::from_record(record)),
            },
            None => Arc::new(Entry::from_record(record)),
        };
        // No subscriber is not an error: nobody is watching the live feed.
        if self.feed.receiver_count() > 0 {
            if let Ok(json) = serde_json::to_vec(&*entry) {
                let _ = self.feed.send(Bytes::from(json));
            }
        }
        let mut evicted = Vec::new();
        {
            let mut ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
            ring.bytes += entry.size;
            ring.entries.push_back(entry);
            while ring.entries.len() > self.capacity || ring.bytes > self.byte_budget {
                let Some(old) = ring.entries.pop_front() else {
                    break;
                };
                ring.bytes -= old.size;
                if ring.spare.is_none() && Arc::strong_count(&old) == 1 {
                    ring.spare = Some(old);
                } else {
                    evicted.push(old);
                }
            }
        }
        // Freed here, outside the lock (or later, by a reader still holding them).
        drop(evicted);
    }

    /// The latest `limit` records, newest first.
    pub fn latest(&self, limit: usize) -> Vec<Arc<Entry>> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.entries.iter().rev().take(limit).cloned().collect()
    }

    /// Every record in the ring, oldest first.
    pub fn snapshot(&self) -> Vec<Arc<Entry>> {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        ring.entries.iter().cloned().collect()
    }

    /// Records in the ring, and the bytes they take (by [`Entry::size`]).
    pub fn usage(&self) -> (usize, usize) {
        let ring = self.ring.lock().unwrap_or_else(PoisonError::into_inner);
        (ring.entries.len(), ring.bytes)
    }

    /// A copy of the counters.
    pub fn counters(&self) -> Counters {
        self.tally.snapshot()
    }

    /// Live records from now on, each as its JSON.
    pub fn subscribe(&self) -> broadcast::Receiver<Bytes> {
        self.feed.subscribe()
    }
}

/// [`REDACTED`] as header names.
/// A time as RFC 3339 UTC.
fn rfc3339<S: serde::Serializer>(ts: &SystemTime, serializer: S) -> Result<S::Ok, S::Error> {
    time::serde::rfc3339::serialize(&time::OffsetDateTime::from(*ts), serializer)
}

static REDACTED_NAMES: [http::HeaderName; 4] = [
    http::header::AUTHORIZATION,
    http::header::COOKIE,
    http::header::PROXY_AUTHORIZATION,
    http::header::SET_COOKIE,
];

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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use http::{HeaderMap, HeaderName, HeaderValue};

    /// The names compared per header are the names the documentation lists.
    #[test]
    fn redacted_names_are_the_listed_ones() {
        let names: Vec<&str> = REDACTED_NAMES
            .iter()
            .map(http::HeaderName::as_str)
            .collect();
        assert_eq!(names, REDACTED);
    }

    fn record(log: &CallLog, url_len: usize, header_len: usize, headers: usize) -> Record {
        let mut request_headers = HeaderMap::new();
        request_headers.insert("authorization", HeaderValue::from_static("Bearer hunter2"));
        request_headers.insert(
            "x-big",
            HeaderValue::from_str(&"v".repeat(header_len)).unwrap(),
        );
        for i in 0..headers {
            request_headers.insert(
                HeaderName::from_bytes(format!("x-h{i}").as_bytes()).unwrap(),
                HeaderValue::from_static("1"),
            );
        }
        Record {
            id: log.next_id(),
            ts: SystemTime::now(),
            appid: Some("wx0123456789abcdef".into()),
            client: IpAddr::from([127, 0, 0, 1]),
            api: "request",
            method: "GET".into(),
            url: format!("https://api.example.com/?q={}", "u".repeat(url_len)).into(),
            outcome: Outcome::Refused,
            status: Some(403),
            errno: Some(600_002),
            errmsg: Some("request:fail url not in domain list".to_owned()),
            rule: Some("domain-list"),
            detail: Some("d".repeat(url_len)),
            queue_ms: 0,
            duration_ms: 7,
            bytes_up: 0,
            bytes_down: 0,
            network: Some("online".into()),
            request_headers: Headers::capture(&request_headers),
            response_headers: Headers::default(),
            http_version: "HTTP/1.1",
        }
    }

    /// An evicted entry nobody holds is written over by a later record (its memory recycled),
    /// with that record's own values; one a reader still holds is never touched.
    #[test]
    fn the_ring_recycles_only_entries_nobody_holds() {
        let log = CallLog::new(1);
        log.push(record(&log, 10, 10, 1));
        let held = log.latest(1).remove(0);
        let held_url = held.url.clone();
        let second = record(&log, 20, 5, 2);
        let second_id = second.id;
        log.push(second);
        let recyclable = Arc::as_ptr(&log.latest(1)[0]);
        // Evicts the second (nobody holds it): it becomes the spare.
        log.push(record(&log, 30, 5, 0));
        let mut fourth = record(&log, 40, 100, 3);
        fourth.outcome = Outcome::Ok;
        fourth.errmsg = None;
        let (fourth_id, fourth_url) = (fourth.id, fourth.url.to_string());
        log.push(fourth);
        let newest = log.latest(1).remove(0);
        assert_eq!(
            Arc::as_ptr(&newest),
            recyclable,
            "written into the evicted entry"
        );
        assert_ne!(second_id, fourth_id);
        assert_eq!(newest.id, fourth_id);
        assert_eq!(newest.url, fourth_url);
        assert_eq!(newest.outcome, Outcome::Ok);
        assert!(newest.errmsg.is_none());
        assert_eq!(newest.request_headers.len(), 5);
        assert_eq!(newest.request_headers.get("x-big").unwrap().len(), 100);
        assert_eq!(newest.size(), newest.measure());
        // The first, held all along, is as it was.
        assert_eq!(held.url, held_url);
        assert_eq!(held.request_headers.len(), 3);
        assert_eq!(log.usage().0, 1);
    }

    #[test]
    fn clip_marks_what_it_cut_at_a_char_boundary() {
        assert_eq!(&*clip("short", 10), "short");
        assert_eq!(&*clip("abcdef", 3), "abc…[truncated 3 bytes]");
        // "é" is two bytes: a cut inside it backs up to its start.
        assert_eq!(&*clip("aé", 2), "a…[truncated 2 bytes]");
        // Not UTF-8: the back-up stops after 3 bytes, the rest turns into U+FFFD.
        assert_eq!(&*clip_bytes(&[0x80; 10], 4), "\u{fffd}…[truncated 9 bytes]");
    }

    #[test]
    fn a_record_is_stored_clipped_and_redacted() {
        let log = CallLog::new(10);
        log.push(record(&log, 100_000, 300_000, 150));
        let e = &log.latest(1)[0];
        assert!(e.url.len() < MAX_URL_BYTES + 40, "{}", e.url.len());
        assert!(e.url.ends_with(&format!(
            "…[truncated {} bytes]",
            "https://api.example.com/?q=".len() + 100_000 - MAX_URL_BYTES
        )));
        assert!(e.detail.as_deref().unwrap().len() < MAX_TEXT_BYTES + 40);
        assert_eq!(e.request_headers.len(), MAX_HEADERS + 1);
        assert_eq!(
            e.request_headers.get("authorization").unwrap(),
            "<redacted>"
        );
        let big = e.request_headers.get("x-big").unwrap();
        assert!(big.len() < MAX_HEADER_VALUE_BYTES + 40);
        assert!(big.contains("…[truncated "));
        let (name, value) = e.request_headers.iter().last().unwrap();
        assert_eq!(name, TRUNCATED_HEADERS_NAME.as_bytes());
        assert_eq!(value, b"[truncated 52 headers]");
        // The size counts what is kept, far under what came in.
        assert!(e.size() < 16 * 1024, "{}", e.size());
        // The JSON of /api/log keeps the section 6 field names and no headers.
        let json: serde_json::Value = serde_json::to_value(&**e).unwrap();
        assert_eq!(json["errMsg"], "request:fail url not in domain list");
        assert!(json.get("request_headers").is_none());
    }

    /// A capture is the fields in order, each clipped and redacted as the rules say, for any
    /// count (on the stack, walked twice, cut at MAX_HEADERS), in one buffer of the size it
    /// needs: an oracle written from the rules, not from the code.
    #[test]
    fn a_capture_keeps_each_field_in_order_in_one_exact_buffer() {
        for count in [1, 2, 31, 32, 33, 99, 100, 101, 150] {
            let mut map = http::HeaderMap::new();
            for i in 0..count {
                let (name, value) = match i % 5 {
                    0 => ("cookie", format!("c{i}")),
                    1 => ("x-long", "v".repeat(MAX_HEADER_VALUE_BYTES + 7)),
                    2 => ("accept", format!("text/{i}")),
                    3 => ("set-cookie", String::new()),
                    _ => ("x-same", format!("{i}")),
                };
                map.append(
                    http::HeaderName::from_static(name),
                    http::HeaderValue::try_from(value).unwrap(),
                );
            }
            // HeaderMap groups repeated names after their first: the order the capture sees.
            let seen: Vec<(String, String)> = map
                .iter()
                .map(|(n, v)| (n.as_str().to_owned(), v.to_str().unwrap().to_owned()))
                .collect();
            assert_eq!(seen.len(), count);
            let headers = Headers::capture(&map);
            let kept: Vec<(String, String)> = headers
                .iter()
                .map(|(n, v)| {
                    (
                        String::from_utf8_lossy(n).into(),
                        String::from_utf8_lossy(v).into(),
                    )
                })
                .collect();
            assert_eq!(
                kept.len(),
                count.min(MAX_HEADERS) + usize::from(count > MAX_HEADERS)
            );
            for ((name, value), (kept_name, kept_value)) in seen.iter().take(MAX_HEADERS).zip(&kept)
            {
                assert_eq!(name, kept_name, "{count}");
                match name.as_str() {
                    "cookie" | "set-cookie" => assert_eq!(kept_value, "<redacted>"),
                    "x-long" => assert_eq!(
                        *kept_value,
                        format!("{}…[truncated 7 bytes]", "v".repeat(MAX_HEADER_VALUE_BYTES))
                    ),
                    _ => assert_eq!(kept_value, value),
                }
            }
            if count > MAX_HEADERS {
                let (name, value) = kept.last().unwrap();
                assert_eq!(name, TRUNCATED_HEADERS_NAME);
                assert_eq!(
                    *value,
                    format!("[truncated {} headers]", count - MAX_HEADERS)
                );
            }
            // Sized before it was filled: no growth, no more room than the marker's.
            assert!(headers.0.capacity() >= headers.0.len(), "{count}");
            assert!(
                headers.0.capacity() <= headers.0.len() + 48 + count * 40,
                "{count}: {} {}",
                headers.0.capacity(),
                headers.0.len()
            );
        }
        let mut map = http::HeaderMap::new();
        map.append("a", http::HeaderValue::from_static("1"));
        map.append("authorization", http::HeaderValue::from_static("x"));
        let unclipped = Headers::capture(&map);
        assert_eq!(unclipped.0, b"a\n1\nauthorization\n<redacted>\n");
        assert_eq!(unclipped.0.capacity(), unclipped.0.len());
    }

    #[test]
    fn the_ring_stays_under_its_byte_budget_and_keeps_the_newest() {
        let budget = 64 * 1024;
        let log = CallLog::with_budget(10_000, budget);
        let mut pushed_bytes = 0;
        let mut last_ids = Vec::new();
        for _ in 0..500 {
            let r = record(&log, 5_000, 5_000, 10);
            last_ids.push(r.id);
            pushed_bytes += r.url.len() + 5_000;
            log.push(r);
            let (_, bytes) = log.usage();
            assert!(bytes <= budget, "{bytes} > {budget}");
        }
        assert!(pushed_bytes > 20 * budget);
        let (count, bytes) = log.usage();
        assert!(count > 1 && count < 500, "{count}");
        assert_eq!(
            bytes,
            log.snapshot().iter().map(|e| e.size()).sum::<usize>()
        );
        // The newest are the ones kept, newest first, without gaps.
        let ids: Vec<u64> = log.latest(usize::MAX).iter().map(|e| e.id).collect();
        let expected: Vec<u64> = last_ids.iter().rev().take(count).copied().collect();
        assert_eq!(ids, expected);
        // The counters saw every call.
        let c = log.counters();
        assert_eq!(c.calls[&("request", "refused", "domain-list")], 500);
        assert_eq!(c.latency_count, 500);
    }

    #[test]
    fn the_count_cap_still_holds() {
        let log = CallLog::new(3);
        for _ in 0..10 {
            log.push(record(&log, 10, 10, 0));
        }
        assert_eq!(log.usage().0, 3);
        assert_eq!(log.latest(10)[0].id, 10);
    }

    #[test]
    fn counters_keep_unknown_values_and_a_cumulative_histogram() {
        let log = CallLog::new(3);
        let mut r = record(&log, 10, 10, 0);
        r.api = "somethingNew";
        r.duration_ms = 70_000;
        log.push(r);
        let mut r = record(&log, 10, 10, 0);
        r.duration_ms = 3;
        r.outcome = Outcome::Ok;
        r.rule = None;
        log.push(r);
        let c = log.counters();
        assert_eq!(c.calls[&("somethingNew", "refused", "domain-list")], 1);
        assert_eq!(c.calls[&("request", "ok", "")], 1);
        assert_eq!(c.latency_buckets[0], 1);
        assert_eq!(c.latency_buckets[LATENCY_BUCKETS.len() - 1], 1);
        assert_eq!(c.latency_count, 2);
        assert!((c.latency_sum_seconds - 70.003).abs() < 1e-9);
    }
}
