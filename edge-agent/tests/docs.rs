//! The docs that describe the agent are checked against the agent itself:
//! the settings reference is rendered from its clap definitions, and the
//! example TOML file holds every setting, under its key.

use clap::CommandFactory;
use edge_agent::config::Args;

#[test]
fn the_settings_reference_is_rendered_from_the_cli() {
    let reference = relay_shared::cli::settings_reference(&Args::command());
    relay_shared::testing::check_generated("docs/configuration.md", "edge-agent", &reference);
}

/// The keys set (`key = ...`) or shown commented out (`# key = ...`) in an
/// example TOML file.
fn example_keys(text: &str) -> std::collections::BTreeSet<String> {
    text.lines()
        .map(|l| l.trim_start_matches('#').trim())
        .filter_map(|l| l.split_once(" = ").map(|(k, _)| k.to_owned()))
        .filter(|k| !k.contains(' '))
        .collect()
}

/// The example TOML file names every setting, under its key, and no other
/// (that it loads is `packaging.rs`'s test).
#[test]
fn the_example_toml_has_every_setting() {
    let cmd = Args::command();
    let want: std::collections::BTreeSet<String> = cmd
        .get_arguments()
        .filter(|a| a.get_env().is_some() && a.get_id() != "config")
        .map(|a| a.get_id().to_string())
        .collect();
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/packaging/edge-agent.toml");
    let have = example_keys(&std::fs::read_to_string(path).unwrap());
    assert_eq!(have, want, "edge-agent.toml's keys against the settings");
}

/// The agent's settings are `Option`s without clap defaults (so a file can
/// sit between the environment and the default), and their help states the
/// default in words. Each stated default must be the value the resolved
/// configuration takes when the setting is not given.
#[test]
fn every_stated_default_is_the_resolved_one() {
    use clap::FromArgMatches;
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().to_str().unwrap();
    // As if no RELAY_* variable were set (the test's own environment may
    // set some): the defaults alone.
    let matches = Args::command()
        .mut_args(|a| a.env(None))
        .try_get_matches_from(["edge-agent", "--watch-dir", d, "--bucket", "b"])
        .unwrap();
    let args = Args::from_arg_matches(&matches).unwrap();
    let c = edge_agent::config::Config::resolve(args, || Some("host".into())).unwrap();
    let waits = c.waits();
    let effective = [
        ("recursive", c.recursive.to_string()),
        ("include", c.include.as_str().to_owned()),
        ("source_id", "the host name".to_owned()),
        ("raw_prefix", c.keys.prefix().to_owned()),
        ("timestamp_format", "auto".to_owned()),
        ("on_success", c.on_success.to_string()),
        (
            "settle_ms",
            format!(
                "{} or {}",
                waits.quiet.as_millis(),
                waits.settle.as_millis()
            ),
        ),
        ("zstd_level", c.zstd_level.to_string()),
        ("concurrency", c.concurrency.to_string()),
        (
            "multipart_threshold_bytes",
            c.multipart_threshold_bytes.to_string(),
        ),
        ("metrics_addr", c.metrics_addr.unwrap().to_string()),
        ("state_dir", "<watch-dir>/.relay-agent".to_owned()),
        (
            "shutdown_timeout_secs",
            c.shutdown_timeout.as_secs().to_string(),
        ),
        (
            "aws_attempt_timeout_secs",
            format!(
                "{} plus 1 per 64 KiB the request sends: 10 for a small file, 138 for an 8 MiB part",
                c.aws_attempt_timeout.base().as_secs()
            ),
        ),
        ("canary_secs", c.canary.unwrap().as_secs().to_string()),
        ("s3_path_style", c.s3_path_style.to_string()),
        ("log_format", "text".to_owned()),
    ];
    assert_eq!(
        c.state_dir,
        std::fs::canonicalize(dir.path())
            .unwrap()
            .join(".relay-agent")
    );
    assert_eq!(c.log_format, relay_shared::telemetry::LogFormat::Text);
    assert_eq!(
        c.keys.source_id(),
        "host",
        "the host name when no source id is given"
    );
    let reference = relay_shared::cli::settings_reference(&Args::command());
    for (id, want) in effective {
        let row = reference
            .lines()
            .find(|l| l.contains(&format!("| `{id}` |")))
            .unwrap_or_else(|| panic!("no row for {id}"));
        let stated = row.split(" | ").nth(3).unwrap().replace('`', "");
        assert_eq!(
            stated, want,
            "--{id}'s help states a default the code does not have"
        );
    }
}

/// Every `edge-agent` command in the docs' shell blocks (README, docs/,
/// infra/README.md) runs as written as far as it can here: `man` and
/// `completions` run whole; any other is run with `--help` appended, so
/// each flag must exist on its subcommand and each value must parse.
#[test]
fn the_docs_commands_parse_as_written() {
    relay_shared::testing::check_doc_commands("edge-agent", env!("CARGO_BIN_EXE_edge-agent"));
}
