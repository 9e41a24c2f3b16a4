//! The DDL tools send around their work, over the PostgreSQL port (tokio-postgres
//! and Debian's psql): session-scoped temporary tables and views, `CREATE TABLE`
//! with columns and `TRUNCATE` on a writable files source, `CREATE SCHEMA` /
//! `DROP SCHEMA`, and the catalog views that tell tables from views.

use std::path::Path;
use std::process::Command;

use quiver_tests::*;
use tokio_postgres::error::SqlState;
use tokio_postgres::NoTls;

fn config(lake: &Path) -> String {
    format!(
        "[server]\npostgres_listen = \"127.0.0.1:0\"\n{}[[source]]\nname = \"lake\"\nkind = \"files\"\nlocation = {:?}\nwritable = true\n",
        tpch_source(),
        lake.display().to_string()
    )
}

async fn connect(url: &str) -> anyhow::Result<tokio_postgres::Client> {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await?;
    tokio::spawn(connection);
    Ok(client)
}

async fn count(c: &tokio_postgres::Client, sql: &str) -> anyhow::Result<i64> {
    Ok(c.query_one(sql, &[]).await?.get(0))
}

fn code(e: &tokio_postgres::Error) -> String {
    e.code().map(|c| c.code().to_string()).unwrap_or_default()
}

/// Every file under `dir`, relative.
fn files(dir: &Path) -> Vec<String> {
    let mut out = vec![];
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            if e.path().is_dir() {
                stack.push(e.path());
            } else if let Ok(rel) = e.path().strip_prefix(dir) {
                out.push(rel.display().to_string());
            }
        }
    }
    out.sort();
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn temporary_tables_and_views_belong_to_one_session() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake)?;
    let server = start_coordinator(&config(&lake))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    let a = connect(&url).await?;
    let b = connect(&url).await?;

    // A temporary table, read unqualified (before the default schema's tables) and joined.
    a.batch_execute("CREATE TEMPORARY TABLE nation AS SELECT n_nationkey, n_name, n_regionkey FROM tpch.nation WHERE n_regionkey = 1")
        .await?;
    assert_eq!(count(&a, "SELECT count(*) FROM nation").await?, 5);
    assert_eq!(count(&a, "SELECT count(*) FROM pg_temp.nation").await?, 5);
    assert_eq!(
        count(&a, "SELECT count(*) FROM nation JOIN tpch.region ON n_regionkey = r_regionkey WHERE r_name = 'AMERICA'").await?,
        5
    );
    // The same statement text means the shared table in another session (and no cached answer crosses).
    assert_eq!(count(&b, "SELECT count(*) FROM nation").await?, 25);
    let e = b
        .query_one("SELECT count(*) FROM pg_temp.nation", &[])
        .await
        .expect_err("another session's temporary table");
    assert_eq!(code(&e), "42P01", "{e:?}");
    // Information schema lists it for its session only (dbt reads the columns of its temporary table so).
    let columns = a
        .query("SELECT column_name FROM information_schema.columns WHERE table_name = 'nation' AND table_schema = 'pg_temp' ORDER BY ordinal_position", &[])
        .await?;
    assert_eq!(columns.len(), 3);
    assert_eq!(
        count(
            &b,
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'pg_temp'"
        )
        .await?,
        0
    );

    // INSERT into it, a temporary view over it, a second CREATE is 42P07, DROP removes it.
    let inserted = a
        .execute("INSERT INTO nation SELECT n_nationkey, n_name, n_regionkey FROM tpch.nation WHERE n_regionkey = 2", &[])
        .await?;
    assert_eq!(inserted, 5);
    a.batch_execute("CREATE TEMP VIEW americas AS SELECT n_name FROM nation WHERE n_regionkey = 1")
        .await?;
    assert_eq!(count(&a, "SELECT count(*) FROM americas").await?, 5);
    let e = a
        .batch_execute("CREATE TEMPORARY TABLE nation AS SELECT 1 AS x")
        .await
        .expect_err("exists");
    assert_eq!(e.code(), Some(&SqlState::DUPLICATE_TABLE), "{e:?}");
    let e = a
        .batch_execute("CREATE TEMPORARY TABLE lake.t AS SELECT 1 AS x")
        .await
        .expect_err("a temporary table in a source's schema");
    assert!(format!("{e:?}").contains("non-temporary schema"), "{e:?}");
    if let Err(e) = a
        .batch_execute("DROP VIEW americas; DROP TABLE nation")
        .await
    {
        panic!("{e:?}");
    }
    assert_eq!(count(&a, "SELECT count(*) FROM nation").await?, 25);
    a.batch_execute("DROP TABLE IF EXISTS nation__dbt_tmp CASCADE")
        .await?;

    // One that outlives its statement, then its connection: gone, nothing was written.
    a.batch_execute(
        "CREATE TEMP TABLE staged AS SELECT o_orderkey FROM tpch.orders WHERE o_orderkey < 100",
    )
    .await?;
    assert!(count(&a, "SELECT count(*) FROM staged").await? > 0);
    drop(a);
    let c = connect(&url).await?;
    let e = c
        .query_one("SELECT count(*) FROM staged", &[])
        .await
        .expect_err("gone with its session");
    assert_eq!(code(&e), "42P01", "{e:?}");
    c.batch_execute("CREATE TEMP TABLE staged AS SELECT 1 AS x")
        .await?;
    assert!(files(&lake).is_empty(), "files written: {:?}", files(&lake));

    // The HTTP API and Flight SQL keep no session: refused with 0A000.
    let mut flight = client(&server.addr).await?;
    let e = query_error(&mut flight, "CREATE TEMPORARY TABLE t AS SELECT 1 AS x").await;
    assert!(e.contains("session"), "{e:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn seeds_truncates_and_schemas_as_dbt_sends_them() -> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let lake = dir.path().join("lake");
    std::fs::create_dir_all(&lake)?;
    let server = start_coordinator(&config(&lake))?;
    let url = format!("postgres://quiver@{}/quiver", server.postgres_addr());
    let c = connect(&url).await?;

    // CREATE TABLE with columns: an empty table of those types, then filled and emptied.
    c.batch_execute(r#"create table "quiver"."lake"."notes" ("id" integer, "note" text, "price" numeric(10,2), "day" date)"#)
        .await?;
    assert_eq!(count(&c, "SELECT count(*) FROM lake.notes").await?, 0);
    let types = c
        .query("SELECT data_type FROM information_schema.columns WHERE table_schema = 'lake' AND table_name = 'notes' ORDER BY ordinal_position", &[])
        .await?;
    let types: Vec<String> = types.iter().map(|r| r.get(0)).collect();
    assert_eq!(types, ["Int32", "Utf8View", "Decimal128(10, 2)", "Date32"]);
    c.batch_execute("insert into lake.notes (id, note, price, day) values (1, 'a', 1.50, '2024-01-02'), (2, 'b', NULL, NULL)")
        .await?;
    assert_eq!(count(&c, "SELECT count(*) FROM lake.notes").await?, 2);
    c.batch_execute("truncate table lake.notes").await?;
    assert_eq!(count(&c, "SELECT count(*) FROM lake.notes").await?, 0);
    c.batch_execute("insert into lake.notes (id, note) values (3, 'c')")
        .await?;
    assert_eq!(count(&c, "SELECT sum(id) FROM lake.notes").await?, 3);
    let e = c
        .batch_execute("create table lake.notes (id integer)")
        .await
        .expect_err("exists");
    assert_eq!(e.code(), Some(&SqlState::DUPLICATE_TABLE), "{e:?}");
    let e = c
        .batch_execute("truncate table tpch.nation")
        .await
        .expect_err("read-only");
    assert!(format!("{e:?}").contains("read-only"), "{e:?}");

    // CREATE SCHEMA: a source's schema exists; a new one holds views and is listed.
    c.batch_execute("create schema if not exists lake").await?;
    let e = c
        .batch_execute("create schema lake")
        .await
        .expect_err("exists");
    assert_eq!(code(&e), "42P06", "{e:?}");
    c.batch_execute("create schema if not exists marts").await?;
    c.batch_execute("create schema if not exists marts").await?;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'marts'"
        )
        .await?,
        1
    );
    c.batch_execute("create view marts.regions AS SELECT r_name FROM tpch.region")
        .await?;
    assert_eq!(count(&c, "SELECT count(*) FROM marts.regions").await?, 5);
    let e = c
        .batch_execute("drop schema marts")
        .await
        .expect_err("holds a view");
    assert_eq!(code(&e), "2BP01", "{e:?}");
    let e = c
        .batch_execute("drop schema lake")
        .await
        .expect_err("a source's schema");
    assert!(format!("{e:?}").contains("[[source]]"), "{e:?}");

    // Tables and views apart, as in PostgreSQL.
    let tables = c
        .query("SELECT tablename FROM pg_catalog.pg_tables WHERE schemaname IN ('lake', 'marts') ORDER BY 1", &[])
        .await?;
    let tables: Vec<String> = tables.iter().map(|r| r.get(0)).collect();
    assert_eq!(tables, ["notes"]);
    let views = c
        .query("SELECT schemaname, viewname, definition FROM pg_catalog.pg_views WHERE schemaname IN ('lake', 'marts')", &[])
        .await?;
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].get::<_, String>(1), "regions");
    assert!(views[0]
        .get::<_, Option<String>>(2)
        .is_some_and(|d| d.contains("region")));
    let listed = c
        .query("SELECT table_name FROM information_schema.views WHERE table_schema IN ('lake', 'marts', 'tpch')", &[])
        .await?;
    let listed: Vec<String> = listed.iter().map(|r| r.get(0)).collect();
    assert_eq!(listed, ["regions"]);
    // dbt's catalog query (`dbt docs generate`) over them.
    let catalog = c
        .query(
            "select sch.nspname, tbl.relname, tbl.relkind, col.attname, pg_catalog.format_type(col.atttypid, col.atttypmod) \
             from pg_catalog.pg_namespace sch join pg_catalog.pg_class tbl on tbl.relnamespace = sch.oid \
             join pg_catalog.pg_attribute col on col.attrelid = tbl.oid \
             left outer join pg_catalog.pg_description tbl_desc on (tbl_desc.objoid = tbl.oid and tbl_desc.objsubid = 0) \
             where upper(sch.nspname) = upper('marts') and not pg_is_other_temp_schema(sch.oid) \
             and tbl.relpersistence in ('p', 'u') and tbl.relkind in ('r', 'v', 'f', 'p', 'm') \
             and col.attnum > 0 and not col.attisdropped order by sch.nspname, tbl.relname, col.attnum",
            &[],
        )
        .await?;
    assert_eq!(catalog.len(), 1, "{catalog:?}");
    assert_eq!(catalog[0].get::<_, String>(2), "v");

    // psql: \dn lists the new schema, \d+ describes a table.
    let psql = |cmd: &str| {
        let out = Command::new("psql")
            .args([url.as_str(), "-X", "-v", "ON_ERROR_STOP=1", "-c", cmd])
            .output()
            .expect("run psql");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    let (ok, out) = psql("\\dn");
    assert!(ok && out.contains("marts") && out.contains("lake"), "{out}");
    let (ok, out) = psql("\\d+ lake.notes");
    assert!(
        ok && out.contains("note") && out.contains("numeric"),
        "{out}"
    );
    let (ok, out) = psql("\\d+ marts.regions");
    assert!(
        ok && out.contains("View definition") && out.contains("region"),
        "{out}"
    );

    c.batch_execute("drop schema marts cascade").await?;
    assert_eq!(
        count(
            &c,
            "SELECT count(*) FROM information_schema.schemata WHERE schema_name = 'marts'"
        )
        .await?,
        0
    );
    c.batch_execute("drop schema if exists marts").await?;
    Ok(())
}
