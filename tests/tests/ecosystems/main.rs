//! shapesync as the server of RxDB and WatermelonDB apps, proven with their real clients from
//! npm (tests/ecosystems) against a real Postgres and proxy: every scenario ends with each
//! client's database equal to what Postgres holds, and Postgres equal to what the writes say.

mod mixed;
mod preflight;
mod rxdb_browser;
mod rxdb_node;
mod support;
mod watermelon;
