//! Finding the PostgreSQL server programs (`initdb`, `postgres`) on this machine.
//!
//! Order: `$SHAPESYNC_PG_BINDIR`, then `pg_config --bindir`, then the newest
//! `/usr/lib/postgresql/*/bin` (Debian and Ubuntu), then `PATH`. `pg_config` alone is not
//! enough: Debian ships it with the client library, so its `bindir` may lack the server.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::ClusterError;

/// The directory holding `initdb` and `postgres`, and the server's major version.
#[derive(Debug, Clone)]
pub struct PgBinaries {
    bindir: PathBuf,
    major_version: u32,
}

impl PgBinaries {
    /// Finds the server binaries, or says in one sentence what to install.
    pub fn locate() -> Result<Self, ClusterError> {
        let bindir = candidate_dirs()
            .into_iter()
            .find(|dir| has_server(dir))
            .ok_or(ClusterError::BinariesNotFound)?;
        let major_version = server_major_version(&bindir)?;
        Ok(Self {
            bindir,
            major_version,
        })
    }

    pub fn bindir(&self) -> &Path {
        &self.bindir
    }

    pub fn major_version(&self) -> u32 {
        self.major_version
    }

    /// The path of one program of this installation (`initdb`, `postgres`, `pg_recvlogical`…).
    pub fn program(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }
}

fn has_server(dir: &Path) -> bool {
    dir.join("initdb").is_file() && dir.join("postgres").is_file()
}

fn candidate_dirs() -> Vec<PathBuf> {
    let mut dirs = Vec::new();
    if let Some(dir) = std::env::var_os("SHAPESYNC_PG_BINDIR") {
        dirs.push(PathBuf::from(dir));
    }
    if let Ok(out) = Command::new("pg_config").arg("--bindir").output()
        && out.status.success()
    {
        let text = String::from_utf8_lossy(&out.stdout).trim().to_owned();
        if !text.is_empty() {
            dirs.push(PathBuf::from(text));
        }
    }
    dirs.extend(debian_dirs());
    if let Some(path) = std::env::var_os("PATH") {
        dirs.extend(std::env::split_paths(&path));
    }
    dirs
}

/// `/usr/lib/postgresql/<major>/bin`, newest major first.
fn debian_dirs() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir("/usr/lib/postgresql") else {
        return Vec::new();
    };
    let mut versions: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|entry| {
            let major = entry.file_name().to_str()?.parse::<u32>().ok()?;
            Some((major, entry.path().join("bin")))
        })
        .collect();
    versions.sort_by_key(|(major, _)| std::cmp::Reverse(*major));
    versions.into_iter().map(|(_, dir)| dir).collect()
}

fn server_major_version(bindir: &Path) -> Result<u32, ClusterError> {
    let program = bindir.join("postgres");
    let out = Command::new(&program)
        .arg("--version")
        .output()
        .map_err(|source| ClusterError::io(format!("running {}", program.display()), source))?;
    let text = String::from_utf8_lossy(&out.stdout);
    parse_major_version(&text)
        .ok_or_else(|| ClusterError::UnexpectedVersion(text.trim().to_owned()))
}

/// Parses `postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)` → 15.
fn parse_major_version(text: &str) -> Option<u32> {
    let version = text.split(')').nth(1)?.split_whitespace().next()?;
    version.split(['.', 'b', 'r']).next()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::parse_major_version;

    #[test]
    fn parses_debian_and_development_versions() {
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 15.18 (Debian 15.18-0+deb12u1)\n"),
            Some(15)
        );
        assert_eq!(
            parse_major_version("postgres (PostgreSQL) 17beta2"),
            Some(17)
        );
        assert_eq!(parse_major_version("postgres (PostgreSQL) 16rc1"), Some(16));
        assert_eq!(parse_major_version("nonsense"), None);
    }
}
