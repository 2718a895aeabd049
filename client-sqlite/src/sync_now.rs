//! "Sync now": a position every mirror must reach, asked of the server (`GET /v1/lsn`,
//! proxy/PROTOCOL.md "Sync now"), so that a sync includes every transaction committed in the
//! database before it started — not just what the server had decoded when it last answered.

use std::time::Duration;

use serde::Deserialize;
use shapes::lsn::Lsn;

use crate::error::ClientError;
use crate::subscription::backoff::Backoff;
use crate::subscription::request::{self, Refusal};
use crate::subscription::{Network, SyncContext};

#[derive(Deserialize)]
struct LsnAnswer {
    lsn: String,
}

/// The server's fence position: once a shape's up-to-date carries a `global_last_seen_lsn` at
/// or past it, its mirror includes every transaction committed before this call. Transient
/// failures are retried with backoff (while online); a server without the endpoint (an
/// Electric server, an older shapesync) is a definite `Refused` with status 404.
pub(crate) async fn fence(ctx: &SyncContext, network: &Network) -> Result<Lsn, ClientError> {
    let mut backoff = Backoff::new(ctx.options.backoff_base, ctx.options.backoff_max);
    loop {
        let result = network.guard(ask(ctx)).await;
        match result {
            Ok(lsn) => return Ok(lsn),
            Err(ClientError::Offline) => return Err(ClientError::Offline),
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "sync-now: asking for the position failed; retrying");
                let delay = backoff.next_delay(e.retry_after());
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = network.interrupted() => return Err(ClientError::Offline),
                }
            }
            Err(e) => return Err(e),
        }
    }
}

async fn ask(ctx: &SyncContext) -> Result<Lsn, ClientError> {
    let mut url = ctx.base_url.clone();
    url.set_path(&format!(
        "{}/v1/lsn",
        ctx.base_url.path().trim_end_matches('/')
    ));
    let response = ctx
        .http
        .get(url)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let response = match request::check(response).await {
        Ok(response) => response,
        Err(Refusal::Error(e)) => return Err(e),
        Err(Refusal::MustRefetch) => {
            return Err(ClientError::Protocol("409 from /v1/lsn".into()));
        }
    };
    let body = response.bytes().await?;
    let answer: LsnAnswer = serde_json::from_slice(&body)
        .map_err(|e| ClientError::Protocol(format!("the answer of /v1/lsn: {e}")))?;
    // Decimal only, as the wire writes it (not the `X/Y` form `Lsn` also reads).
    answer
        .lsn
        .parse()
        .map(Lsn)
        .map_err(|e| ClientError::Protocol(format!("the LSN of /v1/lsn {:?}: {e}", answer.lsn)))
}
