//! Worker containers through the Docker Engine API (bollard): a labelled network,
//! containers with CPU and memory limits, leftovers of an earlier run reaped at start.
//!
//! Ownership: every container carries `quiver.owner=<coordinator instance id>`, and
//! the owner's health checks are its heartbeat, recorded by each worker. At start a
//! coordinator asks the cluster's running workers (their open `instance` action)
//! when their owner last called: a live owner makes the start fail with an error
//! that names it; containers of owners gone silent are reaped. A coordinator only
//! ever removes its own containers afterwards.
//!
//! Workers get the coordinator's config document in `QUIVER_CONFIG_TOML` (with its
//! `${VAR}` references unexpanded) and the variables it references, so they reach
//! the same sources, and the cluster secret in `QUIVER_CLUSTER_SECRET` (one made for
//! this cluster at start when none is configured). They are addressed by the IP Docker assigns on the network,
//! which also spares a `FROM scratch` image any name resolution.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;

use bollard::models::{ContainerCreateBody, HostConfig, NetworkCreateRequest};
use bollard::query_parameters::{
    CreateContainerOptions, InspectContainerOptions, ListContainersOptions, ListNetworksOptions,
    LogsOptions, RemoveContainerOptions,
};
use bollard::Docker;

use super::PoolError;
use crate::config::WorkersConfig;

/// Port the worker listens on inside its container.
pub const WORKER_PORT: u16 = 50061;
const CLUSTER_LABEL: &str = "quiver.cluster";
const ROLE_LABEL: &str = "quiver.role";
const OWNER_LABEL: &str = "quiver.owner";
/// Workers that have not heard from their owner for this long are orphans
/// without further checks.
const OWNER_SILENT: Duration = Duration::from_secs(60);

pub struct DockerWorkers {
    docker: Docker,
    config: WorkersConfig,
    network: String,
    /// False when `workers.network` names a network someone else owns.
    owns_network: bool,
    env: Vec<String>,
    next: AtomicU32,
    /// Worker id → container id.
    containers: Mutex<HashMap<String, String>>,
    /// This coordinator's instance id (the owner label).
    owner: String,
}

impl DockerWorkers {
    /// Connects to the engine, checks the image, removes containers and networks left
    /// by an earlier coordinator of this cluster and creates the network.
    /// `secret`: the cluster secret the workers get in `QUIVER_CLUSTER_SECRET`.
    /// `owner`: this coordinator's instance id.
    pub async fn connect(
        config: &WorkersConfig,
        config_text: Option<&str>,
        secret: Option<&str>,
        owner: &str,
    ) -> Result<Self, PoolError> {
        let where_ =
            std::env::var("DOCKER_HOST").unwrap_or_else(|_| "unix:///var/run/docker.sock".into());
        let unreachable = |e: &dyn std::fmt::Display| {
            PoolError::Docker(format!("Docker is unreachable at {where_}: {e}"))
        };
        let docker = Docker::connect_with_local_defaults().map_err(|e| unreachable(&e))?;
        docker.ping().await.map_err(|e| unreachable(&e))?;
        let docker = docker
            .negotiate_version()
            .await
            .map_err(|e| unreachable(&e))?;
        if let Err(e) = docker.inspect_image(&config.image).await {
            return Err(PoolError::Docker(format!(
                "worker image '{}' is not available to Docker ({e}); build it with docker/build-images.sh",
                config.image
            )));
        }
        let cluster = &config.cluster;
        let (network, owns_network) = match &config.network {
            Some(n) => (n.clone(), false),
            None => (format!("quiver-{cluster}"), true),
        };
        let mut env = worker_env(config_text);
        if let Some(secret) = secret {
            env.retain(|e| !e.starts_with(&format!("{}=", crate::security::cluster::SECRET_VAR)));
            env.push(format!("{}={secret}", crate::security::cluster::SECRET_VAR));
        }
        // One Docker engine is one host: `auto` would compress between its containers
        // (bridge addresses are not loopback) for no gain.
        if config.exchange_compression == quiver_worker::LinkCompression::Auto {
            env.push(format!("{}=none", quiver_worker::LinkCompression::ENV));
        }
        let workers = Self {
            docker,
            config: config.clone(),
            network,
            owns_network,
            env,
            next: AtomicU32::new(1),
            containers: Mutex::new(HashMap::new()),
            owner: owner.to_string(),
        };
        workers.refuse_a_live_owner().await?;
        let reaped = workers.reap(false).await?;
        if reaped > 0 {
            tracing::info!(cluster = %cluster, containers = reaped, "removed worker containers left by an earlier coordinator");
        }
        workers.ensure_network().await?;
        Ok(workers)
    }

    fn labels(&self) -> HashMap<String, String> {
        HashMap::from([
            (CLUSTER_LABEL.to_string(), self.config.cluster.clone()),
            (ROLE_LABEL.to_string(), "worker".into()),
            (OWNER_LABEL.to_string(), self.owner.clone()),
        ])
    }

    /// This cluster's worker containers (not, say, a coordinator container carrying
    /// the cluster label); `own`: only those this coordinator started.
    fn label_filter(&self, own: bool) -> HashMap<String, Vec<String>> {
        let mut labels = vec![
            format!("{CLUSTER_LABEL}={}", self.config.cluster),
            format!("{ROLE_LABEL}=worker"),
        ];
        if own {
            labels.push(format!("{OWNER_LABEL}={}", self.owner));
        }
        HashMap::from([("label".to_string(), labels)])
    }

    async fn list(&self, own: bool) -> Result<Vec<bollard::models::ContainerSummary>, PoolError> {
        let options = ListContainersOptions {
            all: true,
            filters: Some(self.label_filter(own)),
            ..Default::default()
        };
        self.docker
            .list_containers(Some(options))
            .await
            .map_err(docker_error("list containers"))
    }

    /// Fails when a running worker of this cluster still hears from its owning
    /// coordinator: that coordinator is alive and its queries use them. Each worker
    /// is asked twice, more than a health interval apart (a coordinator of the same
    /// cluster checks as often as this one): a heartbeat in between means a live owner.
    async fn refuse_a_live_owner(&self) -> Result<(), PoolError> {
        let mut heard = vec![];
        for (name, worker) in self.running_workers_of_others().await? {
            if let Some(first) = super::health::instance(&worker, None).await {
                if first
                    .owner_seen_ms
                    .is_some_and(|ms| Duration::from_millis(ms) < OWNER_SILENT)
                {
                    heard.push((name, worker, first));
                }
            }
        }
        if heard.is_empty() {
            return Ok(());
        }
        let wait = Duration::from_secs_f64(
            (self.config.health_interval_secs * 2.0 + 1.0).clamp(1.5, 30.0),
        );
        tracing::info!(cluster = %self.config.cluster, wait_ms = wait.as_millis() as u64, "workers of this cluster exist; checking whether their coordinator is alive");
        tokio::time::sleep(wait).await;
        for (name, worker, first) in heard {
            let Some(second) = super::health::instance(&worker, None).await else {
                continue;
            };
            let (Some(before), Some(after)) = (first.owner_seen_ms, second.owner_seen_ms) else {
                continue;
            };
            // Without a new heartbeat, `after` is `before` plus the wait.
            if after < before + wait.as_millis() as u64 / 2
                && second.instance_id == first.instance_id
            {
                return Err(PoolError::Docker(format!(
                    "workers.cluster '{}' belongs to a running coordinator (instance {}): its worker {name} heard from it {after} ms ago. \
                     Stop that coordinator first, or give this one another workers.cluster",
                    self.config.cluster, second.owner
                )));
            }
        }
        Ok(())
    }

    /// The running worker containers of this cluster, each with a client that
    /// presents no credentials (another coordinator's workers may have another secret).
    async fn running_workers_of_others(&self) -> Result<Vec<(String, super::Worker)>, PoolError> {
        let mut out = vec![];
        for container in self.list(false).await? {
            if container.state.as_ref().map(|s| s.to_string()).as_deref() != Some("running") {
                continue;
            }
            let name = container
                .names
                .as_ref()
                .and_then(|n| n.first())
                .map(|n| n.trim_start_matches('/').to_string())
                .unwrap_or_default();
            let ips = container
                .network_settings
                .and_then(|s| s.networks)
                .unwrap_or_default();
            let ip = ips
                .values()
                .filter_map(|e| e.ip_address.clone())
                .find(|ip| !ip.is_empty());
            let Some(ip) = ip else { continue };
            let address = format!("http://{ip}:{WORKER_PORT}");
            if let Ok(worker) = super::Worker::connect_lazy(
                name.clone(),
                address,
                quiver_worker::ClusterCredentials::new(None),
            ) {
                out.push((name, worker));
            }
        }
        Ok(out)
    }

    /// Removes the containers of this cluster (`own`: only this coordinator's);
    /// returns how many.
    async fn reap(&self, own: bool) -> Result<usize, PoolError> {
        let found = self.list(own).await?;
        for c in &found {
            if let Some(id) = &c.id {
                self.remove_container(id).await?;
            }
        }
        Ok(found.len())
    }

    async fn ensure_network(&self) -> Result<(), PoolError> {
        let filters = HashMap::from([("name".to_string(), vec![self.network.clone()])]);
        let existing = self
            .docker
            .list_networks(Some(ListNetworksOptions {
                filters: Some(filters),
            }))
            .await
            .map_err(docker_error("list networks"))?;
        // `name` filters by substring: look for the exact name.
        if existing
            .iter()
            .any(|n| n.name.as_deref() == Some(self.network.as_str()))
        {
            return Ok(());
        }
        if !self.owns_network {
            return Err(PoolError::Docker(format!(
                "Docker network '{}' (workers.network) does not exist",
                self.network
            )));
        }
        let request = NetworkCreateRequest {
            name: self.network.clone(),
            driver: Some("bridge".into()),
            labels: Some(self.labels()),
            ..Default::default()
        };
        self.docker
            .create_network(request)
            .await
            .map_err(docker_error("create network"))?;
        Ok(())
    }

    /// Creates and starts one worker container; returns its id and Flight address.
    pub async fn start_one(&self) -> Result<(String, String), PoolError> {
        let host_config = HostConfig {
            nano_cpus: (self.config.cpus > 0.0).then_some((self.config.cpus * 1e9) as i64),
            memory: self.config.memory.map(|m| m.0 as i64),
            network_mode: Some(self.network.clone()),
            binds: (!self.config.volumes.is_empty()).then(|| self.config.volumes.clone()),
            ..Default::default()
        };
        let mut conflicts = 0;
        let (id, created) = loop {
            let id = format!(
                "quiver-{}-worker-{}",
                self.config.cluster,
                self.next.fetch_add(1, Ordering::Relaxed)
            );
            let body = ContainerCreateBody {
                image: Some(self.config.image.clone()),
                cmd: Some(
                    [
                        "worker",
                        "--listen",
                        &format!("0.0.0.0:{WORKER_PORT}"),
                        "--id",
                        &id,
                    ]
                    .iter()
                    .map(|s| s.to_string())
                    .collect(),
                ),
                env: Some(self.env.clone()),
                labels: Some(self.labels()),
                host_config: Some(host_config.clone()),
                ..Default::default()
            };
            let options = CreateContainerOptions {
                name: Some(id.clone()),
                ..Default::default()
            };
            match self.docker.create_container(Some(options), body).await {
                Ok(created) => break (id, created),
                // The name is taken (a container another coordinator of the cluster
                // started while this one had none): take the next number.
                Err(bollard::errors::Error::DockerResponseServerError {
                    status_code: 409, ..
                }) if conflicts < 20 => conflicts += 1,
                Err(e) => return Err(docker_error("create container")(e)),
            }
        };
        self.containers
            .lock()
            .insert(id.clone(), created.id.clone());
        if let Err(e) = self.docker.start_container(&created.id, None).await {
            let detail = self.describe(&created.id).await;
            let _ = self.remove(&id).await;
            return Err(PoolError::Docker(format!(
                "Docker: cannot start container {id}: {e}; {detail}"
            )));
        }
        let inspected = self
            .docker
            .inspect_container(&created.id, None::<InspectContainerOptions>)
            .await
            .map_err(docker_error("inspect container"))?;
        let ip = inspected
            .network_settings
            .and_then(|s| s.networks)
            .and_then(|n| n.get(&self.network).and_then(|e| e.ip_address.clone()))
            .filter(|ip| !ip.is_empty());
        let Some(ip) = ip else {
            // Almost always a container that exited at once: say why.
            let detail = self.describe(&created.id).await;
            let _ = self.remove(&id).await;
            return Err(PoolError::Docker(format!(
                "container {id} has no address on network {}: {detail}",
                self.network
            )));
        };
        tracing::info!(worker = %id, container = %short(&created.id), %ip, "worker container started");
        Ok((id, format!("http://{ip}:{WORKER_PORT}")))
    }

    /// What the worker's container says about itself (see [`Self::describe`]).
    pub async fn why(&self, worker: &str) -> String {
        match self.container(worker) {
            Some(container) => self.describe(&container).await,
            None => "the pool no longer knows its container".into(),
        }
    }

    /// A container's state, exit code, Docker's error and the last lines of its
    /// log: a worker that exits at once (a missing shared library, a bad
    /// configuration) says why there.
    async fn describe(&self, container: &str) -> String {
        let mut parts = vec![];
        match self
            .docker
            .inspect_container(container, None::<InspectContainerOptions>)
            .await
        {
            Ok(inspected) => {
                if let Some(state) = inspected.state {
                    if state.running == Some(true) {
                        parts.push("the container runs".to_string());
                    } else {
                        parts.push(format!(
                            "the container exited with code {}",
                            state.exit_code.unwrap_or(-1)
                        ));
                    }
                    if state.oom_killed == Some(true) {
                        parts.push("it was killed for lack of memory (workers.memory)".into());
                    }
                    if let Some(error) = state.error.filter(|e| !e.is_empty()) {
                        parts.push(format!("Docker says: {error}"));
                    }
                }
            }
            Err(e) => parts.push(format!("it cannot be inspected: {e}")),
        }
        let tail = self.log_tail(container, 10).await;
        if !tail.is_empty() {
            parts.push(format!("its log ends: {tail}"));
        }
        parts.join("; ")
    }

    /// The last `lines` lines of a container's output, joined with ` | `.
    async fn log_tail(&self, container: &str, lines: usize) -> String {
        use futures::StreamExt;
        let options = LogsOptions {
            stdout: true,
            stderr: true,
            tail: lines.to_string(),
            ..Default::default()
        };
        let mut text = String::new();
        let mut stream = self.docker.logs(container, Some(options));
        let read = async {
            while let Some(Ok(chunk)) = stream.next().await {
                text.push_str(&chunk.to_string());
                if text.len() > 4096 {
                    break;
                }
            }
        };
        let _ = tokio::time::timeout(Duration::from_secs(3), read).await;
        text.lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .collect::<Vec<_>>()
            .join(" | ")
    }

    /// True while the worker's container runs.
    pub async fn is_running(&self, worker: &str) -> bool {
        let Some(container) = self.container(worker) else {
            return false;
        };
        match self
            .docker
            .inspect_container(&container, None::<InspectContainerOptions>)
            .await
        {
            Ok(c) => c.state.and_then(|s| s.running).unwrap_or(false),
            Err(_) => false,
        }
    }

    fn container(&self, worker: &str) -> Option<String> {
        self.containers.lock().get(worker).cloned()
    }

    /// Container id of a worker, for `system.workers`.
    pub fn container_of(&self, worker: &str) -> Option<String> {
        self.container(worker).map(|c| short(&c).to_string())
    }

    /// Removes the worker's container (killing it if it still runs).
    pub async fn remove(&self, worker: &str) -> Result<(), PoolError> {
        let container = self.containers.lock().remove(worker);
        match container {
            Some(c) => self.remove_container(&c).await,
            None => Ok(()),
        }
    }

    async fn remove_container(&self, container: &str) -> Result<(), PoolError> {
        let options = RemoveContainerOptions {
            force: true,
            v: true,
            ..Default::default()
        };
        match self.docker.remove_container(container, Some(options)).await {
            Ok(()) => Ok(()),
            // Already gone (removed by hand), or being removed by a concurrent call.
            Err(bollard::errors::Error::DockerResponseServerError {
                status_code: 404 | 409,
                ..
            }) => Ok(()),
            Err(e) => Err(docker_error("remove container")(e)),
        }
    }

    /// Removes this coordinator's containers and the network it created.
    pub async fn shutdown(&self) {
        {
            let mut c = self.containers.lock();
            c.clear();
        }
        // A removal already in progress (a retiring worker) finishes on its own:
        // wait for it, so that the network can go too.
        for _ in 0..50 {
            match self.reap(true).await {
                Ok(0) => break,
                Ok(_) => tokio::time::sleep(std::time::Duration::from_millis(200)).await,
                Err(e) => {
                    tracing::warn!(error = %e, "could not remove every worker container");
                    break;
                }
            }
        }
        if self.owns_network {
            if let Err(e) = self.docker.remove_network(&self.network).await {
                tracing::warn!(network = %self.network, error = %e, "could not remove the worker network");
            }
        }
    }
}

fn docker_error(what: &'static str) -> impl Fn(bollard::errors::Error) -> PoolError {
    move |e| PoolError::Docker(format!("Docker: cannot {what}: {e}"))
}

fn short(container: &str) -> &str {
    &container[..container.len().min(12)]
}

/// The config document and every variable it references, from this process's environment.
fn worker_env(config_text: Option<&str>) -> Vec<String> {
    let Some(text) = config_text else {
        return vec![];
    };
    let mut env = vec![format!("QUIVER_CONFIG_TOML={text}")];
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        rest = &rest[at + 2..];
        let Some(end) = rest.find('}') else { break };
        let name = &rest[..end];
        if let Ok(value) = std::env::var(name) {
            let entry = format!("{name}={value}");
            if !env.contains(&entry) {
                env.push(entry);
            }
        }
        rest = &rest[end..];
    }
    if let Ok(filter) = std::env::var("QUIVER_LOG") {
        env.push(format!("QUIVER_LOG={filter}"));
    }
    env
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_get_the_config_and_the_variables_it_names() {
        std::env::set_var("QUIVER_TEST_DOCKER_SECRET", "s3cret");
        let env = worker_env(Some(
            "url = \"pg://u:${QUIVER_TEST_DOCKER_SECRET}@h/db\"\nx = \"${QUIVER_TEST_UNSET_VAR}\"",
        ));
        assert_eq!(env[0], "QUIVER_CONFIG_TOML=url = \"pg://u:${QUIVER_TEST_DOCKER_SECRET}@h/db\"\nx = \"${QUIVER_TEST_UNSET_VAR}\"");
        assert!(env.contains(&"QUIVER_TEST_DOCKER_SECRET=s3cret".to_string()));
        assert!(!env.iter().any(|e| e.starts_with("QUIVER_TEST_UNSET_VAR=")));
        assert!(worker_env(None).is_empty());
    }
}
