//! Every scaling decision with its reason: logged, counted, and kept for
//! `system.scaling_events`.

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::time::SystemTime;

/// Decisions kept for the system table; older ones are only in the log.
const KEEP: usize = 1000;

#[derive(Debug, Clone)]
pub struct ScalingEvent {
    pub at: SystemTime,
    /// `start`, `drain`, `remove`, `replace`, `start-failed`.
    pub action: &'static str,
    pub worker: String,
    pub reason: String,
}

#[derive(Default)]
pub struct EventLog {
    events: Mutex<VecDeque<ScalingEvent>>,
    counts: Mutex<BTreeMap<&'static str, u64>>,
}

impl EventLog {
    pub fn record(&self, action: &'static str, worker: &str, reason: &str) {
        tracing::info!(action, worker, reason, "worker pool");
        {
            let mut events = self.events.lock();
            if events.len() == KEEP {
                events.pop_front();
            }
            events.push_back(ScalingEvent {
                at: SystemTime::now(),
                action,
                worker: worker.into(),
                reason: reason.into(),
            });
        }
        {
            let mut counts = self.counts.lock();
            *counts.entry(action).or_default() += 1;
        }
    }

    pub fn snapshot(&self) -> Vec<ScalingEvent> {
        self.events.lock().iter().cloned().collect()
    }

    /// How many decisions of each action were taken since start.
    pub fn counts(&self) -> BTreeMap<&'static str, u64> {
        self.counts.lock().clone()
    }
}
