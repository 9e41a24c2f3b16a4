//! The last minutes of each worker's CPU and memory, sampled every few seconds,
//! for the console's charts (the system tables show only the present).

use parking_lot::Mutex;
use std::collections::{BTreeMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::pool::WorkerPool;

const EVERY: Duration = Duration::from_secs(2);
/// Five minutes of samples.
const KEEP: usize = 150;

#[derive(Clone, Debug)]
pub struct Sample {
    /// CPU cores in use since the previous sample (1.0 = one core busy).
    pub cpu: f64,
    pub memory_bytes: u64,
}

#[derive(Default)]
pub struct History {
    workers: Mutex<BTreeMap<String, Series>>,
}

#[derive(Default)]
struct Series {
    samples: VecDeque<Sample>,
    last_cpu: Option<(Instant, f64)>,
}

impl History {
    /// Starts sampling `pool` in the background.
    pub fn start(pool: Arc<WorkerPool>) -> Arc<Self> {
        let history = Arc::new(Self::default());
        let weak = Arc::downgrade(&history);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(EVERY);
            loop {
                tick.tick().await;
                let Some(history) = weak.upgrade() else {
                    return;
                };
                history.sample(&pool).await;
            }
        });
        history
    }

    async fn sample(&self, pool: &WorkerPool) {
        let workers = pool.all();
        let stats = futures::future::join_all(
            workers
                .iter()
                .map(|w| async move { (w.id.clone(), w.stats(Duration::from_millis(800)).await) }),
        )
        .await;
        let mut map = self.workers.lock();
        map.retain(|id, _| workers.iter().any(|w| &w.id == id));
        let now = Instant::now();
        for (id, stats) in stats {
            let Some(s) = stats else { continue };
            let series = map.entry(id).or_default();
            let cpu = match series.last_cpu {
                Some((t, c)) if now > t => {
                    ((s.cpu_seconds - c) / now.duration_since(t).as_secs_f64()).max(0.0)
                }
                _ => 0.0,
            };
            series.last_cpu = Some((now, s.cpu_seconds));
            series.samples.push_back(Sample {
                cpu,
                memory_bytes: s.rss_bytes,
            });
            while series.samples.len() > KEEP {
                series.samples.pop_front();
            }
        }
    }

    /// Each worker's samples, oldest first.
    pub fn snapshot(&self) -> BTreeMap<String, Vec<Sample>> {
        self.workers
            .lock()
            .iter()
            .map(|(k, v)| (k.clone(), v.samples.iter().cloned().collect()))
            .collect()
    }
}
