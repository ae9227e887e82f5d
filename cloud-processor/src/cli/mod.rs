//! From arguments to settings: the command line ([`args`]), the optional
//! TOML file under it ([`file`]), and the one validated [`Config`]
//! ([`config`]) every mode is built from. Per-object settings are the
//! object layer's; nothing here knows the modes.

mod args;
mod config;
mod file;

pub use args::{Aws, AwsTimeouts, Cli, Command, Common, Range, ReplayArgs, ReplayMode};
pub use config::{
    Config, ConfigError, DEFAULT_LARGEST_RECORD_BYTES, DEFAULT_MAX_DECOMPRESSED_BYTES,
    DecodeThread, Protocol, RECORD_WINDOW_BYTES, check_aws, timeout_warning,
};
pub use file::parse_from;
