//! A crate's source tree read as a newcomer reads it: which file names
//! which, how long each file runs before its tests, and how long each
//! function is. Each crate's `tests/layering.rs` holds its tree to its
//! rules with these, so the direction of its imports cannot regress.
//!
//! It reads Rust the simple way (paths after `crate::`, `super::` and
//! `self::`, `use` trees, braces), which is enough for code that follows
//! rustfmt; it is a test's tool, not a parser.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// One source file: its module path (`["object", "lease"]`, empty for the
/// crate root) and its text up to its `#[cfg(test)] mod tests`.
#[derive(Debug, Clone)]
pub struct SourceFile {
    pub module: Vec<String>,
    pub path: PathBuf,
    pub text: String,
}

impl SourceFile {
    /// The module path as `a/b`, `lib` for the root.
    pub fn name(&self) -> String {
        if self.module.is_empty() {
            "lib".to_owned()
        } else {
            self.module.join("/")
        }
    }

    /// Its top-level module (`object` for `object/lease`), `lib` for the root.
    pub fn top(&self) -> String {
        self.module.first().cloned().unwrap_or_else(|| "lib".into())
    }

    /// Lines before its tests.
    pub fn lines(&self) -> usize {
        self.text.lines().count()
    }
}

/// Every `.rs` file under a crate's `src/`.
#[derive(Debug, Clone)]
pub struct SourceTree {
    pub files: Vec<SourceFile>,
}

/// The text before the file's unit tests (a top-level `#[cfg(test)]`
/// followed within a few lines by `mod tests`), with comments removed.
fn code_before_tests(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    let is_tests = |l: &str| {
        l.trim_start_matches("pub ")
            .trim_start_matches("pub(crate) ")
            .starts_with("mod tests")
    };
    let end = (0..lines.len())
        .find(|&i| lines[i] == "#[cfg(test)]" && lines[i + 1..].iter().take(3).any(|l| is_tests(l)))
        .unwrap_or(lines.len());
    lines[..end]
        .iter()
        .map(|l| match l.find("//") {
            // Not inside a string literal (good enough for this tree).
            Some(at) if l[..at].matches('"').count() % 2 == 0 => &l[..at],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

impl SourceTree {
    /// Reads `dir` (a crate's `src/`).
    pub fn read(dir: &Path) -> Self {
        let mut files = Vec::new();
        let mut stack = vec![dir.to_owned()];
        while let Some(d) = stack.pop() {
            let entries = std::fs::read_dir(&d).unwrap_or_else(|e| panic!("{}: {e}", d.display()));
            for entry in entries {
                let path = entry
                    .unwrap_or_else(|e| panic!("{}: {e}", d.display()))
                    .path();
                if path.is_dir() {
                    stack.push(path);
                    continue;
                }
                // `tests.rs` is a module's unit tests, kept in a file of its own.
                if path.extension().is_none_or(|x| x != "rs")
                    || path.file_stem().is_some_and(|s| s == "tests")
                {
                    continue;
                }
                let rel = path.strip_prefix(dir).unwrap_or(&path).with_extension("");
                let mut module: Vec<String> = rel
                    .components()
                    .map(|c| c.as_os_str().to_string_lossy().into_owned())
                    .collect();
                if module.last().is_some_and(|m| m == "mod") {
                    module.pop();
                }
                if module == ["lib"] || module == ["main"] {
                    module.clear();
                }
                let text = std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
                files.push(SourceFile {
                    module,
                    text: code_before_tests(&text),
                    path,
                });
            }
        }
        files.sort_by(|a, b| a.module.cmp(&b.module));
        Self { files }
    }

    /// `src/` of the crate whose manifest directory is `manifest_dir`.
    pub fn of_crate(manifest_dir: &str) -> Self {
        Self::read(&Path::new(manifest_dir).join("src"))
    }

    fn modules(&self) -> BTreeSet<Vec<String>> {
        self.files.iter().map(|f| f.module.clone()).collect()
    }

    /// Per file, the files it names (by module path, `a/b`), itself and its
    /// own ancestors left out: a module declaring its children is an index,
    /// not an import.
    pub fn file_imports(&self) -> BTreeMap<String, BTreeSet<String>> {
        let modules = self.modules();
        let mut graph = BTreeMap::new();
        for f in &self.files {
            let mut named = BTreeSet::new();
            for path in paths_named(&f.text) {
                if let Some(m) = resolve(&path, &f.module, &modules) {
                    let ancestor = m.len() <= f.module.len() && f.module[..m.len()] == m[..];
                    if !ancestor && !m.is_empty() {
                        named.insert(m.join("/"));
                    }
                }
            }
            graph.insert(f.name(), named);
        }
        graph
    }

    /// Per top-level module, the other top-level modules its files name.
    pub fn module_imports(&self) -> BTreeMap<String, BTreeSet<String>> {
        let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for (file, named) in self.file_imports() {
            let top = file.split('/').next().unwrap_or_default().to_owned();
            let entry = graph.entry(top.clone()).or_default();
            for n in named {
                let other = n.split('/').next().unwrap_or_default().to_owned();
                if other != top {
                    entry.insert(other);
                }
            }
        }
        graph
    }

    /// Files longer than `limit` lines before their tests.
    pub fn long_files(&self, limit: usize) -> Vec<(String, usize)> {
        self.files
            .iter()
            .filter(|f| f.lines() > limit)
            .map(|f| (f.path.display().to_string(), f.lines()))
            .collect()
    }

    /// Functions longer than `limit` lines, from `fn` to its closing brace.
    pub fn long_functions(&self, limit: usize) -> Vec<String> {
        let mut long = Vec::new();
        for f in &self.files {
            let lines: Vec<&str> = f.text.lines().collect();
            for (at, line) in lines.iter().enumerate() {
                let Some(name) = fn_name(line) else { continue };
                if let Some(len) = body_lines(&lines[at..]).filter(|n| *n > limit) {
                    long.push(format!(
                        "{}:{} {name} ({len} lines)",
                        f.path.display(),
                        at + 1
                    ));
                }
            }
        }
        long
    }

    /// `mod.rs` files that define functions, types, impls or constants
    /// instead of only declaring modules and re-exporting: each should be
    /// an index.
    pub fn mod_files_that_are_not_indexes(&self) -> Vec<String> {
        const DEFINITIONS: [&str; 8] = [
            "fn ",
            "async fn ",
            "struct ",
            "enum ",
            "impl",
            "trait ",
            "const ",
            "static ",
        ];
        self.files
            .iter()
            .filter(|f| f.path.ends_with("mod.rs"))
            .filter(|f| {
                f.text.lines().any(|l| {
                    let l = l
                        .trim_start_matches("pub ")
                        .trim_start_matches("pub(crate) ");
                    DEFINITIONS.iter().any(|d| l.starts_with(d))
                })
            })
            .map(SourceFile::name)
            .collect()
    }

    /// Lines of `main.rs`.
    pub fn main_lines(&self) -> usize {
        self.files
            .iter()
            .find(|f| f.path.ends_with("main.rs"))
            .map_or(0, SourceFile::lines)
    }

    /// Files whose code (before tests) contains `needle`.
    pub fn files_naming(&self, needle: &str) -> Vec<String> {
        self.files
            .iter()
            .filter(|f| f.text.contains(needle))
            .map(SourceFile::name)
            .collect()
    }
}

/// The name of the function a line declares, if it declares one.
fn fn_name(line: &str) -> Option<&str> {
    let t = line.trim_start();
    let at = t.find("fn ")?;
    let head = &t[..at];
    let words_ok = head.split_whitespace().all(|w| {
        matches!(
            w,
            "pub" | "async" | "const" | "unsafe" | "extern" | "default"
        ) || w.starts_with("pub(")
    });
    if !words_ok {
        return None;
    }
    let rest = &t[at + 3..];
    let end = rest.find(|c: char| !(c.is_alphanumeric() || c == '_'))?;
    Some(&rest[..end]).filter(|n| !n.is_empty())
}

/// Lines from a function's first line to its closing brace, or `None` for
/// a declaration without a body. Braces inside string and character
/// literals do not count.
fn body_lines(lines: &[&str]) -> Option<usize> {
    let mut depth = 0i32;
    let mut opened = false;
    let mut in_string = false;
    for (n, line) in lines.iter().enumerate() {
        let chars: Vec<char> = line.chars().collect();
        let mut i = 0;
        while i < chars.len() {
            let c = chars[i];
            if in_string {
                match c {
                    '\\' => i += 1,
                    '"' => in_string = false,
                    _ => {}
                }
            } else {
                match c {
                    '"' => in_string = true,
                    // A character literal ('{', '\n'), not a lifetime.
                    '\'' if chars.get(i + 1) == Some(&'\\') => {
                        i += 2;
                        while i < chars.len() && chars[i] != '\'' {
                            i += 1;
                        }
                    }
                    '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    ';' if !opened && depth == 0 => return None,
                    _ => {}
                }
            }
            i += 1;
        }
        if opened && depth <= 0 {
            return Some(n + 1);
        }
    }
    None
}

/// Every path that starts at `crate`, `super` or `self`, with `use` trees
/// expanded.
fn paths_named(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = text;
    while let Some(at) = rest.find("use ") {
        let before = rest[..at].chars().last();
        let tail = &rest[at + 4..];
        rest = tail;
        if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
            continue;
        }
        let Some(end) = tail.find(';') else { break };
        let tree = tail[..end].split_whitespace().collect::<Vec<_>>().join(" ");
        expand("", &tree, &mut out);
    }
    for root in ["crate::", "super::", "self::"] {
        for (at, _) in text.match_indices(root) {
            let before = text[..at].chars().last();
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':') {
                continue;
            }
            let end = text[at..]
                .find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':'))
                .map_or(text.len(), |e| at + e);
            out.push(text[at..end].trim_end_matches(':').to_owned());
        }
    }
    out
}

/// Expands a `use` tree (`a::{b, c::{d, e}}`) into its paths.
fn expand(prefix: &str, tree: &str, out: &mut Vec<String>) {
    let mut depth = 0;
    let mut start = 0;
    let mut parts = Vec::new();
    for (i, c) in tree.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                parts.push(&tree[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tree[start..]);
    for part in parts.into_iter().map(str::trim).filter(|p| !p.is_empty()) {
        match part.find('{') {
            Some(open) if part.ends_with('}') => {
                expand(
                    &format!("{prefix}{}", &part[..open]),
                    &part[open + 1..part.len() - 1],
                    out,
                );
            }
            _ => {
                let path = part.split(" as ").next().unwrap_or(part).trim();
                out.push(format!("{prefix}{path}"));
            }
        }
    }
}

/// The longest module that `path`, named in module `from`, reaches.
fn resolve(path: &str, from: &[String], modules: &BTreeSet<Vec<String>>) -> Option<Vec<String>> {
    let mut segs = path.split("::").filter(|s| !s.is_empty());
    let mut base: Vec<String> = match segs.next()? {
        "crate" => Vec::new(),
        "self" => from.to_vec(),
        "super" => from[..from.len().saturating_sub(1)].to_vec(),
        _ => return None,
    };
    let mut segs = segs.peekable();
    while segs.peek() == Some(&"super") {
        segs.next();
        base.pop();
    }
    base.extend(segs.map(str::to_owned));
    (0..=base.len())
        .rev()
        .map(|n| base[..n].to_vec())
        .find(|m| modules.contains(m))
}

/// The first import circle in `graph`, if there is one, as the path that
/// closes it.
pub fn find_cycle(graph: &BTreeMap<String, BTreeSet<String>>) -> Option<Vec<String>> {
    fn visit(
        m: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if done.contains(m) {
            return None;
        }
        if let Some(at) = path.iter().position(|p| p == m) {
            let mut circle = path[at..].to_vec();
            circle.push(m.to_owned());
            return Some(circle);
        }
        path.push(m.to_owned());
        for next in graph.get(m).into_iter().flatten() {
            if let Some(c) = visit(next, graph, path, done) {
                return Some(c);
            }
        }
        path.pop();
        done.insert(m.to_owned());
        None
    }
    let mut done = BTreeSet::new();
    graph
        .keys()
        .find_map(|m| visit(m, graph, &mut Vec::new(), &mut done))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn use_trees_and_paths_are_read() {
        let text = "use crate::a::{b::C, d::{e, f as g}};\nfn x() { crate::h::i(); super::j::K; }";
        let mut got = paths_named(text);
        got.sort();
        assert_eq!(
            got,
            [
                // The plain scan also sees the tree's head.
                "crate::a",
                "crate::a::b::C",
                "crate::a::d::e",
                "crate::a::d::f",
                "crate::h::i",
                "super::j::K"
            ]
        );
    }

    #[test]
    fn circles_are_found_and_functions_measured() {
        let g: BTreeMap<String, BTreeSet<String>> = [
            ("a", vec!["b"]),
            ("b", vec!["c"]),
            ("c", vec!["a"]),
            ("d", vec![]),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.into_iter().map(str::to_owned).collect()))
        .collect();
        assert_eq!(find_cycle(&g).unwrap(), ["a", "b", "c", "a"]);
        assert_eq!(fn_name("    pub(crate) async fn go(x: u8) {"), Some("go"));
        assert_eq!(fn_name("let f = |x| x; // fn not"), None);
        assert_eq!(body_lines(&["fn a() {", "  x", "}"]), Some(3));
        assert_eq!(body_lines(&["fn a();"]), None);
        let braces = [
            "fn b(x: u8) {",
            "  match x { b'{' => 1, _ if \"}{\" == \"\" => 2, b'\\'' => 3 }",
            "}",
            "x",
        ];
        assert_eq!(body_lines(&braces), Some(3));
    }
}
