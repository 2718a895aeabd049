//! The operating-system user that owns a private cluster.
//!
//! `initdb` and `postgres` refuse to run as root. When we are root (CI, containers, these
//! machines), the cluster runs as the system user `postgres`, created if missing, and its data
//! directory belongs to that user. Otherwise it runs as whoever we are.

use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};

use super::ClusterError;

const SERVER_USER: &str = "postgres";

/// Who runs the server processes.
#[derive(Debug, Clone)]
pub enum ServerUser {
    /// We are not root: run as ourselves.
    Current,
    /// We are root: switch to this unprivileged user.
    System { name: String, uid: u32, gid: u32 },
}

impl ServerUser {
    /// `Current` unless we are root; then the `postgres` system user, created if missing.
    pub fn for_this_process() -> Result<Self, ClusterError> {
        // SAFETY: geteuid has no preconditions and cannot fail.
        if unsafe { libc::geteuid() } != 0 {
            return Ok(Self::Current);
        }
        if let Some(user) = lookup(SERVER_USER)? {
            return Ok(user);
        }
        create_system_user(SERVER_USER)?;
        lookup(SERVER_USER)?.ok_or_else(|| ClusterError::ServerUser {
            message: format!("user `{SERVER_USER}` is still missing after useradd"),
        })
    }

    /// A command that runs `program` as this user, with `/` as working directory (our own may
    /// not be readable by that user).
    pub fn command(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.current_dir("/").stdin(Stdio::null());
        if let Self::System { uid, gid, .. } = self {
            cmd.uid(*uid).gid(*gid);
        }
        cmd
    }

    /// Gives `path` (not recursively) to this user.
    pub fn take_ownership(&self, path: &Path) -> Result<(), ClusterError> {
        if let Self::System { uid, gid, .. } = self {
            std::os::unix::fs::chown(path, Some(*uid), Some(*gid))
                .map_err(|source| ClusterError::io(format!("chown {}", path.display()), source))?;
        }
        Ok(())
    }

    /// Whether this user can reach `dir` (it and every parent traversable).
    pub fn can_traverse(&self, dir: &Path) -> bool {
        match self {
            Self::Current => true,
            Self::System { .. } => self
                .command(Path::new("/bin/sh"))
                .args(["-c", "test -x \"$1\"", "sh"])
                .arg(dir)
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|status| status.success()),
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Self::Current => "the current user".to_owned(),
            Self::System { name, uid, .. } => format!("system user `{name}` (uid {uid})"),
        }
    }
}

fn lookup(name: &str) -> Result<Option<ServerUser>, ClusterError> {
    let out = Command::new("getent")
        .args(["passwd", name])
        .output()
        .map_err(|source| ClusterError::io("running getent passwd", source))?;
    if !out.status.success() {
        return Ok(None);
    }
    let line = String::from_utf8_lossy(&out.stdout);
    let fields: Vec<&str> = line.trim().split(':').collect();
    let parse = |i: usize| fields.get(i).and_then(|f| f.parse::<u32>().ok());
    match (parse(2), parse(3)) {
        (Some(uid), Some(gid)) => Ok(Some(ServerUser::System {
            name: name.to_owned(),
            uid,
            gid,
        })),
        _ => Err(ClusterError::ServerUser {
            message: format!("cannot read uid/gid of `{name}` from `{}`", line.trim()),
        }),
    }
}

fn create_system_user(name: &str) -> Result<(), ClusterError> {
    tracing::info!(
        user = name,
        "creating system user to run the private PostgreSQL cluster"
    );
    let status = Command::new("useradd")
        .args([
            "--system",
            "--user-group",
            "--no-create-home",
            "--home-dir",
            "/nonexistent",
            "--shell",
            "/usr/sbin/nologin",
            name,
        ])
        .status()
        .map_err(|source| ClusterError::io("running useradd", source))?;
    if status.success() {
        Ok(())
    } else {
        Err(ClusterError::ServerUser {
            message: format!(
                "`useradd {name}` failed ({status}); create an unprivileged user named `{name}` \
                 or run shapesync as a non-root user"
            ),
        })
    }
}
