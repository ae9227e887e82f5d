//! The whole data path over arbitrary bytes, plain or zstd: no panic, no
//! unbounded work (a small decompression limit stops bombs), every message
//! body within the limit and made of valid JSON objects, and counts that
//! add up, bytes included. Half the inputs are read with a 32-byte window
//! and records streamed past it (`stream.rs`), so nearly every record takes
//! that path. Half are read with typed, required, hashed and redacted
//! fields: a record that breaks a rule is a reject like any other, counted
//! once, and the accounting still adds up.
#![no_main]

use std::ops::ControlFlow;
use std::sync::OnceLock;

use cloud_processor::BodyFormat;
use cloud_processor::{Settings, run_pipeline as run};
use cloud_processor::{Missing, Projection, parse_fields};
use libfuzzer_sys::fuzz_target;

const PLAIN: &str = "id,ts=timestamp,user_id=user.id,first=tags.0,p=/a~1b";
const TYPED: &str = "id:int!,ts=timestamp:int|string,user_id=user.id:string!,first=tags.0:any,\
                     p=/a~1b:object|array,h=hmac(user.email),r=redact(x):string";

fn settings(streamed: bool, typed: bool) -> &'static Settings {
    static S: OnceLock<[Settings; 4]> = OnceLock::new();
    &S.get_or_init(|| {
        let [plain, typed] = [PLAIN, TYPED].map(|spec| {
            Projection::new(&parse_fields(spec).unwrap(), Missing::Null)
                .with_key(cloud_processor::HmacKey::new(b"fuzz"))
        });
        let window = Settings {
            projection: plain,
            format: BodyFormat::Ndjson,
            max_body_bytes: 512,
            max_record_bytes: 4096,
            max_decompressed_bytes: 1 << 20,
            records_pointer: None,
            large_records: cloud_processor::LargeRecords::Reject,
            max_large_record_bytes: 0,
            // No thread per input: LeakSanitizer takes a finished thread's
            // TLS destructor record for a leak (32 bytes, in glibc).
            decode_thread: false,
            resume: cloud_processor::Resume::default(),
        };
        let streamed = Settings {
            max_record_bytes: 32,
            max_large_record_bytes: 1 << 20,
            large_records: cloud_processor::LargeRecords::Offload,
            ..window.clone()
        };
        let typed = |s: &Settings| Settings {
            projection: typed.clone(),
            ..s.clone()
        };
        [typed(&window), typed(&streamed), window, streamed]
    })[usize::from(streamed) + 2 * usize::from(!typed)]
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, data)) = input.split_first() else {
        return;
    };
    // Half the inputs are compressed, so the reader sees real records behind
    // the zstd layer as well as raw garbage in front of the decoder.
    let owned;
    let data = if mode & 1 == 1 {
        owned = zstd::encode_all(data, 1).unwrap();
        &owned[..]
    } else {
        data
    };
    let s = settings(mode & 2 == 2, mode & 4 == 4);
    let mut chunks = 0u32;
    let mut records = 0u64;
    let result = run(data, s, |mut chunk| {
        assert_eq!(chunk.index, chunks, "chunks numbered in order");
        let mut body = Vec::new();
        chunk.write_body(&mut body).unwrap();
        match chunk.payload_size {
            Some(size) => assert_eq!(size, body.len() as u64, "a payload of its stated size"),
            None => assert!(body.len() <= s.max_body_bytes, "a body over the limit"),
        }
        let mut lines = 0;
        for line in body.split(|&b| b == b'\n') {
            // Syntax only: numbers are relayed as written, whatever their
            // range (see the reader target).
            serde_json::from_slice::<serde::de::IgnoredAny>(line).expect("a body line is JSON");
            assert_eq!(line.first(), Some(&b'{'), "a body line is a JSON object");
            lines += 1;
        }
        assert_eq!(lines, chunk.records);
        chunks += 1;
        records += u64::from(chunk.records);
        ControlFlow::Continue(())
    });
    if let Ok(report) = result {
        assert!(report.complete);
        assert_eq!(report.stats.chunks, chunks);
        assert_eq!(report.stats.records_out, records);
        assert!(report.stats.records_out <= report.stats.records_in);
        assert!(report.stats.accounted(), "the byte accounting adds up: {:?}", report.stats);
        let listed: u64 = report.rejects.iter().map(|r| r.length).sum();
        let by_rule: u64 = report.stats.schema_rejects.iter().flatten().sum();
        assert!(by_rule <= report.stats.rejected, "a rule's rejects are rejects");
        if report.rejects.len() as u64 == report.stats.rejected {
            assert_eq!(listed, report.stats.rejected_bytes, "rejected bytes are the rejects' lengths");
            let named = report.rejects.iter().filter(|r| r.reason.starts_with("field `")).count();
            assert_eq!(named as u64, by_rule, "each rule reject counted once, for its field and rule");
        }
    }
});
