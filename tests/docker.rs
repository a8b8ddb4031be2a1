//! Issue 7: the docker files stay right without a Docker engine: the compose file parses and
//! everything it names exists (services, volumes, ports, env variables the CLI reads, the mounted
//! config, which passes check-config); the Dockerfile builds the binary the repo defines and
//! copies it from where cargo puts it. Every config in config/ passes check-config.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use clap::CommandFactory;
use serde_yaml::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn compose() -> Value {
    let text = std::fs::read_to_string(repo().join("docker/docker-compose.yml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// Every environment variable a `wxsandbox` flag reads.
fn cli_env_vars() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, out: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(env) = arg.get_env() {
                out.insert(env.to_string_lossy().into_owned());
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, out);
        }
    }
    let mut out = BTreeSet::new();
    walk(&wxsandbox::cli::Cli::command(), &mut out);
    out
}

#[test]
fn compose_services_volumes_ports_and_env_exist() {
    let c = compose();
    let services = c["services"].as_mapping().expect("services");
    let wx = &c["services"]["wxsandbox"];
    assert!(
        services.contains_key("backend"),
        "the example backend service"
    );
    // Build context and Dockerfile.
    let context = repo()
        .join("docker")
        .join(wx["build"]["context"].as_str().unwrap());
    assert!(context
        .join(wx["build"]["dockerfile"].as_str().unwrap())
        .is_file());
    assert_eq!(
        std::fs::canonicalize(&context).unwrap(),
        std::fs::canonicalize(repo()).unwrap()
    );
    // Volumes: named ones are declared, bind mounts exist.
    let declared: BTreeSet<String> = c["volumes"]
        .as_mapping()
        .unwrap()
        .keys()
        .map(|k| k.as_str().unwrap().to_owned())
        .collect();
    let mut mounted_config = None;
    for v in wx["volumes"].as_sequence().unwrap() {
        let spec = v.as_str().unwrap();
        let source = spec.split(':').next().unwrap();
        if source.starts_with('.') || source.starts_with('/') {
            let path = repo().join("docker").join(source);
            assert!(path.exists(), "bind mount {source} does not exist");
            let target = spec.split(':').nth(1).unwrap();
            mounted_config = Some((path, target.to_owned()));
        } else {
            assert!(declared.contains(source), "volume {source} is not declared");
        }
    }
    // The config env var points at the mounted file, and the file passes check-config.
    let env = wx["environment"].as_mapping().unwrap();
    let (config_path, target) = mounted_config.expect("a mounted config file");
    assert_eq!(
        env.get("WXSANDBOX_CONFIG").unwrap().as_str().unwrap(),
        target
    );
    wxsandbox::config::Config::load(&config_path)
        .unwrap_or_else(|e| panic!("{}:\n{e}", config_path.display()));
    // Every env variable it sets is one the CLI reads.
    let known = cli_env_vars();
    for key in env.keys() {
        let key = key.as_str().unwrap();
        assert!(
            known.contains(key),
            "{key} is not read by any wxsandbox flag (known: {known:?})"
        );
    }
    // The proxy is published for the LAN, the control port to localhost only.
    let ports: Vec<&str> = wx["ports"]
        .as_sequence()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap())
        .collect();
    assert!(ports.contains(&"8080:8080"), "{ports:?}");
    assert!(
        ports
            .iter()
            .any(|p| p.starts_with("127.0.0.1:") && p.ends_with(":8081")),
        "{ports:?}"
    );
    // depends_on names a service that exists.
    for dep in wx["depends_on"].as_sequence().unwrap() {
        assert!(services.contains_key(dep.as_str().unwrap()));
    }
}

#[test]
fn compose_config_maps_the_production_domain_to_the_backend_service() {
    let config = wxsandbox::config::Config::load(&repo().join("config/compose.yaml")).unwrap();
    let backend_service = compose()["services"]["backend"]["expose"][0]
        .as_str()
        .unwrap()
        .to_owned();
    let (host, target) = &config.upstream.map[0];
    assert_eq!(host, "api.example.com");
    match target {
        wxsandbox::config::MapTarget::PlainHttp { host, port } => {
            assert_eq!(host, "backend");
            assert_eq!(port.to_string(), backend_service);
        }
        other => panic!("expected plain HTTP to the backend service, got {other:?}"),
    }
    assert!(config.apps[0]
        .domains
        .request
        .iter()
        .any(|o| o.host == "api.example.com"));
}

#[test]
fn dockerfile_builds_and_copies_the_repo_binary() {
    let dockerfile = std::fs::read_to_string(repo().join("docker/Dockerfile")).unwrap();
    let cargo: toml_like::Manifest = toml_like::read(&repo().join("Cargo.toml"));
    assert!(
        dockerfile.contains(&format!(
            "cargo build --release --locked --bin {}",
            cargo.bin
        )),
        "the Dockerfile must build --bin {}",
        cargo.bin
    );
    assert!(
        dockerfile.contains(&format!("/src/target/release/{} ", cargo.bin)),
        "copies the release binary"
    );
    assert!(dockerfile.contains("USER wxsandbox"), "runs as non-root");
    assert!(dockerfile.contains("HEALTHCHECK") && dockerfile.contains("/healthz"));
    assert!(dockerfile.contains("VOLUME") && dockerfile.contains("/var/lib/wxsandbox/certs"));
    // Every file the build stage copies exists.
    for line in dockerfile
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(repo().join(source).exists(), "COPY source {source} missing");
        }
    }
    // Cargo.lock is tracked, so --locked works on a fresh clone.
    assert!(repo().join("Cargo.lock").is_file());
}

#[test]
fn every_config_in_config_passes_check_config() {
    let mut files = Vec::new();
    fn collect(dir: &Path, out: &mut Vec<PathBuf>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                collect(&path, out);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                out.push(path);
            }
        }
    }
    collect(&repo().join("config"), &mut files);
    assert!(files.len() >= 2, "{files:?}");
    for file in files {
        wxsandbox::config::Config::load(&file)
            .unwrap_or_else(|e| panic!("{}:\n{e}", file.display()));
    }
}

/// Just enough of Cargo.toml: the binary's name.
mod toml_like {
    use std::path::Path;

    pub struct Manifest {
        pub bin: String,
    }

    pub fn read(path: &Path) -> Manifest {
        let text = std::fs::read_to_string(path).unwrap();
        let bins = text.split("[[bin]]").nth(1).expect("a [[bin]] section");
        let name = bins
            .lines()
            .find_map(|l| {
                l.trim()
                    .strip_prefix("name = ")
                    .map(|v| v.trim_matches('"').to_owned())
            })
            .expect("bin name");
        Manifest { bin: name }
    }
}
