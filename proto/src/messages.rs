//! Protobuf messages exchanged between coordinator and workers.

use prost::Message;

use crate::ProtoError;

/// The Flight ticket of one fragment: one partition of a serialized physical plan.
#[derive(Clone, PartialEq, Message)]
pub struct FragmentTicket {
    /// Query id, for logs and cancellation.
    #[prost(string, tag = "1")]
    pub query_id: String,
    /// Fragment id, unique within the query.
    #[prost(uint32, tag = "2")]
    pub fragment_id: u32,
    /// Which output partition of `plan` this fragment produces.
    #[prost(uint32, tag = "3")]
    pub partition: u32,
    /// A datafusion-proto `PhysicalPlanNode`, encoded with [`crate::QuiverCodec`].
    #[prost(bytes = "vec", tag = "4")]
    pub plan: Vec<u8>,
    /// Memory limit for this fragment in bytes; 0 means the worker's default.
    #[prost(uint64, tag = "5")]
    pub memory_limit: u64,
    /// A result endpoint handed to a Flight SQL client (`workers.client_endpoints`):
    /// the ticket's seal is the caller's authorization, as no cluster call token
    /// comes with it, and the batches are cast to [`crate::client_types`].
    #[prost(bool, tag = "6")]
    pub for_client: bool,
    /// The worker's address as the coordinator knows it (and as stream locations
    /// name it): a worker reads streams produced at its own address in-process.
    #[prost(string, tag = "7")]
    pub worker_address: String,
    /// The coordinator forwards this fragment's Flight data to a client as it is:
    /// the batches are cast to [`crate::client_types`] here, and the stream still
    /// closes with the fragment's statistics, which the coordinator keeps.
    #[prost(bool, tag = "8")]
    pub relay: bool,
    /// With `for_client` or `relay`: string and binary views stay views (the
    /// client asked for them).
    #[prost(bool, tag = "9")]
    pub string_views: bool,
    /// Where the fragment's exchange outputs live on the worker and what a release
    /// deletes; empty = `query_id`. Two runs of one query (a streamed run and the
    /// files run that replaces it) have their own, so releasing one never deletes
    /// the other's files.
    #[prost(string, tag = "10")]
    pub exchange_scope: String,
}

/// Load statistics a worker reports through the `stats` action.
#[derive(Clone, PartialEq, Message)]
pub struct WorkerStats {
    #[prost(string, tag = "1")]
    pub worker_id: String,
    #[prost(uint32, tag = "2")]
    pub running_fragments: u32,
    #[prost(uint64, tag = "3")]
    pub completed_fragments: u64,
    #[prost(uint64, tag = "4")]
    pub failed_fragments: u64,
    #[prost(uint64, tag = "5")]
    pub rows_sent: u64,
    #[prost(uint64, tag = "6")]
    pub bytes_sent: u64,
    #[prost(uint64, tag = "7")]
    pub memory_reserved: u64,
    /// CPU time the worker process has used (user + system), in seconds.
    #[prost(double, tag = "8")]
    pub cpu_seconds: f64,
    /// Resident memory of the worker process.
    #[prost(uint64, tag = "9")]
    pub rss_bytes: u64,
    /// Bytes of exchange files the worker holds on disk.
    #[prost(uint64, tag = "10")]
    pub exchange_bytes: u64,
}

/// What a fragment cost, sent by the worker as the `app_metadata` of the last
/// (batch-less) message of its stream.
#[derive(Clone, PartialEq, Message)]
pub struct FragmentStats {
    #[prost(uint64, tag = "1")]
    pub rows: u64,
    #[prost(uint64, tag = "2")]
    pub bytes: u64,
    #[prost(uint64, tag = "3")]
    pub spilled_bytes: u64,
    #[prost(uint64, tag = "4")]
    pub elapsed_ms: u64,
    /// CPU time of the threads while they ran the fragment's operators, in nanoseconds.
    #[prost(uint64, tag = "5")]
    pub cpu_nanos: u64,
    /// Highest memory the fragment's pool had reserved at once.
    #[prost(uint64, tag = "6")]
    pub peak_memory: u64,
    /// Bytes the fragment's scans read from each source.
    #[prost(message, repeated, tag = "7")]
    pub reads: Vec<SourceRead>,
}

/// Bytes one fragment read from one source.
#[derive(Clone, PartialEq, Message)]
pub struct SourceRead {
    /// The source's name in the config (`files`, `tpch`, …).
    #[prost(string, tag = "1")]
    pub source: String,
    #[prost(uint64, tag = "2")]
    pub bytes: u64,
}

/// The answer of the worker's `instance` action: who this process is, whether it
/// drains, and when its owning coordinator last called it (the owner's heartbeat).
#[derive(Clone, PartialEq, Message)]
pub struct WorkerInstance {
    /// Random per process: a restarted or replaced worker at the same address has another.
    #[prost(string, tag = "1")]
    pub instance_id: String,
    /// Shutting down: finishes what it runs, takes nothing new.
    #[prost(bool, tag = "2")]
    pub draining: bool,
    /// Instance id of the coordinator that last called with its credentials.
    #[prost(string, tag = "3")]
    pub owner: String,
    /// Milliseconds since that call; absent when no coordinator called yet.
    #[prost(uint64, optional, tag = "4")]
    pub owner_seen_ms: Option<u64>,
    /// Fragments running now.
    #[prost(uint32, tag = "5")]
    pub running_fragments: u32,
}

impl WorkerInstance {
    pub fn decode_from(buf: &[u8]) -> Result<Self, ProtoError> {
        Self::decode(buf).map_err(|source| ProtoError::Decode {
            what: "worker instance",
            source,
        })
    }
}

impl FragmentStats {
    pub fn decode_from(buf: &[u8]) -> Result<Self, ProtoError> {
        Self::decode(buf).map_err(|source| ProtoError::Decode {
            what: "fragment stats",
            source,
        })
    }
}

impl FragmentTicket {
    /// The exchange namespace of the fragment: `exchange_scope`, else the query.
    pub fn scope(&self) -> &str {
        match self.exchange_scope.is_empty() {
            true => &self.query_id,
            false => &self.exchange_scope,
        }
    }

    pub fn encode_to_bytes(&self) -> Vec<u8> {
        self.encode_to_vec()
    }

    pub fn decode_from(buf: &[u8]) -> Result<Self, ProtoError> {
        Self::decode(buf).map_err(|source| ProtoError::Decode {
            what: "fragment ticket",
            source,
        })
    }
}

impl WorkerStats {
    pub fn decode_from(buf: &[u8]) -> Result<Self, ProtoError> {
        Self::decode(buf).map_err(|source| ProtoError::Decode {
            what: "worker stats",
            source,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticket_round_trips() {
        let t = FragmentTicket {
            query_id: "q1".into(),
            fragment_id: 3,
            partition: 7,
            plan: vec![1, 2, 3],
            memory_limit: 1 << 30,
            for_client: true,
            worker_address: String::new(),
            relay: false,
            string_views: true,
            exchange_scope: String::new(),
        };
        assert_eq!(
            FragmentTicket::decode_from(&t.encode_to_bytes()).ok(),
            Some(t)
        );
    }

    #[test]
    fn garbage_is_a_clear_error() {
        let err = FragmentTicket::decode_from(&[0xff, 0xff, 0xff]).unwrap_err();
        assert!(
            err.to_string().contains("malformed fragment ticket"),
            "{err}"
        );
    }
}
