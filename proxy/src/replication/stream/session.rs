//! One replication session: setup, connect, identify, start, then pump messages from the
//! replication client through the decoder and assembler to the consumer.

use std::collections::HashSet;

use futures_util::FutureExt;

use pgwire_replication::{
    Lsn as WireLsn, ReplicationClient, ReplicationConfig, ReplicationEvent as WireEvent,
};
use shapes::lsn::{Lsn, Xid32};
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::MissedTickBehavior;
use tracing::Instrument;

use super::ReplicationError;
use super::task::{SessionEnd, StreamTask};
use crate::postgres;
use crate::replication::event::ReplicationEvent;
use crate::replication::pgoutput::{self, PgOutputMessage};
use crate::replication::setup::{ensure_publication, ensure_slot};

/// How long connecting, identifying and starting may take before the attempt counts as a
/// lost connection.
const START_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a clean close may take before the connection is dropped.
const CLOSE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Events taken from the replication client between two looks at the shutdown signal and
/// the acknowledgement timer.
const DRAIN_BATCH: usize = 256;

/// How often the consumer's flushed position is forwarded to the replication client: a
/// fraction of the status interval, so an acknowledgement waits at most a little longer than
/// one status interval.
fn ack_period(status_interval: std::time::Duration) -> std::time::Duration {
    (status_interval / 4).clamp(
        std::time::Duration::from_millis(10),
        std::time::Duration::from_millis(250),
    )
}

/// What handling one event decided.
enum Flow {
    Continue,
    Stop(SessionEnd),
}

/// How opening a session ended.
enum Opened {
    Streaming {
        client: ReplicationClient,
        connected: ReplicationEvent,
    },
    Stopped(SessionEnd),
}

/// The connection target, read from the database URL.
struct Target {
    host: String,
    unix: bool,
    port: u16,
    user: String,
    password: String,
    database: String,
}

impl StreamTask {
    /// Runs one session. `streamed` turns true once Postgres accepted START_REPLICATION and
    /// `Connected` went out.
    pub(super) async fn session(
        &mut self,
        streamed: &mut bool,
    ) -> Result<SessionEnd, ReplicationError> {
        self.sessions += 1;
        let span = tracing::info_span!("session", n = self.sessions);
        let shutdown = self.shutdown.clone();
        async {
            let target = target(&self.config.database_url)?;
            let opened = tokio::select! {
                () = shutdown.cancelled() => return Ok(SessionEnd::Shutdown),
                opened = self.open(&target) => opened?,
            };
            let (mut client, connected) = match opened {
                Opened::Streaming { client, connected } => (client, connected),
                Opened::Stopped(end) => return Ok(end),
            };
            *streamed = true;
            let result = match self.deliver(&client, connected).await {
                Flow::Stop(end) => Ok(end),
                Flow::Continue => self.pump(&mut client, &target).await,
            };
            if result.is_ok() {
                close(client).await;
            }
            result
        }
        .instrument(span)
        .await
    }

    /// Prepares the slot and publication, then starts streaming; returns the client and the
    /// `Connected` event to send (or why not to go on).
    async fn open(&mut self, target: &Target) -> Result<Opened, ReplicationError> {
        if let Flow::Stop(end) = self.prepare(target).await? {
            return Ok(Opened::Stopped(end));
        }
        let start = self.resume_from.max(*self.flushed.borrow());
        let ack = self.acks.ack().max(start);
        let config = self.client_config(target, start, ack);
        let started = tokio::time::timeout(START_TIMEOUT, self.start(config, target)).await;
        let (client, system_id, timeline) = started.map_err(|_| {
            ReplicationError::Connection(format!(
                "Postgres did not start streaming within {START_TIMEOUT:?}"
            ))
        })??;
        tracing::info!(system_id, timeline, %start, "replication streaming");
        self.set_streaming(system_id, timeline);
        let connected = ReplicationEvent::Connected {
            system_id,
            timeline,
            start_lsn: start,
        };
        Ok(Opened::Streaming { client, connected })
    }

    /// Connects, reads IDENTIFY_SYSTEM (system id and timeline), and starts streaming.
    async fn start(
        &self,
        config: ReplicationConfig,
        target: &Target,
    ) -> Result<(ReplicationClient, u64, u32), ReplicationError> {
        let wire = |e| self.wire_error(e, target);
        let mut client = ReplicationClient::connect_gated(config)
            .await
            .map_err(wire)?;
        let system = client.identify_system().await.map_err(wire)?;
        let system_id = system.system_id.parse::<u64>().map_err(|_| {
            ReplicationError::Protocol(format!(
                "IDENTIFY_SYSTEM returned system id {:?}",
                system.system_id
            ))
        })?;
        client.start().await.map_err(wire)?;
        client.wait_started().await.map_err(wire)?;
        Ok((client, system_id, system.timeline))
    }

    /// Publication and slot, over an ordinary connection.
    async fn prepare(&mut self, target: &Target) -> Result<Flow, ReplicationError> {
        let client = postgres::connect(&self.config.database_url)
            .await
            .map_err(|e| ReplicationError::from_database(e, &target.user, &self.config.slot))?;
        ensure_publication(&client, &self.config.publication).await?;
        let state = ensure_slot(&client, &self.config.slot, self.force_recreate).await?;
        drop(client);
        self.force_recreate = false;
        let lost = self.slot_lost(state);
        self.slot_expected = true;
        if let Some(lost) = lost
            && self.events.send(lost).await.is_err()
        {
            return Ok(Flow::Stop(SessionEnd::ConsumerGone));
        }
        Ok(Flow::Continue)
    }

    fn client_config(&self, target: &Target, start: Lsn, ack: Lsn) -> ReplicationConfig {
        let config = if target.unix {
            ReplicationConfig::unix(
                &target.host,
                target.port,
                &target.user,
                &target.password,
                &target.database,
                &self.config.slot,
                self.config.publication.as_str(),
            )
        } else {
            ReplicationConfig::new(
                &target.host,
                &target.user,
                &target.password,
                &target.database,
                &self.config.slot,
                self.config.publication.as_str(),
            )
            .with_port(target.port)
        };
        config
            .with_start_lsn(WireLsn(start.0))
            // Until the consumer publishes more, report what is already known durable.
            .with_ack_lsn(WireLsn(ack.0))
            .with_status_interval(self.config.status_interval)
            .with_wakeup_interval(self.config.status_interval)
            .with_buffer_size(self.config.client_buffer)
            // pgoutput formats values with the walsender's session settings: the same as
            // snapshots set, or a row would read differently from the two paths.
            .with_options(shapes::display::STARTUP_OPTIONS)
            .with_application_name(&self.config.application_name)
    }

    fn wire_error(
        &self,
        err: pgwire_replication::PgWireError,
        target: &Target,
    ) -> ReplicationError {
        ReplicationError::from_pgwire(err, &target.user, &self.config.slot)
    }

    async fn pump(
        &mut self,
        client: &mut ReplicationClient,
        target: &Target,
    ) -> Result<SessionEnd, ReplicationError> {
        let mut unknown_tags = HashSet::new();
        // The consumer's flushed position is picked up on a tick, not on every change: a
        // wake-up per commit would cost more than the small transactions themselves.
        let mut ack_tick = tokio::time::interval(ack_period(self.config.status_interval));
        ack_tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        let cancelled = self.shutdown.clone().cancelled_owned();
        tokio::pin!(cancelled);
        loop {
            let event = tokio::select! {
                biased;
                () = &mut cancelled => return Ok(SessionEnd::Shutdown),
                _ = ack_tick.tick() => {
                    if self.flushed.has_changed().is_err() {
                        return Ok(SessionEnd::ConsumerGone);
                    }
                    self.publish_ack(client);
                    continue;
                }
                event = client.recv() => event.map_err(|e| self.wire_error(e, target))?,
            };
            let Some(event) = event else {
                return Err(ReplicationError::Connection(
                    "the replication session ended without an error".to_owned(),
                ));
            };
            if let Flow::Stop(end) = self.handle(client, event, &mut unknown_tags).await? {
                return Ok(end);
            }
            // Events already waiting are taken without the select (its timer and shutdown
            // signal cost more per row than a row's decoding); a batch is bounded, so those
            // are looked at again soon.
            for _ in 0..DRAIN_BATCH {
                let Some(event) = client.recv().now_or_never() else {
                    break;
                };
                let Some(event) = event.map_err(|e| self.wire_error(e, target))? else {
                    return Err(ReplicationError::Connection(
                        "the replication session ended without an error".to_owned(),
                    ));
                };
                if let Flow::Stop(end) = self.handle(client, event, &mut unknown_tags).await? {
                    return Ok(end);
                }
            }
        }
    }

    async fn handle(
        &mut self,
        client: &ReplicationClient,
        event: WireEvent,
        unknown_tags: &mut HashSet<u8>,
    ) -> Result<Flow, ReplicationError> {
        // The client decodes Begin, Commit and logical messages itself and passes everything
        // else as raw XLogData.
        let message = match &event {
            WireEvent::XLogData {
                data, wal_start, ..
            } => {
                let message = PgOutputMessage::try_from(&data[..]).map_err(|source| {
                    ReplicationError::Decode {
                        at: Lsn(wal_start.0),
                        source,
                    }
                })?;
                if let PgOutputMessage::Unknown { tag, .. } = message
                    && unknown_tags.insert(tag)
                {
                    tracing::warn!(tag = %char::from(tag), "skipping pgoutput messages of an unknown kind");
                }
                message
            }
            WireEvent::Begin {
                final_lsn,
                xid,
                commit_time_micros,
            } => PgOutputMessage::Begin(pgoutput::Begin {
                final_lsn: Lsn(final_lsn.0),
                commit_time_micros: *commit_time_micros,
                xid: Xid32(*xid),
            }),
            WireEvent::Commit {
                lsn,
                end_lsn,
                commit_time_micros,
            } => PgOutputMessage::Commit(pgoutput::Commit {
                flags: 0,
                commit_lsn: Lsn(lsn.0),
                end_lsn: Lsn(end_lsn.0),
                commit_time_micros: *commit_time_micros,
            }),
            WireEvent::Message {
                transactional,
                lsn,
                prefix,
                content,
            } => {
                let message = ReplicationEvent::LogicalMessage {
                    transactional: *transactional,
                    lsn: Lsn(lsn.0),
                    prefix: prefix.clone(),
                    content: content.clone(),
                };
                return Ok(self.deliver(client, message).await);
            }
            WireEvent::KeepAlive { wal_end, .. } => {
                self.acks
                    .keepalive(Lsn(wal_end.0), self.assembler.in_transaction());
                self.publish_ack(client);
                return Ok(Flow::Continue);
            }
            WireEvent::StoppedAt { .. } => return Ok(Flow::Continue),
        };
        let commit_end = match &message {
            PgOutputMessage::Commit(commit) => Some(commit.end_lsn),
            _ => None,
        };
        let Some(out) = self.assembler.apply(message)? else {
            return Ok(Flow::Continue);
        };
        let flow = self.deliver(client, out).await;
        if let Some(end) = commit_end {
            self.acks.commit_delivered(end);
        }
        Ok(flow)
    }

    fn publish_ack(&mut self, client: &ReplicationClient) {
        let flushed = *self.flushed.borrow_and_update();
        self.acks.flushed(flushed);
        client.update_applied_lsn(WireLsn(self.acks.ack().0));
    }

    /// Hands an event to the consumer; while its channel is full, keeps forwarding its
    /// flushed position (the replication client keeps the session alive meanwhile).
    async fn deliver(&mut self, client: &ReplicationClient, event: ReplicationEvent) -> Flow {
        let event = match self.events.try_send(event) {
            Ok(()) => return Flow::Continue,
            Err(TrySendError::Closed(_)) => return Flow::Stop(SessionEnd::ConsumerGone),
            Err(TrySendError::Full(event)) => event,
        };
        let events = self.events.clone();
        loop {
            tokio::select! {
                biased;
                () = self.shutdown.cancelled() => return Flow::Stop(SessionEnd::Shutdown),
                permit = events.reserve() => {
                    return match permit {
                        Ok(permit) => {
                            permit.send(event);
                            Flow::Continue
                        }
                        Err(_) => Flow::Stop(SessionEnd::ConsumerGone),
                    };
                }
                changed = self.flushed.changed() => {
                    if changed.is_err() {
                        return Flow::Stop(SessionEnd::ConsumerGone);
                    }
                    self.publish_ack(client);
                }
            }
        }
    }
}

/// Ends the session cleanly (CopyDone, then the socket closes), so the walsender exits at once
/// instead of waiting for a reply. No final status update goes out: the next start uses the
/// consumer's own position anyway.
async fn close(mut client: ReplicationClient) {
    match tokio::time::timeout(CLOSE_TIMEOUT, client.shutdown()).await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::debug!(error = %err, "replication session closed with an error"),
        Err(_) => {
            tracing::debug!("replication session did not close in time; dropping it");
            client.abort();
        }
    }
}

/// Host, port, credentials and database from a `postgres://` URL or key-value string.
fn target(url: &str) -> Result<Target, ReplicationError> {
    let config: tokio_postgres::Config = url
        .parse()
        .map_err(|err| ReplicationError::Config(format!("database URL: {err}")))?;
    let (host, unix) = match config.get_hosts().first() {
        Some(tokio_postgres::config::Host::Tcp(name)) => (name.clone(), false),
        Some(tokio_postgres::config::Host::Unix(path)) => (path.display().to_string(), true),
        None => ("localhost".to_owned(), false),
    };
    let user = config
        .get_user()
        .map(str::to_owned)
        .ok_or_else(|| ReplicationError::Config("the database URL names no user".to_owned()))?;
    let password = match config.get_password() {
        Some(bytes) => String::from_utf8(bytes.to_vec()).map_err(|_| {
            ReplicationError::Config("the database password is not UTF-8".to_owned())
        })?,
        None => String::new(),
    };
    Ok(Target {
        host,
        unix,
        port: config.get_ports().first().copied().unwrap_or(5432),
        database: config.get_dbname().unwrap_or(&user).to_owned(),
        user,
        password,
    })
}
