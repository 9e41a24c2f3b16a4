//! What one fragment costs, measured on the worker: CPU time of its operators, the
//! peak of its memory pool and the bytes its scans read per source. The
//! coordinator sums these per query (`system.queries`).
//!
//! CPU is the calling thread's CPU clock around each poll of the fragment's stream,
//! so it counts the operators the fragment drives itself; tasks DataFusion spawns
//! on its own (a repartition's input tasks) are not counted.

use std::collections::BTreeMap;
use std::fmt;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use datafusion::arrow::record_batch::RecordBatch;
use datafusion::datasource::physical_plan::FileScanConfig;
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::Result;
use datafusion::execution::memory_pool::{
    MemoryConsumer, MemoryLimit, MemoryPool, MemoryReservation,
};
use datafusion::physical_plan::ExecutionPlan;
use futures::Stream;
use quiver_connectors::{SourceConfig, SourceKind, SourceScanExec};
use quiver_proto::SourceRead;

/// CPU time of the calling thread, in nanoseconds.
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    if rc != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// A stream that adds the CPU time each of its polls takes to a counter. Each poll
/// runs on one thread, so before and after are read from the same thread's clock.
pub(crate) struct CpuMetered<S> {
    inner: S,
    nanos: Arc<AtomicU64>,
}

impl<S> CpuMetered<S> {
    pub fn new(inner: S) -> (Self, Arc<AtomicU64>) {
        let nanos = Arc::new(AtomicU64::new(0));
        (
            Self {
                inner,
                nanos: nanos.clone(),
            },
            nanos,
        )
    }
}

impl<S: Stream<Item = Result<RecordBatch>> + Unpin> Stream for CpuMetered<S> {
    type Item = S::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let before = thread_cpu_nanos();
        let next = Pin::new(&mut self.inner).poll_next(cx);
        self.nanos
            .fetch_add(thread_cpu_nanos().saturating_sub(before), Ordering::Relaxed);
        next
    }
}

/// A memory pool that remembers the highest reservation it had at once.
#[derive(Debug)]
pub(crate) struct PeakPool {
    inner: Arc<dyn MemoryPool>,
    peak: AtomicUsize,
}

impl PeakPool {
    pub fn new(inner: Arc<dyn MemoryPool>) -> Self {
        Self {
            inner,
            peak: AtomicUsize::new(0),
        }
    }

    pub fn peak(&self) -> u64 {
        self.peak.load(Ordering::Relaxed) as u64
    }

    fn note(&self) {
        self.peak
            .fetch_max(self.inner.reserved(), Ordering::Relaxed);
    }
}

impl fmt::Display for PeakPool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.inner.fmt(f)
    }
}

impl MemoryPool for PeakPool {
    fn name(&self) -> &str {
        self.inner.name()
    }
    fn register(&self, consumer: &MemoryConsumer) {
        self.inner.register(consumer)
    }
    fn unregister(&self, consumer: &MemoryConsumer) {
        self.inner.unregister(consumer)
    }
    fn grow(&self, reservation: &MemoryReservation, additional: usize) {
        self.inner.grow(reservation, additional);
        self.note();
    }
    fn shrink(&self, reservation: &MemoryReservation, shrink: usize) {
        self.inner.shrink(reservation, shrink)
    }
    fn try_grow(&self, reservation: &MemoryReservation, additional: usize) -> Result<()> {
        self.inner.try_grow(reservation, additional)?;
        self.note();
        Ok(())
    }
    fn reserved(&self) -> usize {
        self.inner.reserved()
    }
    fn memory_limit(&self) -> MemoryLimit {
        self.inner.memory_limit()
    }
}

/// Bytes read per source by the scans of a finished fragment (from their metrics).
pub(crate) fn reads(plan: &Arc<dyn ExecutionPlan>, sources: &[SourceConfig]) -> Vec<SourceRead> {
    let mut per_source = BTreeMap::<String, u64>::new();
    visit(plan, &mut |node| {
        let metrics = node.metrics();
        let count = |name: &str| {
            metrics
                .as_ref()
                .and_then(|m| m.sum_by_name(name))
                .map(|v| v.as_usize() as u64)
        };
        if let Some(scan) = node.downcast_ref::<DataSourceExec>() {
            if let Some(files) = scan.data_source().downcast_ref::<FileScanConfig>() {
                // Parquet counts the bytes it fetched; CSV and JSON only what they produced.
                let bytes = count("bytes_scanned")
                    .or_else(|| count("output_bytes"))
                    .unwrap_or(0);
                *per_source.entry(file_source(files, sources)).or_default() += bytes;
            }
        } else if let Some(scan) = node.downcast_ref::<SourceScanExec>() {
            *per_source.entry(scan.source().to_string()).or_default() +=
                count("output_bytes").unwrap_or(0);
        }
    });
    per_source
        .into_iter()
        .map(|(source, bytes)| SourceRead { source, bytes })
        .collect()
}

fn visit(plan: &Arc<dyn ExecutionPlan>, f: &mut impl FnMut(&dyn ExecutionPlan)) {
    f(plan.as_ref());
    for child in plan.children() {
        visit(child, f);
    }
}

/// The files source whose location (or one of whose declared tables) holds the
/// scan's first file; "files" when none does (a `COPY` from a bare path).
fn file_source(scan: &FileScanConfig, sources: &[SourceConfig]) -> String {
    let Some(file) = scan.file_groups.iter().flat_map(|g| g.files()).next() else {
        return "files".into();
    };
    let store = scan.object_store_url.as_str().trim_end_matches('/');
    let path = file.object_meta.location.as_ref();
    let full = if store == "file:" || store == "file://" {
        format!("/{path}")
    } else {
        format!("{store}/{path}")
    };
    let holds = |location: &str| {
        let location = location.trim_end_matches('/');
        !location.is_empty() && (full == location || full.starts_with(&format!("{location}/")))
    };
    sources
        .iter()
        .find(|s| match &s.kind {
            SourceKind::Files(f) => {
                f.location.as_deref().is_some_and(holds)
                    || f.tables.iter().any(|t| holds(&t.location))
            }
            SourceKind::Delta(d) => {
                d.location.as_deref().is_some_and(holds)
                    || d.tables.iter().any(|t| holds(&t.location))
            }
            SourceKind::Iceberg(i) => {
                i.location.as_deref().is_some_and(holds)
                    || i.warehouse.as_deref().is_some_and(holds)
                    || i.tables.iter().any(|t| holds(&t.location))
            }
            _ => false,
        })
        .map(|s| s.name.clone())
        .unwrap_or_else(|| "files".into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::execution::memory_pool::GreedyMemoryPool;
    use futures::StreamExt;

    #[test]
    fn the_peak_pool_keeps_the_highest_reservation() {
        let pool: Arc<dyn MemoryPool> =
            Arc::new(PeakPool::new(Arc::new(GreedyMemoryPool::new(1000))));
        let r = MemoryConsumer::new("a").register(&pool);
        r.try_grow(600).expect("fits");
        r.shrink(500);
        r.try_grow(300).expect("fits");
        assert!(r.try_grow(800).is_err());
        let peak = pool.downcast_ref::<PeakPool>().map(|p| p.peak());
        assert_eq!(peak, Some(600));
        assert_eq!(pool.reserved(), 400);
    }

    #[tokio::test]
    async fn polls_that_compute_count_cpu_time() {
        let work = futures::stream::iter(0..3).map(|_| {
            let busy: u64 = (0..3_000_000u64).fold(0, |a, b| a.wrapping_add(b.wrapping_mul(b) ^ a));
            assert!(busy != 1);
            Ok(RecordBatch::new_empty(Arc::new(
                datafusion::arrow::datatypes::Schema::empty(),
            )))
        });
        let (mut metered, nanos) = CpuMetered::new(work);
        while metered.next().await.is_some() {}
        assert!(
            nanos.load(Ordering::Relaxed) > 100_000,
            "{} ns",
            nanos.load(Ordering::Relaxed)
        );
    }
}
