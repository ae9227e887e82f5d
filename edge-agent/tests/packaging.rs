//! What the packaging files promise: the example TOML loads, the example
//! environment files name only settings the binaries know, and the systemd
//! units are hardened.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::{Path, PathBuf};
use std::process::Command;

use clap::Parser;
use edge_agent::config::{Args, Config, OnSuccess};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

#[test]
fn the_example_toml_loads_with_every_key() {
    let watch = tempfile::tempdir().unwrap();
    let toml = repo("edge-agent/packaging/edge-agent.toml");
    // The example's watch directory does not exist here; a flag overrides it.
    let args = Args::try_parse_from([
        "edge-agent",
        "--config",
        toml.to_str().unwrap(),
        "--watch-dir",
        watch.path().to_str().unwrap(),
    ])
    .unwrap();
    let config = Config::resolve(args, || None).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(config.bucket, "my-relay-bucket");
    assert_eq!(config.keys.source_prefix(), "raw/edge-site-17/");
    assert_eq!(config.on_success, OnSuccess::Delete);
    assert_eq!(config.state_dir, Path::new("/var/lib/relay-edge-agent"));
}

/// The `RELAY_*` names set in an example environment file.
fn env_names(path: &str) -> Vec<String> {
    std::fs::read_to_string(repo(path))
        .unwrap()
        .lines()
        .map(|l| l.trim_start_matches('#'))
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| k.starts_with("RELAY_"))
        .collect()
}

fn help(binary: &str, args: &[&str]) -> String {
    let out = Command::new(binary)
        .args(args)
        .arg("--help")
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn the_example_environment_files_name_only_known_settings() {
    let agent = help(env!("CARGO_BIN_EXE_edge-agent"), &[]);
    for name in env_names("edge-agent/packaging/edge-agent.env") {
        assert!(
            agent.contains(&format!("[env: {name}=")),
            "edge-agent has no {name}"
        );
    }
    let processor = repo("target/debug/cloud-processor");
    if !processor.exists() {
        // Built by `cargo test --workspace`, which the test script runs.
        eprintln!(
            "skipping the processor's env file: {} is not built",
            processor.display()
        );
        return;
    }
    let poll = help(processor.to_str().unwrap(), &["poll"]);
    let check = help(processor.to_str().unwrap(), &["check"]);
    for name in env_names("cloud-processor/packaging/cloud-processor.env") {
        assert!(
            poll.contains(&format!("[env: {name}=")) || check.contains(&format!("[env: {name}=")),
            "cloud-processor poll/check has no {name}"
        );
    }
}

#[test]
fn the_systemd_units_score_ok_or_better() {
    if Command::new("systemd-analyze")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("systemd-analyze is not installed here; the units' score is not checked");
        return;
    }
    for unit in [
        "edge-agent/packaging/relay-edge-agent.service",
        "cloud-processor/packaging/relay-cloud-processor-poll.service",
    ] {
        let out = Command::new("systemd-analyze")
            .args(["security", "--offline=yes"])
            .arg(repo(unit))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        let score: f64 = text
            .lines()
            .find_map(|l| {
                l.split_once("Overall exposure level for ")?
                    .1
                    .split_once(": ")
            })
            .and_then(|(_, rest)| rest.split_whitespace().next()?.parse().ok())
            .unwrap_or_else(|| panic!("no score for {unit}:\n{text}"));
        assert!(score <= 3.0, "{unit} scores {score}:\n{text}");
    }
}

#[test]
fn completions_and_the_man_page_come_from_the_cli_itself() {
    let agent = env!("CARGO_BIN_EXE_edge-agent");
    for shell in ["bash", "zsh", "fish"] {
        let out = Command::new(agent)
            .args(["completions", shell])
            .output()
            .unwrap();
        let script = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{shell}");
        assert!(
            script.contains("edge-agent")
                && script.contains("watch-dir")
                && script.contains("check"),
            "{shell}: {script}"
        );
    }
    let out = Command::new(agent).arg("man").output().unwrap();
    let page = String::from_utf8_lossy(&out.stdout);
    assert!(
        page.starts_with(".ie") && page.contains(".TH edge-agent 1"),
        "{page}"
    );
    assert!(
        page.contains("RELAY_WATCH_DIR") && page.contains("check"),
        "{page}"
    );
}

#[test]
fn a_subcommands_help_lists_only_the_settings_it_reads() {
    let agent = env!("CARGO_BIN_EXE_edge-agent");
    let check = help(agent, &["check"]);
    assert!(
        check.contains("--watch-dir") && check.contains("--bucket"),
        "{check}"
    );
    for args in [
        &["completions"][..],
        &["man"],
        &["--bucket", "man", "completions"],
    ] {
        let own = help(agent, args);
        assert!(own.contains("Usage: edge-agent "), "{args:?}: {own}");
        assert!(
            !own.contains("--watch-dir") && !own.contains("--config"),
            "{args:?} reads no settings: {own}"
        );
    }
}
