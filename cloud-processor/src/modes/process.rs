//! `cloud-processor process`: the pipeline on local files, as the Lambda
//! would run it, with message bodies written to stdout or a directory and
//! rejects, stats and field misses on stderr. No AWS.

use std::io::Write;
use std::ops::ControlFlow;
use std::path::{Path, PathBuf};

use crate::cli::Config;
use crate::pipeline::body::Chunk;
use crate::pipeline::rules::RULES;
use crate::pipeline::{self, Report};

#[derive(Debug, thiserror::Error)]
pub enum LocalError {
    #[error(
        "{0}: `process` reads no AWS parameters (it runs without AWS); give the key in a file with RELAY_HMAC_KEY_FILE"
    )]
    KeyParameter(String),
    #[error("--out {}: not a directory; create it first, or leave --out out to write to stdout", .0.display())]
    OutNotDir(PathBuf),
    #[error("opening {name}: {source}")]
    Open {
        name: String,
        source: std::io::Error,
    },
    #[error("writing {name}'s message bodies to {to}: {source}")]
    Write {
        name: String,
        to: String,
        source: std::io::Error,
    },
}

/// `process`: the pipeline on local files, no AWS. Reports go to stderr;
/// returns whether every file was read and accounted for.
pub fn run(
    config: &Config,
    files: &[PathBuf],
    out: Option<&Path>,
    max_message_bytes: usize,
) -> Result<bool, LocalError> {
    if let Some(dir) = out
        && !dir.is_dir()
    {
        return Err(LocalError::OutNotDir(dir.to_owned()));
    }
    if let Some(name) = config.key_parameters_in_use().into_iter().flatten().next() {
        return Err(LocalError::KeyParameter(name.to_owned()));
    }
    let mut passed = true;
    for file in files {
        let name = file.display().to_string();
        let src: Box<dyn std::io::Read + Send> = if name == "-" {
            Box::new(std::io::stdin())
        } else {
            Box::new(
                std::fs::File::open(file).map_err(|source| LocalError::Open {
                    name: name.clone(),
                    source,
                })?,
            )
        };
        let settings = crate::object::settings(config, max_message_bytes, &name);
        let stem = file
            .file_name()
            .map_or("stdin".into(), |n| n.to_string_lossy().into_owned());
        let mut write_error = None;
        let result = pipeline::run(src, &settings, |mut chunk| {
            match write(&mut chunk, out, &stem) {
                Ok(()) => ControlFlow::Continue(()),
                Err(e) => {
                    write_error = Some(e);
                    ControlFlow::Break(())
                }
            }
        });
        if let Some(source) = write_error {
            let to = out.map_or("stdout".to_owned(), |d| d.display().to_string());
            return Err(LocalError::Write { name, to, source });
        }
        passed &= match result {
            Ok(report) => summarize(config, &name, &report, out),
            Err(e) => {
                eprintln!("{name}: cannot be read: {e}");
                false
            }
        };
    }
    Ok(passed)
}

/// Writes one message body: to stdout, one per line, or to a file of its
/// own in `out`. A record too large for a message is stored as its own
/// payload object in the cloud: here, a file of its own.
fn write(chunk: &mut Chunk, out: Option<&Path>, stem: &str) -> std::io::Result<()> {
    match out {
        Some(dir) => {
            let path = dir.join(match chunk.payload_size {
                Some(_) => format!("{stem}.{:05}.payload.json", chunk.index),
                None => format!("{stem}.{:05}.json", chunk.index),
            });
            std::fs::File::create(path).and_then(|mut f| chunk.write_body(&mut f))
        }
        None => {
            let stdout = std::io::stdout();
            let mut lock = stdout.lock();
            chunk
                .write_body(&mut lock)
                .and_then(|()| lock.write_all(b"\n"))
        }
    }
}

/// One file's report on stderr: its rejects, its counts, where offloaded
/// records went, and the fields its records lack. False if its bytes do not
/// add up.
fn summarize(config: &Config, name: &str, report: &Report, out: Option<&Path>) -> bool {
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
    if s.offloaded > 0 {
        let where_ = match out {
            Some(dir) => format!("as *.payload.json files in {}", dir.display()),
            None => "inline on stdout".to_owned(),
        };
        eprintln!(
            "{name}: {} record(s) too large for a message are written {where_}; \
             in the cloud they go to S3 and their messages carry Extended Client pointers",
            s.offloaded
        );
    }
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
    for (field, counts) in config.projection.names().iter().zip(&s.schema_rejects) {
        let broken: Vec<String> = RULES
            .iter()
            .zip(counts)
            .filter(|(_, n)| **n > 0)
            .map(|(rule, n)| format!("{n} broke `{rule}`"))
            .collect();
        if !broken.is_empty() {
            eprintln!(
                "{name}: field {field}: {} of {} record(s) rejected",
                broken.join(", "),
                s.records_in
            );
        }
    }
    if !s.accounted() {
        eprintln!("{name}: the byte accounting does not add up; please report this as a bug");
    }
    s.accounted()
}
