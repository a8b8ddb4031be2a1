//! What every connection and the control API share: the validated config, the CA and leaf cache,
//! the upstream clients, the run-time switches, and the shutdown handle.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use crate::calllog::CallLog;
use crate::config::Config;
use crate::instances::Instances;
use crate::policy::Switches;
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
    skip_domain_check: AtomicBool,
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
        Shared {
            instances: Instances::new(&config),
            log: CallLog::new(crate::calllog::DEFAULT_CAPACITY),
            config,
            ca,
            leaves,
            upstream,
            shutdown,
            skip_domain_check: AtomicBool::new(skip),
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
            lan_prefix: self.config.sandbox.lan_prefix,
        }
    }
}
