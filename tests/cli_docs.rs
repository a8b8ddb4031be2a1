//! Command-line conventions: `wxsandbox completions bash|zsh|fish` and `wxsandbox manpage` come
//! from the clap definitions, so they name every subcommand and flag; the binary is run as a
//! user would run it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

fn run(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_wxsandbox"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

const SUBCOMMANDS: [&str; 6] = [
    "run",
    "check-config",
    "check-cert",
    "ca",
    "completions",
    "manpage",
];
const RUN_FLAGS: [&str; 6] = [
    "--skip-domain-check",
    "--listen",
    "--control",
    "--log-format",
    "--fail-on-refusal",
    "--refusal",
];

#[test]
fn completions_name_subcommands_and_flags() {
    for shell in ["bash", "zsh", "fish"] {
        let (ok, out, err) = run(&["completions", shell]);
        assert!(ok, "{shell}: {err}");
        for word in SUBCOMMANDS.iter().chain(&RUN_FLAGS) {
            // fish spells long flags as `-l skip-domain-check`.
            let bare = word.trim_start_matches("--");
            assert!(out.contains(bare), "{shell} completion lacks {word}");
        }
        assert!(out.contains("wxsandbox"), "{shell}");
    }
    let (_, bash, _) = run(&["completions", "bash"]);
    assert!(bash.contains("--skip-domain-check") && bash.contains("complete -F"));
    let (_, zsh, _) = run(&["completions", "zsh"]);
    assert!(zsh.starts_with("#compdef wxsandbox"), "{}", &zsh[..40]);
    let (_, fish, _) = run(&["completions", "fish"]);
    assert!(fish.contains("complete -c wxsandbox"));
    let (ok, _, err) = run(&["completions", "tcsh"]);
    assert!(!ok && err.contains("tcsh"), "{err}");
}

#[test]
fn manpage_is_roff_naming_subcommands_and_flags() {
    let (ok, page, err) = run(&["manpage"]);
    assert!(ok, "{err}");
    assert!(
        page.starts_with(".ie") || page.contains(".TH wxsandbox 1"),
        "{}",
        &page[..80]
    );
    assert!(page.contains(".TH wxsandbox 1"));
    assert!(
        page.contains(".SH NAME") && page.contains(".SH SYNOPSIS") && page.contains(".SH OPTIONS")
    );
    // roff escapes a dash as `\-`.
    let plain = page.replace("\\-", "-");
    for word in SUBCOMMANDS.iter().chain(&RUN_FLAGS) {
        assert!(plain.contains(word), "the man page lacks {word}");
    }
    let (ok, sub, err) = run(&["manpage", "check-cert"]);
    assert!(ok, "{err}");
    assert!(sub.contains(".TH wxsandbox-check-cert 1"));
    assert!(sub.replace("\\-", "-").contains("--resolve"));
    let (ok, _, err) = run(&["manpage", "nope"]);
    assert!(!ok && err.contains("check-config"), "{err}");
}
