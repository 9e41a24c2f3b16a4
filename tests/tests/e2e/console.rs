//! The web console in a real browser: Debian's headless Chromium, driven over the
//! DevTools protocol. Runs a query in the SQL editor, opens its detail page, looks
//! at the queries, workers and catalog pages, cancels a running query from the
//! queries page, and keeps a screenshot of each page under target/screenshots/console/.

use std::time::Duration;

use quiver_tests::browser::{browser, open, screenshot, text, wait_for_text};
use quiver_tests::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn console_runs_a_query_and_shows_the_cluster() -> anyhow::Result<()> {
    let data = tempfile::tempdir()?;
    let config = format!(
        "[server]\nhttp_listen = \"127.0.0.1:0\"\ndata_dir = {:?}\n[workers]\nsingle_stage_max_bytes = 0\n{}\
         [[table]]\nname = \"quiver.tpch.nation\"\naccelerate = {{ mode = \"full\" }}\n",
        data.path().display().to_string(),
        tpch_source()
    );
    let server = start_coordinator(&config)?;
    let base = format!("http://{}", server.http_addr());
    let mut flight = client(&server.addr).await?;
    let sql = "SELECT l_returnflag, count(*) AS n FROM lineitem GROUP BY l_returnflag ORDER BY l_returnflag";
    let expected = strings(&query(&mut flight, sql).await?, "n");

    let browser = browser()?;
    let tab = browser.new_tab().map_err(|e| anyhow::anyhow!("{e}"))?;
    tab.set_default_timeout(Duration::from_secs(60));

    // The SQL editor: type a query, run it, read the grid.
    open(&tab, &format!("{base}/sql"))?;
    // Typed as a person would, over the editor's placeholder statement.
    tab.evaluate("document.getElementById('editor').value = ''", false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tab.find_element("#editor")
        .and_then(|e| e.type_into(sql).map(|_| ()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tab.find_element("#run")
        .and_then(|e| e.click().map(|_| ()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let shown = wait_for_text(&tab, "the result grid", |t| t.contains("3 rows in"))?;
    for n in &expected {
        assert!(
            shown.contains(n.as_str()),
            "the grid lacks the count {n}:\n{shown}"
        );
    }
    assert!(shown.contains("l_returnflag"), "{shown}");
    screenshot(&tab, "sql-editor")?;

    // Its detail page, through the link under the grid.
    tab.find_element("#query-link")
        .and_then(|e| e.click().map(|_| ()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let detail = wait_for_text(&tab, "the query's stages", |t| {
        t.contains("Distributed plan") && t.contains("Stage")
    })?;
    assert!(
        detail.contains("finished") && detail.contains(sql),
        "{detail}"
    );
    assert!(
        detail.contains("embedded-"),
        "the tasks name their workers:\n{detail}"
    );
    screenshot(&tab, "query-detail")?;

    // The workers with their charts (they fill in as samples come every 2 s).
    open(&tab, &format!("{base}/workers"))?;
    let workers = wait_for_text(&tab, "two ready workers", |t| {
        t.matches("ready").count() >= 2 && t.contains("cores now")
    })?;
    assert!(workers.contains("Scaling events"), "{workers}");
    std::thread::sleep(Duration::from_secs(5));
    let charts = tab
        .evaluate(
            "document.querySelectorAll('svg.spark polyline').length",
            false,
        )
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert_eq!(
        charts.value.and_then(|v| v.as_u64()),
        Some(4),
        "a CPU and a memory chart per worker"
    );
    screenshot(&tab, "workers")?;

    // Catalogs, schemas, tables and columns, and the accelerated copies.
    wait_for_value(
        &mut flight,
        "SELECT state FROM quiver.system.accelerations WHERE dataset = 'quiver.tpch.nation'",
        "ready",
        Duration::from_secs(60),
    )
    .await?;
    open(&tab, &format!("{base}/catalog"))?;
    tab.evaluate(
        "document.querySelectorAll('details').forEach(d => d.open = true)",
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    let catalog = wait_for_text(&tab, "the tpch tables", |t| {
        t.contains("quiver.tpch") && t.contains("l_shipdate")
    })?;
    assert!(
        catalog.contains("lineitem") && catalog.contains("n_name"),
        "{catalog}"
    );
    let copies = tab
        .find_element("#accelerations")
        .and_then(|e| e.get_inner_text())
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    assert!(
        copies.contains("quiver.tpch.nation")
            && copies.contains("full")
            && copies.contains("ready")
            && copies.contains("copied"),
        "{copies}"
    );
    screenshot(&tab, "catalog")?;

    // The queries page lists the editor's query; a running one can be cancelled there.
    let slow = "SELECT count(*) FROM lineitem a JOIN lineitem b ON a.l_suppkey = b.l_suppkey WHERE a.l_comment < b.l_comment";
    let addr = server.addr.clone();
    let running = tokio::spawn(async move {
        let mut c = client(&addr).await?;
        query(&mut c, slow).await.map(|_| ())
    });
    open(&tab, &format!("{base}/"))?;
    wait_for_text(&tab, "the running query with a Cancel button", |t| {
        t.contains("running") && t.contains("Cancel")
    })?;
    let listed = text(&tab)?;
    assert!(
        listed.contains("l_returnflag"),
        "the editor's query is listed:\n{listed}"
    );
    screenshot(&tab, "queries-running")?;
    // Clicked in the page: the live table is redrawn every 2 s under the DevTools' element handles.
    tab.evaluate(
        "document.querySelector('#query-table button.danger').click()",
        false,
    )
    .map_err(|e| anyhow::anyhow!("{e}"))?;
    wait_for_text(&tab, "the query cancelled", |t| {
        t.contains("cancelled") && !t.contains("Cancel\n")
    })?;
    screenshot(&tab, "queries-cancelled")?;
    let outcome = tokio::time::timeout(Duration::from_secs(30), running).await??;
    let err = outcome.expect_err("the cancelled query fails at its client");
    assert!(format!("{err:#}").contains("cancelled"), "{err:#}");
    let states = strings(&query(&mut flight, "SELECT state FROM quiver.system.queries WHERE sql LIKE '%a.l_comment < b.l_comment%' AND sql NOT LIKE '%system%'").await?, "state");
    assert_eq!(states, ["cancelled"]);
    Ok(())
}

/// A page of another site that posts a statement with a form (what a hostile page
/// makes a logged-in browser send) is refused; the console, same origin, still runs SQL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cross_site_form_is_refused_and_the_console_still_works() -> anyhow::Result<()> {
    let config = format!("[server]\nhttp_listen = \"127.0.0.1:0\"\n{}", tpch_source());
    let server = start_coordinator(&config)?;
    let base = format!("http://{}", server.http_addr());
    // The hostile site: another origin (another port) serving a self-submitting form.
    let hostile = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let hostile_addr = hostile.local_addr()?;
    let page = format!(
        "<html><body><form id=f method=post enctype=text/plain action=\"{base}/v1/sql\">\
         <input name=\"SELECT 'csrf-probe' AS x --\" value=\"x\"></form>\
         <script>document.getElementById('f').submit()</script></body></html>"
    );
    let serve = tokio::spawn(async move {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        for _ in 0..4 {
            let Ok((mut s, _)) = hostile.accept().await else {
                return;
            };
            let mut buf = [0u8; 4096];
            let _ = s.read(&mut buf).await;
            let reply = format!("HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{page}", page.len());
            let _ = s.write_all(reply.as_bytes()).await;
        }
    });

    let browser = browser()?;
    let tab = browser.new_tab().map_err(|e| anyhow::anyhow!("{e}"))?;
    tab.set_default_timeout(Duration::from_secs(60));
    open(&tab, &format!("http://{hostile_addr}/"))?;
    let refused = wait_for_text(&tab, "the refusal", |t| {
        t.contains("cross-site request refused")
    })?;
    assert!(
        refused.contains("\"error\""),
        "the refusal is the JSON error:\n{refused}"
    );
    screenshot(&tab, "cross-site-refused")?;
    serve.abort();

    // The statement never ran.
    let mut flight = client(&server.addr).await?;
    let ran = query(&mut flight, "SELECT count(*) AS n FROM quiver.system.queries WHERE sql LIKE '%csrf-probe%' AND sql NOT LIKE '%system.queries%'").await?;
    assert_eq!(strings(&ran, "n"), ["0"], "the cross-site statement ran");

    // The console itself posts with application/sql from its own origin.
    open(&tab, &format!("{base}/sql"))?;
    tab.evaluate("document.getElementById('editor').value = ''", false)
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tab.find_element("#editor")
        .and_then(|e| {
            e.type_into("SELECT r_name FROM region ORDER BY r_name")
                .map(|_| ())
        })
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    tab.find_element("#run")
        .and_then(|e| e.click().map(|_| ()))
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    let shown = wait_for_text(&tab, "the result grid", |t| t.contains("5 rows in"))?;
    assert!(shown.contains("EUROPE"), "{shown}");
    screenshot(&tab, "sql-editor-after-refusal")?;
    Ok(())
}
