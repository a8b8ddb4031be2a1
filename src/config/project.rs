//! `project:`: a mini program folder. `appid` from `project.config.json`, overridden by
//! `project.private.config.json`; `networkTimeout` from `app.json` (or `game.json` for a mini
//! game), under `miniprogramRoot` when the project sets one. Values written in the wxsandbox
//! config win over these (the caller merges).
//!
//! Each file is read with `read_bounded` and pre-scanned for nesting deeper than
//! [`MAX_DEPTH`] before serde_json sees it.

use std::path::Path;

use serde::de::DeserializeOwned;
use serde::Deserialize;

use super::raw::RawTimeouts;
use super::{read_bounded, MAX_DEPTH};

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
    let Some(public) = read_json::<ProjectConfig>(&dir.join("project.config.json"))? else {
        return Err(format!(
            "{} has no project.config.json: is it a mini program folder?",
            dir.display()
        ));
    };
    let private =
        read_json::<ProjectConfig>(&dir.join("project.private.config.json"))?.unwrap_or_default();
    let root = private
        .miniprogram_root
        .or(public.miniprogram_root)
        .unwrap_or_default();
    let app_dir = dir.join(root);
    let mut timeouts = None;
    for name in ["app.json", "game.json"] {
        if let Some(app) = read_json::<AppJson>(&app_dir.join(name))? {
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

/// Read and parse one project file; `None` when it does not exist.
///
/// # Errors
/// Not a regular file, over the size limit, unreadable, nested too deep, not the JSON expected;
/// each message names the file.
fn read_json<T: DeserializeOwned>(path: &Path) -> Result<Option<T>, String> {
    let text = match read_bounded(path) {
        Ok(text) => text,
        Err(e) if e.is_not_found() => return Ok(None),
        Err(e) => return Err(format!("{}: {e}", path.display())),
    };
    if let Some(line) = too_deep(&text) {
        return Err(format!(
            "{}: arrays and objects nested deeper than {MAX_DEPTH} levels at line {line}; \
             no project file needs that",
            path.display()
        ));
    }
    let value: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    // serde's derived structs also take a JSON array, field by field (`["wx…", "src"]` would be
    // an appid and a root): the files and their `networkTimeout` must be objects.
    if !value.is_object() {
        return Err(format!("{}: expected a JSON object", path.display()));
    }
    if value
        .get("networkTimeout")
        .is_some_and(|t| !t.is_object() && !t.is_null())
    {
        return Err(format!(
            "{}: networkTimeout: expected a JSON object",
            path.display()
        ));
    }
    T::deserialize(value)
        .map(Some)
        .map_err(|e| format!("{}: {e}", path.display()))
}

/// The 1-based line where JSON text first nests deeper than [`MAX_DEPTH`], if it does. A
/// linear pre-scan: brackets inside strings don't count; malformed text is serde_json's to
/// report.
fn too_deep(text: &str) -> Option<usize> {
    let mut depth = 0usize;
    let mut line = 1usize;
    let mut in_string = false;
    let mut escaped = false;
    for b in text.bytes() {
        if b == b'\n' {
            line += 1;
        }
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > MAX_DEPTH {
                    return Some(line);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_json_depth_is_counted_outside_strings() {
        let ok = format!("{}{}", "[".repeat(MAX_DEPTH), "]".repeat(MAX_DEPTH));
        assert_eq!(too_deep(&ok), None);
        let deep = format!("{{\n\"a\":\n{}", "[".repeat(MAX_DEPTH));
        assert_eq!(too_deep(&deep), Some(3));
        let quoted = format!("{{\"a\": \"{}\\\"{}\"}}", "[".repeat(100), "{".repeat(100));
        assert_eq!(too_deep(&quoted), None);
    }

    /// Found by the `project` fuzz target: a JSON array read as a struct, field by field.
    #[test]
    fn arrays_are_not_read_as_objects() {
        #![allow(clippy::unwrap_used)]
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("project.config.json"), r#"["d","Zf"]"#).unwrap();
        let err = import(dir.path()).unwrap_err();
        assert!(
            err.ends_with("project.config.json: expected a JSON object"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("project.config.json"),
            r#"{"appid": "wx0123456789abcdef"}"#,
        )
        .unwrap();
        std::fs::write(
            dir.path().join("app.json"),
            r#"{"networkTimeout": [1, 2, 3, 4]}"#,
        )
        .unwrap();
        let err = import(dir.path()).unwrap_err();
        assert!(
            err.contains("networkTimeout: expected a JSON object"),
            "{err}"
        );
        std::fs::write(
            dir.path().join("app.json"),
            r#"{"networkTimeout": {"request": 5000}}"#,
        )
        .unwrap();
        let imported = import(dir.path()).unwrap();
        assert_eq!(imported.appid.as_deref(), Some("wx0123456789abcdef"));
        assert_eq!(imported.network_timeout.request, Some(5000));
    }
}
