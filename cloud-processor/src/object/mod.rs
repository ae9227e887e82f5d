//! One object, exactly once: claim it, run it, settle it.
//!
//! An object is claimed with a lease (S3 conditional writes; see [`lease`]),
//! run through the pipeline with its chunks sent beside it (`run`), and
//! settled (`settle`): finished with a done marker, quarantined with a
//! report, or released for the next attempt to resume. The [`Processor`]
//! holds the clients, built once; `ingest` hands it the objects events name.

pub mod canary;
pub mod claim;
mod error;
pub mod lease;
pub mod listing;
pub mod marker;
mod object_ref;
mod plan;
mod processor;
mod provenance;
pub mod reconcile;
pub mod reports;
mod run;
mod settle;

pub use error::{Failure, ProcessError};
pub use marker::{DoneMarker, STATE_FOLDERS, StateKeys};
pub use object_ref::ObjectRef;
pub use plan::settings;
pub use processor::{Outcome, Processor};
