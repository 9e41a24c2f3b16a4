//! Every scenario under examples/ runs from its script against the test build and
//! ends with `EXAMPLE OK` (each script checks its own answers).

use std::path::PathBuf;
use std::process::Command;

use quiver_tests::*;

fn run(example: &str) {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(example)
        .join("run.sh");
    let out = Command::new("bash")
        .arg(&script)
        .env("QUIVER_BIN", quiver_bin())
        .output()
        .expect("run the example's script");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.lines().last() == Some("EXAMPLE OK"),
        "{example} failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn federated_postgres_mariadb_and_parquet_on_s3() {
    run("01-federated");
}

#[test]
fn a_view_and_its_accelerated_copy() {
    run("02-views-acceleration");
}

#[test]
fn a_pipeline_under_access_rules() {
    run("03-pipeline-access-rules");
}

#[test]
fn bi_tools_connect() {
    run("04-bi-tools");
}

#[test]
fn autoscaled_docker_workers() {
    run("05-autoscaled-docker");
}
