//! `GET /api/config` (the config in force, token redacted) and `POST /api/config/reload`
//! (read the file again: 200 with what changed, or 422 with the findings; the old config stays).

use http::{Response, StatusCode};
use serde_json::{json, Value};

use super::Handle;
use crate::config::{AppConfig, Config, MapTarget, Origin};
use crate::reload::ReloadError;
use crate::web::body::Body;

pub(super) fn get(shared: &Handle) -> Response<Body> {
    super::json(StatusCode::OK, config_json(&shared.config()).to_string())
}

pub(super) fn reload(shared: &Handle) -> Response<Body> {
    match shared.reload() {
        Ok(report) => super::json(
            StatusCode::OK,
            json!({"ok": true, "apps": report.apps, "notes": report.notes}).to_string(),
        ),
        Err(ReloadError::Findings(findings)) => super::json(
            StatusCode::UNPROCESSABLE_ENTITY,
            json!({"ok": false, "error": "the new config has findings; the old one stays in force", "findings": findings})
                .to_string(),
        ),
        Err(e @ ReloadError::NoFile) => super::json(
            StatusCode::CONFLICT,
            json!({"ok": false, "error": e.to_string()}).to_string(),
        ),
    }
}

/// The config in force as JSON, the control token redacted.
pub(super) fn config_json(c: &Config) -> Value {
    let list = |l: &[Origin]| l.iter().map(ToString::to_string).collect::<Vec<_>>();
    let map: serde_json::Map<String, Value> = c
        .upstream
        .map
        .iter()
        .map(|(host, to)| {
            let to = match to {
                MapTarget::PlainHttp { host, port } => format!("http://{host}:{port}"),
                MapTarget::Tls { host, port } => format!("{host}:{port}"),
            };
            (host.clone(), Value::String(to))
        })
        .collect();
    let app = |a: &AppConfig| {
        let ms = |d: Option<std::time::Duration>| d.map(|d| d.as_millis() as u64);
        json!({
            "appid": a.appid,
            "version": a.version,
            "clients": a.clients.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "refusal": a.refusal.map(|r| r.as_str()),
            "network_timeout": {
                "request": ms(a.network_timeout.request),
                "connectSocket": ms(a.network_timeout.connect_socket),
                "uploadFile": ms(a.network_timeout.upload_file),
                "downloadFile": ms(a.network_timeout.download_file),
            },
            "domains": {
                "request": list(&a.domains.request),
                "socket": list(&a.domains.socket),
                "uploadFile": list(&a.domains.upload_file),
                "downloadFile": list(&a.domains.download_file),
                "tcp": list(&a.domains.tcp),
                "udp": list(&a.domains.udp),
                "dns_prefetch": a.domains.dns_prefetch,
            },
            "business_domains": a.business_domains,
            "limits": {
                "requests": a.limits.requests,
                "sockets": a.limits.sockets,
                "overflow": if a.limits.overflow == crate::config::Overflow::Fail { "fail" } else { "queue" },
                "background_grace_ms": a.limits.background_grace.as_millis() as u64,
            },
        })
    };
    json!({
        "source": c.source,
        "proxy": {
            "listen": c.proxy.listen.to_string(),
            "clients": c.proxy.clients.iter().map(ToString::to_string).collect::<Vec<_>>(),
            "idle_timeout_ms": c.proxy.idle_timeout.as_millis() as u64,
            "header_timeout_ms": c.proxy.header_timeout.as_millis() as u64,
            "max_connections": c.proxy.max_connections,
        },
        "control": {
            "listen": c.control.listen.to_string(),
            "token": c.control.token.as_ref().map(|_| "<redacted>"),
        },
        "ca": {"dir": c.ca.dir.display().to_string()},
        "upstream": {
            "trust": c.upstream.trust.iter().map(|p| p.display().to_string()).collect::<Vec<_>>(),
            "map": map,
            "strict_tls": c.upstream.strict_tls,
        },
        "sandbox": {
            "skip_domain_check": c.sandbox.skip_domain_check,
            "lan_prefix": c.sandbox.lan_prefix,
            "refusal": c.sandbox.refusal.as_str(),
        },
        "apps": c.apps.iter().map(app).collect::<Vec<_>>(),
    })
}
