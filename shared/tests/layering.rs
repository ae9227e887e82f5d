//! The crate's modules import each other one way: no circle, the retry
//! classification a leaf, and the store trait free of its S3 backend.

#![allow(clippy::unwrap_used)]

use std::collections::BTreeSet;

use relay_shared::testing::source::{SourceTree, find_cycle};

fn tree() -> SourceTree {
    SourceTree::of_crate(env!("CARGO_MANIFEST_DIR"))
}

#[test]
fn shared_modules_import_each_other_without_a_circle() {
    let modules = tree().module_imports();
    assert_eq!(
        find_cycle(&modules),
        None,
        "an import circle between modules"
    );
    assert_eq!(
        find_cycle(&tree().file_imports()),
        None,
        "an import circle between files"
    );
    assert!(
        modules["retry"].is_empty(),
        "retry is a leaf: {:?}",
        modules["retry"]
    );
    assert_eq!(
        modules["store"],
        BTreeSet::from(["retry".to_owned()]),
        "the store trait knows nothing of its backends"
    );
}

#[test]
fn files_and_functions_stay_short() {
    let tree = tree();
    assert_eq!(tree.long_files(800), Vec::<(String, usize)>::new());
    assert_eq!(tree.long_functions(100), Vec::<String>::new());
}
