//! The processor's modules import one way, down the story of the data:
//! modes -> aws -> ingest -> object -> output -> pipeline, with `cli`
//! (settings) and `metrics` (names) beside them, importing only `pipeline`,
//! and `spans` (OTLP export), importing only `metrics`.
//! No two files import each other, AWS SDK types appear only in `aws/`,
//! and no file or function grows past what a reader takes in at once.

#![allow(clippy::unwrap_used)]

use relay_shared::testing::source::{SourceTree, find_cycle};

/// The layers, top first: each may import only those after it.
const LAYERS: [&str; 6] = ["modes", "aws", "ingest", "object", "output", "pipeline"];
/// Beside the layers: any layer may import them, and they import only these.
const SUPPORT: [(&str, &[&str]); 3] = [
    ("cli", &["pipeline"]),
    ("metrics", &["pipeline"]),
    ("spans", &["metrics"]),
];
/// Not part of the data's story: the crate root's index and test support.
const OUTSIDE: [&str; 2] = ["lib", "testing"];

fn tree() -> SourceTree {
    SourceTree::of_crate(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn layers_import_only_downward() {
    let modules = tree().module_imports();
    let rank = |m: &str| LAYERS.iter().position(|l| *l == m);
    for (module, named) in &modules {
        if OUTSIDE.contains(&module.as_str()) {
            continue;
        }
        if let Some((_, allowed)) = SUPPORT.iter().find(|(s, _)| s == module) {
            let wrong: Vec<_> = named
                .iter()
                .filter(|n| !allowed.contains(&n.as_str()))
                .collect();
            assert!(
                wrong.is_empty(),
                "{module} may import only {allowed:?}, but names {wrong:?}"
            );
            continue;
        }
        let mine =
            rank(module).unwrap_or_else(|| panic!("{module} is in no layer: add it to LAYERS"));
        for n in named {
            if SUPPORT.iter().any(|(s, _)| s == n) {
                continue;
            }
            let theirs =
                rank(n).unwrap_or_else(|| panic!("{module} names {n}, which is in no layer"));
            assert!(
                theirs > mine,
                "{module} imports {n}, a layer above it (the order is {LAYERS:?})"
            );
        }
    }
}

#[test]
fn no_two_files_import_each_other() {
    let files = tree().file_imports();
    assert_eq!(find_cycle(&files), None, "an import circle between files");
    assert_eq!(find_cycle(&tree().module_imports()), None);
}

#[test]
fn aws_sdk_types_are_named_only_in_the_aws_adapters() {
    let outside: Vec<String> = tree()
        .files_naming("aws_sdk_")
        .into_iter()
        .filter(|f| !f.starts_with("aws/") && f != "aws")
        .collect();
    assert!(outside.is_empty(), "SDK types outside aws/: {outside:?}");
}

#[test]
fn files_and_functions_stay_short_and_main_is_thin() {
    let tree = tree();
    assert_eq!(
        tree.long_files(800),
        Vec::<(String, usize)>::new(),
        "files over 800 lines before their tests"
    );
    assert_eq!(
        tree.long_functions(100),
        Vec::<String>::new(),
        "functions over 100 lines"
    );
    assert!(
        tree.main_lines() < 80,
        "main.rs has {} lines",
        tree.main_lines()
    );
}

/// A `mod.rs` is an index: its modules and what it re-exports, so that the
/// code of a folder is in files named for their jobs.
#[test]
fn every_mod_rs_is_an_index() {
    let defining = tree().mod_files_that_are_not_indexes();
    assert!(
        defining.is_empty(),
        "mod.rs files that define things: {defining:?}"
    );
}
