//! A proxy running inside the test process (`proxy::serve::run` on a random port), for tests
//! that talk to it over HTTP as a client does.

use std::time::Duration;

use proxy::config::ServeConfig;
use tempfile::TempDir;
use tokio_util::sync::CancellationToken;

/// A running proxy with a storage directory of its own; stopped when dropped.
pub struct InProcessProxy {
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Cancelled on drop; child tokens of it stop helpers with the proxy.
    pub shutdown: CancellationToken,
    _storage: TempDir,
}

impl InProcessProxy {
    /// Serves `database_url` from a fresh storage directory with a 2-second long-poll timeout
    /// (tests wait less) and whatever `adjust` sets; returns once it listens.
    pub async fn start(database_url: &str, adjust: impl FnOnce(&mut ServeConfig)) -> Self {
        let storage = tempfile::tempdir().expect("a storage directory");
        let mut config = ServeConfig::new(
            database_url.to_owned(),
            "127.0.0.1:0".parse().expect("address"),
            storage.path().to_owned(),
        );
        config.long_poll_timeout = Duration::from_secs(2);
        adjust(&mut config);
        let shutdown = CancellationToken::new();
        let (bound_tx, bound) = tokio::sync::oneshot::channel();
        tokio::spawn(proxy::serve::run(config, shutdown.clone(), Some(bound_tx)));
        let addr = bound.await.expect("the proxy listens");
        Self {
            url: format!("http://{addr}"),
            shutdown,
            _storage: storage,
        }
    }
}

impl Drop for InProcessProxy {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}
