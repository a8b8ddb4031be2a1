//! The control API's OpenAPI 3.1 document (src/control/openapi.json, served at
//! `GET /api/openapi.json`) can't drift from the router: the routes are read from the router's
//! source (the `match` of `route` in src/control/mod.rs, and the actions of `phase`) and compared
//! with the document's operations both ways; then every documented operation is called on a
//! running proxy and answers (not 404), and an undocumented method on a documented path is 404.
//! scripts/schemathesis.sh checks the responses against the schemas.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::BTreeSet;

use common::*;

type Routes = BTreeSet<(String, String)>;

/// The text of `src` from `start` up to (not including) `end`, which must both be there.
fn between<'s>(src: &'s str, start: &str, end: &str) -> &'s str {
    let from = src
        .find(start)
        .unwrap_or_else(|| panic!("{start:?} not found"))
        + start.len();
    let to = src[from..]
        .find(end)
        .unwrap_or_else(|| panic!("{end:?} not found after {start:?}"));
    &src[from..from + to]
}

/// The string literals that start the arms of a `match` body (`"a" =>`, `"a" | "b" =>`).
fn literal_arms(body: &str) -> Vec<String> {
    body.lines()
        .filter_map(|l| {
            let (pattern, _) = l.trim().split_once("=>")?;
            pattern.trim().starts_with('"').then_some(pattern)
        })
        .flat_map(|p| p.split('|').map(|a| a.trim().trim_matches('"').to_owned()))
        .collect()
}

/// Every (method, path) the router of src/control/mod.rs matches, path parameters as
/// `{appid}`. Panics on an arm it can't read, so a new kind of arm updates this test.
fn router_routes() -> Routes {
    let src = std::fs::read_to_string(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("src/control/mod.rs"),
    )
    .unwrap();
    let router = between(
        &src,
        "let response = match (method, path.as_str()) {",
        "_ => status_only(StatusCode::NOT_FOUND",
    );
    let phase = between(&src, "fn phase<B>", "\n}\n");
    let phase_actions = literal_arms(between(phase, "match action {", "_ =>"));
    assert!(!phase_actions.is_empty());
    let mut routes = Routes::new();
    for (i, _) in router.match_indices("(Method::") {
        let rest = &router[i + "(Method::".len()..];
        let method: String = rest.chars().take_while(char::is_ascii_uppercase).collect();
        let arm = rest[method.len()..].trim_start_matches(',').trim_start();
        let arm = &arm[..arm.find("=>").expect("an arm")];
        if arm.starts_with('"') {
            let pattern = &arm[..arm.find(')').expect("a tuple pattern")];
            for alt in pattern.split('|') {
                routes.insert((method.clone(), alt.trim().trim_matches('"').to_owned()));
            }
        } else if let Some(prefix) = arm
            .strip_prefix("p) if p.starts_with(\"")
            .and_then(|r| r.split('"').next())
        {
            // `phase` reads `{prefix}{appid}/{action}`.
            assert_eq!(prefix, "/api/apps/", "a prefix arm this test doesn't know");
            let handler = &rest[rest.find("=>").unwrap() + 2..];
            assert!(handler.trim_start().starts_with("phase("), "{handler}");
            for action in &phase_actions {
                routes.insert((method.clone(), format!("{prefix}{{appid}}/{action}")));
            }
        } else {
            panic!("a router arm this test can't read: (Method::{method}, {arm}");
        }
    }
    routes
}

fn document() -> serde_json::Value {
    serde_json::from_str(wxsandbox::control::OPENAPI).expect("openapi.json is JSON")
}

fn documented_routes(doc: &serde_json::Value) -> Routes {
    let mut routes = Routes::new();
    for (path, item) in doc["paths"].as_object().unwrap() {
        for (method, _) in item.as_object().unwrap() {
            if ["get", "put", "post", "delete", "patch", "head", "options"]
                .contains(&method.as_str())
            {
                routes.insert((method.to_ascii_uppercase(), path.clone()));
            }
        }
    }
    routes
}

/// Every `$ref` in `value` points at something in `doc`.
fn check_refs(doc: &serde_json::Value, value: &serde_json::Value) {
    match value {
        serde_json::Value::Object(map) => {
            if let Some(r) = map.get("$ref").and_then(|r| r.as_str()) {
                let pointer = r.strip_prefix('#').expect("local refs only");
                assert!(doc.pointer(pointer).is_some(), "dangling $ref {r}");
            }
            map.values().for_each(|v| check_refs(doc, v));
        }
        serde_json::Value::Array(items) => items.iter().for_each(|v| check_refs(doc, v)),
        _ => {}
    }
}

#[test]
fn the_document_and_the_router_name_the_same_routes() {
    let doc = document();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1."));
    check_refs(&doc, &doc);
    let router = router_routes();
    let documented = documented_routes(&doc);
    // A sanity floor: the parse found the router's routes at all.
    assert!(router.len() >= 15, "{router:?}");
    let missing: Vec<_> = router.difference(&documented).collect();
    let extra: Vec<_> = documented.difference(&router).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "routes not in openapi.json: {missing:?}; documented but not routed: {extra:?}"
    );
    // Each operation: an operationId (unique), a 200, and the guard's 403.
    let mut ids = BTreeSet::new();
    for (method, path) in &documented {
        let op = &doc["paths"][path][method.to_ascii_lowercase()];
        assert!(ids.insert(op["operationId"].as_str().unwrap().to_owned()));
        assert!(op["responses"]["200"].is_object(), "{method} {path}");
        assert!(op["responses"]["403"].is_object(), "{method} {path}");
        if method != "GET" {
            assert!(op["responses"]["401"].is_object(), "{method} {path}");
        }
    }
}

#[tokio::test]
async fn every_documented_operation_answers() {
    let (proxy, _backend, _ca) = setup(None).await;
    let doc = document();
    let http = reqwest::Client::builder().timeout(WAIT).build().unwrap();
    let served: serde_json::Value = http
        .get(format!("{}/api/openapi.json", proxy.control_url()))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(served, doc);
    for (method, path) in documented_routes(&doc) {
        let url = format!("{}{}", proxy.control_url(), path.replace("{appid}", APPID));
        let mut req = http.request(method.parse().unwrap(), &url);
        if method == "PUT" {
            let body = if path == "/api/refusal" {
                r#"{"style":"answer"}"#
            } else {
                r#"{"enabled":false}"#
            };
            req = req.header("content-type", "application/json").body(body);
        }
        let r = req.send().await.unwrap();
        // A proxy started from inline YAML has no file to reload: 409, as documented.
        let want = if path == "/api/config/reload" {
            409
        } else {
            200
        };
        assert_eq!(r.status(), want, "{method} {path}");
        // Another method on the same path is not routed.
        let other = if method == "GET" { "DELETE" } else { "GET" };
        let r = http
            .request(other.parse().unwrap(), &url)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 404, "{other} {path}");
    }
}
