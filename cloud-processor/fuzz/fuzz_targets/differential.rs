//! The fast projection against the serde_json reference on arbitrary bytes:
//! it accepts a record if and only if `std::str::from_utf8` plus serde_json
//! accept it (for the same reason: invalid, or not an object), and then
//! writes exactly the same bytes.
#![no_main]

use std::sync::OnceLock;

use cloud_processor::fuzzing::RecordError;
use cloud_processor::{Missing, Projection, parse_fields};
use libfuzzer_sys::fuzz_target;

fn projections() -> &'static [Projection; 2] {
    static P: OnceLock<[Projection; 2]> = OnceLock::new();
    P.get_or_init(|| {
        [
            Projection::new(&parse_fields("id,ts=timestamp,u=user.id,t=tags.0,a,b.c,b.0").unwrap(), Missing::Null),
            Projection::new(&parse_fields("a,b,c").unwrap(), Missing::Omit),
        ]
    })
}

fn outcome(r: Result<(), RecordError>, out: Vec<u8>) -> Result<Vec<u8>, bool> {
    r.map(|()| out).map_err(|e| matches!(e, RecordError::NotAnObject))
}

fuzz_target!(|input: &[u8]| {
    let Some((&which, record)) = input.split_first() else {
        return;
    };
    let p = &projections()[usize::from(which & 1)];
    let (mut fast, mut reference) = (Vec::new(), Vec::new());
    let f = outcome(p.project(record, &mut fast), fast);
    let r = outcome(p.project_reference(record, &mut reference), reference);
    assert_eq!(f, r, "{:?}", String::from_utf8_lossy(record));
});
