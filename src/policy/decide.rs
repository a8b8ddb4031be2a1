//! Decisions about a call that are not about its URL: how a refusal ends (fail or answer),
//! the call's timeout, and whether it is a CORS preflight (which takes no slot).

use std::time::Duration;

use super::Api;
use crate::config::{AppConfig, RefusalStyle};

/// The platform's default timeout for every network API.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_millis(60_000);

/// How one refused call ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Style {
    /// At the transport: no HTTP response (the app's `fail` runs).
    Fail,
    /// An HTTP response with the refusal (status, `X-Wxsandbox-*`, JSON).
    Answer,
}

/// The style of a refusal: the call's `X-Wxsandbox-Refusal`, else the app's `refusal:`, else
/// `sandbox.refusal`; `auto` answers a call that carries any `X-Wxsandbox-*` header (a harness
/// that speaks the contract) and fails the rest. An unknown header value is ignored.
pub fn refusal_style(
    call: Option<&str>,
    carries_sandbox_header: bool,
    app: Option<RefusalStyle>,
    global: RefusalStyle,
) -> Style {
    let chosen = call.and_then(RefusalStyle::parse).or(app).unwrap_or(global);
    match chosen {
        RefusalStyle::Fail => Style::Fail,
        RefusalStyle::Answer => Style::Answer,
        RefusalStyle::Auto if carries_sandbox_header => Style::Answer,
        RefusalStyle::Auto => Style::Fail,
    }
}

/// `X-Wxsandbox-Timeout` (ms) when it is a number, else the API's `network_timeout`, else 60 s.
pub fn call_timeout(header: Option<&str>, app: &AppConfig, api: Api) -> Duration {
    if let Some(ms) = header.and_then(|v| v.trim().parse::<u64>().ok()) {
        return Duration::from_millis(ms);
    }
    let t = &app.network_timeout;
    let configured = match api {
        Api::Request | Api::Tcp | Api::WebView => t.request,
        Api::UploadFile => t.upload_file,
        Api::DownloadFile => t.download_file,
        Api::ConnectSocket => t.connect_socket,
    };
    configured.unwrap_or(DEFAULT_TIMEOUT)
}

/// A CORS preflight (`OPTIONS` with `Access-Control-Request-Method`): judged like the call it
/// announces, but takes no slot and is not decoded.
pub fn is_preflight(method: &str, has_request_method_header: bool) -> bool {
    method.eq_ignore_ascii_case("OPTIONS") && has_request_method_header
}
