//! Pushes of the sync protocols, through the write path of `POST /v1/mutations` (validation,
//! auth rules, tombstones, last-write-wins clocks) as one atomic batch with a precondition on
//! the locked rows. Rows the caller's token may not write are taken out and the rest runs
//! again; any other refusal is a 400 naming the row and column, and nothing is written.

use std::sync::Arc;

use serde_json::Map;

use super::caller::Caller;
use crate::auth::Access;
use crate::http::AppState;
use crate::http::error::ApiError;
use crate::mutations::MutationError;
use crate::mutations::guard::WriteGuard;
use crate::mutations::precondition::Precondition;
use crate::mutations::wire::{Mutation, MutationRequest, Op, Outcome, RefusalCode};

/// One row of a push.
#[derive(Debug, Clone)]
pub struct Write {
    /// Where the row is in the request body, for errors (`[2].newDocumentState`).
    pub field: String,
    pub mutation: Mutation,
}

impl Write {
    pub fn new(field: String, table: String, op: Op, key: Map<String, serde_json::Value>) -> Self {
        Self {
            field,
            mutation: Mutation {
                id: format!("sync-{:032x}", rand::random::<u128>()),
                table,
                op,
                key,
                values: Map::new(),
                merge: Map::new(),
                timestamp: chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            },
        }
    }
}

/// What became of each row of a push, by its index.
#[derive(Debug)]
pub struct Pushed {
    /// `None`: the token may not write the row (nothing was written for it).
    pub outcomes: Vec<Option<Outcome>>,
}

/// Why a push wrote nothing.
#[derive(Debug)]
pub enum PushFailure {
    /// The precondition failed and aborts: these rows (by index) changed on the server.
    Stale(Vec<usize>),
    Api(ApiError),
}

impl From<ApiError> for PushFailure {
    fn from(err: ApiError) -> Self {
        Self::Api(err)
    }
}

/// Applies `writes` as one atomic batch; `precondition(indices)` makes the precondition of a
/// run whose batch holds the rows `indices` (batch position → row index).
pub async fn push(
    state: &AppState,
    caller: &Caller,
    client: &str,
    writes: &[Write],
    precondition: impl Fn(&[usize]) -> Arc<dyn Precondition>,
) -> Result<Pushed, PushFailure> {
    let token = match &caller.access {
        Access::Token(token) => Some(token.clone()),
        Access::Open | Access::Secret => None,
    };
    // Mutation ids are random and never recorded (a retried push is recognised by its
    // precondition instead): the client id, which scopes recorded ids and serializes one
    // client's batches, is one of its own per push, so pushes of many devices run side by side.
    let client_id = format!(
        "{}\u{1f}{client}\u{1f}{:016x}",
        caller.subject().unwrap_or(""),
        rand::random::<u64>()
    );
    let mut included: Vec<usize> = (0..writes.len()).collect();
    let mut outcomes: Vec<Option<Outcome>> = vec![None; writes.len()];
    while !included.is_empty() {
        let request = MutationRequest {
            client_id: client_id.clone(),
            atomic: true,
            mutations: included
                .iter()
                .map(|&i| writes[i].mutation.clone())
                .collect(),
        };
        let guard = token.as_deref().map(|t| t as &dyn WriteGuard);
        let response = match state
            .writes
            .apply_checked(request, guard, Some(precondition(&included)))
            .await
        {
            Ok(response) => response,
            Err(MutationError::Stale { slots }) => {
                return Err(PushFailure::Stale(
                    slots.iter().map(|&s| included[s]).collect(),
                ));
            }
            Err(err) if err.is_transient() => {
                tracing::warn!(error = %err, "push failed: database unavailable");
                return Err(ApiError::Unavailable {
                    code: "database_unavailable",
                    message: "the database is unavailable or overloaded; retry".into(),
                    retry_after: 1,
                }
                .into());
            }
            Err(err) => return Err(ApiError::Internal(format!("push failed: {err}")).into()),
        };
        let mut forbidden = Vec::new();
        for (slot, result) in response.results.into_iter().enumerate() {
            let index = included[slot];
            match result.outcome {
                Outcome::Rejected { error } if error.code == RefusalCode::Forbidden => {
                    forbidden.push(index);
                }
                Outcome::Rejected { error } => {
                    let field = match &error.column {
                        Some(column) => format!("{}.{column}", writes[index].field),
                        None => writes[index].field.clone(),
                    };
                    return Err(ApiError::invalid(
                        field,
                        format!(
                            "{} ({}); nothing was written",
                            error.message,
                            error.code.as_str()
                        ),
                    )
                    .into());
                }
                outcome => outcomes[index] = Some(outcome),
            }
        }
        if forbidden.is_empty() {
            break;
        }
        // The batch was rolled back: run the others again without these.
        included.retain(|i| !forbidden.contains(i));
        for &i in &included {
            outcomes[i] = None;
        }
    }
    Ok(Pushed { outcomes })
}
