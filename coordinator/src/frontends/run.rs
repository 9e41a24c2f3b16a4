//! One statement through any front door: the query log entry, admission, the
//! deadline, cancellation, and the stream of batches the front end encodes.
//!
//! Every front end (Flight SQL, PostgreSQL, HTTP) plans through the same steps
//! (`crate::engine::statement`), with its own way of carrying a statement (handles,
//! portals, a request body), and then hands the [`Planned`] statement to
//! [`Tracked::execute`], so limits, `system.queries` and the audit log behave the
//! same whichever door a query came through.

use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::error::DataFusionError;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::{stream, StreamExt};
use quiver_worker::status::from_datafusion;
use tonic::Status;
use tracing::Instrument;

use crate::admission::Permit;
use crate::engine::{Planned, QueryEngine, QuerySession};
use crate::observe::queries::{QueryOrigin, RunningQuery};
use crate::reserved::is_catalog_table;
use crate::security::authn::User;

/// The message a cancelled query ends with; front ends map it (PostgreSQL: 57014).
pub const CANCELLED: &str = "query cancelled";

/// The request header (Flight SQL, HTTP) that turns the results cache off for one statement.
pub const CACHE_HEADER: &str = "x-quiver-cache";

/// Whether a [`CACHE_HEADER`] value says "off".
pub fn cache_off(value: Option<&str>) -> bool {
    value.is_some_and(|v| {
        matches!(
            v.trim().to_ascii_lowercase().as_str(),
            "off" | "false" | "0" | "no"
        )
    })
}

/// Who is calling: the authenticated user (None without authentication) and from where.
#[derive(Clone, Debug, Default)]
pub struct Caller {
    pub user: Option<User>,
    pub client: Option<String>,
    /// The client asked not to use the results cache for this statement.
    pub no_cache: bool,
}

impl Caller {
    pub fn origin(&self, sql: &str) -> QueryOrigin {
        QueryOrigin {
            user: self.user.as_ref().map(|u| u.name.clone()),
            client: self.client.clone(),
            sql: sql.to_string(),
        }
    }

    pub fn user_name(&self) -> Option<&str> {
        self.user.as_ref().map(|u| u.name.as_str())
    }
}

/// A statement with its entry in `system.queries`, between planning and execution.
pub struct Tracked<'e> {
    engine: &'e QueryEngine,
    session: QuerySession,
    record: RunningQuery,
    caller: Caller,
    started: Instant,
    /// Fires when the query is cancelled, queued or running.
    cancel: Arc<tokio::sync::Notify>,
    /// Set by [`Tracked::by_text`]: the statement has no parameters, so its text
    /// alone finds its cached answer.
    text_key: Option<String>,
}

/// A query that runs. Dropping `batches` cancels it, with every fragment it runs.
pub struct Running {
    pub id: String,
    pub schema: SchemaRef,
    pub batches: SendableRecordBatchStream,
}

/// Opens the query log entry for `sql` in `session`.
pub fn begin<'e>(
    engine: &'e QueryEngine,
    session: QuerySession,
    caller: &Caller,
    sql: &str,
) -> Tracked<'e> {
    let record = engine.queries().begin(&session.id, caller.origin(sql));
    let cancel = engine.queries().cancel_signal(&session.id);
    Tracked {
        engine,
        session,
        record,
        caller: caller.clone(),
        started: Instant::now(),
        cancel,
        text_key: None,
    }
}

impl Tracked<'_> {
    pub fn session(&self) -> &QuerySession {
        &self.session
    }

    /// For a statement without parameters: a repeat of `sql` may be answered from
    /// the results cache before it is planned ([`Self::cached`]).
    pub fn by_text(mut self, sql: &str) -> Self {
        if self.engine.cache().enabled() && !self.caller.no_cache {
            self.text_key = Some(crate::cache::text_key(
                self.caller.user_name(),
                sql,
                self.session.generation(),
            ));
        }
        self
    }

    /// The cached answer of this statement's text, served as the query's result.
    pub fn cached(self) -> Result<Running, Self> {
        let entry = match self
            .text_key
            .as_deref()
            .and_then(|k| self.engine.cache().get_by_text(k))
        {
            Some(e) => e,
            None => return Err(self),
        };
        self.record.reads(&entry.tables);
        Ok(self.serve(entry))
    }

    /// Streams a cached answer: no admission slot, no source, no worker.
    fn serve(self, entry: Arc<crate::cache::Entry>) -> Running {
        self.record.cache_hit();
        self.record.running();
        let id = self.session.id.clone();
        let schema = entry.schema.clone();
        let batches = stream::iter(entry.batches.clone().into_iter().map(Ok));
        let batches: SendableRecordBatchStream =
            Box::pin(RecordBatchStreamAdapter::new(schema.clone(), batches));
        let batches = logged(batches, id.clone(), self.started, self.record, None, false);
        Running {
            id,
            schema: schema.clone(),
            batches: Box::pin(RecordBatchStreamAdapter::new(schema, batches)),
        }
    }

    pub fn id(&self) -> &str {
        &self.session.id
    }

    /// Records a failure before execution (planning, binding), with the tables
    /// the statement named.
    pub fn fail(mut self, status: Status, objects: &[String]) -> Status {
        self.record.reads(objects);
        self.record
            .failed_with(status.code(), status.message().to_string());
        status
    }

    /// Admits and starts a planned statement (a planning error is recorded too)
    /// and returns its batches, cut off at the query timeout or when the query is
    /// cancelled, and counted into `system.queries`.
    pub async fn execute(mut self, planned: Planned) -> Result<Running, Status> {
        let user = self.caller.user_name().map(str::to_string);
        let span = tracing::info_span!("query", id = %self.session.id, user = user.as_deref().unwrap_or("-"));
        let (write, command, objects) = (planned.is_write(), planned.is_command(), planned.objects);
        let plan = match planned.plan {
            Ok(p) => p,
            Err(status) => return Err(self.fail(status, &objects)),
        };
        self.record.reads(&objects);
        let cache = self.engine.cache().clone();
        let cache_key = (cache.enabled()
            && !self.caller.no_cache
            && !command
            && !write
            && crate::cache::cacheable(&plan, &objects)
            && !self.engine.reads_live_tables(&objects))
        .then(|| crate::cache::key(user.as_deref(), &plan, self.session.generation()));
        if let (Some(key), Some(text_key)) = (&cache_key, self.text_key.take()) {
            cache.alias(text_key, key.clone());
        }
        if let Some(entry) = cache_key.as_deref().and_then(|k| cache.get(k)) {
            return Ok(self.serve(entry));
        }
        let start = async {
            // Reading only catalog tables (monitoring, client introspection) never waits behind the load.
            let permit = match objects.iter().all(|o| is_catalog_table(o)) {
                true => None,
                false => Some(
                    self.engine
                        .admission()
                        .admit(user.as_deref(), || self.record.queued())
                        .await?,
                ),
            };
            self.record.running();
            let executed = self.session.execute(plan).await.map_err(|e| {
                tracing::info!(error = %e, "query failed");
                from_datafusion(&e)
            })?;
            if let Some((waited, started)) = executed.worker_wait {
                self.record.waited_for_workers(waited, started);
            }
            let batches = executed.batches;
            Ok::<_, Status>((batches, permit))
        };
        // A query cancelled while it waits in the queue (or starts) ends there.
        let cancel = self.cancel.clone();
        let started = tokio::select! {
            s = start.instrument(span) => s,
            _ = cancel.notified() => Err(Status::cancelled(format!("{CANCELLED} on request, before it ran"))),
        };
        let (batches, permit) = match started {
            Ok(b) => b,
            Err(status) if status.code() == tonic::Code::Cancelled => {
                self.record.cancelled(status.message().to_string());
                return Err(status);
            }
            Err(status) => return Err(self.fail(status, &objects)),
        };
        let id = self.session.id.clone();
        let schema = batches.schema();
        let batches = match cache_key {
            Some(key) => kept(batches, cache, key, objects),
            None => batches,
        };
        let batches = guarded(batches, self.engine, self.started, cancel);
        let batches = logged(
            batches,
            id.clone(),
            self.started,
            self.record,
            permit,
            write,
        );
        Ok(Running {
            id,
            schema: schema.clone(),
            batches: Box::pin(RecordBatchStreamAdapter::new(schema, batches)),
        })
    }
}

/// Plans a statement physically and, when its result needs nothing of the coordinator
/// (`crate::distributed::endpoints`), returns endpoints on the workers for the
/// client to fetch, and records the query in `system.queries` as `handed_off`.
/// None (nothing recorded) when the query should run here: the option is off, it
/// writes or changes the catalog, its plan needs a merge, or it cannot be planned
/// now (the error is then reported where it runs).
pub async fn client_endpoints(
    engine: &QueryEngine,
    session: QuerySession,
    caller: &Caller,
    sql: &str,
    planned: &Planned,
) -> Option<Vec<arrow_flight::FlightEndpoint>> {
    if !engine.client_endpoints() || planned.is_write() || planned.is_command() {
        return None;
    }
    let objects = &planned.objects;
    if objects.iter().any(|o| is_catalog_table(o)) {
        return None;
    }
    let plan = planned.plan.as_ref().ok()?.clone();
    let physical = session.physical_plan(plan).await.ok()?;
    let endpoints = crate::distributed::endpoints::client_endpoints(&physical, &session.id)?;
    let mut tracked = begin(engine, session, caller, sql);
    tracked.record.reads(objects);
    tracked.record.handed_off();
    tracing::info!(
        id = tracked.id(),
        endpoints = endpoints.len(),
        "query handed to the workers as endpoints"
    );
    Some(endpoints)
}

/// Ends the query with an error once it has run for the query timeout, or when it
/// is cancelled (console, PostgreSQL cancel request); dropping its stream cancels
/// every fragment and stage task it still runs.
fn guarded(
    batches: SendableRecordBatchStream,
    engine: &QueryEngine,
    started: Instant,
    cancel: Arc<tokio::sync::Notify>,
) -> SendableRecordBatchStream {
    let timeout = engine.query_timeout();
    let pool = engine.pool().clone();
    let schema = batches.schema();
    let deadline = timeout.map(|t| tokio::time::Instant::from_std(started + t));
    let limited = stream::unfold(Some(batches), move |state| {
        let (pool, cancel) = (pool.clone(), cancel.clone());
        async move {
            let mut batches = state?;
            let expired = async {
                match deadline {
                    Some(d) => tokio::time::sleep_until(d).await,
                    None => futures::future::pending().await,
                }
            };
            tokio::select! {
                next = batches.next() => next.map(|item| (item, Some(batches))),
                _ = expired => {
                    drop(batches);
                    crate::observe::counters::Counters::add(&pool.counters().query_timeouts, 1);
                    let message = format!(
                        "query cancelled: it ran longer than server.query_timeout_secs ({} s)",
                        timeout.map(|t| t.as_secs_f64()).unwrap_or_default()
                    );
                    let status = quiver_worker::status::tagged(Status::resource_exhausted(message), quiver_worker::status::ErrorKind::QueryCanceled);
                    Some((Err(DataFusionError::External(Box::new(status))), None))
                }
                _ = cancel.notified() => {
                    drop(batches);
                    Some((Err(DataFusionError::External(Box::new(Status::cancelled(format!("{CANCELLED} on request"))))), None))
                }
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, limited))
}

/// Passes the batches on and keeps a copy; a complete answer within
/// `cache.max_entry_bytes` goes into the results cache at its end.
fn kept(
    batches: SendableRecordBatchStream,
    cache: Arc<crate::cache::ResultsCache>,
    key: String,
    objects: Vec<String>,
) -> SendableRecordBatchStream {
    let schema = batches.schema();
    let limit = cache.max_entry_bytes();
    let state = (batches, Some(Vec::new()), 0usize, cache, Some(key), objects);
    let out = stream::unfold(Some(state), move |state| async move {
        let (mut s, mut kept, mut bytes, cache, mut key, objects) = state?;
        match s.next().await {
            Some(Ok(b)) => {
                bytes += b.get_array_memory_size();
                match kept.as_mut() {
                    Some(k) if bytes <= limit => k.push(b.clone()),
                    _ => kept = None,
                }
                Some((Ok(b), Some((s, kept, bytes, cache, key, objects))))
            }
            Some(Err(e)) => Some((Err(e), None)),
            None => {
                if let (Some(k), Some(key)) = (kept, key.take()) {
                    cache.put(key, s.schema(), k, objects);
                }
                None
            }
        }
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, out))
}

/// Counts rows and logs the end of a query (or its failure, or its cancellation);
/// holds its admission permit until then.
fn logged(
    batches: SendableRecordBatchStream,
    query: String,
    started: Instant,
    record: RunningQuery,
    permit: Option<Permit>,
    write: bool,
) -> impl futures::Stream<Item = datafusion::error::Result<RecordBatch>> + Send {
    struct Tally {
        query: String,
        started: Instant,
        rows: usize,
        done: bool,
        record: RunningQuery,
        /// The query's place among the running ones, given back when the stream ends.
        _permit: Option<Permit>,
    }
    impl Drop for Tally {
        fn drop(&mut self) {
            let elapsed_ms = self.started.elapsed().as_millis() as u64;
            if self.done {
                tracing::info!(query = %self.query, rows = self.rows, elapsed_ms, "query finished");
            } else {
                tracing::info!(query = %self.query, rows = self.rows, elapsed_ms, "query stopped before its end");
            }
        }
    }
    let tally = Tally {
        query,
        started,
        rows: 0,
        done: false,
        record,
        _permit: permit,
    };
    stream::unfold(Some((batches, tally)), move |state| async move {
        let (mut s, mut tally) = state?;
        match s.next().await {
            Some(Ok(b)) => {
                tally.rows += b.num_rows();
                tally
                    .record
                    .add_batch(b.num_rows(), b.get_array_memory_size());
                if write {
                    // A write answers with the rows it wrote.
                    tally.record.written(crate::writes::rows_written(&b));
                }
                Some((Ok(b), Some((s, tally))))
            }
            Some(Err(e)) => {
                tracing::info!(query = %tally.query, error = %e, "query failed");
                match from_datafusion(&e) {
                    s if s.code() == tonic::Code::Cancelled => {
                        tally.record.cancelled(s.message().to_string())
                    }
                    _ => tally.record.failed(e.to_string()),
                }
                // The error ends the stream: nothing after it is a result.
                Some((Err(e), None))
            }
            None => {
                tally.done = true;
                tally.record.finished();
                drop(tally);
                None
            }
        }
    })
}
