//! One fleet per data directory.
//!
//! Two nats-servers on one JetStream store corrupt each other's state, and
//! two log aggregators on one index fight over it, so `up` holds an OS lock
//! (`flock`) on `<data-dir>/fleet.lock` while it runs, with its pid in the
//! file for the error a second fleet gets. The children that write into the
//! directory (nats-server, the log aggregator) inherit the lock, so it lasts
//! until the last of them has exited, even when `up` itself was killed; and
//! since the kernel drops it with the last process holding it, a killed
//! fleet never leaves a stale lock behind.

use std::fs::{File, OpenOptions, TryLockError};
use std::io::{Read, Seek, Write};
use std::os::fd::{AsRawFd, RawFd};
use std::path::Path;
use std::time::Duration;

use anyhow::Context;

/// How long to wait for the children of a fleet whose `up` is gone to let go.
const ORPHANS_WAIT: Duration = Duration::from_secs(20);

/// The held lock; released when dropped (and its inheritors have exited).
pub struct DataDirLock {
    file: File,
}

impl DataDirLock {
    /// Creates `data_dir` if needed and locks it for this fleet.
    pub async fn acquire(data_dir: &Path) -> anyhow::Result<DataDirLock> {
        std::fs::create_dir_all(data_dir)
            .with_context(|| format!("while creating {}", data_dir.display()))?;
        // Fleet state is never source: keep it out of version control.
        let ignore = data_dir.join(".gitignore");
        if !ignore.exists() {
            std::fs::write(&ignore, "*\n")
                .with_context(|| format!("while writing {}", ignore.display()))?;
        }
        let path = data_dir.join("fleet.lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .with_context(|| format!("while opening {}", path.display()))?;
        let deadline = tokio::time::Instant::now() + ORPHANS_WAIT;
        let mut said = false;
        loop {
            match file.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) => {}
                Err(TryLockError::Error(e)) => {
                    return Err(e).with_context(|| format!("while locking {}", path.display()))
                }
            }
            let holder = holder(&mut file);
            match holder {
                // Its `up` is gone: what holds the lock are its nats-server
                // or log aggregator, still stopping. Let them finish.
                Some(pid) if !alive(pid) && tokio::time::Instant::now() < deadline => {
                    if !said {
                        tracing::info!(
                            "waiting for the processes of the previous fleet in {} (pid {pid}, gone) to stop",
                            data_dir.display()
                        );
                        said = true;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                _ => anyhow::bail!(
                    "the data directory {} is in use by another fleet ({}): stop that fleet first, or \
                     give this one a directory of its own with --data-dir (and a nats-server port of \
                     its own with --port)",
                    data_dir.display(),
                    match holder {
                        Some(pid) if alive(pid) => format!("clawfleet up, pid {pid}"),
                        Some(pid) => format!("started by pid {pid}, whose processes are still stopping"),
                        None => "pid unknown".to_string(),
                    }
                ),
            }
        }
        file.set_len(0)
            .and_then(|()| file.rewind())
            .and_then(|()| writeln!(file, "{}", std::process::id()))
            .with_context(|| format!("while writing {}", path.display()))?;
        Ok(DataDirLock { file })
    }

    /// The lock file's descriptor, for children that must hold the lock too.
    pub fn fd(&self) -> RawFd {
        self.file.as_raw_fd()
    }
}

/// The pid written by the fleet holding the lock, if it wrote one.
fn holder(file: &mut File) -> Option<i32> {
    let mut text = String::new();
    file.rewind().ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok().filter(|pid| *pid > 0)
}

/// Whether process `pid` exists and is not a zombie (a killed `up` whose
/// parent has not reaped it yet holds nothing).
fn alive(pid: i32) -> bool {
    use nix::errno::Errno;
    if let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // `pid (comm) state ...`; comm may hold spaces and parentheses.
        if let Some((_, rest)) = stat.rsplit_once(')') {
            return !rest.trim_start().starts_with('Z');
        }
    }
    match nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None) {
        Ok(()) => true,
        // It exists, under another user.
        Err(Errno::EPERM) => true,
        Err(_) => false,
    }
}
