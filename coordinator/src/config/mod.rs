//! The Quiver configuration file: server, workers and sources in one TOML document.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use quiver_connectors::env::EnvString;
use quiver_connectors::SourceConfig;
use serde::Deserialize;

pub mod byte_size;
mod workers;

pub use self::byte_size::ByteSize;
pub use self::workers::{ExchangeMode, WorkerMode, WorkersConfig};
pub use crate::security::access::AccessConfig;
pub use crate::security::authn::AuthConfig;

/// Errors reading the configuration; each names the file and, from the TOML
/// parser, the key and line.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Invalid { path: PathBuf, message: String },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct QuiverConfig {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub workers: WorkersConfig,
    /// How coordinator and workers authenticate each other.
    #[serde(default)]
    pub cluster: ClusterConfig,
    /// Who may read what (with `[server.auth]`).
    #[serde(default)]
    pub access: AccessConfig,
    #[serde(default)]
    pub source: Vec<SourceConfig>,
    /// Where views and accelerations are kept.
    #[serde(default)]
    pub metadata: crate::catalog::config::MetadataConfig,
    /// Where accelerated copies are written.
    #[serde(default)]
    pub acceleration: crate::catalog::config::AccelerationConfig,
    /// Results of repeated statements.
    #[serde(default)]
    pub cache: crate::catalog::config::CacheConfig,
    /// Views declared here (read-only from SQL).
    #[serde(default)]
    pub view: Vec<crate::catalog::config::ViewConfig>,
    /// Settings of source tables (their acceleration).
    #[serde(default)]
    pub table: Vec<crate::catalog::config::TableConfig>,
    /// The document as written (with `${VAR}` unexpanded): Docker workers get it,
    /// so they connect to the same sources.
    #[serde(skip)]
    pub text: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Flight SQL endpoint for clients.
    #[serde(default = "default_listen")]
    pub listen: SocketAddr,
    /// Catalog and schema that unqualified table names resolve in.
    #[serde(default)]
    pub default_catalog: Option<String>,
    #[serde(default)]
    pub default_schema: Option<String>,
    /// Username/password authentication; off when absent.
    #[serde(default)]
    pub auth: Option<AuthConfig>,
    /// TLS for the client endpoint; off when absent.
    #[serde(default)]
    pub tls: Option<TlsConfig>,
    /// DataFusion's target partitions: how many fragments a scan is split into.
    /// Default: 2 per worker.
    #[serde(default)]
    pub target_partitions: Option<usize>,
    /// The HTTP listener: `POST /v1/sql`, the web console at `/`, Prometheus
    /// metrics at `/metrics`; off when absent. `metrics_listen` is the older name.
    #[serde(default, alias = "metrics_listen")]
    pub http_listen: Option<SocketAddr>,
    /// Origins (`https://bi.example.com`) besides the server's own whose web pages
    /// may POST to the HTTP door; requests from any other site's page are refused.
    #[serde(default)]
    pub http_allowed_origins: Vec<String>,
    /// The PostgreSQL wire protocol for psql and BI tools; off when absent.
    #[serde(default)]
    pub postgres_listen: Option<SocketAddr>,
    /// KEDA's external-scaler gRPC API (the worker count the autoscaler wants), for
    /// a KEDA `ScaledObject` on Kubernetes; off when absent. Plain gRPC, no auth:
    /// bind it to an address only the cluster reaches.
    #[serde(default)]
    pub keda_listen: Option<SocketAddr>,
    /// A query running longer is cancelled, with all its fragments; 0 = no limit.
    #[serde(default = "default_query_timeout")]
    pub query_timeout_secs: f64,
    /// Most queries running at once; 0 = no limit. Others wait in the queue.
    #[serde(default = "default_max_running")]
    pub max_running_queries: usize,
    /// Most queries one user runs at once; 0 = no limit.
    #[serde(default)]
    pub max_running_queries_per_user: usize,
    /// Most queries waiting to run; one more is refused.
    #[serde(default = "default_max_queued")]
    pub max_queued_queries: usize,
    /// A query waiting longer than this to run is refused.
    #[serde(default = "default_queue_timeout")]
    pub queue_timeout_secs: f64,
    /// Longer statement texts are refused before they are parsed.
    #[serde(default = "default_max_statement")]
    pub max_statement_bytes: ByteSize,
    /// Most connections each door (Flight SQL, PostgreSQL, HTTP) holds at once;
    /// one more is refused (SQLSTATE 53300, HTTP 503). Lowered at start when the
    /// open-files limit cannot hold it for all three doors.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// A connection that has not sent its first bytes (or, on the PostgreSQL and
    /// HTTP ports, finished its login or request headers) within this is closed.
    #[serde(default = "default_handshake_timeout")]
    pub handshake_timeout_secs: f64,
    /// Append a JSON line per query and per failed login to this file.
    #[serde(default)]
    pub audit_log: Option<PathBuf>,
    /// The coordinator's own files: the metadata store and accelerated copies
    /// (unless `[metadata]`/`[acceleration]` put them elsewhere). Relative to the
    /// config file's folder; default `$QUIVER_DATA_DIR`, else `quiver-data` beside the config file.
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
    /// How inner joins are ordered: `"statistics"` (the fewest estimated rows
    /// first) or `"written"` (as the query names the tables).
    #[serde(default)]
    pub join_order: JoinOrder,
}

/// How join trees are ordered (`server.join_order`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JoinOrder {
    /// From the inputs' statistics (the default).
    #[default]
    Statistics,
    /// As the query names the tables.
    Written,
}

fn default_query_timeout() -> f64 {
    3600.0
}
fn default_max_running() -> usize {
    32
}
fn default_max_queued() -> usize {
    100
}
fn default_queue_timeout() -> f64 {
    300.0
}
fn default_max_connections() -> usize {
    4096
}
fn default_handshake_timeout() -> f64 {
    10.0
}
fn default_max_statement() -> ByteSize {
    ByteSize(1 << 20)
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            listen: default_listen(),
            http_listen: None,
            http_allowed_origins: Vec::new(),
            keda_listen: None,
            postgres_listen: None,
            query_timeout_secs: default_query_timeout(),
            max_running_queries: default_max_running(),
            max_running_queries_per_user: 0,
            max_queued_queries: default_max_queued(),
            queue_timeout_secs: default_queue_timeout(),
            max_statement_bytes: default_max_statement(),
            max_connections: default_max_connections(),
            handshake_timeout_secs: default_handshake_timeout(),
            audit_log: None,
            data_dir: None,
            default_catalog: None,
            default_schema: None,
            auth: None,
            tls: None,
            target_partitions: None,
            join_order: JoinOrder::default(),
        }
    }
}

/// `[cluster]`: the shared secret of coordinator and workers.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// At least 16 bytes; write `"${QUIVER_CLUSTER_SECRET}"`. Absent: the variable
    /// `QUIVER_CLUSTER_SECRET` if set, else (embedded and docker pools) a fresh one.
    #[serde(default)]
    pub secret: Option<EnvString>,
    /// Run static or dns workers with no cluster authentication at all.
    #[serde(default)]
    pub allow_insecure: bool,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 50051))
}

impl QuiverConfig {
    /// Reads and validates a config file; relative source paths resolve against its folder.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let base = std::fs::canonicalize(if base.as_os_str().is_empty() {
            Path::new(".")
        } else {
            &base
        })
        .map_err(|source| ConfigError::Read {
            path: path.into(),
            source,
        })?;
        Self::parse(&text, &base).map_err(|message| ConfigError::Invalid {
            path: path.into(),
            message,
        })
    }

    /// Parses a config document; `base` is the folder relative paths resolve against.
    pub fn parse(text: &str, base: &Path) -> Result<Self, String> {
        let mut config: QuiverConfig = toml::from_str(text).map_err(|e| e.to_string())?;
        for source in &mut config.source {
            source.resolve_relative_paths(base);
        }
        // The images set QUIVER_DATA_DIR (a writable folder; the config folder may be read-only).
        let default = std::env::var_os("QUIVER_DATA_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from("quiver-data"));
        let dir = config.server.data_dir.clone().unwrap_or(default);
        config.server.data_dir = Some(crate::catalog::config::resolve(base, &dir));
        config.validate()?;
        config.text = Some(text.to_string());
        Ok(config)
    }

    /// `server.data_dir` (resolved when the file was read), or `quiver-data`.
    pub fn data_dir(&self) -> PathBuf {
        self.server
            .data_dir
            .clone()
            .unwrap_or_else(|| PathBuf::from("quiver-data"))
    }

    fn validate(&self) -> Result<(), String> {
        for view in &self.view {
            if let Some(spec) = &view.accelerate {
                spec.validate(&view.name)?;
            }
        }
        for table in &self.table {
            if let Some(spec) = &table.accelerate {
                spec.validate(&table.name)?;
            }
        }
        let mut names = std::collections::HashSet::new();
        for s in &self.source {
            if !names.insert(&s.name) {
                return Err(format!("source '{}' is defined twice", s.name));
            }
        }
        match self.workers.mode {
            WorkerMode::Embedded if self.workers.count == 0 => {
                Err("workers.count must be at least 1 in embedded mode".into())
            }
            WorkerMode::Static if self.workers.addresses.is_empty() => {
                Err("workers.addresses must list at least one worker in static mode".into())
            }
            WorkerMode::Docker if self.workers.max == 0 || self.workers.max < self.workers.min => {
                Err("workers.max must be at least 1 and at least workers.min in docker mode".into())
            }
            WorkerMode::Dns if self.workers.service.is_none() => {
                Err("workers.service (a DNS name) is required in dns mode".into())
            }
            _ if self.workers.health_interval_secs <= 0.0 => {
                Err("workers.health_interval_secs must be positive".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_config_is_the_embedded_default() {
        let c = QuiverConfig::parse("", Path::new("/tmp")).expect("parses");
        assert_eq!(c.workers.mode, WorkerMode::Embedded);
        assert_eq!(c.workers.count, 2);
        assert_eq!(c.server.listen.port(), 50051);
    }

    #[test]
    fn errors_name_the_key_and_line() {
        let err = QuiverConfig::parse(
            "[server]\nlisten = \"127.0.0.1:1\"\nlisen = 3\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("lisen") && err.contains("line 3"), "{err}");
        let err = QuiverConfig::parse(
            "[workers]\nfragment_memory_limit = \"3 parsecs\"\n",
            Path::new("/"),
        )
        .unwrap_err();
        assert!(err.contains("parsecs") && err.contains("line 2"), "{err}");
    }

    #[test]
    fn relative_locations_resolve_against_the_config_folder() {
        let c = QuiverConfig::parse(
            "[[source]]\nname = \"f\"\nkind = \"files\"\nlocation = \"./data\"\n",
            Path::new("/etc/quiver"),
        )
        .expect("parses");
        let quiver_connectors::SourceKind::Files(f) = &c.source[0].kind else {
            panic!("files source expected")
        };
        assert_eq!(f.location.as_deref(), Some("/etc/quiver/data"));
    }

    #[test]
    fn duplicate_sources_and_empty_pools_are_refused() {
        let two = "[[source]]\nname = \"a\"\nkind = \"files\"\n[[source]]\nname = \"a\"\nkind = \"files\"\n";
        assert!(QuiverConfig::parse(two, Path::new("/"))
            .unwrap_err()
            .contains("defined twice"));
        let err =
            QuiverConfig::parse("[workers]\nmode = \"static\"\n", Path::new("/")).unwrap_err();
        assert!(err.contains("workers.addresses"), "{err}");
    }
}
