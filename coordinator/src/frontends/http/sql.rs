//! `POST /v1/sql`: the statement is the request body; the result streams back as
//! JSON (an array of row objects, the default), JSON lines (`application/x-ndjson`),
//! CSV (`text/csv`, with a header row) or an Arrow IPC stream
//! (`application/vnd.apache.arrow.stream`), batch by batch as the query produces
//! them. `?format=json|jsonl|csv|arrow` picks the format where setting `Accept` is
//! awkward. Same authentication, limits, query log and audit as the other doors; the
//! query id comes back in `x-quiver-query-id`. An error before the first row is an
//! HTTP error with `{"error": ...}`; one after it cuts the response short.

use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::Schema;
use futures::StreamExt;
use quiver_worker::status::from_datafusion;

use super::{error_response, query_error, Peer, Shared};
use crate::frontends::run;
use quiver_proto::client_types::{flight_schema as client_schema, to_client_types};

pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";

#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) enum Format {
    Json,
    JsonLines,
    Csv,
    Arrow,
}

impl Format {
    /// `?format=`, when given.
    fn from_query(query: &str) -> Option<Result<Format, String>> {
        let value = query.split('&').find_map(|kv| kv.strip_prefix("format="))?;
        Some(match value {
            "json" => Ok(Format::Json),
            "jsonl" | "ndjson" => Ok(Format::JsonLines),
            "csv" => Ok(Format::Csv),
            "arrow" => Ok(Format::Arrow),
            other => Err(format!(
                "unknown format '{other}': use json, jsonl, csv or arrow"
            )),
        })
    }

    /// The first format `Accept` names that we serve; JSON when none.
    pub(super) fn from_accept(headers: &HeaderMap) -> Format {
        let accept = headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        for kind in accept.split(',').map(|k| {
            k.split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_ascii_lowercase()
        }) {
            match kind.as_str() {
                ARROW_STREAM | "application/vnd.apache.arrow.file" => return Format::Arrow,
                "text/csv" => return Format::Csv,
                "application/x-ndjson" | "application/jsonl" => return Format::JsonLines,
                "application/json" => return Format::Json,
                _ => {}
            }
        }
        Format::Json
    }

    fn content_type(self) -> &'static str {
        match self {
            Format::Json => "application/json",
            Format::JsonLines => "application/x-ndjson",
            Format::Csv => "text/csv; charset=utf-8",
            Format::Arrow => ARROW_STREAM,
        }
    }
}

pub(super) async fn post_sql(
    state: Shared,
    peer: Peer,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: Result<Bytes, axum::extract::rejection::BytesRejection>,
) -> Response {
    let http = state.0;
    // Too large, or cut off: the same JSON error as every other failure.
    let body = match body {
        Ok(b) => b,
        Err(rejection) => return error_response(rejection.status(), &rejection.body_text()),
    };
    let caller = match http.caller(&headers, peer.0) {
        Ok(c) => c,
        Err(r) => return r,
    };
    let format = match Format::from_query(uri.query().unwrap_or("")) {
        Some(Ok(f)) => f,
        Some(Err(message)) => return error_response(StatusCode::BAD_REQUEST, &message),
        None => Format::from_accept(&headers),
    };
    let Ok(sql) = String::from_utf8(body.to_vec()) else {
        return error_response(
            StatusCode::BAD_REQUEST,
            "the request body must be the statement as UTF-8 text",
        );
    };
    let sql = sql.trim().trim_end_matches(';').to_string();
    if sql.is_empty() {
        return error_response(
            StatusCode::BAD_REQUEST,
            "empty statement: send the SQL as the request body",
        );
    }
    let engine = &http.engine;
    let session = engine.session(engine.access(caller.user.as_ref()));
    let tracked = run::begin(engine, session, &caller, &sql).by_text(&sql);
    let running = match tracked.cached() {
        Ok(running) => Ok(running),
        Err(tracked) => {
            let planned = tracked.session().plan(&sql).await;
            tracked.execute(planned).await
        }
    };
    let running = match running {
        Ok(r) => r,
        Err(status) => return query_error(&status),
    };
    let schema = Arc::new(client_schema(&running.schema));
    let id = running.id.clone();
    let mut batches = running.batches;
    // The first batch decides between an HTTP error and a 200.
    let first = match batches.next().await {
        Some(Err(e)) => {
            let status = from_datafusion(&e);
            return query_error(&status);
        }
        other => other,
    };
    let batches = futures::stream::iter(first).chain(batches);
    let encoded = encode(format, schema, batches);
    let mut response = Body::from_stream(encoded).into_response();
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static(format.content_type()),
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        h.insert("x-quiver-query-id", v);
    }
    response
}

type Chunk = Result<Bytes, std::io::Error>;

/// Encodes batches as they come, so a large result streams, then the format's
/// closing bytes (`]`, Arrow's end-of-stream marker).
pub(super) fn encode(
    format: Format,
    schema: Arc<Schema>,
    batches: impl futures::Stream<Item = datafusion::error::Result<RecordBatch>> + Send + 'static,
) -> impl futures::Stream<Item = Chunk> + Send + 'static {
    let encoder = Encoder::new(format, schema);
    let state = Some((Box::pin(batches), encoder));
    futures::stream::unfold(state, |state| async move {
        let (mut batches, mut encoder) = state?;
        match batches.next().await {
            Some(Ok(b)) => {
                let chunk = to_client_types(b)
                    .map_err(|e| e.to_string())
                    .and_then(|b| encoder.batch(&b))
                    .map(Bytes::from)
                    .map_err(std::io::Error::other);
                let next = chunk.is_ok().then_some((batches, encoder));
                Some((chunk, next))
            }
            Some(Err(e)) => Some((
                Err(std::io::Error::other(
                    from_datafusion(&e).message().to_string(),
                )),
                None,
            )),
            None => Some((
                encoder
                    .finish()
                    .map(Bytes::from)
                    .map_err(std::io::Error::other),
                None,
            )),
        }
    })
}

/// One response's encoder; it keeps what the format needs between batches.
pub(super) struct Encoder {
    format: Format,
    schema: Arc<Schema>,
    /// Rows written so far (JSON needs commas between them, CSV one header).
    rows: usize,
    arrow: Option<datafusion::arrow::ipc::writer::StreamWriter<Vec<u8>>>,
}

impl Encoder {
    pub(super) fn new(format: Format, schema: Arc<Schema>) -> Self {
        Self {
            format,
            schema,
            rows: 0,
            arrow: None,
        }
    }

    pub(super) fn batch(&mut self, batch: &RecordBatch) -> Result<Vec<u8>, String> {
        let err = |e: datafusion::arrow::error::ArrowError| e.to_string();
        let mut out = vec![];
        match self.format {
            Format::Json | Format::JsonLines => {
                let batch = &decimals_as_text(batch).map_err(err)?;
                let mut lines = vec![];
                {
                    let mut w = datafusion::arrow::json::WriterBuilder::new()
                        .with_explicit_nulls(true)
                        .build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut lines);
                    w.write(batch).map_err(err)?;
                    w.finish().map_err(err)?;
                }
                if self.format == Format::JsonLines {
                    out = lines;
                } else {
                    // Raw newlines only separate rows: JSON escapes those in strings.
                    for row in lines.split(|b| *b == b'\n').filter(|r| !r.is_empty()) {
                        out.push(if self.rows == 0 { b'[' } else { b',' });
                        out.extend_from_slice(row);
                        self.rows += 1;
                    }
                }
            }
            Format::Csv => {
                let mut w = datafusion::arrow::csv::WriterBuilder::new()
                    .with_header(self.rows == 0)
                    .build(&mut out);
                w.write(batch).map_err(err)?;
                drop(w);
                self.rows += batch.num_rows().max(1);
            }
            Format::Arrow => {
                if self.arrow.is_none() {
                    self.arrow = Some(
                        datafusion::arrow::ipc::writer::StreamWriter::try_new(vec![], &self.schema)
                            .map_err(err)?,
                    );
                }
                if let Some(w) = self.arrow.as_mut() {
                    w.write(batch).map_err(err)?;
                    out = std::mem::take(w.get_mut());
                }
            }
        }
        Ok(out)
    }

    pub(super) fn finish(&mut self) -> Result<Vec<u8>, String> {
        let err = |e: datafusion::arrow::error::ArrowError| e.to_string();
        match self.format {
            Format::Json if self.rows == 0 => Ok(b"[]\n".to_vec()),
            Format::Json => Ok(b"]\n".to_vec()),
            Format::JsonLines => Ok(vec![]),
            // An empty result still names its columns.
            Format::Csv if self.rows == 0 => {
                self.batch(&RecordBatch::new_empty(self.schema.clone()))
            }
            Format::Csv => Ok(vec![]),
            Format::Arrow => {
                if self.arrow.is_none() {
                    self.arrow = Some(
                        datafusion::arrow::ipc::writer::StreamWriter::try_new(vec![], &self.schema)
                            .map_err(err)?,
                    );
                }
                let mut w = self.arrow.take().ok_or("no writer")?;
                w.finish().map_err(err)?;
                w.into_inner().map_err(err)
            }
        }
    }
}

/// Decimal columns as their exact text: a JSON number is a double to most
/// readers (JavaScript, jq), which rounds beyond 2^53, so `12345678901234567.89`
/// is sent as the string `"12345678901234567.89"`, as PostgreSQL's JSON does not but
/// Trino's and BigQuery's REST APIs do.
fn decimals_as_text(
    batch: &RecordBatch,
) -> Result<RecordBatch, datafusion::arrow::error::ArrowError> {
    use datafusion::arrow::datatypes::{DataType, Field};
    let is_decimal = |t: &DataType| {
        matches!(
            t,
            DataType::Decimal32(..)
                | DataType::Decimal64(..)
                | DataType::Decimal128(..)
                | DataType::Decimal256(..)
        )
    };
    if !batch
        .schema()
        .fields()
        .iter()
        .any(|f| is_decimal(f.data_type()))
    {
        return Ok(batch.clone());
    }
    let mut fields = vec![];
    let mut columns = vec![];
    for (f, c) in batch.schema().fields().iter().zip(batch.columns()) {
        match is_decimal(f.data_type()) {
            true => {
                fields.push(Field::new(f.name(), DataType::Utf8, true));
                columns.push(datafusion::arrow::compute::cast(c, &DataType::Utf8)?);
            }
            false => {
                fields.push(f.as_ref().clone());
                columns.push(c.clone());
            }
        }
    }
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Int64Array, StringArray};

    fn batch(ids: Vec<i64>, names: Vec<Option<&str>>) -> RecordBatch {
        RecordBatch::try_from_iter(vec![
            ("id", Arc::new(Int64Array::from(ids)) as _),
            ("name", Arc::new(StringArray::from(names)) as _),
        ])
        .expect("batch")
    }

    fn all(format: Format, batches: &[RecordBatch]) -> Vec<u8> {
        let mut e = Encoder::new(format, batches[0].schema());
        let mut out = vec![];
        for b in batches {
            out.extend(e.batch(b).expect("encode"));
        }
        out.extend(e.finish().expect("finish"));
        out
    }

    #[test]
    fn json_is_one_array_across_batches_with_nulls() {
        let out = all(
            Format::Json,
            &[
                batch(vec![1], vec![Some("a\nb")]),
                batch(vec![2, 3], vec![None, Some("c")]),
            ],
        );
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!([{"id":1,"name":"a\nb"},{"id":2,"name":null},{"id":3,"name":"c"}])
        );
        let empty = all(Format::Json, &[batch(vec![], vec![])]);
        assert_eq!(
            serde_json::from_slice::<serde_json::Value>(&empty).expect("json"),
            serde_json::json!([])
        );
    }

    #[test]
    fn json_sends_decimals_as_exact_strings() {
        use datafusion::arrow::array::Decimal128Array;
        let price = Decimal128Array::from(vec![Some(1234567890123456789), None])
            .with_precision_and_scale(20, 2)
            .expect("decimal");
        let b = RecordBatch::try_from_iter(vec![("price", Arc::new(price) as _)]).expect("batch");
        let out = all(Format::Json, &[b]);
        let v: serde_json::Value = serde_json::from_slice(&out).expect("valid JSON");
        assert_eq!(
            v,
            serde_json::json!([{"price": "12345678901234567.89"}, {"price": null}])
        );
    }

    #[test]
    fn csv_has_one_header_and_arrow_reads_back() {
        let batches = [
            batch(vec![1], vec![Some("x")]),
            batch(vec![2], vec![Some("y,z")]),
        ];
        assert_eq!(
            String::from_utf8(all(Format::Csv, &batches)).expect("utf8"),
            "id,name\n1,x\n2,\"y,z\"\n"
        );
        assert_eq!(
            String::from_utf8(all(Format::Csv, &[batch(vec![], vec![])])).expect("utf8"),
            "id,name\n"
        );
        let bytes = all(Format::Arrow, &batches);
        let reader = datafusion::arrow::ipc::reader::StreamReader::try_new(
            std::io::Cursor::new(bytes),
            None,
        )
        .expect("reader");
        let rows: usize = reader.map(|b| b.expect("batch").num_rows()).sum();
        assert_eq!(rows, 2);
    }

    #[test]
    fn accept_picks_the_format() {
        let with = |v: &str| {
            let mut h = HeaderMap::new();
            h.insert(header::ACCEPT, HeaderValue::from_str(v).expect("header"));
            Format::from_accept(&h)
        };
        assert_eq!(with("text/csv"), Format::Csv);
        assert_eq!(with("application/vnd.apache.arrow.stream"), Format::Arrow);
        assert_eq!(with("text/html, */*"), Format::Json);
        assert_eq!(Format::from_accept(&HeaderMap::new()), Format::Json);
        assert_eq!(Format::from_query("a=1&format=csv"), Some(Ok(Format::Csv)));
        assert!(Format::from_query("format=xlsx").is_some_and(|f| f.is_err()));
        assert!(Format::from_query("").is_none());
    }
}
