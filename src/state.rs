//! What every connection and the control API share: the validated config, the CA and leaf cache,
//! the upstream clients, the run-time switches, the DNS prefetch results, and the shutdown handle.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;
use serde::Serialize;

use crate::calllog::CallLog;
use crate::config::{Config, Finding, RefusalStyle};
use crate::instances::Instances;
use crate::policy::Switches;
use crate::prefetch::Prefetch;
use crate::shutdown::Shutdown;
use crate::tls::ca::CertificateAuthority;
use crate::tls::leaf::LeafCache;
use crate::upstream::Upstream;

#[derive(Debug)]
pub struct Shared {
    /// The config in force: replaced whole by a reload; a call keeps the one it started with.
    config: ArcSwap<Config>,
    pub ca: CertificateAuthority,
    pub leaves: LeafCache,
    /// The upstream clients, rebuilt when a reload changes `upstream:`.
    upstream: ArcSwap<Upstream>,
    /// How to read the config file again (set when it came from a file).
    pub reloader: OnceLock<Reloader>,
    /// The last reload's outcome, for the dashboard and `/api/state`.
    pub reload_status: Mutex<Status>,
    pub shutdown: Shutdown,
    pub instances: Instances,
    pub log: CallLog,
    /// What resolving each app's `domains.dns_prefetch` gave (see [`Shared::prefetch_dns`]).
    pub prefetch: Prefetch,
    /// Refusals a browser is expected to resend (recorded once).
    pub resends: crate::resend::Resends,
    /// When the proxy started.
    pub started: Instant,
    skip_domain_check: AtomicBool,
    /// `sandbox.refusal`, switchable at run time.
    refusal: AtomicU8,
    refused: AtomicU64,
}

impl Shared {
    pub fn new(
        config: Config,
        ca: CertificateAuthority,
        leaves: LeafCache,
        upstream: Upstream,
        shutdown: Shutdown,
    ) -> Self {
        let skip = config.sandbox.skip_domain_check;
        let refusal = AtomicU8::new(style_code(config.sandbox.refusal));
        Shared {
            instances: Instances::new(&config),
            log: CallLog::new(crate::calllog::DEFAULT_CAPACITY),
            resends: crate::resend::Resends::default(),
            prefetch: Prefetch::default(),
            config: ArcSwap::from_pointee(config),
            ca,
            leaves,
            upstream: ArcSwap::from_pointee(upstream),
            reloader: OnceLock::new(),
            reload_status: Mutex::new(Status::default()),
            shutdown,
            started: Instant::now(),
            skip_domain_check: AtomicBool::new(skip),
            refusal,
            refused: AtomicU64::new(0),
        }
    }

    /// The config in force now (a call holds on to the one it started with).
    pub fn config(&self) -> Arc<Config> {
        self.config.load_full()
    }

    /// The upstream clients in force now.
    pub fn upstream(&self) -> Arc<Upstream> {
        self.upstream.load_full()
    }

    /// Put a new config (and, when `upstream:` changed, new upstream clients) in force.
    pub(crate) fn install(&self, config: Config, upstream: Option<Upstream>) {
        self.instances.reconfigure(&config);
        if let Some(upstream) = upstream {
            self.upstream.store(Arc::new(upstream));
        }
        self.config.store(Arc::new(config));
    }

    /// The last reload's outcome.
    pub fn reload_status(&self) -> Status {
        self.reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_reload_status(&self, status: Status) {
        *self
            .reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = status;
    }

    /// The "skip domain check" switch (rules 3-4 and the TLS audit), flippable at run time.
    pub fn skip_domain_check(&self) -> bool {
        self.skip_domain_check.load(Ordering::Relaxed)
    }

    pub fn set_skip_domain_check(&self, enabled: bool) {
        self.skip_domain_check.store(enabled, Ordering::Relaxed);
    }

    /// The global refusal style (`sandbox.refusal`, or as switched at run time).
    pub fn refusal_style(&self) -> RefusalStyle {
        match self.refusal.load(Ordering::Relaxed) {
            1 => RefusalStyle::Fail,
            2 => RefusalStyle::Answer,
            _ => RefusalStyle::Auto,
        }
    }

    pub fn set_refusal_style(&self, style: RefusalStyle) {
        self.refusal.store(style_code(style), Ordering::Relaxed);
    }

    /// Count a refused call (for `--fail-on-refusal`).
    pub fn count_refusal(&self) {
        self.refused.fetch_add(1, Ordering::Relaxed);
    }

    /// Calls refused since start (every rule: lists, limits, timeouts, upstream failures).
    pub fn refused_total(&self) -> u64 {
        self.refused.load(Ordering::Relaxed)
    }

    /// Resolve every app's DNS prefetch hosts as calls are routed and keep the results; ends
    /// early at shutdown. Run at start; a config reload runs it again.
    pub async fn prefetch_dns(&self) {
        let (config, upstream) = (self.config(), self.upstream());
        tokio::select! {
            () = self.prefetch.refresh(&config.apps, &upstream) => {}
            () = self.shutdown.token.cancelled() => {}
        }
    }

    /// The switches a verdict depends on, read once per call.
    pub fn switches(&self) -> Switches {
        Switches {
            skip_domain_check: self.skip_domain_check(),
            lan_prefix: self.config.load().sandbox.lan_prefix,
        }
    }
}

fn style_code(style: RefusalStyle) -> u8 {
    match style {
        RefusalStyle::Auto => 0,
        RefusalStyle::Fail => 1,
        RefusalStyle::Answer => 2,
    }
}

/// Where the config comes from, and the command-line overrides to apply again on each reload.
pub struct Reloader {
    pub path: PathBuf,
    pub adjust: Box<dyn Fn(&mut Config) + Send + Sync>,
}

impl std::fmt::Debug for Reloader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloader")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

/// A finding as the dashboard and the reload endpoint show it.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct FindingView {
    pub file: String,
    pub line: Option<usize>,
    pub entry: String,
    pub rule: &'static str,
    pub message: String,
}

impl From<&crate::config::Finding> for FindingView {
    fn from(f: &Finding) -> Self {
        FindingView {
            file: f.file.clone(),
            line: f.line,
            entry: f.entry.clone(),
            rule: f.rule,
            message: f.message.clone(),
        }
    }
}

/// The last reload, for `/api/state` and the dashboard's banner.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Status {
    /// Successful reloads since start.
    pub reloads: u64,
    /// Set when the last attempt failed: the old config is still in force.
    pub error: Option<Vec<FindingView>>,
    /// What a successful reload could not apply (listen addresses, CA...).
    pub notes: Vec<String>,
}
