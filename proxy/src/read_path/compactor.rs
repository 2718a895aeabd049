//! The compactor task: finds the shape logs due for compaction (`--compact-after`) and
//! compacts them one at a time: the merge runs on a thread of its own, and the consumer task
//! puts the result in place between two transactions ([`Command::Compact`]), so the live
//! path waits only for the hand-off (copying the last transactions, two fsyncs, a rename).
//!
//! The merge thread runs under `SCHED_IDLE`, where that is refused at nice 19 (a pooled
//! blocking thread could not be given its priority back afterwards): every other thread of
//! the proxy that wakes up takes the CPU from it at once. That ranks it only among the
//! proxy's own threads, though: with autogroups (most desktop and server kernels) every
//! Postgres backend, the walsender included, is a session and so a scheduling group of its
//! own, and the scheduler picks between groups before it looks at a policy or a nice value.
//! A walsender woken for a commit onto the merge's CPU was measured waiting there 20 ms (2
//! cores, both busy); the merge therefore also pauses every millisecond (see
//! `compaction::build`), which hands the CPU to whatever waits for it.
//!
//! A compaction that fails leaves the old log in place and logs a warning; the shape is tried
//! again once its log grew by another `--compact-after`.
//!
//! Shapes with subqueries are not compacted ([`compactable`]): their messages carry tags, and
//! the merge does not merge tags (an update merged from two keeps only the last one's
//! `removed_tags`, so a client that follows tags would keep a tag the first one removed, and
//! a later `move-out` of it would remove a row that belongs to the shape), nor the `move-in`
//! and `move-out` events of `moves=events`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use shapes::handle::Handle;
use tokio_util::sync::CancellationToken;

use super::{Command, ShapeError, Shapes};
use crate::observability::prometheus;
use crate::storage::shape_log::compaction::policy::CompactionPolicy;
use crate::storage::shape_log::compaction::{self, CompactionError, Stats};
use crate::storage::shape_store::{Shape, ShapeState};

/// How often the logs are looked at (a few atomic reads per shape).
const CHECK_EVERY: Duration = Duration::from_secs(1);
/// How long a replaced file may wait for the readers still reading it before its blocks are
/// left to the kernel to free at its last close.
const RETIRE_PATIENCE: Duration = Duration::from_secs(600);

/// Why one compaction did not happen.
#[derive(Debug, thiserror::Error)]
enum Failed {
    #[error(transparent)]
    Compaction(#[from] CompactionError),
    #[error(transparent)]
    Writer(#[from] ShapeError),
    #[error("the compaction task panicked")]
    Panicked,
}

/// Compacts the logs due under `policy` until `shutdown`.
pub async fn run(shapes: Arc<Shapes>, policy: CompactionPolicy, shutdown: CancellationToken) {
    // Bytes a shape's log had when its compaction failed.
    let mut failed: HashMap<Handle, u64> = HashMap::new();
    loop {
        tokio::select! {
            () = tokio::time::sleep(CHECK_EVERY) => {}
            () = shutdown.cancelled() => return,
        }
        failed.retain(|handle, _| shapes.by_handle(handle).is_some());
        // Looked at under the registry's lock, a few atomic reads per shape: with 100,000
        // shapes, copying them all each second stalled the runtime thread for milliseconds.
        let due = shapes.select(|shape| compaction::due(&shape.log, policy) && compactable(shape));
        for shape in due {
            if shutdown.is_cancelled() {
                return;
            }
            let bytes = shape.log.bytes();
            if failed
                .get(&shape.handle)
                .is_some_and(|at| bytes < at.saturating_add(policy.compact_after))
            {
                continue;
            }
            match compact(&shapes, &shape, policy).await {
                Ok(Some(stats)) => {
                    failed.remove(&shape.handle);
                    report(&shape, &stats);
                }
                Ok(None) => {}
                Err(err) => {
                    tracing::warn!(handle = %shape.handle, table = %shape.definition.table(), error = %err, "shape log compaction failed; the log stays as it was");
                    failed.insert(shape.handle.clone(), bytes);
                }
            }
        }
    }
}

/// Whether `shape`'s log may be compacted: it is ready and has no subqueries.
fn compactable(shape: &Shape) -> bool {
    shape.state() == ShapeState::Ready
        && !shape
            .definition
            .where_clause()
            .is_some_and(|w| w.has_subqueries())
}

async fn compact(
    shapes: &Shapes,
    shape: &Arc<Shape>,
    policy: CompactionPolicy,
) -> Result<Option<Stats>, Failed> {
    let prepared = {
        let shape = shape.clone();
        let (tx, rx) = tokio::sync::oneshot::channel();
        std::thread::Builder::new()
            .name("shapesync-compact".into())
            .spawn(move || {
                lower_priority();
                let _ = tx.send(compaction::prepare(&shape.log, policy));
            })
            .map_err(CompactionError::Io)?;
        rx.await.map_err(|_| Failed::Panicked)??
    };
    let Some(prepared) = prepared else {
        return Ok(None);
    };
    let handle = shape.handle.clone();
    let (stats, retired) = shapes
        .ask(|reply| Command::Compact {
            handle,
            prepared: Box::new(prepared),
            reply,
        })
        .await??;
    background(move || retired.release(RETIRE_PATIENCE));
    Ok(Some(stats))
}

/// Runs `work` on a thread of its own at idle priority.
fn background(work: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new()
        .name("shapesync-compact".into())
        .spawn(move || {
            lower_priority();
            work();
        });
    if let Err(err) = spawned {
        tracing::debug!(error = %err, "compaction: cannot start a background thread");
    }
}

/// Puts the calling thread under `SCHED_IDLE`, or where that is refused at nice 19; a
/// failure of both leaves it as it was.
fn lower_priority() {
    if let Err(idle_refused) = schedule_idle() {
        // SAFETY: setpriority only changes the scheduling priority of the given thread (this one).
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS as _, libc::gettid() as _, 19) };
        if result != 0 {
            tracing::debug!(idle_refused = %idle_refused, error = %std::io::Error::last_os_error(), "compaction: cannot lower the merge thread's priority");
        }
    }
}

/// Puts the calling thread under `SCHED_IDLE`.
fn schedule_idle() -> std::io::Result<()> {
    let param = libc::sched_param { sched_priority: 0 };
    // SAFETY: pid 0 is the calling thread; `param` is a valid sched_param for SCHED_IDLE
    // (priority 0), only read during the call.
    if unsafe { libc::sched_setscheduler(0, libc::SCHED_IDLE, &param) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn report(shape: &Shape, stats: &Stats) {
    metrics::counter!(prometheus::COMPACTIONS).increment(1);
    metrics::counter!(prometheus::COMPACTION_BYTES_BEFORE).increment(stats.bytes_before);
    metrics::counter!(prometheus::COMPACTION_BYTES_AFTER).increment(stats.bytes_after);
    tracing::info!(
        handle = %shape.handle,
        table = %shape.definition.table(),
        bytes_before = stats.bytes_before,
        bytes_after = stats.bytes_after,
        entries_before = stats.entries_before,
        entries_after = stats.entries_after,
        windows = stats.windows,
        duration_ms = stats.duration.as_millis() as u64,
        handoff_us = stats.handoff.as_micros() as u64,
        "shape log compacted"
    );
}
