//! The Flight SQL endpoint with the Rust client: metadata, prepared statements,
//! errors that name the problem, and authentication.

use std::sync::Arc;

use arrow::array::{Array, Int64Array};
use arrow::record_batch::RecordBatch;
use arrow_flight::sql::{CommandGetDbSchemas, CommandGetPrimaryKeys, CommandGetTables, SqlInfo};
use quiver_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_calls_describe_the_virtual_schema() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let mut c = client(&server.addr).await?;

    let info = c.get_catalogs().await?;
    assert!(strings(&fetch(&mut c, info).await?, "catalog_name").contains(&"quiver".to_string()));

    let info = c
        .get_db_schemas(CommandGetDbSchemas {
            catalog: Some("quiver".into()),
            db_schema_filter_pattern: None,
        })
        .await?;
    assert!(strings(&fetch(&mut c, info).await?, "db_schema_name").contains(&"tpch".to_string()));

    let info = c
        .get_tables(CommandGetTables {
            catalog: Some("quiver".into()),
            db_schema_filter_pattern: Some("tpch".into()),
            table_name_filter_pattern: Some("n%".into()),
            table_types: vec![],
            include_schema: true,
        })
        .await?;
    let tables = fetch(&mut c, info).await?;
    assert_eq!(strings(&tables, "table_name"), vec!["nation".to_string()]);
    // The table's Arrow schema travels as IPC bytes: decode and look for a column.
    let schema_col = tables[0]
        .column_by_name("table_schema")
        .expect("table_schema column");
    let bytes = schema_col
        .as_any()
        .downcast_ref::<arrow::array::BinaryArray>()
        .expect("binary")
        .value(0);
    let schema = arrow::ipc::convert::try_schema_from_ipc_buffer(bytes)?;
    assert!(schema.field_with_name("n_name").is_ok(), "{schema:?}");

    let info = c.get_table_types().await?;
    assert!(strings(&fetch(&mut c, info).await?, "table_type").contains(&"TABLE".to_string()));

    let info = c.get_sql_info(vec![SqlInfo::FlightSqlServerName]).await?;
    assert_eq!(row_count(&fetch(&mut c, info).await?), 1);

    let info = c
        .get_xdbc_type_info(arrow_flight::sql::CommandGetXdbcTypeInfo { data_type: None })
        .await?;
    assert!(row_count(&fetch(&mut c, info).await?) >= 5);

    let info = c
        .get_primary_keys(CommandGetPrimaryKeys {
            catalog: None,
            db_schema: None,
            table: "nation".into(),
        })
        .await?;
    assert_eq!(row_count(&fetch(&mut c, info).await?), 0);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prepared_statement_with_a_parameter() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let mut c = client(&server.addr).await?;
    let mut stmt = c
        .prepare(
            "SELECT n_name FROM quiver.tpch.nation WHERE n_nationkey = $1".into(),
            None,
        )
        .await?;
    assert_eq!(stmt.parameter_schema()?.fields().len(), 1);
    for (key, name) in [(7i64, "GERMANY"), (24, "UNITED STATES")] {
        let params =
            RecordBatch::try_from_iter(vec![("$1", Arc::new(Int64Array::from(vec![key])) as _)])?;
        stmt.set_parameters(params)?;
        let info = stmt.execute().await?;
        let rows = fetch(&mut c, info).await?;
        assert_eq!(strings(&rows, "n_name"), vec![name.to_string()]);
    }
    stmt.close().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_sql_gets_a_clear_error_and_the_connection_keeps_working() -> anyhow::Result<()> {
    let server = start_coordinator(&tpch_source())?;
    let mut c = client(&server.addr).await?;
    let check = "SELECT count(*) FROM quiver.tpch.region";

    let err = query_error(&mut c, "SELEC * FROM nation").await;
    assert!(
        err.contains("SELEC") && err.contains("Line: 1, Column: 1"),
        "syntax error should show the position: {err}"
    );
    assert_eq!(row_count(&query(&mut c, check).await?), 1);

    let err = query_error(&mut c, "SELECT * FROM quiver.tpch.no_such_table").await;
    assert!(
        err.contains("no_such_table") && err.contains("not found"),
        "{err}"
    );
    assert_eq!(row_count(&query(&mut c, check).await?), 1);

    let err = query_error(&mut c, "SELECT n_nope FROM quiver.tpch.nation").await;
    assert!(err.contains("n_nope"), "{err}");
    assert_eq!(row_count(&query(&mut c, check).await?), 1);

    // A table with columns goes only to a writable source, which tpch is not.
    let err = query_error(&mut c, "CREATE TABLE t (a INT)").await;
    assert!(
        err.contains("read-only") && err.contains("writable = true"),
        "{err}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_folder_and_corrupt_file_are_named() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let corrupt = data.path().join("corrupt");
    std::fs::create_dir(&corrupt)?;
    std::fs::write(
        corrupt.join("part-0.parquet"),
        b"this is not a parquet file at all",
    )?;
    let missing = data.path().join("gone");
    let config = format!(
        "{}\n[[source]]\nname = \"broken\"\nkind = \"files\"\n[[source.table]]\nname = \"ghost\"\nlocation = {:?}\n[[source.table]]\nname = \"corrupt\"\nlocation = {:?}\n",
        tpch_source(),
        format!("{}/", missing.display()),
        format!("{}/", corrupt.display()),
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;

    let err = query_error(&mut c, "SELECT * FROM quiver.broken.ghost").await;
    assert!(
        err.contains("does not exist") && err.contains(&missing.display().to_string()),
        "{err}"
    );
    let err = query_error(&mut c, "SELECT * FROM quiver.broken.corrupt").await;
    assert!(
        err.contains("quiver.broken.corrupt") && err.to_lowercase().contains("parquet"),
        "{err}"
    );

    let rows = query(&mut c, "SELECT count(*) FROM quiver.tpch.nation").await?;
    assert_eq!(row_count(&rows), 1);
    // The healthy schema is still listed by the metadata calls.
    let info = c.get_catalogs().await?;
    assert!(!fetch(&mut c, info).await?.is_empty());
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn password_login_issues_a_token() -> anyhow::Result<()> {
    let config = format!(
        "[server.auth]\nusers = {{ analyst = \"${{QUIVER_TEST_PW}}\" }}\n{}",
        tpch_source()
    );
    let server = start_coordinator_with_env(&config, &[("QUIVER_TEST_PW", "correct horse")])?;
    let mut c = client(&server.addr).await?;

    let err = query_error(&mut c, "SELECT 1").await;
    assert!(err.contains("authentication required"), "{err}");

    let err = c
        .handshake("analyst", "wrong")
        .await
        .expect_err("wrong password must fail");
    assert!(
        err.to_string().contains("invalid username or password"),
        "{err}"
    );

    c.handshake("analyst", "correct horse").await?;
    let rows = query(&mut c, "SELECT count(*) AS n FROM quiver.tpch.region").await?;
    let n = rows[0]
        .column(0)
        .as_any()
        .downcast_ref::<Int64Array>()
        .map(|a| a.value(0));
    assert_eq!(n, Some(5));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_endpoint_serves_queries() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let config = format!("{}{}", tls_section(certs.path()), tpch_source());
    let server = start_coordinator(&config)?;
    let ca = std::fs::read(certs.path().join("ca.crt"))?;
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(tonic::transport::Certificate::from_pem(ca));
    let channel = tonic::transport::Endpoint::from_shared(format!("https://{}", server.addr))?
        .tls_config(tls)?
        .connect()
        .await?;
    let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    assert_eq!(
        row_count(&query(&mut c, "SELECT * FROM quiver.tpch.region").await?),
        5
    );

    // A plaintext client is turned away rather than served in the clear.
    if let Ok(mut plain) = client(&server.addr).await {
        assert!(query(&mut plain, "SELECT 1").await.is_err());
    }
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fragment_memory_limit_is_enforced_with_a_clear_error() -> anyhow::Result<()> {
    // 64 KiB cannot hold a per-partition sort of lineitem, even spilling.
    let config = format!(
        "[workers]\nfragment_memory_limit = \"64KiB\"\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    let err = query_error(
        &mut c,
        "SELECT l_comment FROM quiver.tpch.lineitem ORDER BY l_comment",
    )
    .await;
    assert!(err.contains("Resources exhausted"), "{err}");
    // The worker survived and serves the next query.
    assert_eq!(
        row_count(&query(&mut c, "SELECT sum(l_quantity) FROM quiver.tpch.lineitem").await?),
        1
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn system_tables_show_queries_and_workers() -> anyhow::Result<()> {
    // A free port for the metrics endpoint (bound and released: the server takes it next).
    let metrics_port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let config = format!(
        "[server]\nmetrics_listen = \"127.0.0.1:{metrics_port}\"\n{}",
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let mut c = client(&server.addr).await?;
    assert_eq!(
        row_count(&query(&mut c, "SELECT * FROM quiver.tpch.nation").await?),
        25
    );
    let err = query_error(&mut c, "SELECT no_such_column FROM quiver.tpch.nation").await;
    assert!(err.contains("no_such_column"), "{err}");
    let text = |b: &[RecordBatch]| {
        arrow::util::pretty::pretty_format_batches(b)
            .map(|t| t.to_string())
            .unwrap_or_default()
    };
    let queries = text(
        &query(
            &mut c,
            "SELECT state, rows, sql, error FROM system.queries ORDER BY started_at",
        )
        .await?,
    );
    let lines: Vec<&str> = queries.lines().filter(|l| l.contains("nation")).collect();
    assert!(
        lines[0].contains("| finished") && lines[0].contains("| 25 "),
        "{queries}"
    );
    assert!(
        lines[1].contains("| failed") && lines[1].contains("no_such_column"),
        "{queries}"
    );
    assert!(
        queries.contains("| running") && queries.contains("system.queries"),
        "the asking query runs: {queries}"
    );
    // The finished query reports the bytes it sent.
    let bytes = query(
        &mut c,
        "SELECT bytes FROM system.queries WHERE sql = 'SELECT * FROM quiver.tpch.nation'",
    )
    .await?;
    let sent = bytes
        .iter()
        .find(|b| b.num_rows() > 0)
        .map(|b| arrow::util::display::array_value_to_string(b.column(0), 0).unwrap_or_default());
    assert!(
        sent.and_then(|s| s.parse::<u64>().ok())
            .is_some_and(|n| n > 1000),
        "{}",
        text(&bytes)
    );
    let workers = text(
        &query(
            &mut c,
            "SELECT id, state, mode FROM system.workers ORDER BY id",
        )
        .await?,
    );
    assert!(
        workers.contains("embedded-1 | ready") && workers.contains("embedded-2 | ready"),
        "{workers}"
    );

    // Prometheus text at /metrics counts the queries and fragments above (`metrics_listen`
    // is the older name of `http_listen`, still accepted).
    use std::io::{Read, Write};
    let mut http = std::net::TcpStream::connect(("127.0.0.1", metrics_port))?;
    http.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")?;
    let mut page = String::new();
    http.read_to_string(&mut page)?;
    assert!(page.starts_with("HTTP/1.1 200 OK"), "{page}");
    let value = |name: &str| -> u64 {
        page.lines()
            .find_map(|l| l.strip_prefix(name).and_then(|v| v.trim().parse().ok()))
            .unwrap_or(0)
    };
    assert!(value("quiver_queries_total ") >= 4, "{page}");
    assert!(value("quiver_fragments_total ") >= 1, "{page}");
    assert!(value("quiver_worker_rows_total ") >= 25, "{page}");
    assert!(page.contains("quiver_workers{state=\"ready\"} 2"), "{page}");
    Ok(())
}
