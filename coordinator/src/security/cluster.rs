//! The cluster secret: which one coordinator and workers share, and where it comes from.

use quiver_proto::ClusterKey;
use quiver_worker::ClusterCredentials;

use crate::config::{ClusterConfig, WorkerMode};

/// The variable that holds the secret when the config names none.
pub const SECRET_VAR: &str = "QUIVER_CLUSTER_SECRET";

/// The cluster's secret, when one is set or can be made.
#[derive(Clone)]
pub struct ClusterSecret {
    pub secret: String,
    pub key: ClusterKey,
    /// Made at start: nobody else knows it, so the workers must get it from us.
    pub generated: bool,
}

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterSecret")
            .field("generated", &self.generated)
            .finish_non_exhaustive()
    }
}

/// The configured secret, or the one in [`SECRET_VAR`]; None when neither is set.
pub fn configured(config: &ClusterConfig) -> Result<Option<ClusterSecret>, String> {
    let secret = match &config.secret {
        Some(s) => Some(s.expose().to_string()),
        None => std::env::var(SECRET_VAR).ok().filter(|s| !s.is_empty()),
    };
    secret
        .map(|secret| {
            let key =
                ClusterKey::from_secret(&secret).map_err(|e| format!("[cluster] secret: {e}"))?;
            Ok(ClusterSecret {
                secret,
                key,
                generated: false,
            })
        })
        .transpose()
}

/// The coordinator's secret for a pool of `mode`. Pools whose workers the coordinator
/// starts itself (embedded, docker) get a fresh secret when none is set; pools of
/// workers started by others (static, dns) need one, unless `allow_insecure`.
pub fn for_coordinator(
    config: &ClusterConfig,
    mode: WorkerMode,
) -> Result<Option<ClusterSecret>, String> {
    if let Some(secret) = configured(config)? {
        return Ok(Some(secret));
    }
    match mode {
        WorkerMode::Embedded | WorkerMode::Docker => {
            let secret = ClusterKey::generate_secret().map_err(|e| e.to_string())?;
            let key = ClusterKey::from_secret(&secret).map_err(|e| e.to_string())?;
            Ok(Some(ClusterSecret {
                secret,
                key,
                generated: true,
            }))
        }
        WorkerMode::Static | WorkerMode::Dns if config.allow_insecure => {
            tracing::warn!("cluster authentication is OFF (cluster.allow_insecure = true): anyone who reaches a worker's port can run plans on it");
            Ok(None)
        }
        WorkerMode::Static | WorkerMode::Dns => {
            Err(missing("the coordinator of static or dns workers"))
        }
    }
}

/// A worker's secret: it must be set, unless `allow_insecure`.
pub fn for_worker(config: &ClusterConfig) -> Result<Option<ClusterSecret>, String> {
    match configured(config)? {
        Some(secret) => Ok(Some(secret)),
        None if config.allow_insecure => {
            tracing::warn!("cluster authentication is OFF (cluster.allow_insecure = true): anyone who reaches this worker's port can run plans on it");
            Ok(None)
        }
        None => Err(missing("a worker")),
    }
}

fn missing(who: &str) -> String {
    format!(
        "{who} needs the cluster secret: set {SECRET_VAR} (at least 16 bytes, e.g. `openssl rand -hex 32`) or \
         [cluster] secret = \"${{{SECRET_VAR}}}\" in the config, the same on coordinator and workers; \
         or set [cluster] allow_insecure = true to run without cluster authentication"
    )
}

/// What the coordinator presents to its workers.
pub fn credentials(secret: Option<&ClusterSecret>) -> ClusterCredentials {
    ClusterCredentials::new(secret.map(|s| s.key.clone()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn static_pools_and_workers_need_a_secret_unless_insecure() {
        // Runs only where the variable is unset (it is in the test environment).
        if std::env::var(SECRET_VAR).is_ok() {
            return;
        }
        let none = ClusterConfig::default();
        let err = for_coordinator(&none, WorkerMode::Static).unwrap_err();
        assert!(
            err.contains(SECRET_VAR) && err.contains("allow_insecure"),
            "{err}"
        );
        assert!(for_worker(&none)
            .unwrap_err()
            .contains("a worker needs the cluster secret"));
        let insecure = ClusterConfig {
            allow_insecure: true,
            ..Default::default()
        };
        assert!(for_coordinator(&insecure, WorkerMode::Dns)
            .expect("insecure")
            .is_none());
        assert!(for_worker(&insecure).expect("insecure").is_none());
        let generated = for_coordinator(&none, WorkerMode::Embedded)
            .expect("generated")
            .expect("some");
        assert!(generated.generated && generated.secret.len() == 64);
    }

    #[test]
    fn a_short_secret_is_refused_with_its_key_named() {
        let weak = ClusterConfig {
            secret: Some(quiver_connectors::env::EnvString::new("short")),
            allow_insecure: false,
        };
        let err = for_coordinator(&weak, WorkerMode::Embedded).unwrap_err();
        assert!(
            err.contains("[cluster] secret") && err.contains("16 bytes"),
            "{err}"
        );
    }
}
