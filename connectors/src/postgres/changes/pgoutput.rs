//! Decoder of PostgreSQL's `pgoutput` logical replication messages (protocol
//! version 1, as documented in "Logical Replication Message Formats").
//!
//! The replication client hands over each `XLogData` payload; this turns it into
//! a [`Message`]. Column values stay as the server sent them: with the slot's
//! `binary 'true'` option they are in the same binary form as `COPY … (FORMAT
//! BINARY)`, so `types::append` turns them into Arrow values as it does for scans.
//! Nothing here trusts a length from the wire: a short or malformed message is an
//! error naming what was being read, never a panic.

use bytes::Bytes;

/// A position in the write-ahead log.
pub type Lsn = u64;

/// One column value of a row in a change.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Datum {
    Null,
    /// A TOASTed value the change did not touch: the server does not send it.
    Unchanged,
    Text(Bytes),
    Binary(Bytes),
}

/// A column of a [`Relation`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RelationColumn {
    /// Part of the replica identity (the primary key, unless set otherwise).
    pub key: bool,
    pub name: String,
    pub type_oid: u32,
    pub type_modifier: i32,
}

/// A table's shape, sent before the first change to it in a session and again
/// after it changes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relation {
    pub oid: u32,
    pub namespace: String,
    pub name: String,
    /// `d` default (primary key), `n` nothing, `f` full, `i` an index.
    pub replica_identity: u8,
    pub columns: Vec<RelationColumn>,
}

/// One decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    Begin {
        final_lsn: Lsn,
        /// Microseconds since 2000-01-01 UTC.
        commit_time: i64,
        xid: u32,
    },
    Commit {
        commit_lsn: Lsn,
        end_lsn: Lsn,
        commit_time: i64,
    },
    Origin,
    Relation(Relation),
    Type,
    Insert {
        relation: u32,
        new: Vec<Datum>,
    },
    Update {
        relation: u32,
        /// The old key (`K`) or whole old row (`O`, with `REPLICA IDENTITY FULL`),
        /// sent when the key changed or the identity is full.
        old: Option<Vec<Datum>>,
        new: Vec<Datum>,
    },
    Delete {
        relation: u32,
        /// The old key, or the whole old row with `REPLICA IDENTITY FULL`.
        old: Vec<Datum>,
    },
    Truncate {
        relations: Vec<u32>,
    },
    /// `pg_logical_emit_message` (only with the slot's `messages` option).
    Logical,
}

/// What is wrong with a message.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("malformed pgoutput message: {0}")]
pub struct DecodeError(String);

/// Decodes one `XLogData` payload.
pub fn decode(payload: &Bytes) -> Result<Message, DecodeError> {
    let mut r = Reader {
        buf: payload,
        at: 0,
    };
    let tag = r.u8("message type")?;
    let message = match tag {
        b'B' => Message::Begin {
            final_lsn: r.u64("Begin final LSN")?,
            commit_time: r.i64("Begin timestamp")?,
            xid: r.u32("Begin xid")?,
        },
        b'C' => {
            let _flags = r.u8("Commit flags")?;
            Message::Commit {
                commit_lsn: r.u64("Commit LSN")?,
                end_lsn: r.u64("Commit end LSN")?,
                commit_time: r.i64("Commit timestamp")?,
            }
        }
        b'O' => {
            r.u64("Origin LSN")?;
            r.string("Origin name")?;
            Message::Origin
        }
        b'R' => {
            let oid = r.u32("Relation OID")?;
            let namespace = r.string("Relation namespace")?;
            let name = r.string("Relation name")?;
            let replica_identity = r.u8("Relation replica identity")?;
            let n = r.u16("Relation column count")?;
            let mut columns = Vec::with_capacity(usize::from(n).min(1600));
            for _ in 0..n {
                columns.push(RelationColumn {
                    key: r.u8("column flags")? & 1 == 1,
                    name: r.string("column name")?,
                    type_oid: r.u32("column type")?,
                    type_modifier: r.i32("column type modifier")?,
                });
            }
            Message::Relation(Relation {
                oid,
                namespace,
                name,
                replica_identity,
                columns,
            })
        }
        b'Y' => {
            r.u32("Type OID")?;
            r.string("Type namespace")?;
            r.string("Type name")?;
            Message::Type
        }
        b'I' => {
            let relation = r.u32("Insert relation")?;
            r.expect(b'N', "Insert new tuple marker")?;
            Message::Insert {
                relation,
                new: r.tuple()?,
            }
        }
        b'U' => {
            let relation = r.u32("Update relation")?;
            let old = match r.u8("Update tuple marker")? {
                b'K' | b'O' => {
                    let old = r.tuple()?;
                    r.expect(b'N', "Update new tuple marker")?;
                    Some(old)
                }
                b'N' => None,
                other => return Err(r.error(format!("Update tuple marker {other:#04x}"))),
            };
            Message::Update {
                relation,
                old,
                new: r.tuple()?,
            }
        }
        b'D' => {
            let relation = r.u32("Delete relation")?;
            match r.u8("Delete tuple marker")? {
                b'K' | b'O' => {}
                other => return Err(r.error(format!("Delete tuple marker {other:#04x}"))),
            }
            Message::Delete {
                relation,
                old: r.tuple()?,
            }
        }
        b'T' => {
            let n = r.u32("Truncate relation count")?;
            let _options = r.u8("Truncate options")?;
            let mut relations = Vec::with_capacity((n as usize).min(1024));
            for _ in 0..n {
                relations.push(r.u32("Truncate relation")?);
            }
            Message::Truncate { relations }
        }
        b'M' => Message::Logical,
        other => return Err(r.error(format!("unknown message type {other:#04x}"))),
    };
    Ok(message)
}

struct Reader<'a> {
    buf: &'a Bytes,
    at: usize,
}

impl Reader<'_> {
    fn error(&self, what: String) -> DecodeError {
        DecodeError(format!("{what} at byte {}", self.at))
    }

    fn take(&mut self, n: usize, what: &str) -> Result<&[u8], DecodeError> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        match end {
            Some(end) => {
                let s = &self.buf[self.at..end];
                self.at = end;
                Ok(s)
            }
            None => Err(self.error(format!("{what} needs {n} bytes, the message ends"))),
        }
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N], DecodeError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, DecodeError> {
        Ok(self.array::<1>(what)?[0])
    }
    fn u16(&mut self, what: &str) -> Result<u16, DecodeError> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }
    fn u32(&mut self, what: &str) -> Result<u32, DecodeError> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }
    fn i32(&mut self, what: &str) -> Result<i32, DecodeError> {
        Ok(i32::from_be_bytes(self.array(what)?))
    }
    fn u64(&mut self, what: &str) -> Result<u64, DecodeError> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }
    fn i64(&mut self, what: &str) -> Result<i64, DecodeError> {
        Ok(i64::from_be_bytes(self.array(what)?))
    }

    fn expect(&mut self, byte: u8, what: &str) -> Result<(), DecodeError> {
        match self.u8(what)? {
            b if b == byte => Ok(()),
            b => Err(self.error(format!("{what}: {b:#04x}, expected '{}'", byte as char))),
        }
    }

    /// A NUL-terminated string.
    fn string(&mut self, what: &str) -> Result<String, DecodeError> {
        let rest = &self.buf[self.at..];
        let Some(len) = rest.iter().position(|&b| b == 0) else {
            return Err(self.error(format!("{what} is not terminated")));
        };
        let s = String::from_utf8_lossy(&rest[..len]).into_owned();
        self.at += len + 1;
        Ok(s)
    }

    fn tuple(&mut self) -> Result<Vec<Datum>, DecodeError> {
        let n = self.u16("tuple column count")?;
        let mut datums = Vec::with_capacity(usize::from(n).min(1600));
        for _ in 0..n {
            let datum = match self.u8("column kind")? {
                b'n' => Datum::Null,
                b'u' => Datum::Unchanged,
                kind @ (b't' | b'b') => {
                    let len = self.u32("column length")? as usize;
                    let start = self.at;
                    self.take(len, "column value")?;
                    let value = self.buf.slice(start..start + len);
                    match kind {
                        b't' => Datum::Text(value),
                        _ => Datum::Binary(value),
                    }
                }
                other => return Err(self.error(format!("column kind {other:#04x}"))),
            };
            datums.push(datum);
        }
        Ok(datums)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Encodes a message as the server does, for the decoder's tests.
    pub(crate) fn encode(m: &Message) -> Vec<u8> {
        fn tuple(out: &mut Vec<u8>, datums: &[Datum]) {
            out.extend((datums.len() as u16).to_be_bytes());
            for d in datums {
                match d {
                    Datum::Null => out.push(b'n'),
                    Datum::Unchanged => out.push(b'u'),
                    Datum::Text(v) | Datum::Binary(v) => {
                        out.push(if matches!(d, Datum::Text(_)) {
                            b't'
                        } else {
                            b'b'
                        });
                        out.extend((v.len() as u32).to_be_bytes());
                        out.extend_from_slice(v);
                    }
                }
            }
        }
        fn string(out: &mut Vec<u8>, s: &str) {
            out.extend_from_slice(s.as_bytes());
            out.push(0);
        }
        let mut out = vec![];
        match m {
            Message::Begin {
                final_lsn,
                commit_time,
                xid,
            } => {
                out.push(b'B');
                out.extend(final_lsn.to_be_bytes());
                out.extend(commit_time.to_be_bytes());
                out.extend(xid.to_be_bytes());
            }
            Message::Commit {
                commit_lsn,
                end_lsn,
                commit_time,
            } => {
                out.push(b'C');
                out.push(0);
                out.extend(commit_lsn.to_be_bytes());
                out.extend(end_lsn.to_be_bytes());
                out.extend(commit_time.to_be_bytes());
            }
            Message::Relation(r) => {
                out.push(b'R');
                out.extend(r.oid.to_be_bytes());
                string(&mut out, &r.namespace);
                string(&mut out, &r.name);
                out.push(r.replica_identity);
                out.extend((r.columns.len() as u16).to_be_bytes());
                for c in &r.columns {
                    out.push(u8::from(c.key));
                    string(&mut out, &c.name);
                    out.extend(c.type_oid.to_be_bytes());
                    out.extend(c.type_modifier.to_be_bytes());
                }
            }
            Message::Insert { relation, new } => {
                out.push(b'I');
                out.extend(relation.to_be_bytes());
                out.push(b'N');
                tuple(&mut out, new);
            }
            Message::Update { relation, old, new } => {
                out.push(b'U');
                out.extend(relation.to_be_bytes());
                if let Some(old) = old {
                    out.push(b'O');
                    tuple(&mut out, old);
                }
                out.push(b'N');
                tuple(&mut out, new);
            }
            Message::Delete { relation, old } => {
                out.push(b'D');
                out.extend(relation.to_be_bytes());
                out.push(b'K');
                tuple(&mut out, old);
            }
            Message::Truncate { relations } => {
                out.push(b'T');
                out.extend((relations.len() as u32).to_be_bytes());
                out.push(0);
                for r in relations {
                    out.extend(r.to_be_bytes());
                }
            }
            Message::Origin | Message::Type | Message::Logical => {
                unreachable!("not generated")
            }
        }
        out
    }

    fn datum() -> impl Strategy<Value = Datum> {
        prop_oneof![
            Just(Datum::Null),
            Just(Datum::Unchanged),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Datum::Text(v.into())),
            proptest::collection::vec(any::<u8>(), 0..40).prop_map(|v| Datum::Binary(v.into())),
        ]
    }

    fn tuple() -> impl Strategy<Value = Vec<Datum>> {
        proptest::collection::vec(datum(), 0..8)
    }

    fn message() -> impl Strategy<Value = Message> {
        let name = "[a-z_]{1,12}";
        let column = (any::<bool>(), name, any::<u32>(), any::<i32>()).prop_map(
            |(key, name, type_oid, type_modifier)| RelationColumn {
                key,
                name,
                type_oid,
                type_modifier,
            },
        );
        prop_oneof![
            (any::<u64>(), any::<i64>(), any::<u32>()).prop_map(|(final_lsn, commit_time, xid)| {
                Message::Begin {
                    final_lsn,
                    commit_time,
                    xid,
                }
            }),
            (any::<u64>(), any::<u64>(), any::<i64>()).prop_map(
                |(commit_lsn, end_lsn, commit_time)| Message::Commit {
                    commit_lsn,
                    end_lsn,
                    commit_time,
                }
            ),
            (
                any::<u32>(),
                name,
                name,
                prop_oneof![Just(b'd'), Just(b'f'), Just(b'n'), Just(b'i')],
                proptest::collection::vec(column, 0..6)
            )
                .prop_map(|(oid, namespace, name, replica_identity, columns)| {
                    Message::Relation(Relation {
                        oid,
                        namespace,
                        name,
                        replica_identity,
                        columns,
                    })
                }),
            (any::<u32>(), tuple()).prop_map(|(relation, new)| Message::Insert { relation, new }),
            (any::<u32>(), proptest::option::of(tuple()), tuple())
                .prop_map(|(relation, old, new)| Message::Update { relation, old, new }),
            (any::<u32>(), tuple()).prop_map(|(relation, old)| Message::Delete { relation, old }),
            proptest::collection::vec(any::<u32>(), 0..5)
                .prop_map(|relations| Message::Truncate { relations }),
        ]
    }

    proptest! {
        /// Whatever the server can send decodes to what it meant.
        #[test]
        fn messages_round_trip(m in message()) {
            let bytes = Bytes::from(encode(&m));
            prop_assert_eq!(decode(&bytes), Ok(m));
        }

        /// A cut message is an error, never a panic or a wrong message.
        #[test]
        fn truncated_messages_are_errors(m in message(), cut in 0usize..64) {
            let full = encode(&m);
            prop_assume!(cut < full.len());
            let short = Bytes::from(full[..cut].to_vec());
            prop_assert!(decode(&short).is_err());
        }

        /// Arbitrary bytes never panic.
        #[test]
        fn garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..200)) {
            let _ = decode(&Bytes::from(bytes));
        }
    }

    #[test]
    fn errors_name_what_was_read() {
        let err = decode(&Bytes::from_static(b"I\0\0\0\x07X")).unwrap_err();
        assert!(err.to_string().contains("Insert new tuple marker"), "{err}");
        let err = decode(&Bytes::from_static(b"Z")).unwrap_err();
        assert!(
            err.to_string().contains("unknown message type 0x5a"),
            "{err}"
        );
    }
}
