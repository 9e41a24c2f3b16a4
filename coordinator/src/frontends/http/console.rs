//! The web console: pages rendered on the server (maud) with a little JavaScript
//! that re-fetches the live parts every two seconds, and inline SVG charts. No
//! JavaScript toolchain, nothing loaded from elsewhere.
//!
//! - `/` running and recent queries, with cancel;
//! - `/queries/{id}` one query: its stages, tasks and attempts (worker, rows,
//!   bytes, time), from the same records as `system.fragments`;
//! - `/workers` workers with CPU and memory charts, and the scaling timeline;
//! - `/catalog` catalogs, schemas, tables and their columns, as the user sees them;
//! - `/sql` an editor that runs statements through `/v1/sql` and shows a grid.
//!
//! Users who are not administrators see only their own queries, and not the workers.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use axum::extract::Path;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use maud::{html, Markup, PreEscaped, DOCTYPE};

use super::{error_response, Http, Peer, Shared};
use crate::frontends::run::Caller;
use crate::observe::queries::QueryRecord;

pub(super) fn routes() -> Router<std::sync::Arc<Http>> {
    Router::new()
        .route("/", get(queries_page))
        .route("/part/queries", get(queries_part))
        .route("/queries/{id}", get(query_page))
        .route("/part/queries/{id}", get(query_part))
        .route("/api/queries/{id}/cancel", post(cancel))
        .route("/workers", get(workers_page))
        .route("/part/workers", get(workers_part))
        .route("/catalog", get(catalog_page))
        .route("/sql", get(sql_page))
}

const STYLE: &str = r#"
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0;color:#1d2330;background:#f5f6f8}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:24px;align-items:center}
header a{color:#cfd6e4;text-decoration:none;font-weight:500}header a.on{color:#fff;border-bottom:2px solid #6ea8fe}
header .brand{font-weight:700;font-size:18px;color:#fff;margin-right:12px}
main{padding:16px 20px}h1{font-size:20px;margin:4px 0 12px}h2{font-size:16px;margin:18px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;font-size:13px}
th,td{border-bottom:1px solid #e3e6eb;padding:6px 8px;text-align:left;vertical-align:top}
th{background:#eef0f4;font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
code,pre,textarea{font-family:ui-monospace,SFMono-Regular,Menlo,monospace;font-size:12px}
pre{background:#fff;border:1px solid #e3e6eb;padding:8px;white-space:pre-wrap;margin:0}
.state{padding:1px 6px;border-radius:8px;font-size:12px;background:#e3e6eb}
.state.running,.state.queued{background:#cfe2ff}.state.finished{background:#d1e7dd}
.state.failed,.state.denied,.state.refused{background:#f8d7da}.state.cancelled,.state.retried{background:#fff3cd}
button{background:#0d6efd;color:#fff;border:0;border-radius:4px;padding:5px 12px;cursor:pointer}
button.secondary{background:#6c757d}button.danger{background:#dc3545;padding:2px 8px;font-size:12px}
textarea{width:100%;height:140px;box-sizing:border-box;padding:8px;border:1px solid #c7ccd5;border-radius:4px}
.error{color:#b02a37;background:#f8d7da;padding:8px;border-radius:4px;white-space:pre-wrap}
.muted{color:#6c757d}.card{background:#fff;border:1px solid #e3e6eb;border-radius:6px;padding:10px;margin-bottom:12px}
.tree ul{list-style:none;padding-left:18px;margin:2px 0}.tree li{margin:2px 0}
svg.spark{background:#fafbfc;border:1px solid #e3e6eb}
"#;

const SCRIPT: &str = r#"
async function refreshParts(){
  for (const el of document.querySelectorAll('[data-refresh]')) {
    try { const r = await fetch(el.dataset.refresh, {credentials:'same-origin'}); if (r.ok) el.innerHTML = await r.text(); } catch (e) {}
  }
}
setInterval(refreshParts, 2000);
async function cancelQuery(id){
  await fetch('/api/queries/' + encodeURIComponent(id) + '/cancel', {method:'POST', credentials:'same-origin'});
  refreshParts();
}
function cell(v){ const td = document.createElement('td'); td.textContent = v === null ? 'NULL' : (typeof v === 'object' ? JSON.stringify(v) : String(v)); if (v === null) td.className = 'muted'; else if (typeof v === 'number') td.className = 'num'; return td; }
async function runSql(explain){
  const status = document.getElementById('status'), grid = document.getElementById('grid'), err = document.getElementById('error');
  let sql = document.getElementById('editor').value.trim();
  if (explain) sql = 'EXPLAIN ANALYZE ' + sql;
  err.hidden = true; grid.innerHTML = ''; status.textContent = 'running…';
  const started = performance.now();
  const r = await fetch('/v1/sql', {method:'POST', body: sql, credentials:'same-origin', headers:{'Accept':'application/json','Content-Type':'application/sql'}});
  const id = r.headers.get('x-quiver-query-id');
  const body = await r.text();
  const secs = ((performance.now() - started) / 1000).toFixed(3);
  if (!r.ok) { let m = body; try { m = JSON.parse(body).error; } catch (e) {} err.textContent = m; err.hidden = false; status.textContent = 'failed after ' + secs + ' s'; return; }
  const rows = JSON.parse(body);
  const cols = rows.length ? Object.keys(rows[0]) : [];
  const head = document.createElement('tr'); for (const c of cols) { const th = document.createElement('th'); th.textContent = c; head.appendChild(th); }
  grid.appendChild(head);
  for (const row of rows) { const tr = document.createElement('tr'); for (const c of cols) tr.appendChild(cell(row[c])); grid.appendChild(tr); }
  status.innerHTML = '';
  status.append(rows.length + ' row' + (rows.length === 1 ? '' : 's') + ' in ' + secs + ' s ');
  if (id) { const a = document.createElement('a'); a.href = '/queries/' + id; a.id = 'query-link'; a.textContent = 'query ' + id.slice(0, 8); status.appendChild(a); }
}
"#;

fn page(title: &str, active: &str, body: Markup) -> Html<String> {
    let link = |href: &str, name: &str, key: &str| html! { a href=(href) class=[(key == active).then_some("on")] { (name) } };
    Html(
        html! {
            (DOCTYPE)
            html lang="en" {
                head {
                    meta charset="utf-8";
                    title { (title) " · Quiver" }
                    style { (PreEscaped(STYLE)) }
                }
                body {
                    header {
                        span.brand { "Quiver" }
                        (link("/", "Queries", "queries"))
                        (link("/workers", "Workers", "workers"))
                        (link("/catalog", "Catalog", "catalog"))
                        (link("/sql", "SQL", "sql"))
                    }
                    main { (body) }
                    script { (PreEscaped(SCRIPT)) }
                }
            }
        }
        .into_string(),
    )
}

fn state_badge(state: &str) -> Markup {
    html! { span class={"state " (state)} { (state) } }
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit < UNITS.len() - 1 {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn clock(t: SystemTime) -> String {
    let secs = t
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// The caller, or the response that asks for credentials.
fn caller(http: &Http, headers: &HeaderMap, peer: &Peer) -> Result<Caller, Response> {
    http.caller(headers, peer.0)
}

/// The queries `caller` may see: all for administrators, else their own.
fn visible_queries(http: &Http, caller: &Caller) -> Vec<QueryRecord> {
    let all = http.engine.queries().snapshot();
    match http.is_admin(caller) {
        true => all,
        false => all
            .into_iter()
            .filter(|q| q.user.as_deref() == caller.user_name())
            .collect(),
    }
}

async fn queries_page(state: Shared, peer: Peer, headers: HeaderMap) -> Response {
    let http = state.0;
    let caller = match caller(&http, &headers, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let table = queries_table(&visible_queries(&http, &caller));
    page(
        "Queries",
        "queries",
        html! {
            h1 { "Queries" }
            p.muted { "Running and recent queries, newest first. Refreshes every 2 s." }
            div id="queries" data-refresh="/part/queries" { (table) }
        },
    )
    .into_response()
}

async fn queries_part(state: Shared, peer: Peer, headers: HeaderMap) -> Response {
    let http = state.0;
    match caller(&http, &headers, &peer) {
        Ok(c) => Html(queries_table(&visible_queries(&http, &c)).into_string()).into_response(),
        Err(r) => r,
    }
}

fn queries_table(queries: &[QueryRecord]) -> Markup {
    html! {
        table id="query-table" {
            tr { th { "Query" } th { "State" } th { "User" } th { "Started" } th { "Elapsed" } th { "Rows" } th { "Bytes" } th { "Statement" } th {} }
            @for q in queries.iter().rev() {
                tr data-query=(q.id) {
                    td { a href={"/queries/" (q.id)} { code { (q.id.get(..8).unwrap_or(&q.id)) } } }
                    td { (state_badge(q.state)) }
                    td { (q.user.as_deref().unwrap_or("-")) }
                    td { (clock(q.started_at)) }
                    td.num { (format!("{:.2} s", q.elapsed())) }
                    td.num { (q.rows) }
                    td.num { (bytes(q.bytes)) }
                    td { code { (q.sql.chars().take(160).collect::<String>()) } }
                    td {
                        @if matches!(q.state, "running" | "queued") {
                            button.danger onclick={"cancelQuery('" (q.id) "')"} { "Cancel" }
                        }
                    }
                }
            }
        }
        @if queries.is_empty() { p.muted { "No queries yet." } }
    }
}

async fn cancel(state: Shared, peer: Peer, headers: HeaderMap, Path(id): Path<String>) -> Response {
    let http = state.0;
    let caller = match caller(&http, &headers, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(record) = http.engine.queries().get(&id) else {
        return error_response(StatusCode::NOT_FOUND, &format!("no query '{id}'"));
    };
    if !http.is_admin(&caller) && record.user.as_deref() != caller.user_name() {
        return error_response(
            StatusCode::FORBIDDEN,
            "only administrators cancel other users' queries",
        );
    }
    tracing::info!(query = %id, by = caller.user_name().unwrap_or("-"), "query cancelled from the console");
    match http.engine.queries().cancel(&id) {
        true => (
            StatusCode::OK,
            [("content-type", "application/json")],
            r#"{"cancelled":true}"#,
        )
            .into_response(),
        false => error_response(
            StatusCode::CONFLICT,
            &format!("query '{id}' is not running"),
        ),
    }
}

async fn query_page(
    state: Shared,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let http = state.0;
    let caller = match caller(&http, &headers, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let Some(detail) = query_detail(&http, &caller, &id) else {
        return (
            StatusCode::NOT_FOUND,
            page(
                "Not found",
                "queries",
                html! { h1 { "No query " code { (id) } } },
            ),
        )
            .into_response();
    };
    page(
        "Query",
        "queries",
        html! {
            h1 { "Query " code { (id) } }
            div id="detail" data-refresh={"/part/queries/" (id)} { (detail) }
        },
    )
    .into_response()
}

async fn query_part(
    state: Shared,
    peer: Peer,
    headers: HeaderMap,
    Path(id): Path<String>,
) -> Response {
    let http = state.0;
    let caller = match caller(&http, &headers, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    match query_detail(&http, &caller, &id) {
        Some(d) => Html(d.into_string()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// The query's record and its distributed plan: stages, their tasks, each task's attempts.
fn query_detail(http: &Http, caller: &Caller, id: &str) -> Option<Markup> {
    let q = visible_queries(http, caller)
        .into_iter()
        .rev()
        .find(|q| q.id == id)?;
    let fragments: Vec<_> = http
        .engine
        .fragments()
        .snapshot()
        .into_iter()
        .filter(|f| f.query_id == id)
        .collect();
    let mut stages: BTreeMap<u32, BTreeMap<u32, Vec<&crate::observe::fragments::FragmentRecord>>> =
        BTreeMap::new();
    for f in &fragments {
        stages
            .entry(f.stage)
            .or_default()
            .entry(f.task)
            .or_default()
            .push(f);
    }
    let done = fragments.iter().filter(|f| f.state == "finished").count();
    Some(html! {
        div.card {
            p { (state_badge(q.state)) " " span.muted { "user " } (q.user.as_deref().unwrap_or("-")) span.muted { " · from " } (q.client.as_deref().unwrap_or("-"))
                span.muted { " · started " } (clock(q.started_at)) span.muted { " · elapsed " } (format!("{:.3} s", q.elapsed()))
                span.muted { " · rows " } span id="rows" { (q.rows) } span.muted { " · " } (bytes(q.bytes)) }
            @if matches!(q.state, "running" | "queued") { button.danger onclick={"cancelQuery('" (q.id) "')"} { "Cancel" } }
            pre { (q.sql) }
            @if let Some(e) = &q.error { p.error { (e) } }
            @if !q.objects.is_empty() { p { span.muted { "Reads " } (q.objects.join(", ")) } }
        }
        h2 { "Distributed plan" }
        p.muted { (stages.len()) " stage(s), " (fragments.len()) " task attempt(s), " (done) " finished. Stage 0 holds the fragments that stream to the coordinator." }
        @if stages.is_empty() { p.muted { "This query ran on the coordinator alone (no fragments on workers)." } }
        div.tree id="plan" {
            ul {
                li { strong { "Query" } " → client"
                    ul {
                        @for (stage, tasks) in stages.iter().rev() {
                            li class="stage" data-stage=(stage) {
                                strong { "Stage " (stage) } span.muted { " · " (tasks.len()) " task(s), "
                                    (tasks.values().flatten().map(|f| f.rows).sum::<u64>()) " rows, "
                                    (bytes(tasks.values().flatten().map(|f| f.bytes).sum::<u64>())) }
                                table {
                                    tr { th { "Task" } th { "Attempt" } th { "Worker" } th { "State" } th { "Rows" } th { "Bytes" } th { "Spilled" } th { "Time" } th { "Error" } }
                                    @for (task, attempts) in tasks {
                                        @for f in attempts {
                                            tr class="task" {
                                                td.num { (task) } td.num { (f.attempt) } td { code { (f.worker) } } td { (state_badge(f.state)) }
                                                td.num { (f.rows) } td.num { (bytes(f.bytes)) } td.num { (bytes(f.spilled_bytes)) }
                                                td.num { (f.elapsed_ms()) " ms" } td { (f.error.as_deref().unwrap_or("")) }
                                            }
                                        }
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    })
}

async fn workers_page(state: Shared, peer: Peer, headers: HeaderMap) -> Response {
    let http = state.0;
    let caller = match caller(&http, &headers, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    if !http.is_admin(&caller) {
        return (
            StatusCode::FORBIDDEN,
            page(
                "Workers",
                "workers",
                html! { p.error { "The workers page is for administrators." } },
            ),
        )
            .into_response();
    }
    page("Workers", "workers", html! {
        h1 { "Workers" }
        p.muted { "CPU (cores in use) and memory over the last five minutes, sampled every 2 s." }
        div id="workers" data-refresh="/part/workers" { (workers_part_markup(&http)) }
    })
    .into_response()
}

async fn workers_part(state: Shared, peer: Peer, headers: HeaderMap) -> Response {
    let http = state.0;
    match caller(&http, &headers, &peer) {
        Ok(c) if http.is_admin(&c) => {
            Html(workers_part_markup(&http).into_string()).into_response()
        }
        Ok(_) => StatusCode::FORBIDDEN.into_response(),
        Err(r) => r,
    }
}

/// A line chart of `values` scaled to `max`, as inline SVG.
fn sparkline(values: &[f64], max: f64, label: &str) -> Markup {
    let (w, h) = (220.0, 40.0);
    let max = if max > 0.0 { max } else { 1.0 };
    let n = values.len().max(2) as f64 - 1.0;
    let points: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            format!(
                "{:.1},{:.1}",
                i as f64 / n * w,
                h - (v / max).min(1.0) * (h - 2.0) - 1.0
            )
        })
        .collect();
    html! {
        svg.spark width=(w) height=(h) viewBox={"0 0 " (w) " " (h)} role="img" aria-label=(label) {
            title { (label) }
            polyline fill="none" stroke="#0d6efd" stroke-width="1.5" points=(points.join(" ")) {}
        }
    }
}

fn workers_part_markup(http: &Http) -> Markup {
    let pool = http.engine.pool();
    let history = http.history.snapshot();
    let events = pool.events.snapshot();
    let now = SystemTime::now();
    let span_secs = 600.0;
    html! {
        table id="worker-table" {
            tr { th { "Worker" } th { "Address" } th { "State" } th { "Running fragments" } th { "CPU" } th { "Memory" } }
            @for w in pool.all() {
                @let samples = history.get(&w.id).cloned().unwrap_or_default();
                @let cpu: Vec<f64> = samples.iter().map(|s| s.cpu).collect();
                @let mem: Vec<f64> = samples.iter().map(|s| s.memory_bytes as f64).collect();
                tr class="worker" {
                    td { code { (w.id) } } td { code { (w.address) } } td { (state_badge(w.state().as_str())) }
                    td.num { (w.running_fragments()) }
                    td { (sparkline(&cpu, cpu.iter().cloned().fold(1.0, f64::max), &format!("CPU of {}", w.id)))
                         br; span.muted { (format!("{:.2} cores now", cpu.last().copied().unwrap_or(0.0))) } }
                    td { (sparkline(&mem, mem.iter().cloned().fold(1.0, f64::max), &format!("memory of {}", w.id)))
                         br; span.muted { (bytes(samples.last().map(|s| s.memory_bytes).unwrap_or(0))) } }
                }
            }
        }
        h2 { "Scaling events" }
        p.muted { "The last ten minutes; newest on the right." }
        svg width="900" height="46" viewBox="0 0 900 46" role="img" aria-label="scaling timeline" {
            line x1="0" y1="23" x2="900" y2="23" stroke="#c7ccd5" {}
            @for e in &events {
                @let age = now.duration_since(e.at).map(|d| d.as_secs_f64()).unwrap_or(0.0);
                @if age <= span_secs {
                    @let x = 900.0 - age / span_secs * 890.0 - 5.0;
                    @let color = match e.action { "start" => "#198754", "remove" | "drain" => "#6c757d", "replace" => "#fd7e14", _ => "#dc3545" };
                    circle cx=(format!("{x:.1}")) cy="23" r="6" fill=(color) { title { (clock(e.at)) " " (e.action) " " (e.worker) ": " (e.reason) } }
                }
            }
        }
        @if events.is_empty() { p.muted { "No scaling events: this pool does not scale (embedded or static workers)." } }
        table id="event-table" {
            tr { th { "At" } th { "Action" } th { "Worker" } th { "Reason" } }
            @for e in events.iter().rev().take(50) {
                tr { td { (clock(e.at)) } td { (e.action) } td { code { (e.worker) } } td { (e.reason) } }
            }
        }
    }
}

async fn catalog_page(state: Shared, peer: Peer, headers: HeaderMap) -> Response {
    let http = state.0;
    let caller = match caller(&http, &headers, &peer) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let ctx = http
        .engine
        .metadata_context(http.engine.access(caller.user.as_ref()));
    let mut catalogs = vec![];
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else {
            continue;
        };
        let mut schemas = vec![];
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else {
                continue;
            };
            let mut tables = vec![];
            let mut names = schema.table_names();
            names.sort();
            for t in names {
                let columns = match schema.table(&t).await {
                    Ok(Some(table)) => table
                        .schema()
                        .fields()
                        .iter()
                        .map(|f| (f.name().clone(), f.data_type().to_string(), f.is_nullable()))
                        .collect(),
                    _ => vec![],
                };
                tables.push((t, columns));
            }
            schemas.push((schema_name, tables));
        }
        // The sources first; Quiver's own system tables last.
        schemas.sort_by_key(|(name, _)| (name == crate::reserved::SYSTEM_SCHEMA, name.clone()));
        catalogs.push((catalog_name, schemas));
    }
    // Accelerated copies of the tables listed (only those the caller may read),
    // with how current they are: a live copy's lag, a refreshed copy's age.
    let listed: std::collections::HashSet<String> = catalogs
        .iter()
        .flat_map(|(c, schemas)| {
            schemas.iter().flat_map(move |(s, tables)| {
                tables.iter().map(move |(t, _)| format!("{c}.{s}.{t}"))
            })
        })
        .collect();
    let now = crate::catalog::store::now_ms();
    let accelerations: Vec<_> = http
        .engine
        .datasets()
        .accelerations()
        .iter()
        .map(|a| a.info())
        .filter(|i| listed.contains(&i.dataset))
        .map(|i| {
            let state = match (i.answering, &i.copy) {
                (true, _) => "ready",
                (false, Some(c)) if c.changes.is_some() => "catching up",
                _ => "pending",
            };
            let live = i.copy.as_ref().and_then(|c| c.changes.as_ref());
            let current = match (live, &i.feed) {
                (Some(ch), Some(f)) => {
                    let (lag_bytes, lag_secs) =
                        crate::catalog::acceleration::changes::lag(f, ch.applied_lsn, now);
                    format!(
                        "lag {lag_secs:.1} s, {} of WAL; {} changes applied",
                        bytes(lag_bytes),
                        ch.changes_applied
                    )
                }
                _ => i
                    .copy
                    .as_ref()
                    .map(|c| {
                        let age = (now - c.as_of_ms).max(0) as f64 / 1000.0;
                        match &c.filter {
                            Some(f) => format!("copied {age:.0} s ago; holds the rows where {f}"),
                            None => format!("copied {age:.0} s ago"),
                        }
                    })
                    .unwrap_or_default(),
            };
            let error = i
                .feed
                .as_ref()
                .and_then(|f| f.last_error.clone())
                .or_else(|| i.last.as_ref().and_then(|l| l.error.clone()));
            let rows = i
                .copy
                .as_ref()
                .map(|c| c.rows.to_string())
                .unwrap_or_default();
            (i.dataset, i.spec.mode.as_str(), state, rows, current, error)
        })
        .collect();
    page("Catalog", "catalog", html! {
        h1 { "Catalog" }
        p.muted { "Every table you may read, by catalog and schema (one schema per source), with its columns." }
        @if !accelerations.is_empty() {
            div.card #accelerations {
                h2 { "Accelerated copies" }
                table {
                    tr { th { "Dataset" } th { "Mode" } th { "State" } th { "Rows" } th { "How current" } th { "Last error" } }
                    @for (dataset, mode, state, rows, current, error) in &accelerations {
                        tr { td { code { (dataset) } } td { (mode) } td { (state_badge(state)) } td { (rows) } td { (current) } td { (error.clone().unwrap_or_default()) } }
                    }
                }
            }
        }
        @for (catalog, schemas) in &catalogs {
            @for (schema, tables) in schemas {
                div.card data-schema={(catalog) "." (schema)} {
                    h2 { (catalog) "." (schema) span.muted { " · "
                        (http.engine.source_kind(&format!("{catalog}.{schema}")).map(|k| format!("{k} source · ")).unwrap_or_default())
                        (tables.len()) " table(s)" } }
                    @for (table, columns) in tables {
                        details data-table=(table) {
                            summary { code { (table) } span.muted { " · " (columns.len()) " columns" } }
                            table {
                                tr { th { "Column" } th { "Type" } th { "Nullable" } }
                                @for (name, ty, nullable) in columns { tr { td { code { (name) } } td { (ty) } td { (if *nullable { "yes" } else { "no" }) } } }
                            }
                        }
                    }
                }
            }
        }
    })
    .into_response()
}

async fn sql_page(state: Shared, peer: Peer, headers: HeaderMap) -> Response {
    let http = state.0;
    if let Err(r) = caller(&http, &headers, &peer) {
        return r;
    }
    page(
        "SQL",
        "sql",
        html! {
            h1 { "SQL" }
            textarea id="editor" spellcheck="false" { "SELECT 1" }
            p {
                button id="run" onclick="runSql(false)" { "Run" } " "
                button.secondary id="explain" onclick="runSql(true)" { "Explain analyze" } " "
                span id="status" .muted {}
            }
            div id="error" class="error" hidden {}
            table id="grid" {}
        },
    )
    .into_response()
}
