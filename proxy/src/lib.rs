//! shapesync's proxy: logical replication from Postgres into shape logs, served over the
//! ElectricSQL HTTP Shape API v1, plus writes, auth and operations.
//!
//! The `shapesync` binary (`main.rs`) is a thin layer over this library.

// The data path: the WAL in, shape logs on disk, HTTP out.
pub mod http;
pub mod read_path;
pub mod replication;
pub mod storage;
// The write path.
pub mod auth;
pub mod mutations;
// Shared by both paths.
pub mod config;
pub mod postgres;
pub mod tombstones;
// Running it.
pub mod cli;
pub mod observability;
pub mod ops;
pub mod serve;
pub mod takeover;
