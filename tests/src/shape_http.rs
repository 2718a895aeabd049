//! Single requests to `/v1/shape` at the wire, for tests that check exact statuses, headers
//! and bodies: plain responses, and server-sent event streams read event by event.

use std::time::Duration;

use reqwest::header::HeaderMap;
use serde_json::Value;

/// A response, its body parsed as JSON when it is JSON.
#[derive(Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Value,
}

impl Reply {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `control` values of the body's messages, in order.
    pub fn controls(&self) -> Vec<String> {
        controls(&self.body)
    }

    /// The change messages of the body.
    pub fn changes(&self) -> Vec<Value> {
        self.body
            .as_array()
            .into_iter()
            .flatten()
            .filter(|m| m.get("key").is_some())
            .cloned()
            .collect()
    }
}

/// The `control` values of a list of messages.
pub fn controls(messages: &Value) -> Vec<String> {
    messages
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|m| m["headers"]["control"].as_str().map(str::to_owned))
        .collect()
}

/// `GET /v1/shape?<query>` on the proxy at `base_url`.
pub async fn get(http: &reqwest::Client, base_url: &str, query: &str) -> Reply {
    let response = http
        .get(format!("{base_url}/v1/shape?{query}"))
        .send()
        .await
        .expect("shape request");
    let status = response.status().as_u16();
    let headers = response.headers().clone();
    let text = response.text().await.expect("body");
    let body = if text.is_empty() {
        Value::Null
    } else {
        serde_json::from_str(&text).unwrap_or(Value::String(text))
    };
    Reply {
        status,
        headers,
        body,
    }
}

/// An open server-sent events response.
pub struct EventStream {
    pub status: u16,
    pub headers: HeaderMap,
    response: reqwest::Response,
    buffer: String,
}

/// One piece of an event stream.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    Data(Value),
    /// A `: comment` line (keep-alive).
    Comment(String),
    /// The server closed the stream.
    Closed,
}

impl EventStream {
    /// Opens `GET /v1/shape?<query>` (which should ask for `live_sse=true`).
    pub async fn open(http: &reqwest::Client, base_url: &str, query: &str) -> Self {
        let response = http
            .get(format!("{base_url}/v1/shape?{query}"))
            .header("accept", "text/event-stream")
            .send()
            .await
            .expect("SSE request");
        Self {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            response,
            buffer: String::new(),
        }
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The next event or comment; panics after `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Event {
        tokio::time::timeout(timeout, self.next_inner())
            .await
            .unwrap_or_else(|_| panic!("no SSE event within {timeout:?}"))
    }

    async fn next_inner(&mut self) -> Event {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                let block = block.trim_end();
                if let Some(comment) = block.strip_prefix(':') {
                    return Event::Comment(comment.trim().to_owned());
                }
                let data: String = block
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(str::trim_start)
                    .collect::<Vec<_>>()
                    .join("\n");
                let value = serde_json::from_str(&data)
                    .unwrap_or_else(|e| panic!("SSE data is not JSON ({e}): {data}"));
                return Event::Data(value);
            }
            match self.response.chunk().await {
                Ok(Some(bytes)) => self.buffer.push_str(&String::from_utf8_lossy(&bytes)),
                Ok(None) | Err(_) => return Event::Closed,
            }
        }
    }

    /// Messages up to and including the next up-to-date (keep-alives skipped).
    pub async fn until_up_to_date(&mut self, timeout: Duration) -> Vec<Value> {
        let deadline = tokio::time::Instant::now() + timeout;
        let mut messages = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match self.next(left).await {
                Event::Data(message) => {
                    let done = message["headers"]["control"] == "up-to-date";
                    messages.push(message);
                    if done {
                        return messages;
                    }
                }
                Event::Comment(_) => {}
                Event::Closed => panic!("the SSE stream closed before an up-to-date"),
            }
        }
    }
}

/// `global_last_seen_lsn` of the last up-to-date among `messages`.
pub fn global_last_seen(messages: &[Value]) -> Option<u64> {
    messages
        .iter()
        .rev()
        .find(|m| m["headers"]["control"] == "up-to-date")
        .and_then(|m| m["headers"]["global_last_seen_lsn"].as_str())
        .and_then(|l| l.parse().ok())
}
