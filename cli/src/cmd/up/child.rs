//! Starting and stopping the fleet's child processes.
//!
//! Children get their own process group, so a Ctrl-C in the terminal reaches
//! only `up`, which then stops them in order (agents, dispatcher, server).
//! On Linux they also get SIGTERM if `up` itself dies, so a crashed `up`
//! leaves nothing behind.

use std::ffi::OsStr;
use std::os::fd::RawFd;
use std::time::Duration;

use nix::sys::signal::{self, Signal};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

/// A command for a fleet child process.
pub fn command(program: impl AsRef<OsStr>) -> Command {
    let mut cmd = Command::new(program);
    cmd.stdin(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    #[cfg(target_os = "linux")]
    // SAFETY: the closure runs between fork and exec and makes a single
    // async-signal-safe system call (prctl).
    unsafe {
        cmd.pre_exec(|| {
            nix::sys::prctl::set_pdeathsig(Signal::SIGTERM).map_err(std::io::Error::from)
        });
    }
    cmd
}

/// Lets the child inherit descriptor `fd` (which Rust opens close-on-exec),
/// so that it shares what `fd` holds, such as the data directory's lock.
pub fn inherit(cmd: &mut Command, fd: RawFd) {
    // SAFETY: the closure runs between fork and exec and makes a single
    // async-signal-safe system call (fcntl) on a descriptor the parent keeps
    // open for as long as it starts children.
    unsafe {
        cmd.pre_exec(move || {
            if nix::libc::fcntl(fd, nix::libc::F_SETFD, 0) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Sends `sig` to the child, if it is still running.
pub fn send(child: &Child, sig: Signal) {
    if let Some(pid) = child.id() {
        let _ = signal::kill(Pid::from_raw(pid as i32), sig);
    }
}

/// Graceful stop: SIGTERM, wait up to `grace`, then SIGKILL. `kill` cuts the wait short.
pub async fn terminate(child: &mut Child, name: &str, grace: Duration, kill: &CancellationToken) {
    send(child, Signal::SIGTERM);
    tokio::select! {
        _ = child.wait() => return,
        _ = tokio::time::sleep(grace) => tracing::warn!(name, "did not stop within {grace:?}; killing it"),
        _ = kill.cancelled() => {}
    }
    let _ = child.kill().await;
}
