//! The pipeline end to end over in-memory objects: projection, rules,
//! packing, rejects, accounting and decoding, against references.

use std::io::{self, Read};
use std::ops::ControlFlow;

use super::*;
use crate::pipeline::body::{BodyFormat, Chunk};
use crate::pipeline::decode::HANDOFF_BYTES;
use crate::pipeline::project::{EmptyRecords, Projection};

use crate::pipeline::project::{Missing, parse_fields};

fn settings(fields: &str) -> Settings {
    Settings {
        projection: Projection::new(&parse_fields(fields).unwrap(), Missing::Omit),
        format: BodyFormat::Ndjson,
        max_body_bytes: 64,
        max_record_bytes: 1 << 20,
        max_decompressed_bytes: 1 << 30,
        records_pointer: None,
        large_records: crate::pipeline::LargeRecords::Reject,
        max_large_record_bytes: 0,
        decode_thread: true,
        resume: crate::pipeline::Resume::default(),
    }
}

#[test]
fn a_record_with_none_of_the_fields_is_rejected_unless_asked_to_send_it() {
    let input = b"{\"id\":1,\"u\":{\"n\":2}}\n{\"x\":3}\n{\"id\":4}\n";
    let (bodies, report) = collect(input, &settings("id,n=u.n")).unwrap();
    assert_eq!(bodies.concat(), "{\"id\":1,\"n\":2}\n{\"id\":4}");
    let s = &report.stats;
    assert_eq!((s.records_in, s.records_out, s.rejected), (3, 2, 1));
    assert_eq!(s.field_missing, [1, 2], "id lacks once, n twice");
    assert!(
        report.rejects[0]
            .reason
            .contains("none of the fields id, n is present"),
        "{:?}",
        report.rejects
    );
    assert_eq!((report.rejects[0].line, report.rejects[0].length), (2, 7));
    assert!(s.accounted(), "{s:?}");

    let mut sending = settings("id,n=u.n");
    sending.projection = sending.projection.with_empty(EmptyRecords::Send);
    let (bodies, report) = collect(input, &sending).unwrap();
    assert!(bodies.concat().contains("\n{}\n"), "{bodies:?}");
    assert_eq!(report.stats.rejected, 0);
    assert!(report.stats.accounted());
}

#[test]
fn wrapped_records_with_none_of_the_fields_are_rejected_too() {
    let mut s = settings("id");
    s.records_pointer = Some("/r".into());
    let input = b"{\"r\":[{\"id\":1},{\"y\":2}]}\n";
    let (bodies, report) = collect(input, &s).unwrap();
    assert_eq!(bodies.concat(), "{\"id\":1}");
    assert_eq!(
        (report.stats.rejected, report.stats.field_missing[0]),
        (1, 1)
    );
    assert!(report.stats.accounted(), "{:?}", report.stats);
}

/// Every chunk's body (a streamed payload read whole), and whether it
/// is a payload.
fn collect_payloads(input: &[u8], s: &Settings) -> (Vec<(Vec<u8>, bool)>, Report) {
    let mut out = Vec::new();
    let report = run(input, s, |mut c| {
        let mut body = Vec::new();
        c.write_body(&mut body).unwrap();
        if let Some(size) = c.payload_size {
            assert_eq!(size, body.len() as u64, "the announced size");
        }
        out.push((body, c.payload_size.is_some()));
        ControlFlow::Continue(())
    })
    .unwrap();
    (out, report)
}

/// Records over the window, between small ones: projected from their
/// spools to the same bytes as the window gives them, offloaded when
/// too large for a message, packed like any other when not, and their
/// bytes counted as records.
#[test]
fn records_over_the_window_are_streamed_to_the_bytes_the_window_gives() {
    let big = |i: usize, n: usize| {
        format!(
            "{{\"skip\":\"{}\",\"id\":{i},\"blob\":\"{}\\u00e9\u{FFFE}\"}}\n",
            "s".repeat(n),
            "é".repeat(n)
        )
    };
    let mut text = String::from("# junk\n{\"id\":0}\n");
    text.push_str(&big(1, 3_000));
    text.push_str("{\"id\":2}\n");
    text.push_str(&big(3, 40)); // over the window, but small projected
    text.push_str(&big(4, 200_000));
    text.push_str("{\"id\":5,\"blob\":1}\n");
    let window = Settings {
        max_record_bytes: 1 << 20,
        max_body_bytes: 1024,
        large_records: LargeRecords::Offload,
        ..settings("id,blob")
    };
    let streamed = Settings {
        max_record_bytes: 100,
        max_large_record_bytes: 1 << 20,
        ..window.clone()
    };
    let (want, want_report) = collect_payloads(text.as_bytes(), &window);
    let (got, report) = collect_payloads(text.as_bytes(), &streamed);
    assert_eq!(got, want);
    assert_eq!(report.stats, want_report.stats);
    assert_eq!(want.iter().filter(|(_, p)| *p).count(), 2, "two payloads");
    assert!(report.stats.accounted(), "{:?}", report.stats);
    assert_eq!((report.stats.records_out, report.stats.rejected), (6, 0));

    // Rejecting what no message holds: the two whose projection is too
    // large, with their whole raw extent; the one over the window whose
    // projection fits is sent.
    let rejecting = Settings {
        large_records: LargeRecords::Reject,
        ..streamed.clone()
    };
    let (got, report) = collect_payloads(text.as_bytes(), &rejecting);
    assert!(got.iter().all(|(_, payload)| !payload));
    assert_eq!((report.stats.records_out, report.stats.rejected), (4, 2));
    for r in &report.rejects {
        assert!(
            r.reason.contains("a message body can hold at most"),
            "{r:?}"
        );
    }
    assert_eq!(report.rejects[1].length as usize, big(4, 200_000).len() - 1);
    assert!(report.stats.accounted(), "{:?}", report.stats);

    // Over the largest record read: rejected with the limit.
    let tight = Settings {
        max_large_record_bytes: 200_000,
        ..streamed
    };
    let (got, report) = collect_payloads(text.as_bytes(), &tight);
    assert_eq!(report.stats.rejected, 1);
    let r = &report.rejects[0];
    assert!(
        r.reason.contains("RELAY_MAX_RECORD_BYTES, 200000 bytes"),
        "{r:?}"
    );
    assert_eq!(
        r.length as usize,
        big(4, 200_000).len() - 1,
        "the whole record"
    );
    assert_eq!(report.stats.records_out, 5, "only that record is missing");
    assert!(got.iter().all(|(b, _)| !b.starts_with(b"{\"id\":4")));
    assert!(report.stats.accounted(), "{:?}", report.stats);
}

/// A streamed payload holds up the reader until it is stored: the
/// next large record is spooled only after the last one is dropped, so
/// /tmp holds at most two, however far the sender lags.
#[test]
fn the_next_large_record_waits_until_the_last_is_stored() {
    let s = Settings {
        max_record_bytes: 64,
        max_large_record_bytes: 1 << 20,
        max_body_bytes: 100,
        large_records: LargeRecords::Offload,
        ..settings("id,p")
    };
    let pad = "x".repeat(500);
    let text: String = (0..4)
        .map(|i| format!("{{\"id\":{i},\"p\":\"{pad}\"}}\n"))
        .collect();
    let log = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let (tx, rx) = std::sync::mpsc::channel::<Chunk>();
    let slow = {
        let log = log.clone();
        std::thread::spawn(move || {
            for c in rx {
                std::thread::sleep(std::time::Duration::from_millis(30));
                log.lock().unwrap().push(format!("stored {}", c.index));
            }
        })
    };
    let report = run(text.as_bytes(), &s, |c| {
        log.lock().unwrap().push(format!("emitted {}", c.index));
        tx.send(c).unwrap();
        ControlFlow::Continue(())
    })
    .unwrap();
    drop(tx);
    slow.join().unwrap();
    assert_eq!(report.stats.offloaded, 4);
    let want: Vec<String> = (0..4)
        .flat_map(|i| [format!("emitted {i}"), format!("stored {i}")])
        .collect();
    assert_eq!(*log.lock().unwrap(), want);
}

/// The documented difference: past the window, a record with a line
/// that starts with `{` at the records' indentation is taken for one
/// cut short there. It is a reject that says so, never lost silently;
/// in the window the same record is sent.
#[test]
fn past_the_window_a_brace_at_the_records_indentation_ends_the_record() {
    let text = format!(
        "{{\"id\":1,\"pad\":\"{}\",\"n\":\n{{\"x\":1}}}}\n{{\"id\":2}}\n",
        "p".repeat(200)
    );
    let window = Settings {
        max_body_bytes: 4096,
        ..settings("id")
    };
    let streamed = Settings {
        max_record_bytes: 64,
        max_large_record_bytes: 1 << 20,
        ..window.clone()
    };
    let (sent, report) = collect(text.as_bytes(), &window).unwrap();
    assert_eq!(sent.concat(), "{\"id\":1}\n{\"id\":2}");
    assert_eq!(report.stats.rejected, 0);
    let (sent, report) = collect(text.as_bytes(), &streamed).unwrap();
    assert!(sent.concat().ends_with("{\"id\":2}"), "{sent:?}");
    assert!(report.stats.rejected >= 1);
    assert!(
        report.rejects[0].reason.contains("incomplete"),
        "{:?}",
        report.rejects
    );
    assert!(report.stats.accounted(), "{:?}", report.stats);
}

/// A record over the window that is invalid at its very end, or cut
/// off by the end of the file, is a reject that says why.
#[test]
fn a_bad_record_over_the_window_is_rejected_with_its_reason() {
    let s = Settings {
        max_record_bytes: 64,
        max_large_record_bytes: 1 << 20,
        large_records: LargeRecords::Offload,
        ..settings("id")
    };
    let pad = "x".repeat(500);
    let text =
        format!("{{\"id\":1,\"p\":\"{pad}\",\"n\":NaN}}\n{{\"id\":2}}\n{{\"id\":3,\"p\":\"{pad}");
    let (got, report) = collect_payloads(text.as_bytes(), &s);
    assert_eq!(got, [(b"{\"id\":2}".to_vec(), false)]);
    let reasons: Vec<&str> = report.rejects.iter().map(|r| r.reason.as_str()).collect();
    assert!(
        reasons[0].starts_with("invalid JSON: expected a JSON value (at byte 519 of the record)"),
        "{reasons:?}"
    );
    assert!(reasons[1].contains("truncated"), "{reasons:?}");
    assert!(report.stats.accounted(), "{:?}", report.stats);
}

fn collect(input: &[u8], s: &Settings) -> Result<(Vec<String>, Report), Unreadable> {
    let mut bodies = Vec::new();
    let report = run(input, s, |c| {
        bodies.push(String::from_utf8(c.body).unwrap());
        ControlFlow::Continue(())
    })?;
    Ok((bodies, report))
}

/// The benchmark's file and fields (`benches/pipeline.rs`), smaller:
/// every record comes out as serde_json's reference projection writes
/// it, in order, with the decoding thread and without.
#[test]
fn the_benchmark_file_comes_out_as_the_reference_writes_it() {
    let (text, records) = relay_shared::sample::SampleGen::new(7).file(3 << 20);
    let s = Settings {
        max_body_bytes: 256 * 1024 - 200,
        ..settings(crate::testing::SAMPLE_FIELDS)
    };
    let want = crate::testing::sample_reference(7, &text, &s.projection);
    assert_eq!(want.len(), records);
    let compressed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    for decode_thread in [false, true] {
        let s = Settings {
            decode_thread,
            ..s.clone()
        };
        let (bodies, report) = collect(&compressed, &s).unwrap();
        assert_eq!(report.stats.rejected, 0);
        let got: Vec<&[u8]> = bodies
            .iter()
            .flat_map(|b| b.as_bytes().split(|&c| c == b'\n'))
            .collect();
        assert_eq!(got.len(), want.len(), "decode thread: {decode_thread}");
        for (i, (g, w)) in got.iter().zip(&want).enumerate() {
            assert_eq!(
                String::from_utf8_lossy(g),
                String::from_utf8_lossy(w),
                "record {i}, decode thread: {decode_thread}"
            );
        }
    }
}

/// Larger than the hand-off's buffers many times over, with rejects
/// among the records: the decoding thread changes nothing.
#[test]
fn decoding_ahead_gives_the_chunks_of_the_plain_text() {
    let text: String = (0..150_000)
        .map(|i| match i % 997 {
            0 => "not json\n".to_owned(),
            _ => format!("{{\"a\":{i},\"b\":\"{}\"}}\n", "é".repeat(i % 7)),
        })
        .collect();
    assert!(text.len() > 8 * HANDOFF_BYTES);
    let s = Settings {
        max_body_bytes: 4096,
        ..settings("a")
    };
    let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    let (plain, plain_report) = collect(text.as_bytes(), &s).unwrap();
    let (decoded, decoded_report) = collect(&packed, &s).unwrap();
    assert_eq!(plain, decoded);
    assert_eq!(plain_report, decoded_report);
    assert!(decoded_report.complete && decoded_report.stats.accounted());
}

/// A stop mid-object returns at once: the decoding thread, blocked on
/// a full hand-off, ends when the parser hangs up.
#[test]
fn a_stop_mid_object_ends_the_decoding_thread() {
    let text = b"{\"a\":1}\n".repeat(2_000_000);
    let packed = zstd::encode_all(&text[..], 3).unwrap();
    let mut chunks = 0;
    let report = run(&packed[..], &settings("a"), |_| {
        chunks += 1;
        ControlFlow::Break(())
    })
    .unwrap();
    assert_eq!(chunks, 1);
    assert!(!report.complete);
    assert!(report.stats.bytes_decompressed < text.len() as u64);
}

#[test]
fn zstd_and_plain_give_the_same_chunks() {
    let text =
        "# c\n{\"a\":1,\"b\":\"x\"}\nbad\n{\"a\":2}\n{\"a\":\"three\",\"z\":[1]}\n".repeat(5);
    let s = settings("a");
    let plain = collect(text.as_bytes(), &s).unwrap();
    let packed = zstd::encode_all(text.as_bytes(), 3).unwrap();
    let zst = collect(&packed, &s).unwrap();
    assert_eq!(plain.0, zst.0);
    assert_eq!(plain.1.stats.records_out, 15);
    assert!(plain.0.iter().all(|b| b.len() <= 64));
    // "# c" after the first copy is not preamble any more: it is garbage.
    assert_eq!(zst.1.stats.rejected, 5 + 4);
    assert!(zst.1.complete);
}

#[test]
fn oversized_and_invalid_records_are_reported() {
    let long = format!("{{\"a\":\"{}\"}}", "y".repeat(100));
    let text = format!("{{\"a\":1}}\n{long}\n{{\"a\":[1,,]}}\n{{\"a\":2}}\n");
    let (bodies, report) = collect(text.as_bytes(), &settings("a")).unwrap();
    assert_eq!(bodies, ["{\"a\":1}\n{\"a\":2}"]);
    assert_eq!(report.stats.rejected, 2);
    assert!(
        report.rejects[0].reason.contains("at most 64"),
        "{:?}",
        report.rejects[0]
    );
    assert_eq!(report.rejects[0].line, 2);
    assert!(report.rejects[1].reason.starts_with("invalid JSON"));
}

/// The first `n` bytes of `data`, then a connection reset.
struct Breaks<'a> {
    data: &'a [u8],
    n: usize,
}

impl Read for Breaks<'_> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if self.n == 0 {
            return Err(io::Error::new(io::ErrorKind::ConnectionReset, "reset"));
        }
        let k = buf.len().min(self.n).min(self.data.len());
        buf[..k].copy_from_slice(&self.data[..k]);
        self.data = &self.data[k..];
        self.n -= k;
        Ok(k)
    }
}

#[test]
fn a_broken_download_is_a_read_failure_not_corruption() {
    let s = settings("a");
    let text = b"{\"a\":1}\n".repeat(50_000);
    let packed = zstd::encode_all(&text[..], 3).unwrap();
    for input in [&packed[..], &text[..]] {
        let broken = Breaks {
            data: input,
            n: input.len() / 2,
        };
        let got = run(broken, &s, |_| ControlFlow::Continue(()));
        assert!(
            matches!(&got, Err(Unreadable::Io(e)) if e.kind() == io::ErrorKind::ConnectionReset),
            "{got:?}"
        );
    }
}

#[test]
fn unreadable_objects_are_classified() {
    let s = settings("a");
    let mut packed = zstd::encode_all(&b"{\"a\":1}\n".repeat(10_000)[..], 3).unwrap();
    packed.truncate(packed.len() / 2);
    assert!(matches!(collect(&packed, &s), Err(Unreadable::Corrupt(_))));

    // A bomb: 64 MiB of zeros compresses to a few KiB.
    let bomb = zstd::encode_all(std::io::repeat(0).take(64 << 20), 19).unwrap();
    assert!(bomb.len() < 100_000);
    let small = Settings {
        max_decompressed_bytes: 1 << 20,
        ..s.clone()
    };
    assert!(matches!(
        collect(&bomb, &small),
        Err(Unreadable::TooLarge { limit: 1048576 })
    ));
}

#[test]
fn wrapper_pointer_mode() {
    let text =
        "# x\n{\"meta\":{\"n\":2},\"data\":{\"records\":[{\"a\":1},7,{\"a\":2}]}}\n{\"data\":{}}\n";
    let s = Settings {
        records_pointer: Some("/data/records".into()),
        large_records: crate::pipeline::LargeRecords::Reject,
        ..settings("a")
    };
    let (bodies, report) = collect(text.as_bytes(), &s).unwrap();
    assert_eq!(bodies, ["{\"a\":1}\n{\"a\":2}"]);
    let reasons: Vec<_> = report.rejects.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "a record in the wrapper is not a JSON object",
            "the wrapper has nothing at /data/records"
        ]
    );
}

/// In wrapper mode a chunk may end inside a wrapper: positions count the
/// records within it, so a run under other settings skips exactly the
/// records the settled chunks held, and rejects only the rest.
#[test]
fn a_resume_inside_a_wrapper_skips_exactly_the_settled_records() {
    let text =
        "{\"r\":[{\"a\":0},{\"a\":1},7,{\"a\":3}]}\n{\"r\":[{\"a\":4},{\"a\":5}]}\n{\"r\":{}}\n";
    let old = Settings {
        records_pointer: Some("/r".into()),
        max_body_bytes: 16,
        ..settings("a")
    };
    let mut chunks = Vec::new();
    run(text.as_bytes(), &old, |c| {
        chunks.push((c.index, c.span, String::from_utf8(c.body).unwrap()));
        ControlFlow::Continue(())
    })
    .unwrap();
    let at = crate::pipeline::resume::position;
    assert_eq!(
        chunks,
        [
            (0, [at(0, 0), at(0, 2)], "{\"a\":0}\n{\"a\":1}".to_owned()),
            (1, [at(0, 3), at(1, 1)], "{\"a\":3}\n{\"a\":4}".to_owned()),
            (2, [at(1, 1), at(1, 2)], "{\"a\":5}".to_owned()),
        ]
    );
    // Chunk 1 was settled; chunks 0 and 2 were not.
    let new = Settings {
        resume: crate::pipeline::Resume {
            earlier: vec![chunks[1].1],
            first_chunk: 2,
        },
        ..Settings {
            max_body_bytes: 64,
            ..old
        }
    };
    let (bodies, report) = collect(text.as_bytes(), &new).unwrap();
    assert_eq!(bodies, ["{\"a\":0}\n{\"a\":1}\n{\"a\":5}"]);
    // The 7 lies before the settled span and is rejected now; so is the
    // wrapper with no array, after it.
    assert_eq!((report.stats.earlier, report.stats.rejected), (2, 2));
    assert_eq!(report.stats.records_out, 3);
}

#[test]
fn rules_hold_inside_wrappers_and_rejects_are_counted_per_field_and_rule() {
    let text = "{\"data\":[{\"a\":1,\"b\":\"x\"},{\"a\":\"1\"},{\"b\":\"y\"},{\"a\":2}]}\n";
    let s = Settings {
        records_pointer: Some("/data".into()),
        ..settings("a:int!,b:string")
    };
    let (bodies, report) = collect(text.as_bytes(), &s).unwrap();
    assert_eq!(bodies, ["{\"a\":1,\"b\":\"x\"}\n{\"a\":2}"]);
    let reasons: Vec<_> = report.rejects.iter().map(|r| r.reason.as_str()).collect();
    assert_eq!(
        reasons,
        [
            "field `a`: expected int, found string",
            "field `a`: required, but missing"
        ]
    );
    let [required, types, _] = [0, 1, 2];
    let a = report.stats.schema_rejects[0];
    assert_eq!((a[required], a[types]), (1, 1));
    assert_eq!(report.stats.schema_rejects[1], [0, 0, 0]);
    assert_eq!(report.stats.records_in, 4);
    assert_eq!(report.stats.field_missing, [1, 2]);
    assert!(report.stats.accounted());
}

#[test]
fn stopping_early_is_reported_as_incomplete() {
    let text = "{\"a\":1}\n".repeat(100);
    let mut seen = 0;
    let report = run(text.as_bytes(), &settings("a"), |_| {
        seen += 1;
        if seen == 2 {
            ControlFlow::Break(())
        } else {
            ControlFlow::Continue(())
        }
    })
    .unwrap();
    assert!(!report.complete);
    assert_eq!(seen, 2);
}
