//! `COPY (query) TO STDOUT` and `COPY table [(columns)] TO STDOUT`: a query's
//! rows in PostgreSQL's COPY formats, text (the default), CSV (with `HEADER`,
//! `DELIMITER`, `NULL`, `QUOTE`) or binary, as psql's `\copy … to`, psycopg's
//! `cursor.copy()` and psycopg2's `copy_expert` read them. Values are encoded by
//! arrow-pg, the same as in query results.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use bytes::{BufMut, BytesMut};
use datafusion::arrow::array::RecordBatch;
use datafusion::sql::sqlparser::ast::{
    CopyLegacyCsvOption, CopyLegacyOption, CopyOption, CopySource, CopyTarget, Statement,
};
use futures::{Stream, StreamExt};
use pgwire::api::results::{CopyCsvOptions, CopyEncoder, CopyResponse, FieldInfo};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::copy::CopyData;

use super::errors::user_error;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Format {
    Text,
    Csv,
    Binary,
}

/// A `COPY … TO STDOUT`: the query to run and how to write its rows.
#[derive(Clone, Debug)]
pub struct CopyOut {
    pub query: Statement,
    format: Format,
    header: bool,
    delimiter: Option<char>,
    null: Option<String>,
    quote: Option<char>,
}

impl CopyOut {
    /// The statement as a `COPY … TO STDOUT`, None for any other statement; an
    /// error for a `COPY` Quiver does not run (`FROM STDIN`, to a server file).
    pub fn of(statement: &Statement) -> Option<PgWireResult<Self>> {
        let Statement::Copy {
            source,
            to,
            target,
            options,
            legacy_options,
            ..
        } = statement
        else {
            return None;
        };
        if !*to {
            return Some(Err(user_error("0A000", "COPY … FROM is not supported: write with INSERT, CREATE TABLE … AS or Flight SQL bulk ingest")));
        }
        if !matches!(target, CopyTarget::Stdout) {
            return Some(Err(to_file_refused()));
        }
        let query = match source {
            CopySource::Query(q) => Statement::Query(q.clone()),
            CopySource::Table {
                table_name,
                columns,
            } => {
                let list = match columns.is_empty() {
                    true => "*".to_string(),
                    false => columns
                        .iter()
                        .map(|c| c.to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                };
                let sql = format!("SELECT {list} FROM {table_name}");
                let dialect = datafusion::sql::sqlparser::dialect::PostgreSqlDialect {};
                match datafusion::sql::sqlparser::parser::Parser::parse_sql(&dialect, &sql) {
                    Ok(mut s) if s.len() == 1 => s.remove(0),
                    _ => {
                        return Some(Err(user_error(
                            "42601",
                            format!("cannot read {table_name} for COPY"),
                        )))
                    }
                }
            }
        };
        let mut copy = CopyOut {
            query,
            format: Format::Text,
            header: false,
            delimiter: None,
            null: None,
            quote: None,
        };
        for o in options {
            match o {
                CopyOption::Format(f) => {
                    copy.format = match f.value.to_ascii_lowercase().as_str() {
                        "text" => Format::Text,
                        "csv" => Format::Csv,
                        "binary" => Format::Binary,
                        other => {
                            return Some(Err(user_error(
                                "22023",
                                format!("COPY format \"{other}\" not recognized"),
                            )))
                        }
                    }
                }
                CopyOption::Header(h) => copy.header = *h,
                CopyOption::Delimiter(d) => copy.delimiter = Some(*d),
                CopyOption::Null(n) => copy.null = Some(n.clone()),
                CopyOption::Quote(q) => copy.quote = Some(*q),
                CopyOption::Encoding(e)
                    if e.eq_ignore_ascii_case("utf8") || e.eq_ignore_ascii_case("utf-8") => {}
                other => {
                    return Some(Err(user_error(
                        "0A000",
                        format!("COPY option {other} is not supported"),
                    )))
                }
            }
        }
        for o in legacy_options {
            match o {
                CopyLegacyOption::Binary => copy.format = Format::Binary,
                CopyLegacyOption::Csv(csv) => {
                    copy.format = Format::Csv;
                    for c in csv {
                        match c {
                            CopyLegacyCsvOption::Header => copy.header = true,
                            CopyLegacyCsvOption::Quote(q) => copy.quote = Some(*q),
                            other => {
                                return Some(Err(user_error(
                                    "0A000",
                                    format!("COPY option {other} is not supported"),
                                )))
                            }
                        }
                    }
                }
                CopyLegacyOption::Header => copy.header = true,
                CopyLegacyOption::Delimiter(d) => copy.delimiter = Some(*d),
                CopyLegacyOption::Null(n) => copy.null = Some(n.clone()),
                other => {
                    return Some(Err(user_error(
                        "0A000",
                        format!("COPY option {other} is not supported"),
                    )))
                }
            }
        }
        if copy.header && copy.format != Format::Csv {
            return Some(Err(user_error(
                "0A000",
                "COPY HEADER is available only in CSV mode",
            )));
        }
        Some(Ok(copy))
    }

    fn encoder(&self, fields: Arc<Vec<FieldInfo>>) -> CopyEncoder {
        match self.format {
            Format::Binary => CopyEncoder::new_binary(fields),
            Format::Text => {
                let mut o = pgwire::api::results::CopyTextOptions::default();
                if let Some(d) = self.delimiter {
                    o.delimiter = d.to_string().into();
                }
                if let Some(n) = &self.null {
                    o.null_string = n.as_str().into();
                }
                CopyEncoder::new_text(fields, o)
            }
            Format::Csv => {
                let mut o = CopyCsvOptions::default();
                if let Some(d) = self.delimiter {
                    o.delimiter = d.to_string().into();
                }
                if let Some(n) = &self.null {
                    o.null_string = n.as_str().into();
                }
                if let Some(q) = self.quote {
                    o.quote = q.to_string().into();
                    o.escape = q.to_string().into();
                }
                CopyEncoder::new_csv(fields, o)
            }
        }
    }

    /// The CSV header line: the column names, quoted where they need it.
    fn header_line(&self, fields: &[FieldInfo]) -> Vec<u8> {
        let delimiter = self.delimiter.unwrap_or(',');
        let quote = self.quote.unwrap_or('"');
        let names: Vec<String> = fields
            .iter()
            .map(|f| {
                let n = f.name();
                match n.contains(delimiter)
                    || n.contains(quote)
                    || n.contains('\n')
                    || n.contains('\r')
                {
                    true => format!(
                        "{quote}{}{quote}",
                        n.replace(quote, &format!("{quote}{quote}"))
                    ),
                    false => n.to_string(),
                }
            })
            .collect();
        format!("{}\n", names.join(&delimiter.to_string())).into_bytes()
    }

    /// The COPY response streaming `batches` (already in client types).
    pub fn respond(
        &self,
        fields: Arc<Vec<FieldInfo>>,
        batches: impl Stream<Item = PgWireResult<RecordBatch>> + Send + 'static,
    ) -> CopyResponse {
        let binary = self.format == Format::Binary;
        let columns = fields.len();
        let header = (self.header && self.format == Format::Csv).then(|| self.header_line(&fields));
        // What a result without rows still sends: its CSV header, or binary COPY's signature.
        let when_empty = match binary {
            true => Some(binary_signature()),
            false => header.clone(),
        };
        let any = Arc::new(AtomicBool::new(false));
        let seen = any.clone();
        let encoder = self.encoder(fields.clone());
        let rows = batches
            .scan((encoder, header), move |(encoder, header), batch| {
                let out: Vec<PgWireResult<CopyData>> = match batch {
                    Err(e) => vec![Err(e)],
                    Ok(b) => {
                        let mut out = Vec::with_capacity(b.num_rows());
                        let schema = b.schema();
                        for row in 0..b.num_rows() {
                            for (col, f) in fields.iter().enumerate() {
                                let encoded = arrow_pg::encoder::encode_value(
                                    encoder,
                                    b.column(col),
                                    row,
                                    schema.field(col),
                                    f,
                                );
                                if let Err(e) = encoded {
                                    out.push(Err(e));
                                    return futures::future::ready(Some(out));
                                }
                            }
                            let mut data = encoder.take_copy();
                            // The header goes with the first row, so the row count stays exact.
                            if let Some(h) = header.take() {
                                let mut joined = BytesMut::from(&h[..]);
                                joined.put_slice(&data.data);
                                data = CopyData::new(joined.freeze());
                            }
                            seen.store(true, Ordering::Relaxed);
                            out.push(Ok(data));
                        }
                        out
                    }
                };
                futures::future::ready(Some(out))
            })
            .flat_map(futures::stream::iter);
        let tail = futures::stream::once(async move {
            match (any.load(Ordering::Relaxed), when_empty) {
                (false, Some(bytes)) => Some(Ok(CopyData::new(bytes.into()))),
                _ => None,
            }
        })
        .filter_map(futures::future::ready);
        CopyResponse::new(if binary { 1 } else { 0 }, columns, rows.chain(tail))
    }
}

/// Binary COPY's signature, flags and header extension: what precedes the first
/// row (the encoder writes it with the first row; an empty result needs it alone).
fn binary_signature() -> Vec<u8> {
    let mut b = BytesMut::new();
    b.put_slice(b"PGCOPY\n\xff\r\n\0");
    b.put_i32(0);
    b.put_i32(0);
    b.to_vec()
}

/// `COPY … TO 'file'` writes files through a writable source (docs/writes.md):
/// DataFusion's COPY, which PostgreSQL's parser does not read.
pub(super) fn to_file_refused() -> PgWireError {
    user_error(
        "0A000",
        "COPY … TO a file is not run on the PostgreSQL port: send it through Flight SQL or the HTTP API (POST /v1/sql); COPY … TO STDOUT works here",
    )
}

/// Whether `sql` is a `COPY … TO '<file>'` (what the PostgreSQL parser may not read
/// once its option list is rewritten into DataFusion's form).
pub(super) fn is_copy_to_file(sql: &str) -> bool {
    use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
    use datafusion::sql::sqlparser::keywords::Keyword;
    use datafusion::sql::sqlparser::tokenizer::{Token, Tokenizer};
    let Ok(tokens) = Tokenizer::new(&PostgreSqlDialect {}, sql).tokenize() else {
        return false;
    };
    let mut words = tokens.iter().filter(|t| !matches!(t, Token::Whitespace(_)));
    if !matches!(words.next(), Some(Token::Word(w)) if w.keyword == Keyword::COPY) {
        return false;
    }
    let rest: Vec<&Token> = words.collect();
    rest.windows(2).any(|w| {
        matches!(w[0], Token::Word(t) if t.keyword == Keyword::TO)
            && matches!(w[1], Token::SingleQuotedString(_))
    })
}
