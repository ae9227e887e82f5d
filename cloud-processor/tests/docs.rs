//! The docs that describe the processor are checked against the processor
//! itself: the settings reference is rendered from its clap definitions.

use clap::CommandFactory;
use cloud_processor::Cli;

#[test]
fn the_settings_reference_is_rendered_from_the_cli() {
    let reference = relay_shared::cli::settings_reference(&Cli::command());
    relay_shared::testing::check_generated("docs/configuration.md", "cloud-processor", &reference);
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

/// Every setting with a `RELAY_*` variable, in any mode, under its key.
fn settings(cmd: &clap::Command, into: &mut std::collections::BTreeSet<String>) {
    for a in cmd.get_arguments() {
        if a.get_env().is_some() && a.get_id() != "config" {
            into.insert(a.get_id().to_string());
        }
    }
    for sub in cmd.get_subcommands() {
        settings(sub, into);
    }
}

/// The example TOML file names every setting, under its key, and no other
/// (that it loads and that flags override it is `cli/file.rs`'s test).
#[test]
fn the_example_toml_has_every_setting() {
    let mut want = std::collections::BTreeSet::new();
    settings(&Cli::command(), &mut want);
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/packaging/cloud-processor.toml"
    );
    let have = example_keys(&std::fs::read_to_string(path).unwrap());
    assert_eq!(
        have, want,
        "cloud-processor.toml's keys against the settings"
    );
}

#[test]
fn the_modules_hmac_key_placeholder_is_the_one_the_processor_refuses() {
    let tf = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/lambda.tf"))
        .unwrap();
    let wanted = format!(
        "value_wo         = \"{}\"",
        cloud_processor::HMAC_KEY_PLACEHOLDER
    );
    assert!(
        tf.contains(&wanted),
        "infra/lambda.tf does not write {wanted:?}"
    );
}

/// Every folder the processor writes under the state prefix has a
/// lifecycle rule in the module (`state_folders` in infra/main.tf), and
/// the module names no folder the code does not write: state never
/// accumulates unseen. (`scripts/terraform-check.sh` checks what an apply
/// makes of them: each with noncurrent versions expiring, and leases'
/// delete markers removed.)
#[test]
fn the_modules_lifecycle_rules_cover_every_state_folder() {
    let tf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/main.tf")).unwrap();
    let block = tf
        .split_once("state_folders = {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(block, _)| block)
        .expect("infra/main.tf has a `state_folders = { ... }` map");
    let mut have: Vec<String> = block
        .lines()
        .filter_map(|l| l.split_once('=').map(|(k, _)| k.trim().to_owned()))
        .filter(|k| !k.is_empty() && !k.starts_with('#'))
        .collect();
    have.sort();
    let mut want: Vec<String> = cloud_processor::STATE_FOLDERS
        .iter()
        .map(|f| f.trim_end_matches('/').to_owned())
        .collect();
    want.sort();
    assert_eq!(have, want, "infra/main.tf's state_folders against the code");
    assert!(
        tf.contains("for_each = local.state_folders"),
        "a lifecycle rule per state folder"
    );
}

/// The module's manifest prefix (its notification, lifecycle rule and
/// policies) is the one the agent writes under and the processor reads.
#[test]
fn the_modules_ledger_prefix_is_the_codes() {
    let tf =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/main.tf")).unwrap();
    let want = format!("ledger_prefix = \"{}\"", relay_shared::manifest::PREFIX);
    assert!(tf.contains(&want), "infra/main.tf lacks {want:?}");
    let queues =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../infra/queues.tf"))
            .unwrap();
    assert!(
        queues.contains("filter_prefix = local.ledger_prefix"),
        "no notification for manifests"
    );
}

/// Every `cloud-processor` command in the docs' shell blocks (README, docs/,
/// infra/README.md) runs as written as far as it can here: `man` and
/// `completions` run whole; any other is run with `--help` appended, so
/// each flag must exist on its subcommand and each value must parse.
#[test]
fn the_docs_commands_parse_as_written() {
    relay_shared::testing::check_doc_commands(
        "cloud-processor",
        env!("CARGO_BIN_EXE_cloud-processor"),
    );
}
