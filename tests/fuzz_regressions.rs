//! The fuzz targets' inputs worth keeping, replayed on the stable toolchain through the same
//! harness the fuzzers run (fuzz/harness.rs): every file of `fuzz/regressions/<target>/` (inputs
//! that once crashed or broke an oracle) and of the seed corpus `fuzz/seeds/<target>/`.
//! No panic, and every oracle holds; bugs already reported (the harness's `KNOWN` kinds) are
//! tolerated here and checked strictly by the `bug_*` tests below, one per bug (all four are
//! fixed: they run in every `cargo test`).

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;
#[path = "../fuzz/harness.rs"]
#[allow(dead_code)]
mod harness;

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use harness::Mode;

type Run = fn(&[u8], Mode);

/// The files of `fuzz/<kind>/<target>/` whose names start with `prefix`, sorted.
fn files(kind: &str, target: &str, prefix: &str) -> Vec<PathBuf> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("fuzz")
        .join(kind)
        .join(target);
    let mut out: Vec<PathBuf> = match std::fs::read_dir(&dir) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.is_file())
            .filter(|p| {
                p.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(prefix) && !n.ends_with(".md"))
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    out.sort();
    out
}

/// Run every file through `run`; one assertion naming every file that panicked.
fn replay(paths: &[PathBuf], run: Run, mode: Mode) -> usize {
    let failed: Vec<String> = paths
        .iter()
        .filter_map(|path| {
            let data = std::fs::read(path).expect("read a fuzz input");
            catch_unwind(AssertUnwindSafe(|| run(&data, mode)))
                .err()
                .map(|e| {
                    let why = e
                        .downcast_ref::<String>()
                        .cloned()
                        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
                        .unwrap_or_default();
                    format!("{}: {why}", path.display())
                })
        })
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} inputs failed:\n{}",
        failed.len(),
        paths.len(),
        failed.join("\n")
    );
    paths.len()
}

fn all(target: &str, run: Run) {
    let mut paths = files("regressions", target, "");
    paths.extend(files("seeds", target, ""));
    replay(&paths, run, Mode::Fuzz);
}

/// A reported bug: its inputs, strictly (fails until the bug is fixed).
fn bug(target: &str, kind: &str, run: Run) {
    let paths = files("regressions", target, &format!("bug-{kind}-"));
    assert!(
        !paths.is_empty(),
        "no fuzz/regressions/{target}/bug-{kind}-* input"
    );
    replay(&paths, run, Mode::Strict);
}

#[test]
fn judge() {
    all("judge", harness::judge::run);
}

#[test]
fn wsframes() {
    all("wsframes", harness::wsframes::run);
}

#[test]
fn decode() {
    all("decode", harness::decode::run);
}

#[test]
fn config() {
    all("config", harness::config::run);
}

#[test]
fn project() {
    all("project", harness::project::run);
}

#[test]
fn audit() {
    all("audit", harness::audit::run);
}

/// The hand-written oracle lists are the fuzz config's (checked when the config is built).
#[test]
fn fuzz_config_is_the_oracles() {
    let _ = harness::judge::config();
}

#[test]
fn bug_ipv4_mapped_lan() {
    bug("judge", "ipv4-mapped-lan", harness::judge::run);
}

#[test]
fn bug_trailing_dots() {
    bug("judge", "trailing-dots", harness::judge::run);
}

#[test]
fn bug_config_host() {
    bug("config", "config-host", harness::config::run);
}

#[test]
fn bug_decode_split_malformed() {
    bug("decode", "decode-split-malformed", harness::decode::run);
}

// Found while writing the harness (on b79cd87; fixed since by admit.rs's check_hint), in the
// proxy around the pure functions: end to end, through a running proxy.

/// SPEC 3: the `X-Wxsandbox-Url` hint "refines how the URL was written, never where the call
/// goes": one naming another target than the request's is refused 400/600009 invalid-url.
/// A listed hint must not take a call anywhere: here to the client's own address, refused
/// without the hint.
#[tokio::test]
async fn hint_naming_another_target_is_refused() {
    let (proxy, _backend, _ca) = common::setup(None).await;
    let plain = common::start_backend(None).await;
    let url = format!("http://127.0.0.1:{}/bytes/3", plain.addr.port());
    let c = common::client(&proxy);
    let bare = c.get(&url).send().await.unwrap();
    assert_eq!(bare.status(), 403, "the client's own address is refused");
    let hinted = c
        .get(&url)
        .header("x-wxsandbox-url", "https://api.example.com/")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.count(), 0, "the call reached 127.0.0.1");
    assert_eq!(
        hinted.status(),
        400,
        "a hint naming another target is invalid-url"
    );
}
