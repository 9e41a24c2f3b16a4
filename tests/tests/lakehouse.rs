//! A Delta table (written by the `deltalake` package), an Iceberg table (pyiceberg,
//! SQL catalog on SQLite) and a PostgreSQL table joined in one query over two
//! worker processes: the answer, the pruned files in EXPLAIN, and both workers in
//! EXPLAIN ANALYZE (tests/python/lakehouse_join.py).

use quiver_tests::*;

fn script(args: &[&str]) -> String {
    python_script("lakehouse_join.py", args)
}

/// The PostgreSQL side, made once for both tests.
fn regions() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        pg::psql(
            "DROP TABLE IF EXISTS lake_region; \
             CREATE TABLE lake_region (item_id bigint PRIMARY KEY, region text NOT NULL); \
             INSERT INTO lake_region SELECT i, 'r' || (i % 3) FROM generate_series(0, 49) i;",
        );
    });
}

#[test]
fn delta_iceberg_and_postgres_join_across_two_workers() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().display().to_string();
    script(&["write", &root]);
    regions();
    let (w1, w2) = (start_worker("w1")?, start_worker("w2")?);
    let config = format!(
        "[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}, {:?}]\n\n\
         [[source]]\nname = \"dl\"\nkind = \"delta\"\nlocation = \"{root}/delta\"\n\n\
         [[source]]\nname = \"ice\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{root}/catalog.db\"\nnamespace = \"lake\"\n\n\
         {}",
        w1.addr,
        w2.addr,
        pg::source("pg", "public")
    );
    let server = start_coordinator_with_env(&config, &[("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD)])?;
    let out = script(&["check", &format!("grpc://{}", server.addr)]);
    assert!(out.contains("LAKEHOUSE OK"), "{out}");
    Ok(())
}

/// The same three-way join with the Delta and Iceberg tables on an S3-compatible
/// store (moto): the writers write there, Quiver and its workers read from there.
#[test]
fn the_same_join_with_the_lakehouse_tables_on_s3() -> anyhow::Result<()> {
    let moto = quiver_tests::moto::Moto::start();
    moto.create_bucket("lake");
    let dir = tempfile::tempdir()?;
    let root = dir.path().display().to_string();
    script(&["write", &root, &moto.endpoint]);
    regions();
    let options = moto.options();
    let sources = format!(
        "[[source]]\nname = \"dl\"\nkind = \"delta\"\nlocation = \"s3://lake/delta/\"\n{options}\n\
         [[source]]\nname = \"ice\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{root}/catalog.db\"\nnamespace = \"lake\"\n\
         warehouse = \"s3://lake/warehouse/\"\n{options}\n\
         {}",
        pg::source("pg", "public")
    );
    // Workers reach the bucket with the sources' object-store settings, as a
    // deployment gives them the same configuration file.
    let env = [
        ("QUIVER_CONFIG_TOML", sources.as_str()),
        ("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD),
    ];
    let (w1, w2) = (
        start_worker_with("w1", &[], &env)?,
        start_worker_with("w2", &[], &env)?,
    );
    let config = format!(
        "[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}, {:?}]\n\n{sources}",
        w1.addr, w2.addr
    );
    let server = start_coordinator_with_env(&config, &[("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD)])?;
    let out = script(&["check", &format!("grpc://{}", server.addr)]);
    assert!(out.contains("LAKEHOUSE OK"), "{out}");
    Ok(())
}
