//! Quiver's errors as PostgreSQL errors: a SQLSTATE a client can act on, the
//! message, and for syntax errors the position in the statement.

use pgwire::error::{ErrorInfo, PgWireError};
use tonic::{Code, Status};

/// The SQLSTATE for an error, from its gRPC code and message.
pub fn sqlstate(code: Code, message: &str) -> &'static str {
    let m = message.to_ascii_lowercase();
    match code {
        Code::PermissionDenied => "42501",
        Code::Unauthenticated => "28000",
        Code::Cancelled => "57014",
        Code::ResourceExhausted if m.contains("query_timeout") => "57014",
        Code::ResourceExhausted => "53000",
        Code::Unimplemented => "0A000",
        Code::InvalidArgument | Code::NotFound | Code::FailedPrecondition => {
            if m.contains("parsererror") || m.contains("sql error") || m.contains("nested too deeply") {
                "42601"
            } else if m.contains("table") && (m.contains("not found") || m.contains("doesn't exist")) {
                "42P01"
            } else if m.contains("no field named") || m.contains("column") && m.contains("not found") {
                "42703"
            } else if m.contains("invalid function") || m.contains("function") && m.contains("not found") {
                "42883"
            } else if m.contains("parameter") {
                "22023"
            } else if m.contains("not supported") || m.contains("unsupported") || m.contains("only queries") {
                "0A000"
            } else if m.contains("cast") || m.contains("cannot be converted") {
                "22P02"
            } else if m.contains("divide by zero") || m.contains("division by zero") {
                "22012"
            } else {
                "42000"
            }
        }
        Code::Unavailable => "08006",
        _ => "XX000",
    }
}

/// A PostgreSQL error response for `status`; `sql` gives syntax errors their position.
pub fn to_pg(status: &Status, sql: Option<&str>) -> PgWireError {
    let code = sqlstate(status.code(), status.message());
    let mut info = ErrorInfo::new("ERROR".into(), code.into(), status.message().to_string());
    if let (Some(sql), "42601") = (sql, code) {
        info.position = position(status.message(), sql).map(|p| p.to_string());
    }
    PgWireError::UserError(Box::new(info))
}

/// An error with a SQLSTATE of our choosing.
pub fn user_error(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("ERROR".into(), code.into(), message.into())))
}

/// A FATAL error: the connection ends.
pub fn fatal(code: &str, message: impl Into<String>) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new("FATAL".into(), code.into(), message.into())))
}

/// The 1-based character position sqlparser's "at Line: L, Column: C" points at.
fn position(message: &str, sql: &str) -> Option<usize> {
    let at = message.rfind("Line: ")?;
    let rest = &message[at + "Line: ".len()..];
    let (line, rest) = rest.split_once(", Column: ")?;
    let line: usize = line.trim().parse().ok()?;
    let column: usize = rest.chars().take_while(char::is_ascii_digit).collect::<String>().parse().ok()?;
    let before: usize = sql.split('\n').take(line.saturating_sub(1)).map(|l| l.chars().count() + 1).sum();
    Some(before + column)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_for_common_errors() {
        assert_eq!(sqlstate(Code::InvalidArgument, "SQL error: ParserError(\"Expected: an expression, found: FROM at Line: 1, Column: 8\")"), "42601");
        assert_eq!(sqlstate(Code::InvalidArgument, "Error during planning: table 'quiver.tpch.nope' not found"), "42P01");
        assert_eq!(sqlstate(Code::PermissionDenied, "access denied"), "42501");
        assert_eq!(sqlstate(Code::InvalidArgument, "Schema error: No field named zz."), "42703");
        assert_eq!(sqlstate(Code::Cancelled, "query cancelled on request"), "57014");
        assert_eq!(sqlstate(Code::ResourceExhausted, "query cancelled: it ran longer than server.query_timeout_secs"), "57014");
    }

    #[test]
    fn positions_count_lines_and_columns() {
        assert_eq!(position("... at Line: 1, Column: 8\")", "SELECT FROM t"), Some(8));
        assert_eq!(position("at Line: 2, Column: 3", "SELECT 1\nFRM t"), Some(12));
        assert_eq!(position("no position here", "x"), None);
    }
}
