//! The agent's start-up access probe: can it write under its prefix,
//! without writing anything? Expressed over [`ObjectStore`]; the S3 calls
//! themselves are in `relay_shared::s3`.

use relay_shared::store::{ObjectStore, PutOptions, S3Error};

/// What the start-up check learned.
#[derive(Debug)]
pub enum Access {
    Allowed,
    /// Missing bucket, bad credentials or no s3:PutObject: a human must act.
    Denied(S3Error),
    /// S3 could not be reached; the agent starts anyway and keeps retrying.
    Unknown(S3Error),
}

/// The key the probe starts its multipart upload at.
pub fn probe_key(prefix: &str) -> String {
    format!("{prefix}.relay-agent-access-probe")
}

/// Checks that the agent may write under `prefix` without writing anything:
/// it starts a multipart upload there and aborts it. Starting one needs
/// exactly `s3:PutObject`, and works under a bucket policy that requires
/// `If-None-Match` for object creation (parts are exempt from it); aborting
/// needs `s3:AbortMultipartUpload`, which the agent uses anyway. No object
/// is created, so no event reaches the processor.
pub async fn probe_put_access<S: ObjectStore>(store: &S, prefix: &str) -> Access {
    let key = probe_key(prefix);
    match store.start_multipart(&key, &PutOptions::default()).await {
        Ok(id) => {
            crate::upload::abort(store, &key, &id).await;
            Access::Allowed
        }
        Err(e) if e.class().is_retryable() => Access::Unknown(e),
        Err(e) => Access::Denied(e),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use relay_shared::testing::{Fault, MemStore};

    #[tokio::test]
    async fn the_probe_writes_nothing_and_tells_denied_from_unreachable() {
        let s = MemStore::new("b");
        assert!(matches!(
            probe_put_access(&s, "raw/e/").await,
            Access::Allowed
        ));
        assert!(s.keys().is_empty(), "no object was created");
        assert_eq!(s.open_uploads(), 0, "the probe's upload was aborted");

        s.fail_next(1, Fault::Throttle);
        assert!(matches!(
            probe_put_access(&s, "raw/e/").await,
            Access::Unknown(_)
        ));
        s.deny("raw/");
        assert!(matches!(
            probe_put_access(&s, "raw/e/").await,
            Access::Denied(e) if e.kind() == "access_denied"
        ));
    }
}
