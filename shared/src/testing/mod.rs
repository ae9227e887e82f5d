//! Test support, compiled only with the `test-support` feature: the local
//! emulator (`emulator.rs`), an in-memory store with faults and a clock
//! (`mem.rs`) and the one contract suite both must pass (`contract.rs`),
//! two fault proxies (`fault_proxy.rs` speaks HTTP and answers as AWS does
//! when it struggles, at random with `storm.rs`; `transport.rs` knows only TCP and breaks connections
//! anywhere), a keep-alive S3 sink (`sink_s3.rs`), helpers for running the
//! real binaries (`binaries.rs`), a Lambda Runtime API with real deadlines
//! (`runtime_api.rs`), loopback ports (`loopback.rs`), the docs' generated
//! sections (`docs.rs`) and the source tree's layering (`source.rs`).

mod binaries;
pub mod contract;
mod docs;
mod emulator;
mod fault_proxy;
mod loopback;
mod mem;
mod runtime_api;
mod sink_s3;
pub mod source;
mod storm;
mod transport;

pub use binaries::{assert_plain_log_with_start_line, first_metrics, http_get};
pub use docs::{DocCommand, all_doc_commands, check_doc_commands, check_generated, doc_commands};
pub use emulator::{Emulator, Implementation, loopback_aws_env, unique_name};
pub use fault_proxy::{FaultProxy, Faults};
pub use loopback::free_port;
pub use mem::{Fault, MemStore};
pub use runtime_api::{Answer, RuntimeApi, s3_put_event, sqs_event};
pub use sink_s3::{SinkCounts, SinkS3};
pub use storm::{StormFault, StormReport};
pub use transport::{TransportProxy, TransportStats, Weather};
