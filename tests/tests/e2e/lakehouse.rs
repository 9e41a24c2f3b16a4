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

/// Lakehouse tables on the PostgreSQL door, listed in its catalog, and under access
/// rules: a row filter and a mask on an Iceberg table with merge-on-read deletes and
/// on a partitioned Delta table apply to a restricted user; an admin sees all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn access_rules_and_the_postgres_catalog_cover_lakehouse_tables() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let root = dir.path().display().to_string();
    python_script("iceberg_tables.py", &["write", &root]);
    let delta = format!("{root}/delta");
    std::fs::create_dir_all(&delta)?;
    python_script("delta_tables.py", &["write", &delta]);
    let config = format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n\
         [server.auth]\nusers = {{ root = {{ password = \"root-pw\", roles = [\"admin\"] }}, \
         ana = {{ password = \"ana-pw\", roles = [\"eu\"] }} }}\n\
         [[access.rule]]\nroles = [\"eu\"]\nschema = \"ice\"\ntable = \"mor\"\n\
         row_filter = \"category = 'b'\"\nmasks = {{ name = \"'hidden'\" }}\n\
         [[access.rule]]\nroles = [\"eu\"]\nschema = \"dl\"\ntable = \"by_region\"\n\
         row_filter = \"region = 'eu'\"\n\n\
         [[source]]\nname = \"ice\"\nkind = \"iceberg\"\ncatalog_url = \"sqlite://{root}/catalog.db\"\nnamespace = \"lake\"\n\n\
         [[source]]\nname = \"dl\"\nkind = \"delta\"\nlocation = \"{delta}\"\n"
    );
    let server = start_coordinator(&config)?;
    let addr = server.postgres_addr();
    let connect = |user: &str, password: &str| {
        let url = format!("postgres://{user}:{password}@{addr}/quiver");
        async move {
            let (client, connection) = tokio_postgres::connect(&url, tokio_postgres::NoTls).await?;
            tokio::spawn(connection);
            anyhow::Ok(client)
        }
    };
    let ana = connect("ana", "ana-pw").await?;
    let rows = ana
        .query("SELECT id, name FROM ice.mor ORDER BY id", &[])
        .await?;
    let got: Vec<(i64, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
    // Category b after the deletes (3 deleted, then appended again), every name masked.
    let want: Vec<(i64, String)> = [1, 3, 5, 7, 9, 11]
        .into_iter()
        .map(|i| (i, "hidden".to_string()))
        .collect();
    assert_eq!(got, want);
    let eu = ana.query("SELECT count(*) FROM dl.by_region", &[]).await?;
    assert_eq!(eu[0].get::<_, i64>(0), 4);
    let denied = ana.query("SELECT * FROM ice.events", &[]).await;
    let message = denied
        .map(|_| String::new())
        .unwrap_or_else(|e| format!("{e:?}"));
    assert!(
        message.contains("events"),
        "a table no rule grants: {message}"
    );
    // Metadata shows ana only the tables the rules grant.
    let listed = ana
        .query(
            "SELECT table_schema, table_name FROM information_schema.tables \
             WHERE table_schema IN ('ice', 'dl') ORDER BY 1, 2",
            &[],
        )
        .await?;
    let listed: Vec<(String, String)> = listed.iter().map(|r| (r.get(0), r.get(1))).collect();
    assert_eq!(
        listed,
        [
            ("dl".to_string(), "by_region".to_string()),
            ("ice".to_string(), "mor".to_string())
        ]
    );

    // An admin reads everything, and pg_catalog lists the tables with their columns.
    let admin = connect("root", "root-pw").await?;
    let all = admin.query("SELECT count(*) FROM ice.mor", &[]).await?;
    assert_eq!(all[0].get::<_, i64>(0), 10);
    let classes = admin
        .query(
            "SELECT c.relname FROM pg_catalog.pg_class c \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'ice' AND c.relkind = 'r' ORDER BY 1",
            &[],
        )
        .await?;
    let classes: Vec<String> = classes.iter().map(|r| r.get(0)).collect();
    for table in ["by_day", "events", "evolving", "mor", "posdel", "trimmed"] {
        assert!(classes.iter().any(|c| c == table), "{table} in {classes:?}");
    }
    let columns = admin
        .query(
            "SELECT a.attname FROM pg_catalog.pg_attribute a \
             JOIN pg_catalog.pg_class c ON c.oid = a.attrelid \
             JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname = 'dl' AND c.relname = 'by_region' AND a.attnum > 0 ORDER BY a.attnum",
            &[],
        )
        .await?;
    let columns: Vec<String> = columns.iter().map(|r| r.get(0)).collect();
    assert_eq!(columns, ["id", "region", "amount"]);
    Ok(())
}
