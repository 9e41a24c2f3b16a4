//! The zero-configuration demo: TPC-H data generated on first run, 2 embedded
//! workers, every door open on localhost (Flight SQL 50051, PostgreSQL 5433,
//! web console 8080), and a writable `lake` folder for pipelines to write to.

use std::path::Path;

use anyhow::{Context, Result};
use quiver_coordinator::QuiverConfig;

pub fn config(data_dir: &Path, scale: f64) -> Result<QuiverConfig> {
    let dir = data_dir.join(format!("tpch-sf{scale}"));
    if !dir.join("lineitem").is_dir() {
        eprintln!(
            "generating TPC-H scale {scale} into {} (first run only)...",
            dir.display()
        );
    }
    quiver_coordinator::tpch::ensure(&dir, scale)?;
    let dir =
        std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let home = std::fs::canonicalize(data_dir)
        .with_context(|| format!("cannot resolve {}", data_dir.display()))?;
    let lake = home.join("lake");
    std::fs::create_dir_all(&lake).with_context(|| format!("cannot create {}", lake.display()))?;
    let text = format!(
        r#"
[server]
data_dir = {home:?}
default_catalog = "quiver"
default_schema = "tpch"
postgres_listen = "127.0.0.1:5433"
http_listen = "127.0.0.1:8080"

[workers]
mode = "embedded"
count = 2

[[source]]
name = "tpch"
kind = "files"
location = {location:?}
format = "parquet"

[[source]]
name = "lake"
kind = "files"
location = {lake:?}
writable = true
"#,
        location = dir.display().to_string(),
        lake = lake.display().to_string(),
        home = home.display().to_string()
    );
    QuiverConfig::parse(&text, &dir).map_err(|e| anyhow::anyhow!("demo config: {e}"))
}
