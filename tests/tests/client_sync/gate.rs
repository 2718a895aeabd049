//! A pass-through in front of the proxy that can hold a client's writes, so a test decides
//! what reaches the client first instead of racing: shape requests (catch-up, long-poll, SSE)
//! stream through untouched, while `POST /v1/mutations` can be held before it reaches the
//! proxy ([`Hold::Requests`]) or after the proxy answered ([`Hold::Answers`]) until
//! [`Gate::release`]. It can also end every SSE response after a number of bytes
//! ([`Gate::cut_sse_after`]), at an event boundary, as the proxy does at its SSE timeout.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::body::{Body, Bytes};
use axum::extract::{Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use serde_json::Value;
use tokio::sync::watch;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    Nothing,
    /// Mutation requests wait here; the proxy has not seen them.
    Requests,
    /// Mutation requests are applied by the proxy; its answers wait here.
    Answers,
}

pub struct Gate {
    pub url: String,
    state: Arc<GateState>,
}

struct GateState {
    upstream: String,
    http: reqwest::Client,
    hold: watch::Sender<Hold>,
    /// Mutation requests received so far.
    requests: AtomicUsize,
    /// The proxy's answers held back so far (their JSON, for the txid and LSN).
    held_answers: Mutex<Vec<Value>>,
    /// SSE responses end after the event that reaches this many bytes (0: never).
    sse_cut: AtomicUsize,
}

impl Gate {
    /// Listens on a free port and forwards to `upstream` (the proxy's base URL).
    pub async fn start(upstream: &str) -> Self {
        let state = Arc::new(GateState {
            upstream: upstream.trim_end_matches('/').to_owned(),
            // Bodies pass through as the proxy sends them (no decompression here).
            http: reqwest::Client::builder()
                .no_gzip()
                .build()
                .expect("http client"),
            hold: watch::Sender::new(Hold::Nothing),
            requests: AtomicUsize::new(0),
            held_answers: Mutex::default(),
            sse_cut: AtomicUsize::new(0),
        });
        let app = axum::Router::new()
            .fallback(forward)
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let addr = listener.local_addr().expect("address");
        tokio::spawn(async move { axum::serve(listener, app).await });
        Self {
            url: format!("http://{addr}"),
            state,
        }
    }

    pub fn hold(&self, hold: Hold) {
        self.state.hold.send_replace(hold);
    }

    /// Lets everything held go, and holds nothing from now on.
    pub fn release(&self) {
        self.hold(Hold::Nothing);
    }

    /// Mutation requests received so far (held or not).
    pub fn requests(&self) -> usize {
        self.state.requests.load(Ordering::SeqCst)
    }

    /// Ends every SSE response from now on after the event that reaches `bytes` bytes.
    pub fn cut_sse_after(&self, bytes: usize) {
        self.state.sse_cut.store(bytes, Ordering::SeqCst);
    }

    /// The answers held back so far.
    pub fn held_answers(&self) -> Vec<Value> {
        self.state.held_answers.lock().expect("answers").clone()
    }
}

async fn forward(State(gate): State<Arc<GateState>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let body = axum::body::to_bytes(body, usize::MAX)
        .await
        .unwrap_or_default();
    let is_write = parts.uri.path().ends_with("/v1/mutations");
    let mut hold = gate.hold.subscribe();
    if is_write {
        gate.requests.fetch_add(1, Ordering::SeqCst);
        let _ = hold.wait_for(|h| *h != Hold::Requests).await;
    }
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut upstream = gate
        .http
        .request(parts.method.clone(), format!("{}{path}", gate.upstream))
        .body(body);
    for (name, value) in &parts.headers {
        if ![
            header::HOST,
            header::CONTENT_LENGTH,
            header::ACCEPT_ENCODING,
        ]
        .contains(name)
        {
            upstream = upstream.header(name, value);
        }
    }
    let answer = match upstream.send().await {
        Ok(answer) => answer,
        Err(err) => return plain(StatusCode::BAD_GATEWAY, err.to_string()),
    };
    let status = answer.status();
    let headers = passed_headers(answer.headers());
    let body = if is_write {
        let bytes = answer.bytes().await.unwrap_or_default();
        if *hold.borrow() == Hold::Answers {
            if let Ok(json) = serde_json::from_slice(&bytes) {
                gate.held_answers.lock().expect("answers").push(json);
            }
            let _ = hold.wait_for(|h| *h != Hold::Answers).await;
        }
        Body::from(bytes)
    } else {
        // Streamed piece by piece: SSE events and long-polls must not wait for the end.
        let is_sse = parts
            .uri
            .query()
            .is_some_and(|q| q.contains("live_sse=true"));
        let cut = Some(gate.sse_cut.load(Ordering::SeqCst)).filter(|n| is_sse && *n > 0);
        let state = Some((answer, Cut::new(cut)));
        let pieces = futures_util::stream::unfold(state, |state| async move {
            let (mut answer, mut cut) = state?;
            loop {
                match answer.chunk().await {
                    Ok(Some(bytes)) => match cut.pass(bytes) {
                        (piece, true) => return Some((Ok(piece), None)),
                        (piece, false) if piece.is_empty() => continue,
                        (piece, false) => return Some((Ok(piece), Some((answer, cut)))),
                    },
                    Ok(None) => return None,
                    Err(err) => return Some((Err(std::io::Error::other(err)), None)),
                }
            }
        });
        Body::from_stream(pieces)
    };
    let mut response = Response::new(body);
    *response.status_mut() = status;
    *response.headers_mut() = headers;
    response
}

/// Where an SSE response is cut: after the event that reaches `limit` bytes.
struct Cut {
    limit: Option<usize>,
    sent: usize,
    /// Bytes of an event not complete yet.
    partial: Vec<u8>,
}

impl Cut {
    fn new(limit: Option<usize>) -> Self {
        Self {
            limit,
            sent: 0,
            partial: Vec::new(),
        }
    }

    /// What to pass on of `bytes`, and whether the response ends after it.
    fn pass(&mut self, bytes: Bytes) -> (Bytes, bool) {
        let Some(limit) = self.limit else {
            return (bytes, false);
        };
        self.partial.extend_from_slice(&bytes);
        let mut end = 0;
        while let Some(at) = self.partial[end..].windows(2).position(|w| w == b"\n\n") {
            end += at + 2;
            if self.sent + end >= limit {
                break;
            }
        }
        let piece: Vec<u8> = self.partial.drain(..end).collect();
        self.sent += piece.len();
        (Bytes::from(piece), self.sent >= limit)
    }
}

/// The proxy's headers minus those about this hop's framing.
fn passed_headers(from: &HeaderMap) -> HeaderMap {
    let mut headers = from.clone();
    for hop in [
        header::CONTENT_LENGTH,
        header::TRANSFER_ENCODING,
        header::CONNECTION,
    ] {
        headers.remove(hop);
    }
    headers
}

fn plain(status: StatusCode, message: String) -> Response {
    let mut response = Response::new(Body::from(message));
    *response.status_mut() = status;
    response
}

/// A synced client of `todos` whose requests go through a new gate that holds `hold`, with
/// its clock 20 s ahead (so its writes win over the test's SQL); `tune` adjusts the rest.
pub async fn gated_todos_client(
    env: &crate::support::Env,
    hold: Hold,
    tune: impl FnOnce(&mut client_sqlite::ClientConfig),
) -> (Gate, client_sqlite::Client) {
    let gate = Gate::start(&env.proxy.url).await;
    gate.hold(hold);
    let mut config = env.config("a.db", &[crate::support::todos()]);
    config.url = gate.url.clone();
    config.clock = Some(crate::support::clock_ahead(20));
    tune(&mut config);
    let client = client_sqlite::Client::open(config).await.expect("open");
    client
        .wait_synced(crate::support::WAIT)
        .await
        .expect("synced");
    (gate, client)
}
