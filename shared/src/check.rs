//! What both binaries' `check` commands print: one line per check, led by
//! its verdict, so an operator (or a script) reads it at a glance.

/// How one check came out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Ok,
    /// Works, but weakens a guarantee or wastes something.
    Warn,
    /// The relay cannot work this way: the line says how to fix it.
    Fail,
    /// Not a check: something to see, such as a sample's projection.
    Info,
}

/// One check's verdict and what it found, naming the resource, and on
/// failure the cause and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub verdict: Verdict,
    pub line: String,
}

impl Finding {
    pub fn ok(line: impl Into<String>) -> Self {
        Self::new(Verdict::Ok, line)
    }
    pub fn warn(line: impl Into<String>) -> Self {
        Self::new(Verdict::Warn, line)
    }
    pub fn fail(line: impl Into<String>) -> Self {
        Self::new(Verdict::Fail, line)
    }
    pub fn info(line: impl Into<String>) -> Self {
        Self::new(Verdict::Info, line)
    }
    fn new(verdict: Verdict, line: impl Into<String>) -> Self {
        Self {
            verdict,
            line: line.into(),
        }
    }
}

/// Prints the findings to stdout, one line each; true if none failed.
pub fn print(findings: &[Finding]) -> bool {
    for f in findings {
        let lead = match f.verdict {
            Verdict::Ok => "ok  ",
            Verdict::Warn => "WARN",
            Verdict::Fail => "FAIL",
            Verdict::Info => "    ",
        };
        println!("{lead} {}", f.line);
    }
    findings.iter().all(|f| f.verdict != Verdict::Fail)
}
