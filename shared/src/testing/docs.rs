//! The docs checked against the code: their generated sections against
//! what the code renders, and their shell commands against the binaries
//! and the files of the repository.

/// Checks that the part of the page at `path` (relative to the repository)
/// between `<!-- generated: {section} -->` and `<!-- end generated: {section} -->`
/// is `body`, as the code renders it now. With `RELAY_UPDATE_DOCS=1` it
/// writes `body` there instead: how to refresh a reference after a change.
pub fn check_generated(path: &str, section: &str, body: &str) {
    let file = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .join(path);
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{path}: {e}"));
    let (open, close) = (
        format!("<!-- generated: {section} -->\n"),
        format!("<!-- end generated: {section} -->"),
    );
    let start = text
        .find(&open)
        .unwrap_or_else(|| panic!("{path} has no `{}` marker", open.trim()))
        + open.len();
    let end = start
        + text[start..]
            .find(&close)
            .unwrap_or_else(|| panic!("{path} has no `{close}` marker"));
    let want = format!("\n{}\n", body.trim());
    if text[start..end] == want {
        return;
    }
    if std::env::var("RELAY_UPDATE_DOCS").as_deref() == Ok("1") {
        let updated = format!("{}{want}{}", &text[..start], &text[end..]);
        std::fs::write(&file, updated).unwrap_or_else(|e| panic!("{path}: {e}"));
        return;
    }
    let first = text[start..end]
        .lines()
        .zip(want.lines())
        .find(|(a, b)| a != b)
        .map_or_else(
            || "the two differ in length".to_owned(),
            |(a, b)| format!("the page says\n  {a}\nand the code\n  {b}"),
        );
    panic!(
        "{path}, section {section}, no longer matches the code: {first}\n\
         Refresh it with RELAY_UPDATE_DOCS=1 and the same test, then read the diff."
    );
}

/// One command of a shell block in the docs, as a reader would type it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DocCommand {
    /// Where it is: the page and the line its command starts on.
    pub at: String,
    /// The program and its arguments, as sh splits them (`sudo`, `exec` and
    /// leading `VAR=value` assignments taken off).
    pub argv: Vec<String>,
}

/// The pages an operator reads: the README, docs/ and infra/README.md.
fn pages() -> Vec<String> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut pages = vec!["README.md".to_owned(), "infra/README.md".to_owned()];
    let mut docs: Vec<String> = std::fs::read_dir(root.join("docs"))
        .unwrap_or_else(|e| panic!("docs/: {e}"))
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".md"))
        .map(|n| format!("docs/{n}"))
        .collect();
    docs.sort();
    pages.extend(docs);
    pages
}

/// Every command of the pages' `sh` blocks that runs `program`.
pub fn doc_commands(program: &str) -> Vec<DocCommand> {
    let mut all = all_doc_commands();
    all.retain(|c| c.argv.first().is_some_and(|p| p == program));
    all
}

/// Runs every `program` command of the docs' shell blocks as far as it can
/// run here, with the binary at `exe`: `man` and `completions` whole; any
/// other with `--help` appended, so each flag must exist on its subcommand
/// and each value must parse. Panics naming the page and line of the first
/// that fails.
pub fn check_doc_commands(program: &str, exe: &str) {
    let commands = doc_commands(program);
    assert!(commands.len() >= 3, "{commands:?}");
    for c in commands {
        let whole = matches!(
            c.argv.get(1).map(String::as_str),
            Some("man" | "completions")
        );
        let mut args = c.argv[1..].to_vec();
        if !whole {
            args.push("--help".into());
        }
        let out = std::process::Command::new(exe)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{exe}: {e}"));
        assert!(
            out.status.success() && !out.stdout.is_empty(),
            "{}: {:?} fails: {}",
            c.at,
            c.argv,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every command of the pages' `sh` blocks.
pub fn all_doc_commands() -> Vec<DocCommand> {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut out = Vec::new();
    for page in pages() {
        let text =
            std::fs::read_to_string(root.join(&page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        for (line, command) in shell_lines(&text) {
            for argv in simple_commands(&command) {
                out.push(DocCommand {
                    at: format!("{page}:{line}"),
                    argv,
                });
            }
        }
    }
    out
}

/// The commands of a page's ```sh blocks, backslash continuations joined,
/// each with the line it starts on.
fn shell_lines(text: &str) -> Vec<(usize, String)> {
    let (mut out, mut in_sh, mut cur, mut start) = (Vec::new(), false, String::new(), 0);
    for (n, line) in text.lines().enumerate() {
        let fence = line.trim_start();
        if let Some(lang) = fence.strip_prefix("```") {
            in_sh = !in_sh && matches!(lang.trim(), "sh" | "bash" | "shell");
            continue;
        }
        if !in_sh {
            continue;
        }
        if cur.is_empty() {
            start = n + 1;
        }
        match line.strip_suffix('\\') {
            Some(head) => cur.push_str(head),
            None => {
                cur.push_str(line);
                out.push((start, std::mem::take(&mut cur)));
            }
        }
    }
    out
}

/// The simple commands of one line: split as sh splits words (comments
/// dropped), cut at `|`, `&&`, `||` and `;`, with `sudo`, `exec` and
/// leading assignments taken off.
fn simple_commands(line: &str) -> Vec<Vec<String>> {
    let Some(words) = shlex::split(line) else {
        return Vec::new();
    };
    let (mut out, mut cur) = (Vec::new(), Vec::new());
    for w in words {
        if matches!(w.as_str(), "|" | "&&" | "||" | ";") {
            out.push(std::mem::take(&mut cur));
            continue;
        }
        let prefix =
            matches!(w.as_str(), "sudo" | "exec") || (w.contains('=') && !w.starts_with('-'));
        if cur.is_empty() && prefix {
            continue;
        }
        cur.push(w);
    }
    out.push(cur);
    out.retain(|c| !c.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shell_blocks_are_split_as_sh_would() {
        let page = "text `edge-agent x`\n```sh\nsudo edge-agent check \\\n  --unit /a # why\nA=1 cloud-processor poll | gzip && exec edge-agent man\n```\n```toml\nedge-agent = 1\n```\n";
        let lines = shell_lines(page);
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].0, 3);
        let cmds: Vec<Vec<String>> = lines.iter().flat_map(|(_, l)| simple_commands(l)).collect();
        assert_eq!(
            cmds,
            [
                vec!["edge-agent", "check", "--unit", "/a"],
                vec!["cloud-processor", "poll"],
                vec!["gzip"],
                vec!["edge-agent", "man"],
            ]
        );
    }
}
