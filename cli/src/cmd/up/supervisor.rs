//! Keeps one service child process running.
//!
//! A child that exits on its own (crashed, or killed by an operator to see
//! its work retried elsewhere) is restarted after [`RESTART_DELAY`]; one that
//! needs more than [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] is
//! given up on, so a child that cannot start does not spin forever.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::child;

/// Pause before restarting a child that exited.
pub const RESTART_DELAY: Duration = Duration::from_secs(1);
/// Restarts allowed per child within [`RESTART_WINDOW`].
pub const MAX_RESTARTS: usize = 5;
/// The window [`MAX_RESTARTS`] applies to.
pub const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// A supervised child process.
pub struct Supervised {
    pid: Arc<AtomicU32>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts `program args` (called `name` in logs) and keeps it running until [`Supervised::stop`]
    /// or `kill` (which SIGKILLs it at once). On stop it gets SIGTERM and
    /// `grace` to exit.
    pub fn start(
        name: String,
        program: PathBuf,
        args: Vec<OsString>,
        grace: Duration,
        kill: CancellationToken,
    ) -> Supervised {
        let pid = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let task = tokio::spawn(supervise(
            name,
            program,
            args,
            grace,
            pid.clone(),
            stop.clone(),
            kill,
        ));
        Supervised { pid, stop, task }
    }

    /// The current process id (0 when not running).
    pub fn pid(&self) -> u32 {
        self.pid.load(Ordering::Relaxed)
    }

    /// Whether the child has been given up on (or was never started).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Stops the child and waits until it has exited.
    pub async fn stop(self) {
        self.stop.cancel();
        let _ = self.task.await;
    }
}

async fn supervise(
    name: String,
    program: PathBuf,
    args: Vec<OsString>,
    grace: Duration,
    pid: Arc<AtomicU32>,
    stop: CancellationToken,
    kill: CancellationToken,
) {
    let mut restarts = Restarts::default();
    loop {
        let mut process = match child::command(&program).args(&args).spawn() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(name, error = %e, "could not start; giving up on it");
                return;
            }
        };
        pid.store(process.id().unwrap_or_default(), Ordering::Relaxed);
        let status = tokio::select! {
            status = process.wait() => status,
            _ = stop.cancelled() => {
                child::terminate(&mut process, &name, grace, &kill).await;
                pid.store(0, Ordering::Relaxed);
                return;
            }
            _ = kill.cancelled() => {
                let _ = process.kill().await;
                pid.store(0, Ordering::Relaxed);
                return;
            }
        };
        pid.store(0, Ordering::Relaxed);
        let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
        if !restarts.allow(Instant::now()) {
            tracing::error!(
                name,
                status,
                "exited {} times within {RESTART_WINDOW:?}; giving up on it (restart the fleet to bring it back)",
                MAX_RESTARTS + 1
            );
            return;
        }
        tracing::warn!(
            name,
            status,
            "exited unexpectedly; restarting it in {RESTART_DELAY:?}"
        );
        tokio::select! {
            _ = tokio::time::sleep(RESTART_DELAY) => {}
            _ = stop.cancelled() => return,
            _ = kill.cancelled() => return,
        }
    }
}

/// Restart times within the last [`RESTART_WINDOW`].
#[derive(Default)]
struct Restarts {
    times: VecDeque<Instant>,
}

impl Restarts {
    /// Records a restart at `now` if the budget allows it.
    fn allow(&mut self, now: Instant) -> bool {
        while self
            .times
            .front()
            .is_some_and(|t| now.duration_since(*t) >= RESTART_WINDOW)
        {
            self.times.pop_front();
        }
        if self.times.len() >= MAX_RESTARTS {
            return false;
        }
        self.times.push_back(now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restarts_are_capped_per_window() {
        let mut r = Restarts::default();
        let t0 = Instant::now();
        for i in 0..MAX_RESTARTS {
            assert!(r.allow(t0 + Duration::from_secs(i as u64)), "restart {i}");
        }
        assert!(!r.allow(t0 + Duration::from_secs(10)));
        // Once the first restart leaves the window, one more is allowed.
        assert!(r.allow(t0 + RESTART_WINDOW));
        assert!(!r.allow(t0 + RESTART_WINDOW + Duration::from_millis(1)));
    }
}
