//! The ways the processor runs, chosen by the command line: the Lambda
//! runtime (the default), `poll`, `process` on local files, `check`, and the
//! operator tools `replay` and `audit`. Each is built once from the
//! settings, with its clients, and runs until it is done or `shutdown`.

pub mod audit;
pub mod check;
mod dispatch;
mod error;
pub mod lambda;
pub mod poll;
pub mod process;
pub mod replay;

pub(crate) use dispatch::tool_store;
pub use dispatch::{is_tool, run};
pub use error::{Exit, RunError, ServeError, ToolError};
