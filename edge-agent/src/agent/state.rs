//! The agent's state directory, kept as a health concern of its own: a
//! ledger that cannot be written (a full or read-only disk) never stops
//! uploads, and is named on `/healthz`, in one ERROR line and in
//! `relay_agent_state_errors_total` until it can be written again.

use std::io;

use relay_shared::store::ObjectStore;
use tracing::{error, info};

use super::owner::Agent;
use crate::health;
use crate::ledger::Ledger;
use crate::upload::Job;

impl<S: ObjectStore> Agent<S> {
    /// Records a kept file S3 now holds. It is remembered in memory even
    /// when the ledger cannot be written.
    pub(super) fn record_upload(&mut self, job: &Job) {
        self.with_ledger(|ledger| ledger.record(&job.rel, job.stat));
    }

    /// Makes the ledger's records durable (or repairs it once it can be).
    pub(super) fn sync_ledger(&mut self) {
        self.with_ledger(Ledger::sync);
    }

    /// Runs `op` on the ledger and reports what changed: a failed write is
    /// counted, the first one (and the repair) logged and told to `/healthz`.
    fn with_ledger(&mut self, op: impl FnOnce(&mut Ledger) -> io::Result<()>) {
        let Some(ledger) = &mut self.ledger else {
            return;
        };
        let was_unwritable = ledger.unwritable().is_some();
        if op(ledger).is_err()
            && let Some(u) = ledger.unwritable()
        {
            ::metrics::counter!(health::STATE_ERRORS, "op" => u.op).increment(1);
        }
        match (was_unwritable, ledger.unwritable().is_some()) {
            (false, true) => report_unwritable(ledger),
            (true, false) => {
                info!(ledger = %ledger.path().display(), records = ledger.len(),
                    "the state directory can be written again: the upload ledger is whole and durable");
                health::set_state_dir_problem(None);
            }
            _ => {}
        }
    }
}

/// Says, once, that the state directory cannot be written and what that
/// means: uploads go on, and are remembered in memory only.
pub(super) fn report_unwritable(ledger: &Ledger) {
    let Some(u) = ledger.unwritable() else {
        return;
    };
    let dir = ledger.path().parent().map_or_else(
        || ledger.path().display().to_string(),
        |d| d.display().to_string(),
    );
    error!(state_dir = %dir, op = u.op, error = %u.error,
        "the state directory cannot be written (full or read-only?): uploads go on, but the files uploaded are remembered in memory only until it can; a restart before then offers kept files to S3 again (harmless 412s)");
    health::set_state_dir_problem(Some(format!(
        "state directory {dir} cannot be written ({} failed: {}): uploads go on; the upload ledger is kept in memory until it can",
        u.op, u.error
    )));
}
