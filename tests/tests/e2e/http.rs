//! `POST /v1/sql` through curl (JSON, CSV, Arrow IPC), with and without credentials,
//! and the open `/metrics` and `/health`.

use std::process::Command;

use quiver_tests::*;

/// curl's body and HTTP status.
fn curl(args: &[&str]) -> (Vec<u8>, u16) {
    let out = Command::new("curl")
        .args(["-sS", "--max-time", "120", "-w", "\n%{http_code}"])
        .args(args)
        .output()
        .expect("run curl (scripts/setup-tools.sh installs it)");
    assert!(
        out.status.success(),
        "curl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut body = out.stdout;
    let at = body.iter().rposition(|b| *b == b'\n').expect("status line");
    let code = String::from_utf8_lossy(&body[at + 1..])
        .trim()
        .parse()
        .expect("status code");
    body.truncate(at);
    (body, code)
}

fn config(extra: &str) -> String {
    format!(
        "[server]\nhttp_listen = \"127.0.0.1:0\"\n{extra}\n{}",
        tpch_source()
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_api_answers_json_csv_and_arrow() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let url = format!("http://{}/v1/sql", server.http_addr());
    let sql = "SELECT n_nationkey, n_name FROM nation WHERE n_regionkey = 3 ORDER BY n_nationkey";

    let (body, code) = curl(&["-d", sql, &url]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let rows: serde_json::Value = serde_json::from_slice(&body)?;
    let rows = rows.as_array().expect("an array of rows");
    assert_eq!(rows.len(), 5);
    assert_eq!(rows[0]["n_nationkey"], 6);
    assert_eq!(
        rows[0]["n_name"].as_str().map(str::trim_end),
        Some("FRANCE")
    );

    let (body, code) = curl(&["-H", "Accept: text/csv", "-d", sql, &url]);
    assert_eq!(code, 200);
    let text = String::from_utf8(body)?;
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines[0], "n_nationkey,n_name");
    assert_eq!(lines.len(), 6, "{text}");
    assert!(lines[1].starts_with("6,FRANCE"), "{text}");

    let (body, code) = curl(&["-d", sql, &format!("{url}?format=csv")]);
    assert_eq!(
        (code, String::from_utf8(body)?),
        (200, text.clone()),
        "?format=csv is the same CSV"
    );

    let (body, code) = curl(&[
        "-H",
        "Accept: application/vnd.apache.arrow.stream",
        "-d",
        sql,
        &url,
    ]);
    assert_eq!(code, 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let batches: Vec<_> = reader.collect::<Result<_, _>>()?;
    assert_eq!(row_count(&batches), 5);
    assert_eq!(strings(&batches, "n_nationkey")[4], "23");

    // A large result streams in many batches and arrives whole.
    let (body, code) = curl(&[
        "-H",
        "Accept: application/vnd.apache.arrow.stream",
        "-d",
        "SELECT l_orderkey, l_comment FROM lineitem",
        &url,
    ]);
    assert_eq!(code, 200);
    let reader = arrow::ipc::reader::StreamReader::try_new(std::io::Cursor::new(body), None)?;
    let batches: Vec<_> = reader.collect::<Result<_, _>>()?;
    let mut flight = client(&server.addr).await?;
    let n = query(
        &mut flight,
        "SELECT count(*) AS n FROM quiver.tpch.lineitem",
    )
    .await?;
    assert_eq!(row_count(&batches).to_string(), strings(&n, "n")[0]);
    assert!(
        batches.len() > 10,
        "the result came in {} batches",
        batches.len()
    );

    // Errors are HTTP errors that say what is wrong.
    let (body, code) = curl(&["-d", "SELECT * FROM no_such_table", &url]);
    assert_eq!(code, 400);
    let err: serde_json::Value = serde_json::from_slice(&body)?;
    assert!(
        err["error"]
            .as_str()
            .unwrap_or("")
            .contains("no_such_table"),
        "{err}"
    );
    let (_, code) = curl(&["-d", "", &url]);
    assert_eq!(code, 400);

    // Every call is in system.queries.
    let recorded = query(&mut flight, "SELECT state FROM quiver.system.queries WHERE sql LIKE '%n_regionkey = 3%' AND sql NOT LIKE '%system%'").await?;
    assert_eq!(strings(&recorded, "state"), vec!["finished"; 4]);

    let (body, code) = curl(&[&format!("http://{}/metrics", server.http_addr())]);
    assert_eq!(code, 200);
    assert!(String::from_utf8_lossy(&body).contains("quiver_queries_total"));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sql_api_takes_the_same_credentials() -> anyhow::Result<()> {
    let extra = "[server.auth]\nusers = { ann = \"${QUIVER_TEST_PW}\" }\n";
    let server = start_coordinator_with_env(&config(extra), &[("QUIVER_TEST_PW", "ann-pw")])?;
    let url = format!("http://{}/v1/sql", server.http_addr());

    let (body, code) = curl(&["-d", "SELECT 1", &url]);
    assert_eq!(code, 401, "{}", String::from_utf8_lossy(&body));
    let (_, code) = curl(&["-u", "ann:wrong", "-d", "SELECT 1", &url]);
    assert_eq!(code, 401);
    let (body, code) = curl(&[
        "-u",
        "ann:ann-pw",
        "-d",
        "SELECT count(*) AS n FROM region",
        &url,
    ]);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body)?,
        serde_json::json!([{ "n": 5 }])
    );

    // The console asks a browser for credentials; probes and scrapers need none.
    let (_, code) = curl(&[&format!("http://{}/", server.http_addr())]);
    assert_eq!(code, 401);
    let (_, code) = curl(&[
        "-u",
        "ann:ann-pw",
        &format!("http://{}/", server.http_addr()),
    ]);
    assert_eq!(code, 200);
    let (_, code) = curl(&[&format!("http://{}/health", server.http_addr())]);
    assert_eq!(code, 200);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_cancels_running_and_queued_queries() -> anyhow::Result<()> {
    let server = start_coordinator(&config("max_running_queries = 1"))?;
    let http = server.http_addr();
    let slow = |tag: &str| {
        format!("SELECT count(*) AS {tag} FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey WHERE a.l_comment < b.l_comment")
    };
    let spawn = |sql: String| {
        let addr = server.addr.clone();
        tokio::spawn(async move {
            let mut c = client(&addr).await?;
            query(&mut c, &sql).await.map(|_| ())
        })
    };
    let first = spawn(slow("first"));
    let mut flight = client(&server.addr).await?;
    let id_in = |state: &'static str, tag: &'static str| {
        format!("SELECT id FROM quiver.system.queries WHERE state = '{state}' AND sql LIKE '%AS {tag} FROM%' AND sql NOT LIKE '%system%'")
    };
    let mut running = vec![];
    for _ in 0..100 {
        running = strings(&query(&mut flight, &id_in("running", "first")).await?, "id");
        if !running.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let second = spawn(slow("second"));
    let mut queued = vec![];
    for _ in 0..100 {
        queued = strings(&query(&mut flight, &id_in("queued", "second")).await?, "id");
        if !queued.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(
        running.len() == 1 && queued.len() == 1,
        "running {running:?}, queued {queued:?}"
    );

    // The queued one first: it never runs. Then the running one.
    for id in [&queued[0], &running[0]] {
        let (body, code) = curl(&[
            "-X",
            "POST",
            &format!("http://{http}/api/queries/{id}/cancel"),
        ]);
        assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    }
    for (name, task) in [("queued", second), ("running", first)] {
        let err = tokio::time::timeout(std::time::Duration::from_secs(30), task)
            .await??
            .expect_err("cancelled");
        assert!(format!("{err:#}").contains("cancelled"), "{name}: {err:#}");
    }
    let states = strings(&query(&mut flight, "SELECT state FROM quiver.system.queries WHERE (sql LIKE '%AS first FROM%' OR sql LIKE '%AS second FROM%') AND sql NOT LIKE '%system%'").await?, "state");
    assert_eq!(
        states.iter().filter(|s| *s == "cancelled").count(),
        2,
        "{states:?}"
    );
    // Nothing left to cancel.
    let (_, code) = curl(&[
        "-X",
        "POST",
        &format!("http://{http}/api/queries/{}/cancel", running[0]),
    ]);
    assert_eq!(code, 409);
    Ok(())
}

#[test]
fn https_with_the_server_certificate() -> anyhow::Result<()> {
    let certs = tempfile::tempdir()?;
    make_certs(certs.path())?;
    let extra = tls_section(certs.path());
    let server = start_coordinator(&config(&extra))?;
    assert!(
        server
            .lines
            .iter()
            .any(|l| l.starts_with("quiver: web console at https://")),
        "{:?}",
        server.lines
    );
    let addr = server.http_addr().replace("127.0.0.1", "localhost");
    let ca = certs.path().join("ca.crt").display().to_string();
    let (body, code) = curl(&[
        "--cacert",
        &ca,
        "-d",
        "SELECT count(*) AS n FROM region",
        &format!("https://{addr}/v1/sql"),
    ]);
    assert_eq!(code, 200);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&body)?,
        serde_json::json!([{ "n": 5 }])
    );
    let (_, code) = curl(&["--cacert", &ca, &format!("https://{addr}/")]);
    assert_eq!(code, 200);
    // Plain HTTP gets no answer.
    let plain = Command::new("curl")
        .args([
            "-sS",
            "--max-time",
            "10",
            "-d",
            "SELECT 1",
            &format!("http://{addr}/v1/sql"),
        ])
        .output()?;
    assert!(
        !plain.status.success() || !String::from_utf8_lossy(&plain.stdout).contains("1"),
        "plain HTTP was served"
    );
    Ok(())
}

/// Every failure is JSON with its SQLSTATE; decimals arrive as exact strings; a
/// browser's cross-site form is refused while curl's plain POST works.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn errors_are_json_decimals_exact_and_cross_site_forms_refused() -> anyhow::Result<()> {
    let server = start_coordinator(&config(""))?;
    let base = format!("http://{}", server.http_addr());
    let url = format!("{base}/v1/sql");
    let json = |body: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(body)))
    };

    let (body, code) = curl(&["-d", "SELECT 1/0", &url]);
    assert_eq!(
        (code, json(&body)["sqlstate"].as_str()),
        (400, Some("22012")),
        "{}",
        String::from_utf8_lossy(&body)
    );
    let (body, code) = curl(&["-d", "SELECT * FROM no_such_table", &url]);
    assert_eq!(
        (code, json(&body)["sqlstate"].as_str()),
        (400, Some("42P01"))
    );
    let (body, code) = curl(&[&format!("{base}/no/such/page")]);
    assert_eq!(code, 404);
    assert!(json(&body)["error"]
        .as_str()
        .is_some_and(|e| e.contains("/no/such/page")));
    // Over axum's body limit (2 MiB): still the JSON error.
    let big = tempfile::NamedTempFile::new()?;
    std::fs::write(big.path(), vec![b' '; 3 << 20])?;
    let (body, code) = curl(&["--data-binary", &format!("@{}", big.path().display()), &url]);
    assert_eq!(code, 413);
    assert!(json(&body)["error"].is_string());

    // A decimal beyond 2^53 keeps every digit.
    let (body, code) = curl(&["-d", "SELECT CAST('12345678901234567.89' AS DECIMAL(20, 2)) AS d, sum(o_totalprice) AS s FROM orders", &url]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    let row = &json(&body)[0];
    assert_eq!(row["d"], "12345678901234567.89");
    assert!(row["s"].as_str().is_some_and(|s| s.contains('.')), "{row}");

    // What a hostile page's form makes a browser send; then the same from a program.
    let form = [
        "-H",
        "Origin: http://evil.example",
        "-H",
        "Sec-Fetch-Site: cross-site",
        "-H",
        "Content-Type: text/plain",
        "-d",
        "SELECT 'csrf' --=x",
        url.as_str(),
    ];
    let (body, code) = curl(&form);
    assert_eq!(code, 403, "{}", String::from_utf8_lossy(&body));
    assert!(json(&body)["error"]
        .as_str()
        .is_some_and(|e| e.contains("cross-site")));
    let same = format!("Origin: {base}");
    let (body, code) = curl(&[
        "-H",
        &same,
        "-H",
        "Content-Type: application/sql",
        "-d",
        "SELECT 1 AS one",
        &url,
    ]);
    assert_eq!(code, 200, "{}", String::from_utf8_lossy(&body));
    Ok(())
}
