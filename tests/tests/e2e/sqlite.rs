//! SQLite files as sources, written and read back by Python's `sqlite3` module.

use quiver_tests::*;

/// A database from tests/python/sqlite_db.py, and a coordinator with it as `lite`
/// (read-only), a copy as `litew` (writable) and the TPC-H Parquet files.
fn setup() -> anyhow::Result<(tempfile::TempDir, Process)> {
    let dir = tempfile::tempdir()?;
    let db = dir.path().join("shop.db");
    let db = db.to_str().unwrap_or_default();
    python_script("sqlite_db.py", &["create", db]);
    let copy = dir.path().join("out.db");
    std::fs::copy(db, &copy)?;
    let config = format!(
        "{}[[source]]\nname = \"lite\"\nkind = \"sqlite\"\nlocation = {db:?}\nstatement_timeout_secs = 2\n\
         [[source]]\nname = \"litew\"\nkind = \"sqlite\"\nlocation = {:?}\nwritable = true\n",
        tpch_source(),
        copy.display().to_string()
    );
    let server = start_coordinator(&config)?;
    Ok((dir, server))
}

fn dump(dir: &tempfile::TempDir, file: &str, sql: &str) -> Vec<String> {
    let path = dir.path().join(file);
    python_script(
        "sqlite_db.py",
        &["dump", path.to_str().unwrap_or_default(), sql],
    )
    .lines()
    .map(str::to_string)
    .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_types_views_pushdown_and_joins_with_parquet() -> anyhow::Result<()> {
    let (_dir, server) = setup()?;
    let mut c = client(&server.addr).await?;

    let rows = query(&mut c, "SELECT * FROM lite.items ORDER BY id").await?;
    let types: Vec<String> = rows[0]
        .schema()
        .fields()
        .iter()
        .map(|f| format!("{}:{}", f.name(), f.data_type()))
        .collect();
    assert_eq!(
        types,
        [
            "id:Int64",
            "name:Utf8",
            "price:Float64",
            "qty:Int64",
            "ok:Boolean",
            "added:Date32",
            "at:Timestamp(µs)",
            "data:Binary",
            "anything:Utf8",
            "score:Float64"
        ]
    );
    let out = arrow::util::pretty::pretty_format_batches(&rows)?.to_string();
    for value in [
        "héllo",
        "it's; -- fine",
        "| 9.5 ",
        "120.25",
        "| 7 ",
        "true",
        "2024-02-29",
        "2001-02-03T04:05:06.789",
        "2020-01-01T00:00:00",
        "deadbeef",
        "| 42 ",
        "| text ",
        "-2.5",
    ] {
        assert!(out.contains(value), "missing {value:?} in\n{out}");
    }
    let nulls: usize = rows
        .iter()
        .map(|b| {
            b.columns()
                .iter()
                .skip(1)
                .map(|c| c.null_count())
                .sum::<usize>()
        })
        .sum();
    assert_eq!(nulls, 9 + 1, "row 3 is all NULL, row 2 has no blob:\n{out}");

    // Filters, the aggregate and the date literal reach SQLite as one statement.
    let plan = query(
        &mut c,
        "EXPLAIN SELECT count(*) AS n, max(price) AS p FROM lite.items WHERE added >= DATE '2000-01-01' AND name <> 'x'",
    )
    .await?;
    let plan = arrow::util::pretty::pretty_format_batches(&plan)?.to_string();
    assert!(
        plan.contains("SourceScanExec: source=lite sql=SELECT count(1)")
            || plan.contains("SourceScanExec: source=lite sql=SELECT count(*)"),
        "{plan}"
    );
    assert!(
        plan.contains("`added` >="),
        "the filter was not pushed down:\n{plan}"
    );
    let n = query(
        &mut c,
        "SELECT count(*) AS n FROM lite.items WHERE added >= DATE '2000-01-01' AND name <> 'x'",
    )
    .await?;
    assert_eq!(strings(&n, "n"), ["1"], "{plan}");

    // A view, with a computed column (no declared type: text).
    let cheap = query(&mut c, "SELECT id, twice FROM lite.cheap").await?;
    assert_eq!(strings(&cheap, "id"), ["1"]);
    assert_eq!(strings(&cheap, "twice"), ["6"]);
    let listed = query(
        &mut c,
        "SELECT table_name, table_type FROM information_schema.tables WHERE table_schema = 'lite' ORDER BY 1",
    )
    .await?;
    assert_eq!(
        strings(&listed, "table_name"),
        ["cheap", "dirty", "endless", "items", "nation_codes"]
    );

    // Joined with Parquet: the codes of even nation keys in AMERICA.
    let joined = query(
        &mut c,
        "SELECT n.n_name, c.code FROM tpch.nation n JOIN lite.nation_codes c ON n.n_nationkey = c.n_nationkey
         WHERE n.n_regionkey = 1 ORDER BY n.n_name",
    )
    .await?;
    assert_eq!(strings(&joined, "n_name"), ["BRAZIL", "UNITED STATES"]);
    assert_eq!(strings(&joined, "code"), ["N02", "N24"]);

    // A stored value that does not fit its column names the column; the server goes on.
    let err = query_error(&mut c, "SELECT qty FROM lite.dirty").await;
    assert!(
        err.contains("lite") && err.contains("qty") && err.contains("'abc'"),
        "{err}"
    );
    assert_eq!(
        strings(
            &query(&mut c, "SELECT id FROM lite.dirty WHERE id = 1").await?,
            "id"
        ),
        ["1"]
    );

    // A statement that never ends is interrupted by the source's timeout, named.
    let started = std::time::Instant::now();
    let err = query_error(&mut c, "SELECT m FROM lite.endless").await;
    assert!(
        err.contains("lite") && err.contains("statement_timeout_secs"),
        "{err}"
    );
    assert!(
        started.elapsed() < std::time::Duration::from_secs(30),
        "{:?}",
        started.elapsed()
    );
    let one = query(&mut c, "SELECT id FROM lite.items WHERE id = 1").await?;
    assert_eq!(strings(&one, "id"), ["1"]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sqlite_writes_only_where_writable_and_python_reads_them() -> anyhow::Result<()> {
    let (dir, server) = setup()?;
    let mut c = client(&server.addr).await?;

    let err = query_error(&mut c, "INSERT INTO lite.nation_codes VALUES (1, 'X')").await;
    assert!(err.contains("lite"), "{err}");
    let err = query_error(&mut c, "CREATE TABLE lite.copy AS SELECT 1 AS x").await;
    assert!(err.contains("lite"), "{err}");
    assert_eq!(
        dump(&dir, "shop.db", "SELECT count(*) FROM nation_codes"),
        ["[13]"]
    );

    query(
        &mut c,
        "CREATE TABLE litew.regions AS SELECT r_regionkey, r_name, DATE '2024-01-02' AS d, 1.5 AS f FROM tpch.region",
    )
    .await?;
    query(
        &mut c,
        "INSERT INTO litew.nation_codes SELECT n_nationkey, substr(n_name, 1, 3) FROM tpch.nation WHERE n_nationkey % 2 = 1",
    )
    .await?;
    assert_eq!(
        dump(
            &dir,
            "out.db",
            "SELECT r_regionkey, r_name, d, f FROM regions ORDER BY 1 LIMIT 2"
        ),
        [
            r#"[0, "AFRICA", "2024-01-02", 1.5]"#,
            r#"[1, "AMERICA", "2024-01-02", 1.5]"#
        ]
    );
    assert_eq!(
        dump(&dir, "out.db", "SELECT count(*) FROM nation_codes"),
        ["[25]"]
    );
    assert_eq!(
        dump(
            &dir,
            "out.db",
            "SELECT code FROM nation_codes WHERE n_nationkey = 3"
        ),
        [r#"["CAN"]"#]
    );
    // Quiver reads back what it wrote, with the declared types.
    let back = query(
        &mut c,
        "SELECT r_name, d FROM litew.regions WHERE r_regionkey = 4",
    )
    .await?;
    assert_eq!(strings(&back, "r_name"), ["MIDDLE EAST"]);
    assert_eq!(strings(&back, "d"), ["2024-01-02"]);

    // A failed INSERT (a key already there) leaves the table as it was.
    let err = query_error(
        &mut c,
        "INSERT INTO litew.nation_codes VALUES (100, 'NEW'), (0, 'DUP')",
    )
    .await;
    assert!(
        err.contains("litew") && err.to_lowercase().contains("unique"),
        "{err}"
    );
    assert_eq!(
        dump(&dir, "out.db", "SELECT count(*) FROM nation_codes"),
        ["[25]"]
    );
    Ok(())
}
