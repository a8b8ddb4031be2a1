//! Which app and which API a call stands for (SPEC section 3).

use base64::Engine;

use super::{Api, ApiHints, AppHints, CallUrl, Refusal, Rule};
use crate::config::{AppConfig, Config};

/// The app of a call, in SPEC order: proxy user name, `X-Wxsandbox-Appid`, a servicewechat
/// Referer, the `clients` CIDRs, the only app. An appid that is named but not configured is not
/// guessed past: `None` (407).
pub fn identify_app<'c>(config: &'c Config, hints: &AppHints<'_>) -> Option<&'c AppConfig> {
    let by_id = |id: &str| config.apps.iter().find(|a| a.appid == id.trim());
    let decoded;
    let user = match hints.proxy_authorization {
        Some(header) => {
            decoded = proxy_user(header);
            decoded.as_deref()
        }
        None => hints.tunnel_user,
    };
    if let Some(user) = user {
        return by_id(user);
    }
    if let Some(id) = hints.appid_header {
        return by_id(id);
    }
    if let Some(id) = hints.referer.and_then(referer_appid) {
        return by_id(id);
    }
    let client = hints.client.to_canonical();
    if let Some(app) = config
        .apps
        .iter()
        .find(|a| a.clients.iter().any(|net| net.contains(&client)))
    {
        return Some(app);
    }
    match config.apps.as_slice() {
        [only] => Some(only),
        _ => None,
    }
}

/// The user name of `Proxy-Authorization: Basic base64(user:password)`.
pub fn proxy_user(header: &str) -> Option<String> {
    let (scheme, token) = header.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(token.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let user = text.split(':').next()?.trim();
    (!user.is_empty()).then(|| user.to_owned())
}

/// `https://servicewechat.com/{appid}/...` → the appid.
fn referer_appid(referer: &str) -> Option<&str> {
    let rest = referer.strip_prefix("https://servicewechat.com/")?;
    let id = rest.split('/').next()?;
    id.starts_with("wx").then_some(id)
}

/// 407/600000 `{api}:fail unknown appid`.
pub fn unknown_app(api: Api, url: &str) -> Refusal {
    Refusal {
        status: 407,
        errno: 600000,
        errmsg: format!("{}:fail unknown appid", api.errmsg_name()),
        rule: Rule::Appid,
        api,
        url: url.to_owned(),
        detail: "no configured app could be told from this call: set the proxy user name to the appid \
                 (phones: Wi-Fi proxy authentication), send X-Wxsandbox-Appid, or list the device under the app's clients:"
            .to_owned(),
    }
}

/// The API a call stands for: a WebSocket upgrade is `connectSocket`; else `X-Wxsandbox-Api`;
/// else a multipart POST is `uploadFile`; else `request`, or `downloadFile` when the origin is
/// only in the downloadFile list.
pub fn detect_api(app: &AppConfig, hints: &ApiHints<'_>, url: &str) -> Api {
    detect_api_parsed(app, hints, super::parse_url(url).as_ref())
}

/// [`detect_api`] with the URL already parsed (`None`: it does not parse).
pub fn detect_api_parsed(app: &AppConfig, hints: &ApiHints<'_>, parsed: Option<&CallUrl>) -> Api {
    if hints.is_websocket_upgrade {
        return Api::ConnectSocket;
    }
    match hints.api_header.map(str::trim) {
        Some("request") => return Api::Request,
        Some("uploadFile") => return Api::UploadFile,
        Some("downloadFile") => return Api::DownloadFile,
        _ => {}
    }
    let multipart = hints.content_type.is_some_and(|ct| {
        ct.trim_start()
            .to_ascii_lowercase()
            .starts_with("multipart/form-data")
    });
    if multipart && hints.method.eq_ignore_ascii_case("POST") {
        return Api::UploadFile;
    }
    if let Some(parsed) = parsed {
        let in_list = |api| {
            super::judge::list_of(app, api)
                .1
                .iter()
                .any(|e| super::judge::matches(e, parsed, api))
        };
        if in_list(Api::DownloadFile) && !in_list(Api::Request) {
            return Api::DownloadFile;
        }
    }
    Api::Request
}
