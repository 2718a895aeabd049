//! Catch-up and long-poll requests: a JSON array body, streamed.

use futures_util::StreamExt as _;
use reqwest::Response;
use shapes::handle::Handle;
use shapes::lsn::Lsn;

use super::json_array::ArraySplitter;
use super::message::{self, Message};
use super::request::{self, Mode, Refusal};
use super::{ShapeSync, SyncError};
use crate::error::ClientError;
use crate::schema_mapping::ShapeSchema;
use crate::status::ShapePhase;
use crate::store::{BatchStep, ClientEvent, Incoming};

impl ShapeSync {
    /// One request in `mode`, applied to the store as it streams.
    pub(super) async fn request(&mut self, mode: Mode) -> Result<(), SyncError> {
        let url = request::shape_url(
            &self.ctx.base_url,
            &self.spec,
            &self.offset,
            self.handle.as_ref(),
            mode,
            self.cursor.as_deref(),
        );
        tracing::debug!(shape = self.spec.name, %url, "shape request");
        let mut builder = self.ctx.http.get(url);
        if mode == Mode::Sse {
            builder = builder.header("accept", "text/event-stream");
        }
        let response = builder.send().await.map_err(ClientError::from)?;
        let response = match request::check(response).await {
            Ok(response) => response,
            Err(Refusal::MustRefetch) => return Err(SyncError::MustRefetch),
            Err(Refusal::Error(ClientError::Refused { .. })) if mode == Mode::Sse => {
                return Err(SyncError::SseUnsupported);
            }
            Err(Refusal::Error(e)) => return Err(e.into()),
        };
        let headers = response.headers().clone();
        if let Some(cursor) = request::header(&headers, "electric-cursor") {
            self.cursor = Some(cursor.to_owned());
        }
        let handle = request::required(&headers, "electric-handle")?;
        let handle: Handle = handle.parse().map_err(|e| {
            ClientError::Protocol(format!("the electric-handle header {handle:?} {e}"))
        })?;
        if self.offset == "-1" {
            let schema_json = request::required(&headers, "electric-schema")?.to_owned();
            self.begin_reset(schema_json).await?;
        } else if self.schema.is_none() {
            let schema_json = request::required(&headers, "electric-schema")?;
            self.schema = Some(parse_schema(&self.spec.name, schema_json)?);
        }
        match mode {
            Mode::Sse => self.read_sse(response, handle).await,
            Mode::CatchUp | Mode::LongPoll => {
                let offset = request::required(&headers, "electric-offset")?.to_owned();
                self.read_body(response, handle, offset).await
            }
        }
    }

    async fn begin_reset(&mut self, schema_json: String) -> Result<(), SyncError> {
        self.schema = Some(parse_schema(&self.spec.name, &schema_json)?);
        self.send_step(BatchStep::Reset { schema_json }).await?;
        Ok(())
    }

    async fn read_body(
        &mut self,
        response: Response,
        handle: Handle,
        offset: String,
    ) -> Result<(), SyncError> {
        let schema = self
            .schema
            .clone()
            .ok_or_else(|| ClientError::Protocol("no electric-schema yet".into()))?;
        let mut splitter = ArraySplitter::with_limit(self.ctx.options.max_message_bytes);
        let mut stream = response.bytes_stream();
        let mut end = None;
        let idle = self.ctx.options.idle_timeout;
        while let Some(chunk) = tokio::time::timeout(idle, stream.next())
            .await
            .map_err(|_| ClientError::Network("the server went silent".into()))?
        {
            let chunk = chunk.map_err(ClientError::from)?;
            let pending = &mut self.pending;
            splitter.feed(&chunk, |bytes| {
                match message::decode(bytes, &schema)
                    .map_err(|e| ClientError::Protocol(e.to_string()))?
                {
                    Message::Change(change, _) => pending.push(Incoming::Change(change)),
                    Message::Move(event, _) => pending.push(Incoming::Move(event)),
                    Message::Other => {}
                    last => end = Some(last),
                }
                Ok::<(), SyncError>(())
            })?;
            if self.pending.len() >= self.ctx.options.chunk_rows {
                self.flush().await?;
            }
        }
        splitter.finish()?;
        match end {
            Some(Message::MustRefetch) => Err(SyncError::MustRefetch),
            Some(Message::UpToDate {
                global_last_seen_lsn,
            }) => self.commit(handle, offset, global_last_seen_lsn).await,
            _ => {
                self.flush().await?;
                self.handle = Some(handle);
                self.offset = offset;
                Ok(())
            }
        }
    }

    /// Hands the rows read so far to the store.
    pub(super) async fn flush(&mut self) -> Result<(), SyncError> {
        if self.pending.is_empty() {
            return Ok(());
        }
        let incoming = std::mem::take(&mut self.pending);
        let n = incoming
            .iter()
            .filter(|i| matches!(i, Incoming::Change(_)))
            .count() as u64;
        self.send_step(BatchStep::Apply(incoming)).await?;
        self.ctx.status.add_rows(n);
        if !self.up_to_date {
            self.ctx
                .status
                .set_phase(&self.spec.name, ShapePhase::Syncing);
        }
        Ok(())
    }

    /// Sends a step and waits for the previous one (one step in flight).
    async fn send_step(&mut self, step: BatchStep) -> Result<(), ClientError> {
        let rx = self.ctx.store.batch(&self.spec.name, step)?;
        self.batch_open = true;
        if let Some(previous) = self.in_flight.replace(rx) {
            previous.await.map_err(|_| ClientError::Closed)??;
        }
        Ok(())
    }

    /// Up-to-date: everything read is committed with the new position.
    pub(super) async fn commit(
        &mut self,
        handle: Handle,
        offset: String,
        global_lsn: Option<Lsn>,
    ) -> Result<(), SyncError> {
        self.flush().await?;
        self.send_step(BatchStep::Commit {
            handle: handle.clone(),
            offset: offset.clone(),
            global_lsn,
        })
        .await?;
        if let Some(last) = self.in_flight.take() {
            last.await.map_err(|_| ClientError::Closed)??;
        }
        self.batch_open = false;
        self.handle = Some(handle);
        self.offset = offset;
        self.committed = (self.handle.clone(), self.offset.clone());
        self.up_to_date = true;
        if let Some(lsn) = global_lsn {
            self.synced = self.synced.max(lsn);
            self.ctx.status.set_synced(&self.spec.name, self.synced);
        }
        self.ctx.status.up_to_date(&self.spec.name);
        for priority in self.ctx.status.set_ready(&self.spec.name, true) {
            let _ = self.ctx.events.send(ClientEvent::PriorityReady {
                priority,
                lsn: self.synced,
            });
        }
        Ok(())
    }
}

fn parse_schema(shape: &str, json: &str) -> Result<ShapeSchema, ClientError> {
    ShapeSchema::parse(json).map_err(|e| ClientError::Shape {
        name: shape.to_owned(),
        message: e.to_string(),
    })
}
