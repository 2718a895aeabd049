//! One shape's directory, `<storage>/v1/shapes/<handle>/`, and the names of the files in it.
//!
//! Every other module asks a [`ShapeDir`] for a shape's files instead of joining their names,
//! so the layout (proxy/ARCHITECTURE.md, "Shape logs on disk") is spelled here once.

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

/// `shape.json`: the shape's definition and state (`shape_store::meta::ShapeMeta`).
const META_FILE: &str = "shape.json";
/// `snapshot.log`: the initial rows (`shape_log::snapshot_file`).
const SNAPSHOT_FILE: &str = "snapshot.log";
/// `changes.log`: the log after the snapshot (`shape_log`).
const CHANGES_FILE: &str = "changes.log";
/// `changes.log.compact`: the compacted log being built, renamed over `changes.log` once it
/// is durable (`shape_log::compaction`).
const COMPACTING_FILE: &str = "changes.log.compact";
/// `capture.log`: transactions captured while the snapshot runs (the router's capture).
const CAPTURE_FILE: &str = "capture.log";

/// The directory of one shape.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ShapeDir {
    path: PathBuf,
}

impl ShapeDir {
    /// The shape directory at `path` (nothing is created).
    pub fn at(path: impl Into<PathBuf>) -> Self {
        Self { path: path.into() }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The directory's own name: the shape's handle, for directories the store made.
    pub fn name(&self) -> Option<&str> {
        self.path.file_name().and_then(|n| n.to_str())
    }

    /// Creates the directory (and its parents).
    pub fn create(&self) -> io::Result<()> {
        std::fs::create_dir_all(&self.path)
    }

    /// Removes the directory and everything in it.
    pub fn remove(&self) -> io::Result<()> {
        std::fs::remove_dir_all(&self.path)
    }

    pub fn meta_file(&self) -> PathBuf {
        self.path.join(META_FILE)
    }

    pub fn snapshot_log(&self) -> PathBuf {
        self.path.join(SNAPSHOT_FILE)
    }

    pub fn changes_log(&self) -> PathBuf {
        self.path.join(CHANGES_FILE)
    }

    pub fn compacting_log(&self) -> PathBuf {
        self.path.join(COMPACTING_FILE)
    }

    /// Makes the directory's entries (a rename in it) durable.
    pub fn sync(&self) -> io::Result<()> {
        std::fs::File::open(&self.path)?.sync_all()
    }

    pub fn capture_log(&self) -> PathBuf {
        self.path.join(CAPTURE_FILE)
    }
}

/// Replaces the file at `path` with `bytes` atomically: written to `<path>.tmp`, fsynced, then
/// renamed over it, so a crash leaves either the old file or the new one, never half of one.
pub fn replace_file(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let pending = PendingFile::write(path, bytes)?;
    pending.file().sync_all()?;
    pending.install()
}

/// A replacement for a file, written beside it (`<path>.tmp`) and not yet renamed over it:
/// [`replace_file`] in two steps, so that a caller can choose whether to sync it before it is
/// [`install`](Self::install)ed (a new shape's first `shape.json` is not synced).
#[derive(Debug)]
pub struct PendingFile {
    path: PathBuf,
    tmp: PathBuf,
    file: std::fs::File,
}

impl PendingFile {
    /// Writes `bytes` to `<path>.tmp` (nothing is synced).
    pub fn write(path: &Path, bytes: &[u8]) -> io::Result<Self> {
        use std::io::Write;
        let mut tmp = OsString::from(path.as_os_str());
        tmp.push(".tmp");
        let tmp = PathBuf::from(tmp);
        let mut file = std::fs::File::create(&tmp)?;
        file.write_all(bytes)?;
        Ok(Self {
            path: path.to_owned(),
            tmp,
            file,
        })
    }

    /// The written file, open: sync it through this descriptor (it is the one the writes went
    /// through, so a write-back error is reported to it).
    pub fn file(&self) -> &std::fs::File {
        &self.file
    }

    /// Renames the file over `path`. Make it durable first.
    pub fn install(self) -> io::Result<()> {
        std::fs::rename(&self.tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The names are the on-disk format: a directory written by an earlier version must
    /// still be found.
    #[test]
    fn files_have_their_format_names_inside_the_directory() {
        let dir = ShapeDir::at("/storage/v1/shapes/123-456");
        assert_eq!(dir.name(), Some("123-456"));
        let files = [
            (dir.meta_file(), "shape.json"),
            (dir.snapshot_log(), "snapshot.log"),
            (dir.changes_log(), "changes.log"),
            (dir.capture_log(), "capture.log"),
            (dir.compacting_log(), "changes.log.compact"),
        ];
        for (path, name) in files {
            assert_eq!(path.parent(), Some(dir.path()), "{name}");
            assert_eq!(path.file_name().and_then(|n| n.to_str()), Some(name));
        }
    }

    #[test]
    fn a_directory_is_created_and_removed_with_its_files() {
        let root = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(root.path().join("shapes").join("h"));
        dir.create().unwrap();
        std::fs::write(dir.changes_log(), b"x").unwrap();
        std::fs::write(dir.snapshot_log(), b"y").unwrap();
        dir.remove().unwrap();
        assert!(!dir.path().exists());
        assert!(
            root.path().join("shapes").is_dir(),
            "only the shape's own directory"
        );
        assert_eq!(
            dir.remove().unwrap_err().kind(),
            io::ErrorKind::NotFound,
            "removing twice says so"
        );
    }

    #[test]
    fn replacing_a_file_leaves_the_new_contents_and_no_temporary_file() {
        let root = tempfile::tempdir().unwrap();
        let dir = ShapeDir::at(root.path());
        replace_file(&dir.meta_file(), b"old").unwrap();
        replace_file(&dir.meta_file(), b"new").unwrap();
        assert_eq!(std::fs::read(dir.meta_file()).unwrap(), b"new");
        let names: Vec<_> = std::fs::read_dir(root.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["shape.json"]);
    }

    #[test]
    fn directories_order_and_compare_by_path() {
        let a = ShapeDir::at("/s/a");
        let b = ShapeDir::at("/s/b");
        assert!(a < b);
        assert_eq!(a, ShapeDir::at(PathBuf::from("/s/a")));
    }
}
