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

/// The settings reference of `cmd`, as Markdown: a table of the settings
/// every mode reads (the top-level options), then one per subcommand with
/// options of its own. Each row gives the flag, its environment variable,
/// its key in the TOML file (the option's id: its long name in snake_case;
/// none for an option without an environment variable, which is the
/// command's own argument, not a setting),
/// its default, and its help. `docs/configuration.md` holds it, and a test
/// renders it again and fails on any difference, so the page cannot drift
/// from `--help`.
pub fn settings_reference(cmd: &clap::Command) -> String {
    let name = cmd.get_name();
    let mut out = format!("#### `{name}`\n\n{}", settings_table(cmd));
    for sub in cmd.get_subcommands() {
        let table = settings_table(sub);
        if table.is_empty() {
            continue;
        }
        out.push_str(&format!("\n#### `{name} {}`\n\n{table}", sub.get_name()));
    }
    out
}

/// One command's options as a Markdown table (empty if it has none).
fn settings_table(cmd: &clap::Command) -> String {
    let rows: Vec<String> = cmd
        .get_arguments()
        .filter(|a| !a.is_hide_set() && !a.is_positional())
        .filter(|a| !matches!(a.get_id().as_str(), "help" | "version"))
        .map(setting_row)
        .collect();
    if rows.is_empty() {
        return String::new();
    }
    format!(
        "| flag | environment | TOML key | default | meaning |\n|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    )
}

fn setting_row(a: &clap::Arg) -> String {
    let code = |s: &str| format!("`{s}`");
    let flag = a
        .get_long()
        .map_or_else(|| a.get_id().to_string(), |l| format!("--{l}"));
    let env = a
        .get_env()
        .map_or_else(|| "—".to_owned(), |e| code(&e.to_string_lossy()));
    // Settings come from flags, the environment and the file alike; an
    // option with no environment variable is the command's own argument.
    let id = a.get_id().as_str();
    let key = if id == "config" || a.get_env().is_none() {
        "—".to_owned()
    } else {
        code(id)
    };
    let help = a
        .get_long_help()
        .or_else(|| a.get_help())
        .map(ToString::to_string)
        .unwrap_or_default();
    let (mut help, default) = split_default(&help);
    let required = a.is_required_set() || help.contains("(required)");
    help = help.replace(" (required)", "");
    let default = match (a.get_default_values(), default) {
        (values, _) if !values.is_empty() => code(
            &values
                .iter()
                .map(|v| v.to_string_lossy())
                .collect::<Vec<_>>()
                .join(","),
        ),
        (_, Some(stated)) if !stated.contains(' ') => code(&stated),
        (_, Some(stated)) => stated,
        _ if required => "(required)".to_owned(),
        _ => "—".to_owned(),
    };
    let mut meaning = help;
    if !meaning.is_empty() && !meaning.ends_with('.') {
        meaning.push('.');
    }
    let values: Vec<String> = a
        .get_possible_values()
        .iter()
        .filter(|v| !v.is_hide_set())
        .map(|v| code(v.get_name()))
        .collect();
    let listed = values.iter().all(|v| meaning.contains(v.trim_matches('`')));
    let boolean = values.iter().all(|v| v == "`true`" || v == "`false`");
    if values.len() > 1 && !listed && !boolean {
        meaning.push_str(&format!(" One of {}.", values.join(", ")));
    }
    format!(
        "| {} | {env} | {key} | {} | {} |",
        code(&flag),
        default.replace('|', "\\|"),
        meaning.replace('|', "\\|")
    )
}

/// A help text without its `[default: ...]` note, and that default. With
/// several notes (a default per case), the notes stay in the text as
/// `(default: ...)` and the default lists them all.
fn split_default(help: &str) -> (String, Option<String>) {
    let notes: Vec<(usize, usize)> = help
        .match_indices("[default: ")
        .filter_map(|(at, _)| Some((at, at + help[at..].find(']')? + 1)))
        .collect();
    let value = |(a, b): (usize, usize)| help[a + "[default: ".len()..b - 1].trim().to_owned();
    let tidy = |t: String| {
        t.split_whitespace()
            .collect::<Vec<_>>()
            .join(" ")
            .replace(" .", ".")
            .replace(" ,", ",")
    };
    match notes.as_slice() {
        [] => (tidy(help.to_owned()), None),
        [one] => {
            let text = format!("{}{}", &help[..one.0], &help[one.1..]);
            (tidy(text), Some(value(*one)))
        }
        many => {
            let mut text = help.to_owned();
            for &(a, b) in many.iter().rev() {
                text.replace_range(a..b, &format!("(default {})", value((a, b))));
            }
            let all: Vec<String> = many.iter().map(|&n| value(n)).collect();
            (tidy(text), Some(all.join(" or ")))
        }
    }
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
