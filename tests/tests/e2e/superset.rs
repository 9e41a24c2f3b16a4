//! Apache Superset 6.1 (target/superset-venv), unmodified, over the PostgreSQL and
//! Flight SQL ports: databases, datasets, time grains with time-range filters
//! compared with DuckDB, and a saved chart (tests/python/superset_e2e.py).

use std::process::Command;

use quiver_tests::*;

#[test]
fn superset_charts_quiver_tables_through_both_doors() -> anyhow::Result<()> {
    let config = format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let out = target_dir().join("superset");
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("superset_e2e.py");
    let run = Command::new(superset_python())
        .arg(script)
        .arg(server.postgres_addr())
        .arg(&server.addr)
        .arg(tpch_dir())
        .arg(&out)
        .output()?;
    let stdout = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(
        run.status.success(),
        "superset_e2e.py failed:\n{stdout}\n{}\n(Superset's log: {})",
        String::from_utf8_lossy(&run.stderr),
        out.join("superset.log").display()
    );
    assert!(stdout.contains("SUPERSET OK"), "{stdout}");
    Ok(())
}
