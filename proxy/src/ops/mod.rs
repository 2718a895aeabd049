//! What operators run besides `serve`: `shapesync dev` and its private cluster (also the
//! test harness), the example app's migrations, and `prepare`/`uninstall`.

pub mod dev;
pub mod install;
pub mod local_cluster;
pub mod migrations;
