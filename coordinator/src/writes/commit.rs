//! Distributed file writes and their commit.
//!
//! [`StageWrites`] turns the `DataSinkExec` DataFusion plans for `COPY … TO` or an
//! `INSERT` into a file table into [`CommitExec`] over
//! [`quiver_worker::write::WriteFilesExec`]: every partition of the input is a
//! write task, run on a worker like any fragment, writing under the statement's
//! staging folder (`<root>/.quiver-staging/<statement>/`). When every task has
//! succeeded, the commit publishes the files the tasks reported:
//!
//! - a new folder on local disk: the files are gathered in one folder, which is
//!   renamed into place, so readers see nothing or everything;
//! - an existing folder, or an object store: each finished file is renamed
//!   (object stores: copied, then deleted) into the target;
//! - a single-file target: the one file is renamed onto it.
//!
//! Then the staging folder is removed, with whatever failed or retried attempts
//! left there. A failed or cancelled statement removes it too, publishing
//! nothing; what a killed coordinator left is removed at the next start
//! ([`super::Writes::sweep`]).

use std::fmt;
use std::sync::Arc;

use datafusion::arrow::array::{AsArray, RecordBatch, UInt64Array};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef, UInt64Type};
use datafusion::common::config::ConfigOptions;
use datafusion::common::tree_node::{Transformed, TreeNode, TreeNodeRecursion};
use datafusion::common::{exec_err, internal_err, plan_err};
use datafusion::datasource::listing::ListingTableUrl;
use datafusion::datasource::sink::DataSinkExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::{SendableRecordBatchStream, TaskContext};
use datafusion::logical_expr::dml::InsertOp;
use datafusion::physical_expr::{EquivalenceProperties, PhysicalExpr};
use datafusion::physical_optimizer::PhysicalOptimizerRule;
use datafusion::physical_plan::coalesce_partitions::CoalescePartitionsExec;
use datafusion::physical_plan::display::{DisplayAs, DisplayFormatType};
use datafusion::physical_plan::execution_plan::{Boundedness, EmissionType};
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use datafusion::physical_plan::{ExecutionPlan, Partitioning, PlanProperties};
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt};
use quiver_connectors::files::FilesSchema;
use quiver_worker::write::WriteFilesExec;

use super::{Writes, MARKER, STAGING};

/// Physical rule: file sinks become distributed write tasks and their commit.
#[derive(Debug)]
pub struct StageWrites {
    writes: Arc<Writes>,
}

impl StageWrites {
    pub fn new(writes: Arc<Writes>) -> Self {
        Self { writes }
    }
}

impl PhysicalOptimizerRule for StageWrites {
    fn optimize(
        &self,
        plan: Arc<dyn ExecutionPlan>,
        config: &ConfigOptions,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let creates = config
            .extensions
            .get::<super::CreateTarget>()
            .map(|c| c.url.clone())
            .unwrap_or_default();
        plan.transform_up(|node| {
            let Some(sink) = node.as_ref().downcast_ref::<DataSinkExec>() else {
                return Ok(Transformed::no(node));
            };
            let Some(config) = quiver_worker::write::file_sink_config(sink).cloned() else {
                return Ok(Transformed::no(node));
            };
            let target =
                config.table_paths.first().cloned().ok_or_else(|| {
                    DataFusionError::Internal("a file write without a target".into())
                })?;
            let Some(root) = self.writes.root_for(&target) else {
                return plan_err!(
                    "{} is not under the location of a writable files source",
                    target.as_str()
                );
            };
            let root_url = root
                .root()
                .map(|r| r.as_str().to_string())
                .unwrap_or_default();
            let staging = format!("{root_url}{STAGING}/{}/", uuid::Uuid::new_v4().simple());
            let single = config.file_output_mode.single_file_output(&target);
            // A folder target is written by one task per partition; a single file by one task.
            let input = match sink
                .input()
                .as_ref()
                .downcast_ref::<CoalescePartitionsExec>()
            {
                Some(c) if !single && c.fetch().is_none() => c.input().clone(),
                _ => sink.input().clone(),
            };
            let old_files = match config.insert_op {
                InsertOp::Overwrite => config
                    .file_group
                    .files()
                    .iter()
                    .map(|f| f.object_meta.location.clone())
                    .collect(),
                _ => vec![],
            };
            // A CTAS planned when its table did not exist, or a COPY to a folder missing now.
            let create = !single && (creates == target.as_str() || creates_folder(root, &target));
            let empty = EmptyTable {
                schema: config.output_schema().clone(),
                extension: config.file_extension.clone(),
            };
            let write = Arc::new(WriteFilesExec::try_new(input, sink, staging.clone())?);
            let target = Target {
                url: target,
                single,
                old_files,
                staging,
                schema: root.clone(),
                create,
                empty,
            };
            let commit = CommitExec::new(write, target);
            Ok(Transformed::new(
                Arc::new(commit) as Arc<dyn ExecutionPlan>,
                true,
                TreeNodeRecursion::Jump,
            ))
        })
        .map(|t| t.data)
    }

    fn name(&self) -> &str {
        "quiver_stage_writes"
    }

    fn schema_check(&self) -> bool {
        false
    }
}

/// Where a commit publishes.
#[derive(Debug, Clone)]
struct Target {
    url: ListingTableUrl,
    single: bool,
    /// Files an `INSERT OVERWRITE` replaces, removed once the new ones are in.
    old_files: Vec<Path>,
    staging: String,
    /// The source the target is in, listed again after the commit.
    schema: Arc<FilesSchema>,
    /// The folder did not exist when the statement was planned (`CREATE TABLE … AS`,
    /// `COPY` to a new folder): the commit creates it, or fails with "already
    /// exists" when another statement created it meanwhile.
    create: bool,
    /// What a new table folder gets when the statement wrote no rows.
    empty: EmptyTable,
}

/// Whether a write to the folder `target` creates it: on local disk, whether the
/// folder is missing now (at planning); on an object store, whether it is a
/// folder right under the source's location that discovery does not know.
fn creates_folder(root: &FilesSchema, target: &ListingTableUrl) -> bool {
    if let Some(path) = local_path(target) {
        return !path.exists();
    }
    let Some(base) = root.root() else {
        return false;
    };
    let rel: Vec<_> = match target.prefix().prefix_match(base.prefix()) {
        Some(parts) => parts.collect(),
        None => return false,
    };
    match rel.as_slice() {
        [name] => root.table_url(name.as_ref()).is_none(),
        _ => false,
    }
}

/// A table of no rows still has columns: a new folder gets one file with the
/// schema and no rows (Parquet; a header line for CSV), so it can be read and
/// inserted into.
#[derive(Debug, Clone)]
struct EmptyTable {
    schema: SchemaRef,
    /// `parquet`, `csv`, `json`, ... (without the dot).
    extension: String,
}

impl EmptyTable {
    /// The schema as the workers' Parquet files hold it: string and binary views
    /// as plain strings and binaries (a table's files must agree for it to read).
    fn file_schema(&self) -> SchemaRef {
        let fields: Vec<Field> = self
            .schema
            .fields()
            .iter()
            .map(|f| {
                let t = match f.data_type() {
                    DataType::Utf8View => DataType::Utf8,
                    DataType::BinaryView => DataType::Binary,
                    DataType::Dictionary(_, v) => v.as_ref().clone(),
                    other => other.clone(),
                };
                f.as_ref().clone().with_data_type(t)
            })
            .collect();
        Arc::new(Schema::new_with_metadata(
            fields,
            self.schema.metadata().clone(),
        ))
    }

    fn file(&self) -> Result<Option<(String, Vec<u8>)>> {
        let ext = self.extension.trim_start_matches('.').to_ascii_lowercase();
        let bytes = match ext.as_str() {
            "parquet" => {
                let mut out = vec![];
                let writer =
                    parquet::arrow::ArrowWriter::try_new(&mut out, self.file_schema(), None)?;
                writer.close()?;
                out
            }
            "csv" => {
                let mut out = vec![];
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(true)
                    .build(&mut out);
                w.write(&RecordBatch::new_empty(self.file_schema()))?;
                drop(w);
                out
            }
            _ => return Ok(None),
        };
        // Named afresh each time: an overwrite deletes the table's old files after.
        let id = uuid::Uuid::new_v4().simple();
        Ok(Some((format!("empty-{id}.{ext}"), bytes)))
    }
}

/// Runs every write task, then publishes their files (see the module doc).
#[derive(Debug)]
pub struct CommitExec {
    input: Arc<dyn ExecutionPlan>,
    target: Target,
    properties: Arc<PlanProperties>,
}

fn count_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![Field::new(
        "count",
        DataType::UInt64,
        false,
    )]))
}

impl CommitExec {
    fn new(input: Arc<dyn ExecutionPlan>, target: Target) -> Self {
        let properties = Arc::new(PlanProperties::new(
            EquivalenceProperties::new(count_schema()),
            Partitioning::UnknownPartitioning(1),
            EmissionType::Final,
            Boundedness::Bounded,
        ));
        Self {
            input,
            target,
            properties,
        }
    }
}

impl DisplayAs for CommitExec {
    fn fmt_as(&self, _t: DisplayFormatType, f: &mut fmt::Formatter) -> fmt::Result {
        let mode = if self.target.single { "file" } else { "folder" };
        write!(
            f,
            "CommitExec: target={}, as={mode}, tasks={}",
            self.target.url.as_str(),
            self.input.properties().partitioning.partition_count()
        )
    }
}

impl ExecutionPlan for CommitExec {
    fn name(&self) -> &str {
        "CommitExec"
    }

    fn properties(&self) -> &Arc<PlanProperties> {
        &self.properties
    }

    fn children(&self) -> Vec<&Arc<dyn ExecutionPlan>> {
        vec![&self.input]
    }

    fn apply_expressions(
        &self,
        _f: &mut dyn FnMut(&Arc<dyn PhysicalExpr>) -> Result<TreeNodeRecursion>,
    ) -> Result<TreeNodeRecursion> {
        Ok(TreeNodeRecursion::Continue)
    }

    fn with_new_children(
        self: Arc<Self>,
        children: Vec<Arc<dyn ExecutionPlan>>,
    ) -> Result<Arc<dyn ExecutionPlan>> {
        let [input] = children.as_slice() else {
            return Err(DataFusionError::Internal(
                "CommitExec takes one input".into(),
            ));
        };
        Ok(Arc::new(Self::new(input.clone(), self.target.clone())))
    }

    fn benefits_from_input_partitioning(&self) -> Vec<bool> {
        vec![false]
    }

    fn execute(
        &self,
        partition: usize,
        context: Arc<TaskContext>,
    ) -> Result<SendableRecordBatchStream> {
        if partition != 0 {
            return internal_err!("CommitExec has one partition, not {partition}");
        }
        let tasks = self.input.properties().partitioning.partition_count();
        let streams = (0..tasks)
            .map(|p| self.input.execute(p, context.clone()))
            .collect::<Result<Vec<_>>>()?;
        let staging_url = ListingTableUrl::parse(&self.target.staging)?;
        let store = context.runtime_env().object_store(&staging_url)?;
        let staging = Staging {
            store: store.clone(),
            url: staging_url,
            done: false,
        };
        let target = self.target.clone();
        let work = async move {
            let mut staging = staging;
            let reports = futures::future::try_join_all(
                streams
                    .into_iter()
                    .map(|s| s.try_collect::<Vec<RecordBatch>>()),
            )
            .await?;
            let mut rows = 0u64;
            let mut files = vec![];
            for batch in reports.iter().flatten() {
                let written = batch.column(0).as_primitive::<UInt64Type>();
                let folders = batch.column(1).as_string::<i32>();
                let names = batch.column(2).as_string::<i32>();
                for i in 0..batch.num_rows() {
                    rows += written.value(i);
                    let folder = ListingTableUrl::parse(folders.value(i))?;
                    files.extend(
                        names
                            .value(i)
                            .lines()
                            .filter(|l| !l.is_empty())
                            .map(|rel| (join(folder.prefix(), rel), rel.to_string())),
                    );
                }
            }
            publish(&store, &target, &files).await?;
            staging.remove().await;
            if let Some(cache) = context.runtime_env().cache_manager.get_list_files_cache() {
                cache.clear();
            }
            if let Err(e) = target.schema.rediscover().await {
                tracing::warn!(schema = target.schema.name(), error = %e, "cannot list the written source again");
            }
            tracing::info!(target = %target.url.as_str(), rows, files = files.len(), "write committed");
            Ok(RecordBatch::try_new(
                count_schema(),
                vec![Arc::new(UInt64Array::from(vec![rows]))],
            )?)
        };
        Ok(Box::pin(RecordBatchStreamAdapter::new(
            count_schema(),
            futures::stream::once(work).boxed(),
        )))
    }
}

/// `prefix/rel`, where `rel` may hold `/` (hive partition folders).
fn join(prefix: &Path, rel: &str) -> Path {
    Path::from_iter(
        prefix
            .parts()
            .chain(
                rel.split('/')
                    .filter(|p| !p.is_empty())
                    .map(object_store::path::PathPart::from),
            )
            .collect::<Vec<_>>(),
    )
}

/// The local path of a `file://` URL, if it is one.
pub(super) fn local_path(url: &ListingTableUrl) -> Option<std::path::PathBuf> {
    (url.scheme() == "file").then(|| std::path::PathBuf::from(format!("/{}", url.prefix())))
}

fn store_error(e: object_store::Error) -> DataFusionError {
    DataFusionError::External(Box::new(e))
}

/// Moves the finished files (`(staged path, path relative to the target)`) into the target.
async fn publish(
    store: &Arc<dyn ObjectStore>,
    target: &Target,
    files: &[(Path, String)],
) -> Result<()> {
    let to = target.url.prefix();
    if target.single {
        return match files {
            [] => Ok(()),
            [(from, _)] => store.rename(from, to).await.map_err(store_error),
            more => exec_err!(
                "the statement wrote {} files but {} names one file; name a folder (ending in '/') instead",
                more.len(),
                target.url.as_str()
            ),
        };
    }
    let existed = store
        .list(Some(to))
        .next()
        .await
        .transpose()
        .map_err(store_error)?
        .is_some();
    if existed && target.create {
        return Err(super::context::already_exists(&target.url));
    }
    let marker = format!("{{\"created_ms\":{}}}\n", crate::catalog::store::now_ms());
    // A new table of no rows, or one overwritten by none, gets a file that holds its columns.
    let emptied = existed && !target.old_files.is_empty();
    let empty = match (
        files.is_empty() && (!existed || emptied),
        target.empty.file()?,
    ) {
        (true, Some(file)) => Some(file),
        _ => None,
    };
    match (local_path(&target.url), existed) {
        (Some(dest), false) => {
            // One rename of a whole folder: the new table appears complete.
            let gathered = Path::from_iter(
                ListingTableUrl::parse(&target.staging)?
                    .prefix()
                    .parts()
                    .chain([object_store::path::PathPart::from("publish")]),
            );
            for (from, rel) in files {
                store
                    .rename(from, &join(&gathered, rel))
                    .await
                    .map_err(store_error)?;
            }
            if let Some((name, bytes)) = empty {
                store
                    .put(&join(&gathered, &name), bytes.into())
                    .await
                    .map_err(store_error)?;
            }
            store
                .put(&join(&gathered, MARKER), marker.into_bytes().into())
                .await
                .map_err(store_error)?;
            if let Some(parent) = dest.parent() {
                tokio::fs::create_dir_all(parent).await.map_err(|e| {
                    DataFusionError::Execution(format!("cannot create {}: {e}", parent.display()))
                })?;
            }
            let from = std::path::PathBuf::from(format!("/{gathered}"));
            let _claim = match target.create {
                true => Some(Claim::take(&dest, &target.url)?),
                false => None,
            };
            if target.create && tokio::fs::try_exists(&dest).await.unwrap_or(true) {
                return Err(super::context::already_exists(&target.url));
            }
            tokio::fs::rename(&from, &dest).await.map_err(|e| {
                DataFusionError::Execution(format!(
                    "cannot publish {} as {}: {e}",
                    from.display(),
                    dest.display()
                ))
            })?;
        }
        (_, existed) => {
            if !existed {
                // The marker first, created only if absent: of two statements
                // creating the table, the second stops here.
                let mode = match target.create {
                    true => object_store::PutMode::Create,
                    false => object_store::PutMode::Overwrite,
                };
                let put = store
                    .put_opts(&join(to, MARKER), marker.into_bytes().into(), mode.into())
                    .await;
                match put {
                    Err(object_store::Error::AlreadyExists { .. }) => {
                        return Err(super::context::already_exists(&target.url))
                    }
                    other => other.map_err(store_error)?,
                };
            }
            if let Some((name, bytes)) = empty {
                store
                    .put(&join(to, &name), bytes.into())
                    .await
                    .map_err(store_error)?;
            }
            for (from, rel) in files {
                store
                    .rename(from, &join(to, rel))
                    .await
                    .map_err(store_error)?;
            }
        }
    }
    for old in &target.old_files {
        if let Err(e) = store.delete(old).await {
            tracing::warn!(file = %old, error = %e, "cannot remove a replaced file");
        }
    }
    Ok(())
}

/// The right to create a table folder on local disk, held from the check that
/// it does not exist to the rename that creates it: a file beside the folder,
/// created only if absent (two statements creating one table cannot both hold it).
struct Claim(std::path::PathBuf);

impl Claim {
    fn take(dest: &std::path::Path, url: &ListingTableUrl) -> Result<Self> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let path = dest.with_file_name(format!(".{name}.quiver-create"));
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(_) => Ok(Self(path)),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(super::context::already_exists(url))
            }
            Err(e) => exec_err!("cannot create {}: {e}", path.display()),
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A statement's staging folder: removed after the commit, or, if the statement
/// failed or was cancelled, when it is dropped (and once more a little later, for
/// a task that was still finishing a file).
struct Staging {
    store: Arc<dyn ObjectStore>,
    url: ListingTableUrl,
    done: bool,
}

impl Staging {
    async fn remove(&mut self) {
        self.done = true;
        remove_folder(&self.store, &self.url).await;
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if self.done {
            return;
        }
        let (store, url) = (self.store.clone(), self.url.clone());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                remove_folder(&store, &url).await;
                tokio::time::sleep(std::time::Duration::from_secs(10)).await;
                remove_folder(&store, &url).await;
            });
        }
    }
}

/// Removes everything under `url` (a folder), quietly: it may not exist.
pub(super) async fn remove_folder(store: &Arc<dyn ObjectStore>, url: &ListingTableUrl) {
    if let Some(path) = local_path(url) {
        match tokio::fs::remove_dir_all(&path).await {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                tracing::warn!(folder = %path.display(), error = %e, "cannot remove a staging folder")
            }
        }
        return;
    }
    let listed = store
        .list(Some(url.prefix()))
        .map_ok(|o| o.location)
        .boxed();
    let mut deleted = store.delete_stream(listed);
    while let Some(r) = deleted.next().await {
        if let Err(e) = r {
            tracing::warn!(folder = %url.as_str(), error = %e, "cannot remove a staged file");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths_keep_their_partition_folders() {
        let p = join(&Path::from("a/b"), "year=2024/x_0.parquet");
        assert_eq!(p.as_ref(), "a/b/year=2024/x_0.parquet");
        assert_eq!(join(&Path::from("a"), "f.csv").as_ref(), "a/f.csv");
    }
}
