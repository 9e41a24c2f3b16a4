//! Health checks: a worker is planned on only while it answers, and only while it
//! is the same process that first answered. Each check is the worker's `instance`
//! action: it tells the worker's instance id (another one at the same address means
//! the worker was replaced or restarted, and its exchange outputs are gone), whether
//! it drains, and it records this coordinator's heartbeat on the worker.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Action;
use futures::future::join_all;
use quiver_proto::{WorkerInstance, ACTION_INSTANCE};

use super::{Worker, WorkerPool};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks a worker who it is. `owner`: this coordinator's instance id, recorded by
/// the worker as a heartbeat (None: only look, as a coordinator that does not own
/// the worker does). The call carries the worker's credentials when it has some;
/// a worker with another secret refuses it and is not healthy.
pub(super) async fn instance(worker: &Worker, owner: Option<&str>) -> Option<WorkerInstance> {
    let mut client = worker.client();
    let body = owner
        .map(|o| bytes::Bytes::copy_from_slice(o.as_bytes()))
        .unwrap_or_default();
    let call = client.do_action(Action {
        r#type: ACTION_INSTANCE.into(),
        body,
    });
    match tokio::time::timeout(HEALTH_TIMEOUT, call).await {
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            let answer = tokio::time::timeout(HEALTH_TIMEOUT, stream.message()).await;
            match answer {
                Ok(Ok(Some(r))) => WorkerInstance::decode_from(&r.body).ok(),
                _ => None,
            }
        }
        Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
            if worker.state() != super::WorkerState::Unhealthy {
                tracing::warn!(worker = %worker.id, address = %worker.address, reason = %status.message(),
                    "worker refuses this coordinator's credentials: is it configured with the same cluster secret?");
            }
            None
        }
        _ => None,
    }
}

impl WorkerPool {
    /// Checks one worker and records what it said; false when it is not usable.
    pub(super) async fn probe(&self, worker: &Arc<Worker>) -> bool {
        let answer = instance(worker, Some(&self.instance_id)).await;
        self.record_answer(worker, answer).await
    }

    async fn record_answer(&self, worker: &Arc<Worker>, answer: Option<WorkerInstance>) -> bool {
        let Some(answer) = answer else {
            worker.set_healthy(false);
            return false;
        };
        if let Some(known) = worker.adopt_instance(&answer.instance_id) {
            self.lost(worker, &format!(
                "another process answers at {} (instance {}, was {known}): the worker was replaced or restarted",
                worker.address, answer.instance_id
            ))
            .await;
            return false;
        }
        if answer.draining {
            if worker.state() != super::WorkerState::Draining {
                worker.start_draining();
                self.events.record(
                    "drain",
                    &worker.id,
                    "the worker is shutting down (SIGTERM): it finishes what it runs",
                );
            }
            return false;
        }
        worker.set_healthy(true);
        true
    }

    /// One round of health checks over every worker, in parallel.
    pub async fn check_health(&self) {
        let workers = self.all();
        join_all(workers.iter().map(|w| self.probe(w))).await;
    }

    /// Checks health every `interval` until the pool is dropped.
    pub fn spawn_health_loop(self: &Arc<Self>, interval: Duration) {
        let weak = Arc::downgrade(self);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                let Some(pool) = weak.upgrade() else { break };
                pool.provisioner.sync(&pool).await;
                pool.check_health().await;
            }
        });
    }
}
