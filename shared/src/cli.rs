//! Shell completions and man pages, generated from each binary's own clap
//! definitions, so they never drift from `--help`.

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
