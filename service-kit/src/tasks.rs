//! The tasks a service spawns for itself.
//!
//! Every task of a service process (its HTTP server, the watcher that turns the stop signal into
//! a token, its loops) runs on a [`TaskTracker`] and stops on a [`CancellationToken`], so a
//! drain can wait for all of them under its deadline and nothing is left running unseen. These
//! are the two pieces every binary needs; each used to be written out per service.

use std::future::Future;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A token cancelled when `shutdown` resolves (SIGTERM, Ctrl-C, or a test's signal). The watcher
/// runs on `tracker` and ends as soon as the token is cancelled by anyone, so closing the tracker
/// and waiting for it never hangs on a signal that will not come.
pub fn stop_on(
    shutdown: impl Future<Output = ()> + Send + 'static,
    tracker: &TaskTracker,
) -> CancellationToken {
    let stop = CancellationToken::new();
    let cancel = stop.clone();
    tracker.spawn(async move {
        tokio::select! {
            () = shutdown => cancel.cancel(),
            () = cancel.cancelled() => {}
        }
    });
    stop
}

/// Serves `router` on `listener` on `tracker` until `stop` is cancelled, then lets open
/// requests finish (axum's graceful shutdown). The handle yields the server's result, so a
/// service notices a server that died on its own.
pub fn serve<L>(
    listener: L,
    router: axum::Router,
    stop: CancellationToken,
    tracker: &TaskTracker,
) -> JoinHandle<std::io::Result<()>>
where
    L: axum::serve::Listener,
    L::Addr: std::fmt::Debug,
{
    tracker.spawn(async move {
        axum::serve(listener, router)
            .with_graceful_shutdown(stop.cancelled_owned())
            .await
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_stop_signal_cancels_the_token_and_its_watcher_ends() {
        let tracker = TaskTracker::new();
        let (signal, signalled) = tokio::sync::oneshot::channel::<()>();
        let stop = stop_on(
            async move {
                let _ = signalled.await;
            },
            &tracker,
        );
        assert!(!stop.is_cancelled());
        assert_eq!(tracker.len(), 1, "the watcher runs on the tracker");
        signal.send(()).unwrap();
        tracker.close();
        tracker.wait().await;
        assert!(stop.is_cancelled());
    }

    #[tokio::test]
    async fn the_watcher_ends_when_the_token_is_cancelled_without_a_signal() {
        let tracker = TaskTracker::new();
        let stop = stop_on(std::future::pending(), &tracker);
        stop.cancel();
        tracker.close();
        // Without the token arm the watcher would wait for a signal forever.
        tokio::time::timeout(std::time::Duration::from_secs(5), tracker.wait())
            .await
            .expect("the watcher ended");
    }

    #[tokio::test]
    async fn the_server_answers_until_stopped_then_ends_on_the_tracker() {
        let tracker = TaskTracker::new();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let router = axum::Router::new().route("/", axum::routing::get(|| async { "up" }));
        let stop = CancellationToken::new();
        let server = serve(listener, router, stop.clone(), &tracker);
        let mut tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        tcp.write_all(b"GET / HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
            .await
            .unwrap();
        let mut answer = String::new();
        tcp.read_to_string(&mut answer).await.unwrap();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.ends_with("up"), "{answer}");
        stop.cancel();
        server.await.unwrap().unwrap();
        tracker.close();
        tracker.wait().await;
    }
}
