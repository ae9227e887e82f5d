//! cloud-processor: parses config, sets up logging, builds the AWS clients
//! once, and runs the chosen mode: the Lambda runtime (default), `poll`, or
//! `process` on local files.

use std::io::Write;
use std::ops::ControlFlow;
use std::process::ExitCode;

use anyhow::Context;
use clap::{CommandFactory, Parser};
use cloud_processor::config::{Aws, Cli, Command, Config, check_aws, timeout_warning};
use cloud_processor::handler::App;
use cloud_processor::pipeline;
use cloud_processor::replay::{self, Selection};
use cloud_processor::sqs::Output;
use relay_shared::client::{ClientOptions, load_sdk_config, s3_client, sqs_client, with_timeouts};
use relay_shared::telemetry::init_tracing;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = match cloud_processor::config::parse_from(
        std::env::args_os().collect(),
        std::env::var_os("RELAY_CONFIG").map(Into::into),
    ) {
        Ok(cli) => cli,
        Err(cloud_processor::config::ConfigError::Cli(e)) => e.exit(),
        Err(e) => {
            eprintln!("cloud-processor: {e}");
            return ExitCode::from(2);
        }
    };
    match cli.command {
        Some(Command::Completions { shell }) => {
            relay_shared::cli::print_completions(Cli::command(), shell);
            return ExitCode::SUCCESS;
        }
        Some(Command::Man) => {
            return relay_shared::cli::print_man(Cli::command());
        }
        _ => {}
    }
    // The operator tools need no projection settings.
    if let Some(Command::Replay { .. } | Command::Audit { .. }) = &cli.command {
        if let Err(e) = init_tracing(cli.common.log_format, "warn") {
            eprintln!("cloud-processor: {e}");
            return ExitCode::FAILURE;
        }
        return match tools(cli.command, &cli.common.raw_prefix).await {
            Ok(code) => code,
            Err(e) => {
                eprintln!("cloud-processor: {e:#}");
                ExitCode::FAILURE
            }
        };
    }
    let config = match Config::from_common(&cli.common) {
        Ok(c) => c,
        Err(e) if matches!(cli.command, Some(Command::Check { .. })) => {
            println!("FAIL config: {e:#}");
            return ExitCode::from(1);
        }
        Err(e) => {
            eprintln!("cloud-processor: {e:#}");
            return ExitCode::from(2);
        }
    };
    if let Err(e) = init_tracing(config.log_format, "info") {
        eprintln!("cloud-processor: {e}");
        return ExitCode::FAILURE;
    }
    let config_format = config.log_format;
    let result = match cli.command {
        Some(Command::Process {
            files,
            out,
            max_message_bytes,
        }) => process_files(&config, &files, out.as_deref(), max_message_bytes),
        Some(Command::Poll {
            aws,
            notification_queue_url,
            visibility_timeout_secs,
            metrics_addr,
        }) => {
            poll(
                config,
                aws,
                &notification_queue_url,
                visibility_timeout_secs,
                &metrics_addr,
            )
            .await
        }
        Some(Command::Check {
            aws,
            bucket,
            notification_queue_url,
            function_name,
            sample,
        }) => {
            check(
                &config,
                &aws,
                &bucket,
                notification_queue_url.as_deref(),
                function_name.as_deref(),
                sample.as_deref(),
            )
            .await
        }
        Some(Command::Lambda(aws)) => lambda(config, aws, notification_queue_from_env()).await,
        // Handled before the data-path settings are read.
        Some(
            Command::Replay { .. }
            | Command::Audit { .. }
            | Command::Completions { .. }
            | Command::Man,
        ) => Ok(ExitCode::SUCCESS),
        // Without a subcommand the binary is the Lambda, which only makes
        // sense where the Lambda runtime API is.
        None if std::env::var_os("AWS_LAMBDA_RUNTIME_API").is_none() => Err(anyhow::anyhow!(
            "no subcommand, and not inside AWS Lambda (AWS_LAMBDA_RUNTIME_API is not set): \
             use `cloud-processor poll` to consume S3 notifications from a queue, \
             `cloud-processor process FILE` to try the pipeline on local files, or `--help`"
        )),
        None => match aws_from_env() {
            Ok(aws) => lambda(config, aws, notification_queue_from_env()).await,
            Err(e) => Err(e),
        },
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            relay_shared::telemetry::report_fatal("cloud-processor", config_format, &e);
            ExitCode::FAILURE
        }
    }
}

/// In Lambda there are no arguments: the AWS settings come from the environment.
fn aws_from_env() -> anyhow::Result<Aws> {
    #[derive(Parser)]
    struct LambdaEnv {
        #[command(flatten)]
        aws: Aws,
    }
    LambdaEnv::try_parse_from(["cloud-processor"])
        .map(|e| e.aws)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .context("configuring the Lambda from its environment")
}

/// In Lambda, `RELAY_NOTIFICATION_QUEUE_URL` (optional) names the queue the
/// event source mapping reads, so a failed notification can be made visible
/// again early through its receipt handle rather than after the queue's
/// whole visibility timeout.
fn notification_queue_from_env() -> Option<String> {
    #[derive(Parser)]
    struct NotificationQueue {
        #[arg(long, env = "RELAY_NOTIFICATION_QUEUE_URL")]
        notification_queue_url: Option<String>,
    }
    NotificationQueue::try_parse_from(["cloud-processor"])
        .ok()
        .and_then(|n| n.notification_queue_url)
        .filter(|u| !u.is_empty())
}

/// The SDK settings and the S3 and SQS clients for the modes that hold
/// leases, built once, with timeouts that fit inside the lease.
async fn clients(
    aws: &Aws,
) -> (
    relay_shared::client::SdkConfig,
    aws_sdk_s3::Client,
    aws_sdk_sqs::Client,
) {
    let sdk = with_timeouts(
        &load_sdk_config().await,
        aws.timeouts.resolve(Some(aws.lease_ttl_secs)),
    );
    let s3 = s3_client(
        &sdk,
        ClientOptions {
            s3_path_style: aws.s3_path_style,
        },
    );
    let sqs = sqs_client(&sdk);
    (sdk, s3, sqs)
}

async fn app(config: Config, aws: Aws) -> anyhow::Result<(App, aws_sdk_sqs::Client)> {
    check_aws(&aws, &config.raw_prefix)?;
    let mut settings = config.summary();
    settings.extend(aws.summary());
    relay_shared::telemetry::log_start("cloud-processor", &settings);
    if let Some(warning) = timeout_warning(&aws) {
        tracing::warn!("{warning}");
    }
    let (_, s3, sqs) = clients(&aws).await;
    let output = Output::connect(
        sqs.clone(),
        &aws.output_queue_url,
        &aws.fifo_group_id,
        aws.max_message_bytes,
    )
    .await
    .context("reading the output queue's attributes")?;
    tracing::info!(queue = %output.queue_url(), max_message_bytes = output.max_message_bytes(), fifo = output.is_fifo(), "output queue");
    Ok((App::new(config, aws, s3, output), sqs))
}

async fn lambda(
    config: Config,
    aws: Aws,
    notifications: Option<String>,
) -> anyhow::Result<ExitCode> {
    let (mut app, sqs) = app(config, aws).await?;
    match notifications {
        Some(url) => app = app.with_notification_queue(sqs, url),
        None => tracing::warn!(
            "RELAY_NOTIFICATION_QUEUE_URL is not set: a failed notification comes back only after the queue's visibility timeout"
        ),
    }
    // Metrics leave as CloudWatch Embedded Metric Format on stdout after each
    // invocation; CloudWatch extracts them from the log stream.
    let emf = metrics_cloudwatch_embedded::Builder::new()
        .cloudwatch_namespace("relay")
        .init()
        .map_err(|e| anyhow::anyhow!("installing the metrics recorder: {e}"))?;
    cloud_processor::metrics::describe();
    let app = &app;
    lambda_runtime::run(lambda_runtime::service_fn(
        move |event: lambda_runtime::LambdaEvent<serde_json::Value>| async move {
            // The runtime's deadline, on this host's clocks: sending stops
            // in time to record progress and release the lease.
            let now = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap_or_default();
            // A deadline already past is no deadline (cargo-lambda's
            // emulator sends the timeout itself, 600000, not an instant).
            let deadline = std::time::Duration::from_millis(event.context.deadline)
                .checked_sub(now)
                .map(|left| std::time::Instant::now() + left);
            let result = app.handle_until(event.payload, deadline).await;
            if let Err(e) = emf.flush(std::io::stdout()) {
                tracing::warn!(error = %e, "writing metrics failed");
            }
            // The error's text reaches the Lambda error report and CloudWatch.
            result.map_err(|e| {
                lambda_runtime::Diagnostic::from(
                    Box::new(e) as Box<dyn std::error::Error + Send + Sync>
                )
            })
        },
    ))
    .await
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    Ok(ExitCode::SUCCESS)
}

async fn poll(
    config: Config,
    aws: Aws,
    queue_url: &str,
    visibility_secs: u32,
    metrics_addr: &str,
) -> anyhow::Result<ExitCode> {
    let (app, sqs) = app(config, aws).await?;
    if !matches!(metrics_addr, "" | "off") {
        let addr = metrics_addr
            .parse()
            .with_context(|| format!("RELAY_METRICS_ADDR {metrics_addr:?}"))?;
        let health: relay_shared::telemetry::HealthCheck = std::sync::Arc::new(|| Ok(()));
        let buckets = [(
            cloud_processor::metrics::OBJECT_SECONDS,
            cloud_processor::metrics::OBJECT_SECONDS_BUCKETS,
        )];
        let bound =
            relay_shared::telemetry::serve_metrics(addr, "cloud-processor", &buckets, health)
                .await?;
        cloud_processor::metrics::describe();
        cloud_processor::metrics::register_at_zero(app.config.projection.names());
        tracing::info!(%bound, "serving /metrics and /healthz");
    }
    cloud_processor::poll::run(
        &app,
        &sqs,
        queue_url,
        visibility_secs,
        relay_shared::telemetry::shutdown_signal(),
    )
    .await;
    Ok(ExitCode::SUCCESS)
}

fn instant(flag: &str, value: Option<&str>) -> anyhow::Result<Option<i64>> {
    value
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .with_context(|| {
                    format!("{flag} {v:?} is not an RFC 3339 instant such as 2026-11-21T00:00:00Z")
                })
        })
        .transpose()
}

/// `replay` and `audit`.
async fn tools(command: Option<Command>, raw_prefix: &str) -> anyhow::Result<ExitCode> {
    use std::io::IsTerminal;
    let selection = |range: &cloud_processor::config::Range| -> anyhow::Result<Selection> {
        let since = instant("--since", range.since.as_deref())?;
        let until = instant("--until", range.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            anyhow::bail!(
                "--since {} is not before --until {}: the range selects nothing",
                range.since.as_deref().unwrap_or_default(),
                range.until.as_deref().unwrap_or_default()
            );
        }
        Ok(Selection {
            bucket: range.bucket.clone(),
            prefix: range
                .prefix
                .clone()
                .unwrap_or_else(|| raw_prefix.to_owned()),
            raw_prefix: raw_prefix.to_owned(),
            state_prefix: range.state_prefix.clone(),
            since,
            until,
        })
    };
    match command {
        Some(Command::Replay {
            range,
            notification_queue_url,
            function_name,
            mode,
            dry_run,
            yes,
            rate_per_sec,
        }) => {
            let sel = selection(&range)?;
            if mode == replay::Mode::Reprocess && !dry_run && !yes {
                if !std::io::stdin().is_terminal() {
                    anyhow::bail!(
                        "--mode reprocess deletes done markers and sends every object again; confirm with --yes"
                    );
                }
                eprint!(
                    "Reprocess every object under s3://{}/{}? Consumers will see their records again. Type 'reprocess': ",
                    sel.bucket, sel.prefix
                );
                let mut answer = String::new();
                std::io::stdin().read_line(&mut answer)?;
                if answer.trim() != "reprocess" {
                    anyhow::bail!("not confirmed; nothing was changed");
                }
            }
            let sdk = with_timeouts(&load_sdk_config().await, range.timeouts.resolve(None));
            let s3 = s3_client(
                &sdk,
                ClientOptions {
                    s3_path_style: range.s3_path_style,
                },
            );
            let target = match (notification_queue_url, function_name) {
                (Some(url), _) => replay::Target::Queue {
                    client: sqs_client(&sdk),
                    url,
                },
                (None, Some(name)) => replay::Target::Function {
                    client: aws_sdk_lambda::Client::new(&sdk),
                    name,
                },
                (None, None) => anyhow::bail!("give --notification-queue-url or --function-name"),
            };
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
                    .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
            );
            let summary = replay::replay(
                &s3,
                &target,
                &sel,
                mode,
                dry_run,
                rate_per_sec,
                |n, total, obj, action| {
                    bar.set_length(total as u64);
                    bar.set_position(n as u64);
                    if dry_run || !bar.is_hidden() {
                        bar.set_message(format!("{action}: {}", obj.key));
                    }
                    if dry_run {
                        bar.suspend(|| println!("{action}\t{}", obj.key));
                    }
                },
            )
            .await?;
            bar.finish_and_clear();
            eprintln!("{}", serde_json::to_string(&summary)?);
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Audit {
            range,
            older_than_mins,
            json,
        }) => {
            let sel = selection(&range)?;
            let sdk = with_timeouts(&load_sdk_config().await, range.timeouts.resolve(None));
            let s3 = s3_client(
                &sdk,
                ClientOptions {
                    s3_path_style: range.s3_path_style,
                },
            );
            let now = jiff::Timestamp::now().as_second();
            let report = replay::audit(&s3, &sel, older_than_mins * 60, now).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print_audit(&report, &sel, older_than_mins, now);
            }
            let clean = report.unprocessed.is_empty() && report.stale_leases.is_empty();
            Ok(if clean {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            })
        }
        _ => Ok(ExitCode::SUCCESS),
    }
}

/// `check`: every finding on stdout; exit status 1 if any failed.
async fn check(
    config: &Config,
    aws: &Aws,
    bucket: &str,
    notification_queue_url: Option<&str>,
    function_name: Option<&str>,
    sample: Option<&std::path::Path>,
) -> anyhow::Result<ExitCode> {
    let (sdk, s3, sqs) = clients(aws).await;
    let function_timeout_secs = match function_name {
        Some(name) => Some(
            aws_sdk_lambda::Client::new(&sdk)
                .get_function_configuration()
                .function_name(name)
                .send()
                .await
                .map(|f| f.timeout.unwrap_or(3).max(0) as u32)
                .map_err(|e| {
                    format!(
                        "{name}: {}; fix RELAY_FUNCTION_NAME or grant lambda:GetFunctionConfiguration",
                        relay_shared::client::describe(&e)
                    )
                }),
        ),
        None => None,
    };
    let bucket = relay_shared::s3::Bucket::new(s3, bucket);
    let targets = cloud_processor::check::Targets {
        bucket: &bucket,
        sqs: &sqs,
        notification_queue_url,
        function_timeout_secs,
    };
    let mut findings = cloud_processor::check::check(config, aws, &targets).await;
    if let Some(path) = sample {
        let name = path.display().to_string();
        match std::fs::File::open(path) {
            Ok(file) => findings.extend(cloud_processor::check::sample(config, &name, file)),
            Err(e) => findings.push(relay_shared::check::Finding::fail(format!(
                "sample {name}: cannot be read: {e}"
            ))),
        }
    }
    Ok(if relay_shared::check::print(&findings) {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// The audit as text: per finding, how many, how old, and what to do next.
fn print_audit(report: &replay::AuditReport, sel: &Selection, older_than_mins: i64, now: i64) {
    let age = |secs: i64| {
        let secs = secs.max(0);
        match secs {
            0..3600 => format!("{} min", secs / 60),
            3600..86_400 => format!("{:.1} h", secs as f64 / 3600.0),
            _ => format!("{:.1} days", secs as f64 / 86_400.0),
        }
    };
    let bucket = &sel.bucket;
    let prefix = &sel.prefix;
    let n = report.unprocessed.len();
    if n == 0 {
        println!("unprocessed: none older than {older_than_mins} min");
    } else {
        let oldest = report
            .unprocessed
            .iter()
            .map(|o| now - o.last_modified_secs)
            .max()
            .unwrap_or(0);
        println!(
            "unprocessed: {n} raw object(s) without a done marker after {older_than_mins} min, the oldest {}",
            age(oldest)
        );
        println!(
            "  next: look in the notification dead-letter queue for why; then \
             `cloud-processor replay --bucket {bucket} --prefix {prefix} --notification-queue-url Q` sends them again"
        );
        for o in &report.unprocessed {
            println!("  {} ({})", o.key, age(now - o.last_modified_secs));
        }
    }
    for (title, keys, next) in [
        (
            "leases with no live owner",
            &report.stale_leases,
            "a processor died or failed and no retry has come: replay the same prefix (missing mode); the retry resumes where the lease says",
        ),
        (
            "quarantined",
            &report.quarantined,
            "each record gives the reason; once fixed, `replay --mode reprocess --prefix <key>` sends the object again",
        ),
        (
            "reject reports",
            &report.reject_reports,
            "each report lists the rejected records with their byte ranges and reasons; the rest of each object was sent",
        ),
    ] {
        println!("{title}: {}", keys.len());
        if !keys.is_empty() {
            println!("  next: {next}");
        }
        for k in keys {
            println!("  {k}");
        }
    }
}

/// `process`: the pipeline on local files, no AWS.
fn process_files(
    config: &Config,
    files: &[std::path::PathBuf],
    out: Option<&std::path::Path>,
    max_message_bytes: usize,
) -> anyhow::Result<ExitCode> {
    if let Some(dir) = out
        && !dir.is_dir()
    {
        anyhow::bail!(
            "--out {}: not a directory; create it first, or leave --out out to write to stdout",
            dir.display()
        );
    }
    let mut failed = false;
    let stdout = std::io::stdout();
    for file in files {
        let name = file.display().to_string();
        let src: Box<dyn std::io::Read> = if name == "-" {
            Box::new(std::io::stdin().lock())
        } else {
            Box::new(std::fs::File::open(file).with_context(|| format!("opening {name}"))?)
        };
        let settings = config.settings(max_message_bytes, &name);
        let stem = file
            .file_name()
            .map_or("stdin".into(), |n| n.to_string_lossy().into_owned());
        let mut write_error = None;
        let result = pipeline::run(src, &settings, |chunk| {
            let written = match out {
                Some(dir) => std::fs::write(
                    dir.join(format!("{stem}.{:05}.json", chunk.index)),
                    &chunk.body,
                ),
                None => {
                    let mut lock = stdout.lock();
                    lock.write_all(&chunk.body)
                        .and_then(|()| lock.write_all(b"\n"))
                }
            };
            match written {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(e) = write_error {
            let to = out.map_or("stdout".to_owned(), |d| d.display().to_string());
            return Err(e).with_context(|| format!("writing {name}'s message bodies to {to}"));
        }
        match result {
            Ok(report) => {
                for r in &report.rejects {
                    let excerpt: String = r.excerpt.chars().flat_map(char::escape_debug).collect();
                    eprintln!(
                        "{name}:{}: offset {} ({} bytes): {}: {excerpt}",
                        r.line, r.offset, r.length, r.reason
                    );
                }
                let s = &report.stats;
                if report.rejects.len() < s.rejected as usize {
                    eprintln!(
                        "{name}: {} more rejects not listed",
                        s.rejected as usize - report.rejects.len()
                    );
                }
                eprintln!("{name}: {}", serde_json::to_string(s).unwrap_or_default());
                for (field, &missing) in config.projection.names().iter().zip(&s.field_missing) {
                    if missing > 0 && missing == s.records_in {
                        eprintln!(
                            "{name}: warning: field {field} is in none of its {} record(s); is its path right?",
                            s.records_in
                        );
                    } else if missing > 0 {
                        eprintln!(
                            "{name}: field {field} is missing from {missing} of {} record(s)",
                            s.records_in
                        );
                    }
                }
                if !s.accounted() {
                    failed = true;
                    eprintln!(
                        "{name}: the byte accounting does not add up; please report this as a bug"
                    );
                }
            }
            Err(e) => {
                failed = true;
                eprintln!("{name}: cannot be read: {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
