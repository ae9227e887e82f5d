//! Projected values as they are written into bodies: compact (a
//! pretty-printed record still gives one line) and in the characters SQS
//! accepts. Shared by the projection, the field rules and the push parser.

/// SQS refuses U+FFFE and U+FFFF, which valid JSON and valid UTF-8 can hold
/// (raw, only inside strings). Writes them as `\uFFFE` / `\uFFFF` escapes:
/// the same JSON value, in characters SQS accepts. Every other character a
/// valid JSON text can hold raw is allowed (control characters must already
/// be escaped, and surrogates cannot appear in UTF-8).
pub fn escape_for_sqs(out: &mut Vec<u8>, from: usize) {
    let nonchar = |w: &[u8]| matches!(w, [0xEF, 0xBF, 0xBE | 0xBF]);
    if memchr::memchr(0xEF, &out[from..]).is_none() || !out[from..].windows(3).any(nonchar) {
        return;
    }
    let tail = out.split_off(from);
    let mut i = 0;
    while i < tail.len() {
        if tail[i..].len() >= 3 && nonchar(&tail[i..i + 3]) {
            out.extend_from_slice(if tail[i + 2] == 0xBE {
                b"\\uFFFE"
            } else {
                b"\\uFFFF"
            });
            i += 3;
        } else {
            out.push(tail[i]);
            i += 1;
        }
    }
}

/// Copies JSON text without insignificant whitespace, so pretty-printed input
/// still gives one-line records. Strings and numbers are copied byte for byte.
pub fn write_compact(json: &[u8], out: &mut Vec<u8>) {
    // A scalar's text holds no insignificant whitespace (the span is exactly
    // the value, and spaces inside a string are part of it): copy it whole
    // without looking at its bytes. Most projected values are scalars.
    if !matches!(json.first(), Some(b'{' | b'['))
        || !json
            .iter()
            .any(|b| matches!(b, b' ' | b'\n' | b'\r' | b'\t'))
    {
        out.extend_from_slice(json);
        return;
    }
    let mut in_string = false;
    let mut escaped = false;
    for &b in json {
        if in_string {
            out.push(b);
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
        } else if !matches!(b, b' ' | b'\n' | b'\r' | b'\t') {
            if b == b'"' {
                in_string = true;
            }
            out.push(b);
        }
    }
}
