//! Who the pid in a data directory's `postmaster.pid` belongs to, before we act on it.
//!
//! The file outlives its server when the machine loses power or the server is `SIGKILL`ed, and
//! after a reboot its pid may name any process. So a live pid is only a server of ours when
//! the process is a `postgres` run by the data directory's owner whose working directory is
//! the data directory (a postmaster changes into it at start): only then may it be signalled.
//! Any other live process means the file is stale; postgres itself would refuse to start over
//! it, so it is removed.

use std::io;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

/// What the pid in `postmaster.pid` is.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum PidFileHolder {
    /// No file, or no such process (postgres removes such a file itself).
    Nobody,
    /// A postgres server of this data directory, left running by an earlier run.
    Server(u32),
    /// A live process that is not a postgres server of this data directory.
    Stranger(u32),
    /// A live process we may not inspect (or a system without `/proc`).
    Unknown(u32),
}

/// Reads `pgdata/postmaster.pid` and looks at the process it names.
pub(super) fn holder(pgdata: &Path) -> PidFileHolder {
    let Ok(text) = std::fs::read_to_string(pgdata.join("postmaster.pid")) else {
        return PidFileHolder::Nobody;
    };
    let Some(pid) = text
        .lines()
        .next()
        .and_then(|l| l.trim().parse::<libc::pid_t>().ok())
        .filter(|pid| *pid > 0)
    else {
        // Not a pid postgres wrote: nothing to signal; postgres reports the file itself.
        return PidFileHolder::Nobody;
    };
    let pid = pid.unsigned_abs();
    match inspect(pid, pgdata) {
        Ok(Some(true)) => PidFileHolder::Server(pid),
        Ok(Some(false)) => PidFileHolder::Stranger(pid),
        Ok(None) => PidFileHolder::Nobody,
        Err(_) => PidFileHolder::Unknown(pid),
    }
}

/// `Some(is a postgres server of pgdata)`, `None` when there is no such process.
fn inspect(pid: u32, pgdata: &Path) -> io::Result<Option<bool>> {
    let proc_dir = PathBuf::from(format!("/proc/{pid}"));
    if !Path::new("/proc/self").exists() {
        return Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no /proc to inspect processes",
        ));
    }
    let comm = match std::fs::read_to_string(proc_dir.join("comm")) {
        Ok(comm) => comm,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    if comm.trim_end() != "postgres" {
        return Ok(Some(false));
    }
    // A postmaster runs as the owner of its data directory (it refuses to start otherwise):
    // a postgres of another user (the system's own cluster, say) is not ours, even where we
    // may not look at its working directory.
    let (process, owner) = (std::fs::metadata(&proc_dir), std::fs::metadata(pgdata)?);
    match process {
        Ok(process) if process.uid() != owner.uid() => return Ok(Some(false)),
        Ok(_) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    }
    let cwd = match std::fs::read_link(proc_dir.join("cwd")) {
        Ok(cwd) => cwd,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    let pgdata = pgdata.canonicalize()?;
    Ok(Some(cwd == pgdata))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pid_file(dir: &Path, pid: u32) {
        std::fs::write(
            dir.join("postmaster.pid"),
            format!(
                "{pid}\n{}\n1700000000\n5432\n{}\n127.0.0.1\n  1234 5\nready   \n",
                dir.display(),
                dir.display()
            ),
        )
        .unwrap();
    }

    #[test]
    fn no_file_or_a_dead_pid_is_nobody() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(holder(dir.path()), PidFileHolder::Nobody);
        let mut child = std::process::Command::new("true").spawn().unwrap();
        let pid = child.id();
        child.wait().unwrap();
        pid_file(dir.path(), pid);
        assert_eq!(holder(dir.path()), PidFileHolder::Nobody);
        std::fs::write(dir.path().join("postmaster.pid"), "garbage\n").unwrap();
        assert_eq!(holder(dir.path()), PidFileHolder::Nobody);
    }

    #[test]
    fn a_live_process_that_is_not_postgres_is_a_stranger() {
        let dir = tempfile::tempdir().unwrap();
        // Even one whose working directory is the data directory.
        let mut child = std::process::Command::new("sleep")
            .arg("60")
            .current_dir(dir.path())
            .spawn()
            .unwrap();
        pid_file(dir.path(), child.id());
        assert_eq!(holder(dir.path()), PidFileHolder::Stranger(child.id()));
        child.kill().unwrap();
        child.wait().unwrap();
    }

    #[test]
    fn a_postgres_server_is_ours_only_in_its_own_data_directory() {
        let cluster =
            crate::ops::local_cluster::LocalCluster::temporary(Default::default()).unwrap();
        let pid = cluster.pid().unwrap();
        assert_eq!(holder(cluster.pgdata()), PidFileHolder::Server(pid));
        // Another data directory: as root, owned by root, so the server's user tells them
        // apart; then owned by the server's user, so only the working directory does.
        let elsewhere = tempfile::tempdir().unwrap();
        pid_file(elsewhere.path(), pid);
        assert_eq!(holder(elsewhere.path()), PidFileHolder::Stranger(pid));
        let owner = std::fs::metadata(cluster.pgdata()).unwrap();
        std::os::unix::fs::chown(elsewhere.path(), Some(owner.uid()), Some(owner.gid())).unwrap();
        pid_file(elsewhere.path(), pid);
        assert_eq!(holder(elsewhere.path()), PidFileHolder::Stranger(pid));
    }
}
