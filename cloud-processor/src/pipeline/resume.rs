//! Where a record sits in its object, whatever the settings, and how a run
//! skips the records a run under earlier settings handled.

/// Where a record sits in its object: its top-level value's index in the
/// upper bits and, in wrapper mode, its index inside the wrapper in the
/// lower [`INNER_BITS`]. It depends only on how the object is framed into
/// values, not on the fields or the message size, so it names the same
/// record under any settings.
pub type Position = u64;

/// Bits of a [`Position`] for a record's index inside its wrapper: a
/// wrapper is framed whole within the 1 MiB window, and every record in it
/// takes at least 3 bytes, so fewer than 2^19 fit.
const INNER_BITS: u32 = 24;

/// The position of record `inner` of top-level value `item`.
pub fn position(item: u64, inner: u64) -> Position {
    (item << INNER_BITS) | (inner & ((1 << INNER_BITS) - 1))
}

/// How a run picks up an object another run left half-sent under other
/// settings: the records in `earlier` were handled then (sent, or rejected
/// unreported), so they are skipped, and chunks are numbered from
/// `first_chunk`, after every number the earlier run used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Resume {
    /// Sorted, disjoint half-open ranges of [`Position`]s.
    pub earlier: Vec<[Position; 2]>,
    pub first_chunk: u32,
}

impl Resume {
    /// From ranges in any order, overlapping or touching: joined.
    pub fn new(mut ranges: Vec<[Position; 2]>, first_chunk: u32) -> Self {
        ranges.retain(|[a, b]| a < b);
        ranges.sort_unstable();
        let mut earlier: Vec<[Position; 2]> = Vec::with_capacity(ranges.len());
        for [start, end] in ranges {
            match earlier.last_mut() {
                Some(last) if start <= last[1] => last[1] = last[1].max(end),
                _ => earlier.push([start, end]),
            }
        }
        Self {
            earlier,
            first_chunk,
        }
    }

    /// Whether the record at `pos` was handled under earlier settings.
    /// Positions only grow within a run, so `cursor` (starting at 0) keeps
    /// the search linear over the whole object.
    pub fn is_earlier(&self, pos: Position, cursor: &mut usize) -> bool {
        while let Some(&[_, end]) = self.earlier.get(*cursor) {
            if pos < end {
                break;
            }
            *cursor += 1;
        }
        self.earlier
            .get(*cursor)
            .is_some_and(|&[start, _]| start <= pos)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Joined ranges hold exactly the positions the ranges held, and
        /// `is_earlier` over ascending positions agrees with them.
        #[test]
        fn joined_ranges_cover_exactly_the_same_positions(
            ranges in proptest::collection::vec((0u64..200, 0u64..20), 0..12),
        ) {
            let raw: Vec<[Position; 2]> = ranges.iter().map(|&(a, n)| [a, a + n]).collect();
            let resume = Resume::new(raw.clone(), 0);
            prop_assert!(resume.earlier.windows(2).all(|w| w[0][1] < w[1][0]));
            let mut cursor = 0;
            for pos in 0..230 {
                let want = raw.iter().any(|&[a, b]| a <= pos && pos < b);
                prop_assert_eq!(resume.is_earlier(pos, &mut cursor), want, "at {}", pos);
            }
        }
    }
}
