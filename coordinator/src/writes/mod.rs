//! Pipelines: statements that write, to files and to databases.
//!
//! - `statements.rs`: which statements write (`COPY … TO`, `CREATE TABLE … AS`,
//!   `INSERT`, `DROP TABLE`), the checks they pass (a writable source, the
//!   user's `write` right) and their logical plans.
//! - `context.rs`: what every write is planned with: the context, where a
//!   table's writes go, the checks, the one-row answer.
//! - `syntax.rs`: the `COPY … TO … (FORMAT …, PARTITION_BY …)` option list.
//! - `rename.rs`: `ALTER TABLE … RENAME TO …` of a files table.
//! - `commit.rs`: file writes run as one write task per partition on the
//!   workers, staged, then published by the coordinator's commit.
//! - Database writes (`quiver_connectors::writable`) run on the coordinator in
//!   one transaction per statement: PostgreSQL through binary COPY, MySQL
//!   through batched INSERTs.
//! - Delta writes (`quiver_connectors::lakehouse::delta_write`): write tasks on
//!   the workers through deltalake's data-file writer, one commit per statement
//!   made by the coordinator.
//! - `ingest.rs`: Flight SQL bulk ingest into any writable table.

mod commit;
mod context;
pub mod ingest;
mod rename;
pub mod statements;
pub mod syntax;
pub mod temporary;

use std::sync::Arc;

use datafusion::datasource::listing::ListingTableUrl;
use datafusion::execution::runtime_env::RuntimeEnv;
use object_store::path::Path;
use quiver_connectors::files::FilesSchema;
use quiver_connectors::lakehouse::LakeSchema;
use quiver_connectors::remote_schema::RemoteSchema;

pub use commit::StageWrites;

/// The folder, under a writable source's location, where statements stage their files.
pub const STAGING: &str = ".quiver-staging";
/// The file that marks a table folder Quiver created (and may drop).
pub const MARKER: &str = "_quiver_table";

datafusion::common::extensions_options! {
    /// Set on a statement's own session by `CREATE TABLE … AS` into a files source:
    /// the folder it creates. Its commit must create that folder, or fail with
    /// "already exists" when another statement created it after this one was planned.
    pub struct CreateTarget {
        /// The folder's URL; empty for every other statement.
        pub url: String, default = String::new()
    }
}

impl datafusion::common::config::ConfigExtension for CreateTarget {
    const PREFIX: &'static str = "quiver_create";
}

/// The file and database sources, in the order they were registered.
type WritableSources = (Vec<Arc<FilesSchema>>, Vec<Arc<RemoteSchema>>);

/// The sources writes may go to; set once the sources are registered.
#[derive(Debug, Default)]
pub struct Writes {
    sources: std::sync::OnceLock<WritableSources>,
    lakes: std::sync::OnceLock<Vec<Arc<LakeSchema>>>,
}

impl Writes {
    /// Sets the sources (once; later calls are ignored).
    pub fn set(
        &self,
        files: Vec<Arc<FilesSchema>>,
        remote: Vec<Arc<RemoteSchema>>,
        lakes: Vec<Arc<LakeSchema>>,
    ) {
        let _ = self.sources.set((files, remote));
        let _ = self.lakes.set(lakes);
    }

    /// The Delta or Iceberg source mounted as `catalog.schema`.
    pub fn lake_schema(&self, qualified: &str) -> Option<&Arc<LakeSchema>> {
        self.lakes
            .get()
            .map(|l| l.as_slice())
            .unwrap_or_default()
            .iter()
            .find(|l| l.qualified() == qualified)
    }

    fn files(&self) -> &[Arc<FilesSchema>] {
        self.sources
            .get()
            .map(|s| s.0.as_slice())
            .unwrap_or_default()
    }

    /// The writable files source whose location holds `url`.
    pub fn root_for(&self, url: &ListingTableUrl) -> Option<&Arc<FilesSchema>> {
        self.files().iter().filter(|f| f.is_writable()).find(|f| {
            f.root().is_some_and(|root| {
                root.object_store() == url.object_store()
                    && url.prefix().prefix_matches(root.prefix())
            })
        })
    }

    /// The files source mounted as `catalog.schema`.
    pub fn files_schema(&self, qualified: &str) -> Option<&Arc<FilesSchema>> {
        self.files().iter().find(|f| f.name() == qualified)
    }

    /// The database source mounted as `catalog.schema`.
    pub fn remote_schema(&self, qualified: &str) -> Option<&Arc<RemoteSchema>> {
        self.sources
            .get()
            .map(|s| s.1.as_slice())
            .unwrap_or_default()
            .iter()
            .find(|r| r.name() == qualified)
    }

    /// The locations of writable files sources, for messages.
    pub fn writable_locations(&self) -> Vec<String> {
        self.files()
            .iter()
            .filter(|f| f.is_writable())
            .filter_map(|f| f.root().map(|r| r.as_str().to_string()))
            .collect()
    }

    /// Removes what statements of an earlier run (a killed coordinator) staged.
    pub async fn sweep(&self, runtime: &RuntimeEnv) {
        for files in self.files().iter().filter(|f| f.is_writable()) {
            let Some(root) = files.root() else { continue };
            let Ok(staging) = ListingTableUrl::parse(format!("{}{STAGING}/", root.as_str())) else {
                continue;
            };
            match runtime.object_store(&staging) {
                Ok(store) => commit::remove_folder(&store, &staging).await,
                Err(e) => {
                    tracing::warn!(schema = files.name(), error = %e, "cannot reach a writable source to clean its staging folder")
                }
            }
        }
    }
}

/// The rows a write's answer says it wrote: the sum of its `count` column (0 for other batches).
pub fn rows_written(batch: &datafusion::arrow::array::RecordBatch) -> u64 {
    batch
        .column_by_name("count")
        .and_then(|c| {
            c.as_any()
                .downcast_ref::<datafusion::arrow::array::UInt64Array>()
        })
        .map(|c| c.iter().flatten().sum())
        .unwrap_or(0)
}

/// `url/name` as an object-store path.
pub(crate) fn join_url(url: &ListingTableUrl, name: &str) -> Path {
    Path::from_iter(
        url.prefix()
            .parts()
            .chain([object_store::path::PathPart::from(name)]),
    )
}
