//! `project:`: a mini program folder. `appid` from `project.config.json`, overridden by
//! `project.private.config.json`; `networkTimeout` from `app.json` (or `game.json` for a mini
//! game), under `miniprogramRoot` when the project sets one. Values written in the wxsandbox
//! config win over these (the caller merges).

use std::path::Path;

use serde::Deserialize;

use super::raw::RawTimeouts;

/// What a project folder says.
#[derive(Debug, Default)]
pub struct Imported {
    pub appid: Option<String>,
    pub network_timeout: RawTimeouts,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct ProjectConfig {
    appid: Option<String>,
    miniprogram_root: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct AppJson {
    network_timeout: Option<RawTimeoutsJson>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawTimeoutsJson {
    request: Option<u64>,
    connect_socket: Option<u64>,
    upload_file: Option<u64>,
    download_file: Option<u64>,
}

/// Read a project folder.
///
/// # Errors
/// A file that exists but can't be read or parsed, or no `project.config.json`.
pub fn import(dir: &Path) -> Result<Imported, String> {
    let read = |name: &str| -> Result<Option<String>, String> {
        let path = dir.join(name);
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(Some(text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(format!("{}: {e}", path.display())),
        }
    };
    let parse = |name: &str, text: &str| -> Result<ProjectConfig, String> {
        serde_json::from_str(text).map_err(|e| format!("{}: {e}", dir.join(name).display()))
    };
    let Some(public) = read("project.config.json")? else {
        return Err(format!(
            "{} has no project.config.json: is it a mini program folder?",
            dir.display()
        ));
    };
    let public = parse("project.config.json", &public)?;
    let private = match read("project.private.config.json")? {
        Some(text) => parse("project.private.config.json", &text)?,
        None => ProjectConfig::default(),
    };
    let root = private
        .miniprogram_root
        .or(public.miniprogram_root)
        .unwrap_or_default();
    let app_dir = dir.join(root);
    let mut timeouts = None;
    for name in ["app.json", "game.json"] {
        let path = app_dir.join(name);
        if let Ok(text) = std::fs::read_to_string(&path) {
            let app: AppJson =
                serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
            timeouts = app.network_timeout;
            break;
        }
    }
    let t = timeouts.unwrap_or_default();
    Ok(Imported {
        appid: private.appid.or(public.appid),
        network_timeout: RawTimeouts {
            request: t.request,
            connect_socket: t.connect_socket,
            upload_file: t.upload_file,
            download_file: t.download_file,
        },
    })
}
