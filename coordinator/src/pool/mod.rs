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

use std::sync::atomic::{AtomicU32, AtomicU8, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use arrow_flight::Ticket;
use quiver_connectors::SourceConfig;
use quiver_proto::{FragmentTicket, QuiverCodec};
use quiver_worker::{ClusterCredentials, WorkerClient};

use crate::config::{WorkerMode, WorkersConfig};
use crate::security::cluster::ClusterSecret;

pub use embedded::EmbeddedWorkers;
pub use events::ScalingEvent;

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
    since: std::sync::Mutex<Instant>,
    /// Fragments this coordinator is currently reading from the worker.
    running: AtomicU32,
    /// When `running` last dropped to zero (or the worker was added).
    idle_since: std::sync::Mutex<Instant>,
    /// The instance id of the process that first answered at `address`.
    instance: std::sync::Mutex<Option<String>>,
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
            since: std::sync::Mutex::new(now),
            running: AtomicU32::new(0),
            idle_since: std::sync::Mutex::new(now),
            instance: std::sync::Mutex::new(None),
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

    /// The Flight ticket of a fragment, sealed for this cluster.
    pub fn ticket(&self, fragment: &FragmentTicket) -> Ticket {
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
        self.since.lock().map(|s| s.elapsed()).unwrap_or_default()
    }

    /// How long the worker has run no fragment (zero while it runs one).
    pub fn idle_for(&self) -> Duration {
        if self.running_fragments() > 0 {
            return Duration::ZERO;
        }
        self.idle_since
            .lock()
            .map(|s| s.elapsed())
            .unwrap_or_default()
    }

    fn set_state(&self, state: WorkerState) -> bool {
        let was = WorkerState::from_u8(self.state.swap(state as u8, Ordering::Relaxed));
        if was != state {
            if let Ok(mut since) = self.since.lock() {
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
        let mut known = self.instance.lock().unwrap_or_else(|p| p.into_inner());
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
        self.instance.lock().ok().and_then(|i| i.clone())
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
            if let Ok(mut idle) = self.0.idle_since.lock() {
                *idle = Instant::now();
            }
        }
    }
}

/// How workers come and go.
enum Provisioner {
    Embedded(EmbeddedWorkers),
    Static,
    Docker(Arc<docker::DockerWorkers>),
    Dns(dns::DnsWorkers),
}

/// All workers known to the coordinator.
pub struct WorkerPool {
    workers: RwLock<Vec<Arc<Worker>>>,
    provisioner: Provisioner,
    /// What every call to a worker presents.
    credentials: ClusterCredentials,
    config: WorkersConfig,
    fragment_memory_limit: u64,
    /// Scaling decisions, newest last, and their counts.
    pub(crate) events: events::EventLog,
    /// A size set by `quiver workers scale N`; None lets the autoscaler decide.
    target: std::sync::Mutex<Option<usize>>,
    counters: crate::metrics::Counters,
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
                )
                .await?;
                let workers = embedded
                    .addresses()
                    .map(|(id, addr)| Worker::connect_lazy(id, addr, credentials.clone()))
                    .collect::<Result<Vec<_>, _>>()?;
                (workers, Provisioner::Embedded(embedded))
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
                (workers, Provisioner::Static)
            }
            WorkerMode::Docker => {
                let docker = docker::DockerWorkers::connect(
                    config,
                    config_text,
                    secret.map(|s| s.secret.as_str()),
                    &instance_id,
                )
                .await?;
                (vec![], Provisioner::Docker(Arc::new(docker)))
            }
            WorkerMode::Dns => {
                let service = config.service.clone().unwrap_or_default();
                (
                    vec![],
                    Provisioner::Dns(dns::DnsWorkers::new(service, config.port)),
                )
            }
        };
        let pool = Arc::new(Self {
            workers: RwLock::new(workers.into_iter().map(Arc::new).collect()),
            provisioner,
            credentials,
            config: config.clone(),
            fragment_memory_limit: config.fragment_memory_limit.0,
            events: events::EventLog::default(),
            target: std::sync::Mutex::new(None),
            counters: crate::metrics::Counters::default(),
            closing: std::sync::atomic::AtomicBool::new(false),
            instance_id,
            waking: tokio::sync::Mutex::new(()),
            waiting: AtomicU32::new(0),
        });
        match &pool.provisioner {
            Provisioner::Docker(_) => {
                let started = pool.scale_up(config.min, "minimum size at start").await;
                if started < config.min {
                    pool.shutdown().await;
                    let why = pool
                        .events
                        .snapshot()
                        .into_iter()
                        .rev()
                        .find(|e| e.action == "start-failed")
                        .map(|e| format!(": {}", e.reason))
                        .unwrap_or_default();
                    return Err(PoolError::Docker(format!(
                        "only {started} of {} worker containers became healthy{why}",
                        config.min
                    )));
                }
                autoscaler::spawn(&pool);
            }
            Provisioner::Dns(dns) => dns.sync(&pool).await,
            _ => {}
        }
        pool.check_health().await;
        Ok(pool)
    }

    /// Every worker, healthy or not.
    pub fn all(&self) -> Vec<Arc<Worker>> {
        self.workers.read().map(|w| w.clone()).unwrap_or_default()
    }

    /// Workers that answered their last health check, least busy first.
    pub fn healthy(&self) -> Vec<Arc<Worker>> {
        let mut healthy: Vec<_> = self.all().into_iter().filter(|w| w.is_healthy()).collect();
        healthy.sort_by_key(|w| w.running_fragments());
        healthy
    }

    /// Query, fragment and retry counts (Prometheus metrics).
    pub fn counters(&self) -> &crate::metrics::Counters {
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
        match &self.provisioner {
            Provisioner::Docker(d) => d.container_of(worker),
            _ => None,
        }
    }

    fn add(&self, worker: Arc<Worker>) {
        if let Ok(mut w) = self.workers.write() {
            w.push(worker);
        }
    }

    fn remove(&self, id: &str) {
        if let Ok(mut w) = self.workers.write() {
            w.retain(|x| x.id != id);
        }
    }

    /// Pins the pool at `size` workers (`None`: the autoscaler decides again).
    /// Only Docker pools can change size.
    pub fn set_target(&self, size: Option<usize>) -> Result<(), PoolError> {
        if !matches!(self.provisioner, Provisioner::Docker(_)) {
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
        if let Ok(mut t) = self.target.lock() {
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
        match &self.provisioner {
            Provisioner::Docker(docker) => {
                if let Err(e) = docker.remove(&worker.id).await {
                    tracing::warn!(worker = %worker.id, error = %e, "could not remove a lost worker's container");
                }
            }
            _ => match Worker::connect_lazy(
                worker.id.clone(),
                worker.address.clone(),
                self.credentials.clone(),
            ) {
                Ok(fresh) => self.add(Arc::new(fresh)),
                Err(e) => {
                    tracing::warn!(worker = %worker.id, error = %e, "cannot reconnect to a restarted worker")
                }
            },
        }
    }

    /// This coordinator's instance id.
    pub fn instance_id(&self) -> &str {
        &self.instance_id
    }

    /// True when the pool may have no worker and gets one for a query (`min = 0`):
    /// a Docker pool starts it, a DNS pool waits for it to resolve (KEDA starts it).
    pub fn scales_from_zero(&self) -> bool {
        matches!(
            self.provisioner,
            Provisioner::Docker(_) | Provisioner::Dns(_)
        ) && self.config.min == 0
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
        let busy = self.config.busy_fragments.max(1);
        (self.load().div_ceil(busy) as usize)
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
        if let Provisioner::Dns(dns) = &self.provisioner {
            return self.wait_for_dns_workers(dns, began).await;
        }
        let _one = self.waking.lock().await;
        if !self.healthy().is_empty() {
            // Another query's wake started them while this one waited for the lock.
            return Ok((began.elapsed(), 0));
        }
        let n = wanted.clamp(1, self.config.max.max(1));
        let started = self
            .scale_up(n, "a query needs a worker and none runs (scale from zero)")
            .await;
        if self.healthy().is_empty() {
            return Err(PoolError::Scale(format!(
                "started {n} worker(s) for a query, but none answered within {}s (workers.start_timeout_secs)",
                self.config.start_timeout_secs
            )));
        }
        Ok((began.elapsed(), started))
    }

    /// A DNS pool at zero: the query waits (counted in [`Self::load`], so KEDA's
    /// `IsActive` turns true and it scales the workers up) until a worker resolves
    /// and answers.
    async fn wait_for_dns_workers(
        &self,
        dns: &dns::DnsWorkers,
        began: Instant,
    ) -> Result<(Duration, usize), PoolError> {
        let deadline = began + Duration::from_secs(self.config.start_timeout_secs);
        loop {
            dns.sync(self).await;
            self.check_health().await;
            if !self.healthy().is_empty() {
                return Ok((began.elapsed(), 0));
            }
            if Instant::now() >= deadline {
                return Err(PoolError::Scale(format!(
                    "no worker came up within {}s (workers.start_timeout_secs) for a query that needs one",
                    self.config.start_timeout_secs
                )));
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub fn target(&self) -> Option<usize> {
        self.target.lock().ok().and_then(|t| *t)
    }

    /// Stops embedded workers; removes Docker workers and their network.
    pub async fn shutdown(&self) {
        self.closing.store(true, Ordering::SeqCst);
        match &self.provisioner {
            Provisioner::Embedded(embedded) => embedded.shutdown(),
            Provisioner::Docker(docker) => docker.shutdown().await,
            _ => {}
        }
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
