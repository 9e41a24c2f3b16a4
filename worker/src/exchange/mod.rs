//! Exchanges between stages: how rows move from the workers of one stage to the
//! workers of the next.
//!
//! A stage's task runs [`ShuffleWriteExec`]: it splits its rows by the hash of the
//! stage's keys (or sends them all to one partition, for a broadcast or a final
//! merge) and writes each output partition to an Arrow IPC file on the worker's
//! local disk. Materializing exchanges on disk is what bounds memory: a slow
//! consumer never makes a producer buffer rows, and a consumer that fails can read
//! the same output again. A task of the next stage runs [`ShuffleReadExec`], which
//! reads its partition from every producer task: straight from the file when it is
//! in this process, over Flight (`do_get` of a `shuffle:` ticket) otherwise.
//!
//! A hash exchange can instead be *streamed* (`stream.rs`): the consumer reads the
//! producer's partitions while the producer runs, with no file between them.
//! A task can also report a summary of its hash keys (`keys.rs`), which the
//! coordinator turns into a filter on another stage.

mod codec;
mod keys;
mod read;
mod report;
mod store;
mod stream;
mod write;

pub use codec::{ShuffleReadCodec, ShuffleWriteCodec};
pub use keys::KeySummary;
pub use read::{lost_output, LostOutput, ShuffleLocation, ShuffleReadExec};
pub use report::TaskReport;
pub use store::{store, ExchangeStore, SHUFFLE_TICKET_PREFIX};
pub use stream::{stream_key, streams, AlreadyTaken, StreamItem, Streams, STREAM_TICKET_PREFIX};
pub(crate) use write::spilled_bytes;
pub use write::{ShuffleOutput, ShuffleWriteExec};

/// Name of the worker action that deletes a query's exchange files.
pub const ACTION_RELEASE: &str = "release";
