//! The `shapesync` program, built inside the `tests` package so its integration tests can run
//! it as a separate process (and `kill -9` it): `CARGO_BIN_EXE_test-shapesync`.
//!
//! Unlike the release program it can be told to fail an fsync, and to record what each
//! fsync covered (so a test can play a power loss): see [`fsync_fault`].

use std::collections::HashMap;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Names a trigger file: while it exists, the next shape-log fsync fails (once; the file is
/// removed).
const FSYNC_FAULT_ENV: &str = "SHAPESYNC_TEST_FSYNC_FAULT";

/// Names a file to which each shape-log fsync, before it runs, adds a line `<length> <path of
/// changes.log>`: once it has succeeded, the log holds at least that much durably.
const FSYNC_RECORD_ENV: &str = "SHAPESYNC_TEST_FSYNC_RECORD";

fn main() -> std::process::ExitCode {
    if std::env::var_os(FSYNC_FAULT_ENV).is_some() || std::env::var_os(FSYNC_RECORD_ENV).is_some() {
        proxy::read_path::durability::inject_fsync_faults(fsync_fault);
    }
    proxy::cli::main()
}

/// Length of each change log when its last fsync was asked for.
static SYNCED: Mutex<Option<HashMap<PathBuf, u64>>> = Mutex::new(None);

/// Fails one fsync the way Linux can: the dirty pages are dropped (the log is cut back to
/// what its last fsync covered) and the error is reported once.
fn fsync_fault(dir: &Path) -> io::Result<()> {
    let log = proxy::storage::shape_dir::ShapeDir::at(dir).changes_log();
    let len = std::fs::metadata(&log)?.len();
    let mut synced = SYNCED.lock().unwrap_or_else(|e| e.into_inner());
    let synced = synced.get_or_insert_with(HashMap::new);
    let trigger = std::env::var_os(FSYNC_FAULT_ENV).map(PathBuf::from);
    if let Some(trigger) = trigger
        && std::fs::remove_file(&trigger).is_ok()
    {
        let keep = synced.get(&log).copied().unwrap_or(0);
        std::fs::OpenOptions::new()
            .write(true)
            .open(&log)?
            .set_len(keep)?;
        return Err(io::Error::from_raw_os_error(libc::EIO));
    }
    if let Some(record) = std::env::var_os(FSYNC_RECORD_ENV) {
        // Before the fsync: everything up to `len` was written before it, so it covers that.
        let mut record = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(record)?;
        writeln!(record, "{len} {}", log.display())?;
    }
    synced.insert(log, len);
    Ok(())
}
