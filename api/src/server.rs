//! The HTTP/1 server under the router: a client that trickles its request headers is cut off
//! after `API_HEADER_TIMEOUT_SECS`, at most `API_MAX_CONNECTIONS` connections are served at
//! once (the rest wait in the listen backlog), each request carries its peer address for the
//! client-IP extractor, and shutdown lets the requests in flight finish.

use std::{io, net::SocketAddr, sync::Arc, time::Duration};

use axum::{Router, extract::ConnectInfo};
use hyper::{body::Incoming, server::conn::http1};
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tokio_util::sync::CancellationToken;
use tower_service::Service;

/// What the server enforces.
#[derive(Clone, Copy, Debug)]
pub struct Limits {
    /// Longest time to receive a request's headers (`API_HEADER_TIMEOUT_SECS`).
    pub header_timeout: Duration,
    /// Connections served at once (`API_MAX_CONNECTIONS`).
    pub max_connections: usize,
    /// How long shutdown waits for requests in flight.
    pub drain: Duration,
}

/// Serves `app` on `listener` until `shutdown` is cancelled, then waits up to `limits.drain`
/// for the connections' requests in flight.
pub async fn serve(listener: TcpListener, app: Router, limits: Limits, shutdown: CancellationToken) -> io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();
    let mut http = http1::Builder::new();
    http.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
    loop {
        // A slot first: at the cap the server stops accepting, and the kernel's backlog holds
        // the next clients instead of this process.
        let slot = tokio::select! {
            _ = shutdown.cancelled() => break,
            slot = slots.clone().acquire_owned() => slot.map_err(io::Error::other)?,
        };
        let (stream, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: pause rather than spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            request.extensions_mut().insert(ConnectInfo::<SocketAddr>(peer));
            app.clone().call(request)
        });
        let connection = graceful.watch(http.serve_connection(TokioIo::new(stream), service));
        tokio::spawn(async move {
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "connection ended with an error");
            }
            drop(slot);
        });
    }
    tokio::select! {
        _ = graceful.shutdown() => {}
        _ = tokio::time::sleep(limits.drain) => tracing::warn!("shutdown: connections still open after the drain time"),
    }
    Ok(())
}
