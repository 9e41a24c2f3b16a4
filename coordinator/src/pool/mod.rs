//! The worker pool: which workers exist, which are healthy, and a Flight client to each.
//!
//! Workers come from a provisioner chosen by `workers.mode` (`embedded`: Flight
//! servers inside this process on loopback ports; `static`: addresses from the
//! config; `docker`: containers started and scaled by the autoscaler; `dns`: the
//! addresses a name resolves to). A health loop asks every worker's `health`
//! action and takes the ones that do not answer out of planning until they answer
//! again. With `workers.min = 0` a Docker pool scales to zero and a query that needs
//! a worker waits for one (`wake`); a DNS pool (Kubernetes) waits for KEDA, which
//! reads what the pool wants through `keda.rs`.

mod autoscaler;
mod dns;
mod docker;
mod embedded;
mod events;
mod health;
pub mod keda;
mod provision;
mod sizing;

use parking_lot::RwLock;
use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow_flight::Ticket;
use quiver_connectors::SourceConfig;
use quiver_proto::{FragmentTicket, QuiverCodec};
use quiver_worker::{ClusterCredentials, WorkerClient};

use crate::config::{WorkerMode, WorkersConfig};
use crate::security::cluster::ClusterSecret;

pub use embedded::EmbeddedWorkers;
use provision::{Provision, StaticWorkers};

/// Largest gRPC message exchanged with workers.
pub(crate) const MAX_MESSAGE_BYTES: usize = 64 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("invalid worker address '{address}': {message}")]
    Address { address: String, message: String },
    #[error("cannot start embedded worker: {0}")]
    Embedded(#[from] quiver_worker::WorkerError),
    #[error("{0}")]
    Docker(String),
    #[error("{0}")]
    Scale(String),
}

/// Where a worker is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum WorkerState {
    /// Started, not yet answering its health check: not planned on.
    Starting = 0,
    /// Answers its health check: planned on.
    Ready = 1,
    /// Stopped answering: not planned on until it answers again (or is replaced).
    Unhealthy = 2,
    /// Being retired: runs what it has, gets nothing new.
    Draining = 3,
}

impl WorkerState {
    fn from_u8(v: u8) -> Self {
        match v {
            0 => Self::Starting,
            1 => Self::Ready,
            2 => Self::Unhealthy,
            _ => Self::Draining,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Starting => "starting",
            Self::Ready => "ready",
            Self::Unhealthy => "unhealthy",
            Self::Draining => "draining",
        }
    }
}

/// One worker as the coordinator sees it.
#[derive(Debug)]
pub struct Worker {
    pub id: String,
    pub address: String,
    client: WorkerClient,
    credentials: ClusterCredentials,
    state: AtomicU8,
    /// When the state last changed.
    since: parking_lot::Mutex<Instant>,
    /// Fragments this coordinator is currently reading from the worker.
    running: AtomicU32,
    /// When `running` last dropped to zero (or the worker was added).
    idle_since: parking_lot::Mutex<Instant>,
    /// The instance id of the process that first answered at `address`.
    instance: parking_lot::Mutex<Option<String>>,
}

impl Worker {
    fn connect_lazy(
        id: String,
        address: String,
        credentials: ClusterCredentials,
    ) -> Result<Self, PoolError> {
        let client = quiver_worker::cluster_auth::worker_client(&address, credentials.clone())
            .map_err(|e| PoolError::Address {
                address: address.clone(),
                message: e.to_string(),
            })?;
        let now = Instant::now();
        Ok(Self {
            id,
            address,
            client,
            credentials,
            state: AtomicU8::new(WorkerState::Starting as u8),
            since: parking_lot::Mutex::new(now),
            running: AtomicU32::new(0),
            idle_since: parking_lot::Mutex::new(now),
            instance: parking_lot::Mutex::new(None),
        })
    }

    /// A client for one call; clones share the connection. Every call it makes
    /// carries the cluster's credentials.
    pub fn client(&self) -> WorkerClient {
        self.client.clone()
    }

    /// The worker's own load figures (its `stats` action), or None when it does
    /// not answer within `within`.
    pub async fn stats(&self, within: std::time::Duration) -> Option<quiver_proto::WorkerStats> {
        let ask = async {
            let action = arrow_flight::Action {
                r#type: quiver_proto::ACTION_STATS.into(),
                body: Default::default(),
            };
            let mut answer = self.client().do_action(action).await.ok()?.into_inner();
            let body = answer.message().await.ok()??.body;
            quiver_proto::WorkerStats::decode_from(&body).ok()
        };
        tokio::time::timeout(within, ask).await.ok().flatten()
    }

    /// The sealed ticket of `fragment` for this worker; it names the worker by the
    /// address stream locations use, so the worker reads its own streams in-process.
    pub fn ticket(&self, fragment: &FragmentTicket) -> Ticket {
        let fragment = FragmentTicket {
            worker_address: self.address.clone(),
            ..fragment.clone()
        };
        Ticket {
            ticket: self.credentials.seal(fragment.encode_to_bytes()),
        }
    }

    /// The ticket of a result endpoint a client fetches from this worker, sealed for `ttl`.
    pub fn client_ticket(&self, fragment: &FragmentTicket, ttl: std::time::Duration) -> Ticket {
        Ticket {
            ticket: self.credentials.seal_for(fragment.encode_to_bytes(), ttl),
        }
    }

    pub fn is_healthy(&self) -> bool {
        self.state() == WorkerState::Ready
    }

    pub fn state(&self) -> WorkerState {
        WorkerState::from_u8(self.state.load(Ordering::Relaxed))
    }

    /// How long the worker has been in its current state.
    pub fn in_state_for(&self) -> Duration {
        self.since.lock().elapsed()
    }

    /// How long the worker has run no fragment (zero while it runs one).
    pub fn idle_for(&self) -> Duration {
        if self.running_fragments() > 0 {
            return Duration::ZERO;
        }
        self.idle_since.lock().elapsed()
    }

    fn set_state(&self, state: WorkerState) -> bool {
        let was = WorkerState::from_u8(self.state.swap(state as u8, Ordering::Relaxed));
        if was != state {
            {
                let mut since = self.since.lock();
                *since = Instant::now();
            }
        }
        was != state
    }

    /// Records a health check. A draining worker stays draining.
    pub fn set_healthy(&self, healthy: bool) {
        let state = self.state();
        if state == WorkerState::Draining {
            return;
        }
        let next = match (state, healthy) {
            (_, true) => WorkerState::Ready,
            (WorkerState::Starting, false) => WorkerState::Starting,
            (_, false) => WorkerState::Unhealthy,
        };
        if self.set_state(next) {
            match next {
                WorkerState::Ready => {
                    tracing::info!(worker = %self.id, address = %self.address, "worker is healthy")
                }
                _ => {
                    tracing::warn!(worker = %self.id, address = %self.address, "worker is unreachable; not planning on it")
                }
            }
        }
    }

    /// Takes the worker out of planning for good; it finishes what it runs.
    pub fn start_draining(&self) {
        self.set_state(WorkerState::Draining);
    }

    /// Records the instance id a health answer carries; returns the one known
    /// before when it differs (the process at the address is not this worker).
    fn adopt_instance(&self, answered: &str) -> Option<String> {
        let mut known = self.instance.lock();
        match known.as_deref() {
            None => {
                *known = Some(answered.to_string());
                None
            }
            Some(k) if k == answered => None,
            Some(k) => Some(k.to_string()),
        }
    }

    /// The process this worker was is gone (with its exchange outputs): tasks
    /// running on it give up, and it is never planned on again.
    fn mark_lost(&self) {
        self.set_state(WorkerState::Unhealthy);
    }

    /// Instance id of the worker process, once it answered.
    pub fn instance_id(&self) -> Option<String> {
        self.instance.lock().clone()
    }

    pub fn running_fragments(&self) -> u32 {
        self.running.load(Ordering::Relaxed)
    }

    /// Counts a fragment as running until the returned guard drops.
    pub fn track_fragment(self: &Arc<Self>) -> RunningFragment {
        self.running.fetch_add(1, Ordering::Relaxed);
        RunningFragment(self.clone())
    }
}

/// Counts a waiter in [`WorkerPool::load`] while alive.
pub struct Waiting<'a>(&'a WorkerPool);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.waiting.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Keeps a fragment counted on its worker while alive.
pub struct RunningFragment(Arc<Worker>);

impl Drop for RunningFragment {
    fn drop(&mut self) {
        if self.0.running.fetch_sub(1, Ordering::Relaxed) == 1 {
            {
                let mut idle = self.0.idle_since.lock();
                *idle = Instant::now();
            }
        }
    }
}

/// All workers known to the coordinator.
pub struct WorkerPool {
    workers: RwLock<Vec<Arc<Worker>>>,
    /// How workers come and go (`provision.rs`).
    provisioner: Box<dyn Provision>,
    /// What every call to a worker presents.
    credentials: ClusterCredentials,
    config: WorkersConfig,
    fragment_memory_limit: u64,
    /// Scaling decisions, newest last, and their counts.
    pub(crate) events: events::EventLog,
    /// A size set by `quiver workers scale N`; None lets the autoscaler decide.
    target: parking_lot::Mutex<Option<usize>>,
    counters: crate::observe::counters::Counters,
    /// Set by `shutdown`: the autoscaler stops and no worker is started any more.
    closing: std::sync::atomic::AtomicBool,
    /// This coordinator's id: its heartbeat on the workers, and the owner label of
    /// its containers.
    instance_id: String,
    /// One wake from zero at a time; queries arriving meanwhile wait for it.
    waking: tokio::sync::Mutex<()>,
    /// Stage tasks and queries waiting for a worker (a free slot, or one to start).
    waiting: AtomicU32,
}

impl std::fmt::Debug for WorkerPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerPool")
            .field("workers", &self.all().len())
            .finish()
    }
}

impl WorkerPool {
    /// Starts (embedded, docker) or connects to (static, dns) the configured workers
    /// and runs one health round, so the first query is planned on workers that answer.
    pub async fn start(
        config: &WorkersConfig,
        sources: &[SourceConfig],
        codec: QuiverCodec,
        config_text: Option<&str>,
        secret: Option<&ClusterSecret>,
    ) -> Result<Arc<Self>, PoolError> {
        let credentials = crate::security::cluster::credentials(secret);
        let instance_id = uuid::Uuid::new_v4().simple().to_string();
        let (workers, provisioner) = match config.mode {
            WorkerMode::Embedded => {
                let embedded = EmbeddedWorkers::start(
                    config.count,
                    sources,
                    codec,
                    credentials.key().cloned(),
                    config.join_keys(),
                    config.exchange_compression,
                )
                .await?;
                let workers = embedded
                    .addresses()
                    .map(|(id, addr)| Worker::connect_lazy(id, addr, credentials.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                (workers, Box::new(embedded) as Box<dyn Provision>)
            }
            WorkerMode::Static => {
                let workers = config
                    .addresses
                    .iter()
                    .enumerate()
                    .map(|(i, a)| {
                        Worker::connect_lazy(
                            format!("worker-{}", i + 1),
                            normalize_address(a),
                            credentials.clone(),
                        )
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                (workers, Box::new(StaticWorkers) as Box<dyn Provision>)
            }
            WorkerMode::Docker => {
                let docker = docker::DockerWorkers::connect(
                    config,
                    config_text,
                    secret.map(|s| s.secret.as_str()),
                    &instance_id,
                )
                .await?;
                (vec![], Box::new(docker) as Box<dyn Provision>)
            }
            WorkerMode::Dns => {
                let service = config.service.clone().unwrap_or_default();
                let dns = dns::DnsWorkers::new(service, config.port);
                (vec![], Box::new(dns) as Box<dyn Provision>)
            }
        };
        let pool = Arc::new(Self {
            workers: RwLock::new(workers.into_iter().map(Arc::new).collect()),
            provisioner,
            credentials,
            config: config.clone(),
            fragment_memory_limit: config.fragment_memory_limit.0,
            events: events::EventLog::default(),
            target: parking_lot::Mutex::new(None),
            counters: crate::observe::counters::Counters::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            instance_id,
            waking: tokio::sync::Mutex::new(()),
            waiting: AtomicU32::new(0),
        });
        pool.provisioner.begin(&pool).await?;
        pool.check_health().await;
        Ok(pool)
    }

    /// Every worker, healthy or not.
    pub fn all(&self) -> Vec<Arc<Worker>> {
        self.workers.read().clone()
    }

    /// Workers that answered their last health check, least busy first.
    pub fn healthy(&self) -> Vec<Arc<Worker>> {
        let mut healthy: Vec<_> = self.all().into_iter().filter(|w| w.is_healthy()).collect();
        healthy.sort_by_key(|w| w.running_fragments());
        healthy
    }

    /// Query, fragment and retry counts (Prometheus metrics).
    pub fn counters(&self) -> &crate::observe::counters::Counters {
        &self.counters
    }

    pub fn fragment_memory_limit(&self) -> u64 {
        self.fragment_memory_limit
    }

    pub fn mode(&self) -> WorkerMode {
        self.config.mode
    }

    /// The container of a Docker worker.
    pub fn container_of(&self, worker: &str) -> Option<String> {
        self.provisioner.container_of(worker)
    }

    fn add(&self, worker: Arc<Worker>) {
        {
            let mut w = self.workers.write();
            w.push(worker);
        }
    }

    fn remove(&self, id: &str) {
        {
            let mut w = self.workers.write();
            w.retain(|x| x.id != id);
        }
    }

    /// Pins the pool at `size` workers (`None`: the autoscaler decides again).
    /// Only Docker pools can change size.
    pub fn set_target(&self, size: Option<usize>) -> Result<(), PoolError> {
        if !self.provisioner.resizable() {
            let mode = format!("{:?}", self.config.mode).to_lowercase();
            return Err(PoolError::Scale(format!(
                "this {mode} worker pool has a fixed size; only workers.mode = \"docker\" scales"
            )));
        }
        if let Some(n) = size {
            let least = usize::from(self.config.min > 0);
            if n < least || n > self.config.max {
                return Err(PoolError::Scale(format!(
                    "size {n} is outside {least}..={} (workers.max)",
                    self.config.max
                )));
            }
        }
        {
            let mut t = self.target.lock();
            *t = size;
        }
        Ok(())
    }

    /// Handles a worker whose process is gone though something answers at its
    /// address. Docker: its container is removed and the autoscaler starts another.
    /// Static and DNS workers keep their address: a fresh entry takes the new
    /// process on from the next health round.
    async fn lost(&self, worker: &Arc<Worker>, reason: &str) {
        worker.mark_lost();
        self.remove(&worker.id);
        self.events.record("lost", &worker.id, reason);
        tracing::warn!(worker = %worker.id, reason, "worker lost");
        self.provisioner.lost(self, worker).await;
    }

    /// This coordinator's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// True when the pool may have no worker and gets one for a query (`min = 0`):
    /// a Docker pool starts it, a DNS pool waits for it to resolve (KEDA starts it).
    pub fn scales_from_zero(&self) -> bool {
        self.provisioner.scales_from_zero() && self.config.min == 0
    }

    /// Counts the caller as waiting for a worker until the guard drops.
    pub fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::Relaxed);
        Waiting(self)
    }

    /// Fragments running on workers that take work, plus tasks and queries waiting for one.
    pub fn load(&self) -> u32 {
        let running: u32 = self
            .all()
            .iter()
            .filter(|w| w.state() != WorkerState::Draining)
            .map(|w| w.running_fragments())
            .sum();
        running + self.waiting.load(Ordering::Relaxed)
    }

    /// The size the pool wants: one worker per `busy_fragments` of [`Self::load`],
    /// within `min..=max`; a size pinned by `quiver workers scale` wins.
    pub fn wanted_workers(&self) -> usize {
        if let Some(t) = self.target() {
            return t;
        }
        sizing::needed(self.load(), self.config.busy_fragments)
            .clamp(self.config.min, self.config.max.max(self.config.min))
    }

    /// Makes sure a worker is ready for a query that needs one: with none healthy
    /// in a pool that scales to zero, starts `wanted` (1..=max) and waits until
    /// one answers. Returns how long the query waited and how many workers it
    /// started (zero when one was ready).
    pub async fn wake(&self, wanted: usize) -> Result<(Duration, usize), PoolError> {
        if !self.healthy().is_empty() || !self.scales_from_zero() {
            return Ok((Duration::ZERO, 0));
        }
        let began = Instant::now();
        let _waiting = self.waiting();
        self.provisioner.wake(self, wanted, began).await
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub fn target(&self) -> Option<usize> {
        *self.target.lock()
    }

    /// Stops embedded workers; removes Docker workers and their network.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        self.provisioner.shutdown().await;
    }
}

/// Accepts `host:port` as well as `http://host:port`.
fn normalize_address(address: &str) -> String {
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}
