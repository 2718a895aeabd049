//! shapesync's device client: keeps a local SQLite database in sync with shapes served by a
//! shapesync (or Electric) server and keeps working offline.
