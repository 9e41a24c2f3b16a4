//! The zero-configuration demo: TPC-H data generated on first run, 2 embedded workers.

use std::path::Path;

use anyhow::{Context, Result};
use quiver_coordinator::QuiverConfig;

pub fn config(data_dir: &Path, scale: f64) -> Result<QuiverConfig> {
    let dir = data_dir.join(format!("tpch-sf{scale}"));
    if !dir.join("lineitem").is_dir() {
        eprintln!("generating TPC-H scale {scale} into {} (first run only)...", dir.display());
    }
    quiver_coordinator::tpch::ensure(&dir, scale)?;
    let dir = std::fs::canonicalize(&dir).with_context(|| format!("cannot resolve {}", dir.display()))?;
    let text = format!(
        r#"
[server]
default_catalog = "quiver"
default_schema = "tpch"

[workers]
mode = "embedded"
count = 2

[[source]]
name = "tpch"
kind = "files"
location = {location:?}
format = "parquet"
"#,
        location = dir.display().to_string()
    );
    QuiverConfig::parse(&text, &dir).map_err(|e| anyhow::anyhow!("demo config: {e}"))
}
