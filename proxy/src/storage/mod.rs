//! Shapes on disk: each shape's log files (`shape_log`) and the registry of shapes and
//! their directories (`shape_store`). See proxy/ARCHITECTURE.md, "Shape logs on disk".

pub mod shape_log;
pub mod shape_store;
