//! Answers to the metadata calls BI tools make: catalogs, schemas, tables (with
//! their Arrow schemas), table types, SqlInfo and XDBC type info.

use std::sync::Arc;

use arrow_flight::sql::metadata::{
    GetCatalogsBuilder, GetDbSchemasBuilder, GetTablesBuilder, SqlInfoData, SqlInfoDataBuilder,
    XdbcTypeInfo, XdbcTypeInfoData, XdbcTypeInfoDataBuilder,
};
use arrow_flight::sql::{
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetTables, Nullable, Searchable, SqlInfo,
    SqlSupportedTransaction, XdbcDataType,
};
use datafusion::arrow::array::{RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::datasource::TableType;
use datafusion::prelude::SessionContext;
use tonic::Status;

pub fn sql_info() -> Result<SqlInfoData, Status> {
    let mut b = SqlInfoDataBuilder::new();
    b.append(SqlInfo::FlightSqlServerName, "Quiver");
    b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
    b.append(SqlInfo::FlightSqlServerArrowVersion, "59");
    b.append(SqlInfo::FlightSqlServerReadOnly, true);
    b.append(SqlInfo::FlightSqlServerSql, true);
    b.append(SqlInfo::FlightSqlServerSubstrait, false);
    b.append(
        SqlInfo::FlightSqlServerTransaction,
        SqlSupportedTransaction::None as i32,
    );
    b.append(SqlInfo::FlightSqlServerCancel, false);
    b.append(SqlInfo::SqlIdentifierQuoteChar, "\"");
    b.append(SqlInfo::SqlDdlCatalog, false);
    b.append(SqlInfo::SqlDdlSchema, false);
    b.append(SqlInfo::SqlDdlTable, false);
    b.build()
        .map_err(|e| Status::internal(format!("cannot build SqlInfo: {e}")))
}

pub fn xdbc_type_info() -> Result<XdbcTypeInfoData, Status> {
    let mut b = XdbcTypeInfoDataBuilder::new();
    let types = [
        ("BOOLEAN", XdbcDataType::XdbcBit, None),
        ("SMALLINT", XdbcDataType::XdbcSmallint, Some(5)),
        ("INTEGER", XdbcDataType::XdbcInteger, Some(10)),
        ("BIGINT", XdbcDataType::XdbcBigint, Some(19)),
        ("REAL", XdbcDataType::XdbcReal, Some(7)),
        ("DOUBLE", XdbcDataType::XdbcDouble, Some(15)),
        ("DECIMAL", XdbcDataType::XdbcDecimal, Some(38)),
        ("VARCHAR", XdbcDataType::XdbcVarchar, None),
        ("VARBINARY", XdbcDataType::XdbcVarbinary, None),
        ("DATE", XdbcDataType::XdbcDate, None),
        ("TIME", XdbcDataType::XdbcTime, None),
        ("TIMESTAMP", XdbcDataType::XdbcTimestamp, None),
    ];
    for (name, data_type, precision) in types {
        let text = matches!(data_type, XdbcDataType::XdbcVarchar);
        b.append(XdbcTypeInfo {
            type_name: name.into(),
            data_type,
            column_size: precision,
            literal_prefix: text.then(|| "'".into()),
            literal_suffix: text.then(|| "'".into()),
            create_params: None,
            nullable: Nullable::NullabilityNullable,
            case_sensitive: text,
            searchable: Searchable::Full,
            unsigned_attribute: precision.map(|_| false),
            fixed_prec_scale: matches!(data_type, XdbcDataType::XdbcDecimal),
            auto_increment: None,
            local_type_name: Some(name.into()),
            minimum_scale: None,
            maximum_scale: None,
            sql_data_type: data_type,
            datetime_subcode: None,
            num_prec_radix: precision.map(|_| 10),
            interval_precision: None,
        });
    }
    b.build()
        .map_err(|e| Status::internal(format!("cannot build XDBC type info: {e}")))
}

pub fn catalogs(ctx: &SessionContext, query: CommandGetCatalogs) -> Result<RecordBatch, Status> {
    let mut b = query.into_builder();
    let mut names = ctx.catalog_names();
    names.sort();
    for name in names {
        b.append(name);
    }
    b.build().map_err(arrow_status)
}

pub fn catalogs_schema() -> SchemaRef {
    GetCatalogsBuilder::new().schema()
}

pub fn db_schemas(ctx: &SessionContext, query: CommandGetDbSchemas) -> Result<RecordBatch, Status> {
    let mut b: GetDbSchemasBuilder = query.into_builder();
    for (catalog, schema) in schema_pairs(ctx) {
        b.append(catalog, schema);
    }
    b.build().map_err(arrow_status)
}

pub async fn tables(
    ctx: &SessionContext,
    query: CommandGetTables,
    string_views: bool,
) -> Result<RecordBatch, Status> {
    let catalog_filter = query.catalog.clone();
    let mut b: GetTablesBuilder = query.into_builder();
    let include_schema = b.include_schema();
    let empty = Schema::empty();
    for (catalog, schema) in schema_pairs(ctx) {
        if catalog_filter.as_ref().is_some_and(|c| c != &catalog) {
            continue;
        }
        let Some(provider) = ctx.catalog(&catalog).and_then(|c| c.schema(&schema)) else {
            continue;
        };
        let mut names = provider.table_names();
        names.sort();
        for name in names {
            // A table that cannot be resolved (missing folder, bad file) is left out of
            // the listing with a warning; queries on it still report the reason.
            let table = match provider.table(&name).await {
                Ok(Some(t)) => t,
                Ok(None) => continue,
                Err(e) => {
                    tracing::warn!(table = %format!("{catalog}.{schema}.{name}"), error = %e, "table left out of GetTables");
                    continue;
                }
            };
            let kind = match table.table_type() {
                TableType::Base => "TABLE",
                TableType::View => "VIEW",
                TableType::Temporary => "LOCAL TEMPORARY",
            };
            let table_schema = match include_schema {
                true => Arc::new(described(
                    &table.schema(),
                    [&catalog, &schema, &name],
                    string_views,
                )),
                false => Arc::new(empty.clone()),
            };
            b.append(&catalog, &schema, &name, kind, &table_schema)
                .map_err(arrow_status)?;
        }
    }
    b.build().map_err(arrow_status)
}

/// A table's schema as GetTables announces it: in the types its query results
/// arrive in ([`quiver_proto::client_types::flight_schema`]: strings as `utf8`, unless the client asked for
/// views with [`super::requests::STRING_VIEWS_HEADER`]; every column nullable),
/// each column described by the Flight SQL column metadata (its SQL type name and
/// where it lives), which BI tools show and map to their own types.
fn described(table: &Schema, [catalog, schema, name]: [&str; 3], string_views: bool) -> Schema {
    let client = super::results::flight_schema(table, string_views);
    let fields: Vec<Field> = client
        .fields()
        .iter()
        .map(|f| {
            let mut metadata = f.metadata().clone();
            metadata.insert(
                "ARROW:FLIGHT:SQL:TYPE_NAME".into(),
                sql_type_name(f.data_type()).into(),
            );
            metadata.insert("ARROW:FLIGHT:SQL:CATALOG_NAME".into(), catalog.into());
            metadata.insert("ARROW:FLIGHT:SQL:SCHEMA_NAME".into(), schema.into());
            metadata.insert("ARROW:FLIGHT:SQL:TABLE_NAME".into(), name.into());
            f.as_ref().clone().with_metadata(metadata)
        })
        .collect();
    Schema::new_with_metadata(fields, client.metadata().clone())
}

/// The SQL name of an Arrow type, as [`xdbc_type_info`] lists it.
fn sql_type_name(t: &DataType) -> &'static str {
    match t {
        DataType::Boolean => "BOOLEAN",
        DataType::Int8 | DataType::Int16 | DataType::UInt8 => "SMALLINT",
        DataType::Int32 | DataType::UInt16 => "INTEGER",
        DataType::Int64 | DataType::UInt32 | DataType::UInt64 => "BIGINT",
        DataType::Float16 | DataType::Float32 => "REAL",
        DataType::Float64 => "DOUBLE",
        DataType::Decimal32(..)
        | DataType::Decimal64(..)
        | DataType::Decimal128(..)
        | DataType::Decimal256(..) => "DECIMAL",
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => "VARCHAR",
        DataType::Binary
        | DataType::LargeBinary
        | DataType::BinaryView
        | DataType::FixedSizeBinary(_) => "VARBINARY",
        DataType::Date32 | DataType::Date64 => "DATE",
        DataType::Time32(_) | DataType::Time64(_) => "TIME",
        DataType::Timestamp(..) => "TIMESTAMP",
        DataType::Interval(_) | DataType::Duration(_) => "INTERVAL",
        DataType::List(_)
        | DataType::LargeList(_)
        | DataType::FixedSizeList(..)
        | DataType::ListView(_) => "ARRAY",
        DataType::Struct(_) => "STRUCT",
        DataType::Map(..) => "MAP",
        _ => "OTHER",
    }
}

/// Schema of the GetPrimaryKeys answer: the key columns a database source reports.
pub fn primary_keys_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("catalog_name", DataType::Utf8, true),
        Field::new("db_schema_name", DataType::Utf8, true),
        Field::new("table_name", DataType::Utf8, false),
        Field::new("column_name", DataType::Utf8, false),
        Field::new("key_name", DataType::Utf8, true),
        Field::new("key_sequence", DataType::Int32, false),
    ]))
}

/// GetPrimaryKeys rows: one per key column, `key_sequence` counting from 1.
pub fn primary_keys(
    keys: Vec<(String, String, String, Vec<String>)>,
) -> Result<RecordBatch, Status> {
    let rows: Vec<(&str, &str, &str, &str, i32)> = keys
        .iter()
        .flat_map(|(c, s, t, cols)| {
            cols.iter().enumerate().map(move |(i, col)| {
                (
                    c.as_str(),
                    s.as_str(),
                    t.as_str(),
                    col.as_str(),
                    i as i32 + 1,
                )
            })
        })
        .collect();
    let columns: Vec<datafusion::arrow::array::ArrayRef> = vec![
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.0))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.1))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.2))),
        Arc::new(StringArray::from_iter_values(rows.iter().map(|r| r.3))),
        Arc::new(StringArray::new_null(rows.len())),
        Arc::new(datafusion::arrow::array::Int32Array::from_iter_values(
            rows.iter().map(|r| r.4),
        )),
    ];
    RecordBatch::try_new(primary_keys_schema(), columns)
        .map_err(|e| Status::internal(e.to_string()))
}

fn schema_pairs(ctx: &SessionContext) -> Vec<(String, String)> {
    let mut pairs = vec![];
    for catalog in ctx.catalog_names() {
        if let Some(c) = ctx.catalog(&catalog) {
            for schema in c.schema_names() {
                pairs.push((catalog.clone(), schema));
            }
        }
    }
    pairs.sort();
    pairs
}

fn arrow_status(e: impl std::fmt::Display) -> Status {
    Status::internal(format!("cannot build metadata: {e}"))
}
