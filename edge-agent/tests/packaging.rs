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
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{} is not built, and CI must check the processor's env file",
            processor.display()
        );
        eprintln!(
            "WARNING: the processor's env file is NOT checked: {} is not built",
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
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "systemd-analyze is not installed, and CI must check the units' score"
        );
        eprintln!("WARNING: systemd-analyze is not installed; the units' score is NOT checked");
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

/// The workspace forbids `unsafe`, but for one function: edge-agent's
/// `lease::set_lease`, the `fcntl(F_SETLEASE)` call no maintained crate
/// wraps. Every crate but edge-agent inherits `forbid`; edge-agent repeats
/// the workspace's lints with `deny`, so that function alone can allow it;
/// and no other source file in the repository holds an `unsafe` block, an
/// `unsafe` item or an allowance.
#[test]
fn unsafe_code_is_confined_to_the_one_lease_call() {
    let kw = ["un", "safe"].concat();
    let root = repo("");
    let workspace = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    assert!(
        workspace.contains(&format!("{kw}_code = \"forbid\"")),
        "the workspace forbids it"
    );
    for krate in ["shared", "cloud-processor"] {
        let manifest = std::fs::read_to_string(root.join(krate).join("Cargo.toml")).unwrap();
        assert!(
            manifest.contains("[lints]\nworkspace = true")
                && !manifest.contains(&format!("{kw}_code")),
            "{krate} inherits the workspace's lints"
        );
    }
    let agent = std::fs::read_to_string(root.join("edge-agent/Cargo.toml")).unwrap();
    let lints = |text: &str, table: &str| -> Vec<String> {
        text.split(table)
            .nth(1)
            .unwrap_or_default()
            .lines()
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .filter(|l| l.contains('='))
            .map(|l| l.replace(' ', ""))
            .collect()
    };
    let mut want = lints(&workspace, "[workspace.lints.rust]");
    for line in &mut want {
        *line = line.replace("\"forbid\"", "\"deny\"");
    }
    assert_eq!(
        lints(&agent, "[lints.rust]"),
        want,
        "edge-agent: the workspace's rust lints, with deny"
    );
    assert_eq!(
        lints(&agent, "[lints.clippy]"),
        lints(&workspace, "[workspace.lints.clippy]"),
        "edge-agent: the workspace's clippy lints"
    );

    let patterns = [
        format!("{kw} {{"),
        format!("{kw} fn"),
        format!("{kw} impl"),
        format!("{kw} trait"),
        format!("{kw} extern"),
        format!("{kw}(no_mangle)"),
        format!("allow({kw}_code"),
        format!("expect({kw}_code"),
        format!("warn({kw}_code"),
    ];
    let mut found = Vec::new();
    for entry in walkdir::WalkDir::new(&root).into_iter().filter_entry(|e| {
        let name = e.file_name().to_string_lossy();
        !(e.depth() > 0 && (name.starts_with('.') || name == "target"))
    }) {
        let entry = entry.unwrap();
        if entry.path().extension().is_none_or(|x| x != "rs") {
            continue;
        }
        let text = std::fs::read_to_string(entry.path()).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or_default();
            if patterns.iter().any(|p| code.contains(p.as_str())) {
                let rel = entry
                    .path()
                    .strip_prefix(&root)
                    .unwrap()
                    .display()
                    .to_string();
                found.push(format!("{rel}:{}: {}", n + 1, line.trim()));
            }
        }
    }
    assert_eq!(
        found.len(),
        2,
        "one allowance and one block, nothing else: {found:#?}"
    );
    assert!(
        found[0].starts_with("edge-agent/src/lease.rs:")
            && found[0].ends_with(&format!("#[allow({kw}_code)]"))
            && found[1].starts_with("edge-agent/src/lease.rs:")
            && found[1].contains(&format!("{kw} {{ libc::fcntl(")),
        "{found:#?}"
    );
    let lease = std::fs::read_to_string(root.join("edge-agent/src/lease.rs")).unwrap();
    let allowed = lease
        .lines()
        .skip_while(|l| !l.contains(&format!("allow({kw}_code)")))
        .nth(1)
        .unwrap_or_default();
    assert!(
        allowed.starts_with("fn set_lease("),
        "the allowance is on set_lease: {allowed}"
    );
    assert!(
        lease.contains("// SAFETY:"),
        "the block says why it is sound"
    );
}
