//! What a replay or an audit covers: a bucket, a prefix under the raw
//! prefix, and an optional window of last-modified times.

use crate::cli::{ConfigError, Range};
use crate::modes::replay::RawObject;

/// What to replay.
#[derive(Debug, Clone)]
pub struct Selection {
    pub bucket: String,
    /// Under the raw prefix, e.g. `raw/edge-1/2026/11/21/` for one source's day.
    pub prefix: String,
    pub raw_prefix: String,
    pub state_prefix: String,
    /// Objects last modified at or after / before these instants (epoch seconds).
    pub since: Option<i64>,
    pub until: Option<i64>,
}

/// An RFC 3339 instant, in epoch seconds.
fn instant(name: &'static str, value: Option<&str>) -> Result<Option<i64>, ConfigError> {
    value
        .map(|v| {
            v.parse::<jiff::Timestamp>()
                .map(|t| t.as_second())
                .map_err(|_| ConfigError::Invalid {
                    name,
                    reason: format!(
                        "{v:?} is not an RFC 3339 instant such as 2026-11-21T00:00:00Z"
                    ),
                })
        })
        .transpose()
}

impl Selection {
    /// Whether `obj` was stored within `--since` and `--until`.
    pub fn in_range(&self, obj: &RawObject) -> bool {
        self.covers(obj.last_modified_secs)
    }

    /// Whether the instant `secs` (epoch seconds) is within `--since` and
    /// `--until`.
    pub fn covers(&self, secs: i64) -> bool {
        self.since.is_none_or(|t| secs >= t) && self.until.is_none_or(|t| secs < t)
    }

    /// The objects `range` selects, with its instants parsed and checked.
    pub fn of(range: &Range, raw_prefix: &str) -> Result<Self, ConfigError> {
        let since = instant("--since", range.since.as_deref())?;
        let until = instant("--until", range.until.as_deref())?;
        if let (Some(s), Some(u)) = (since, until)
            && s >= u
        {
            return Err(ConfigError::Invalid {
                name: "--since",
                reason: format!(
                    "{} is not before --until {}: the range selects nothing",
                    range.since.as_deref().unwrap_or_default(),
                    range.until.as_deref().unwrap_or_default()
                ),
            });
        }
        Ok(Self {
            bucket: range.bucket.clone(),
            prefix: range
                .prefix
                .clone()
                .unwrap_or_else(|| raw_prefix.to_owned()),
            raw_prefix: raw_prefix.to_owned(),
            state_prefix: range.state_prefix.clone(),
            since,
            until,
        })
    }
}

/// Everything under `raw/` of `bucket`, with the state under `state/`, at
/// any time: the unit tests' selection.
#[cfg(test)]
impl Selection {
    pub fn everything(bucket: &str) -> Self {
        Self {
            bucket: bucket.to_owned(),
            prefix: "raw/".into(),
            raw_prefix: "raw/".into(),
            state_prefix: "state/".into(),
            since: None,
            until: None,
        }
    }
}
