//! Logical replication: the read half of shapesync's path from the WAL to shape logs.
pub mod assembly;
pub mod event;
pub mod pgoutput;
pub mod setup;
