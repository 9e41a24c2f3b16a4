//! Another Quiver mounted as a `flightsql` source: discovery, pushdown (seen in
//! the remote's own `system.queries`), joins with local Parquet, Basic auth over
//! TLS, and a remote that is down failing only the queries that read it.

use quiver_tests::compare::assert_same_rows;
use quiver_tests::*;

/// The remote: `orders` and `customer` of TPC-H as its schema `sales`, behind
/// TLS and a password.
fn start_remote(certs: &std::path::Path) -> anyhow::Result<Process> {
    let dir = tpch_dir();
    let mut config = format!(
        "[server]\ndefault_schema = \"sales\"\n{}[server.auth]\nusers = {{ reader = \"remote-secret\" }}\n",
        tls_section(certs)
    );
    config.push_str("[[source]]\nname = \"sales\"\nkind = \"files\"\nformat = \"parquet\"\n");
    for t in ["orders", "customer"] {
        config.push_str(&format!(
            "[[source.table]]\nname = \"{t}\"\nlocation = \"{}/{t}/\"\n",
            dir.display()
        ));
    }
    start_coordinator(&config)
}

/// The local side: `lineitem` and `nation` in Parquet, the remote as `remote`,
/// logged in with a password (`extra` adds source keys).
fn start_local(remote_port: u16, certs: &std::path::Path, extra: &str) -> anyhow::Result<Process> {
    let login = "username = \"reader\"\npassword = \"${QUIVER_TEST_REMOTE_PASSWORD}\"\n";
    start_local_with(
        remote_port,
        certs,
        &format!("{login}{extra}"),
        "remote-secret",
    )
}

/// The local side with the given login keys; `secret` is `$QUIVER_TEST_REMOTE_PASSWORD`.
fn start_local_with(
    remote_port: u16,
    certs: &std::path::Path,
    keys: &str,
    secret: &str,
) -> anyhow::Result<Process> {
    let dir = tpch_dir();
    let mut config = String::from("[server]\ndefault_schema = \"tpch\"\n");
    config.push_str("[[source]]\nname = \"tpch\"\nkind = \"files\"\nformat = \"parquet\"\n");
    for t in ["lineitem", "nation"] {
        config.push_str(&format!(
            "[[source.table]]\nname = \"{t}\"\nlocation = \"{}/{t}/\"\n",
            dir.display()
        ));
    }
    config.push_str(&format!(
        "[[source]]\nname = \"remote\"\nkind = \"flightsql\"\nurl = \"grpc+tls://localhost:{remote_port}\"\n\
         remote_schema = \"sales\"\ntls_ca_file = {:?}\n{keys}",
        certs.join("ca.crt").display().to_string()
    ));
    start_coordinator_with_env(&config, &[("QUIVER_TEST_REMOTE_PASSWORD", secret)])
}

fn port(addr: &str) -> u16 {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// A client of the TLS remote, logged in.
async fn remote_client(
    addr: &str,
    certs: &std::path::Path,
) -> anyhow::Result<arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>> {
    let ca = tonic::transport::Certificate::from_pem(std::fs::read(certs.join("ca.crt"))?);
    let tls = tonic::transport::ClientTlsConfig::new()
        .ca_certificate(ca)
        .domain_name("localhost");
    let channel =
        tonic::transport::Endpoint::from_shared(format!("https://localhost:{}", port(addr)))?
            .tls_config(tls)?
            .connect()
            .await?;
    let mut c = arrow_flight::sql::client::FlightSqlServiceClient::new(channel);
    c.handshake("reader", "remote-secret").await?;
    Ok(c)
}

/// The statements the remote ran that contain `marker`.
async fn remote_statements(
    remote: &mut arrow_flight::sql::client::FlightSqlServiceClient<tonic::transport::Channel>,
    marker: &str,
) -> anyhow::Result<Vec<String>> {
    let rows = query(
        remote,
        &format!("SELECT sql FROM quiver.system.queries WHERE sql LIKE '%{marker}%' AND sql NOT LIKE '%system.queries%'"),
    )
    .await?;
    Ok(strings(&rows, "sql"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_quiver_is_a_source_with_pushdown_and_joins() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let remote = start_remote(certs.path())?;
    let local = start_local(port(&remote.addr), certs.path(), "")?;
    let mut c = client(&local.addr).await?;
    let mut r = remote_client(&remote.addr, certs.path()).await?;

    // Discovery: the remote's tables and columns, on the local information_schema.
    let tables = query(
        &mut c,
        "SELECT table_name FROM information_schema.tables WHERE table_schema = 'remote' ORDER BY 1",
    )
    .await?;
    assert_eq!(strings(&tables, "table_name"), ["customer", "orders"]);

    // Filter, projection, aggregate and the join of two remote tables run remotely as one statement.
    let sql = "SELECT c.c_mktsegment, count(*) AS n, sum(o.o_totalprice) AS total
               FROM remote.orders o JOIN remote.customer c ON c.c_custkey = o.o_custkey
               WHERE o.o_orderpriority = '1-URGENT' AND o.o_comment <> 'quiver-pushdown-marker'
               GROUP BY c.c_mktsegment ORDER BY 1";
    let actual = query(&mut c, sql).await?;
    let reference = reference_context().await?;
    let expected = reference
        .sql(&sql.replace("remote.", ""))
        .await?
        .collect()
        .await?;
    assert_same_rows(&actual, &expected, true, "aggregate over a remote join");
    let ran = remote_statements(&mut r, "quiver-pushdown-marker").await?;
    assert_eq!(ran.len(), 1, "{ran:?}");
    let statement = ran[0].to_lowercase();
    for part in ["join", "group by", "1-urgent", "count(", "sum("] {
        assert!(
            statement.contains(part),
            "{part} not pushed down: {statement}"
        );
    }

    // A remote table joined with local Parquet.
    let sql = "SELECT o.o_orderkey, o.o_orderdate, l.l_quantity FROM lineitem l JOIN remote.orders o
               ON o.o_orderkey = l.l_orderkey WHERE l.l_partkey = 7 AND o.o_comment <> 'quiver-join-marker'
               ORDER BY 1, 3";
    let actual = query(&mut c, sql).await?;
    let expected = reference
        .sql(&sql.replace("remote.", ""))
        .await?
        .collect()
        .await?;
    assert!(row_count(&expected) > 0);
    assert_same_rows(
        &actual,
        &expected,
        true,
        "remote orders joined with local lineitem",
    );
    let ran = remote_statements(&mut r, "quiver-join-marker").await?;
    assert_eq!(ran.len(), 1, "{ran:?}");
    // The build side's keys reached the remote statement.
    assert!(ran[0].contains(" IN ("), "join keys not sent: {}", ran[0]);

    // A limit reaches the remote too.
    let limited = query(
        &mut c,
        "SELECT o_orderkey FROM remote.orders WHERE o_comment <> 'quiver-limit-marker' LIMIT 3",
    )
    .await?;
    assert_eq!(row_count(&limited), 3);
    let ran = remote_statements(&mut r, "quiver-limit-marker").await?;
    assert!(ran.iter().any(|s| s.contains("LIMIT 3")), "{ran:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_remote_that_is_down_or_refuses_the_login_fails_only_its_queries() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let mut remote = start_remote(certs.path())?;
    let remote_port = port(&remote.addr);
    let local = start_local(remote_port, certs.path(), "connect_timeout_secs = 2\n")?;
    let mut c = client(&local.addr).await?;
    assert_eq!(
        row_count(&query(&mut c, "SELECT o_orderkey FROM remote.orders LIMIT 2").await?),
        2
    );
    remote.kill();
    let err = query_error(&mut c, "SELECT o_orderkey FROM remote.orders LIMIT 2").await;
    assert!(err.contains("remote") && err.contains("flightsql"), "{err}");
    // Local tables keep working.
    let n = query(&mut c, "SELECT count(*) AS n FROM nation").await?;
    assert_eq!(strings(&n, "n"), ["25"]);

    // A wrong password is a clear error at discovery, not a hang.
    let remote = start_remote(certs.path())?;
    let dir = tpch_dir();
    let config = format!(
        "[[source]]\nname = \"tpch\"\nkind = \"files\"\nformat = \"parquet\"\n[[source.table]]\nname = \"nation\"\nlocation = \"{}/nation/\"\n\
         [[source]]\nname = \"wrong\"\nkind = \"flightsql\"\nurl = \"grpc+tls://localhost:{}\"\nusername = \"reader\"\npassword = \"nope\"\n\
         remote_schema = \"sales\"\ntls_ca_file = {:?}\n",
        dir.display(),
        port(&remote.addr),
        certs.path().join("ca.crt").display().to_string()
    );
    let wrong = start_coordinator(&config)?;
    let mut w = client(&wrong.addr).await?;
    let err = query_error(&mut w, "SELECT * FROM wrong.orders").await;
    assert!(err.contains("wrong") && err.contains("flightsql"), "{err}");
    assert_eq!(
        strings(
            &query(&mut w, "SELECT count(*) AS n FROM nation").await?,
            "n"
        ),
        ["25"]
    );

    // A bearer token (here one the remote issued at a handshake) instead of a password.
    let token = {
        let r = remote_client(&remote.addr, certs.path()).await?;
        r.token().cloned().unwrap_or_default()
    };
    assert!(!token.is_empty());
    let bearer = start_local_with(
        port(&remote.addr),
        certs.path(),
        "token = \"${QUIVER_TEST_REMOTE_PASSWORD}\"\n",
        &token,
    )?;
    let mut b = client(&bearer.addr).await?;
    let rows = query(&mut b, "SELECT o_orderkey FROM remote.orders LIMIT 4").await?;
    assert_eq!(row_count(&rows), 4);
    Ok(())
}

/// A remote whose answers come from its workers (`client_endpoints = true`): the
/// statement's FlightInfo lists one endpoint per partition at a worker, and the
/// source reads every one of them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn endpoints_at_the_remotes_workers_are_all_read() -> anyhow::Result<()> {
    let dir = tpch_dir();
    let remote = start_coordinator(&format!(
        "[server]\ndefault_schema = \"sales\"\n[workers]\ncount = 2\nsingle_stage_max_bytes = 0\nclient_endpoints = true\n\
         [[source]]\nname = \"sales\"\nkind = \"files\"\nformat = \"parquet\"\n[[source.table]]\nname = \"orders\"\nlocation = \"{}/orders/\"\n",
        dir.display()
    ))?;
    let local = start_coordinator(&format!(
        "[[source]]\nname = \"remote\"\nkind = \"flightsql\"\nurl = \"grpc://{}\"\nremote_schema = \"sales\"\n",
        remote.addr
    ))?;
    let mut c = client(&local.addr).await?;
    let sql = "SELECT o_orderkey, o_comment FROM remote.orders WHERE o_comment <> 'quiver-endpoints-marker'";
    let rows = query(&mut c, sql).await?;
    let reference = reference_context().await?;
    let expected = reference
        .sql("SELECT count(*) AS n FROM orders")
        .await?
        .collect()
        .await?;
    assert_eq!(row_count(&rows).to_string(), strings(&expected, "n")[0]);
    let keys: std::collections::BTreeSet<String> =
        strings(&rows, "o_orderkey").into_iter().collect();
    assert_eq!(keys.len(), row_count(&rows), "every order once");

    // The statement the remote received answers with several endpoints at its workers.
    let mut r = client(&remote.addr).await?;
    let ran = strings(
        &query(&mut r, "SELECT sql FROM system.queries WHERE sql LIKE '%quiver-endpoints-marker%' AND sql NOT LIKE '%system.queries%'").await?,
        "sql",
    );
    assert_eq!(ran.len(), 1, "{ran:?}");
    let info = r.execute(ran[0].clone(), None).await?;
    assert!(info.endpoint.len() > 1, "{info:?}");
    assert!(
        info.endpoint
            .iter()
            .all(|e| e.location.iter().any(|l| l.uri.starts_with("grpc+tcp://"))),
        "{info:?}"
    );
    Ok(())
}
