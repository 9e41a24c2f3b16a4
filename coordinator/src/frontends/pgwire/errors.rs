//! Quiver's errors as PostgreSQL errors: the SQLSTATE of the error's kind
//! (`quiver_worker::status::ErrorKind`, carried in the status), the message, and
//! for syntax errors the position in the statement.

use pgwire::error::{ErrorInfo, PgWireError};
use quiver_worker::status::{kind_of, ErrorKind};
use tonic::Status;

/// A PostgreSQL error response for `status`; `sql` gives syntax errors their position.
pub fn to_pg(status: &Status, sql: Option<&str>) -> PgWireError {
    let kind = kind_of(status);
    let mut info = ErrorInfo::new(
        "ERROR".into(),
        kind.sqlstate().into(),
        status.message().to_string(),
    );
    if let (Some(sql), ErrorKind::SyntaxError) = (sql, kind) {
        info.position = position(status.message(), sql).map(|p| p.to_string());
    }
    PgWireError::UserError(Box::new(info))
}

/// An error with a SQLSTATE of our choosing.
pub fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "ERROR".into(),
        code.into(),
        message.into(),
    )))
}

/// A FATAL error: the connection ends.
pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message.into(),
    )))
}

/// The 1-based character position sqlparser's "at Line: L, Column: C" points at.
fn position(message: &str, sql: &str) -> Option<usize> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let line: usize = line.trim().parse().ok()?;
    let column: usize = rest
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .ok()?;
    let before: usize = sql
        .split('\n')
        .take(line.saturating_sub(1))
        .map(|l| l.chars().count() + 1)
        .sum();
    Some(before + column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_count_lines_and_columns() {
        assert_eq!(
            position("... at Line: 1, Column: 8\")", "SELECT FROM t"),
            Some(8)
        );
        assert_eq!(
            position("at Line: 2, Column: 3", "SELECT 1\nFRM t"),
            Some(12)
        );
        assert_eq!(position("no position here", "x"), None);
    }
}
