//! One statement through any front door: the query log entry, admission, the
//! deadline, cancellation, and the stream of batches the front end encodes (or,
//! for Flight SQL, the workers' Flight messages it forwards; `stream.rs` does the
//! same bookkeeping for both).
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
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::stream::BoxStream;
use futures::StreamExt;
use quiver_worker::status::from_datafusion;
use tonic::Status;
use tracing::Instrument;

use crate::admission::Permit;
use crate::distributed::relay::{Relay, RelayFrame};
use crate::engine::{Executed, Outcome, Planned, QueryEngine, QuerySession};
use crate::observe::queries::{QueryOrigin, RunningQuery};
use crate::reserved::is_catalog_table;
use crate::security::authn::User;

mod stream;

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

impl<'e> Tracked<'e> {
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
        let batches = futures::stream::iter(entry.batches.clone().into_iter().map(Ok)).boxed();
        let batches = stream::logged(batches, id.clone(), self.started, self.record, None, None);
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
    pub async fn execute(self, planned: Planned) -> Result<Running, Status> {
        match self.start(planned, None).await? {
            Started::Answered(running) => Ok(running),
            Started::Running(run, Outcome::Batches(executed)) => Ok(run.batches(executed)),
            // Only `execute_for_flight` asks for a relay.
            Started::Running(_, Outcome::Relayed(_)) => Err(Status::internal(
                "a relayed result reached a front end that reads batches",
            )),
        }
    }

    /// [`Self::execute`] for a Flight SQL client that reads string views when
    /// `views`: a result the workers can send in the client's types as it is comes
    /// as their Flight messages, relayed ([`crate::distributed::relay`]).
    pub async fn execute_for_flight(self, planned: Planned, views: bool) -> Result<Output, Status> {
        Ok(match self.start(planned, Some(views)).await? {
            Started::Answered(running) => Output::Batches(running),
            Started::Running(run, Outcome::Batches(executed)) => {
                Output::Batches(run.batches(executed))
            }
            Started::Running(run, Outcome::Relayed(relay)) => Output::Relayed(run.frames(relay)),
        })
    }

    /// Admission and the start of execution, with the query's cache key; or the
    /// answer from the results cache.
    async fn start(mut self, planned: Planned, relay: Option<bool>) -> Result<Started<'e>, Status> {
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
            return Ok(Started::Answered(self.serve(entry)));
        }
        // The result's types as the client was told them (kept answers are in these).
        let announced = Arc::new(plan.schema().as_arrow().clone());
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
            let outcome = match relay {
                Some(views) => self.session.execute_for_flight(plan, views).await,
                None => self.session.execute(plan).await.map(Outcome::Batches),
            };
            let outcome = outcome.map_err(|e| {
                tracing::info!(error = %e, "query failed");
                from_datafusion(&e)
            })?;
            if let Outcome::Batches(Executed {
                worker_wait: Some((waited, started)),
                ..
            }) = &outcome
            {
                self.record.waited_for_workers(*waited, *started);
            }
            Ok::<_, Status>((outcome, permit))
        };
        // A query cancelled while it waits in the queue (or starts) ends there.
        let cancel = self.cancel.clone();
        let started = tokio::select! {
            s = start.instrument(span) => s,
            _ = cancel.notified() => Err(Status::cancelled(format!("{CANCELLED} on request, before it ran"))),
        };
        let (outcome, permit) = match started {
            Ok(b) => b,
            Err(status) if status.code() == tonic::Code::Cancelled => {
                self.record.cancelled(status.message().to_string());
                return Err(status);
            }
            Err(status) => return Err(self.fail(status, &objects)),
        };
        let run = Run {
            engine: self.engine,
            id: self.session.id.clone(),
            started: self.started,
            record: self.record,
            cancel,
            permit,
            write,
            cache: cache_key.map(|key| (cache, key, objects)),
            announced,
        };
        Ok(Started::Running(Box::new(run), outcome))
    }
}

/// What [`Tracked::execute_for_flight`] gives a Flight SQL front end.
pub enum Output {
    Batches(Running),
    Relayed(Relayed),
}

/// A query whose result is its workers' Flight messages (`crate::distributed::relay`).
pub struct Relayed {
    /// The schema the client reads; the frames are in it.
    pub schema: SchemaRef,
    /// Record batch messages, cut off at the query timeout or when the query is
    /// cancelled, and counted into `system.queries`.
    pub frames: BoxStream<'static, datafusion::error::Result<RelayFrame>>,
}

enum Started<'e> {
    /// From the results cache.
    Answered(Running),
    Running(Box<Run<'e>>, Outcome),
}

/// A started query, before its result is wrapped for the front end.
struct Run<'e> {
    engine: &'e QueryEngine,
    id: String,
    started: Instant,
    record: RunningQuery,
    cancel: Arc<tokio::sync::Notify>,
    permit: Option<Permit>,
    write: bool,
    /// Where a complete small answer is kept: the cache, its key, the tables read.
    cache: Option<(Arc<crate::cache::ResultsCache>, String, Vec<String>)>,
    announced: SchemaRef,
}

impl Run<'_> {
    fn batches(self, executed: Executed) -> Running {
        let schema = executed.batches.schema();
        let batches: BoxStream<'static, _> = executed.batches.boxed();
        let batches = match self.cache {
            Some((cache, key, objects)) => {
                stream::kept(batches, cache, key, objects, schema.clone(), Ok)
            }
            None => batches,
        };
        let batches = stream::guarded(batches, self.engine, self.started, self.cancel);
        let written = self
            .write
            .then_some(crate::writes::rows_written as fn(&RecordBatch) -> u64);
        let batches = stream::logged(
            batches,
            self.id.clone(),
            self.started,
            self.record,
            self.permit,
            written,
        );
        Running {
            id: self.id,
            schema: schema.clone(),
            batches: Box::pin(RecordBatchStreamAdapter::new(schema, batches)),
        }
    }

    fn frames(self, relay: Relay) -> Relayed {
        let frames = relay.frames;
        let frames = match self.cache {
            Some((cache, key, objects)) => {
                // Kept in the announced types, as an answer that ran here would be.
                let (client, announced) = (relay.schema.clone(), self.announced.clone());
                let target = crate::result_schema::conformed_schema(&client, &announced);
                stream::kept(frames, cache, key, objects, target.clone(), move |kept| {
                    let mut decoder = quiver_worker::peer_data::PeerDecoder::new();
                    decoder.decode(&schema_message(&client))?;
                    kept.iter()
                        .filter_map(|f| decoder.decode(&f.data).transpose())
                        .map(|b| crate::result_schema::cast_batch(&b?, &target))
                        .collect()
                })
            }
            None => frames,
        };
        let frames = stream::guarded(frames, self.engine, self.started, self.cancel);
        let frames = stream::logged(
            frames,
            self.id.clone(),
            self.started,
            self.record,
            self.permit,
            None,
        );
        Relayed {
            schema: relay.schema,
            frames: frames.boxed(),
        }
    }
}

/// The Flight message that announces `schema`.
pub fn schema_message(schema: &datafusion::arrow::datatypes::Schema) -> arrow_flight::FlightData {
    let options = datafusion::arrow::ipc::writer::IpcWriteOptions::default();
    arrow_flight::SchemaAsIpc::new(schema, &options).into()
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
