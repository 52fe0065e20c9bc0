//! A service run inside the test process, the way its binary runs it.
//!
//! Every service's library has `run(config, shutdown)` (or `serve(listener, shutdown)`), where
//! `shutdown` is the future its `main` builds from SIGTERM. [`InProcess`] runs that future on the
//! test's runtime with a shutdown the test controls, so a test can start a replica, stop it like
//! Kubernetes would, and require that it drained and exited cleanly within a bound.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use anyhow::Context as _;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// The shutdown signal handed to a service: resolves when the test stops it (or drops the
/// [`InProcess`]).
pub type Shutdown = Pin<Box<dyn Future<Output = ()> + Send + 'static>>;

/// A running service and its stop signal.
pub struct InProcess<E> {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), E>>,
}

impl<E> InProcess<E>
where
    E: std::error::Error + Send + Sync + 'static,
{
    /// Starts `run` with a shutdown signal this handle sends.
    pub fn start<F, Fut>(run: F) -> Self
    where
        F: FnOnce(Shutdown) -> Fut,
        Fut: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        let shutdown: Shutdown = Box::pin(async move {
            let _ = stopped.await;
        });
        let task = tokio::spawn(run(shutdown));
        Self {
            stop: Some(stop),
            task,
        }
    }

    /// Sends the stop signal (what SIGTERM does) without waiting.
    pub fn signal(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether the service has exited (on its own, or after the signal).
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }

    /// Signals it and waits until it exits: an error if it does not within `within`, if it
    /// panicked, or if it returned an error.
    pub async fn stop(mut self, within: Duration) -> anyhow::Result<()> {
        self.signal();
        tokio::time::timeout(within, &mut self.task)
            .await
            .with_context(|| format!("the service did not stop within {within:?}"))?
            .context("the service panicked")?
            .context("the service failed")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, thiserror::Error)]
    #[error("failed on purpose")]
    struct Failed;

    #[tokio::test]
    async fn a_service_runs_until_signalled_and_its_exit_is_checked() {
        let service = InProcess::<Failed>::start(|shutdown| async move {
            shutdown.await;
            Ok(())
        });
        assert!(!service.is_finished());
        service.stop(Duration::from_secs(5)).await.unwrap();

        let failing = InProcess::start(|shutdown| async move {
            shutdown.await;
            Err(Failed)
        });
        let error = failing.stop(Duration::from_secs(5)).await.unwrap_err();
        assert!(
            format!("{error:#}").contains("failed on purpose"),
            "{error:#}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_service_that_ignores_the_signal_fails_the_stop() {
        let stuck = InProcess::<Failed>::start(|_shutdown| std::future::pending());
        let error = stuck.stop(Duration::from_secs(20)).await.unwrap_err();
        assert!(error.to_string().contains("did not stop"), "{error:#}");
    }
}
