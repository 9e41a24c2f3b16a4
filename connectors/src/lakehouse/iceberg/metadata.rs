//! An Iceberg table's metadata file (`vN.metadata.json`, format versions 1 and 2):
//! its schemas, partition specs and snapshots, and the Arrow form of a schema.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::datatypes::{DataType, Field, Fields, Schema, TimeUnit};
use serde::Deserialize;

/// The parts of the table metadata Quiver reads.
#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct TableMetadata {
    pub format_version: u8,
    #[serde(default)]
    pub current_schema_id: Option<i32>,
    #[serde(default)]
    pub schemas: Vec<IcebergSchema>,
    /// Format version 1 may carry only this one.
    #[serde(default)]
    pub schema: Option<IcebergSchema>,
    #[serde(default)]
    pub partition_specs: Vec<PartitionSpec>,
    #[serde(default)]
    pub current_snapshot_id: Option<i64>,
    #[serde(default)]
    pub snapshots: Vec<SnapshotMeta>,
    #[serde(default)]
    pub last_updated_ms: Option<i64>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct IcebergSchema {
    #[serde(default)]
    pub schema_id: i32,
    pub fields: Vec<NestedField>,
}

#[derive(Debug, Clone, Deserialize)]
pub struct NestedField {
    pub id: i32,
    pub name: String,
    #[serde(default)]
    pub required: bool,
    #[serde(rename = "type")]
    pub ty: IcebergType,
}

/// A primitive type by name, or a nested one.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum IcebergType {
    Primitive(String),
    Nested(Box<NestedType>),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum NestedType {
    Struct {
        fields: Vec<NestedField>,
    },
    List {
        #[serde(rename = "element-id")]
        element_id: i32,
        element: IcebergType,
        #[serde(rename = "element-required", default)]
        element_required: bool,
    },
    Map {
        #[serde(rename = "key-id")]
        key_id: i32,
        key: IcebergType,
        #[serde(rename = "value-id")]
        value_id: i32,
        value: IcebergType,
        #[serde(rename = "value-required", default)]
        value_required: bool,
    },
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionSpec {
    #[serde(default)]
    pub spec_id: i32,
    #[serde(default)]
    pub fields: Vec<PartitionField>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct PartitionField {
    pub source_id: i32,
    pub transform: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub struct SnapshotMeta {
    pub snapshot_id: i64,
    pub timestamp_ms: i64,
    /// Absent in some format-version-1 tables (which list manifests inline).
    #[serde(default)]
    pub manifest_list: Option<String>,
    #[serde(default)]
    pub manifests: Option<Vec<String>>,
    #[serde(default)]
    pub schema_id: Option<i32>,
}

/// The Parquet field id that Iceberg writers put on every column.
pub const FIELD_ID_KEY: &str = "PARQUET:field_id";

impl TableMetadata {
    pub fn parse(json: &[u8]) -> Result<Self, String> {
        let m: Self =
            serde_json::from_slice(json).map_err(|e| format!("bad metadata JSON: {e}"))?;
        if !(1..=2).contains(&m.format_version) {
            return Err(format!(
                "format version {} is not supported (1 and 2 are)",
                m.format_version
            ));
        }
        Ok(m)
    }

    pub fn schema_by_id(&self, id: i32) -> Option<&IcebergSchema> {
        self.schemas
            .iter()
            .find(|s| s.schema_id == id)
            .or(self.schema.as_ref().filter(|s| s.schema_id == id))
    }

    /// The table's current schema.
    pub fn current_schema(&self) -> Result<&IcebergSchema, String> {
        match self.current_schema_id {
            Some(id) => self
                .schema_by_id(id)
                .ok_or_else(|| format!("current schema {id} is not in the metadata")),
            None => self
                .schema
                .as_ref()
                .or(self.schemas.last())
                .ok_or_else(|| "the metadata has no schema".to_string()),
        }
    }

    pub fn spec(&self, id: i32) -> Option<&PartitionSpec> {
        self.partition_specs.iter().find(|s| s.spec_id == id)
    }

    pub fn snapshot(&self, id: i64) -> Option<&SnapshotMeta> {
        self.snapshots.iter().find(|s| s.snapshot_id == id)
    }

    /// The last snapshot committed at or before `ms`.
    pub fn snapshot_at(&self, ms: i64) -> Option<&SnapshotMeta> {
        self.snapshots
            .iter()
            .filter(|s| s.timestamp_ms <= ms)
            .max_by_key(|s| (s.timestamp_ms, s.snapshot_id))
    }
}

impl IcebergSchema {
    /// The Arrow schema, each field carrying its Iceberg field id. Strings and
    /// binaries are views when `views` (as DataFusion reads Parquet by default).
    pub fn to_arrow(&self, views: bool) -> Result<Schema, String> {
        let fields: Result<Vec<Field>, String> = self
            .fields
            .iter()
            .map(|f| field_to_arrow(f, views))
            .collect();
        Ok(Schema::new(fields?))
    }
}

fn with_id(field: Field, id: i32) -> Field {
    field.with_metadata(HashMap::from([(FIELD_ID_KEY.to_string(), id.to_string())]))
}

fn field_to_arrow(f: &NestedField, views: bool) -> Result<Field, String> {
    let ty = type_to_arrow(&f.ty, views).map_err(|e| format!("column {}: {e}", f.name))?;
    Ok(with_id(Field::new(&f.name, ty, !f.required), f.id))
}

/// An Iceberg type as Arrow, as Iceberg's Parquet writers lay it out.
pub fn type_to_arrow(ty: &IcebergType, views: bool) -> Result<DataType, String> {
    Ok(match ty {
        IcebergType::Primitive(name) => primitive_to_arrow(name, views)?,
        IcebergType::Nested(nested) => match nested.as_ref() {
            NestedType::Struct { fields } => {
                let fields: Result<Vec<Field>, String> =
                    fields.iter().map(|f| field_to_arrow(f, views)).collect();
                DataType::Struct(Fields::from(fields?))
            }
            NestedType::List {
                element_id,
                element,
                element_required,
            } => DataType::List(Arc::new(with_id(
                Field::new("element", type_to_arrow(element, views)?, !element_required),
                *element_id,
            ))),
            NestedType::Map {
                key_id,
                key,
                value_id,
                value,
                value_required,
            } => {
                let entries = Field::new(
                    "key_value",
                    DataType::Struct(Fields::from(vec![
                        with_id(
                            Field::new("key", type_to_arrow(key, views)?, false),
                            *key_id,
                        ),
                        with_id(
                            Field::new("value", type_to_arrow(value, views)?, !value_required),
                            *value_id,
                        ),
                    ])),
                    false,
                );
                DataType::Map(Arc::new(entries), false)
            }
        },
    })
}

fn primitive_to_arrow(name: &str, views: bool) -> Result<DataType, String> {
    let name = name.trim();
    Ok(match name {
        "boolean" => DataType::Boolean,
        "int" => DataType::Int32,
        "long" => DataType::Int64,
        "float" => DataType::Float32,
        "double" => DataType::Float64,
        "date" => DataType::Date32,
        "time" => DataType::Time64(TimeUnit::Microsecond),
        "timestamp" => DataType::Timestamp(TimeUnit::Microsecond, None),
        "timestamptz" => DataType::Timestamp(TimeUnit::Microsecond, Some("UTC".into())),
        "timestamp_ns" => DataType::Timestamp(TimeUnit::Nanosecond, None),
        "timestamptz_ns" => DataType::Timestamp(TimeUnit::Nanosecond, Some("UTC".into())),
        "string" if views => DataType::Utf8View,
        "string" => DataType::Utf8,
        "binary" if views => DataType::BinaryView,
        "binary" => DataType::Binary,
        "uuid" => DataType::FixedSizeBinary(16),
        _ => {
            if let Some(len) = name
                .strip_prefix("fixed[")
                .and_then(|r| r.strip_suffix(']'))
                .and_then(|l| l.trim().parse::<i32>().ok())
            {
                DataType::FixedSizeBinary(len)
            } else if let Some((p, s)) = name
                .strip_prefix("decimal(")
                .and_then(|r| r.strip_suffix(')'))
                .and_then(|r| r.split_once(','))
            {
                let p: u8 = p.trim().parse().map_err(|_| format!("bad type {name}"))?;
                let s: i8 = s.trim().parse().map_err(|_| format!("bad type {name}"))?;
                DataType::Decimal128(p, s)
            } else {
                return Err(format!("the Iceberg type '{name}' is not supported"));
            }
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const V2: &str = r#"{
      "format-version": 2, "table-uuid": "x", "location": "file:///w/t",
      "last-sequence-number": 2, "last-updated-ms": 1700000000000, "last-column-id": 4,
      "current-schema-id": 1,
      "schemas": [
        {"type": "struct", "schema-id": 0, "fields": [
          {"id": 1, "name": "id", "required": true, "type": "long"},
          {"id": 2, "name": "name", "required": false, "type": "string"}]},
        {"type": "struct", "schema-id": 1, "fields": [
          {"id": 1, "name": "id", "required": true, "type": "long"},
          {"id": 2, "name": "label", "required": false, "type": "string"},
          {"id": 3, "name": "price", "required": false, "type": "decimal(9, 2)"},
          {"id": 4, "name": "tags", "required": false, "type":
            {"type": "list", "element-id": 5, "element": "string", "element-required": false}}]}],
      "default-spec-id": 0,
      "partition-specs": [{"spec-id": 0, "fields": [
        {"source-id": 1, "field-id": 1000, "name": "id_bucket", "transform": "bucket[4]"}]}],
      "current-snapshot-id": 20,
      "snapshots": [
        {"snapshot-id": 10, "timestamp-ms": 1000, "manifest-list": "file:///w/t/m1.avro"},
        {"snapshot-id": 20, "parent-snapshot-id": 10, "timestamp-ms": 2000, "manifest-list": "file:///w/t/m2.avro"}]
    }"#;

    #[test]
    fn metadata_reads_schemas_specs_and_snapshots() {
        let m = TableMetadata::parse(V2.as_bytes()).expect("parse");
        let schema = m.current_schema().expect("schema");
        let arrow = schema.to_arrow(false).expect("arrow");
        assert_eq!(arrow.field(1).name(), "label");
        assert_eq!(arrow.field(2).data_type(), &DataType::Decimal128(9, 2));
        assert!(!arrow.field(0).is_nullable());
        assert_eq!(arrow.field(1).metadata()[FIELD_ID_KEY], "2");
        assert!(matches!(arrow.field(3).data_type(), DataType::List(_)));
        assert_eq!(
            m.schema_by_id(0).map(|s| s.fields[1].name.as_str()),
            Some("name")
        );
        assert_eq!(
            m.spec(0).map(|s| s.fields[0].transform.as_str()),
            Some("bucket[4]")
        );
        assert_eq!(m.snapshot_at(1500).map(|s| s.snapshot_id), Some(10));
        assert_eq!(m.snapshot_at(999).map(|s| s.snapshot_id), None);
        assert_eq!(m.snapshot_at(5000).map(|s| s.snapshot_id), Some(20));
    }

    #[test]
    fn unknown_versions_and_types_are_named() {
        let v3 = V2.replace("\"format-version\": 2", "\"format-version\": 9");
        assert!(TableMetadata::parse(v3.as_bytes())
            .unwrap_err()
            .contains("format version 9"));
        let odd = V2.replace("\"decimal(9, 2)\"", "\"variant\"");
        let m = TableMetadata::parse(odd.as_bytes()).expect("parse");
        let e = m
            .current_schema()
            .and_then(|s| s.to_arrow(false))
            .unwrap_err();
        assert!(e.contains("price") && e.contains("variant"), "{e}");
    }
}
