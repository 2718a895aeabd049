//! Every shape the proxy knows, by handle and by definition, and the layout of the storage
//! directory: `<storage>/v1/` with the proxy's own files and `shapes/<handle>/`, one
//! [`ShapeDir`] per shape.
//!
//! The store only keeps the maps consistent; creating a shape's snapshot, routing changes to
//! it and removing it are driven by the read path (`read_path::Shapes`).

pub mod meta;
pub mod shape;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};

use shapes::handle::Handle;
use shapes::routing::ShapeId;
use shapes::schema::QualifiedName;

pub use shape::{LiveClient, Shape, ShapeState};

use super::shape_dir::ShapeDir;

/// Root of on-disk format version 1.
const LAYOUT: &str = "v1";
/// Under the root: one directory per shape.
const SHAPES_DIR: &str = "shapes";
/// Under the root: the decimal LSN where the next run starts streaming.
const RESUME_FILE: &str = "resume.lsn";
/// Under the root: the identity of the database the shapes come from.
const IDENTITY_FILE: &str = "database.json";
/// Under the root: temporary files of responses being assembled.
const SPOOL_DIR: &str = "tmp";

#[derive(Debug)]
pub struct ShapeStore {
    root: PathBuf,
    inner: Mutex<StoreState>,
}

#[derive(Debug, Default)]
struct StoreState {
    by_handle: HashMap<Handle, Arc<Shape>>,
    by_canonical: HashMap<String, Arc<Shape>>,
    next_id: u64,
    last_micros: u64,
}

impl ShapeStore {
    /// Opens (creating) the store under `storage_dir`.
    pub fn open(storage_dir: &Path) -> std::io::Result<Self> {
        let root = storage_dir.join(LAYOUT);
        std::fs::create_dir_all(root.join(SHAPES_DIR))?;
        Ok(Self {
            root,
            inner: Mutex::new(StoreState::default()),
        })
    }

    /// `<storage>/v1`: the root of this format version's layout.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `resume.lsn`: where the next run asks Postgres to start.
    pub fn resume_file(&self) -> PathBuf {
        self.root.join(RESUME_FILE)
    }

    /// `database.json`: the system id and timeline of the database the shapes come from.
    pub fn identity_file(&self) -> PathBuf {
        self.root.join(IDENTITY_FILE)
    }

    /// `tmp/`: where subset responses too large for memory wait for the socket (unnamed
    /// temporary files).
    pub fn spool_dir(&self) -> PathBuf {
        self.root.join(SPOOL_DIR)
    }

    /// Directories of shapes persisted by an earlier run.
    pub fn persisted_dirs(&self) -> std::io::Result<Vec<ShapeDir>> {
        let mut dirs: Vec<PathBuf> = std::fs::read_dir(self.root.join(SHAPES_DIR))?
            .filter_map(Result::ok)
            .map(|e| e.path())
            .filter(|p| p.is_dir())
            .collect();
        dirs.sort();
        Ok(dirs.into_iter().map(ShapeDir::at).collect())
    }

    /// Makes the removal (or creation) of shape directories durable.
    pub fn sync_shapes_dir(&self) -> std::io::Result<()> {
        std::fs::File::open(self.root.join(SHAPES_DIR))?.sync_all()
    }

    fn state(&self) -> MutexGuard<'_, StoreState> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A fresh shape id and a creation time later than every earlier one (so handles are
    /// unique even when the clock stands still or steps back).
    pub fn allocate(&self) -> (ShapeId, u64) {
        let mut state = self.state();
        state.next_id += 1;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
            .unwrap_or(0);
        state.last_micros = now.max(state.last_micros + 1);
        (ShapeId(state.next_id), state.last_micros)
    }

    /// Notes a creation time seen on disk, so new handles come after it.
    pub fn note_existing_micros(&self, micros: u64) {
        let mut state = self.state();
        state.last_micros = state.last_micros.max(micros);
    }

    pub fn dir_for(&self, handle: &Handle) -> ShapeDir {
        ShapeDir::at(self.root.join(SHAPES_DIR).join(handle.as_str()))
    }

    pub fn get(&self, handle: &Handle) -> Option<Arc<Shape>> {
        self.state().by_handle.get(handle).cloned()
    }

    pub fn get_by_definition(&self, canonical: &str) -> Option<Arc<Shape>> {
        self.state().by_canonical.get(canonical).cloned()
    }

    /// Adds `shape` unless one with the same definition exists; returns the one in the store
    /// and whether it is the new one.
    pub fn insert(&self, shape: Arc<Shape>) -> (Arc<Shape>, bool) {
        let mut state = self.state();
        if let Some(existing) = state.by_canonical.get(shape.definition.canonical()) {
            return (existing.clone(), false);
        }
        state
            .by_canonical
            .insert(shape.definition.canonical().to_owned(), shape.clone());
        state.by_handle.insert(shape.handle.clone(), shape.clone());
        (shape, true)
    }

    /// Takes a shape out of the store (its directory is the caller's to remove).
    pub fn remove(&self, handle: &Handle) -> Option<Arc<Shape>> {
        let mut state = self.state();
        let shape = state.by_handle.remove(handle)?;
        let canonical = shape.definition.canonical();
        if state
            .by_canonical
            .get(canonical)
            .is_some_and(|s| s.handle == *handle)
        {
            state.by_canonical.remove(canonical);
        }
        Some(shape)
    }

    pub fn all(&self) -> Vec<Arc<Shape>> {
        self.state().by_handle.values().cloned().collect()
    }

    /// The shapes `keep` says yes to, asked under the store's lock: a periodic task looking
    /// for a few of 100,000 shapes copies only those, not the whole registry.
    pub fn select(&self, mut keep: impl FnMut(&Shape) -> bool) -> Vec<Arc<Shape>> {
        self.state()
            .by_handle
            .values()
            .filter(|s| keep(s))
            .cloned()
            .collect()
    }

    /// The tables the shapes read, by `pg_class.oid` (each name copied once per table, not
    /// once per shape).
    pub fn tables(&self) -> std::collections::BTreeMap<u32, QualifiedName> {
        let mut tables = std::collections::BTreeMap::new();
        for shape in self.state().by_handle.values() {
            tables
                .entry(shape.table.oid)
                .or_insert_with(|| shape.definition.table().clone());
        }
        tables
    }

    pub fn on_table(&self, table: &QualifiedName) -> Vec<Arc<Shape>> {
        self.state()
            .by_handle
            .values()
            .filter(|s| s.definition.table() == table)
            .cloned()
            .collect()
    }

    pub fn len(&self) -> usize {
        self.state().by_handle.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shape_directories_are_found_again_by_a_later_run_and_the_stores_own_files_are_not() {
        let storage = tempfile::tempdir().unwrap();
        let store = ShapeStore::open(storage.path()).unwrap();
        let handles = [Handle::new(7, 2_000), Handle::new(7, 1_000)];
        for handle in &handles {
            store.dir_for(handle).create().unwrap();
        }
        std::fs::write(store.resume_file(), b"42").unwrap();
        std::fs::write(store.identity_file(), b"{}").unwrap();
        std::fs::create_dir_all(store.spool_dir()).unwrap();
        store.sync_shapes_dir().unwrap();

        let later = ShapeStore::open(storage.path()).unwrap();
        let found = later.persisted_dirs().unwrap();
        let names: Vec<_> = found.iter().map(|dir| dir.name().unwrap()).collect();
        let mut expected: Vec<_> = handles.iter().map(Handle::as_str).collect();
        expected.sort();
        assert_eq!(names, expected, "every shape, in a stable order");
        assert_eq!(found[0], later.dir_for(&handles[1]));
        assert_eq!(std::fs::read(later.resume_file()).unwrap(), b"42");
    }
}
