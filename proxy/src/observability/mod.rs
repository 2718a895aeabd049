//! What the proxy tells its operators: Prometheus metrics (`GET /metrics`), logs, and the
//! last warnings and errors for the status page.

pub mod logging;
pub mod prometheus;
pub mod recent_errors;
