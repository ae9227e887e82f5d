//! An in-memory [`ObjectStore`] with S3's conditional-write semantics, a clock
//! tests move, and injected faults, so the orchestration of both stages is
//! unit-tested without the emulator. The contract suite proves it behaves
//! like [`crate::s3::Bucket`] on S3.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::checksum::ChecksumMismatch;
use crate::store::{
    Children, Download, Head, Listed, Listing, ObjectStore, PAGE_LIMIT, Page, Part, PutMode,
    PutOptions, PutResult, S3Error, SmallObject,
};

/// A fault to inject into one call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// `503 SlowDown`, before the call has any effect.
    Throttle,
    /// `500 InternalError`, before the call has any effect.
    Unavailable,
    /// `403 AccessDenied`, before the call has any effect.
    Denied,
    /// The call takes effect, then its answer is lost (a timeout): the
    /// caller cannot tell whether it happened.
    LoseResponse,
    /// The call takes effect, then its answer is lost, and the SDK's last
    /// retry gets `500 InternalError`: the caller sees a server error for
    /// a call that took effect.
    LoseThenFail,
    /// The call takes effect, then its answer is lost, and the SDK's retry
    /// of the same conditional write meets it: `412 PreconditionFailed`.
    LoseThenPrecondition,
}

#[derive(Debug, Clone)]
struct Object {
    bytes: Vec<u8>,
    etag: String,
    version_id: String,
    written_ms: i64,
    options: PutOptions,
}

#[derive(Debug)]
struct Upload {
    bucket: String,
    key: String,
    options: PutOptions,
    parts: BTreeMap<i32, Vec<u8>>,
}

/// What another client does between two calls of ours (see
/// [`MemStore::meanwhile`]).
type Meanwhile = Box<dyn FnOnce(&MemStore) + Send>;

#[derive(Default)]
struct State {
    /// By (bucket, key).
    objects: BTreeMap<(String, String), Object>,
    uploads: HashMap<String, Upload>,
    next: u64,
    /// S3's clock, if a test set it; else the system's.
    clock_ms: Option<i64>,
    calls: u64,
    /// Faults by the index of the call they hit.
    faults: BTreeMap<u64, Fault>,
    /// Faults for the first call of an operation on a key containing a text.
    faults_on: Vec<(&'static str, String, Fault)>,
    /// Key prefixes every write under which is denied.
    denied: Vec<String>,
    /// Every call, in order: (operation, key).
    log: Vec<(&'static str, String)>,
    /// Conditional deletes are answered 501 NotImplemented, as one S3
    /// implementation (LocalStack) answers them.
    no_conditional_delete: bool,
    /// Keys whose reads deliver other bytes than S3 stored, and fail the
    /// checksum at their end, as the SDK's verified read does.
    corrupt_reads: Vec<String>,
    /// Run once after the first `op` call on a key containing the text.
    meanwhile: Vec<(&'static str, String, Meanwhile)>,
}

impl std::fmt::Debug for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("State")
            .field("objects", &self.objects.len())
            .field("calls", &self.calls)
            .field("meanwhile", &self.meanwhile.len())
            .finish_non_exhaustive()
    }
}

/// The in-memory store. Clones share their objects, as clients of one S3 do.
#[derive(Debug, Clone)]
pub struct MemStore {
    bucket: String,
    state: Arc<Mutex<State>>,
    /// The most objects a listing page holds (S3's is 1000).
    page_size: usize,
}

impl Default for MemStore {
    fn default() -> Self {
        Self::new("mem")
    }
}

fn whole_seconds(ms: i64) -> i64 {
    ms - ms.rem_euclid(1000)
}

impl MemStore {
    pub fn new(bucket: &str) -> Self {
        Self {
            bucket: bucket.to_owned(),
            state: Arc::default(),
            page_size: PAGE_LIMIT,
        }
    }

    /// Listing pages of at most `n` objects, so tests cross page ends.
    #[must_use]
    pub fn with_page_size(mut self, n: usize) -> Self {
        self.page_size = n.max(1);
        self
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding the lock has failed already.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sets S3's clock, in ms since the epoch (S3 reports whole seconds).
    pub fn at(&self, ms: i64) -> &Self {
        self.lock().clock_ms = Some(ms);
        self
    }

    /// Injects `fault` into the `n`-th call from now (0 is the next call).
    pub fn fail_in(&self, n: u64, fault: Fault) -> &Self {
        let mut s = self.lock();
        let at = s.calls + n;
        s.faults.insert(at, fault);
        self
    }

    /// Injects `fault` into each of the next `count` calls.
    pub fn fail_next(&self, count: u64, fault: Fault) -> &Self {
        for n in 0..count {
            self.fail_in(n, fault);
        }
        self
    }

    /// Injects `fault` into the first `op` call (`PutObject`, ...) whose
    /// key contains `key_part`.
    pub fn fail_on(&self, op: &'static str, key_part: &str, fault: Fault) -> &Self {
        self.lock().faults_on.push((op, key_part.to_owned(), fault));
        self
    }

    /// Runs `then` once, right after the first `op` call on a key
    /// containing `key_part` has taken effect: another client acting
    /// between two calls of ours. `then` may use [`MemStore::insert`] and
    /// [`MemStore::remove`].
    pub fn meanwhile(
        &self,
        op: &'static str,
        key_part: &str,
        then: impl FnOnce(&MemStore) + Send + 'static,
    ) -> &Self {
        self.lock()
            .meanwhile
            .push((op, key_part.to_owned(), Box::new(then)));
        self
    }

    /// Stores `bytes` at `key` at once, as another client's unconditional put.
    pub fn insert(&self, key: &str, bytes: &[u8]) {
        let mut s = self.lock();
        self.store(&mut s, key, bytes.to_vec(), PutOptions::default());
    }

    /// Deletes `key` at once, as another client's delete.
    pub fn remove(&self, key: &str) {
        self.lock().objects.remove(&self.id(key));
    }

    /// Answers every conditional delete `501 NotImplemented`, as LocalStack
    /// does (AWS supports them).
    pub fn without_conditional_deletes(&self) -> &Self {
        self.lock().no_conditional_delete = true;
        self
    }

    /// Every read of `key` delivers its bytes with one flipped, then fails
    /// with [`ChecksumMismatch`] at the end, as S3's verified read of a
    /// corrupted object does.
    pub fn corrupt_reads_of(&self, key: &str) -> &Self {
        self.lock().corrupt_reads.push(key.to_owned());
        self
    }

    /// Denies, for good, every write under `prefix` in this bucket.
    pub fn deny(&self, prefix: &str) -> &Self {
        let p = format!("{}/{prefix}", self.bucket);
        self.lock().denied.push(p);
        self
    }

    /// The calls made so far: (operation, key).
    pub fn calls(&self) -> Vec<(&'static str, String)> {
        self.lock().log.clone()
    }

    /// The bytes at `key`, if any.
    pub fn bytes(&self, key: &str) -> Option<Vec<u8>> {
        self.lock()
            .objects
            .get(&(self.bucket.clone(), key.to_owned()))
            .map(|o| o.bytes.clone())
    }

    /// The keys in this bucket, in order.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .objects
            .keys()
            .filter(|(b, _)| *b == self.bucket)
            .map(|(_, k)| k.clone())
            .collect()
    }

    /// Multipart uploads started and neither completed nor aborted.
    pub fn open_uploads(&self) -> usize {
        self.lock().uploads.len()
    }

    fn now(s: &State) -> i64 {
        s.clock_ms.unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        })
    }

    /// A failure S3 would answer with `code`, classified as S3's are.
    fn failure(&self, key: &str, op: &'static str, code: &str) -> S3Error {
        S3Error::failure(&self.bucket, key, op, code, &format!("injected {code}"))
    }

    fn not_found(&self, key: &str) -> S3Error {
        S3Error::NotFound {
            bucket: self.bucket.clone(),
            key: key.to_owned(),
        }
    }

    /// Runs one call: logs it, applies an injected fault or a denial, and
    /// otherwise lets `f` act on the state.
    fn call<T>(
        &self,
        op: &'static str,
        key: &str,
        write: bool,
        f: impl FnOnce(&mut State) -> Result<T, S3Error>,
    ) -> Result<T, S3Error> {
        let mut s = self.lock();
        let index = s.calls;
        s.calls += 1;
        s.log.push((op, key.to_owned()));
        let mut fault = s.faults.remove(&index);
        if let Some(i) = s
            .faults_on
            .iter()
            .position(|(o, part, _)| *o == op && key.contains(part.as_str()))
        {
            fault = Some(s.faults_on.remove(i).2);
        }
        let full = format!("{}/{key}", self.bucket);
        if write && s.denied.iter().any(|p| full.starts_with(p.as_str())) {
            return Err(self.failure(key, op, "AccessDenied"));
        }
        let result = match fault {
            Some(Fault::Throttle) => Err(self.failure(key, op, "SlowDown")),
            Some(Fault::Unavailable) => Err(self.failure(key, op, "InternalError")),
            Some(Fault::Denied) => Err(self.failure(key, op, "AccessDenied")),
            Some(Fault::LoseResponse) => {
                // The effect stands; only its answer is lost.
                let _ = f(&mut s);
                Err(self.failure(key, op, "RequestTimeout"))
            }
            Some(Fault::LoseThenFail) => {
                let _ = f(&mut s);
                Err(self.failure(key, op, "InternalError"))
            }
            Some(Fault::LoseThenPrecondition) => {
                let _ = f(&mut s);
                let (bucket, key) = self.id(key);
                Err(S3Error::Precondition { bucket, key })
            }
            None => f(&mut s),
        };
        let then = s
            .meanwhile
            .iter()
            .position(|(o, part, _)| *o == op && key.contains(part.as_str()))
            .map(|i| s.meanwhile.remove(i).2);
        drop(s);
        if let Some(then) = then {
            then(self);
        }
        result
    }

    fn id(&self, key: &str) -> (String, String) {
        (self.bucket.clone(), key.to_owned())
    }

    /// Checks `mode` against what is at `key` now.
    fn admit(&self, s: &State, key: &str, mode: &PutMode) -> Result<(), S3Error> {
        let (bucket, key_s) = self.id(key);
        match (mode, s.objects.get(&self.id(key))) {
            (PutMode::Create, Some(_)) => Err(S3Error::AlreadyExists { bucket, key: key_s }),
            (PutMode::Update { etag }, Some(o)) if *etag != o.etag => {
                Err(S3Error::Precondition { bucket, key: key_s })
            }
            (PutMode::Update { .. }, None) => Err(S3Error::NotFound { bucket, key: key_s }),
            _ => Ok(()),
        }
    }

    fn store(&self, s: &mut State, key: &str, bytes: Vec<u8>, options: PutOptions) -> PutResult {
        s.next += 1;
        let object = Object {
            bytes,
            etag: format!("\"m{}\"", s.next),
            version_id: format!("v{}", s.next),
            written_ms: Self::now(s),
            options,
        };
        let result = PutResult {
            etag: Some(object.etag.clone()),
            version_id: Some(object.version_id.clone()),
        };
        s.objects.insert(self.id(key), object);
        result
    }

    /// The first `limit` objects under `prefix` in this bucket, in key order.
    fn listed(&self, s: &State, prefix: &str, limit: usize) -> Vec<Listed> {
        s.objects
            .range(self.id(prefix)..)
            .take_while(|((b, k), _)| *b == self.bucket && k.starts_with(prefix))
            .take(limit)
            .map(|((_, k), o)| Self::listing_of(k, o))
            .collect()
    }

    fn listing_of(key: &str, o: &Object) -> Listed {
        Listed {
            key: key.to_owned(),
            size: o.bytes.len() as u64,
            etag: o.etag.trim_matches('"').to_owned(),
            last_modified_ms: Some(whole_seconds(o.written_ms)),
            version_id: None,
        }
    }

    fn head_of(o: &Object) -> Head {
        Head {
            size: o.bytes.len() as u64,
            etag: Some(o.etag.clone()),
            version_id: Some(o.version_id.clone()),
            content_type: o.options.content_type.clone(),
            content_encoding: o.options.content_encoding.clone(),
            metadata: o.options.metadata.clone(),
            checksum_crc32c: Some(crate::checksum::crc32c_base64(crate::checksum::crc32c(
                &o.bytes,
            ))),
        }
    }
}

impl ObjectStore for MemStore {
    fn name(&self) -> &str {
        &self.bucket
    }

    fn in_bucket(&self, name: &str) -> Self {
        Self {
            bucket: name.to_owned(),
            state: Arc::clone(&self.state),
            page_size: self.page_size,
        }
    }

    async fn get(&self, key: &str, version_id: Option<&str>) -> Result<Download, S3Error> {
        let o = self.call("GetObject", key, false, |s| {
            s.objects
                .get(&self.id(key))
                .filter(|o| version_id.is_none_or(|v| v == o.version_id))
                .cloned()
                .ok_or_else(|| self.not_found(key))
        })?;
        let head = Self::head_of(&o);
        let corrupt = self.lock().corrupt_reads.iter().any(|k| k == key);
        if corrupt {
            return Ok(Download {
                head,
                body: Box::new(Corrupted::new(o.bytes)),
            });
        }
        Ok(Download {
            head,
            body: Box::new(std::io::Cursor::new(o.bytes)),
        })
    }

    async fn get_small(&self, key: &str) -> Result<SmallObject, S3Error> {
        self.call("GetObject", key, false, |s| {
            let now = Self::now(s);
            s.objects
                .get(&self.id(key))
                .map(|o| SmallObject {
                    bytes: o.bytes.clone(),
                    etag: Some(o.etag.clone()),
                    last_modified_ms: Some(whole_seconds(o.written_ms)),
                    server_now_ms: Some(whole_seconds(now)),
                })
                .ok_or_else(|| self.not_found(key))
        })
    }

    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        mode: &PutMode,
        options: &PutOptions,
    ) -> Result<PutResult, S3Error> {
        self.call("PutObject", key, true, |s| {
            self.admit(s, key, mode)?;
            Ok(self.store(s, key, body, options.clone()))
        })
    }

    async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<(), S3Error> {
        self.call("DeleteObject", key, true, |s| {
            if if_match.is_some() && s.no_conditional_delete {
                let (bucket, key) = self.id(key);
                return Err(S3Error::Unsupported {
                    bucket,
                    key,
                    op: "DeleteObject",
                });
            }
            match (if_match, s.objects.get(&self.id(key))) {
                (Some(etag), Some(o)) if o.etag != etag => {
                    let (bucket, key) = self.id(key);
                    return Err(S3Error::Precondition { bucket, key });
                }
                (Some(_), None) => return Err(self.not_found(key)),
                _ => {}
            }
            s.objects.remove(&self.id(key));
            Ok(())
        })
    }

    async fn head(&self, key: &str) -> Result<Option<Head>, S3Error> {
        self.call("HeadObject", key, false, |s| {
            Ok(s.objects.get(&self.id(key)).map(Self::head_of))
        })
    }

    async fn list(&self, prefix: &str, limit: usize) -> Result<Vec<Listed>, S3Error> {
        self.call("ListObjectsV2", prefix, false, |s| {
            Ok(self.listed(s, prefix, limit))
        })
    }

    /// As S3 in an unversioned bucket for [`Listing::Current`]: every
    /// object is current, version `null`.
    async fn list_page(
        &self,
        prefix: &str,
        after: Option<&str>,
        listing: Listing,
        limit: usize,
    ) -> Result<Page, S3Error> {
        let op = match listing {
            Listing::Plain => "ListObjectsV2",
            Listing::Current => "ListObjectVersions",
        };
        let limit = limit.clamp(1, PAGE_LIMIT).min(self.page_size);
        self.call(op, prefix, false, |s| {
            let from = after.map_or_else(|| self.id(prefix), |a| self.id(a));
            let mut objects: Vec<Listed> = s
                .objects
                .range(from..)
                .skip_while(|((_, k), _)| after.is_some_and(|a| k == a))
                .take_while(|((b, k), _)| *b == self.bucket && k.starts_with(prefix))
                .take(limit + 1)
                .map(|((_, k), o)| Self::listing_of(k, o))
                .collect();
            let more = objects.len() > limit;
            objects.truncate(limit);
            let next_after = more
                .then(|| objects.last().map(|o| o.key.clone()))
                .flatten();
            Ok(Page {
                objects,
                next_after,
            })
        })
    }

    /// Never: the in-memory store keeps one version of each object.
    async fn versioned(&self) -> Result<bool, S3Error> {
        self.call("GetBucketVersioning", "", false, |_| Ok(false))
    }

    async fn list_children(&self, prefix: &str) -> Result<Children, S3Error> {
        self.call("ListObjectsV2", prefix, false, |s| {
            let mut children = Children {
                complete: true,
                ..Children::default()
            };
            let under = s
                .objects
                .range(self.id(prefix)..)
                .take_while(|((b, k), _)| *b == self.bucket && k.starts_with(prefix));
            for ((_, k), _) in under {
                match k[prefix.len()..].find('/') {
                    Some(at) => {
                        let child = &k[..prefix.len() + at + 1];
                        if children.prefixes.last().map(String::as_str) != Some(child) {
                            children.prefixes.push(child.to_owned());
                        }
                    }
                    None => children.objects += 1,
                }
            }
            Ok(children)
        })
    }

    async fn start_multipart(&self, key: &str, options: &PutOptions) -> Result<String, S3Error> {
        self.call("CreateMultipartUpload", key, true, |s| {
            s.next += 1;
            let id = format!("upload-{}", s.next);
            s.uploads.insert(
                id.clone(),
                Upload {
                    bucket: self.bucket.clone(),
                    key: key.to_owned(),
                    options: options.clone(),
                    parts: BTreeMap::new(),
                },
            );
            Ok(id)
        })
    }

    async fn put_part(
        &self,
        key: &str,
        upload_id: &str,
        number: i32,
        body: Vec<u8>,
    ) -> Result<Part, S3Error> {
        self.call("UploadPart", key, true, |s| {
            let upload = s
                .uploads
                .get_mut(upload_id)
                .filter(|u| u.bucket == self.bucket && u.key == key)
                .ok_or_else(|| self.failure(key, "UploadPart", "NoSuchUpload"))?;
            let etag = format!("\"p{number}-{}\"", body.len());
            let (crc32c, size) = (crate::checksum::crc32c(&body), body.len() as u64);
            upload.parts.insert(number, body);
            Ok(Part {
                number,
                etag,
                crc32c,
                size,
            })
        })
    }

    async fn complete_multipart(
        &self,
        key: &str,
        upload_id: &str,
        parts: Vec<Part>,
        mode: &PutMode,
    ) -> Result<PutResult, S3Error> {
        self.call("CompleteMultipartUpload", key, true, |s| {
            let op = "CompleteMultipartUpload";
            let upload = s
                .uploads
                .get(upload_id)
                .filter(|u| u.bucket == self.bucket && u.key == key)
                .ok_or_else(|| self.failure(key, op, "NoSuchUpload"))?;
            let named: Vec<i32> = parts.iter().map(|p| p.number).collect();
            let staged: Vec<i32> = upload.parts.keys().copied().collect();
            if named != staged {
                return Err(self.failure(key, op, "InvalidPart"));
            }
            self.admit(s, key, mode)?;
            let upload = s
                .uploads
                .remove(upload_id)
                .ok_or_else(|| self.failure(key, op, "NoSuchUpload"))?;
            let bytes = upload.parts.into_values().flatten().collect();
            Ok(self.store(s, key, bytes, upload.options))
        })
    }

    async fn abort_multipart(&self, key: &str, upload_id: &str) -> Result<(), S3Error> {
        self.call("AbortMultipartUpload", key, true, |s| {
            s.uploads.remove(upload_id);
            Ok(())
        })
    }
}

/// A body whose bytes are not the stored ones (one flipped), which fails
/// with [`ChecksumMismatch`] where a verified read finds it: at the end.
struct Corrupted {
    bytes: std::io::Cursor<Vec<u8>>,
}

impl Corrupted {
    fn new(mut bytes: Vec<u8>) -> Self {
        let middle = bytes.len() / 2;
        if let Some(b) = bytes.get_mut(middle) {
            *b ^= 0x20;
        }
        Self {
            bytes: std::io::Cursor::new(bytes),
        }
    }
}

impl tokio::io::AsyncRead for Corrupted {
    fn poll_read(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        std::task::ready!(std::pin::Pin::new(&mut self.bytes).poll_read(cx, buf))?;
        if buf.filled().len() == before && buf.remaining() > 0 {
            let mismatch = ChecksumMismatch {
                detail: "injected by the test".into(),
            };
            return std::task::Poll::Ready(Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                mismatch,
            )));
        }
        std::task::Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::retry::Class;

    #[tokio::test]
    async fn faults_hit_the_call_they_name_and_a_lost_answer_keeps_its_effect() {
        let s = MemStore::new("b");
        let none = PutOptions::default();
        s.fail_in(1, Fault::Throttle);
        s.put("a", b"1".to_vec(), &PutMode::Create, &none)
            .await
            .unwrap();
        let e = s
            .put("b", b"2".to_vec(), &PutMode::Create, &none)
            .await
            .unwrap_err();
        assert_eq!((e.kind(), e.class()), ("throttled", Class::Throttled));
        assert_eq!(s.bytes("b"), None, "a throttled call has no effect");

        s.fail_next(1, Fault::LoseResponse);
        let e = s
            .put("b", b"2".to_vec(), &PutMode::Create, &none)
            .await
            .unwrap_err();
        assert!(e.class().is_retryable());
        assert_eq!(s.bytes("b"), Some(b"2".to_vec()), "the write happened");
        assert!(matches!(
            s.put("b", b"2".to_vec(), &PutMode::Create, &none).await,
            Err(S3Error::AlreadyExists { .. })
        ));

        s.deny("secret/");
        let e = s
            .put("secret/x", vec![], &PutMode::Overwrite, &none)
            .await
            .unwrap_err();
        assert_eq!(e.kind(), "access_denied");
        assert!(s.get_small("a").await.is_ok(), "reads are not denied");
        assert_eq!(s.calls().len(), 6);
    }

    #[tokio::test]
    async fn buckets_are_separate_but_share_one_store() {
        let a = MemStore::new("a");
        let b = a.in_bucket("b");
        a.put("k", b"x".to_vec(), &PutMode::Create, &PutOptions::default())
            .await
            .unwrap();
        assert_eq!(b.head("k").await.unwrap(), None);
        assert_eq!(b.in_bucket("a").bytes("k"), Some(b"x".to_vec()));
        assert!(b.list("", 10).await.unwrap().is_empty());
    }
}
