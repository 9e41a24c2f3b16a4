//! Prometheus metrics: queries, fragments, retries and the worker pool, in the
//! text exposition format, served at `GET /metrics` on `server.http_listen`.

use std::fmt::Write as _;
use std::sync::atomic::Ordering;

use crate::pool::WorkerState;

/// The metrics document.
pub fn render(engine: &crate::engine::QueryEngine) -> String {
    let pool = engine.pool();
    let c = pool.counters();
    let mut out = String::new();
    let mut counter = |name: &str, help: &str, value: u64| {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
        );
    };
    counter(
        "quiver_queries_total",
        "Statements planned.",
        c.queries.load(Ordering::Relaxed),
    );
    counter(
        "quiver_fragments_total",
        "Fragments started on workers.",
        c.fragments.load(Ordering::Relaxed),
    );
    counter(
        "quiver_fragment_retries_total",
        "Fragments moved to another worker after theirs was lost.",
        c.fragment_retries.load(Ordering::Relaxed),
    );
    counter(
        "quiver_worker_rows_total",
        "Rows received from workers.",
        c.rows_from_workers.load(Ordering::Relaxed),
    );
    counter(
        "quiver_worker_wire_bytes_total",
        "Bytes of fragment results received from workers as sent: compressed between hosts (workers.exchange_compression).",
        c.wire_bytes_from_workers.load(Ordering::Relaxed),
    );
    counter(
        "quiver_stages_total",
        "Query stages run on workers.",
        c.stages.load(Ordering::Relaxed),
    );
    counter(
        "quiver_exchange_bytes_total",
        "Bytes stage tasks wrote to exchanges.",
        c.exchange_bytes.load(Ordering::Relaxed),
    );
    counter(
        "quiver_lost_outputs_total",
        "Stage outputs recomputed after their worker was lost.",
        c.lost_outputs.load(Ordering::Relaxed),
    );
    counter(
        "quiver_relayed_results_total",
        "Results forwarded to Flight SQL clients as the workers' Flight messages, not decoded and encoded again.",
        c.relayed_results.load(Ordering::Relaxed),
    );
    counter(
        "quiver_streamed_restarts_total",
        "Queries run again with exchange files after their streamed run failed before the first row.",
        c.streamed_restarts.load(Ordering::Relaxed),
    );
    counter(
        "quiver_query_timeouts_total",
        "Queries cancelled by server.query_timeout_secs.",
        c.query_timeouts.load(Ordering::Relaxed),
    );
    let cache = engine.cache();
    counter(
        "quiver_cache_hits_total",
        "Statements answered from the results cache.",
        cache.hits.load(Ordering::Relaxed),
    );
    counter(
        "quiver_cache_misses_total",
        "Cacheable statements not found in the results cache.",
        cache.misses.load(Ordering::Relaxed),
    );
    let d = &engine.datasets().counters;
    counter(
        "quiver_acceleration_refreshes_total",
        "Refreshes of accelerated copies, ended either way.",
        d.refreshes.load(Ordering::Relaxed),
    );
    counter(
        "quiver_acceleration_refresh_failures_total",
        "Refreshes that failed (the old copy stayed).",
        d.refresh_failures.load(Ordering::Relaxed),
    );
    let seconds = d.refresh_millis.load(Ordering::Relaxed) as f64 / 1000.0;
    let _ = writeln!(out, "# HELP quiver_acceleration_refresh_seconds_total Time spent refreshing copies.\n# TYPE quiver_acceleration_refresh_seconds_total counter\nquiver_acceleration_refresh_seconds_total {seconds}");
    // Live copies: how far each is behind its source, and what it has applied.
    let _ = writeln!(out, "# HELP quiver_acceleration_lag_bytes WAL a live copy has not applied yet.\n# TYPE quiver_acceleration_lag_bytes gauge\n# HELP quiver_acceleration_lag_seconds Age of the oldest change a live copy received and has not applied.\n# TYPE quiver_acceleration_lag_seconds gauge\n# HELP quiver_acceleration_changes_applied_total Row changes a live copy applied.\n# TYPE quiver_acceleration_changes_applied_total counter");
    let now = crate::catalog::store::now_ms();
    for info in engine.datasets().accelerations().iter().map(|a| a.info()) {
        let (Some(feed), Some(state)) = (
            &info.feed,
            info.copy.as_ref().and_then(|c| c.changes.as_ref()),
        ) else {
            continue;
        };
        let (lag_bytes, lag_secs) =
            crate::catalog::acceleration::changes::lag(feed, state.applied_lsn, now);
        let d = info.dataset.replace('"', "");
        let _ = writeln!(out, "quiver_acceleration_lag_bytes{{dataset=\"{d}\"}} {lag_bytes}\nquiver_acceleration_lag_seconds{{dataset=\"{d}\"}} {lag_secs}\nquiver_acceleration_changes_applied_total{{dataset=\"{d}\"}} {}", state.changes_applied);
    }
    let (bytes, entries) = cache.usage();
    let _ = writeln!(out, "# HELP quiver_cache_bytes Memory the results cache holds.\n# TYPE quiver_cache_bytes gauge\nquiver_cache_bytes {bytes}\n# HELP quiver_cache_entries Answers in the results cache.\n# TYPE quiver_cache_entries gauge\nquiver_cache_entries {entries}");
    {
        let t = engine.queries().totals.lock();
        let mut total = |name: &str, help: &str, value: f64| {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {value}"
            );
        };
        total(
            "quiver_query_cpu_seconds_total",
            "CPU time of ended queries' fragments on workers.",
            t.cpu_secs,
        );
        total(
            "quiver_query_container_seconds_total",
            "Worker time ended queries held (first to last fragment, per worker).",
            t.container_secs,
        );
        total(
            "quiver_query_worker_wait_seconds_total",
            "Time queries waited for workers to start (scale from zero).",
            t.worker_wait_ms as f64 / 1000.0,
        );
        total(
            "quiver_query_exchange_rows_total",
            "Rows ended queries' stage tasks wrote to exchanges.",
            t.exchange_rows as f64,
        );
        let _ = writeln!(out, "# HELP quiver_source_bytes_read_total Bytes ended queries' scans read, by source.\n# TYPE quiver_source_bytes_read_total counter");
        for (source, bytes) in &t.source_bytes {
            let _ = writeln!(
                out,
                "quiver_source_bytes_read_total{{source=\"{source}\"}} {bytes}"
            );
        }
    }
    let workers = pool.all();
    let _ = writeln!(
        out,
        "# HELP quiver_workers Workers by state.\n# TYPE quiver_workers gauge"
    );
    for state in [
        WorkerState::Starting,
        WorkerState::Ready,
        WorkerState::Unhealthy,
        WorkerState::Draining,
    ] {
        let n = workers.iter().filter(|w| w.state() == state).count();
        let _ = writeln!(out, "quiver_workers{{state=\"{}\"}} {n}", state.as_str());
    }
    let _ = writeln!(out, "# HELP quiver_worker_running_fragments Fragments running per worker.\n# TYPE quiver_worker_running_fragments gauge");
    for w in &workers {
        let _ = writeln!(
            out,
            "quiver_worker_running_fragments{{worker=\"{}\"}} {}",
            w.id,
            w.running_fragments()
        );
    }
    let _ = writeln!(out, "# HELP quiver_scaling_decisions_total Worker pool decisions by action.\n# TYPE quiver_scaling_decisions_total counter");
    for (action, n) in pool.events.counts() {
        let _ = writeln!(
            out,
            "quiver_scaling_decisions_total{{action=\"{action}\"}} {n}"
        );
    }
    out
}
