//! What the proxy tells its operators: Prometheus metrics (`GET /metrics`) and logs.

pub mod logging;
pub mod prometheus;
