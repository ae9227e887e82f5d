//! The large-record parser against the in-window projection on arbitrary
//! bytes fed in arbitrary pieces: it accepts a record if and only if the
//! window's scanner does, and then writes exactly the same bytes.
#![no_main]

use std::io::Read;
use std::sync::OnceLock;

use cloud_processor::fuzzing::is_ws;
use cloud_processor::{Missing, Projection, parse_fields};
use cloud_processor::fuzzing::{FeedOutcome, Streamer};
use libfuzzer_sys::fuzz_target;

fn projection() -> &'static Projection {
    static P: OnceLock<Projection> = OnceLock::new();
    P.get_or_init(|| {
        Projection::new(
            &parse_fields("id,ts=timestamp,u=user.id,t=tags.0,a,b.c,b.0").unwrap(),
            Missing::Null,
        )
    })
}

/// The streamed verdict: `None` if the record is refused.
fn streamed(p: &Projection, record: &[u8], piece: usize) -> Option<Vec<u8>> {
    let start = record.iter().position(|b| !is_ws(*b))?;
    let record = &record[start..];
    let mut s = Streamer::new(p.root(), p.slots(), u64::MAX);
    let mut rest = record;
    loop {
        let n = piece.min(rest.len());
        let (head, tail) = rest.split_at(n);
        match s.feed(head).unwrap() {
            FeedOutcome::More if tail.is_empty() => return None,
            FeedOutcome::More => rest = tail,
            FeedOutcome::Done(k) => {
                if !head[k..].iter().chain(tail).all(|b| is_ws(*b)) {
                    return None;
                }
                break;
            }
            FeedOutcome::Invalid => return None,
        }
    }
    let mut out = Vec::new();
    s.finish().into_body(p).unwrap().read_to_end(&mut out).unwrap();
    Some(out)
}

fuzz_target!(|input: &[u8]| {
    let Some((&piece, record)) = input.split_first() else {
        return;
    };
    let p = projection();
    let mut window = Vec::new();
    let w = p.project(record, &mut window).ok().map(|()| window);
    let s = streamed(p, record, usize::from(piece).max(1));
    assert_eq!(s, w, "{:?}", String::from_utf8_lossy(record));
});
