//! The YAML as written: serde structs that mirror SPEC section 2 one to one, unknown keys refused.
//! The only place that touches serde_yaml (it is archived; keep it swappable).
//!
//! serde_yaml gives no positions of values, so lines come from a second parser: `saphyr-parser`
//! emits events with markers, and `walk` follows them with the key path of every node
//! (`apps[0].domains.request[200]`). The same walk refuses nesting deeper than
//! [`super::MAX_DEPTH`] before serde_yaml ever sees the text.

use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use saphyr_parser::{Event, Parser, ScanError};
use serde::Deserialize;

use super::MAX_DEPTH;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    pub proxy: RawProxy,
    pub control: RawControl,
    pub ca: RawCa,
    pub upstream: RawUpstream,
    pub sandbox: RawSandbox,
    pub network: RawNetwork,
    pub apps: Vec<RawApp>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawNetwork {
    pub default: Option<String>,
    pub seed: Option<u64>,
    pub profiles: BTreeMap<String, RawProfile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProfile {
    pub latency_ms: Option<u64>,
    pub down_kbps: Option<u64>,
    pub up_kbps: Option<u64>,
    pub loss: Option<f64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawProxy {
    pub listen: Option<String>,
    pub clients: Option<Vec<String>>,
    pub idle_timeout_ms: Option<u64>,
    pub header_timeout_ms: Option<u64>,
    pub max_connections: Option<usize>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawControl {
    pub listen: Option<String>,
    pub token: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawCa {
    pub dir: Option<PathBuf>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawUpstream {
    pub trust: Vec<PathBuf>,
    pub map: Option<BTreeMap<String, String>>,
    pub strict_tls: Option<bool>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawSandbox {
    pub skip_domain_check: Option<bool>,
    pub lan_prefix: Option<u8>,
    pub refusal: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawApp {
    pub appid: Option<String>,
    /// `devtools`, `0` or a release number: a string or a number in YAML.
    pub version: Option<Scalar>,
    pub project: Option<PathBuf>,
    pub clients: Vec<String>,
    pub network_timeout: RawTimeouts,
    pub domains: RawDomains,
    pub business_domains: Vec<String>,
    pub limits: RawLimits,
    pub refusal: Option<String>,
}

/// A YAML scalar kept as text.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Text(String),
    Int(i64),
    Float(f64),
}

impl Scalar {
    pub fn text(&self) -> String {
        match self {
            Scalar::Text(s) => s.clone(),
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
        }
    }
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawTimeouts {
    pub request: Option<u64>,
    #[serde(rename = "connectSocket")]
    pub connect_socket: Option<u64>,
    #[serde(rename = "uploadFile")]
    pub upload_file: Option<u64>,
    #[serde(rename = "downloadFile")]
    pub download_file: Option<u64>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawDomains {
    pub request: Vec<String>,
    pub socket: Vec<String>,
    #[serde(rename = "uploadFile")]
    pub upload_file: Vec<String>,
    #[serde(rename = "downloadFile")]
    pub download_file: Vec<String>,
    pub tcp: Vec<String>,
    pub udp: Vec<String>,
    pub dns_prefetch: Vec<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawLimits {
    pub requests: Option<usize>,
    pub sockets: Option<usize>,
    pub overflow: Option<String>,
    pub background_grace_ms: Option<u64>,
    pub tcp_per_5min: Option<usize>,
    pub tcp_window_ms: Option<u64>,
}

/// Why text is not a [`RawConfig`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RawError {
    /// `syntax`, `unknown-key` or `too-deep`.
    pub rule: &'static str,
    /// The key named by the error, or what was refused.
    pub entry: String,
    pub message: String,
    /// 1-based.
    pub line: Option<usize>,
}

/// Parse YAML text: first the event walk (syntax, and nesting at most
/// [`super::MAX_DEPTH`]), then serde_yaml.
///
/// # Errors
/// Syntax errors, nesting too deep, wrong types, unknown keys.
pub fn parse(text: &str) -> Result<RawConfig, RawError> {
    if text.trim().is_empty() {
        return Ok(RawConfig::default());
    }
    walk(text, None)?;
    serde_yaml::from_str(text).map_err(|e| {
        let message = e.to_string();
        let rule = if message.contains("unknown field") {
            "unknown-key"
        } else {
            "syntax"
        };
        RawError {
            rule,
            entry: message.split('`').nth(1).unwrap_or("").to_owned(),
            line: e.location().map(|l| l.line()),
            message,
        }
    })
}

/// One step of a key path: a mapping key or a sequence index.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Seg {
    Key(Cow<'static, str>),
    Index(usize),
}

/// A key path in the YAML, e.g. `apps[0].domains.request[200]`.
pub type KeyPath = Vec<Seg>;

/// The paths asked for, as a tree, with the lines the walk found for them.
#[derive(Debug, Default)]
struct TrieNode {
    keys: HashMap<String, usize>,
    items: HashMap<usize, usize>,
    /// 1-based line of the mapping key, or of the sequence item.
    at: Option<usize>,
    /// For a mapping entry: 1-based line where its value starts.
    value: Option<usize>,
}

/// Lines of the nodes asked for by [`locate`].
#[derive(Debug)]
pub struct Lines {
    /// `nodes[0]` is the document root.
    nodes: Vec<TrieNode>,
}

impl Lines {
    fn new() -> Self {
        Lines {
            nodes: vec![TrieNode::default()],
        }
    }

    fn insert(&mut self, path: &[Seg]) {
        let mut node = 0;
        for seg in path {
            let existing = match seg {
                Seg::Key(k) => self.nodes[node].keys.get(k.as_ref()),
                Seg::Index(i) => self.nodes[node].items.get(i),
            };
            node = if let Some(&child) = existing {
                child
            } else {
                let child = self.nodes.len();
                self.nodes.push(TrieNode::default());
                match seg {
                    Seg::Key(k) => self.nodes[node].keys.insert(k.to_string(), child),
                    Seg::Index(i) => self.nodes[node].items.insert(*i, child),
                };
                child
            };
        }
    }

    /// The line of `path` (its value's line when `value` and the entry is a mapping entry),
    /// else of its nearest ancestor that is written in the text (a value that came from a
    /// default or through an alias); `None` when not even the top-level key is there.
    pub fn line(&self, path: &[Seg], value: bool) -> Option<usize> {
        let mut node = 0;
        let mut found = None;
        for (n, seg) in path.iter().enumerate() {
            let child = match seg {
                Seg::Key(k) => self.nodes[node].keys.get(k.as_ref()),
                Seg::Index(i) => self.nodes[node].items.get(i),
            };
            let Some(&child) = child else {
                break;
            };
            node = child;
            let here = &self.nodes[node];
            let last = n + 1 == path.len();
            found = match (last && value, here.value, here.at) {
                (true, Some(line), _) => Some(line),
                (_, _, Some(line)) => Some(line),
                _ => found,
            };
        }
        found
    }
}

/// The lines of `paths` (and of their ancestors), from one event walk of `text`.
pub fn locate<'p>(text: &str, paths: impl IntoIterator<Item = &'p [Seg]>) -> Lines {
    let mut lines = Lines::new();
    for path in paths {
        lines.insert(path);
    }
    // Text that reached validation has been walked already: an error here can't happen, and
    // what was located before it is kept.
    let _ = walk(text, Some(&mut lines));
    lines
}

/// A collection being walked.
struct Frame<'input> {
    kind: FrameKind<'input>,
    /// Its node among the paths asked for; `None` when nothing under it was asked for (or it
    /// is a key, or inside one).
    node: Option<usize>,
}

enum FrameKind<'input> {
    Seq { next: usize },
    Map { state: MapState<'input> },
}

enum MapState<'input> {
    /// The next node is a key.
    Key,
    /// The next node is the value of this key (`None`: a key that is not a scalar).
    Value(Option<Cow<'input, str>>),
}

/// Walk the events of `text`, refusing nesting deeper than [`MAX_DEPTH`]; with `lines`,
/// record the line of every node whose path was asked for.
///
/// # Errors
/// A syntax error of the event parser, or nesting too deep.
fn walk(text: &str, mut lines: Option<&mut Lines>) -> Result<(), RawError> {
    let mut parser = Parser::new_from_str(text);
    let mut frames: Vec<Frame<'_>> = Vec::new();
    while let Some(event) = parser.next_event() {
        let (event, span) = event.map_err(scan_error)?;
        let line = span.start.line();
        let (collection, scalar) = match &event {
            Event::Scalar(value, ..) => (false, Some(value.clone())),
            Event::Alias(_) => (false, None),
            Event::SequenceStart(..) | Event::MappingStart(..) => (true, None),
            Event::SequenceEnd | Event::MappingEnd => {
                frames.pop();
                continue;
            }
            Event::StreamEnd => break,
            Event::Nothing | Event::StreamStart | Event::DocumentStart(_) | Event::DocumentEnd => {
                continue
            }
        };
        // This node's place among the paths asked for.
        let node = match frames.last_mut() {
            // The root of a document.
            None => lines.as_ref().map(|_| 0),
            Some(Frame {
                kind: FrameKind::Seq { next },
                node: parent,
            }) => {
                let index = *next;
                *next += 1;
                let child = match (&mut lines, *parent) {
                    (Some(lines), Some(parent)) => lines.nodes[parent].items.get(&index).copied(),
                    _ => None,
                };
                if let (Some(lines), Some(child)) = (&mut lines, child) {
                    lines.nodes[child].at.get_or_insert(line);
                }
                child
            }
            Some(Frame {
                kind: FrameKind::Map { state },
                node: parent,
            }) => match std::mem::replace(state, MapState::Key) {
                MapState::Key => {
                    if let (Some(lines), Some(parent), Some(key)) = (&mut lines, *parent, &scalar) {
                        if let Some(&child) = lines.nodes[parent].keys.get(key.as_ref()) {
                            // The first wins (a duplicate key is serde_yaml's to report).
                            lines.nodes[child].at.get_or_insert(line);
                        }
                    }
                    *state = MapState::Value(scalar.clone());
                    // A key that is a collection: nothing under it is a config path.
                    None
                }
                MapState::Value(key) => {
                    let child = match (&mut lines, *parent, key) {
                        (Some(lines), Some(parent), Some(key)) => {
                            lines.nodes[parent].keys.get(key.as_ref()).copied()
                        }
                        _ => None,
                    };
                    if let (Some(lines), Some(child)) = (&mut lines, child) {
                        lines.nodes[child].value.get_or_insert(line);
                    }
                    child
                }
            },
        };
        if collection {
            if frames.len() >= MAX_DEPTH {
                return Err(too_deep(line));
            }
            let kind = match event {
                Event::SequenceStart(..) => FrameKind::Seq { next: 0 },
                _ => FrameKind::Map {
                    state: MapState::Key,
                },
            };
            frames.push(Frame { kind, node });
        }
    }
    Ok(())
}

fn too_deep(line: usize) -> RawError {
    RawError {
        rule: "too-deep",
        entry: "nesting".to_owned(),
        message: format!(
            "sequences and mappings nested deeper than {MAX_DEPTH} levels at line {line}; \
             no config needs more than 5"
        ),
        line: Some(line),
    }
}

fn scan_error(e: ScanError) -> RawError {
    let line = e.marker().line();
    // The scanner's own guard on flow nesting (255 levels): the same refusal as ours.
    if e.info().contains("recursion limit") {
        return too_deep(line);
    }
    RawError {
        rule: "syntax",
        entry: String::new(),
        message: format!(
            "{} at line {line} column {}",
            e.info(),
            e.marker().col() + 1
        ),
        line: Some(line),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn k(key: &'static str) -> Seg {
        Seg::Key(Cow::Borrowed(key))
    }

    fn lines_of(text: &str, paths: &[KeyPath]) -> Lines {
        locate(text, paths.iter().map(Vec::as_slice))
    }

    #[test]
    fn config_paths_get_the_lines_of_their_own_nodes() {
        let text = "\
apps:
  - appid: wx0123456789abcdef
    network_timeout: {request: 5}
    domains:
      request:
        - https://a.com
      socket: [wss://a.com,
        wss://b.com]
upstream:
  map:
    a.com:
      http://b:80
";
        let app = |rest: &[Seg]| -> KeyPath {
            [k("apps"), Seg::Index(0)]
                .iter()
                .chain(rest)
                .cloned()
                .collect()
        };
        let timeout = app(&[k("network_timeout"), k("request")]);
        let request = app(&[k("domains"), k("request")]);
        let item = app(&[k("domains"), k("request"), Seg::Index(0)]);
        let socket1 = app(&[k("domains"), k("socket"), Seg::Index(1)]);
        let map = vec![
            k("upstream"),
            k("map"),
            Seg::Key(Cow::Owned("a.com".into())),
        ];
        let missing = app(&[k("domains"), k("tcp"), Seg::Index(0)]);
        let lines = lines_of(
            text,
            &[
                timeout.clone(),
                request.clone(),
                item.clone(),
                socket1.clone(),
                map.clone(),
                missing.clone(),
            ],
        );
        assert_eq!(lines.line(&timeout, false), Some(3));
        assert_eq!(lines.line(&request, false), Some(5));
        assert_eq!(lines.line(&item, false), Some(6));
        assert_eq!(lines.line(&socket1, false), Some(8));
        assert_eq!(lines.line(&map, false), Some(11));
        assert_eq!(lines.line(&map, true), Some(12));
        // Not written: the nearest written ancestor (`domains`).
        assert_eq!(lines.line(&missing, false), Some(4));
        assert_eq!(lines.line(&[k("proxy"), k("listen")], false), None);
    }

    #[test]
    fn config_keys_that_are_collections_hide_what_is_under_them() {
        // `? [request]` is a key, not the path `request`; the real `request` is on line 3.
        let text = "? [request]\n: x\nrequest: [a]\n";
        let path = vec![k("request"), Seg::Index(0)];
        let lines = lines_of(text, std::slice::from_ref(&path));
        assert_eq!(lines.line(&path, false), Some(3));
    }

    #[test]
    fn config_nesting_deeper_than_the_limit_is_refused_before_serde() {
        let ok = format!(
            "a: {}{}\n",
            "[".repeat(MAX_DEPTH - 1),
            "]".repeat(MAX_DEPTH - 1)
        );
        assert_eq!(walk(&ok, None), Ok(()));
        let deep = format!("a:\n  {}\n", "[".repeat(MAX_DEPTH));
        let err = walk(&deep, None).unwrap_err();
        assert_eq!((err.rule, err.line), ("too-deep", Some(2)));
        // Past the scanner's own limit (255 flow levels) the refusal is the same.
        let err = parse(&"{".repeat(100_000)).unwrap_err();
        assert_eq!((err.rule, err.line), ("too-deep", Some(1)));
        let err = parse("a: [b\n").unwrap_err();
        assert_eq!(err.rule, "syntax");
    }
}
