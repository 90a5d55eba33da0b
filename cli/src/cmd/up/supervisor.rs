//! Keeps one service child process running.
//!
//! A child that exits on its own (crashed, or killed by an operator to see
//! its work retried elsewhere) is restarted after [`RESTART_DELAY`]; one that
//! needs more than [`MAX_RESTARTS`] restarts within [`RESTART_WINDOW`] is
//! given up on, so a child that cannot start does not spin forever. Its
//! [`Life`] tells `up` whether it ever exited, so a service that fails as
//! the fleet starts stops the fleet instead of leaving half of it running.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::os::fd::RawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
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

/// What one child is and does.
pub struct Spec {
    /// Its name in logs.
    pub name: String,
    /// The program and its arguments.
    pub program: PathBuf,
    pub args: Vec<OsString>,
    /// How long it may take to exit after SIGTERM.
    pub grace: Duration,
    /// A descriptor it inherits (the data directory's lock).
    pub inherit: Option<RawFd>,
}

/// How a supervised child has fared so far.
#[derive(Debug, Clone, Default)]
struct Life {
    /// Times it exited on its own.
    exits: u32,
    /// Its last exit status, or why it could not be started.
    last: Option<String>,
    /// Whether the supervisor gave up on it.
    given_up: bool,
}

/// A supervised child process.
pub struct Supervised {
    pid: Arc<AtomicU32>,
    life: watch::Receiver<Life>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Supervised {
    /// Starts the child and keeps it running until [`Supervised::stop`]
    /// or `kill` (which SIGKILLs it at once). On stop it gets SIGTERM and
    /// its grace to exit.
    pub fn start(spec: Spec, kill: CancellationToken) -> Supervised {
        let pid = Arc::new(AtomicU32::new(0));
        let stop = CancellationToken::new();
        let (life_tx, life) = watch::channel(Life::default());
        let task = tokio::spawn(supervise(spec, pid.clone(), life_tx, stop.clone(), kill));
        Supervised {
            pid,
            life,
            stop,
            task,
        }
    }

    /// Resolves once the child has exited on its own (or could not start),
    /// with its exit status.
    pub async fn exited(&self) -> String {
        self.wait_for(|l| l.exits > 0 || l.given_up).await
    }

    /// Resolves once the supervisor has given up on the child, with its
    /// last exit status.
    pub async fn given_up(&self) -> String {
        self.wait_for(|l| l.given_up).await
    }

    async fn wait_for(&self, done: impl Fn(&Life) -> bool) -> String {
        let mut life = self.life.clone();
        let last = life
            .wait_for(|l| done(l))
            .await
            .map(|l| l.last.clone().unwrap_or_default());
        match last {
            Ok(status) => status,
            // The supervisor ended without this (it was stopped).
            Err(_) => std::future::pending().await,
        }
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
    spec: Spec,
    pid: Arc<AtomicU32>,
    life: watch::Sender<Life>,
    stop: CancellationToken,
    kill: CancellationToken,
) {
    let Spec {
        name,
        program,
        args,
        grace,
        inherit,
    } = spec;
    let mut restarts = Restarts::default();
    loop {
        let mut command = child::command(&program);
        command.args(&args);
        if let Some(fd) = inherit {
            child::inherit(&mut command, fd);
        }
        let mut process = match command.spawn() {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(name, error = %e, "could not start; giving up on it");
                life.send_modify(|l| {
                    l.last = Some(format!("could not start: {e}"));
                    l.given_up = true;
                });
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
        let allowed = restarts.allow(Instant::now());
        life.send_modify(|l| {
            l.exits += 1;
            l.last = Some(status.clone());
            l.given_up = !allowed;
        });
        if !allowed {
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
