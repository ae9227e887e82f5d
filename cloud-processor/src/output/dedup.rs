//! FIFO deduplication ids: derived from the object as it was read and the
//! chunk's index, so a resend of the same chunk carries the same id and SQS
//! drops it inside its 5-minute window.

use sha2::{Digest, Sha256};

/// What every FIFO deduplication id of an object is derived from: the
/// object as it was read (its version id in a versioned bucket, else its
/// ETag), never what the event said. A live event carries `versionId` and a
/// replayed one does not; taking the id from the event gave a resume driven
/// by replay other deduplication ids, so FIFO could not drop its resent batch.
///
/// Chunks cut after a settings change are numbered from `first_chunk`
/// (see [`crate::pipeline::Resume`]) and get ids of their own, so FIFO
/// never drops one as a resend of a chunk cut under the old settings (a
/// batch sent unrecorded before the change has the same numbers).
pub fn dedup_base(
    bucket: &str,
    key: &str,
    read_version: Option<&str>,
    read_etag: &str,
    first_chunk: u32,
) -> String {
    let read = read_version.unwrap_or(read_etag);
    match first_chunk {
        0 => format!("{bucket}/{key}\0{read}"),
        n => format!("{bucket}/{key}\0{read}\0from {n}"),
    }
}

/// A deterministic MessageDeduplicationId: the same object version and chunk
/// always give the same id, so a resend inside FIFO's 5-minute window is
/// dropped by SQS.
pub fn dedup_id(dedup_base: &str, chunk: u32) -> String {
    let digest = Sha256::digest(format!("{dedup_base}\0{chunk}").as_bytes());
    hex::encode(digest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dedup_ids_are_deterministic_distinct_and_short() {
        let a = dedup_id("b/raw/k\0etag1", 0);
        assert_eq!(a, dedup_id("b/raw/k\0etag1", 0));
        assert_ne!(a, dedup_id("b/raw/k\0etag1", 1));
        assert_ne!(a, dedup_id("b/raw/k\0etag2", 0));
        assert_eq!(a.len(), 64);
        assert!(a.bytes().all(|b| b.is_ascii_hexdigit()));
    }

    #[test]
    fn chunks_after_a_settings_change_never_share_an_id_with_earlier_ones() {
        let before = dedup_base("b", "raw/k", Some("v1"), "e", 0);
        let after = dedup_base("b", "raw/k", Some("v1"), "e", 12);
        assert_eq!(
            before,
            dedup_base("b", "raw/k", Some("v1"), "other etag", 0)
        );
        for chunk in 12..30 {
            assert_ne!(dedup_id(&before, chunk), dedup_id(&after, chunk));
        }
    }
}
