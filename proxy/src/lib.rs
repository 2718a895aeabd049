//! shapesync's proxy: logical replication from Postgres into shape logs, served over the
//! ElectricSQL HTTP Shape API v1, plus writes, auth and operations.
//!
//! The `shapesync` binary (`main.rs`) is a thin layer over this library.

pub mod auth;
pub mod catalog;
pub mod change_writer;
pub mod cli;
pub mod commit_watch;
pub mod config;
pub mod database;
pub mod database_ctype;
pub mod dev;
pub mod durability;
pub mod engine;
pub mod http;
pub mod http_server;
pub mod local_cluster;
pub mod migrations;
pub mod monitoring;
pub mod mutations;
pub mod operations;
pub mod proxy_schema;
pub mod replication;
pub mod server;
pub mod shape_log;
pub mod shape_store;
pub mod snapshot;
pub mod telemetry;
pub mod tombstones;
