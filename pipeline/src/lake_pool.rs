//! Where the HTTP server runs lake queries: on their own runtime, a bounded number at a time,
//! each under a deadline, so a slow query never holds a thread that serves the views.
//!
//! # State
//! The warehouse handle, a runtime of [`LakePool::THREADS`] threads and a semaphore of
//! `slots` permits. A request waits at most its deadline for a permit and for its query;
//! past it the query is aborted and the caller answers 503.
//!
//! # Failure modes
//! - every slot busy for the whole deadline: [`LakeError::Busy`];
//! - the query outlives the deadline: [`LakeError::TimedOut`] (the task is aborted);
//! - the query fails or panics: [`LakeError::Failed`] (logged by the caller).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use custody_operators::sinks::iceberg::Warehouse;
use tokio::sync::Semaphore;

/// Why a lake query has no answer.
#[derive(Debug, thiserror::Error)]
pub enum LakeError {
    /// Every query slot stayed busy until the deadline.
    #[error("the lake is busy: no query slot freed within {0:?}")]
    Busy(Duration),
    /// The query did not finish within the deadline.
    #[error("the query did not finish within {0:?}")]
    TimedOut(Duration),
    /// The query failed.
    #[error("the query failed: {0}")]
    Failed(String),
}

/// Runs lake queries off the serving threads.
pub struct LakePool {
    warehouse: Arc<Warehouse>,
    /// `None` only while dropping.
    runtime: Option<tokio::runtime::Runtime>,
    slots: Arc<Semaphore>,
    deadline: Duration,
}

impl LakePool {
    /// Threads running lake queries.
    pub const THREADS: usize = 2;

    /// A pool over `warehouse`: at most `slots` queries at once, each within `deadline`.
    pub fn new(warehouse: Warehouse, slots: usize, deadline: Duration) -> std::io::Result<Self> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(Self::THREADS)
            .thread_name("custody-lake")
            .enable_all()
            .build()?;
        Ok(LakePool {
            warehouse: Arc::new(warehouse),
            runtime: Some(runtime),
            slots: Arc::new(Semaphore::new(slots.max(1))),
            deadline,
        })
    }

    /// Runs `query` on the lake runtime within the deadline (waiting for a slot included).
    pub async fn run<F, Fut, T>(&self, query: F) -> Result<T, LakeError>
    where
        F: FnOnce(Arc<Warehouse>) -> Fut,
        Fut: Future<Output = Result<T, String>> + Send + 'static,
        T: Send + 'static,
    {
        let started = tokio::time::Instant::now();
        let deadline = started + self.deadline;
        let permit = tokio::time::timeout_at(deadline, Arc::clone(&self.slots).acquire_owned())
            .await
            .map_err(|_| LakeError::Busy(self.deadline))?
            .map_err(|_| LakeError::Failed("the query pool is closed".into()))?;
        let future = query(Arc::clone(&self.warehouse));
        let runtime = self
            .runtime
            .as_ref()
            .ok_or_else(|| LakeError::Failed("the query pool is closed".into()))?;
        let mut task = runtime.spawn(async move {
            let out = future.await;
            drop(permit);
            out
        });
        match tokio::time::timeout_at(deadline, &mut task).await {
            Err(_) => {
                task.abort();
                Err(LakeError::TimedOut(self.deadline))
            }
            Ok(Err(join)) => Err(LakeError::Failed(join.to_string())),
            Ok(Ok(out)) => out.map_err(LakeError::Failed),
        }
    }
}

impl Drop for LakePool {
    fn drop(&mut self) {
        // Dropping a runtime from inside another one panics; let its threads go instead.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn pool(slots: usize, deadline_ms: u64) -> LakePool {
        let dir = tempfile::tempdir().unwrap();
        let warehouse = Warehouse::open(dir.path()).await.unwrap();
        std::mem::forget(dir);
        LakePool::new(warehouse, slots, Duration::from_millis(deadline_ms)).unwrap()
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_slow_query_times_out_and_frees_its_slot() {
        let pool = pool(1, 200).await;
        let slow = pool
            .run(|_| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Ok(())
            })
            .await;
        assert!(matches!(slow, Err(LakeError::TimedOut(_))), "{slow:?}");
        // The aborted query gave its slot back.
        let quick = pool.run(|_| async { Ok(7) }).await;
        assert_eq!(quick.unwrap(), 7);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queries_past_the_slots_wait_then_give_up() {
        let pool = pool(1, 300).await;
        let held = Arc::clone(&pool.slots).acquire_owned().await.unwrap();
        let waiting = pool.run(|_| async { Ok(()) }).await;
        assert!(matches!(waiting, Err(LakeError::Busy(_))), "{waiting:?}");
        // Queued, not refused: a slot freed within the deadline is taken.
        let release = async move {
            tokio::time::sleep(Duration::from_millis(100)).await;
            drop(held);
        };
        let ((), answer) = tokio::join!(release, pool.run(|_| async { Ok(1) }));
        assert_eq!(answer.unwrap(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_failing_or_panicking_query_is_an_error_not_a_crash() {
        // A long deadline: a panic captures and prints a backtrace first (RUST_BACKTRACE), which
        // takes seconds in a debug build; the answer must be the failure, not a timeout.
        let pool = pool(2, 60_000).await;
        let failed = pool.run(|_| async { Err::<(), _>("no".to_string()) }).await;
        assert!(matches!(failed, Err(LakeError::Failed(m)) if m == "no"));
        let panicked = pool
            .run(|_| async {
                if true {
                    panic!("bug");
                }
                Ok(())
            })
            .await;
        assert!(matches!(panicked, Err(LakeError::Failed(_))));
    }
}
