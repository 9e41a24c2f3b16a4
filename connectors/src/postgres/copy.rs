//! Incremental decoder of PostgreSQL's binary COPY stream into record batches.
//!
//! Chunks arrive with no regard to row boundaries; complete rows are decoded into
//! Arrow builders, and a batch is emitted every `batch_size` rows, so memory stays
//! bounded however large the table.

use std::sync::Arc;

use bytes::{Buf, BytesMut};
use datafusion::arrow::array::{ArrayBuilder, ArrayRef, RecordBatch};
use datafusion::arrow::datatypes::SchemaRef;

use super::types::{append, PgKind};

const SIGNATURE: &[u8] = b"PGCOPY\n\xff\r\n\0";

pub struct CopyDecoder {
    schema: SchemaRef,
    kinds: Vec<PgKind>,
    builders: Vec<Box<dyn ArrayBuilder>>,
    buf: BytesMut,
    header_done: bool,
    finished: bool,
    rows: usize,
    batch_size: usize,
}

impl CopyDecoder {
    /// `schema` must have one field per kind, of the kind's Arrow type.
    pub fn new(schema: SchemaRef, kinds: Vec<PgKind>, batch_size: usize) -> Self {
        let builders = kinds.iter().map(|k| k.builder(batch_size)).collect();
        Self {
            schema,
            kinds,
            builders,
            buf: BytesMut::new(),
            header_done: false,
            finished: false,
            rows: 0,
            batch_size,
        }
    }

    /// Adds a chunk and returns the batches it completed.
    pub fn push(&mut self, chunk: &[u8]) -> Result<Vec<RecordBatch>, String> {
        self.buf.extend_from_slice(chunk);
        let mut out = vec![];
        if !self.header_done {
            if self.buf.len() < SIGNATURE.len() + 8 {
                return Ok(out);
            }
            if &self.buf[..SIGNATURE.len()] != SIGNATURE {
                return Err("not a binary COPY stream".into());
            }
            let ext = u32::from_be_bytes([self.buf[15], self.buf[16], self.buf[17], self.buf[18]])
                as usize;
            if self.buf.len() < SIGNATURE.len() + 8 + ext {
                return Ok(out);
            }
            self.buf.advance(SIGNATURE.len() + 8 + ext);
            self.header_done = true;
        }
        while !self.finished {
            match self.row_len()? {
                None => break,
                Some(len) => {
                    let row = self.buf.split_to(len);
                    self.decode_row(&row)?;
                    if self.rows >= self.batch_size {
                        out.push(self.flush()?);
                    }
                }
            }
        }
        Ok(out)
    }

    /// The rows decoded since the last batch, at the end of the stream.
    pub fn finish(&mut self) -> Result<Option<RecordBatch>, String> {
        if !self.finished {
            return Err("COPY stream ended before its trailer".into());
        }
        if self.rows == 0 {
            return Ok(None);
        }
        self.flush().map(Some)
    }

    /// Length in bytes of the next complete row in the buffer, if it is all there.
    fn row_len(&mut self) -> Result<Option<usize>, String> {
        if self.buf.len() < 2 {
            return Ok(None);
        }
        let fields = i16::from_be_bytes([self.buf[0], self.buf[1]]);
        if fields == -1 {
            self.finished = true;
            self.buf.advance(2);
            return Ok(None);
        }
        if fields as usize != self.kinds.len() {
            return Err(format!(
                "row has {fields} fields, expected {}",
                self.kinds.len()
            ));
        }
        let mut pos = 2;
        for _ in 0..fields {
            let Some(len) = self.buf.get(pos..pos + 4) else {
                return Ok(None);
            };
            let len = i32::from_be_bytes([len[0], len[1], len[2], len[3]]);
            pos += 4 + len.max(0) as usize;
            if pos > self.buf.len() {
                return Ok(None);
            }
        }
        Ok(Some(pos))
    }

    fn decode_row(&mut self, row: &[u8]) -> Result<(), String> {
        let mut pos = 2;
        for (i, kind) in self.kinds.iter().enumerate() {
            let len = i32::from_be_bytes([row[pos], row[pos + 1], row[pos + 2], row[pos + 3]]);
            pos += 4;
            let value = if len < 0 {
                None
            } else {
                let v = &row[pos..pos + len as usize];
                pos += len as usize;
                Some(v)
            };
            append(self.builders[i].as_mut(), kind, value)
                .map_err(|e| format!("column {}: {e}", self.schema.field(i).name()))?;
        }
        self.rows += 1;
        Ok(())
    }

    fn flush(&mut self) -> Result<RecordBatch, String> {
        self.rows = 0;
        let columns: Vec<ArrayRef> = self.builders.iter_mut().map(|b| b.finish()).collect();
        RecordBatch::try_new(Arc::clone(&self.schema), columns).map_err(|e| e.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{Array, AsArray};
    use datafusion::arrow::datatypes::{Field, Int32Type, Schema};

    fn stream(rows: &[(Option<i32>, Option<&str>)]) -> Vec<u8> {
        let mut out = SIGNATURE.to_vec();
        out.extend([0u8; 8]);
        for (a, b) in rows {
            out.extend(2i16.to_be_bytes());
            match a {
                Some(a) => {
                    out.extend(4i32.to_be_bytes());
                    out.extend(a.to_be_bytes());
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
            match b {
                Some(b) => {
                    out.extend((b.len() as i32).to_be_bytes());
                    out.extend(b.as_bytes());
                }
                None => out.extend((-1i32).to_be_bytes()),
            }
        }
        out.extend((-1i16).to_be_bytes());
        out
    }

    fn decoder(batch: usize) -> CopyDecoder {
        let schema = Arc::new(Schema::new(vec![
            Field::new("a", PgKind::Int4.arrow_type(), true),
            Field::new("b", PgKind::Text.arrow_type(), true),
        ]));
        CopyDecoder::new(schema, vec![PgKind::Int4, PgKind::Text], batch)
    }

    #[test]
    fn any_chunking_gives_the_same_rows() {
        let rows: Vec<(Option<i32>, Option<&str>)> = (0..50)
            .map(|i| {
                (
                    if i % 7 == 0 { None } else { Some(i) },
                    if i % 5 == 0 { None } else { Some("xé") },
                )
            })
            .collect();
        let bytes = stream(&rows);
        for chunk in [1, 2, 3, 7, 64, bytes.len()] {
            let mut d = decoder(16);
            let mut batches = vec![];
            for c in bytes.chunks(chunk) {
                batches.extend(d.push(c).expect("push"));
            }
            batches.extend(d.finish().expect("finish"));
            assert_eq!(
                batches.iter().map(|b| b.num_rows()).sum::<usize>(),
                50,
                "chunk {chunk}"
            );
            assert!(batches.iter().all(|b| b.num_rows() <= 16));
            let a = batches[0].column(0).as_primitive::<Int32Type>();
            assert!(a.is_null(0));
            assert_eq!(a.value(1), 1);
        }
    }

    #[test]
    fn a_cut_stream_is_an_error() {
        let bytes = stream(&[(Some(1), Some("x"))]);
        let mut d = decoder(8);
        d.push(&bytes[..bytes.len() - 2]).expect("push");
        assert!(d.finish().is_err());
        assert!(decoder(8).push(b"definitely not a COPY stream").is_err());
    }
}
