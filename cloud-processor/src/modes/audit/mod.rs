//! `audit`: what is late, stuck, quarantined or rejected in a selection of
//! raw objects: objects without a done marker after a while, leases of
//! processors that died mid-object, leases finished objects left behind
//! (harmless; `--clean` deletes them), quarantine and reject reports,
//! each source's last canary, each source's completeness ledger
//! (`ledger.rs`) and, with `--gap-mins`, gaps in its file names
//! (`gaps.rs`). It exits 3 only for what needs a person.

mod gaps;
mod ledger;
mod report;

pub use report::{Options, audit, run};
