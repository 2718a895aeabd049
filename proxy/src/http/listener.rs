//! Accepting HTTP connections (HTTP/1.1, and HTTP/2 with prior knowledge) and serving the
//! router on them, with a graceful shutdown.
//!
//! Our own accept loop rather than `axum::serve`, for one setting it cannot make: hyper's
//! per-connection read buffer is capped at 8 KiB. A shape client sends one small request per
//! connection and then, live, only waits; the default buffer grows to 16 KiB and stays, which
//! is most of what an idle SSE connection costs.

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::Request;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::{TcpListener, TcpSocket};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

/// hyper's smallest allowed read buffer.
const READ_BUFFER: usize = 8 * 1024;
/// How long open connections get to finish after shutdown starts.
const DRAIN: Duration = Duration::from_secs(10);

/// How many connections may wait to be accepted.
const BACKLOG: u32 = 4096;

/// Listens on `addr`. With `reuse_port` (`SO_REUSEPORT`), another process of the same user
/// may listen on the same port at the same time (the next version, during a rolling deploy
/// on one host): the kernel spreads new connections over both until one closes.
pub fn bind(addr: SocketAddr, reuse_port: bool) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    if reuse_port {
        socket.set_reuseport(true)?;
    }
    socket.bind(addr)?;
    socket.listen(BACKLOG)
}

/// Serves the router in `apps` (each request goes to the latest one: a standby hands over
/// to its successor without closing connections) on `listener` until `shutdown` is
/// cancelled, then lets open requests finish (live requests answer at once on shutdown) for
/// up to [`DRAIN`].
pub async fn serve(
    listener: TcpListener,
    apps: watch::Receiver<Router>,
    shutdown: CancellationToken,
) {
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(READ_BUFFER)
        .timer(TokioTimer::new())
        .header_read_timeout(Duration::from_secs(30));
    let graceful = GracefulShutdown::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors, typically: back off instead of spinning.
                    tracing::warn!(error = %err, "cannot accept a connection");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let apps = apps.clone();
        let service = hyper::service::service_fn(move |request: Request<Incoming>| {
            let app = apps.borrow().clone();
            app.oneshot(request.map(Body::new))
        });
        let connection = builder
            .serve_connection_with_upgrades(TokioIo::new(stream), service)
            .into_owned();
        let connection = graceful.watch(connection);
        let client = crate::observability::prometheus::ClientConnection::open();
        tokio::spawn(async move {
            let _client = client;
            if let Err(err) = connection.await {
                tracing::debug!(%peer, error = %err, "connection ended with an error");
            }
        });
    }
    drop(listener);
    tokio::select! {
        () = graceful.shutdown() => {}
        () = tokio::time::sleep(DRAIN) => {
            tracing::warn!("connections still open after the shutdown grace period");
        }
    }
}
