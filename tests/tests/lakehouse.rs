//! A Delta table (written by the `deltalake` package), an Iceberg table (pyiceberg,
//! SQL catalog on SQLite) and a PostgreSQL table joined in one query over two
//! worker processes: the answer, the pruned files in EXPLAIN, and both workers in
//! EXPLAIN ANALYZE; then CREATE TABLE AS and INSERT into a writable Delta source,
//! written by the workers and read back by the `deltalake` package
//! (tests/python/lakehouse_join.py).

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
    let delta_w = format!("{root}/delta_w");
    std::fs::create_dir_all(&delta_w)?;
    // Workers read PostgreSQL's ranges too, so they get its source, as a
    // deployment gives them the coordinator's configuration file.
    let pg_source = pg::source("pg", "public");
    let env = [
        ("QUIVER_CONFIG_TOML", pg_source.as_str()),
        ("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD),
    ];
    let (w1, w2) = (
        start_worker_with("w1", &[], &env)?,
        start_worker_with("w2", &[], &env)?,
    );
    let config = format!(
        "[workers]\nmode = \"static\"\nsingle_stage_max_bytes = 0\naddresses = [{:?}, {:?}]\n\n\
         [[source]]\nname = \"dl\"\nkind = \"delta\"\nlocation = \"{root}/delta\"\n\n\
         [[source]]\nname = \"dlw\"\nkind = \"delta\"\nlocation = \"{root}/delta_w\"\nwritable = true\n\n\
         [[source]]\nname = \"ice\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{root}/catalog.db\"\nnamespace = \"lake\"\n\n\
         {pg_source}",
        w1.addr,
        w2.addr,
    );
    let server = start_coordinator_with_env(&config, &[("QUIVER_TEST_PG_PASSWORD", pg::PASSWORD)])?;
    let out = script(&["check", &format!("grpc://{}", server.addr), &delta_w]);
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
         [[source]]\nname = \"dlw\"\nkind = \"delta\"\nlocation = \"s3://lake/delta_w/\"\nwritable = true\n{options}\n\
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
    let out = script(&[
        "check",
        &format!("grpc://{}", server.addr),
        "s3://lake/delta_w/",
        &moto.endpoint,
    ]);
    assert!(out.contains("LAKEHOUSE OK"), "{out}");
    Ok(())
}
