//! The `[[source]]` sections of the Quiver configuration file.

use std::collections::BTreeMap;

use serde::Deserialize;

use crate::env::EnvString;

/// Catalog name used when a source does not name one.
pub const DEFAULT_CATALOG: &str = "quiver";

/// One data source, mounted as the schema `catalog.schema`.
// No `deny_unknown_fields` here: serde does not support it with `flatten`; the
// kind-specific structs deny unknown keys instead, which covers every key.
#[derive(Debug, Clone, Deserialize)]
pub struct SourceConfig {
    /// Unique source name; the default schema name.
    pub name: String,
    /// Catalog the schema is mounted in (default `quiver`).
    #[serde(default)]
    pub catalog: Option<String>,
    /// Schema name (default: the source name).
    #[serde(default)]
    pub schema: Option<String>,
    #[serde(flatten)]
    pub kind: SourceKind,
}

impl SourceConfig {
    /// Makes relative local paths absolute against `base` (the config file's folder),
    /// so the same config means the same files wherever it is read from.
    pub fn resolve_relative_paths(&mut self, base: &std::path::Path) {
        let absolute = |loc: &str| -> String {
            if url::Url::parse(loc).is_ok() || std::path::Path::new(loc).is_absolute() {
                loc.to_string()
            } else {
                let joined = base.join(loc.trim_start_matches("./"));
                let mut s = joined.to_string_lossy().into_owned();
                if loc.ends_with('/') && !s.ends_with('/') {
                    s.push('/');
                }
                s
            }
        };
        match &mut self.kind {
            SourceKind::Files(files) => {
                if let Some(loc) = &files.location {
                    files.location = Some(absolute(loc));
                } else {
                    for table in &mut files.tables {
                        table.location = absolute(&table.location);
                    }
                }
            }
            SourceKind::Delta(delta) => {
                if let Some(loc) = &delta.location {
                    delta.location = Some(absolute(loc));
                }
                for table in &mut delta.tables {
                    table.location = absolute(&table.location);
                }
            }
            SourceKind::Iceberg(iceberg) => {
                if let Some(loc) = &iceberg.location {
                    iceberg.location = Some(absolute(loc));
                }
                for table in &mut iceberg.tables {
                    table.location = absolute(&table.location);
                }
            }
            SourceKind::Sqlite(sqlite) => sqlite.location = absolute(&sqlite.location),
            SourceKind::Postgres(_) | SourceKind::Mysql(_) | SourceKind::FlightSql(_) => {}
        }
    }

    pub fn catalog_name(&self) -> &str {
        self.catalog.as_deref().unwrap_or(DEFAULT_CATALOG)
    }
    pub fn schema_name(&self) -> &str {
        self.schema.as_deref().unwrap_or(&self.name)
    }
}

/// What kind of source it is, with its kind-specific settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum SourceKind {
    /// Parquet, CSV, JSON or Arrow files on local disk or an object store.
    Files(FilesSource),
    /// One schema of a PostgreSQL database.
    Postgres(PostgresSource),
    /// One MySQL or MariaDB database.
    Mysql(MySqlSource),
    /// Delta Lake tables in a folder, local or on an object store.
    Delta(crate::lakehouse::DeltaSource),
    /// Apache Iceberg tables in a warehouse folder or a SQL catalog.
    Iceberg(crate::lakehouse::IcebergSource),
    /// A SQLite database file.
    Sqlite(SqliteSource),
    /// One schema of another Flight SQL service.
    #[serde(rename = "flightsql")]
    FlightSql(FlightSqlSource),
}

impl SourceKind {
    /// The `kind` key's value, as `system.sources` and messages show it.
    pub fn name(&self) -> &'static str {
        match self {
            SourceKind::Files(_) => "files",
            SourceKind::Postgres(_) => "postgres",
            SourceKind::Mysql(_) => "mysql",
            SourceKind::Delta(_) => "delta",
            SourceKind::Iceberg(_) => "iceberg",
            SourceKind::Sqlite(_) => "sqlite",
            SourceKind::FlightSql(_) => "flightsql",
        }
    }
}

/// A SQLite database file mounted as a Quiver schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SqliteSource {
    /// Path of the database file (relative paths against the config file's folder).
    /// Every process that runs a scan of it (the coordinator, workers) opens it there.
    pub location: String,
    /// Most connections open at once; more statements wait for one.
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    /// How long a statement waits for a lock another writer holds.
    #[serde(default = "connect_timeout")]
    pub busy_timeout_secs: u64,
    /// A pushed-down statement running longer is interrupted; 0 = none.
    #[serde(default = "statement_timeout")]
    pub statement_timeout_secs: u64,
    /// The cached table list is rediscovered when older than this.
    #[serde(default = "refresh")]
    pub refresh_secs: u64,
    /// False (the default): the file is opened read-only.
    #[serde(default)]
    pub writable: bool,
}

/// The SQL dialect statements pushed to a Flight SQL service are written in.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SqlDialect {
    /// ANSI-style SQL with double-quoted identifiers (DataFusion, Quiver, Dremio, Spice).
    #[default]
    Generic,
    Postgres,
    Mysql,
    Sqlite,
    Duckdb,
}

/// Another Flight SQL service (Quiver, Dremio, Spice, …) mounted as a Quiver schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FlightSqlSource {
    /// `grpc://host:port`, or `grpc+tls://host:port` for TLS.
    pub url: String,
    /// Basic authentication (a handshake, then the bearer token the server returns).
    #[serde(default)]
    pub username: Option<EnvString>,
    #[serde(default)]
    pub password: Option<EnvString>,
    /// A bearer token sent with every call (instead of a username and password).
    #[serde(default)]
    pub token: Option<EnvString>,
    /// The remote catalog and schema to mount; unset: the remote's only schema
    /// (discovery fails and lists them when there are several).
    #[serde(default)]
    pub remote_catalog: Option<String>,
    #[serde(default)]
    pub remote_schema: Option<String>,
    /// The dialect pushed-down statements are written in.
    #[serde(default)]
    pub dialect: SqlDialect,
    /// PEM file of the certificate authorities for `grpc+tls://` (default: the system's).
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    #[serde(default = "connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Limit of one remote call (a statement's planning, one stream's reading); 0 = none.
    #[serde(default = "statement_timeout")]
    pub statement_timeout_secs: u64,
    /// Most calls in flight at once; more wait for one to finish.
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    /// The cached table list is rediscovered when older than this.
    #[serde(default = "refresh")]
    pub refresh_secs: u64,
}

/// A MySQL/MariaDB database mounted as a Quiver schema.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MySqlSource {
    /// `mysql://user:${PASSWORD}@host:port/database`.
    pub url: EnvString,
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    /// A connection not made within this fails the statement as unreachable.
    #[serde(default = "connect_timeout")]
    pub connect_timeout_secs: u64,
    /// A plain scan of a large table is split into this many primary-key ranges,
    /// read in parallel by the workers; 1 turns splitting off.
    #[serde(default = "scan_partitions")]
    pub scan_partitions: usize,
    /// Tables smaller than this (MiB of data, as `information_schema.tables` says)
    /// are read by one statement.
    #[serde(default = "partition_min_mb")]
    pub partition_min_mb: u64,
    /// MariaDB's `max_statement_time` for pushed-down statements; 0 = none
    /// (set 0 for MySQL, which names that limit differently).
    #[serde(default = "statement_timeout")]
    pub statement_timeout_secs: u64,
    /// The cached table list is rediscovered when older than this.
    #[serde(default = "refresh")]
    pub refresh_secs: u64,
    /// False (the default): every connection is a read-only session, so no plan,
    /// forged or not, can change the database.
    #[serde(default)]
    pub writable: bool,
}

/// A PostgreSQL schema mounted as a Quiver schema. Queries touching only tables of
/// the same database are pushed down to it as one SQL statement.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PostgresSource {
    /// `postgres://user:${PASSWORD}@host:port/db` (or key=value form).
    pub url: EnvString,
    /// The PostgreSQL schema whose tables and views are mounted.
    #[serde(default = "public")]
    pub remote_schema: String,
    #[serde(default = "pool_size")]
    pub pool_size: usize,
    #[serde(default = "connect_timeout")]
    pub connect_timeout_secs: u64,
    /// Server-side limit of one pushed-down statement; 0 = none.
    #[serde(default = "statement_timeout")]
    pub statement_timeout_secs: u64,
    /// The cached table list is rediscovered when older than this.
    #[serde(default = "refresh")]
    pub refresh_secs: u64,
    /// PEM file of the certificate authorities that signed the server's certificate.
    /// Setting it turns TLS on (and required); `sslmode=require` in the URL without
    /// it verifies against the system's roots. The host name is always verified.
    #[serde(default)]
    pub tls_ca_file: Option<std::path::PathBuf>,
    /// A plain scan of a large table is split into this many page ranges, read in
    /// parallel by the workers; 1 turns splitting off.
    #[serde(default = "scan_partitions")]
    pub scan_partitions: usize,
    /// Tables smaller than this (MiB on disk) are read by one statement.
    #[serde(default = "partition_min_mb")]
    pub partition_min_mb: u64,
    /// False (the default): every connection is a read-only session
    /// (`default_transaction_read_only`), so no plan, forged or not, can change the database.
    #[serde(default)]
    pub writable: bool,
}

fn scan_partitions() -> usize {
    4
}
fn partition_min_mb() -> u64 {
    64
}
fn public() -> String {
    "public".into()
}
fn pool_size() -> usize {
    8
}
fn connect_timeout() -> u64 {
    5
}
fn statement_timeout() -> u64 {
    300
}
fn refresh() -> u64 {
    300
}

/// A folder of tables: every sub-folder (or file) under `location` is one table,
/// plus any tables listed explicitly.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesSource {
    /// A local path (relative paths are resolved against the config file's folder)
    /// or a URL such as `s3://bucket/prefix/`.
    #[serde(default)]
    pub location: Option<String>,
    /// Default format of the tables.
    #[serde(default)]
    pub format: FileFormat,
    /// CSV options for CSV tables that do not set their own.
    #[serde(default)]
    pub csv: CsvOptions,
    /// Object-store options (S3: endpoint, region, access_key_id, secret_access_key,
    /// session_token, allow_http, virtual_hosted_style_request). Values may use `${ENV}`.
    #[serde(default)]
    pub options: BTreeMap<String, EnvString>,
    /// Tables declared one by one (in addition to those discovered under `location`).
    #[serde(default, rename = "table")]
    pub tables: Vec<FileTable>,
    /// True: `COPY … TO`, `CREATE TABLE … AS`, `INSERT` and `DROP TABLE` may write
    /// under `location` (which it then needs). False (the default): read-only.
    #[serde(default)]
    pub writable: bool,
}

/// One explicitly declared table.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileTable {
    pub name: String,
    /// A folder or a single file; relative to the source location when that is set,
    /// otherwise to the config file's folder.
    pub location: String,
    #[serde(default)]
    pub format: Option<FileFormat>,
    #[serde(default)]
    pub csv: Option<CsvOptions>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FileFormat {
    #[default]
    Parquet,
    Csv,
    /// Newline-delimited JSON.
    Json,
    /// Arrow IPC file format.
    Arrow,
}

impl FileFormat {
    /// The file extension tables of this format are listed with.
    pub fn extension(self) -> &'static str {
        match self {
            FileFormat::Parquet => ".parquet",
            FileFormat::Csv => ".csv",
            FileFormat::Json => ".json",
            FileFormat::Arrow => ".arrow",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CsvOptions {
    #[serde(default = "yes")]
    pub header: bool,
    /// A single ASCII character.
    #[serde(default = "comma")]
    pub delimiter: char,
    /// Extension of the files (default `.csv`), e.g. `.tbl` or `.csv.gz`.
    #[serde(default)]
    pub extension: Option<String>,
}

impl Default for CsvOptions {
    fn default() -> Self {
        Self {
            header: true,
            delimiter: ',',
            extension: None,
        }
    }
}

fn yes() -> bool {
    true
}
fn comma() -> char {
    ','
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    struct Doc {
        source: Vec<SourceConfig>,
    }

    #[test]
    fn parses_a_files_source() {
        let doc: Doc = toml::from_str(
            r#"
            [[source]]
            name = "tpch"
            kind = "files"
            location = "./data"
            format = "parquet"
            [[source.table]]
            name = "events"
            location = "ev/"
            format = "csv"
            csv = { header = false, delimiter = "|" }
            "#,
        )
        .expect("parses");
        let s = &doc.source[0];
        assert_eq!((s.catalog_name(), s.schema_name()), ("quiver", "tpch"));
        let SourceKind::Files(f) = &s.kind else {
            panic!("files source expected")
        };
        assert_eq!(f.tables[0].format, Some(FileFormat::Csv));
        assert_eq!(f.tables[0].csv.as_ref().map(|c| c.delimiter), Some('|'));
    }

    #[test]
    fn unknown_keys_are_named_with_their_line() {
        let err =
            toml::from_str::<Doc>("[[source]]\nname = \"a\"\nkind = \"files\"\nlocaton = \"x\"\n")
                .unwrap_err()
                .to_string();
        assert!(err.contains("locaton"), "{err}");
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn unknown_kind_is_refused() {
        let err = toml::from_str::<Doc>("[[source]]\nname = \"a\"\nkind = \"oracle\"\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("oracle"), "{err}");
    }
}
