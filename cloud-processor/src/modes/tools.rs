//! The operator tools' front-ends: `replay` (its confirmation prompt and
//! progress bar) and `audit` (its report as text), over the logic in
//! [`crate::modes::replay`].

use std::io::IsTerminal;

use relay_shared::client::{ClientOptions, load_sdk_config, with_timeouts};

use crate::cli::{Command, ConfigError, Range, ReplayArgs};
use crate::ingest::sqs::Notifications;
use crate::modes::lambda_api::Function;
use crate::modes::replay::{self, AuditReport, Mode, ReplayError, Selection, Target};

#[derive(Debug, thiserror::Error)]
pub enum ToolError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Replay(#[from] ReplayError),
    #[error(
        "--mode reprocess deletes done markers and sends every object again; confirm with --yes"
    )]
    NeedsYes,
    #[error("not confirmed; nothing was changed")]
    NotConfirmed,
    #[error("give --notification-queue-url or --function-name")]
    NoTarget,
    #[error("reading the confirmation: {0}")]
    Prompt(std::io::Error),
}

/// How a tool's run ended, for its exit status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Finished {
    Clean,
    /// `audit` found objects or leases that need attention.
    Findings,
}

/// Runs `replay` or `audit`; any other command is not a tool.
pub async fn run(command: Option<Command>, raw_prefix: &str) -> Result<Finished, ToolError> {
    match command {
        Some(Command::Replay(args)) => replay(args, raw_prefix).await,
        Some(Command::Audit {
            range,
            older_than_mins,
            json,
        }) => audit(&range, raw_prefix, older_than_mins, json).await,
        _ => Ok(Finished::Clean),
    }
}

/// The bucket a range names, with a client built for a tool (no lease).
async fn store(range: &Range) -> (relay_shared::client::SdkConfig, relay_shared::s3::Bucket) {
    let sdk = with_timeouts(&load_sdk_config().await, range.timeouts.resolve(None));
    let bucket = relay_shared::s3::Bucket::connect(
        &sdk,
        ClientOptions {
            s3_path_style: range.s3_path_style,
        },
        &range.bucket,
    );
    (sdk, bucket)
}

/// Asks before `reprocess` sends everything again, unless `--yes`.
fn confirm(sel: &Selection) -> Result<(), ToolError> {
    if !std::io::stdin().is_terminal() {
        return Err(ToolError::NeedsYes);
    }
    eprint!(
        "Reprocess every object under s3://{}/{}? Consumers will see their records again. Type 'reprocess': ",
        sel.bucket, sel.prefix
    );
    let mut answer = String::new();
    std::io::stdin()
        .read_line(&mut answer)
        .map_err(ToolError::Prompt)?;
    if answer.trim() == "reprocess" {
        Ok(())
    } else {
        Err(ToolError::NotConfirmed)
    }
}

/// `replay`: progress on stderr (a dry run lists each object on stdout),
/// then its summary as one JSON line on stderr.
pub async fn replay(r: ReplayArgs, raw_prefix: &str) -> Result<Finished, ToolError> {
    let sel = Selection::of(&r.range, raw_prefix)?;
    if r.mode == Mode::Reprocess && !r.dry_run && !r.yes {
        confirm(&sel)?;
    }
    let (sdk, store) = store(&r.range).await;
    let target = match (r.notification_queue_url, r.function_name) {
        (Some(url), _) => Target::Queue(Notifications::connect(&sdk, url)),
        (None, Some(name)) => Target::Function(Function::new(&sdk, name)),
        (None, None) => return Err(ToolError::NoTarget),
    };
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{bar:40} {pos}/{len} {msg}")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    let dry_run = r.dry_run;
    let summary = replay::replay(
        &store,
        &target,
        &sel,
        r.mode,
        dry_run,
        r.rate_per_sec,
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
    eprintln!("{}", serde_json::to_string(&summary).unwrap_or_default());
    Ok(Finished::Clean)
}

/// `audit`: the report as text, or as JSON with `json`.
pub async fn audit(
    range: &Range,
    raw_prefix: &str,
    older_than_mins: i64,
    json: bool,
) -> Result<Finished, ToolError> {
    let sel = Selection::of(range, raw_prefix)?;
    let (_, store) = store(range).await;
    let now = jiff::Timestamp::now().as_second();
    let report = replay::audit(&store, &sel, older_than_mins * 60, now).await?;
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(&report).unwrap_or_default()
        );
    } else {
        print_audit(&report, &sel, older_than_mins, now);
    }
    Ok(
        if report.unprocessed.is_empty() && report.stale_leases.is_empty() {
            Finished::Clean
        } else {
            Finished::Findings
        },
    )
}

/// The audit as text: per finding, how many, how old, and what to do next.
fn print_audit(report: &AuditReport, sel: &Selection, older_than_mins: i64, now: i64) {
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
    if report.last_canaries.is_empty() {
        println!(
            "canaries: none in the selection (RELAY_CANARY_SECS=0 on the agents, or none yet)"
        );
    } else {
        println!("last canary per source:");
        for c in &report.last_canaries {
            let made = i64::try_from(c.created_ms / 1000).unwrap_or(i64::MAX);
            println!(
                "  {}: made {} ago, {} ({})",
                c.source,
                age(now - made),
                if c.processed {
                    "processed"
                } else {
                    "not processed yet"
                },
                c.key
            );
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
