//! DNS prefetch (`domains.dns_prefetch`): the platform resolves these hosts when the mini
//! program starts, so the first calls skip the lookup. wxsandbox does the same at start-up,
//! routed as calls are (`upstream.map` first, so a mapped host resolves its target's host), each
//! lookup bounded by [`LOOKUP_TIMEOUT`], and keeps what each gave for `GET /api/state` and the
//! dashboard.
//!
//! A prefetch host in none of the app's lists is resolved all the same (the admin console takes
//! it), but a call to it is still refused: that is warned at start and shown with the result.
//!
//! Owns the results only; it is started (and cancelled at shutdown) by the caller.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use futures_util::future::join_all;
use serde::Serialize;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::AppConfig;
use crate::upstream::Upstream;

/// How long one host may take to resolve.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(3);

/// What resolving one prefetch host gave.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct PrefetchResult {
    /// As configured.
    pub host: String,
    /// IP addresses (no port), in the resolver's order, each once; empty on error.
    pub addresses: Vec<String>,
    /// How long the lookup took.
    pub ms: u64,
    /// Why the host did not resolve.
    pub error: Option<String>,
    /// Set when the host is in none of the app's lists: resolved, but calls to it are refused.
    pub warning: Option<String>,
}

/// The latest results per appid; an app is there once all its hosts were looked up.
#[derive(Debug, Default)]
pub struct Prefetch {
    results: Mutex<HashMap<String, Vec<PrefetchResult>>>,
}

impl Prefetch {
    /// The results of `appid`, in config order; empty until its lookups are done.
    pub fn get(&self, appid: &str) -> Vec<PrefetchResult> {
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(appid)
            .cloned()
            .unwrap_or_default()
    }

    /// Resolve every app's prefetch hosts (all at once, each within [`LOOKUP_TIMEOUT`]) and keep
    /// the results; apps no longer in `apps` are forgotten. Hosts in none of their app's lists
    /// are warned about as their lookups start. Cancel-safe: results of finished apps are kept.
    pub async fn refresh(&self, apps: &[AppConfig], upstream: &Upstream) {
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .retain(|appid, _| apps.iter().any(|a| &a.appid == appid));
        join_all(apps.iter().map(|app| self.refresh_app(app, upstream))).await;
    }

    async fn refresh_app(&self, app: &AppConfig, upstream: &Upstream) {
        let lookups = app.domains.dns_prefetch.iter().map(|host| async move {
            let warning = (!listed(app, host)).then(|| unlisted_warning(host));
            if let Some(w) = &warning {
                warn!(app = %app.appid, host = %host, "{w}");
            }
            let mut result = resolve(host, upstream).await;
            result.warning = warning;
            match &result.error {
                None => info!(app = %app.appid, host = %host, ms = result.ms,
                    addresses = ?result.addresses, "dns prefetch"),
                Some(e) => warn!(app = %app.appid, host = %host, ms = result.ms, error = %e,
                    "dns prefetch failed"),
            }
            result
        });
        let results = join_all(lookups).await;
        self.results
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(app.appid.clone(), results);
    }
}

/// Look `host` up where calls to it go: its `upstream.map` target's host, else itself.
async fn resolve(host: &str, upstream: &Upstream) -> PrefetchResult {
    let route = upstream.route(host, 443, true);
    let target = route
        .dial_host
        .trim_start_matches('[')
        .trim_end_matches(']');
    let via = if target == host {
        String::new()
    } else {
        format!(" (mapped to {target})")
    };
    let started = Instant::now();
    let looked_up = tokio::time::timeout(
        LOOKUP_TIMEOUT,
        tokio::net::lookup_host((target, route.dial_port)),
    )
    .await;
    let ms = u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX);
    let (addresses, error) = match looked_up {
        Ok(Ok(found)) => {
            let mut addresses: Vec<String> = Vec::new();
            for ip in found.map(|a| a.ip().to_string()) {
                if !addresses.contains(&ip) {
                    addresses.push(ip);
                }
            }
            let error = addresses
                .is_empty()
                .then(|| format!("{host}{via} resolved to no address"));
            (addresses, error)
        }
        Ok(Err(e)) => (
            Vec::new(),
            Some(format!("{host}{via} did not resolve: {e}")),
        ),
        Err(_) => (
            Vec::new(),
            Some(format!(
                "{host}{via} did not resolve within {} ms",
                LOOKUP_TIMEOUT.as_millis()
            )),
        ),
    };
    PrefetchResult {
        host: host.to_owned(),
        addresses,
        ms,
        error,
        warning: None,
    }
}

/// Whether `host` is in one of the lists a call to it could match (udp is not proxied).
fn listed(app: &AppConfig, host: &str) -> bool {
    let d = &app.domains;
    [
        &d.request,
        &d.upload_file,
        &d.download_file,
        &d.socket,
        &d.tcp,
    ]
    .iter()
    .any(|list| list.iter().any(|origin| origin.host == host))
}

fn unlisted_warning(host: &str) -> String {
    format!(
        "{host} is in dns_prefetch but in none of the app's lists (request, uploadFile, \
         downloadFile, socket, tcp): the platform resolves it, but a call to it will still be \
         refused (domain-list)"
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn app(domains: &str) -> AppConfig {
        let yaml = format!("apps:\n  - appid: wx0123456789abcdef\n    domains: {domains}\n");
        let config = Config::from_yaml_str(&yaml, "t.yaml").unwrap_or_else(|e| panic!("{e}"));
        config.apps[0].clone()
    }

    #[test]
    fn listed_means_the_host_of_any_list_but_udp_whatever_the_port() {
        let a = app(
            "{request: ['https://a.com:8443'], uploadFile: [https://u.com], \
             downloadFile: [https://d.com], socket: [wss://s.com], tcp: ['t.com:9000'], \
             udp: [x.com], dns_prefetch: [a.com]}",
        );
        for host in ["a.com", "u.com", "d.com", "s.com", "t.com"] {
            assert!(listed(&a, host), "{host}");
        }
        for host in ["x.com", "b.com", "com", "aa.com", "sub.a.com"] {
            assert!(!listed(&a, host), "{host}");
        }
    }
}
