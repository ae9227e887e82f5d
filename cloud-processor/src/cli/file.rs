//! The optional TOML file under the command line (`--config` or
//! `RELAY_CONFIG`): its values become the settings' defaults, so flags and
//! variables override them. And each subcommand's help, showing only the
//! settings it reads.

use std::path::PathBuf;

use super::args::Cli;
use super::config::ConfigError;

/// Parses `argv` over the TOML file it names (`--config`), or else
/// `env_config` (RELAY_CONFIG). The file's values become the settings'
/// defaults, so flags and RELAY_* variables override them, as clap orders
/// its sources.
pub fn parse_from(
    argv: Vec<std::ffi::OsString>,
    env_config: Option<PathBuf>,
) -> Result<Cli, ConfigError> {
    use clap::{CommandFactory, FromArgMatches};
    let named = argv.iter().enumerate().find_map(|(i, a)| {
        let a = a.to_str()?;
        match a.strip_prefix("--config=") {
            Some(path) => Some(PathBuf::from(path)),
            None if a == "--config" => argv.get(i + 1).map(PathBuf::from),
            None => None,
        }
    });
    let mut cmd = Cli::command();
    if let Some(path) = named.or(env_config) {
        let invalid = |reason: String| ConfigError::Invalid {
            name: "config file (--config, RELAY_CONFIG)",
            reason: format!("{}: {reason}", path.display()),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| invalid(e.to_string()))?;
        let table: toml::Table = toml::from_str(&text).map_err(|e| invalid(e.to_string()))?;
        for (key, value) in table {
            let value = match value {
                toml::Value::String(s) => s,
                toml::Value::Integer(i) => i.to_string(),
                toml::Value::Boolean(b) => b.to_string(),
                toml::Value::Float(f) => f.to_string(),
                other => {
                    return Err(invalid(format!(
                        "{key} is a {}; settings are strings, numbers or booleans",
                        other.type_str()
                    )));
                }
            };
            if key == "config" {
                return Err(invalid("a config file cannot name another".into()));
            }
            // Parsed once per process; clap keeps defaults as `'static`.
            let value: &'static str = Box::leak(value.into_boxed_str());
            let has = |c: &clap::Command| c.get_arguments().any(|a| a.get_id() == key.as_str());
            let mut known = has(&cmd);
            if known {
                cmd = cmd.mut_arg(key.as_str(), |a| a.default_value(value).required(false));
            }
            let subs: Vec<String> = cmd
                .get_subcommands()
                .filter(|s| has(s))
                .map(|s| s.get_name().to_owned())
                .collect();
            for sub in subs {
                known = true;
                cmd = cmd.mut_subcommand(sub, |s| {
                    s.mut_arg(key.as_str(), |a| a.default_value(value).required(false))
                });
            }
            if !known {
                return Err(invalid(format!(
                    "unknown setting {key:?} (settings are the flags' long names in snake_case, e.g. output_queue_url)"
                )));
            }
        }
    }
    let matches = match cmd.clone().try_get_matches_from(&argv) {
        Ok(m) => m,
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelp => {
            return Err(match own_help(cmd, &argv) {
                Some(help) => ConfigError::Help(help),
                None => ConfigError::Cli(e),
            });
        }
        Err(e) => return Err(ConfigError::Cli(e)),
    };
    Cli::from_arg_matches(&matches).map_err(ConfigError::Cli)
}

/// A subcommand's help without the global settings it does not read:
/// the operator tools read only the raw prefix, and completions and man
/// pages read nothing.
fn own_help(cmd: clap::Command, argv: &[std::ffi::OsString]) -> Option<String> {
    const PROJECTION: &[&str] = &[
        "fields",
        "body_format",
        "missing",
        "empty_records",
        "records_pointer",
        "max_decompressed_bytes",
        "large_records",
        "max_record_bytes",
        "decode_thread",
        "hmac_key_file",
        "hmac_key_parameter",
        "hmac_previous_key_file",
        "hmac_previous_key_parameter",
    ];
    relay_shared::cli::subcommand_help(cmd, argv, |cmd, sub| match sub {
        "replay" | "audit" => PROJECTION
            .iter()
            .fold(cmd, |c, id| c.mut_arg(*id, |a| a.hide(true)))
            // The one global setting the tools read is theirs.
            .mut_arg("raw_prefix", |a| a.help_heading(None::<&str>)),
        "completions" | "man" => relay_shared::cli::hide_globals(cmd),
        _ => cmd,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::{Command, Config};
    use relay_shared::telemetry::LogFormat;
    use std::ffi::OsString;
    use std::path::Path;

    fn argv(args: &[&str]) -> Vec<OsString> {
        args.iter().map(OsString::from).collect()
    }

    fn example() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("packaging/cloud-processor.toml")
    }

    #[test]
    fn the_example_file_loads_and_flags_and_env_override_it() {
        let file = example();
        let file = file.to_str().unwrap();
        let cli = parse_from(argv(&["cloud-processor", "--config", file, "check"]), None).unwrap();
        assert_eq!(
            cli.common.fields.as_deref(),
            Some("id,ts=timestamp,user_id=user.id,country=geo.country")
        );
        assert_eq!(cli.common.log_format, LogFormat::Json);
        let Some(Command::Check {
            aws,
            bucket,
            notification_queue_url,
            ..
        }) = cli.command
        else {
            panic!("check")
        };
        assert_eq!(bucket, "my-relay-bucket");
        assert!(aws.output_queue_url.ends_with("/relay-output"));
        assert!(
            notification_queue_url
                .unwrap()
                .ends_with("/relay-notifications")
        );
        assert_eq!(aws.timeouts.aws_operation_timeout_secs, Some(20));
        assert!(Config::from_common(&cli.common).is_ok());

        // A flag wins over the file, and RELAY_CONFIG names it too.
        let cli = parse_from(
            argv(&["cloud-processor", "poll", "--lease-ttl-secs", "90"]),
            Some(example()),
        )
        .unwrap();
        let Some(Command::Poll(poll)) = cli.command else {
            panic!("poll")
        };
        assert_eq!(
            (poll.aws.lease_ttl_secs, poll.visibility_timeout_secs),
            (90, 60)
        );
    }

    #[test]
    fn an_unknown_key_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("p.toml");
        std::fs::write(&file, "fields = \"id\"\noutput_queue = \"q\"\n").unwrap();
        let err = parse_from(
            argv(&[
                "cloud-processor",
                "--config",
                file.to_str().unwrap(),
                "process",
                "f",
            ]),
            None,
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("unknown setting \"output_queue\"") && err.contains("p.toml"),
            "{err}"
        );
    }
}
