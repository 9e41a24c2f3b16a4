//! `[workers]`: where fragments run (embedded, static, docker, dns), how many and
//! how large, and how a query's stages exchange rows.

use serde::Deserialize;

use super::ByteSize;

/// How rows move between a query's stages (`workers.exchange_mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ExchangeMode {
    /// Hash exchanges stream from producer to consumer while both run; a query
    /// that loses a worker before its first row runs again with files.
    #[default]
    Stream,
    /// Every stage writes its output to exchange files before the next starts.
    Files,
}
fn default_join_keys_max() -> usize {
    quiver_connectors::join_keys::JoinKeyLimits::default().list
}

fn default_join_key_array_max() -> usize {
    quiver_connectors::join_keys::JoinKeyLimits::default().array
}
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WorkerMode {
    /// Workers run inside the coordinator process, as Flight servers on loopback.
    #[default]
    Embedded,
    /// Workers are `quiver worker` processes at fixed addresses.
    Static,
    /// Workers are containers this coordinator starts, scales and removes through
    /// the Docker API.
    Docker,
    /// Workers are the addresses a DNS name resolves to (a Kubernetes headless Service).
    Dns,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkersConfig {
    #[serde(default)]
    pub mode: WorkerMode,
    /// Number of embedded workers.
    #[serde(default = "default_worker_count")]
    pub count: usize,
    /// Addresses of static workers, e.g. `http://10.0.0.5:50061`.
    #[serde(default)]
    pub addresses: Vec<String>,
    /// Memory limit of one fragment, e.g. "2GiB" or "512MiB".
    #[serde(default = "default_fragment_memory")]
    pub fragment_memory_limit: ByteSize,
    /// Seconds between health checks.
    #[serde(default = "default_health_interval")]
    pub health_interval_secs: f64,
    // Docker mode: the worker containers and how the autoscaler sizes them.
    /// Image of the worker containers (built by docker/build-images.sh).
    #[serde(default = "default_image")]
    pub image: String,
    /// Fewest and most worker containers. `min = 0` scales to zero: with no load
    /// every worker is retired, and the next query that needs one starts it.
    #[serde(default = "default_min_workers")]
    pub min: usize,
    #[serde(default = "default_max_workers")]
    pub max: usize,
    /// CPU limit of one container (Docker's --cpus); 0 = none.
    #[serde(default = "default_cpus")]
    pub cpus: f64,
    /// Memory limit of one container; absent = none.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Label `quiver.cluster=<cluster>` on every container and network this
    /// coordinator creates; leftovers with the label are removed at start.
    #[serde(default = "default_cluster")]
    pub cluster: String,
    /// Docker network of the workers; default `quiver-<cluster>`, created and removed
    /// by the coordinator. Name an existing network (e.g. Compose's) to join it instead.
    #[serde(default)]
    pub network: Option<String>,
    /// Bind mounts and named volumes for the workers, as `source:target[:ro]`.
    #[serde(default)]
    pub volumes: Vec<String>,
    /// Scale up when the running fragments per worker reach this.
    #[serde(default = "default_busy_fragments")]
    pub busy_fragments: u32,
    /// A worker idle this long is retired (down to `min`).
    #[serde(default = "default_idle_secs")]
    pub idle_secs: u64,
    /// Least time between two scaling decisions.
    #[serde(default = "default_cooldown_secs")]
    pub cooldown_secs: u64,
    /// A new container must answer its health check within this time.
    #[serde(default = "default_start_timeout_secs")]
    pub start_timeout_secs: u64,
    /// DNS mode: every address `service` resolves to is a worker on `port`.
    #[serde(default)]
    pub service: Option<String>,
    #[serde(default = "default_worker_port")]
    pub port: u16,
    // Distributed execution.
    /// Cut queries into stages that exchange rows between workers (joins and
    /// aggregates run on workers); false = only scans run on workers.
    #[serde(default = "default_true")]
    pub exchanges: bool,
    /// Most stage tasks the scheduler runs on one worker at a time.
    #[serde(default = "default_max_fragments_per_worker")]
    pub max_fragments_per_worker: u32,
    /// How rows move between stages: "stream" (a consumer reads its producers while
    /// they run) or "files" (each stage finishes into exchange files first, and a
    /// lost output is recomputed alone). docs/distributed.md#exchanges.
    #[serde(default)]
    pub exchange_mode: ExchangeMode,
    /// A partitioned join's build-side keys filter the stage that produces its
    /// probe side before it starts (docs/distributed.md#dynamic-filters-across-stages).
    #[serde(default = "default_true")]
    pub dynamic_filters: bool,
    /// Attempts of one stage task (its worker died, or an input was lost) before the query fails.
    #[serde(default = "default_task_attempts")]
    pub task_attempts: u32,
    /// Memory of one query across all workers, e.g. "4GiB"; each task gets an even
    /// share for the tasks that can run at once, at most `fragment_memory_limit`.
    #[serde(default = "default_query_memory")]
    pub query_memory_limit: ByteSize,
    /// A query whose scanned files add up to at most this runs whole on one worker
    /// instead of as stages (0 = always stages).
    #[serde(default = "default_single_stage_max_bytes")]
    pub single_stage_max_bytes: ByteSize,
    /// A join side estimated at most this big is built whole by every task of the
    /// join (broadcast) instead of shuffling both sides by the join keys.
    #[serde(default = "default_broadcast_join_max_bytes")]
    pub broadcast_join_max_bytes: ByteSize,
    /// Flight SQL clients fetch a result whose partitions need no merge straight
    /// from the workers: its FlightInfo lists one endpoint per partition at the
    /// worker's address, which clients must be able to reach.
    #[serde(default)]
    pub client_endpoints: bool,
    /// Most distinct keys of a join's build side sent into a database's statement
    /// as `key IN (…)`; more keys send only their range (docs/sources.md#join-keys).
    #[serde(default = "default_join_keys_max")]
    pub join_keys_max: usize,
    /// Most distinct integer keys beyond `join_keys_max` sent to PostgreSQL as one
    /// array (`key = ANY('{…}'::int8[])`); 0 = only the range.
    #[serde(default = "default_join_key_array_max")]
    pub join_key_array_max: usize,
    /// IPC compression of the Flight streams between cluster processes: `auto`
    /// (LZ4 when the reader is on another host), `none` or `lz4`
    /// (docs/distributed.md#compression-between-hosts).
    #[serde(default)]
    pub exchange_compression: quiver_worker::LinkCompression,
}

fn default_single_stage_max_bytes() -> ByteSize {
    ByteSize(64 << 20)
}

fn default_broadcast_join_max_bytes() -> ByteSize {
    ByteSize(16 << 20)
}

fn default_true() -> bool {
    true
}
fn default_max_fragments_per_worker() -> u32 {
    4
}
fn default_task_attempts() -> u32 {
    4
}

fn default_image() -> String {
    format!("quiver:{}", env!("CARGO_PKG_VERSION"))
}
fn default_min_workers() -> usize {
    1
}
fn default_max_workers() -> usize {
    4
}
fn default_cpus() -> f64 {
    1.0
}
fn default_cluster() -> String {
    "default".into()
}
fn default_busy_fragments() -> u32 {
    4
}
fn default_idle_secs() -> u64 {
    60
}
fn default_cooldown_secs() -> u64 {
    10
}
fn default_start_timeout_secs() -> u64 {
    30
}
fn default_worker_port() -> u16 {
    50061
}

impl WorkersConfig {
    /// How many of a join's keys reach a database.
    pub fn join_keys(&self) -> quiver_connectors::join_keys::JoinKeyLimits {
        quiver_connectors::join_keys::JoinKeyLimits {
            list: self.join_keys_max,
            array: self.join_key_array_max,
        }
    }
}

impl Default for WorkersConfig {
    fn default() -> Self {
        Self {
            mode: WorkerMode::Embedded,
            count: default_worker_count(),
            join_keys_max: default_join_keys_max(),
            join_key_array_max: default_join_key_array_max(),
            addresses: vec![],
            fragment_memory_limit: default_fragment_memory(),
            health_interval_secs: default_health_interval(),
            image: default_image(),
            min: default_min_workers(),
            max: default_max_workers(),
            cpus: default_cpus(),
            memory: None,
            cluster: default_cluster(),
            network: None,
            volumes: vec![],
            busy_fragments: default_busy_fragments(),
            idle_secs: default_idle_secs(),
            cooldown_secs: default_cooldown_secs(),
            start_timeout_secs: default_start_timeout_secs(),
            service: None,
            port: default_worker_port(),
            exchanges: true,
            exchange_mode: ExchangeMode::default(),
            dynamic_filters: true,
            max_fragments_per_worker: default_max_fragments_per_worker(),
            task_attempts: default_task_attempts(),
            query_memory_limit: default_query_memory(),
            single_stage_max_bytes: default_single_stage_max_bytes(),
            broadcast_join_max_bytes: default_broadcast_join_max_bytes(),
            client_endpoints: false,
            exchange_compression: Default::default(),
        }
    }
}

fn default_worker_count() -> usize {
    2
}
fn default_query_memory() -> ByteSize {
    ByteSize(16 << 30)
}
fn default_fragment_memory() -> ByteSize {
    ByteSize(2 << 30)
}
fn default_health_interval() -> f64 {
    1.0
}
