//! `Tasks`: the owner of one subsystem's background tasks (a backend connection's reader and
//! streams, the audit writer's spool writer and drainer, the alerts' sender, the tasks `serve`
//! starts beside the gateway). A `TaskTracker` to wait for them and a `CancellationToken` to
//! end them: whoever holds the `Tasks` stops them, and nothing it spawned outlives that stop
//! unnoticed.
//!
//! The gateway's own tasks have the same two parts as fields of `Gateway` (its `shutdown`
//! token also ends client streams).

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// One subsystem's background tasks. Clones share them: a connection hands a clone to the
/// parts of it that spawn later (an answer to a backend's request, a reopened stream).
#[derive(Clone, Default)]
pub struct Tasks {
    tracker: TaskTracker,
    stop: CancellationToken,
}

impl Tasks {
    /// No tasks yet.
    pub fn new() -> Tasks {
        Tasks::default()
    }

    /// Spawns a task that runs until it ends or the owner stops it, whichever is first.
    pub fn spawn(&self, task: impl Future<Output = ()> + Send + 'static) {
        let stop = self.stop.clone();
        self.tracker.spawn(async move {
            stop.run_until_cancelled(task).await;
        });
    }

    /// Spawns a task that is not cut short by a stop: it ends by itself (it watches `token()`
    /// itself, or is bounded by its own timeout) and a stop waits for it.
    pub fn spawn_to_completion(&self, task: impl Future<Output = ()> + Send + 'static) {
        self.tracker.spawn(task);
    }

    /// The token a stop cancels, for a task that ends on it in its own way (finishing what it
    /// holds first).
    pub fn token(&self) -> CancellationToken {
        self.stop.clone()
    }

    /// Tells every task to end, without waiting (an owner being dropped).
    pub fn cancel(&self) {
        self.stop.cancel();
    }

    /// Tells every task to end and waits up to `grace` for them; false (and a warning naming
    /// `what`) if some are still running then.
    pub async fn stop(&self, what: &str, grace: Duration) -> bool {
        self.stop.cancel();
        self.tracker.close();
        if tokio::time::timeout(grace, self.tracker.wait()).await.is_err() {
            tracing::warn!(
                left = self.tracker.len(),
                "{what}: tasks still running after {grace:?}; not waiting longer"
            );
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn stop_ends_spawned_tasks_and_waits_for_those_that_finish_by_themselves() {
        let tasks = Tasks::new();
        tasks.spawn(std::future::pending());
        let (tx, rx) = tokio::sync::oneshot::channel();
        let token = tasks.token();
        tasks.spawn_to_completion(async move {
            token.cancelled().await;
            // Work done after the stop was asked for, before the task ends.
            tokio::task::yield_now().await;
            let _ = tx.send("finished");
        });
        assert!(tasks.stop("test", Duration::from_secs(30)).await);
        assert_eq!(rx.await, Ok("finished"));
    }

    #[tokio::test(start_paused = true)]
    async fn stop_gives_up_on_a_task_that_does_not_end() {
        let tasks = Tasks::new();
        tasks.spawn_to_completion(std::future::pending());
        assert!(!tasks.stop("test", Duration::from_secs(1)).await);
    }
}
