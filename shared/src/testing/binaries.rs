//! Running the real binaries in tests: a free port for their metrics,
//! their `/metrics` and `/healthz` over plain HTTP, and their logs.

use std::time::Duration;

/// A plain HTTP/1.0 GET on loopback, for a binary's `/metrics` and `/`:
/// the whole answer, headers included.
pub fn http_get(addr: &str, path: &str) -> String {
    use std::io::{Read, Write};
    let get = || -> std::io::Result<String> {
        let mut stream = std::net::TcpStream::connect(addr)?;
        write!(stream, "GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n")?;
        let mut answer = String::new();
        stream.read_to_string(&mut answer)?;
        Ok(answer)
    };
    get().unwrap_or_else(|e| panic!("GET http://{addr}{path}: {e}"))
}

/// Waits (20 s at most) until a binary serves on `addr`, then returns its
/// `/metrics`. On time-out, fails with the binary's log at `log`.
pub async fn first_metrics(addr: &str, log: &std::path::Path) -> String {
    let started = std::time::Instant::now();
    loop {
        if std::net::TcpStream::connect(addr).is_ok() {
            return http_get(addr, "/metrics");
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "nothing served on {addr} within 20 s:\n{}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Checks a binary's text log at `log` (stderr piped to a file): no colour
/// codes, and a start line with the binary's version and `setting` (a
/// fragment of its settings). Returns the log.
pub fn assert_plain_log_with_start_line(
    log: &std::path::Path,
    binary: &str,
    setting: &str,
) -> String {
    let text = std::fs::read_to_string(log).unwrap_or_default();
    assert!(
        !text.contains('\u{1b}'),
        "colour codes in a piped log:\n{text}"
    );
    assert!(
        text.contains(&format!("{binary} starting"))
            && text.contains(env!("CARGO_PKG_VERSION"))
            && text.contains(setting),
        "no start line with the version and {setting}:\n{text}"
    );
    text
}
