//! How workers come and go: one [`Provision`] per `workers.mode`. The pool
//! (`mod.rs`) keeps the workers, their health and their load whatever the mode;
//! what differs is here: `embedded` starts Flight servers in this process,
//! `static` has the addresses of the config, `docker` starts and removes
//! containers (`docker.rs`, sized by `autoscaler.rs`), `dns` follows the
//! addresses a name resolves to (`dns.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;

use super::dns::DnsWorkers;
use super::docker::DockerWorkers;
use super::{autoscaler, EmbeddedWorkers, PoolError, Worker, WorkerPool};

#[async_trait]
pub(super) trait Provision: Send + Sync {
    /// Once the pool is built: reach the starting size, start what runs beside it.
    async fn begin(&self, _pool: &Arc<WorkerPool>) -> Result<(), PoolError> {
        Ok(())
    }

    /// Before each health round.
    async fn sync(&self, _pool: &WorkerPool) {}

    /// Whether `quiver workers scale N` can change the pool's size.
    fn resizable(&self) -> bool {
        false
    }

    /// Whether a worker can come for a query while none runs (with `workers.min = 0`).
    fn scales_from_zero(&self) -> bool {
        false
    }

    /// Gets a worker for a query while none is healthy; returns how long the
    /// query waited and how many workers were started for it.
    async fn wake(
        &self,
        _pool: &WorkerPool,
        _wanted: usize,
        began: Instant,
    ) -> Result<(Duration, usize), PoolError> {
        Ok((began.elapsed(), 0))
    }

    /// A worker whose process is gone though something answers at its address:
    /// by default a fresh entry at the same address takes the new process on
    /// from the next health round.
    async fn lost(&self, pool: &WorkerPool, worker: &Arc<Worker>) {
        match Worker::connect_lazy(
            worker.id.clone(),
            worker.address.clone(),
            pool.credentials.clone(),
        ) {
            Ok(fresh) => pool.add(Arc::new(fresh)),
            Err(e) => {
                tracing::warn!(worker = %worker.id, error = %e, "cannot reconnect to a restarted worker")
            }
        }
    }

    /// The container a worker runs in, if it runs in one.
    fn container_of(&self, _worker: &str) -> Option<String> {
        None
    }

    /// The containers, for the autoscaler (Docker only).
    fn docker(&self) -> Option<&DockerWorkers> {
        None
    }

    async fn shutdown(&self) {}
}

/// `workers.mode = "static"`: the addresses of the config, nothing to start.
pub(super) struct StaticWorkers;

impl Provision for StaticWorkers {}

#[async_trait]
impl Provision for EmbeddedWorkers {
    async fn shutdown(&self) {
        EmbeddedWorkers::shutdown(self);
    }
}

#[async_trait]
impl Provision for DnsWorkers {
    async fn begin(&self, pool: &Arc<WorkerPool>) -> Result<(), PoolError> {
        self.sync(pool).await;
        Ok(())
    }

    async fn sync(&self, pool: &WorkerPool) {
        DnsWorkers::sync(self, pool).await;
    }

    fn scales_from_zero(&self) -> bool {
        true
    }

    /// The query waits (counted in the pool's load, so KEDA's `IsActive` turns
    /// true and it scales the workers up) until a worker resolves and answers.
    async fn wake(
        &self,
        pool: &WorkerPool,
        _wanted: usize,
        began: Instant,
    ) -> Result<(Duration, usize), PoolError> {
        let limit = pool.config.start_timeout_secs;
        let deadline = began + Duration::from_secs(limit);
        loop {
            DnsWorkers::sync(self, pool).await;
            pool.check_health().await;
            if !pool.healthy().is_empty() {
                return Ok((began.elapsed(), 0));
            }
            if Instant::now() >= deadline {
                return Err(PoolError::Scale(format!(
                    "no worker came up within {limit}s (workers.start_timeout_secs) for a query that needs one"
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }
}

#[async_trait]
impl Provision for DockerWorkers {
    /// Starts `workers.min` containers (failing when fewer answer) and the autoscaler.
    async fn begin(&self, pool: &Arc<WorkerPool>) -> Result<(), PoolError> {
        let min = pool.config.min;
        let started = pool.scale_up(min, "minimum size at start").await;
        if started < min {
            pool.shutdown().await;
            let why = pool
                .events
                .snapshot()
                .into_iter()
                .rev()
                .find(|e| e.action == "start-failed")
                .map(|e| format!(": {}", e.reason))
                .unwrap_or_default();
            return Err(PoolError::Docker(format!(
                "only {started} of {min} worker containers became healthy{why}"
            )));
        }
        autoscaler::spawn(pool);
        Ok(())
    }

    fn resizable(&self) -> bool {
        true
    }

    fn scales_from_zero(&self) -> bool {
        true
    }

    /// Starts `wanted` containers (1..=max), one wake at a time.
    async fn wake(
        &self,
        pool: &WorkerPool,
        wanted: usize,
        began: Instant,
    ) -> Result<(Duration, usize), PoolError> {
        let _one = pool.waking.lock().await;
        if !pool.healthy().is_empty() {
            // Another query's wake started them while this one waited for the lock.
            return Ok((began.elapsed(), 0));
        }
        let n = wanted.clamp(1, pool.config.max.max(1));
        let started = pool
            .scale_up(n, "a query needs a worker and none runs (scale from zero)")
            .await;
        if pool.healthy().is_empty() {
            return Err(PoolError::Scale(format!(
                "started {n} worker(s) for a query, but none answered within {}s (workers.start_timeout_secs)",
                pool.config.start_timeout_secs
            )));
        }
        Ok((began.elapsed(), started))
    }

    /// Its container is removed; the autoscaler starts another.
    async fn lost(&self, _pool: &WorkerPool, worker: &Arc<Worker>) {
        if let Err(e) = self.remove(&worker.id).await {
            tracing::warn!(worker = %worker.id, error = %e, "could not remove a lost worker's container");
        }
    }

    fn container_of(&self, worker: &str) -> Option<String> {
        DockerWorkers::container_of(self, worker)
    }

    fn docker(&self) -> Option<&DockerWorkers> {
        Some(self)
    }

    async fn shutdown(&self) {
        DockerWorkers::shutdown(self).await;
    }
}
