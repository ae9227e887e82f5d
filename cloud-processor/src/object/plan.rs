//! How one object is to be processed, decided before it is claimed: where
//! its chunks go, the pipeline's settings, whether it is a canary, the
//! fingerprint of everything that shapes its chunks, and its state keys.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Instant;

use relay_shared::keys::Canary;
use sha2::Digest;

use crate::cli::{Config, Protocol, RECORD_WINDOW_BYTES};
use crate::object::ObjectRef;
use crate::object::marker::StateKeys;
use crate::output::batch::TRACEPARENT_RESERVE_BYTES;
use crate::output::{self, MessageSink, Route};
use crate::pipeline::Settings;

/// How one object is to be processed, decided before it is claimed: where
/// its chunks go, the pipeline's settings, whether it is a canary, the
/// fingerprint of everything that shapes its chunks, and its state keys.
pub(super) struct Plan<'a, Q> {
    pub route: Route<'a, Q>,
    pub settings: Settings,
    pub canary: Option<Canary>,
    pub fingerprint: String,
    pub keys: StateKeys,
    /// The edge source the key names (its first segment after the raw
    /// prefix).
    pub source: String,
    /// Whether messages carry the `traceparent` attribute (see
    /// [`Plan::untraced`]).
    pub traced: bool,
}

impl<Q: MessageSink> Plan<'_, Q> {
    /// The plan the release before trace contexts made for the same object:
    /// no `traceparent` attribute, so bodies [`TRACEPARENT_RESERVE_BYTES`]
    /// larger, and so another fingerprint. An object that release left
    /// half-sent is finished under it, chunk for chunk, so the upgrade
    /// strands nothing (its lease recorded no positions to resume by).
    pub fn untraced(mut self, config: &Config, protocol: &Protocol) -> Self {
        self.fingerprint = self.untraced_fingerprint(config, protocol);
        self.settings.max_body_bytes += TRACEPARENT_RESERVE_BYTES;
        self.traced = false;
        self
    }

    /// The fingerprint of [`Plan::untraced`], without making it.
    pub fn untraced_fingerprint(&self, config: &Config, protocol: &Protocol) -> String {
        let settings = Settings {
            max_body_bytes: self.settings.max_body_bytes + TRACEPARENT_RESERVE_BYTES,
            ..self.settings.clone()
        };
        fingerprint(config, protocol, &settings, self.route.queue_url())
    }
}

/// One attempt at one object, as its stages (`run`, `settle`) share it.
pub(super) struct Attempt<'a, S, Q> {
    pub obj: &'a ObjectRef,
    pub plan: Plan<'a, Q>,
    /// The store, addressing the object's bucket.
    pub store: S,
    pub started: Instant,
    /// The processor's name in leases and markers.
    pub owner: &'a str,
    pub protocol: &'a Protocol,
    /// Per source, the newest canary's creation time processed here.
    pub newest_canary: &'a Mutex<BTreeMap<String, f64>>,
}

/// The pipeline's settings for one object, packed for a queue whose
/// messages hold `max_message_bytes` (the attributes' worst case for
/// `source_key` is reserved).
pub fn settings(config: &Config, max_message_bytes: usize, source_key: &str) -> Settings {
    Settings {
        projection: config.projection.clone(),
        format: config.body_format,
        max_body_bytes: output::max_body_bytes(max_message_bytes, source_key),
        max_record_bytes: RECORD_WINDOW_BYTES,
        max_decompressed_bytes: config.max_decompressed_bytes,
        records_pointer: config.records_pointer.clone(),
        large_records: config.large_records,
        max_large_record_bytes: config.max_record_bytes,
        decode_thread: config.decode_thread,
        // Set from the lease once the object is claimed.
        resume: crate::pipeline::Resume::default(),
    }
}

/// Everything that decides how an object is cut into chunks and where
/// they go. A lease left under another fingerprint is not resumed.
pub(super) fn fingerprint(
    config: &Config,
    protocol: &Protocol,
    settings: &Settings,
    queue_url: &str,
) -> String {
    let projection = &config.projection;
    let fields: Vec<String> = projection
        .fields()
        .iter()
        .map(|f| format!("{}={}{}", f.name, f.path.join("\u{1}"), f.rules_text()))
        .collect();
    // The key's id (an HMAC of a fixed text, not the key): hashes under
    // another key are other output.
    let keys = projection.hmac_keys();
    let key = [&keys.current, &keys.previous]
        .map(|k| k.as_ref().map_or("", crate::pipeline::rules::HmacKey::id))
        .join(" ");
    let key = key.trim();
    // v2: records with none of the fields may be rejected (v1 sent them).
    // v3: records too large for a message may be offloaded, and where.
    // v4: records over the window are offloaded up to a limit.
    let text = format!(
        "v4\0{}\0{:?}\0{:?}\0{:?}\0{:?}\0{}\0{}\0{}\0{:?}\0{:?}\0{}\0{}{}",
        fields.join("\u{2}"),
        projection.missing(),
        projection.empty_records(),
        settings.format,
        settings.records_pointer,
        settings.max_body_bytes,
        settings.max_record_bytes,
        queue_url,
        settings.large_records,
        protocol.payload_bucket,
        protocol.payload_prefix,
        settings.max_large_record_bytes,
        // Empty without hmac(), so a plain list keeps its fingerprint.
        if key.is_empty() {
            String::new()
        } else {
            format!("\0{key}")
        },
    );
    let digest = sha2::Sha256::digest(text.as_bytes());
    hex::encode(digest)[..16].to_owned()
}
