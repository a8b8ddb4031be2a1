//! What every connection and the control API share: the validated config, the CA and leaf cache,
//! the upstream clients, the run-time switches, the DNS prefetch results, and the shutdown handle.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::time::Instant;

use crate::calllog::CallLog;
use crate::config::{Config, RefusalStyle};
use crate::instances::Instances;
use crate::policy::Switches;
use crate::prefetch::Prefetch;
use crate::proxy::upstream::Upstream;
use crate::shutdown::Shutdown;
use crate::tls::ca::CertificateAuthority;
use crate::tls::leaf::LeafCache;

#[derive(Debug)]
pub struct Shared {
    pub config: Config,
    pub ca: CertificateAuthority,
    pub leaves: LeafCache,
    pub upstream: Upstream,
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
            config,
            ca,
            leaves,
            upstream,
            shutdown,
            started: Instant::now(),
            skip_domain_check: AtomicBool::new(skip),
            refusal,
            refused: AtomicU64::new(0),
        }
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
        tokio::select! {
            () = self.prefetch.refresh(&self.config.apps, &self.upstream) => {}
            () = self.shutdown.token.cancelled() => {}
        }
    }

    /// The switches a verdict depends on, read once per call.
    pub fn switches(&self) -> Switches {
        Switches {
            skip_domain_check: self.skip_domain_check(),
            lan_prefix: self.config.sandbox.lan_prefix,
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
