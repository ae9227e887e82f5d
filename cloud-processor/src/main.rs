//! cloud-processor: parses the command line, sets up logging, and runs the
//! mode it names (the Lambda runtime by default) until it is done or SIGTERM.

use std::process::ExitCode;

use cloud_processor::{ConfigError, is_tool, parse_from, run, spans_layer};
use relay_shared::telemetry::{init_tracing_with, report_fatal, shutdown_signal};

#[tokio::main]
async fn main() -> ExitCode {
    let argv = std::env::args_os().collect();
    let cli = match parse_from(argv, std::env::var_os("RELAY_CONFIG").map(Into::into)) {
        Ok(cli) => cli,
        Err(ConfigError::Cli(e)) => e.exit(),
        Err(ConfigError::Help(help)) => {
            print!("{help}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!("cloud-processor: {e:#}");
            return ExitCode::from(2);
        }
    };
    let format = cli.common.log_format;
    // The operator tools talk to a person: warnings and errors only.
    let filter = if is_tool(cli.command.as_ref()) {
        "warn"
    } else {
        "info"
    };
    // Spans leave over OTLP only where OTEL_EXPORTER_OTLP_ENDPOINT is set.
    let spans = match spans_layer() {
        Ok(layer) => layer,
        Err(e) => {
            eprintln!("cloud-processor: {e}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing_with(format, filter, spans) {
        eprintln!("cloud-processor: {e}");
        return ExitCode::FAILURE;
    }
    match run(cli, shutdown_signal()).await {
        Ok(exit) => exit.code(),
        Err(e) => {
            report_fatal("cloud-processor", format, &e);
            ExitCode::from(e.exit_code())
        }
    }
}
