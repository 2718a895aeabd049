//! `initdb`, and the template that makes throwaway clusters cheap.
//!
//! The first throwaway cluster on a machine runs `initdb` into a temporary directory and
//! renames it into place (atomic, so concurrent test processes never see half a template);
//! every throwaway cluster after that is a `cp -a` of it. Directories of throwaway clusters
//! whose process died without cleaning up are removed by the next one.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use super::{ClusterError, PgBinaries, SUPERUSER, ServerUser};

/// Superuser password of throwaway clusters (they listen on loopback only and live minutes).
pub(super) const PASSWORD: &str = "shapesync";

const TEMPLATE_FORMAT: u32 = 1;
const THROWAWAY_PREFIX: &str = "shapesync-pg-";

/// Runs `initdb` into `pgdata` (created, and given to the server user).
pub(super) fn initdb(
    bins: &PgBinaries,
    user: &ServerUser,
    pgdata: &Path,
    password: &str,
    no_sync: bool,
) -> Result<(), ClusterError> {
    std::fs::create_dir_all(pgdata)
        .map_err(|source| ClusterError::io(format!("creating {}", pgdata.display()), source))?;
    user.take_ownership(pgdata)?;
    let pwfile = std::env::temp_dir().join(format!("{THROWAWAY_PREFIX}pw-{}", unique_suffix()));
    std::fs::write(&pwfile, password)
        .map_err(|source| ClusterError::io("writing the initdb password file", source))?;
    let result = user.take_ownership(&pwfile).and_then(|()| {
        let mut cmd = user.command(&bins.program("initdb"));
        cmd.arg("-D")
            .arg(pgdata)
            .args([
                "-U",
                SUPERUSER,
                "--locale=C.UTF-8",
                "--encoding=UTF8",
                "--auth-local=trust",
                "--auth-host=scram-sha-256",
            ])
            .arg(format!("--pwfile={}", pwfile.display()))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if no_sync {
            cmd.arg("--no-sync");
        }
        let out = cmd
            .output()
            .map_err(|source| ClusterError::io("running initdb", source))?;
        if out.status.success() {
            Ok(())
        } else {
            Err(ClusterError::Initdb {
                status: out.status.to_string(),
                output: format!(
                    "{}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
            })
        }
    });
    let _ = std::fs::remove_file(&pwfile);
    result
}

/// A fresh copy of the template in a new temporary directory.
pub(super) fn copy_to_fresh_dir(
    bins: &PgBinaries,
    user: &ServerUser,
) -> Result<PathBuf, ClusterError> {
    remove_abandoned_clusters();
    let template = ensure_template(bins, user)?;
    let dest = std::env::temp_dir().join(format!(
        "{THROWAWAY_PREFIX}{}-{}",
        std::process::id(),
        unique_suffix()
    ));
    let status = std::process::Command::new("cp")
        .arg("-a")
        .arg(&template)
        .arg(&dest)
        .status()
        .map_err(|source| ClusterError::io("copying the cluster template", source))?;
    if !status.success() {
        return Err(ClusterError::io(
            format!(
                "cp -a {} {} failed ({status})",
                template.display(),
                dest.display()
            ),
            std::io::ErrorKind::Other.into(),
        ));
    }
    Ok(dest)
}

fn ensure_template(bins: &PgBinaries, user: &ServerUser) -> Result<PathBuf, ClusterError> {
    let owner = match user {
        ServerUser::Current => format!("uid{}", current_uid()),
        ServerUser::System { uid, .. } => format!("uid{uid}"),
    };
    let template = std::env::temp_dir().join(format!(
        "shapesync-template-v{TEMPLATE_FORMAT}-pg{}-{owner}",
        bins.major_version()
    ));
    if template.join("PG_VERSION").is_file() {
        return Ok(template);
    }
    let staging = std::env::temp_dir().join(format!(
        "{THROWAWAY_PREFIX}{}-template-{}",
        std::process::id(),
        unique_suffix()
    ));
    initdb(bins, user, &staging, PASSWORD, true)?;
    if std::fs::rename(&staging, &template).is_err() {
        // Another process won the race; its template is as good as ours.
        let _ = std::fs::remove_dir_all(&staging);
    }
    Ok(template)
}

/// Removes `shapesync-pg-<pid>-…` directories whose process is gone.
fn remove_abandoned_clusters() {
    let Ok(entries) = std::fs::read_dir(std::env::temp_dir()) else {
        return;
    };
    for entry in entries.filter_map(Result::ok) {
        let name = entry.file_name();
        let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(THROWAWAY_PREFIX)) else {
            continue;
        };
        let Some(pid) = rest
            .split('-')
            .next()
            .and_then(|p| p.parse::<libc::pid_t>().ok())
        else {
            continue;
        };
        // SAFETY: signal 0 only checks that the process exists.
        let alive = unsafe { libc::kill(pid, 0) } == 0
            || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM);
        if !alive {
            let _ = std::fs::remove_dir_all(entry.path());
        }
    }
}

fn unique_suffix() -> String {
    static SEQ: AtomicU32 = AtomicU32::new(0);
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    format!("{}-{nanos}", SEQ.fetch_add(1, Ordering::Relaxed))
}

fn current_uid() -> u32 {
    // SAFETY: getuid has no preconditions and cannot fail.
    unsafe { libc::getuid() }
}
