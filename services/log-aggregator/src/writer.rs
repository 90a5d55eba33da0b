//! The single writer: one thread owning the only connection that writes.
//!
//! SQLite allows one writer at a time; giving it a thread of its own keeps
//! its blocking calls off the async runtime and makes the order of writes
//! the order of commands: batches are committed in the order they were
//! read from the stream (which the ingest loop's cumulative acks rely on),
//! and retention passes slot in between batches.
//!
//! Between commands, when there is nothing else to do, it merges the
//! full-text index's segments a little at a time, so searches stay fast
//! without making ingestion pay for the merging.
//!
//! A batch that fails to commit (disk full, say) is retried with back-off
//! until it succeeds or the service stops: its messages are not acked
//! meanwhile, and nothing behind it is committed out of order.

use std::thread::JoinHandle;
use std::time::Duration;

use clawfleet_shared::timefmt::Timestamp;
use rusqlite::Connection;
use tokio::sync::mpsc::error::TryRecvError;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::retention::{self, Policy, Removed};
use crate::store::{self, Incoming, Inserted, StoreError, WriterState};

/// Lines one retention pass removes at most, so batches can go in between.
pub const RETENTION_BUDGET: usize = 20_000;
/// Batches between two checkpoints that empty the write-ahead log.
const CHECKPOINT_EVERY: u32 = 32;
/// Commands queued for the writer at most; the ingest loop waits beyond.
const QUEUE: usize = 4;

enum Command {
    Insert {
        batch: Vec<Incoming>,
        done: oneshot::Sender<Result<Inserted, StoreError>>,
    },
    Retain {
        now: Timestamp,
        done: oneshot::Sender<Result<Removed, StoreError>>,
    },
}

/// Handle to the writer thread. The thread ends once every handle is dropped.
#[derive(Clone)]
pub struct Writer {
    tx: mpsc::Sender<Command>,
}

/// The writer thread has stopped.
#[derive(Debug, thiserror::Error)]
#[error("the log index writer has stopped")]
pub struct WriterGone;

impl Writer {
    /// Starts the writer thread on `conn`. `stop` ends the retrying of a
    /// failing batch.
    pub fn spawn(
        conn: Connection,
        policy: Policy,
        stop: CancellationToken,
    ) -> std::io::Result<(Writer, JoinHandle<()>)> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let thread = std::thread::Builder::new()
            .name("log-index-writer".into())
            .spawn(move || write_loop(conn, policy, rx, stop))?;
        Ok((Writer { tx }, thread))
    }

    /// Queues a batch; the receiver says when it is committed. Waits while
    /// the writer is [`QUEUE`] commands behind.
    pub async fn insert(
        &self,
        batch: Vec<Incoming>,
    ) -> Result<oneshot::Receiver<Result<Inserted, StoreError>>, WriterGone> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Insert { batch, done })
            .await
            .map_err(|_| WriterGone)?;
        Ok(rx)
    }

    /// Runs one retention pass (see [`retention::enforce`]).
    pub async fn retain(&self, now: Timestamp) -> Result<Result<Removed, StoreError>, WriterGone> {
        let (done, rx) = oneshot::channel();
        self.tx
            .send(Command::Retain { now, done })
            .await
            .map_err(|_| WriterGone)?;
        rx.await.map_err(|_| WriterGone)
    }
}

/// Copies the write-ahead log into the database and empties it. SQLite's
/// own checkpoints never wait for readers, and with searches arriving all
/// the time while lines pour in they seldom find a moment without one: the
/// log then grows by hundreds of megabytes and every read gets slower. This
/// one waits (up to the busy timeout) for the readers of the moment to
/// finish, which takes milliseconds.
fn checkpoint(conn: &Connection) {
    if let Err(e) = conn.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(())) {
        tracing::debug!(error = %e, "could not checkpoint the log index");
    }
}

fn write_loop(
    mut conn: Connection,
    policy: Policy,
    mut rx: mpsc::Receiver<Command>,
    stop: CancellationToken,
) {
    let mut state = WriterState::default();
    let mut merge_pending = false;
    let mut since_checkpoint = 0;
    loop {
        let command = match rx.try_recv() {
            Ok(command) => command,
            Err(TryRecvError::Disconnected) => break,
            Err(TryRecvError::Empty) if merge_pending => {
                // Idle: merge some of the text index, then look for work again.
                merge_pending = store::merge_some(&conn).unwrap_or_else(|e| {
                    tracing::warn!(error = %e, "could not merge the text index");
                    false
                });
                continue;
            }
            Err(TryRecvError::Empty) => match rx.blocking_recv() {
                Some(command) => command,
                None => break,
            },
        };
        match command {
            Command::Insert { batch, done } => {
                let mut delay = Duration::from_millis(100);
                let result = loop {
                    match store::insert_batch(&mut conn, &mut state, &batch) {
                        Ok(inserted) => break Ok(inserted),
                        Err(e) if !stop.is_cancelled() => {
                            tracing::error!(error = %e, lines = batch.len(), "could not write log lines; retrying in {delay:?}");
                            std::thread::sleep(delay);
                            delay = (delay * 2).min(Duration::from_secs(10));
                        }
                        Err(e) => break Err(StoreError::from(e)),
                    }
                };
                merge_pending = true;
                since_checkpoint += 1;
                if since_checkpoint >= CHECKPOINT_EVERY {
                    since_checkpoint = 0;
                    checkpoint(&conn);
                }
                let _ = done.send(result);
            }
            Command::Retain { now, done } => {
                let result = retention::enforce(&mut conn, &policy, now, RETENTION_BUDGET);
                if let Ok(removed) = &result {
                    if !removed.more {
                        // Keep the planner's statistics fresh as the index grows and shrinks.
                        if let Err(e) = store::optimize(&conn) {
                            tracing::warn!(error = %e, "could not refresh the index statistics");
                        }
                    }
                }
                let _ = done.send(result.map_err(StoreError::from));
            }
        }
    }
    if let Err(e) = conn.execute_batch("PRAGMA wal_checkpoint(TRUNCATE);") {
        tracing::debug!(error = %e, "could not checkpoint the log index on close");
    }
}
