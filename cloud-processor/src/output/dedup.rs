//! FIFO deduplication ids: derived from the object as it was read and the
//! chunk's index, so a resend of the same chunk carries the same id and SQS
//! drops it inside its 5-minute window.

use sha2::{Digest, Sha256};

/// What every FIFO deduplication id of an object is derived from: the
/// object as it was read (its version id in a versioned bucket, else its
/// ETag), never what the event said. A live event carries `versionId` and a
/// replayed one does not; taking the id from the event gave a resume driven
/// by replay other deduplication ids, so FIFO could not drop its resent batch.
pub fn dedup_base(bucket: &str, key: &str, read_version: Option<&str>, read_etag: &str) -> String {
    format!("{bucket}/{key}\0{}", read_version.unwrap_or(read_etag))
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
}
