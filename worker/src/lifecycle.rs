//! Who this worker process is and where it is in its life: a random instance id
//! (a replaced or restarted worker at the same address has another one), the
//! heartbeat of the coordinator that owns it, and draining on shutdown.
//!
//! The owner's heartbeat is the time of its last authenticated `instance` call
//! (the pool's health check). A second coordinator reads it, without credentials,
//! to tell a live cluster from one whose coordinator is gone.

use parking_lot::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use quiver_proto::WorkerInstance;

#[derive(Debug)]
pub(crate) struct Lifecycle {
    instance_id: String,
    draining: AtomicBool,
    owner: Mutex<Option<(String, Instant)>>,
}

impl Lifecycle {
    pub fn new() -> Self {
        Self {
            instance_id: uuid::Uuid::new_v4().simple().to_string(),
            draining: AtomicBool::new(false),
            owner: Mutex::new(None),
        }
    }

    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// Records a call from the coordinator `owner`.
    pub fn heartbeat(&self, owner: &str) {
        {
            let mut o = self.owner.lock();
            *o = Some((owner.to_string(), Instant::now()));
        }
    }

    pub fn start_draining(&self) {
        self.draining.store(true, Ordering::SeqCst);
    }

    pub fn is_draining(&self) -> bool {
        self.draining.load(Ordering::SeqCst)
    }

    pub fn describe(&self, running_fragments: u32) -> WorkerInstance {
        let owner = self.owner.lock().clone();
        WorkerInstance {
            instance_id: self.instance_id.clone(),
            draining: self.is_draining(),
            owner: owner.as_ref().map(|(o, _)| o.clone()).unwrap_or_default(),
            owner_seen_ms: owner
                .map(|(_, at)| at.elapsed().as_millis().min(u64::MAX as u128) as u64),
            running_fragments,
        }
    }
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Every fragment finished and every exchange output was released.
    Clean,
    /// The grace period ended first; what still ran is cut off.
    GraceExpired { running: u32 },
}

/// Waits until `idle()` holds (checked every 100 ms) or `grace` passes.
pub(crate) async fn wait_idle(
    grace: Duration,
    running: impl Fn() -> u32,
    outputs_held: impl Fn() -> bool,
) -> Drained {
    let deadline = Instant::now() + grace;
    loop {
        let now_running = running();
        if now_running == 0 && !outputs_held() {
            return Drained::Clean;
        }
        if Instant::now() >= deadline {
            return Drained::GraceExpired {
                running: now_running,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn instances_differ_and_the_heartbeat_names_the_owner() {
        let (a, b) = (Lifecycle::new(), Lifecycle::new());
        assert_ne!(a.instance_id(), b.instance_id());
        assert_eq!(a.describe(0).owner_seen_ms, None);
        a.heartbeat("coord-1");
        let d = a.describe(2);
        assert_eq!(
            (d.owner.as_str(), d.running_fragments, d.draining),
            ("coord-1", 2, false)
        );
        assert!(d.owner_seen_ms.is_some_and(|ms| ms < 1000));
        a.start_draining();
        assert!(a.describe(0).draining);
    }

    #[tokio::test]
    async fn a_drain_waits_for_running_work_within_the_grace_period() {
        let left = std::sync::atomic::AtomicU32::new(3);
        let running = || left.fetch_sub(1, Ordering::SeqCst).saturating_sub(1);
        assert_eq!(
            wait_idle(Duration::from_secs(5), running, || false).await,
            Drained::Clean
        );
        let stuck = wait_idle(Duration::from_millis(250), || 1, || false).await;
        assert_eq!(stuck, Drained::GraceExpired { running: 1 });
    }
}
