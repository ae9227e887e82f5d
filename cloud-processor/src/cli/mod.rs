//! From arguments to settings: the command line (`args.rs`), the optional
//! TOML file under it (`file.rs`), and the one validated [`Config`]
//! (`config.rs`) every mode is built from. Per-object settings are the
//! object layer's; nothing here knows the modes.

mod args;
mod config;
mod file;

pub use args::{Aws, AwsTimeouts, Cli, Command, PollArgs, Range, ReplayArgs, ReplayMode};
pub use config::{
    Config, ConfigError, Protocol, RECORD_WINDOW_BYTES, check_aws, queue_url_problem,
    timeout_warning,
};
pub use file::parse_from;
