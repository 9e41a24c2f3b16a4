//! The scheduler: picks up other coordinators' changes from a shared store,
//! refreshes copies when they are due, and keeps live copies' feeds running.

use std::sync::Arc;

use crate::catalog::config::RefreshMode;
use crate::catalog::store::now_ms;
use crate::catalog::Datasets;

/// Refreshes what is due and picks up other coordinators' changes, until the process ends.
pub async fn run_scheduler(datasets: Arc<Datasets>, poll: std::time::Duration, scheduled: bool) {
    let mut last_poll = std::time::Instant::now();
    loop {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        if last_poll.elapsed() >= poll {
            last_poll = std::time::Instant::now();
            if let Err(e) = datasets.reload().await {
                tracing::warn!(error = %e, "cannot read the metadata store");
            }
        }
        if !scheduled {
            continue;
        }
        let now = now_ms();
        for acc in datasets.accelerations() {
            if acc.with(|s| s.spec.mode) == RefreshMode::Changes {
                super::changes::ensure_running(&datasets, &acc);
                continue;
            }
            if acc.due(now) {
                // Marked as running before the task starts, so the next tick does not start it again.
                acc.with(|s| s.running_since_ms = Some(now));
                let (datasets, acc) = (datasets.clone(), acc.clone());
                tokio::spawn(async move {
                    let _ = super::refresh::refresh(&datasets, &acc).await;
                });
            }
        }
    }
}
