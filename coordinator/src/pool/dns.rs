//! `workers.mode = "dns"`: the workers are the addresses a name resolves to, as a
//! Kubernetes headless Service gives one A record per ready worker pod. The name
//! is resolved again on every health round, so scaled pods join and leave.

use std::collections::BTreeSet;
use std::sync::Arc;

use super::{Worker, WorkerPool};

pub struct DnsWorkers {
    service: String,
    port: u16,
}

impl DnsWorkers {
    pub fn new(service: String, port: u16) -> Self {
        Self { service, port }
    }

    /// Adds workers for new addresses and drops those that no longer resolve.
    pub async fn sync(&self, pool: &WorkerPool) {
        let resolved: BTreeSet<String> = match tokio::net::lookup_host((
            self.service.as_str(),
            self.port,
        ))
        .await
        {
            Ok(addrs) => addrs.map(|a| format!("http://{a}")).collect(),
            Err(e) => {
                // Keep the last known workers: a resolver hiccup is not a lost cluster.
                tracing::warn!(service = %self.service, error = %e, "cannot resolve the worker service");
                return;
            }
        };
        let known: BTreeSet<String> = pool.all().iter().map(|w| w.address.clone()).collect();
        for address in resolved.difference(&known) {
            let id = address.trim_start_matches("http://").to_string();
            match Worker::connect_lazy(id.clone(), address.clone(), pool.credentials.clone()) {
                Ok(w) => {
                    pool.add(Arc::new(w));
                    pool.events
                        .record("start", &id, &format!("{} resolves to it", self.service));
                }
                Err(e) => tracing::warn!(%address, error = %e, "unusable worker address"),
            }
        }
        for gone in known.difference(&resolved) {
            let id = gone.trim_start_matches("http://").to_string();
            pool.remove(&id);
            pool.events.record(
                "remove",
                &id,
                &format!("{} no longer resolves to it", self.service),
            );
        }
    }
}
