//! What every connection and the control API share: the validated config, the CA and leaf cache,
//! the upstream clients, the run-time switches, and the shutdown handle.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Instant;

use arc_swap::ArcSwap;

use crate::calllog::CallLog;
use crate::config::{Config, RefusalStyle};
use crate::instances::Instances;
use crate::policy::Switches;
use crate::proxy::upstream::Upstream;
use crate::shutdown::Shutdown;
use crate::tls::ca::CertificateAuthority;
use crate::tls::leaf::LeafCache;

#[derive(Debug)]
pub struct Shared {
    /// The config in force: replaced whole by a reload; a call keeps the one it started with.
    config: ArcSwap<Config>,
    pub ca: CertificateAuthority,
    pub leaves: LeafCache,
    /// The upstream clients, rebuilt when a reload changes `upstream:`.
    upstream: ArcSwap<Upstream>,
    /// How to read the config file again (set when it came from a file).
    pub reloader: OnceLock<crate::reload::Reloader>,
    /// The last reload's outcome, for the dashboard and `/api/state`.
    pub reload_status: Mutex<crate::reload::Status>,
    pub shutdown: Shutdown,
    pub instances: Instances,
    pub log: CallLog,
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
            config: ArcSwap::from_pointee(config),
            ca,
            leaves,
            upstream: ArcSwap::from_pointee(upstream),
            reloader: OnceLock::new(),
            reload_status: Mutex::new(crate::reload::Status::default()),
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
    pub fn reload_status(&self) -> crate::reload::Status {
        self.reload_status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    pub(crate) fn set_reload_status(&self, status: crate::reload::Status) {
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
