//! edge-agent: parses its settings, sets up logging, and runs the agent (or
//! `check`) until SIGTERM or SIGINT. The work is the library's.

use std::process::ExitCode;

use clap::CommandFactory;
use edge_agent::config::{AgentCommand, Args, CheckArgs, Config, EarlyExit};
use relay_shared::telemetry::{init_tracing, report_fatal, shutdown_signal};

fn main() -> ExitCode {
    let hostname = || gethostname::gethostname().into_string().ok();
    let args = match edge_agent::config::parse_from(std::env::args_os().collect()) {
        Ok(args) => args,
        Err(EarlyExit::Clap(e)) => e.exit(),
        Err(EarlyExit::Help(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
    };
    match args.command {
        Some(AgentCommand::Completions { shell }) => {
            relay_shared::cli::print_completions(Args::command(), shell);
            return ExitCode::SUCCESS;
        }
        Some(AgentCommand::Man) => return relay_shared::cli::print_man(Args::command()),
        _ => {}
    }
    let checking = args.check();
    if let Some(path) = checking.as_ref().and_then(CheckArgs::rerun_as_unit) {
        return ExitCode::from(edge_agent::check_as_unit(path));
    }
    let config = match Config::resolve(args, hostname) {
        Ok(c) => c,
        Err(e) if checking.is_some() => {
            println!("FAIL config: {e:#}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("edge-agent: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Some(check) = checking {
        let unit = check.unit.as_deref();
        let passed = runtime(1).map(|rt| rt.block_on(edge_agent::check(&config, unit)));
        return ExitCode::from(u8::from(!passed.unwrap_or(false)));
    }
    if let Err(e) = init_tracing(config.log_format, "info") {
        eprintln!("edge-agent: {e}");
        return ExitCode::FAILURE;
    }
    let format = config.log_format;
    let Some(runtime) = runtime(config.concurrency) else {
        return ExitCode::FAILURE;
    };
    match runtime.block_on(edge_agent::start(config, shutdown_signal())) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            report_fatal("edge-agent", format, &e);
            ExitCode::FAILURE
        }
    }
}

/// One thread runs all async work (uploads wait on the network), and the
/// blocking pool that compresses is capped at the upload concurrency:
/// fewer threads mean fewer cross-thread wake-ups and malloc arenas, which
/// is much of the agent's CPU and memory beyond zstd itself.
fn runtime(blocking_threads: usize) -> Option<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .max_blocking_threads(blocking_threads)
        .build()
        .inspect_err(|e| eprintln!("edge-agent: starting the async runtime: {e}"))
        .ok()
}
