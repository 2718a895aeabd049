//! One module per scenario; each documents what it measures and how.

pub mod cdn;
pub mod compaction;
pub mod ecosystem_pull;
pub mod ecosystem_push;
pub mod fanout;
pub mod initial_sync;
pub mod instructions;
pub mod latency;
pub mod mutations;
pub mod peer;
pub mod routing;
pub mod shapes;
pub mod sse_idle;
pub mod subquery;
pub mod throughput;
