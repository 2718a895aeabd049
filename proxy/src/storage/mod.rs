//! Shapes on disk: each shape's directory and the names of its files (`shape_dir`), its log
//! files (`shape_log`), and the registry of shapes with the layout of the storage directory
//! (`shape_store`). Storage hands out the messages it holds; how a response frames them is
//! the HTTP layer's business. See proxy/ARCHITECTURE.md, "Shape logs on disk".

pub mod shape_dir;
pub mod shape_log;
pub mod shape_store;
pub mod watched;
