//! A real third-party client, unmodified: Python with adbc-driver-flightsql
//! (installed into target/venv by scripts/setup-python.sh, which .ci/run calls).

use std::path::PathBuf;
use std::process::Command;

use quiver_tests::*;

fn run_script(args: &[&str]) -> String {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("adbc_client.py");
    let out = Command::new(python())
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "adbc_client.py failed ({}):\n{stdout}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}

#[test]
fn adbc_flightsql_driver_works_unmodified() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let out = run_script(&[&format!("grpc://{}", server.addr)]);
    assert!(out.contains("ADBC OK"), "{out}");
    Ok(())
}

#[test]
fn adbc_flightsql_driver_logs_in() -> anyhow::Result<()> {
    let config = format!(
        "[server.auth]\nusers = {{ bi = \"${{QUIVER_TEST_PW}}\" }}\n{}",
        tpch_source()
    );
    let server = start_coordinator_with_env(&config, &[("QUIVER_TEST_PW", "pa$$word")])?;
    let out = run_script(&[&format!("grpc://{}", server.addr), "bi", "pa$$word"]);
    assert!(out.contains("ADBC OK"), "{out}");
    Ok(())
}

/// Every query shape's announced schema is the streamed one, and GetTables agrees
/// with results (tests/python/adbc_schemas.py, the driver's own schema check).
#[test]
fn flight_sql_metadata_agrees_with_results() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join("adbc_schemas.py");
    let out = Command::new(python())
        .arg(script)
        .arg(format!("grpc://{}", server.addr))
        .output()?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "adbc_schemas.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("SCHEMAS OK"), "{stdout}");
    Ok(())
}
