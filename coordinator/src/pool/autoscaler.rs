//! The autoscaler of a Docker pool: once a second it replaces dead workers, then
//! sizes the pool between `min` and `max` (or at the size `quiver workers scale N`
//! pinned): up when the running (and waiting) fragments per worker reach `busy_fragments`, down
//! when a worker has been idle for `idle_secs` and the others could take the load
//! without being busy, never twice within `cooldown_secs`.
//! A retired worker drains first: it gets no new fragments and is removed only
//! when the ones it runs have finished.

use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::future::join_all;

use super::docker::DockerWorkers;
use super::sizing::{decide, Decision, Observed};
use super::{Worker, WorkerPool, WorkerState};

const TICK: Duration = Duration::from_secs(1);
/// How long a worker that runs fragments may leave health checks unanswered.
const BUSY_PATIENCE: Duration = Duration::from_secs(60);
/// A draining worker whose fragments never finish is removed after this anyway.
const DRAIN_LIMIT: Duration = Duration::from_secs(600);

pub(super) fn spawn(pool: &Arc<WorkerPool>) {
    let weak = Arc::downgrade(pool);
    tokio::spawn(async move {
        let mut last_change: Option<Instant> = None;
        loop {
            tokio::time::sleep(TICK).await;
            let Some(pool) = weak.upgrade() else { break };
            if pool.closing() {
                break;
            }
            pool.replace_failed().await;
            pool.resize(&mut last_change).await;
        }
    });
}

impl WorkerPool {
    fn docker(&self) -> Option<&DockerWorkers> {
        self.provisioner.docker()
    }

    /// Starts `n` workers at once and waits for each to answer its health check;
    /// returns how many did.
    pub(super) async fn scale_up(&self, n: usize, reason: &str) -> usize {
        join_all((0..n).map(|_| self.start_worker(reason)))
            .await
            .into_iter()
            .filter(|ok| *ok)
            .count()
    }

    async fn start_worker(&self, reason: &str) -> bool {
        let Some(docker) = self.docker() else {
            return false;
        };
        if self.closing() {
            return false;
        }
        let (id, address) = match docker.start_one().await {
            Ok(started) => started,
            Err(e) => {
                self.events.record("start-failed", "-", &e.to_string());
                return false;
            }
        };
        let worker = match Worker::connect_lazy(id.clone(), address, self.credentials.clone()) {
            Ok(w) => Arc::new(w),
            Err(e) => {
                self.events.record("start-failed", &id, &e.to_string());
                let _ = docker.remove(&id).await;
                return false;
            }
        };
        if self.closing() {
            // Shutdown began while the container started: it is not ours to keep.
            let _ = docker.remove(&id).await;
            return false;
        }
        // Listed (as starting) at once, planned on only once healthy.
        self.add(worker.clone());
        self.events.record("start", &id, reason);
        let started = Instant::now();
        let deadline = started + Duration::from_secs(self.config.start_timeout_secs);
        let mut next_look = started + Duration::from_secs(1);
        let failure = loop {
            if self.probe(&worker).await {
                return true;
            }
            if Instant::now() >= deadline {
                break format!(
                    "no health answer within {}s: {}",
                    self.config.start_timeout_secs,
                    docker.why(&id).await
                );
            }
            // A container that exited will never answer: say why at once.
            if Instant::now() >= next_look {
                next_look += Duration::from_secs(1);
                if !docker.is_running(&id).await {
                    break format!("its container stopped: {}", docker.why(&id).await);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        self.remove(&id);
        let _ = docker.remove(&id).await;
        self.events.record("start-failed", &id, &failure);
        false
    }

    /// Drains the worker, then removes its container.
    async fn retire(self: Arc<Self>, worker: Arc<Worker>, reason: String) {
        worker.start_draining();
        self.events.record("drain", &worker.id, &reason);
        let started = Instant::now();
        while worker.running_fragments() > 0 && started.elapsed() < DRAIN_LIMIT {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.remove(&worker.id);
        if let Some(docker) = self.docker() {
            if let Err(e) = docker.remove(&worker.id).await {
                tracing::warn!(worker = %worker.id, error = %e, "could not remove a retired worker");
            }
        }
        let left = worker.running_fragments();
        let how = if left == 0 {
            "drained".to_string()
        } else {
            format!("drain limit reached with {left} fragments running")
        };
        self.events.record("remove", &worker.id, &how);
    }

    /// Replaces workers whose container stopped, and workers that stopped answering
    /// for three health rounds (a minute while they run fragments: a worker
    /// saturated by its fragments may answer late, and replacing it would kill them).
    async fn replace_failed(&self) {
        let Some(docker) = self.docker() else { return };
        let idle_patience =
            Duration::from_secs_f64((self.config.health_interval_secs * 3.0).max(3.0));
        for worker in self.all() {
            if worker.state() != WorkerState::Unhealthy {
                continue;
            }
            let reason = if !docker.is_running(&worker.id).await {
                format!(
                    "its container is not running: {}",
                    docker.why(&worker.id).await
                )
            } else if worker.in_state_for()
                > if worker.running_fragments() > 0 {
                    BUSY_PATIENCE
                } else {
                    idle_patience
                }
            {
                format!(
                    "no health answer for {}s: {}",
                    worker.in_state_for().as_secs(),
                    docker.why(&worker.id).await
                )
            } else {
                continue;
            };
            self.remove(&worker.id);
            let _ = docker.remove(&worker.id).await;
            self.events.record("replace", &worker.id, &reason);
            self.start_worker(&format!("replaces {}", worker.id)).await;
        }
    }

    /// One sizing decision (`sizing::decide`), carried out.
    async fn resize(self: &Arc<Self>, last_change: &mut Option<Instant>) {
        let active: Vec<Arc<Worker>> = self
            .all()
            .into_iter()
            .filter(|w| w.state() != WorkerState::Draining)
            .collect();
        let idlest = active
            .iter()
            .filter(|w| w.is_healthy())
            .max_by_key(|w| w.idle_for());
        let observed = Observed {
            workers: active.len(),
            min: self.config.min,
            max: self.config.max,
            pinned: self.target(),
            running: self.load(),
            per_worker: self.config.busy_fragments,
            cooling_down: last_change
                .is_some_and(|t| t.elapsed() < Duration::from_secs(self.config.cooldown_secs)),
            idlest: idlest.map(|w| w.idle_for()),
            idle_limit: Duration::from_secs(self.config.idle_secs),
        };
        match decide(&observed) {
            Decision::Hold => {}
            Decision::Start {
                count,
                reason,
                resets_cooldown,
            } => {
                self.scale_up(count, &reason).await;
                if resets_cooldown {
                    *last_change = Some(Instant::now());
                }
            }
            Decision::RetireIdlest { reason } => {
                if let Some(w) = idlest {
                    w.start_draining();
                    tokio::spawn(self.clone().retire(w.clone(), reason));
                    *last_change = Some(Instant::now());
                }
            }
            Decision::RetireLeastBusy { count, reason } => {
                self.retire_least_busy(&active, count, &reason)
            }
        }
    }

    fn retire_least_busy(self: &Arc<Self>, active: &[Arc<Worker>], count: usize, reason: &str) {
        let mut candidates = active.to_vec();
        // Unhealthy and starting workers go first, then the least busy.
        candidates.sort_by_key(|w| (w.is_healthy(), w.running_fragments()));
        for w in candidates.into_iter().take(count) {
            w.start_draining();
            tokio::spawn(self.clone().retire(w, reason.to_string()));
        }
    }
}
