//! Sends the outbox to `POST /v1/mutations`: in order, in batches, one batch at a time. Each
//! mutation keeps the id it was queued with, so a batch retried after a timeout or a crash is
//! applied once (the server answers a known id with its first result).

use std::sync::Arc;
use std::time::Duration;

use serde_json::json;
use shapes::mutations::{MutationResponse, Outcome};
use tokio::sync::Notify;

use crate::error::ClientError;
use crate::store::outbox::{BatchAnswer, OutboxEntry};
use crate::subscription::backoff::Backoff;
use crate::subscription::request::{self, Refusal};
use crate::subscription::{Network, SyncContext};

/// How often an idle pusher looks again (and settles writes answered without an LSN).
const IDLE_TICK: Duration = Duration::from_millis(1000);

/// Pushes until shutdown. `wake` is notified on every local write.
pub async fn run(ctx: Arc<SyncContext>, mut network: Network, wake: Arc<Notify>, batch: usize) {
    let mut backoff = Backoff::new(ctx.options.backoff_base, ctx.options.backoff_max);
    loop {
        if !network.wait_online().await {
            break;
        }
        let entries = match ctx.store.call(move |core| core.outbox_batch(batch)).await {
            Ok(entries) => entries,
            Err(_) => break,
        };
        if entries.is_empty() {
            let _ = ctx.store.call(|core| core.sweep_all()).await;
            tokio::select! {
                _ = wake.notified() => {}
                _ = tokio::time::sleep(IDLE_TICK) => {}
                _ = network.shutdown.cancelled() => break,
            }
            continue;
        }
        let client_id = ctx.store.client_id().to_owned();
        let sent = network.guard(send(&ctx, &client_id, &entries)).await;
        let answer = match sent {
            Ok(response) => BatchAnswer::Results(response),
            Err(e) if e.is_transient() => {
                tracing::debug!(error = %e, "pushing the outbox failed; retrying");
                network.sleep(backoff.next_delay(e.retry_after())).await;
                continue;
            }
            Err(ClientError::Refused { status, message }) if status != 401 && status != 403 => {
                tracing::warn!(status, message, "the server refused a batch of writes");
                BatchAnswer::Refused { status, message }
            }
            Err(e) => {
                tracing::warn!(error = %e, "the server refused the writes");
                network.sleep(backoff.next_delay(None)).await;
                continue;
            }
        };
        let progress = settles_some(&entries, &answer);
        let recorded = ctx
            .store
            .call(move |core| core.record_results(&entries, &answer))
            .await;
        if let Err(e) = recorded {
            tracing::warn!(error = %e, "recording the server's answer failed");
        }
        if progress {
            backoff.reset();
        } else {
            // Every write came back `aborted` (the server ran out of room in its transaction)
            // or unanswered: sending the same batch again at once would spin.
            tracing::debug!("the server settled none of the writes sent; retrying later");
            network.sleep(backoff.next_delay(None)).await;
        }
    }
}

/// Whether the answer settles at least one of the writes sent (anything but `aborted`).
fn settles_some(sent: &[OutboxEntry], answer: &BatchAnswer) -> bool {
    match answer {
        BatchAnswer::Results(response) => response.results.iter().any(|r| {
            !matches!(r.outcome, Outcome::Aborted) && sent.iter().any(|e| e.mutation_id == r.id)
        }),
        BatchAnswer::Refused { .. } => !sent.is_empty(),
    }
}

async fn send(
    ctx: &SyncContext,
    client_id: &str,
    entries: &[OutboxEntry],
) -> Result<MutationResponse, ClientError> {
    let mut url = ctx.base_url.clone();
    url.set_path(&format!(
        "{}/v1/mutations",
        ctx.base_url.path().trim_end_matches('/')
    ));
    let mutations: Vec<&serde_json::Value> = entries.iter().map(|e| &e.body).collect();
    let body = json!({"client_id": client_id, "mutations": mutations});
    let response = ctx
        .http
        .post(url)
        .json(&body)
        .timeout(Duration::from_secs(60))
        .send()
        .await?;
    let response = match request::check(response).await {
        Ok(response) => response,
        Err(Refusal::MustRefetch) => {
            return Err(ClientError::Protocol("409 from /v1/mutations".into()));
        }
        Err(Refusal::Error(e)) => return Err(e),
    };
    let bytes = response.bytes().await?;
    serde_json::from_slice(&bytes)
        .map_err(|e| ClientError::Protocol(format!("the answer to a batch of writes: {e}")))
}
