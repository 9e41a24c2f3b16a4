//! Iceberg tables written by pyiceberg (a SQL catalog on SQLite, target/venv) and
//! read through `kind = "iceberg"` sources, once through the SQL catalog and once
//! through the warehouse folder: appends, day and bucket partitions, added and
//! renamed columns, a delete, time travel, a commit made while the server runs
//! (tests/python/iceberg_tables.py).

use quiver_tests::*;

fn script(args: &[&str]) -> String {
    python_script("iceberg_tables.py", args)
}

#[test]
fn iceberg_tables_written_by_pyiceberg_read_the_same_through_quiver() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().display().to_string();
    script(&["write", &root]);
    let config = format!(
        "[[source]]\nname = \"ice\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{root}/catalog.db\"\n\
         namespace = \"lake\"\nrefresh_secs = 0\n\n\
         [[source]]\nname = \"icefolder\"\nkind = \"iceberg\"\nlocation = \"{root}/warehouse/lake\"\n"
    );
    let server = start_coordinator(&config)?;
    let out = script(&["check", &root, &format!("grpc://{}", server.addr)]);
    assert!(out.contains("ICEBERG OK"), "{out}");
    Ok(())
}
