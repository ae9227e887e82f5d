//! Shell completions, man pages and per-subcommand help, generated from
//! each binary's own clap definitions, so they never drift from `--help`.

/// The shells completions are made for (re-exported, so the binaries
/// need no dependency of their own).
pub use clap_complete::Shell;

/// Writes `shell`'s completion script for `cmd` to stdout.
pub fn print_completions(mut cmd: clap::Command, shell: clap_complete::Shell) {
    let name = cmd.get_name().to_owned();
    clap_complete::generate(shell, &mut cmd, name, &mut std::io::stdout());
}

/// Writes `cmd`'s man page (roff, section 1; it lists the subcommands) to
/// stdout, and says how that went as the process's exit status.
pub fn print_man(cmd: clap::Command) -> std::process::ExitCode {
    let name = cmd.get_name().to_owned();
    match clap_mangen::Man::new(cmd).render(&mut std::io::stdout().lock()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{name}: writing the man page: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// A subcommand's help, for `X --help`, `X -h` and `help X`, rendered from
/// `cmd` after `adjust(cmd, X)` (which hides the global settings X does
/// not read), or `None` when `argv` names no subcommand. Global settings
/// stay global, so they parse before or after the subcommand; hiding one
/// hides it everywhere, hence a copy of the command just for this help.
pub fn subcommand_help(
    cmd: clap::Command,
    argv: &[std::ffi::OsString],
    adjust: impl FnOnce(clap::Command, &str) -> clap::Command,
) -> Option<String> {
    let sub = requested_subcommand(&cmd, argv)?;
    // As clap: `-h` is the summary, `--help` and `help X` the long form.
    let long = argv.iter().any(|a| a == "--help" || a == "help");
    let mut cmd = adjust(cmd, &sub);
    cmd.build();
    let sub = cmd.find_subcommand_mut(&sub)?;
    let help = if long {
        sub.render_long_help()
    } else {
        sub.render_help()
    };
    Some(help.to_string())
}

/// `cmd` with every global setting hidden, for subcommands that read none.
pub fn hide_globals(cmd: clap::Command) -> clap::Command {
    let globals: Vec<clap::Id> = cmd
        .get_arguments()
        .filter(|a| a.is_global_set())
        .map(|a| a.get_id().clone())
        .collect();
    globals
        .iter()
        .fold(cmd, |c, id| c.mut_arg(id, |a| a.hide(true)))
}

/// The subcommand `argv` names (`X --help`, `help X`), skipping the values
/// of options placed before it.
fn requested_subcommand(cmd: &clap::Command, argv: &[std::ffi::OsString]) -> Option<String> {
    let mut tokens = argv.iter().skip(1).filter_map(|a| a.to_str());
    while let Some(t) = tokens.next() {
        if let Some(name) = t.strip_prefix("--") {
            let takes_value = !name.contains('=')
                && cmd
                    .get_arguments()
                    .find(|a| a.get_long() == Some(name))
                    .is_some_and(|a| a.get_action().takes_values());
            if takes_value {
                tokens.next();
            }
            continue;
        }
        if t.starts_with('-') {
            continue;
        }
        if t == "help" {
            return tokens.find(|t| !t.starts_with('-')).map(str::to_owned);
        }
        return cmd.find_subcommand(t).map(|s| s.get_name().to_owned());
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::{Arg, ArgAction, Command};

    fn cmd() -> Command {
        Command::new("tool")
            .arg(Arg::new("level").long("level").global(true))
            .arg(
                Arg::new("quiet")
                    .long("quiet")
                    .action(ArgAction::SetTrue)
                    .global(true),
            )
            .subcommand(Command::new("run").arg(Arg::new("speed").long("speed")))
            .subcommand(Command::new("show"))
    }

    fn argv(args: &[&str]) -> Vec<std::ffi::OsString> {
        args.iter().map(Into::into).collect()
    }

    #[test]
    fn the_subcommand_is_found_past_options_and_their_values() {
        let found = |args: &[&str]| requested_subcommand(&cmd(), &argv(args));
        assert_eq!(found(&["tool", "run", "--help"]).as_deref(), Some("run"));
        // `show` is --level's value here, not the subcommand.
        assert_eq!(
            found(&["tool", "--level", "show", "run", "-h"]).as_deref(),
            Some("run")
        );
        assert_eq!(
            found(&["tool", "--level=x", "help", "show"]).as_deref(),
            Some("show")
        );
        // Switches take no value: what follows them is the subcommand.
        assert_eq!(
            found(&["tool", "--quiet", "show", "-h"]).as_deref(),
            Some("show")
        );
        assert_eq!(
            found(&["tool", "--flag", "show", "-h"]).as_deref(),
            Some("show")
        );
        assert_eq!(found(&["tool", "--help"]), None);
        assert_eq!(found(&["tool", "nonesuch", "--help"]), None);
    }

    #[test]
    fn a_subcommands_help_hides_what_adjust_hides_and_only_there() {
        let help = subcommand_help(cmd(), &argv(&["tool", "show", "--help"]), |c, sub| {
            assert_eq!(sub, "show");
            hide_globals(c)
        })
        .unwrap();
        assert!(
            help.contains("Usage: tool show") && !help.contains("--level"),
            "{help}"
        );
        let help = subcommand_help(cmd(), &argv(&["tool", "run", "-h"]), |c, _| c).unwrap();
        assert!(
            help.contains("--speed") && help.contains("--level"),
            "{help}"
        );
        assert_eq!(
            subcommand_help(cmd(), &argv(&["tool", "-h"]), |c, _| c),
            None
        );
    }
}
