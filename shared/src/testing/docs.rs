//! Generated sections of the docs, checked against what the code renders.

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
