//! Differential test of field rules (types, required fields, `hmac()`,
//! `redact()`) on generated dirty files.
//!
//! The generator (fastrand, seeded) writes each record's text from pieces whose JSON kind it
//! chose (an int, a big int, a float, an exponent, a string with escapes,
//! non-ASCII text, null, an object, an array, or nothing), so the reference
//! is the generator itself: it knows which rule each record breaks first,
//! the exact reason, what every good record's projection is (values copied
//! as written, hashes computed here from the decoded text), and it puts
//! records that are not JSON at all at random positions, first and last
//! included. Each file is read with the record window and, through the
//! large-record path, with a window of 48 bytes: the verdicts, the output
//! and the counts per field and rule must be the same, and every byte must
//! be accounted for.

#![allow(clippy::unwrap_used, clippy::expect_used)] // A test: a panic is a failure.

use std::ops::ControlFlow;

use cloud_processor::{BodyFormat, HmacKey, LargeRecords, RULES};
use cloud_processor::{Missing, Projection, Settings, parse_fields, run_pipeline};
use hmac::{KeyInit, Mac};
use proptest::prelude::*;

const FIELDS: &str = "id:int!,ts=timestamp:int!,amount:number,user_id=user.id:string|int,\
                      tags:array,uid=hmac(user.email),mail=redact(user.email)";
const KEY: &[u8] = b"differential-key";

/// The file is a pure function of the seed.
type Rng = fastrand::Rng;

/// One of `options`, at random.
fn pick<'a>(rng: &mut Rng, options: &[&'a str]) -> &'a str {
    options[rng.usize(..options.len())]
}

/// A value's text and its kind's name, or nothing.
type Piece = Option<(String, &'static str)>;

fn piece(rng: &mut Rng, options: &[(&str, &'static str)]) -> Piece {
    let (text, kind) = options[rng.usize(..options.len())];
    (!text.is_empty()).then(|| (text.to_owned(), kind))
}

/// An email-like value: its JSON text, and what `hmac()` hashes (the
/// decoded text of a string, the text of anything else).
fn email(rng: &mut Rng) -> Option<(String, String)> {
    let local = pick(rng, &["ana", "björn", "東京", "a\"q", "x\\y"]);
    match rng.usize(..6) {
        0 => None,
        1 => Some(("42".into(), "42".into())),
        2 => Some((
            // The same text, written with escapes.
            format!(
                "\"{}\\u0040example.org\"",
                local.replace('\\', "\\\\").replace('"', "\\\"")
            ),
            format!("{local}@example.org"),
        )),
        _ => {
            let text = format!("{local}@example.org");
            Some((serde_json::to_string(&text).unwrap(), text))
        }
    }
}

struct Rec {
    /// The record's text.
    text: String,
    /// The projection it must give, or the reason it must be rejected.
    verdict: Result<String, (String, usize, usize)>,
}

fn hmac_hex(text: &str) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(KEY).unwrap();
    mac.update(text.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

fn record(rng: &mut Rng, id: usize, pretty: bool) -> Rec {
    let ts = piece(
        rng,
        &[
            ("1764590400123", "int"),
            ("1764590400124", "int"),
            ("1764590400125", "int"),
            ("", ""),
            ("\"1764590400\"", "string"),
            ("1.5", "number"),
            ("null", "null"),
        ],
    );
    let amount = piece(
        rng,
        &[
            ("12", "int"),
            ("-0.50", "number"),
            ("1e3", "number"),
            ("123456789012345678901234567890", "int"),
            ("", ""),
            ("\"12\"", "string"),
        ],
    );
    let user_id = piece(
        rng,
        &[
            ("\"u-1\"", "string"),
            ("7", "int"),
            ("", ""),
            ("true", "bool"),
            ("{\"x\":1}", "object"),
        ],
    );
    let tags = piece(
        rng,
        &[
            ("[\"a\",1]", "array"),
            ("[]", "array"),
            ("", ""),
            ("\"a\"", "string"),
        ],
    );
    let email = email(rng);

    let mut members = vec![format!("\"id\":{id}")];
    let pad = pick(
        rng,
        &["\"pad\":\"}{][,\\\"\"", "\"pad\":[{},{\"a\":[1,2]}]", ""],
    );
    if !pad.is_empty() {
        members.push(pad.to_owned());
    }
    let mut user = Vec::new();
    if let Some((t, _)) = &user_id {
        user.push(format!("\"id\":{t}"));
    }
    if let Some((t, _)) = &email {
        user.push(format!("\"email\":{t}"));
    }
    for (key, p) in [("timestamp", &ts), ("amount", &amount), ("tags", &tags)] {
        if let Some((t, _)) = p {
            members.push(format!("\"{key}\":{t}"));
        }
    }
    members.push(format!("\"user\":{{{}}}", user.join(",")));
    let text = if pretty {
        format!("{{\n  {}\n}}", members.join(",\n  "))
    } else {
        format!("{{{}}}", members.join(","))
    };

    // The reference: the first broken rule in field order, else the output.
    let checks: [(&str, bool, &[&str], &Piece); 4] = [
        ("ts", true, &["int"], &ts),
        ("amount", false, &["int", "number"], &amount),
        ("user_id", false, &["string", "int"], &user_id),
        ("tags", false, &["array"], &tags),
    ];
    let slots = ["ts", "amount", "user_id", "tags"];
    for (field, required, allowed, p) in checks {
        let slot = 1 + slots.iter().position(|s| *s == field).unwrap();
        let reason = match p {
            None if required => Some((
                "required",
                format!("field `{field}`: required, but missing"),
            )),
            Some((_, kind)) if !allowed.contains(kind) => {
                let expected = allowed.join("|").replace("int|number", "number");
                Some((
                    "type",
                    format!("field `{field}`: expected {expected}, found {kind}"),
                ))
            }
            _ => None,
        };
        if let Some((rule, reason)) = reason {
            let rule = RULES.iter().position(|r| *r == rule).unwrap();
            return Rec {
                text,
                verdict: Err((reason, slot, rule)),
            };
        }
    }
    let mut out = vec![format!("\"id\":{id}")];
    for (name, p) in [
        ("ts", &ts),
        ("amount", &amount),
        ("user_id", &user_id),
        ("tags", &tags),
    ] {
        if let Some((t, _)) = p {
            out.push(format!("\"{name}\":{t}"));
        }
    }
    if let Some((_, hashed)) = &email {
        out.push(format!("\"uid\":\"{}\"", hmac_hex(hashed)));
        out.push("\"mail\":\"[redacted]\"".to_owned());
    }
    Rec {
        text,
        verdict: Ok(format!("{{{}}}", out.join(","))),
    }
}

fn settings(window: usize) -> Settings {
    Settings {
        projection: Projection::new(&parse_fields(FIELDS).unwrap(), Missing::Omit)
            .with_key(HmacKey::new(KEY)),
        format: BodyFormat::Ndjson,
        max_body_bytes: 4096,
        max_record_bytes: window,
        max_decompressed_bytes: 1 << 30,
        records_pointer: None,
        large_records: LargeRecords::Offload,
        max_large_record_bytes: 1 << 30,
        decode_thread: false,
        resume: cloud_processor::Resume::default(),
    }
}

fn check(seed: u64) {
    let mut rng = Rng::with_seed(seed);
    let pretty = rng.bool();
    let mut file = String::from("# collector v2\n[WARN] clock 12ms\n");
    let (mut want, mut broken, mut invalid) = (Vec::new(), Vec::new(), Vec::new());
    let mut counts = vec![[0u64; RULES.len()]; 7];
    let n = 1 + rng.usize(..30);
    for i in 0..n {
        let edge = i == 0 || i == n - 1;
        let start = file.len();
        if rng.usize(..100) < if edge { 30 } else { 10 } {
            // Not JSON: a reject of its own, whatever the rules say.
            let text = pick(
                &mut rng,
                &[
                    "{\"id\":NaN,\"timestamp\":1}",
                    "{\"id\":1,'timestamp':2}",
                    "{\"id\":1,\"timestamp\":",
                ],
            );
            file.push_str(text);
            invalid.push(start);
        } else {
            let rec = record(&mut rng, i, pretty);
            file.push_str(&rec.text);
            match rec.verdict {
                Ok(line) => want.push(line),
                Err((reason, slot, rule)) => {
                    counts[slot][rule] += 1;
                    broken.push((start, reason));
                }
            }
        }
        file.push('\n');
    }
    for window in [1 << 20, 48] {
        let mut got = Vec::new();
        let report = run_pipeline(file.as_bytes(), &settings(window), |chunk| {
            for line in chunk.body.split(|&b| b == b'\n') {
                got.push(String::from_utf8(line.to_vec()).unwrap());
            }
            ControlFlow::Continue(())
        })
        .unwrap();
        let ctx = || {
            format!(
                "seed {seed}, window {window}\n{file}\nrejects: {:#?}",
                report.rejects
            )
        };
        assert_eq!(got, want, "{}", ctx());
        for (start, reason) in &broken {
            assert!(
                report
                    .rejects
                    .iter()
                    .any(|r| r.offset == *start as u64 && r.reason == *reason),
                "no reject at {start} saying {reason:?}\n{}",
                ctx()
            );
        }
        for start in &invalid {
            assert!(
                report.rejects.iter().any(|r| r.offset <= *start as u64
                    && (*start as u64) < r.offset + r.length
                    && !r.reason.starts_with("field `")),
                "the invalid record at {start} is in no reject\n{}",
                ctx()
            );
        }
        let s = &report.stats;
        assert_eq!(s.schema_rejects, counts, "{}", ctx());
        assert_eq!(s.records_out, want.len() as u64, "{}", ctx());
        assert!(s.accounted(), "{s:?}\n{}", ctx());
    }
}

#[test]
fn many_seeds() {
    for seed in 1..300 {
        check(seed);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256)
    ))]
    #[test]
    fn generated_files_with_rules(seed in any::<u64>()) {
        check(seed);
    }
}
