//! Health checks: a worker is planned on only while its `health` action answers.

use std::sync::Arc;
use std::time::Duration;

use arrow_flight::Action;
use futures::future::join_all;
use quiver_proto::ACTION_HEALTH;

use super::{Worker, WorkerPool};

const HEALTH_TIMEOUT: Duration = Duration::from_secs(2);

/// Asks one worker whether it serves. The call carries the cluster's credentials,
/// which a worker checks when present: one with another secret is not healthy.
pub async fn probe(worker: &Worker) -> bool {
    let mut client = worker.client();
    let call = client.do_action(Action { r#type: ACTION_HEALTH.into(), body: Default::default() });
    match tokio::time::timeout(HEALTH_TIMEOUT, call).await {
        Ok(Ok(response)) => {
            let mut stream = response.into_inner();
            matches!(stream.message().await, Ok(Some(r)) if r.body.as_ref() == b"ok")
        }
        Ok(Err(status)) if status.code() == tonic::Code::Unauthenticated => {
            if worker.state() != super::WorkerState::Unhealthy {
                tracing::warn!(worker = %worker.id, address = %worker.address, reason = %status.message(),
                    "worker refuses this coordinator's credentials: is it configured with the same cluster secret?");
            }
            false
        }
        _ => false,
    }
}

impl WorkerPool {
    /// One round of health checks over every worker, in parallel.
    pub async fn check_health(&self) {
        let workers = self.all();
        let results = join_all(workers.iter().map(|w| probe(w))).await;
        for (worker, ok) in workers.iter().zip(results) {
            worker.set_healthy(ok);
        }
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
                if let super::Provisioner::Dns(dns) = &pool.provisioner {
                    dns.sync(&pool).await;
                }
                pool.check_health().await;
            }
        });
    }
}
