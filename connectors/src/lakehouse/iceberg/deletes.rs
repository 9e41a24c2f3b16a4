//! Merge-on-read deletes (format version 2): which delete files apply to which
//! data file, and what they say, read once per delete file.
//!
//! The spec's rules: a position delete file applies to data files of the same
//! partition with a data sequence number lower than or equal to its own, and names
//! each deleted row by file path and position; an equality delete file applies to
//! data files of the same partition (of any partition when its spec is
//! unpartitioned) with a strictly lower sequence number, and deletes every row whose
//! equality columns equal one of its rows.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{cast, concat_batches};
use datafusion::arrow::datatypes::{DataType, Field, Int64Type, Schema, SchemaRef};
use datafusion::catalog::Session;
use datafusion::datasource::physical_plan::{FileGroup, FileScanConfigBuilder, ParquetSource};
use datafusion::datasource::source::DataSourceExec;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::physical_plan::collect;

use super::manifests::{to_url, Content, DataFile};

/// True when `delete` removes rows of `data` under the spec's sequence-number and
/// partition rules.
pub(super) fn applies(delete: &DataFile, data: &DataFile) -> bool {
    let same_partition = delete.spec_id == data.spec_id && delete.partition == data.partition;
    match delete.content {
        Content::PositionDeletes => delete.sequence >= data.sequence && same_partition,
        Content::EqualityDeletes => {
            delete.sequence > data.sequence && (delete.partition.is_empty() || same_partition)
        }
        Content::Data => false,
    }
}

/// A position delete file: data file path (as written) → deleted positions.
type DeletedPositions = HashMap<String, Vec<u64>>;

/// Delete files read so far. Like manifests, they never change once written.
#[derive(Debug, Default)]
pub(super) struct DeleteCache {
    /// Position delete file → data file path (as written) → deleted positions.
    positions: Mutex<HashMap<String, Arc<DeletedPositions>>>,
    /// Equality delete file and the schema it was read with → its key rows.
    equality: Mutex<HashMap<(String, String), RecordBatch>>,
}

/// Beyond this many cached delete files the cache starts over.
const MAX_CACHED: usize = 10_000;

fn cached<K: std::hash::Hash + Eq, V: Clone>(map: &Mutex<HashMap<K, V>>, key: &K) -> Option<V> {
    map.lock().get(key).cloned()
}

fn remember<K: std::hash::Hash + Eq, V>(map: &Mutex<HashMap<K, V>>, key: K, value: V) {
    {
        let mut m = map.lock();
        if m.len() >= MAX_CACHED {
            m.clear();
        }
        m.insert(key, value);
    }
}

impl DeleteCache {
    /// The deleted positions of `data`, ascending, from the position delete files
    /// among `deletes` that apply to it.
    pub(super) async fn positions(
        &self,
        state: &dyn Session,
        data: &DataFile,
        deletes: &[&DataFile],
    ) -> Result<Vec<u64>> {
        let mut out = vec![];
        for delete in deletes {
            if delete.content != Content::PositionDeletes || !applies(delete, data) {
                continue;
            }
            let by_file = match cached(&self.positions, &delete.path) {
                Some(by_file) => by_file,
                None => {
                    let by_file = Arc::new(read_positions(state, delete).await?);
                    remember(&self.positions, delete.path.clone(), by_file.clone());
                    by_file
                }
            };
            if let Some(p) = by_file.get(&data.path) {
                out.extend_from_slice(p);
            }
        }
        out.sort_unstable();
        out.dedup();
        Ok(out)
    }

    /// The key rows of an equality delete file, with the types of `columns` (the
    /// table's fields for its equality ids, named as the delete file's writer named
    /// them).
    pub(super) async fn equality_keys(
        &self,
        state: &dyn Session,
        delete: &DataFile,
        columns: SchemaRef,
    ) -> Result<RecordBatch> {
        let key = (delete.path.clone(), format!("{:?}", columns.fields()));
        if let Some(keys) = cached(&self.equality, &key) {
            return Ok(keys);
        }
        let batches = read_file(state, delete, columns.clone()).await?;
        let keys = concat_batches(&columns, &batches)?;
        remember(&self.equality, key, keys.clone());
        Ok(keys)
    }
}

/// Reads one Parquet file with `schema` (columns found by name).
async fn read_file(
    state: &dyn Session,
    file: &DataFile,
    schema: SchemaRef,
) -> Result<Vec<RecordBatch>> {
    let url = to_url(&file.path).map_err(|e| DataFusionError::External(e.into()))?;
    let store = ObjectStoreUrl::parse(&url[..url::Position::BeforePath])?;
    let location = object_store::path::Path::from_url_path(url.path())
        .map_err(|e| DataFusionError::External(Box::new(e)))?;
    let part = crate::lakehouse::scan_file(location, file.size);
    let source = ParquetSource::new(schema);
    let config = FileScanConfigBuilder::new(store, Arc::new(source))
        .with_file_groups(vec![FileGroup::new(vec![part])])
        .build();
    collect(DataSourceExec::from_data_source(config), state.task_ctx())
        .await
        .map_err(|e| DataFusionError::External(format!("delete file {}: {e}", file.path).into()))
}

/// A position delete file's rows (`file_path`, `pos`), by data file.
async fn read_positions(
    state: &dyn Session,
    delete: &DataFile,
) -> Result<HashMap<String, Vec<u64>>> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("file_path", DataType::Utf8, false),
        Field::new("pos", DataType::Int64, false),
    ]));
    let mut out: HashMap<String, Vec<u64>> = HashMap::new();
    for batch in read_file(state, delete, schema).await? {
        let paths = cast(batch.column(0), &DataType::Utf8)?;
        let paths = paths.as_string::<i32>();
        let positions = batch.column(1).as_primitive::<Int64Type>();
        for i in 0..batch.num_rows() {
            if paths.is_null(i) || positions.is_null(i) {
                continue;
            }
            if let Ok(pos) = u64::try_from(positions.value(i)) {
                out.entry(paths.value(i).to_string()).or_default().push(pos);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::super::manifests::PartValue;
    use super::*;

    fn file(content: Content, sequence: i64, partition: Vec<PartValue>) -> DataFile {
        DataFile {
            content,
            path: "file:///w/f.parquet".into(),
            format: "PARQUET".into(),
            record_count: 1,
            size: 1,
            spec_id: 0,
            partition,
            lower: HashMap::new(),
            upper: HashMap::new(),
            null_counts: HashMap::new(),
            sequence,
            equality_ids: vec![],
            writer_names: Arc::default(),
        }
    }

    #[test]
    fn deletes_apply_by_sequence_number_and_partition() {
        let a = || vec![PartValue::Str("a".into())];
        let b = || vec![PartValue::Str("b".into())];
        let data = file(Content::Data, 2, a());
        // Position deletes: same or later commit, same partition.
        assert!(applies(&file(Content::PositionDeletes, 2, a()), &data));
        assert!(!applies(&file(Content::PositionDeletes, 1, a()), &data));
        assert!(!applies(&file(Content::PositionDeletes, 3, b()), &data));
        // Equality deletes: strictly later, same partition or an unpartitioned spec.
        assert!(!applies(&file(Content::EqualityDeletes, 2, a()), &data));
        assert!(applies(&file(Content::EqualityDeletes, 3, a()), &data));
        assert!(!applies(&file(Content::EqualityDeletes, 3, b()), &data));
        let mut global = file(Content::EqualityDeletes, 3, vec![]);
        global.spec_id = 1;
        assert!(applies(&global, &data));
        assert!(!applies(&file(Content::Data, 3, a()), &data));
    }
}
