//! Streamed exchanges: a producer task hands each output partition to its
//! consumer while both run, through a small bounded channel, with no file between.
//!
//! Each partition of a streamed output has exactly one reader (the consumer task,
//! or root fragment, of the same index), so a partition is one channel: the
//! producer takes its sending end, the reader its receiving end, whichever comes
//! first creates it. A full channel makes the producer wait (backpressure), which
//! bounds the memory an exchange holds to [`CHANNEL_BATCHES`] batches per partition.
//!
//! A reader in the producer's own process takes the channel directly (the batches
//! are never encoded); a reader elsewhere asks the producer's worker for a
//! `stream:<key>:<partition>` ticket, served from the same channel as Flight data.
//! Nothing is kept for a second reader: a lost stream is recovered by running the
//! query again with exchanges through files (the coordinator's scheduler does that).

use parking_lot::Mutex;
use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use datafusion::arrow::record_batch::RecordBatch;
use tokio::sync::mpsc;

/// Flight tickets that read a streamed exchange partition start with this.
pub const STREAM_TICKET_PREFIX: &str = "stream:";

/// Batches buffered per partition before the producer waits for its reader.
pub const CHANNEL_BATCHES: usize = 4;

/// What a producer sends: a batch, or its own failure as text (the reader fails
/// with that message; it is the query's error, not a lost stream).
pub type StreamItem = Result<RecordBatch, String>;

/// A partition's channel. Once both ends are taken it stays as a marker, so a
/// second reader is refused instead of waiting on a new channel nobody feeds;
/// the query's release removes it.
struct Channel {
    tx: Option<mpsc::Sender<StreamItem>>,
    rx: Option<mpsc::Receiver<StreamItem>>,
    created: Instant,
}

/// Channels older than this are dropped at the next release even if their query
/// never released them (its coordinator died).
const ORPHAN_AGE: Duration = Duration::from_secs(3600);

/// The streamed exchange partitions of this process (embedded workers share it).
#[derive(Default)]
pub struct Streams {
    channels: Mutex<HashMap<(String, usize), Channel>>,
    /// Worker addresses served by this process: a reader of a stream produced at
    /// one of them takes the channel directly.
    local: Mutex<HashSet<String>>,
}

/// The process-wide streams.
pub fn streams() -> &'static Streams {
    static STREAMS: OnceLock<Streams> = OnceLock::new();
    STREAMS.get_or_init(Streams::default)
}

/// Why an end of a stream cannot be taken.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("exchange stream {key} partition {partition} already has its {end}")]
pub struct AlreadyTaken {
    pub key: String,
    pub partition: usize,
    pub end: &'static str,
}

impl Streams {
    /// The producer's end of partition `partition` of output `key`.
    pub fn sender(
        &self,
        key: &str,
        partition: usize,
    ) -> Result<mpsc::Sender<StreamItem>, AlreadyTaken> {
        self.take(key, partition, |c| c.tx.take(), "producer")
    }

    /// The reader's end of partition `partition` of output `key`.
    pub fn receiver(
        &self,
        key: &str,
        partition: usize,
    ) -> Result<mpsc::Receiver<StreamItem>, AlreadyTaken> {
        self.take(key, partition, |c| c.rx.take(), "reader")
    }

    fn take<T>(
        &self,
        key: &str,
        partition: usize,
        end: impl FnOnce(&mut Channel) -> Option<T>,
        name: &'static str,
    ) -> Result<T, AlreadyTaken> {
        let mut channels = self.channels.lock();
        let id = (key.to_string(), partition);
        let channel = channels.entry(id.clone()).or_insert_with(|| {
            let (tx, rx) = mpsc::channel(CHANNEL_BATCHES);
            Channel {
                tx: Some(tx),
                rx: Some(rx),
                created: Instant::now(),
            }
        });
        end(channel).ok_or(AlreadyTaken {
            key: key.to_string(),
            partition,
            end: name,
        })
    }

    /// Drops the channels of `query` nobody took both ends of (a cancelled or
    /// failed query): their producers and readers then see the stream end.
    pub fn release(&self, query: &str) -> usize {
        let prefix = format!("{}/", super::store::segment(query));
        let mut channels = self.channels.lock();
        let before = channels.len();
        channels
            .retain(|(key, _), c| !key.starts_with(&prefix) && c.created.elapsed() < ORPHAN_AGE);
        before - channels.len()
    }

    /// Partitions with an end nobody has taken yet.
    pub fn pending(&self) -> usize {
        self.channels
            .lock()
            .values()
            .filter(|c| c.tx.is_some() || c.rx.is_some())
            .count()
    }

    /// Records that this process serves the worker at `address`.
    pub fn mark_local(&self, address: &str) {
        if !address.is_empty() {
            self.local.lock().insert(address.to_string());
        }
    }

    pub fn is_local(&self, address: &str) -> bool {
        self.local.lock().contains(address)
    }
}

/// The key of task `task`'s streamed output in stage `stage` of query `query`'s
/// run `run` (a run id keeps two runs of one session apart).
pub fn stream_key(query: &str, run: &str, stage: u32, task: usize) -> String {
    format!(
        "{}/{}-s{stage}-t{task}",
        super::store::segment(query),
        super::store::segment(run)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::Int32Array;
    use std::sync::Arc;

    fn batch(v: i32) -> RecordBatch {
        RecordBatch::try_from_iter(vec![(
            "v",
            Arc::new(Int32Array::from(vec![v])) as Arc<dyn datafusion::arrow::array::Array>,
        )])
        .expect("batch")
    }

    #[tokio::test]
    async fn either_end_may_come_first_and_each_is_taken_once() {
        let s = Streams::default();
        // The reader first.
        let mut rx = s.receiver("q/a-s1-t0", 2).expect("reader");
        assert_eq!(s.pending(), 1);
        let tx = s.sender("q/a-s1-t0", 2).expect("producer");
        assert_eq!(s.pending(), 0, "both ends out");
        tx.send(Ok(batch(7))).await.expect("send");
        drop(tx);
        assert_eq!(
            rx.recv().await.map(|b| b.map(|b| b.num_rows())),
            Some(Ok(1))
        );
        assert!(
            rx.recv().await.is_none(),
            "the producer's end closes the stream"
        );
        // The producer first; a second reader is refused, by name.
        let tx = s.sender("q/a-s1-t1", 0).expect("producer");
        assert!(s.sender("q/a-s1-t1", 0).is_err());
        let rx = s.receiver("q/a-s1-t1", 0).expect("reader");
        let again = s.receiver("q/a-s1-t1", 0).expect_err("second reader");
        assert_eq!(again.end, "reader");
        assert!(
            again.to_string().contains("q/a-s1-t1 partition 0"),
            "{again}"
        );
        drop((tx, rx));
        // The release forgets the query's channels, taken or not.
        assert_eq!(s.release("q"), 2);
    }

    #[tokio::test]
    async fn a_full_channel_holds_the_producer_and_release_frees_it() {
        let s = Streams::default();
        let tx = s
            .sender(&stream_key("q 1", "r", 1, 0), 0)
            .expect("producer");
        for i in 0..CHANNEL_BATCHES {
            tx.try_send(Ok(batch(i as i32))).expect("room");
        }
        assert!(tx.try_send(Ok(batch(0))).is_err(), "bounded");
        assert_eq!(s.release("other"), 0);
        assert_eq!(s.release("q 1"), 1);
        // The reader's end is gone with the release: the producer stops.
        assert!(tx.send(Ok(batch(0))).await.is_err());
    }

    /// A hash exchange streamed in one process: the producer runs while its
    /// readers read, each row reaches exactly the partition of its key, and the
    /// producer's report counts what it sent.
    #[tokio::test]
    async fn a_streamed_exchange_delivers_every_row_once_while_the_producer_runs() {
        use crate::exchange::{
            ShuffleLocation, ShuffleOutput, ShuffleReadExec, ShuffleWriteExec, TaskReport,
        };
        use datafusion::datasource::memory::MemorySourceConfig;
        use datafusion::physical_expr::expressions::col;
        use datafusion::physical_plan::{collect, ExecutionPlan, Partitioning};
        use datafusion::prelude::SessionContext;

        // 40 batches of 100 rows: far more than the channels hold, so the
        // producer must wait for its readers.
        let batches: Vec<RecordBatch> = (0..40)
            .map(|b| {
                RecordBatch::try_from_iter(vec![(
                    "v",
                    Arc::new(Int32Array::from_iter_values(b * 100..(b + 1) * 100))
                        as Arc<dyn datafusion::arrow::array::Array>,
                )])
                .expect("batch")
            })
            .collect();
        let schema = batches[0].schema();
        let source =
            MemorySourceConfig::try_new_exec(&[batches], schema.clone(), None).expect("source");
        let keys = vec![col("v", &schema).expect("column")];
        let key = stream_key("unit", "run1", 1, 0);
        let write = Arc::new(
            ShuffleWriteExec::new(1, source, ShuffleOutput::Hash(keys.clone(), 3))
                .streamed(key.clone()),
        );
        let address = "http://in-process.test:1";
        streams().mark_local(address);
        let read = ShuffleReadExec::with_locations(
            1,
            schema.clone(),
            Partitioning::Hash(keys, 3),
            vec![ShuffleLocation {
                address: address.into(),
                key: key.clone(),
                stream: true,
            }],
        );
        let ctx = SessionContext::new().task_ctx();
        let producer = tokio::spawn(collect(write, ctx.clone()));
        // Readers run at once, as the tasks of a stage do: a reader that waited for
        // another to finish would leave the producer stuck on its full channel.
        let readers = (0..3).map(|p| {
            let stream = read.execute(p, ctx.clone()).expect("read");
            futures::TryStreamExt::try_collect::<Vec<RecordBatch>>(stream)
        });
        let mut seen = vec![];
        let mut per_partition = vec![];
        for got in futures::future::join_all(readers).await {
            let mut values: Vec<i32> = got
                .expect("rows")
                .iter()
                .flat_map(|b| {
                    b.column(0)
                        .as_any()
                        .downcast_ref::<Int32Array>()
                        .expect("ints")
                        .values()
                        .to_vec()
                })
                .collect();
            per_partition.push(values.len() as u64);
            seen.append(&mut values);
        }
        let report = TaskReport::from_batches(&producer.await.expect("join").expect("producer"))
            .expect("report");
        seen.sort_unstable();
        assert_eq!(seen, (0..4000).collect::<Vec<_>>(), "every row once");
        assert_eq!(
            report.rows, per_partition,
            "the report counts what each reader got"
        );
        assert!(per_partition.iter().all(|&n| n > 0), "{per_partition:?}");
        assert_eq!(report.key, key);
        // Only this test's channels: other tests of the process use the same streams.
        let left = streams()
            .channels
            .lock()
            .iter()
            .filter(|((k, _), c)| *k == key && (c.tx.is_some() || c.rx.is_some()))
            .count();
        assert_eq!(left, 0, "no channel left behind");
    }

    #[test]
    fn local_addresses() {
        let s = Streams::default();
        s.mark_local("http://127.0.0.1:1");
        s.mark_local("");
        assert!(s.is_local("http://127.0.0.1:1"));
        assert!(!s.is_local("http://127.0.0.1:2") && !s.is_local(""));
    }
}
