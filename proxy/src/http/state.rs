//! What every request handler shares: the read path, the write path, auth and settings.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

use crate::auth::Auth;
use crate::config::ServeConfig;
use crate::mutations::MutationService;
use crate::read_path::{Health, Shapes};

/// State shared by every request handler.
#[derive(Clone)]
pub struct AppState {
    pub health: watch::Receiver<Health>,
    /// The write path (`POST /v1/mutations`).
    pub writes: Arc<MutationService>,
    pub settings: Arc<ServeConfig>,
    /// The read path (`/v1/shape`).
    pub shapes: Arc<Shapes>,
    /// Who may read and write what.
    pub auth: Arc<Auth>,
    /// Cancelled when the proxy shuts down: live requests answer at once.
    pub shutdown: CancellationToken,
}
