//! Config edits that apply without a restart: the file is read again when it changes (polled),
//! on SIGHUP, and on `POST /api/config/reload`. A new config is validated as `check-config`
//! does; if valid it replaces the old one at once (new calls are judged by it, calls in flight
//! keep their verdict, instances and the call log stay); if not, the old one stays and the
//! findings are kept for the dashboard and the reload endpoint. The listen addresses, the CA
//! and `proxy.max_connections` are not reloadable: a change to them is reported, not applied.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use tracing::{info, warn};

use crate::config::Config;
use crate::state::Shared;
pub use crate::state::{FindingView, Reloader, Status};
use crate::upstream::Upstream;

/// How often the config file is looked at.
pub const POLL: Duration = Duration::from_millis(500);

/// Why a reload did not happen.
#[derive(Debug, Clone, thiserror::Error)]
pub enum ReloadError {
    #[error("the config was not read from a file: nothing to reload")]
    NoFile,
    #[error("the new config has {} finding(s); the old one stays", .0.len())]
    Findings(Vec<FindingView>),
}

/// What a reload did.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub apps: usize,
    pub notes: Vec<String>,
}

/// Read the config file again and, if it is valid, put it in force.
///
/// # Errors
/// No file to read, or the new config has findings (the old one stays).
pub fn reload(shared: &Arc<Shared>) -> Result<Report, ReloadError> {
    let Some(reloader) = shared.reloader.get() else {
        return Err(ReloadError::NoFile);
    };
    let mut config = match Config::load(&reloader.path) {
        Ok(config) => config,
        Err(e) => return Err(failed(shared, e.findings.iter().map(Into::into).collect())),
    };
    (reloader.adjust)(&mut config);
    let old = shared.config();
    let notes = keep_fixed(&mut config, &old);
    if config.sandbox.skip_domain_check != old.sandbox.skip_domain_check {
        shared.set_skip_domain_check(config.sandbox.skip_domain_check);
    }
    if config.sandbox.refusal != old.sandbox.refusal {
        shared.set_refusal_style(config.sandbox.refusal);
    }
    let upstream = if config.upstream == old.upstream {
        None
    } else {
        match Upstream::new(&config.upstream) {
            Ok(upstream) => {
                upstream.forbid(shared.upstream().forbidden());
                Some(upstream)
            }
            Err(e) => {
                let finding = FindingView {
                    file: config.source.clone(),
                    line: None,
                    entry: "upstream.trust".to_owned(),
                    rule: "trust",
                    message: e.to_string(),
                };
                return Err(failed(shared, vec![finding]));
            }
        }
    };
    let apps = config.apps.len();
    shared.install(config, upstream);
    let reloads = shared.reload_status().reloads + 1;
    for note in &notes {
        warn!("{note}");
    }
    info!(apps, reloads, "config reloaded");
    // The prefetch hosts of the new config, resolved again in the background.
    let again = shared.clone();
    shared
        .shutdown
        .tracker
        .spawn(async move { again.prefetch_dns().await });
    shared.set_reload_status(Status {
        reloads,
        error: None,
        notes: notes.clone(),
    });
    Ok(Report { apps, notes })
}

fn failed(shared: &Shared, findings: Vec<FindingView>) -> ReloadError {
    for f in &findings {
        warn!(file = %f.file, line = ?f.line, rule = f.rule, entry = %f.entry, "config reload refused: {}", f.message);
    }
    let mut status = shared.reload_status();
    status.error = Some(findings.clone());
    shared.set_reload_status(status);
    ReloadError::Findings(findings)
}

/// What can't change without a restart keeps its old value; each change is reported.
fn keep_fixed(config: &mut Config, old: &Config) -> Vec<String> {
    let mut notes = Vec::new();
    let mut fixed = |what: &str, new: String, was: String| {
        if new != was {
            notes.push(format!(
                "{what} changed ({was} -> {new}): not reloadable, restart wxsandbox to apply"
            ));
        }
    };
    fixed(
        "proxy.listen",
        config.proxy.listen.to_string(),
        old.proxy.listen.to_string(),
    );
    fixed(
        "control.listen",
        config.control.listen.to_string(),
        old.control.listen.to_string(),
    );
    fixed(
        "ca.dir",
        config.ca.dir.display().to_string(),
        old.ca.dir.display().to_string(),
    );
    config.proxy.listen = old.proxy.listen;
    config.control.listen = old.control.listen;
    config.ca.dir.clone_from(&old.ca.dir);
    // Sized at start (fitted to the open-files limit).
    config.proxy.max_connections = old.proxy.max_connections;
    notes
}

/// Reload when the file changes (polled: works on bind mounts too) and on SIGHUP, until
/// shutdown. `last`: the file when watching began.
async fn watch(shared: Arc<Shared>, path: PathBuf, mut last: Option<Stamp>) {
    let token = shared.shutdown.token.clone();
    let mut hup = hangups();
    loop {
        let asked = tokio::select! {
            () = token.cancelled() => return,
            () = tokio::time::sleep(POLL) => false,
            () = next_hangup(&mut hup) => true,
        };
        let now = stamp(&path);
        if asked || now != last {
            last = now;
            let _ = reload(&shared);
        }
    }
}

/// What tells a changed file: modification time and length.
type Stamp = (SystemTime, u64);

fn stamp(path: &PathBuf) -> Option<Stamp> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len()))
}

#[cfg(unix)]
type Hangups = Option<tokio::signal::unix::Signal>;
#[cfg(not(unix))]
type Hangups = Option<()>;

#[cfg(unix)]
fn hangups() -> Hangups {
    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()).ok()
}

#[cfg(not(unix))]
fn hangups() -> Hangups {
    None
}

#[cfg(unix)]
async fn next_hangup(hup: &mut Hangups) {
    match hup {
        Some(s) => {
            if s.recv().await.is_none() {
                std::future::pending::<()>().await;
            }
        }
        None => std::future::pending::<()>().await,
    }
}

#[cfg(not(unix))]
async fn next_hangup(_: &mut Hangups) {
    std::future::pending::<()>().await;
}

/// Reload `path` on changes from now on, applying `adjust` (the command line) each time.
pub fn enable(shared: &Arc<Shared>, path: PathBuf, adjust: Box<dyn Fn(&mut Config) + Send + Sync>) {
    // The file as it is now: any later change, however soon, is seen.
    let last = stamp(&path);
    if shared
        .reloader
        .set(Reloader {
            path: path.clone(),
            adjust,
        })
        .is_ok()
    {
        shared
            .shutdown
            .tracker
            .spawn(watch(shared.clone(), path, last));
    }
}
