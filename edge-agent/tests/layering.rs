//! The agent's modules import one way, from starting it down to the
//! kernel's lease call: one file's way from the watcher to its PUT never
//! climbs back to a module already left. No two files import each other,
//! every mod.rs is an index, and main.rs only parses, logs and runs.

#![allow(clippy::unwrap_used)]

use relay_shared::testing::source::{SourceTree, find_cycle};

/// Top first: each module may import only those after it.
const ORDER: [&str; 13] = [
    "start", "check", "unit", "agent", "s3", "upload", "watch", "metrics", "health", "ledger",
    "config", "tracker", "lease",
];

fn tree() -> SourceTree {
    SourceTree::of_crate(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn modules_import_only_downward_and_files_without_a_circle() {
    let rank = |m: &str| {
        ORDER
            .iter()
            .position(|o| *o == m)
            .unwrap_or_else(|| panic!("{m} is in no place of ORDER: add it"))
    };
    for (module, named) in tree().module_imports() {
        if module == "lib" {
            continue;
        }
        for n in named {
            assert!(
                rank(&n) > rank(&module),
                "{module} imports {n}, which comes before it in {ORDER:?}"
            );
        }
    }
    assert_eq!(
        find_cycle(&tree().file_imports()),
        None,
        "an import circle between files"
    );
}

#[test]
fn files_and_functions_stay_short_and_main_is_thin() {
    let tree = tree();
    assert_eq!(tree.long_files(800), Vec::<(String, usize)>::new());
    assert_eq!(tree.long_functions(100), Vec::<String>::new());
    assert!(
        tree.main_lines() < 80,
        "main.rs has {} lines",
        tree.main_lines()
    );
    let defining = tree.mod_files_that_are_not_indexes();
    assert!(
        defining.is_empty(),
        "mod.rs files that define things: {defining:?}"
    );
}
