//! dbt-core with dbt-postgres, unmodified (target/dbt-venv), builds a project into a
//! writable files source over the PostgreSQL port: table, view and incremental
//! models, run twice, and dbt's tests (tests/python/dbt_project.py).

use std::process::Command;

use quiver_tests::*;

#[test]
fn dbt_builds_tests_and_rebuilds_a_project() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake)?;
    let config = format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n{}[[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n",
        tpch_source(),
        lake.display().to_string()
    );
    let server = start_coordinator(&config)?;
    let addr = server.postgres_addr();
    let (host, port) = addr
        .rsplit_once(':')
        .ok_or_else(|| anyhow::anyhow!("address {addr}"))?;
    let script = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("dbt_project.py");
    let out = Command::new(dbt_python())
        .arg(script)
        .args([host, port])
        .arg(tpch_dir())
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "dbt_project.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("DBT OK"), "{stdout}");
    Ok(())
}
