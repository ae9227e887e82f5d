//! Checksums S3 keeps with objects: CRC32C of parts and of whole objects,
//! written as S3 writes them, and the error a download fails with when its
//! bytes do not match. A leaf: the store's backends and the processor's
//! pipeline use it.

/// A download whose bytes do not match the CRC32C S3 stored with the
/// object: the error a body read fails with at its end.
#[derive(Debug, Clone, thiserror::Error)]
#[error("the bytes read do not match the CRC32C S3 stored with the object ({detail})")]
pub struct ChecksumMismatch {
    pub detail: String,
}

impl ChecksumMismatch {
    /// Whether `e` is a checksum mismatch, as a body read reports it.
    pub fn is(e: &std::io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Self>())
    }
}

/// CRC32C (Castagnoli), as S3's `ChecksumCRC32C` holds it, of `bytes`.
pub fn crc32c(bytes: &[u8]) -> u32 {
    crc_fast::checksum(crc_fast::CrcAlgorithm::Crc32Iscsi, bytes) as u32
}

/// The CRC32C of `a` then `b`, from theirs and `b`'s length.
pub fn crc32c_combine(a: u32, b: u32, b_len: u64) -> u32 {
    crc_fast::checksum_combine(
        crc_fast::CrcAlgorithm::Crc32Iscsi,
        a.into(),
        b.into(),
        b_len,
    ) as u32
}

/// A CRC32C as S3 writes it: base64 of its four bytes, big-endian.
pub fn crc32c_base64(crc: u32) -> String {
    aws_smithy_types::base64::encode(crc.to_be_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_is_castagnolis_and_combines_as_s3_combines_parts() {
        // The check value of CRC-32C (RFC 3720).
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        let (a, b) = (b"hello, ".as_slice(), b"world".as_slice());
        let whole = crc32c(&[a, b].concat());
        assert_eq!(crc32c_combine(crc32c(a), crc32c(b), b.len() as u64), whole);
        assert_eq!(crc32c_base64(0xE306_9283), "4waSgw==");
    }
}
