//! The docs are checked against the code they describe, so they cannot
//! drift: every metric the code defines is on the metrics page and no page
//! names one it does not; every `RELAY_*` setting the code reads is in the
//! configuration reference; and infra's inputs and outputs tables are
//! rendered from `variables.tf` and `outputs.tf`. (Each binary's settings
//! tables are checked by its own `tests/docs.rs`.)

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

fn repo(path: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(path)
}

fn read(path: &str) -> String {
    std::fs::read_to_string(repo(path)).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Every `word` in `text` that starts with `prefix` and continues with
/// `[A-Za-z0-9_]`.
fn words(text: &str, prefix: &str, upper: bool) -> BTreeSet<String> {
    let ok = |c: char| {
        c == '_'
            || c.is_ascii_digit()
            || if upper {
                c.is_ascii_uppercase()
            } else {
                c.is_ascii_lowercase()
            }
    };
    text.match_indices(prefix)
        .filter(|(at, _)| {
            !text[..*at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
        })
        .map(|(at, _)| {
            let rest = &text[at..];
            let end = rest[prefix.len()..]
                .find(|c: char| !ok(c))
                .map_or(rest.len(), |e| e + prefix.len());
            rest[..end].trim_end_matches('_').to_owned()
        })
        .filter(|w| w.len() > prefix.len())
        .collect()
}

/// The metric names the code defines: its `pub const NAME: &str = "relay_..."`.
fn defined_metrics() -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for file in [
        "edge-agent/src/metrics.rs",
        "edge-agent/src/health.rs",
        "cloud-processor/src/metrics.rs",
        "shared/src/telemetry.rs",
        "shared/src/attempts.rs",
    ] {
        for line in read(file).lines() {
            if let Some(rest) = line.trim().strip_prefix("pub const ")
                && let Some((_, value)) = rest.split_once("&str = \"relay_")
            {
                names.insert(format!("relay_{}", value.trim_end_matches("\";")));
            }
        }
    }
    names
}

/// The pages an operator reads.
fn pages() -> Vec<String> {
    let mut pages = vec![
        "README.md".to_owned(),
        "infra/README.md".to_owned(),
        "infra/prometheus/relay.rules.yml".to_owned(),
    ];
    for entry in std::fs::read_dir(repo("docs")).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|x| x == "md") {
            pages.push(format!(
                "docs/{}",
                path.file_name().unwrap().to_string_lossy()
            ));
        }
    }
    pages.sort();
    pages
}

#[test]
fn every_metric_is_on_the_metrics_page_and_no_page_names_another() {
    let defined = defined_metrics();
    assert!(defined.len() > 30, "{defined:?}");
    let on_page = words(&read("docs/metrics.md"), "relay_", false);
    let missing: Vec<&String> = defined.difference(&on_page).collect();
    assert!(
        missing.is_empty(),
        "docs/metrics.md does not describe {missing:?}"
    );
    for page in pages() {
        let named = words(&read(&page), "relay_", false);
        let unknown: Vec<&String> = named
            .iter()
            // Histograms are scraped as _bucket, _sum and _count.
            .filter(|n| {
                let base = ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| n.strip_suffix(s))
                    .unwrap_or(n);
                !defined.contains(base)
            })
            // Names of things that are not metrics.
            .filter(|n| {
                !matches!(
                    n.as_str(),
                    "relay_shared" | "relay_agent" | "relay_processor"
                )
            })
            .collect();
        assert!(
            unknown.is_empty(),
            "{page} names metrics the code does not define: {unknown:?}"
        );
    }
}

/// The `RELAY_*` names in the code outside tests: settings, and the few
/// variables the scripts and benchmarks read.
fn relay_names(dirs: &[&str]) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    for dir in dirs {
        for entry in walk(&repo(dir)) {
            let text = std::fs::read_to_string(&entry).unwrap();
            let text = text.split("#[cfg(test)]").next().unwrap_or_default();
            names.extend(words(text, "RELAY_", true));
        }
    }
    names
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(walk(&path));
        } else if path
            .extension()
            .is_some_and(|x| x == "rs" || x == "sh" || x == "py")
        {
            out.push(path);
        }
    }
    out
}

#[test]
fn every_relay_setting_the_code_reads_is_documented() {
    let reference = read("docs/configuration.md");
    let settings = relay_names(&["edge-agent/src", "cloud-processor/src", "shared/src"]);
    let missing: Vec<&String> = settings
        .iter()
        .filter(|n| !reference.contains(n.as_str()))
        .collect();
    assert!(
        missing.is_empty(),
        "docs/configuration.md does not mention {missing:?}"
    );
    // The scripts' and benchmarks' knobs are in the development and
    // benchmark pages.
    let dev = read("docs/development.md") + &read("docs/benchmarks.md") + &reference;
    let knobs = relay_names(&["scripts", "edge-agent/benches", "cloud-processor/benches"]);
    let missing: Vec<&String> = knobs.iter().filter(|n| !dev.contains(n.as_str())).collect();
    assert!(
        missing.is_empty(),
        "docs/development.md and docs/benchmarks.md do not mention {missing:?}"
    );
}

/// One `variable` or `output` block of a Terraform file: its name and
/// its top-level attributes, each value as written (several lines joined).
fn blocks(file: &str, kind: &str) -> Vec<(String, Vec<(String, String)>)> {
    let text = read(file);
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        let Some(rest) = line.strip_prefix(&format!("{kind} \"")) else {
            continue;
        };
        let name = rest.split('"').next().unwrap_or_default().to_owned();
        let mut attrs = Vec::new();
        while let Some(line) = lines.next() {
            if line == "}" {
                break;
            }
            let Some((key, value)) = line
                .strip_prefix("  ")
                .and_then(|l| (!l.starts_with(' ')).then(|| l.split_once(" = ")).flatten())
            else {
                continue;
            };
            let mut value = value.trim().to_owned();
            let depth = |v: &str| {
                v.chars()
                    .map(|c| match c {
                        '{' | '(' | '[' => 1,
                        '}' | ')' | ']' => -1,
                        _ => 0,
                    })
                    .sum::<i32>()
            };
            while depth(&value) > 0 {
                let Some(next) = lines.next() else { break };
                value.push(' ');
                value.push_str(next.trim());
            }
            let value = value.split_whitespace().collect::<Vec<_>>().join(" ");
            attrs.push((key.trim().to_owned(), value));
        }
        out.push((name, attrs));
    }
    out
}

fn attr<'a>(attrs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    attrs
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
}

/// A Terraform string literal's text.
fn unquote(v: &str) -> String {
    v.trim_matches('"').replace("\\\"", "\"")
}

fn cell(v: &str) -> String {
    v.replace('|', "\\|")
}

#[test]
fn infra_inputs_and_outputs_are_rendered_from_the_module() {
    let mut inputs = String::from("| name | type | default | description |\n|---|---|---|---|\n");
    for (name, attrs) in blocks("infra/variables.tf", "variable") {
        let default = match attr(&attrs, "default") {
            None => "(required)".to_owned(),
            Some(v) => format!("`{}`", cell(v)),
        };
        inputs.push_str(&format!(
            "| `{name}` | `{}` | {default} | {} |\n",
            cell(attr(&attrs, "type").unwrap_or("any")),
            cell(&unquote(attr(&attrs, "description").unwrap_or_default()))
        ));
    }
    relay_shared::testing::check_generated("infra/README.md", "inputs", &inputs);
    let mut outputs = String::from("| name | description |\n|---|---|\n");
    for (name, attrs) in blocks("infra/outputs.tf", "output") {
        outputs.push_str(&format!(
            "| `{name}` | {} |\n",
            cell(&unquote(attr(&attrs, "description").unwrap_or_default()))
        ));
    }
    relay_shared::testing::check_generated("infra/README.md", "outputs", &outputs);
}

/// Every script the docs' shell blocks run exists, is executable and parses
/// (`bash -n`), and every file of the repository they name (what `install`
/// and `cp` copy, say) exists: the commands can be run as written from a
/// checkout. (The binaries' own commands are checked by their crates.)
#[test]
fn the_docs_commands_name_scripts_and_files_that_exist() {
    use std::os::unix::fs::PermissionsExt;
    let commands = relay_shared::testing::all_doc_commands();
    let tops = [
        "scripts/",
        "edge-agent/",
        "cloud-processor/",
        "shared/",
        "infra/",
        "docs/",
    ];
    let mut scripts = 0;
    for c in &commands {
        let program = &c.argv[0];
        if program.starts_with("scripts/") {
            let mode = std::fs::metadata(repo(program)).map(|m| m.permissions().mode());
            assert!(
                mode.is_ok_and(|m| m & 0o111 != 0),
                "{}: {program} is not an executable script",
                c.at
            );
            let parsed = std::process::Command::new("bash")
                .arg("-n")
                .arg(repo(program))
                .status();
            assert!(
                parsed.unwrap().success(),
                "{}: {program} does not parse",
                c.at
            );
            scripts += 1;
        }
        for arg in &c.argv[1..] {
            if tops.iter().any(|t| arg.starts_with(t)) {
                assert!(
                    repo(arg).exists(),
                    "{}: {arg} is not in the repository",
                    c.at
                );
            }
        }
    }
    assert!(scripts >= 4, "{commands:?}");
}
