//! The local AWS implementation the integration tests speak to: clients on
//! loopback only, with explicit dummy credentials, and a fresh bucket or
//! queue per test. An unreachable emulator is a loud failure, never a skip.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_config::{BehaviorVersion, SdkConfig};
use aws_sdk_s3::config::{Credentials, Region};

use crate::client::{ClientOptions, s3_client, sqs_client};
use crate::s3::Bucket;

const HOW_TO_START: &str = "start it with `scripts/moto.sh start` and export the variables it prints, \
     or run the whole suite with `scripts/test.sh`";

/// Handles to the emulator named by `AWS_ENDPOINT_URL`.
#[derive(Debug, Clone)]
pub struct Emulator {
    pub endpoint: String,
    pub sdk: SdkConfig,
    pub s3: aws_sdk_s3::Client,
    pub sqs: aws_sdk_sqs::Client,
    /// Which implementation it is: where they differ (docs/development.md),
    /// a test asserts AWS's behaviour on the one that has it.
    pub kind: Implementation,
}

/// The local AWS implementations the suite runs against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Implementation {
    /// moto server (`scripts/moto.sh`): `AWS_ENDPOINT_URL`.
    Moto,
    /// LocalStack (`scripts/localstack.sh`): `RELAY_LOCALSTACK_URL`.
    LocalStack,
}

impl Implementation {
    /// Whether a FIFO queue drops a deduplication id sent again within five
    /// minutes even after the first copy was consumed, as SQS does (moto
    /// compares only with messages still queued).
    pub fn deduplicates_consumed_fifo_messages(self) -> bool {
        self == Self::LocalStack
    }

    /// Whether conditional deletes are supported (LocalStack answers 501).
    pub fn supports_conditional_deletes(self) -> bool {
        self == Self::Moto
    }

    /// Whether S3 events carry the object's `versionId` and a `sequencer`.
    pub fn events_carry_version_ids(self) -> bool {
        self == Self::LocalStack
    }

    /// Whether a PutObject or part with a wrong CRC32C is refused.
    pub fn refuses_wrong_checksums(self) -> bool {
        self == Self::LocalStack
    }

    /// Whether ListObjectVersions honours `MaxKeys` on an unversioned bucket.
    pub fn pages_unversioned_version_listings(self) -> bool {
        self == Self::Moto
    }
}

/// A name no other test (or earlier run against the same emulator) has used.
/// S3 bucket rules: lowercase letters, digits and `-`, at most 63 characters.
pub fn unique_name(label: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    let label: String = label
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .take(24)
        .collect();
    format!("{label}-{}-{n}-{:x}", std::process::id(), nanos % (1 << 40))
}

impl Emulator {
    /// Connects to the emulator or panics with instructions.
    pub async fn connect() -> Self {
        let endpoint = match std::env::var("AWS_ENDPOINT_URL") {
            Ok(e) if !e.is_empty() => e,
            _ => panic!(
                "AWS_ENDPOINT_URL is not set, so there is no emulator to test against: {HOW_TO_START}"
            ),
        };
        Self::connect_to(endpoint).await
    }

    /// Connects to LocalStack at `RELAY_LOCALSTACK_URL` or panics with
    /// instructions: a test that needs it fails, never skips.
    pub async fn localstack() -> Self {
        let endpoint = match std::env::var("RELAY_LOCALSTACK_URL") {
            Ok(e) if !e.is_empty() => e,
            _ => panic!(
                "RELAY_LOCALSTACK_URL is not set, so there is no LocalStack to test against: start it \
                 with `scripts/localstack.sh start` and export what it prints, or run `scripts/test.sh`"
            ),
        };
        let mut emu = Self::connect_to(endpoint).await;
        emu.kind = Implementation::LocalStack;
        emu
    }

    /// Connects to the emulator at `endpoint` (a test's private instance) or
    /// panics with instructions.
    pub async fn connect_to(endpoint: String) -> Self {
        assert!(
            endpoint.starts_with("http://127.0.0.1:") || endpoint.starts_with("http://localhost:"),
            "AWS_ENDPOINT_URL={endpoint} is not on loopback; tests only talk to a local emulator"
        );
        // Explicit region and credentials: the SDK must never fall back to
        // probing the instance metadata address.
        let sdk = aws_config::defaults(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new("test", "test", None, None, "relay-tests"))
            .load()
            .await;
        let s3 = s3_client(
            &sdk,
            ClientOptions {
                s3_path_style: true,
            },
        );
        let sqs = sqs_client(&sdk);
        let probe = tokio::time::timeout(Duration::from_secs(10), s3.list_buckets().send()).await;
        match probe {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => panic!(
                "the emulator at {endpoint} is unreachable ({}): {HOW_TO_START}",
                crate::s3::map_sdk_error(e, "-", "-", "ListBuckets", None)
            ),
            Err(_) => {
                panic!("the emulator at {endpoint} did not answer within 10 s: {HOW_TO_START}")
            }
        }
        Self {
            endpoint,
            sdk,
            s3,
            sqs,
            kind: Implementation::Moto,
        }
    }

    /// Creates a fresh bucket for one test.
    pub async fn bucket(&self, label: &str) -> Bucket {
        let name = unique_name(label);
        if let Err(e) = self.s3.create_bucket().bucket(&name).send().await {
            panic!("creating bucket {name} on {}: {e:?}", self.endpoint);
        }
        Bucket::new(self.s3.clone(), name)
    }

    /// Turns versioning on for `bucket`, as the module's bucket has it.
    pub async fn enable_versioning(&self, bucket: &str) {
        use aws_sdk_s3::types::{BucketVersioningStatus, VersioningConfiguration};
        let enabled = VersioningConfiguration::builder()
            .status(BucketVersioningStatus::Enabled)
            .build();
        if let Err(e) = self
            .s3
            .put_bucket_versioning()
            .bucket(bucket)
            .versioning_configuration(enabled)
            .send()
            .await
        {
            panic!("versioning bucket {bucket} on {}: {e:?}", self.endpoint);
        }
    }

    /// Creates a fresh queue for one test and returns its URL. Fresh names
    /// matter: PurgeQueue is allowed only once a minute per queue.
    pub async fn queue(&self, label: &str, fifo: bool) -> String {
        let mut name = unique_name(label);
        let mut req = self.sqs.create_queue();
        if fifo {
            name.push_str(".fifo");
            req = req.attributes(aws_sdk_sqs::types::QueueAttributeName::FifoQueue, "true");
        }
        match req.queue_name(&name).send().await {
            Ok(out) => out
                .queue_url
                .unwrap_or_else(|| panic!("no URL for queue {name}")),
            Err(e) => panic!("creating queue {name} on {}: {e:?}", self.endpoint),
        }
    }
}

impl Emulator {
    /// The emulator's SDK settings, reaching it through `endpoint` (a proxy).
    pub fn sdk_via(&self, endpoint: &str) -> SdkConfig {
        self.sdk.to_builder().endpoint_url(endpoint).build()
    }

    /// An S3 client that reaches the emulator through `endpoint` (a proxy).
    pub async fn s3_via(&self, endpoint: &str) -> aws_sdk_s3::Client {
        let sdk = self.sdk_via(endpoint);
        s3_client(
            &sdk,
            ClientOptions {
                s3_path_style: true,
            },
        )
    }
}

/// Points a child process's AWS SDK at `endpoint` on loopback, with dummy
/// credentials and instance-metadata probing off (without it the SDK
/// reaches for the EC2 metadata address).
pub fn loopback_aws_env<'c>(
    cmd: &'c mut std::process::Command,
    endpoint: &str,
) -> &'c mut std::process::Command {
    cmd.env("AWS_ENDPOINT_URL", endpoint)
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_ACCESS_KEY_ID", "test")
        .env("AWS_SECRET_ACCESS_KEY", "test")
        .env("AWS_REGION", "us-east-1")
        // Python's boto3 reads this one.
        .env("AWS_DEFAULT_REGION", "us-east-1")
}
