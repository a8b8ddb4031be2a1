//! What the control API may touch of the running proxy, and nothing else: the call log, the app
//! instances, the run-time switches, the CA, the config (read and reload), the DNS prefetch, the
//! leaf cache's counters and the shutdown token. Not the upstream clients, not a connection.

use std::sync::Arc;

use crate::calllog::CallLog;
use crate::config::{Config, RefusalStyle};
use crate::instances::Instances;
use crate::prefetch::Prefetch;
use crate::reload::{self, ReloadError, Report};
use crate::shutdown::Shutdown;
use crate::state::{Shared, Status};
use crate::tls::ca::CertificateAuthority;

/// The control API's view of the proxy.
#[derive(Debug, Clone)]
pub struct Handle(Arc<Shared>);

impl Handle {
    pub fn new(shared: Arc<Shared>) -> Handle {
        Handle(shared)
    }

    pub fn log(&self) -> &CallLog {
        &self.0.log
    }

    pub fn instances(&self) -> &Instances {
        &self.0.instances
    }

    pub fn ca(&self) -> &CertificateAuthority {
        &self.0.ca
    }

    pub fn config(&self) -> Arc<Config> {
        self.0.config()
    }

    pub fn prefetch(&self) -> &Prefetch {
        &self.0.prefetch
    }

    pub fn shutdown(&self) -> &Shutdown {
        &self.0.shutdown
    }

    pub fn skip_domain_check(&self) -> bool {
        self.0.skip_domain_check()
    }

    pub fn set_skip_domain_check(&self, enabled: bool) {
        self.0.set_skip_domain_check(enabled);
    }

    pub fn refusal_style(&self) -> RefusalStyle {
        self.0.refusal_style()
    }

    pub fn set_refusal_style(&self, style: RefusalStyle) {
        self.0.set_refusal_style(style);
    }

    pub fn reload_status(&self) -> Status {
        self.0.reload_status()
    }

    /// Read the config file again and apply it (see [`reload::reload`]).
    pub fn reload(&self) -> Result<Report, ReloadError> {
        reload::reload(&self.0)
    }

    /// Leaf cache (hits, misses), for `/metrics`.
    pub fn leaf_counts(&self) -> (u64, u64) {
        (self.0.leaves.hits(), self.0.leaves.misses())
    }
}
