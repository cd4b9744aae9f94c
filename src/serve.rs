//! The HTTP server loop: hyper-util's HTTP/1.1 + HTTP/2 connection builder
//! with a timer, so slow clients are cut off (axum's `serve` sets no timer,
//! which leaves hyper's header-read timeout inert). Request bodies are cut
//! off by the `RequestBodyTimeoutLayer` around the router (`api::app`).
//!
//! Invariant: on shutdown the listener closes first, then every open
//! connection is asked to finish (in-flight requests and streams complete)
//! and `serve` returns when the last one has.

use std::time::Duration;

use std::convert::Infallible;

use axum::extract::Request;
use axum::response::Response;
use hyper::body::Incoming;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto::Builder;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tower::Service;

pub async fn serve<S>(
    listener: TcpListener,
    app: S,
    header_timeout: Duration,
    mut stop: watch::Receiver<bool>,
) where
    S: Service<Request<Incoming>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    let graceful = GracefulShutdown::new();
    let mut builder = Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(header_timeout);
    builder.http2().timer(TokioTimer::new());
    let stopped = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    tokio::pin!(stopped);
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let sock = match accepted {
                    Ok((sock, _)) => sock,
                    Err(e) => {
                        // Out of file descriptors and the like: pause, go on.
                        tracing::warn!(error = %e, "Accepting a connection failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = sock.set_nodelay(true);
                let service = TowerToHyperService::new(app.clone());
                let conn = builder
                    .serve_connection_with_upgrades(TokioIo::new(sock), service)
                    .into_owned();
                let conn = graceful.watch(conn);
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        tracing::debug!(error = %e, "A connection ended with an error.");
                    }
                });
            }
            () = &mut stopped => break,
        }
    }
    drop(listener);
    graceful.shutdown().await;
}
