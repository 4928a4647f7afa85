//! The comparison servers (the [`crate::baseline`] and the [`crate::floor`])
//! run in this process, each on a tokio runtime of its own that the caller
//! owns, so their threads are not the load generator's. They serve REST and
//! gRPC on one port with `axum::serve` (HTTP/1.1 and h2c, TCP_NODELAY), like
//! the server, with no middleware.

use std::{future::Future, net::SocketAddr, time::Duration};

use axum::{Router, serve::ListenerExt as _};
use tokio::{net::TcpListener, sync::oneshot, task::JoinHandle};

/// A running in-process server.
pub struct InProcess {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl InProcess {
    /// Runs `prepare` on `runtime` (stores opened there run their background
    /// tasks there too), then serves the router it makes on the listener it
    /// binds.
    pub async fn start(
        runtime: &tokio::runtime::Handle,
        prepare: impl Future<Output = Result<(TcpListener, Router), String>> + Send + 'static,
    ) -> Result<Self, String> {
        let (ready_tx, ready_rx) = oneshot::channel();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = runtime.spawn(async move {
            let (listener, router) = match prepare.await {
                Ok(prepared) => prepared,
                Err(error) => {
                    let _ = ready_tx.send(Err(error));
                    return;
                }
            };
            let _ = ready_tx.send(listener.local_addr().map_err(|error| error.to_string()));
            let listener = listener.tap_io(|stream| {
                let _ = stream.set_nodelay(true);
            });
            let _ = axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = stopped.await;
                })
                .await;
        });
        let addr = ready_rx
            .await
            .map_err(|_| "the in-process server did not start".to_owned())??;
        Ok(Self { addr, stop, task })
    }

    /// Stops it, gracefully, or abruptly after 5 s.
    pub async fn stop(self) {
        let _ = self.stop.send(());
        let abort = self.task.abort_handle();
        if tokio::time::timeout(Duration::from_secs(5), self.task)
            .await
            .is_err()
        {
            abort.abort();
        }
    }
}
