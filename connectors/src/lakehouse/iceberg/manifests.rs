//! A snapshot's manifest list and manifests (Avro), read into the list of its live
//! data and delete files with their partition values and column statistics.
//!
//! Manifests never change once written, so each is read once and kept
//! ([`ManifestCache`]): planning on a table with many commits reads only the
//! manifests that are new since the last query.

use parking_lot::Mutex;
use std::collections::HashMap;
use std::sync::Arc;

use apache_avro::types::Value;
use object_store::{ObjectStore, ObjectStoreExt};
use url::Url;

use super::metadata::IcebergSchema;

/// Opens the object store a URL lives in.
pub(crate) type OpenStore<'a> = dyn Fn(&Url) -> Result<Arc<dyn ObjectStore>, String> + Sync + 'a;

/// What a data or delete file holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Content {
    Data,
    PositionDeletes,
    EqualityDeletes,
}

/// A partition value as a manifest stores it (after the transform).
#[derive(Debug, Clone, PartialEq)]
pub enum PartValue {
    Null,
    /// int, long, date (days), timestamp (µs), and the outputs of the year, month,
    /// day, hour, bucket and integer truncate transforms.
    Int(i64),
    Str(String),
    /// Anything else (floats, decimals, binaries), kept as written so that equal
    /// values still compare equal (delete files apply within one partition); not
    /// used for pruning.
    Other(String),
}

/// One live file of a snapshot.
#[derive(Debug, Clone)]
pub struct DataFile {
    pub content: Content,
    /// As written in the manifest: a URL or an absolute path.
    pub path: String,
    pub format: String,
    pub record_count: i64,
    pub size: u64,
    pub spec_id: i32,
    /// In the partition spec's field order.
    pub partition: Vec<PartValue>,
    pub lower: HashMap<i32, Vec<u8>>,
    pub upper: HashMap<i32, Vec<u8>>,
    pub null_counts: HashMap<i32, i64>,
    /// The data sequence number: a delete file applies to data files with a lower
    /// one (equality deletes) or a lower or equal one (position deletes).
    pub sequence: i64,
    /// For equality delete files: the field ids whose values identify deleted rows.
    pub equality_ids: Vec<i32>,
    /// Field id → column name in the schema the manifest was written with: a
    /// column renamed since is still found by its old name in older files.
    pub writer_names: Arc<HashMap<i32, String>>,
}

/// Manifests read so far, by path (they are immutable).
#[derive(Debug, Default)]
pub struct ManifestCache {
    files: Mutex<HashMap<String, Arc<Vec<DataFile>>>>,
}

/// Beyond this many cached manifests the cache starts over (a rough bound on memory).
const MAX_CACHED_MANIFESTS: usize = 50_000;

/// Turns a path written in metadata into a URL (plain absolute paths are local files).
pub fn to_url(path: &str) -> Result<Url, String> {
    match Url::parse(path) {
        Ok(u) if u.scheme().len() > 1 => Ok(u),
        _ if path.starts_with('/') => {
            Url::from_file_path(path).map_err(|_| format!("bad path '{path}'"))
        }
        _ => Err(format!("'{path}' is neither a URL nor an absolute path")),
    }
}

/// Reads a whole object.
pub async fn read_all(store: &dyn ObjectStore, url: &Url) -> Result<bytes::Bytes, String> {
    let path = object_store::path::Path::from_url_path(url.path()).map_err(|e| e.to_string())?;
    let got = store
        .get(&path)
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))?;
    got.bytes()
        .await
        .map_err(|e| format!("cannot read {url}: {e}"))
}

/// One entry of a manifest list.
#[derive(Debug)]
struct ManifestRef {
    path: String,
    spec_id: i32,
    /// The sequence number of the commit that added the manifest; its entries
    /// added in that commit inherit it.
    sequence: i64,
}

impl ManifestCache {
    /// The live files of the snapshot whose manifest list is at `list`.
    /// `open` gives the store holding a URL.
    pub async fn snapshot_files(
        &self,
        list: &str,
        open: &OpenStore<'_>,
    ) -> Result<Vec<DataFile>, String> {
        let list_url = to_url(list)?;
        let bytes = read_all(open(&list_url)?.as_ref(), &list_url).await?;
        let manifests =
            read_manifest_list(&bytes).map_err(|e| format!("manifest list {list}: {e}"))?;
        self.files_of(manifests, open).await
    }

    /// The live files of format-version-1 snapshots that list manifests inline.
    pub async fn inline_files(
        &self,
        manifests: &[String],
        open: &OpenStore<'_>,
    ) -> Result<Vec<DataFile>, String> {
        let refs = manifests
            .iter()
            .map(|p| ManifestRef {
                path: p.clone(),
                spec_id: 0,
                sequence: 0,
            })
            .collect();
        self.files_of(refs, open).await
    }

    async fn files_of(
        &self,
        manifests: Vec<ManifestRef>,
        open: &OpenStore<'_>,
    ) -> Result<Vec<DataFile>, String> {
        let mut out = vec![];
        for m in manifests {
            let cached = self.files.lock().get(&m.path).cloned();
            let files = match cached {
                Some(files) => files,
                None => {
                    let url = to_url(&m.path)?;
                    let bytes = read_all(open(&url)?.as_ref(), &url).await?;
                    let files = Arc::new(
                        read_manifest(&bytes, &m)
                            .map_err(|e| format!("manifest {}: {e}", m.path))?,
                    );
                    {
                        let mut c = self.files.lock();
                        if c.len() >= MAX_CACHED_MANIFESTS {
                            c.clear();
                        }
                        c.insert(m.path.clone(), files.clone());
                    }
                    files
                }
            };
            out.extend(files.iter().cloned());
        }
        Ok(out)
    }
}

/// A record's field, through a `["null", T]` union.
fn get<'a>(record: &'a Value, name: &str) -> Option<&'a Value> {
    let Value::Record(fields) = unwrap(record) else {
        return None;
    };
    fields
        .iter()
        .find(|(n, _)| n == name)
        .map(|(_, v)| unwrap(v))
        .filter(|v| !matches!(v, Value::Null))
}

fn unwrap(v: &Value) -> &Value {
    match v {
        Value::Union(_, inner) => unwrap(inner),
        v => v,
    }
}

fn int(v: Option<&Value>) -> Option<i64> {
    match v? {
        Value::Int(i) | Value::Date(i) | Value::TimeMillis(i) => Some(i64::from(*i)),
        Value::Long(l)
        | Value::TimeMicros(l)
        | Value::TimestampMillis(l)
        | Value::TimestampMicros(l)
        | Value::TimestampNanos(l)
        | Value::LocalTimestampMillis(l)
        | Value::LocalTimestampMicros(l)
        | Value::LocalTimestampNanos(l) => Some(*l),
        _ => None,
    }
}

fn string(v: Option<&Value>) -> Option<String> {
    match v? {
        Value::String(s) => Some(s.clone()),
        _ => None,
    }
}

fn bytes_of(v: &Value) -> Option<Vec<u8>> {
    match unwrap(v) {
        Value::Bytes(b) | Value::Fixed(_, b) => Some(b.clone()),
        _ => None,
    }
}

/// An Iceberg map<int, T> as Avro writes it: an array of `{key, value}` records.
fn int_map<T>(v: Option<&Value>, value: impl Fn(&Value) -> Option<T>) -> HashMap<i32, T> {
    let mut out = HashMap::new();
    if let Some(Value::Array(items)) = v {
        for item in items {
            let key = int(get(item, "key")).and_then(|k| i32::try_from(k).ok());
            if let (Some(k), Some(v)) = (key, get(item, "value").and_then(&value)) {
                out.insert(k, v);
            }
        }
    }
    out
}

fn read_manifest_list(bytes: &[u8]) -> Result<Vec<ManifestRef>, String> {
    let reader = apache_avro::Reader::new(bytes).map_err(|e| e.to_string())?;
    let mut out = vec![];
    for value in reader {
        let value = value.map_err(|e| e.to_string())?;
        let path = string(get(&value, "manifest_path")).ok_or("an entry has no manifest_path")?;
        out.push(ManifestRef {
            path,
            spec_id: int(get(&value, "partition_spec_id")).unwrap_or(0) as i32,
            sequence: int(get(&value, "sequence_number")).unwrap_or(0),
        });
    }
    Ok(out)
}

fn read_manifest(bytes: &[u8], manifest: &ManifestRef) -> Result<Vec<DataFile>, String> {
    let reader = apache_avro::Reader::new(bytes).map_err(|e| e.to_string())?;
    let meta = reader.user_metadata();
    let writer_names: HashMap<i32, String> = meta
        .get("schema")
        .and_then(|s| serde_json::from_slice::<IcebergSchema>(s).ok())
        .map(|s| s.fields.into_iter().map(|f| (f.id, f.name)).collect())
        .unwrap_or_default();
    let writer_names = Arc::new(writer_names);
    let spec_id = meta
        .get("partition-spec-id")
        .and_then(|s| std::str::from_utf8(s).ok())
        .and_then(|s| s.parse().ok())
        .unwrap_or(manifest.spec_id);
    let mut out = vec![];
    for entry in reader {
        let entry = entry.map_err(|e| e.to_string())?;
        // 0 existing, 1 added, 2 deleted: deleted entries are not in the snapshot.
        if int(get(&entry, "status")) == Some(2) {
            continue;
        }
        let file = get(&entry, "data_file").ok_or("an entry has no data_file")?;
        let content = match int(get(file, "content")).unwrap_or(0) {
            0 => Content::Data,
            1 => Content::PositionDeletes,
            2 => Content::EqualityDeletes,
            other => return Err(format!("unknown file content {other}")),
        };
        let partition = match get(file, "partition") {
            Some(Value::Record(fields)) => fields
                .iter()
                .map(|(_, v)| match unwrap(v) {
                    Value::Null => PartValue::Null,
                    Value::String(s) => PartValue::Str(s.clone()),
                    other => int(Some(other))
                        .map_or_else(|| PartValue::Other(format!("{other:?}")), PartValue::Int),
                })
                .collect(),
            _ => vec![],
        };
        out.push(DataFile {
            content,
            path: string(get(file, "file_path")).ok_or("a file has no file_path")?,
            format: string(get(file, "file_format")).unwrap_or_else(|| "PARQUET".into()),
            record_count: int(get(file, "record_count")).unwrap_or(0),
            size: int(get(file, "file_size_in_bytes")).unwrap_or(0).max(0) as u64,
            spec_id,
            partition,
            lower: int_map(get(file, "lower_bounds"), bytes_of),
            upper: int_map(get(file, "upper_bounds"), bytes_of),
            null_counts: int_map(get(file, "null_value_counts"), |v| int(Some(unwrap(v)))),
            sequence: int(get(&entry, "sequence_number")).unwrap_or(manifest.sequence),
            equality_ids: match get(file, "equality_ids") {
                Some(Value::Array(ids)) => ids
                    .iter()
                    .filter_map(|v| int(Some(unwrap(v))).and_then(|i| i32::try_from(i).ok()))
                    .collect(),
                _ => vec![],
            },
            writer_names: writer_names.clone(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use apache_avro::{Schema, Writer};

    const MANIFEST_SCHEMA: &str = r#"{"type": "record", "name": "manifest_entry", "fields": [
      {"name": "status", "type": "int"},
      {"name": "sequence_number", "type": ["null", "long"], "default": null},
      {"name": "data_file", "type": {"type": "record", "name": "r2", "fields": [
        {"name": "content", "type": "int"},
        {"name": "file_path", "type": "string"},
        {"name": "file_format", "type": "string"},
        {"name": "partition", "type": {"type": "record", "name": "r102", "fields": [
          {"name": "day", "type": ["null", {"type": "int", "logicalType": "date"}]}]}},
        {"name": "record_count", "type": "long"},
        {"name": "file_size_in_bytes", "type": "long"},
        {"name": "lower_bounds", "type": ["null", {"type": "array", "items":
          {"type": "record", "name": "k126_v127", "fields": [
            {"name": "key", "type": "int"}, {"name": "value", "type": "bytes"}]}}], "default": null}
      ]}}]}"#;

    fn entry(status: i32, path: &str, day: Option<i32>) -> Value {
        // An entry added by the manifest's own commit has no number written.
        let sequence = match status {
            1 => Value::Union(0, Box::new(Value::Null)),
            _ => Value::Union(1, Box::new(Value::Long(7))),
        };
        Value::Record(vec![
            ("status".into(), Value::Int(status)),
            ("sequence_number".into(), sequence),
            (
                "data_file".into(),
                Value::Record(vec![
                    ("content".into(), Value::Int(0)),
                    ("file_path".into(), Value::String(path.into())),
                    ("file_format".into(), Value::String("PARQUET".into())),
                    (
                        "partition".into(),
                        Value::Record(vec![(
                            "day".into(),
                            match day {
                                Some(d) => Value::Union(1, Box::new(Value::Date(d))),
                                None => Value::Union(0, Box::new(Value::Null)),
                            },
                        )]),
                    ),
                    ("record_count".into(), Value::Long(10)),
                    ("file_size_in_bytes".into(), Value::Long(1234)),
                    (
                        "lower_bounds".into(),
                        Value::Union(
                            1,
                            Box::new(Value::Array(vec![Value::Record(vec![
                                ("key".into(), Value::Int(1)),
                                ("value".into(), Value::Bytes(5i64.to_le_bytes().to_vec())),
                            ])])),
                        ),
                    ),
                ]),
            ),
        ])
    }

    #[test]
    fn manifests_keep_live_entries_with_partitions_and_bounds() {
        let schema = Schema::parse_str(MANIFEST_SCHEMA).expect("schema");
        let mut writer = Writer::new(&schema, Vec::new());
        writer
            .add_user_metadata(
                "schema".into(),
                r#"{"type":"struct","schema-id":3,"fields":[{"id":1,"name":"old_id","required":false,"type":"long"}]}"#,
            )
            .expect("meta");
        for e in [
            entry(1, "file:///w/a.parquet", Some(19000)),
            entry(2, "file:///w/gone.parquet", Some(19001)),
            entry(0, "/w/b.parquet", None),
        ] {
            writer.append(e).expect("append");
        }
        let bytes = writer.into_inner().expect("bytes");
        let m = ManifestRef {
            path: "m.avro".into(),
            spec_id: 0,
            sequence: 3,
        };
        let files = read_manifest(&bytes, &m).expect("read");
        let paths: Vec<_> = files.iter().map(|f| f.path.as_str()).collect();
        assert_eq!(paths, ["file:///w/a.parquet", "/w/b.parquet"]);
        assert_eq!(files[0].partition, vec![PartValue::Int(19000)]);
        assert_eq!(files[1].partition, vec![PartValue::Null]);
        assert_eq!(files[0].lower[&1], 5i64.to_le_bytes().to_vec());
        assert_eq!((files[0].record_count, files[0].size), (10, 1234));
        assert_eq!(files[0].writer_names[&1], "old_id");
        // Written in the entry, or else inherited from the manifest list.
        assert_eq!((files[0].sequence, files[1].sequence), (3, 7));
        assert_eq!(
            to_url("/w/b.parquet").map(|u| u.to_string()),
            Ok("file:///w/b.parquet".into())
        );
        assert!(to_url("relative/x").is_err());
    }
}
