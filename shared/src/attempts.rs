//! Every retried AWS request, counted: the SDK's own attempts (through an
//! interceptor on every client either binary builds) and the relay's own
//! retry loops, into one counter, `relay_aws_retries_total`, by service,
//! operation and cause. Without it, a struggling service shows in
//! `/metrics` only once the SDK's attempts run out.

use aws_sdk_s3::config::interceptors::{
    BeforeTransmitInterceptorContextRef, FinalizerInterceptorContextRef,
};
use aws_sdk_s3::config::{ConfigBag, Intercept, RuntimeComponents};
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::retries::RequestAttempts;
use aws_smithy_types::config_bag::{Storable, StoreReplace};

pub use crate::retry::Cause;

/// Retried AWS requests, by `service`, `operation` and `cause`.
pub const AWS_RETRIES: &str = "relay_aws_retries_total";
/// The same retries by cause alone: CloudWatch (the Lambda's Embedded
/// Metric Format) aggregates a metric only over its full dimension set,
/// so an alarm on throttling across every call needs this one.
pub const AWS_RETRIES_BY_CAUSE: &str = "relay_aws_retries_by_cause_total";

/// Counts one retry of `operation` on `service`.
pub fn count(service: &str, operation: &str, cause: Cause) {
    metrics::counter!(AWS_RETRIES, "service" => service.to_owned(),
        "operation" => operation.to_owned(), "cause" => cause.label())
    .increment(1);
    metrics::counter!(AWS_RETRIES_BY_CAUSE, "cause" => cause.label()).increment(1);
}

/// Registers the counter at zero for `calls` (service, operation), by every
/// cause, so a `rate()` alert has a series from the first scrape.
pub fn register_at_zero(calls: &[(&'static str, &'static str)]) {
    for cause in Cause::ALL {
        metrics::counter!(AWS_RETRIES_BY_CAUSE, "cause" => cause.label()).increment(0);
    }
    for (service, operation) in calls {
        for cause in Cause::ALL {
            metrics::counter!(AWS_RETRIES, "service" => *service,
                "operation" => *operation, "cause" => cause.label())
            .increment(0);
        }
    }
}

/// Describes the counter to the metrics recorder.
pub fn describe() {
    metrics::describe_counter!(
        AWS_RETRIES,
        "AWS requests tried again, by service, operation and cause (throttled, server_error, timeout, connection, response, partial_batch, other): the SDK's own attempts and the relay's retry loops alike"
    );
    metrics::describe_counter!(
        AWS_RETRIES_BY_CAUSE,
        "relay_aws_retries_total by cause alone, for CloudWatch alarms (the Lambda's alarm <name>-aws-throttled watches cause=throttled)"
    );
}

/// The last attempt's cause, kept for the attempt that retries it.
#[derive(Debug, Clone, Copy)]
struct LastCause(Cause);

impl Storable for LastCause {
    type Storer = StoreReplace<Self>;
}

/// The interceptor: after each attempt it notes why it failed; before an
/// attempt that is a retry, it counts that cause. Attach it to every
/// client (see [`crate::client`]).
#[derive(Debug, Clone, Copy, Default)]
pub struct RetryCounter;

impl Intercept for RetryCounter {
    fn name(&self) -> &'static str {
        "relay::RetryCounter"
    }

    fn read_before_transmit(
        &self,
        _context: &BeforeTransmitInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let attempt = cfg.load::<RequestAttempts>().map_or(1, |a| a.attempts());
        if attempt < 2 {
            return Ok(());
        }
        let cause = cfg.load::<LastCause>().map_or(Cause::Other, |c| c.0);
        let (service, operation) = cfg
            .load::<Metadata>()
            .map_or(("unknown", "unknown"), |m| (m.service(), m.name()));
        count(&service.to_ascii_lowercase(), operation, cause);
        Ok(())
    }

    fn read_after_attempt(
        &self,
        context: &FinalizerInterceptorContextRef<'_>,
        _components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), aws_sdk_s3::error::BoxError> {
        let cause = match context.output_or_error() {
            None | Some(Ok(_)) => return Ok(()),
            Some(Err(e)) if e.is_timeout_error() => Cause::Timeout,
            Some(Err(e)) => match e.as_connector_error() {
                Some(c) if c.is_timeout() => Cause::Timeout,
                Some(_) => Cause::Connection,
                None if e.is_response_error() => Cause::Response,
                None => match context.response() {
                    Some(r) => {
                        Cause::of_answer(r.status().as_u16(), r.body().bytes().unwrap_or_default())
                    }
                    None => Cause::Other,
                },
            },
        };
        cfg.interceptor_state().store_put(LastCause(cause));
        Ok(())
    }
}
