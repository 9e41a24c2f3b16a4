//! A PostgreSQL table's changes, read from logical replication (`pgoutput`).
//!
//! [`ChangeSource`] sets a table up for it (a publication that names the table,
//! a logical replication slot that keeps the server's WAL until Quiver confirms
//! it, checks of the table's replica identity and column types), opens the
//! stream from a confirmed position ([`ChangeStream`]), and drops the slot again.
//! The stream yields whole committed transactions, so whoever applies them can
//! apply one transaction's changes together, and confirm the transaction's end
//! position only once they are durable (`ChangeStream::confirm`).
//!
//! The transport (replication connection, authentication, TLS, status updates
//! and keepalives) is the `pgwire-replication` crate's; the messages are decoded
//! here ([`pgoutput`]), and column values arrive in binary form, turned into
//! Arrow values by the same decoder as scans (`postgres::types`).

pub mod pgoutput;
mod rows;
mod slot;
mod stream;

pub use pgoutput::{Datum, Lsn, Relation};
pub use rows::{ChangeRows, DELETED_COLUMN};
pub use slot::{valid_name as valid_slot_name, ChangeSource, Prepared};
pub use stream::{Change, ChangeStream, Event, Transaction};

/// Why a table's changes cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum ChangesError {
    /// The table cannot be replicated as it is (no key, a column type Quiver
    /// cannot decode); the message says what to change.
    #[error("{0}")]
    Unsupported(String),
    /// An update left a large value out and the batch has no earlier value for
    /// it: the copy must be taken again.
    #[error("{0}")]
    MissingValue(String),
    /// The server refused or failed a statement.
    #[error("PostgreSQL: {0}")]
    Server(String),
    /// The replication stream broke or sent something unreadable.
    #[error("replication stream: {0}")]
    Stream(String),
    /// The source cannot be reached.
    #[error("cannot reach PostgreSQL: {0}")]
    Unreachable(String),
}

/// `0/16B3748`: how PostgreSQL writes a WAL position.
pub fn format_lsn(lsn: Lsn) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// Reads a position as PostgreSQL writes it.
pub fn parse_lsn(text: &str) -> Option<Lsn> {
    let (hi, lo) = text.trim().split_once('/')?;
    let hi = u64::from_str_radix(hi, 16).ok()?;
    let lo = u64::from_str_radix(lo, 16).ok()?;
    (hi <= u32::MAX as u64 && lo <= u32::MAX as u64).then_some((hi << 32) | lo)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn positions_round_trip_through_postgresql_text(lsn in any::<u64>()) {
            prop_assert_eq!(parse_lsn(&format_lsn(lsn)), Some(lsn));
        }
    }

    #[test]
    fn positions_read_as_postgresql_writes_them() {
        assert_eq!(parse_lsn("0/16B3748"), Some(0x16B3748));
        assert_eq!(parse_lsn("1/0"), Some(1 << 32));
        assert_eq!(parse_lsn("nope"), None);
        assert_eq!(parse_lsn("1/2/3"), None);
        assert_eq!(parse_lsn("100000000/0"), None);
    }
}
