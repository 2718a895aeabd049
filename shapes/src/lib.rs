//! The pure core of shapesync, shared by the proxy and the SQLite client: no I/O, no async.
//!
//! It decides which rows belong to which shape, so a wrong answer here is silent data loss on
//! a device.

pub mod bytea;
pub mod definition;
pub mod display;
pub mod handle;
pub mod lsn;
pub mod mutations;
pub mod offset;
pub mod request;
pub mod routing;
pub mod schema;
pub mod table_name;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod where_clause;
pub mod wire;
