//! Running one `postgres` server process and stopping it again.
//!
//! The server is spawned by a dedicated *keeper* thread that does nothing but wait for it. The
//! child asks the kernel for `SIGQUIT` when its parent thread dies (`PR_SET_PDEATHSIG`); since
//! the keeper lives exactly as long as the server, a test process or `shapesync dev` that is
//! killed outright takes its server down with it instead of leaving an orphan holding a port.
//! The server gets a process group of its own, so a Ctrl-C in the terminal reaches only us and
//! we shut it down in order (fast shutdown: `SIGINT`).

use std::fs::File;
use std::io;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::mpsc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::{ClusterError, PgBinaries, ServerUser};

const READY_TIMEOUT: Duration = Duration::from_secs(60);
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// A running server process.
#[derive(Debug)]
pub(super) struct Postmaster {
    pid: u32,
    keeper: Option<JoinHandle<io::Result<ExitStatus>>>,
}

pub(super) struct Launch<'a> {
    pub bins: &'a PgBinaries,
    pub user: &'a ServerUser,
    pub pgdata: &'a Path,
    pub log_file: &'a Path,
    pub args: Vec<String>,
}

impl Postmaster {
    /// Starts the server and waits until it accepts connections.
    pub fn start(launch: Launch<'_>) -> Result<Self, ClusterError> {
        let log = open_log(launch.log_file, launch.user)?;
        let log_err = log
            .try_clone()
            .map_err(|source| ClusterError::io("duplicating the log file handle", source))?;
        let mut cmd = launch.user.command(&launch.bins.program("postgres"));
        cmd.arg("-D")
            .arg(launch.pgdata)
            .args(&launch.args)
            .stdout(Stdio::from(log))
            .stderr(Stdio::from(log_err))
            .process_group(0);
        // SAFETY: prctl is async-signal-safe and touches no memory of ours.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGQUIT) != 0 {
                    return Err(io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let (spawned_tx, spawned_rx) = mpsc::channel();
        let keeper = std::thread::Builder::new()
            .name("postmaster-keeper".to_owned())
            .spawn(move || match cmd.spawn() {
                Ok(mut child) => {
                    let _ = spawned_tx.send(Ok(child.id()));
                    child.wait()
                }
                Err(err) => {
                    let kind = err.kind();
                    let _ = spawned_tx.send(Err(err));
                    Err(io::Error::from(kind))
                }
            })
            .map_err(|source| ClusterError::io("spawning the postmaster keeper thread", source))?;
        let pid = spawned_rx
            .recv()
            .map_err(|_| ClusterError::io("starting postgres", io::ErrorKind::Other.into()))?
            .map_err(|source| ClusterError::io("starting postgres", source))?;
        let mut postmaster = Self {
            pid,
            keeper: Some(keeper),
        };
        postmaster.wait_ready(launch.pgdata, launch.log_file)?;
        Ok(postmaster)
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    fn is_running(&self) -> bool {
        self.keeper.as_ref().is_some_and(|k| !k.is_finished())
    }

    fn wait_ready(&mut self, pgdata: &Path, log_file: &Path) -> Result<(), ClusterError> {
        let deadline = Instant::now() + READY_TIMEOUT;
        let pid_file = pgdata.join("postmaster.pid");
        loop {
            if !self.is_running() {
                self.keeper.take().map(JoinHandle::join);
                return Err(ClusterError::StartFailed {
                    log_tail: log_tail(log_file),
                });
            }
            if pid_file_says_ready(&pid_file, self.pid) {
                return Ok(());
            }
            if Instant::now() > deadline {
                self.stop();
                return Err(ClusterError::StartTimedOut {
                    log_tail: log_tail(log_file),
                });
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Fast shutdown (`SIGINT`: roll back open transactions, checkpoint, exit). Escalates to
    /// `SIGQUIT` and then `SIGKILL` if the server does not stop in time.
    pub fn stop(&mut self) {
        for signal in [libc::SIGINT, libc::SIGQUIT, libc::SIGKILL] {
            if !self.is_running() {
                break;
            }
            self.signal(signal);
            let deadline = Instant::now() + STOP_TIMEOUT;
            while self.is_running() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(10));
            }
        }
        self.keeper.take().map(JoinHandle::join);
    }

    /// `SIGKILL` to the postmaster, like a crash; the next start runs crash recovery.
    pub fn kill(&mut self) {
        if self.is_running() {
            self.signal(libc::SIGKILL);
        }
        self.keeper.take().map(JoinHandle::join);
    }

    fn signal(&self, signal: libc::c_int) {
        let Ok(pid) = libc::pid_t::try_from(self.pid) else {
            return;
        };
        // SAFETY: kill has no memory-safety preconditions; the pid is our own child's, which
        // cannot be reaped (and so reused) before the keeper's wait returns.
        unsafe {
            libc::kill(pid, signal);
        }
    }
}

impl Drop for Postmaster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn open_log(path: &Path, user: &ServerUser) -> Result<File, ClusterError> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .map_err(|source| ClusterError::io(format!("opening {}", path.display()), source))?;
    user.take_ownership(path)?;
    Ok(file)
}

/// Line 8 of `postmaster.pid` is the server's status: `ready` once it accepts connections.
fn pid_file_says_ready(pid_file: &Path, pid: u32) -> bool {
    let Ok(text) = std::fs::read_to_string(pid_file) else {
        return false;
    };
    let lines: Vec<&str> = text.lines().collect();
    lines.first().and_then(|l| l.trim().parse::<u32>().ok()) == Some(pid)
        && lines.get(7).is_some_and(|l| l.trim() == "ready")
}

/// The pid recorded in a data directory's `postmaster.pid`, if that process is alive.
pub(super) fn live_pid_in(pgdata: &Path) -> Option<u32> {
    let text = std::fs::read_to_string(pgdata.join("postmaster.pid")).ok()?;
    let pid: libc::pid_t = text.lines().next()?.trim().parse().ok()?;
    // SAFETY: signal 0 only checks that the process exists.
    let alive = unsafe { libc::kill(pid, 0) } == 0;
    alive.then(|| pid.unsigned_abs())
}

/// Stops a server we did not start (left behind by a killed `shapesync dev`), waiting for it.
pub(super) fn stop_foreign(pid: u32, pgdata: &Path) -> bool {
    let Ok(raw) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill has no memory-safety preconditions.
    unsafe {
        libc::kill(raw, libc::SIGINT);
    }
    let deadline = Instant::now() + STOP_TIMEOUT;
    while Instant::now() < deadline {
        if live_pid_in(pgdata) != Some(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    false
}

pub(super) fn log_tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.len().saturating_sub(15);
    lines[start..].join("\n")
}

pub(super) fn log_path(pgdata: &Path) -> PathBuf {
    pgdata.join("postgres.log")
}
