//! Errors as gRPC statuses that carry their kind.
//!
//! An error is classified once, where it arises ([`from_datafusion`], or a
//! [`ErrorKind::status`] made by Quiver's own code), into an [`ErrorKind`]. The
//! kind travels in the status' metadata (`x-quiver-sqlstate`), across the
//! worker-to-coordinator hop too, and every door reads it back with [`kind_of`]:
//! PostgreSQL's SQLSTATE, the HTTP status and the Flight status all come from it,
//! never from the message's wording.

use datafusion::arrow::error::ArrowError;
use datafusion::common::SchemaError;
use datafusion::error::DataFusionError;
use tonic::metadata::MetadataValue;
use tonic::{Code, Status};

/// The metadata key (gRPC trailer) that carries an error's SQLSTATE.
pub const SQLSTATE_KEY: &str = "x-quiver-sqlstate";

/// What went wrong, in the terms clients act on; each has its PostgreSQL SQLSTATE.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorKind {
    /// 22012
    DivisionByZero,
    /// 22003
    NumericOutOfRange,
    /// 22P02: text that is not a value of the type (`'x'::int`).
    InvalidTextRepresentation,
    /// 22007
    InvalidDatetimeFormat,
    /// 22023: a parameter or argument of the wrong kind.
    InvalidParameterValue,
    /// 42601
    SyntaxError,
    /// 42P01
    UndefinedTable,
    /// 42703
    UndefinedColumn,
    /// 42883
    UndefinedFunction,
    /// 42704: an unknown setting, type or other object.
    UndefinedObject,
    /// 42702
    AmbiguousColumn,
    /// 42804: an expression of the wrong type (`WHERE 1`).
    DatatypeMismatch,
    /// 42P07
    DuplicateTable,
    /// 42P06
    DuplicateSchema,
    /// 2BP01: other objects depend on it (`DROP SCHEMA` of a schema with views).
    DependentObjects,
    /// 42501
    InsufficientPrivilege,
    /// 42000: another error in what the statement asks for.
    InvalidStatement,
    /// 0A000
    FeatureNotSupported,
    /// 25006: a write where the source is read-only.
    ReadOnly,
    /// 53200
    OutOfMemory,
    /// 53000: the server's limits (admission queue, connections).
    InsufficientResources,
    /// 53300
    TooManyConnections,
    /// 57014: cancelled on request or by the query timeout.
    QueryCanceled,
    /// 28000
    InvalidAuthorization,
    /// 08006: a source or worker cannot be reached.
    ConnectionFailure,
    /// XX000
    Internal,
}

impl ErrorKind {
    pub fn sqlstate(self) -> &'static str {
        match self {
            Self::DivisionByZero => "22012",
            Self::NumericOutOfRange => "22003",
            Self::InvalidTextRepresentation => "22P02",
            Self::InvalidDatetimeFormat => "22007",
            Self::InvalidParameterValue => "22023",
            Self::SyntaxError => "42601",
            Self::UndefinedTable => "42P01",
            Self::UndefinedColumn => "42703",
            Self::UndefinedFunction => "42883",
            Self::UndefinedObject => "42704",
            Self::AmbiguousColumn => "42702",
            Self::DatatypeMismatch => "42804",
            Self::DuplicateTable => "42P07",
            Self::DuplicateSchema => "42P06",
            Self::DependentObjects => "2BP01",
            Self::InsufficientPrivilege => "42501",
            Self::InvalidStatement => "42000",
            Self::FeatureNotSupported => "0A000",
            Self::ReadOnly => "25006",
            Self::OutOfMemory => "53200",
            Self::InsufficientResources => "53000",
            Self::TooManyConnections => "53300",
            Self::QueryCanceled => "57014",
            Self::InvalidAuthorization => "28000",
            Self::ConnectionFailure => "08006",
            Self::Internal => "XX000",
        }
    }

    const ALL: [ErrorKind; 26] = [
        Self::DivisionByZero,
        Self::NumericOutOfRange,
        Self::InvalidTextRepresentation,
        Self::InvalidDatetimeFormat,
        Self::InvalidParameterValue,
        Self::SyntaxError,
        Self::UndefinedTable,
        Self::UndefinedColumn,
        Self::UndefinedFunction,
        Self::UndefinedObject,
        Self::AmbiguousColumn,
        Self::DatatypeMismatch,
        Self::DuplicateTable,
        Self::DuplicateSchema,
        Self::DependentObjects,
        Self::InsufficientPrivilege,
        Self::InvalidStatement,
        Self::FeatureNotSupported,
        Self::ReadOnly,
        Self::OutOfMemory,
        Self::InsufficientResources,
        Self::TooManyConnections,
        Self::QueryCanceled,
        Self::InvalidAuthorization,
        Self::ConnectionFailure,
        Self::Internal,
    ];

    pub fn from_sqlstate(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.sqlstate() == code)
    }

    /// The gRPC code of this kind (Flight SQL clients see it).
    pub fn code(self) -> Code {
        match self {
            Self::DivisionByZero
            | Self::NumericOutOfRange
            | Self::InvalidTextRepresentation
            | Self::InvalidDatetimeFormat
            | Self::InvalidParameterValue
            | Self::SyntaxError
            | Self::UndefinedColumn
            | Self::UndefinedFunction
            | Self::UndefinedObject
            | Self::AmbiguousColumn
            | Self::DatatypeMismatch
            | Self::InvalidStatement => Code::InvalidArgument,
            Self::DependentObjects => Code::FailedPrecondition,
            Self::UndefinedTable => Code::NotFound,
            Self::DuplicateTable | Self::DuplicateSchema => Code::AlreadyExists,
            Self::InsufficientPrivilege | Self::ReadOnly => Code::PermissionDenied,
            Self::FeatureNotSupported => Code::Unimplemented,
            Self::OutOfMemory | Self::InsufficientResources | Self::TooManyConnections => {
                Code::ResourceExhausted
            }
            Self::QueryCanceled => Code::Cancelled,
            Self::InvalidAuthorization => Code::Unauthenticated,
            Self::ConnectionFailure => Code::Unavailable,
            Self::Internal => Code::Internal,
        }
    }

    /// A status of this kind.
    pub fn status(self, message: impl Into<String>) -> Status {
        tagged(Status::new(self.code(), message.into()), self)
    }

    /// The kind a status of `code` has when nothing tagged it.
    fn of_code(code: Code) -> Self {
        match code {
            Code::PermissionDenied => Self::InsufficientPrivilege,
            Code::Unauthenticated => Self::InvalidAuthorization,
            Code::Cancelled | Code::DeadlineExceeded => Self::QueryCanceled,
            Code::ResourceExhausted => Self::InsufficientResources,
            Code::Unimplemented => Self::FeatureNotSupported,
            Code::AlreadyExists => Self::DuplicateTable,
            Code::NotFound => Self::UndefinedTable,
            Code::Unavailable => Self::ConnectionFailure,
            Code::InvalidArgument | Code::FailedPrecondition | Code::OutOfRange => {
                Self::InvalidStatement
            }
            _ => Self::Internal,
        }
    }
}

/// `status` with `kind` in its metadata.
pub fn tagged(mut status: Status, kind: ErrorKind) -> Status {
    status
        .metadata_mut()
        .insert(SQLSTATE_KEY, MetadataValue::from_static(kind.sqlstate()));
    status
}

/// The kind of a status: the one it carries, else the one its code implies.
pub fn kind_of(status: &Status) -> ErrorKind {
    status
        .metadata()
        .get(SQLSTATE_KEY)
        .and_then(|v| v.to_str().ok())
        .and_then(ErrorKind::from_sqlstate)
        .unwrap_or_else(|| ErrorKind::of_code(status.code()))
}

/// The status for a DataFusion error, with its kind; the message is DataFusion's.
pub fn from_datafusion(err: &DataFusionError) -> Status {
    if let DataFusionError::External(e) = err.find_root() {
        if let Some(status) = e.downcast_ref::<Status>() {
            // Already a status (a worker's, an access check's): its message, code and kind.
            let kind = kind_of(status);
            return tagged(
                Status::new(status.code(), status.message().to_string()),
                kind,
            );
        }
    }
    let kind = classify(err);
    tagged(Status::new(kind.code(), err.to_string()), kind)
}

/// The kind of a DataFusion error, from its variant where that says enough.
/// DataFusion's planner reports unknown tables and functions as plain `Plan`
/// errors, so those two are told apart by the planner's own wording, here only.
pub fn classify(err: &DataFusionError) -> ErrorKind {
    match err.find_root() {
        DataFusionError::External(e)
            if e.downcast_ref::<quiver_connectors::Unreachable>().is_some() =>
        {
            ErrorKind::ConnectionFailure
        }
        DataFusionError::ArrowError(e, _) => match e.as_ref() {
            ArrowError::DivideByZero => ErrorKind::DivisionByZero,
            ArrowError::ArithmeticOverflow(_) => ErrorKind::NumericOutOfRange,
            ArrowError::CastError(m) | ArrowError::ParseError(m) => cast_kind(m),
            ArrowError::ComputeError(m) if m.contains("Overflow") || m.contains("overflow") => {
                ErrorKind::NumericOutOfRange
            }
            ArrowError::MemoryError(_) => ErrorKind::OutOfMemory,
            ArrowError::InvalidArgumentError(_) => ErrorKind::InvalidParameterValue,
            _ => ErrorKind::Internal,
        },
        DataFusionError::SQL(..) => ErrorKind::SyntaxError,
        DataFusionError::SchemaError(e, _) => match e.as_ref() {
            SchemaError::FieldNotFound { .. } => ErrorKind::UndefinedColumn,
            SchemaError::AmbiguousReference { .. } => ErrorKind::AmbiguousColumn,
            _ => ErrorKind::InvalidStatement,
        },
        DataFusionError::Plan(m) => plan_kind(m),
        DataFusionError::ResourcesExhausted(_) => ErrorKind::OutOfMemory,
        DataFusionError::NotImplemented(_) => ErrorKind::FeatureNotSupported,
        DataFusionError::Execution(m)
            if m.contains("Divide by zero") || m.contains("division by zero") =>
        {
            ErrorKind::DivisionByZero
        }
        DataFusionError::Execution(m)
            if m.contains("Cannot cast") || m.contains("Cannot parse") =>
        {
            cast_kind(m)
        }
        DataFusionError::Execution(m) if m.contains("Overflow") || m.contains("overflow") => {
            ErrorKind::NumericOutOfRange
        }
        DataFusionError::Execution(m) if m.contains("unrecognized configuration parameter") => {
            ErrorKind::UndefinedObject
        }
        // `SELECT $1` run without a value for `$1`; a unit `date_trunc` does not know.
        DataFusionError::Execution(m)
            if m.starts_with("Placeholder") && m.contains("not provided")
                || m.contains("Unsupported date_trunc granularity") =>
        {
            ErrorKind::InvalidParameterValue
        }
        // `to_timestamp('x', 'YYYY')`: text that does not match its format.
        DataFusionError::Execution(m) if m.starts_with("Error parsing timestamp") => {
            ErrorKind::InvalidDatetimeFormat
        }
        _ => ErrorKind::Internal,
    }
}

fn cast_kind(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    // arrow: "Can't cast value 100000 to type Int16" (a number too large for the
    // type), against "Cannot cast string 'x' to value of Int64 type" (not a number).
    if m.contains("can't cast value") {
        ErrorKind::NumericOutOfRange
    } else if m.contains("date") || m.contains("timestamp") || m.contains("time ") {
        ErrorKind::InvalidDatetimeFormat
    } else if m.contains("overflow") || m.contains("too large") || m.contains("out of range") {
        ErrorKind::NumericOutOfRange
    } else {
        ErrorKind::InvalidTextRepresentation
    }
}

fn plan_kind(message: &str) -> ErrorKind {
    let m = message.to_ascii_lowercase();
    if m.starts_with("table '") && (m.contains("not found") || m.contains("doesn't exist"))
        || m.contains("no table named")
    {
        ErrorKind::UndefinedTable
    } else if m.starts_with("invalid function")
        || m.contains("function") && m.contains("not found")
        || m.contains("no function matches")
        || m.contains("cannot coerce arithmetic expression")
    {
        // PostgreSQL: "function abs(text) does not exist", "operator does not exist: text + integer".
        ErrorKind::UndefinedFunction
    } else if m.contains("non-boolean predicate") {
        ErrorKind::DatatypeMismatch
    } else if m.contains("nested too deeply") {
        ErrorKind::SyntaxError
    } else if m.contains("cannot infer common argument type")
        || m.contains("cannot be cast")
        || m.contains("no function matches")
    {
        ErrorKind::DatatypeMismatch
    } else if m.contains("not supported") || m.contains("unsupported") {
        ErrorKind::FeatureNotSupported
    } else if m.contains("placeholder") || m.contains("parameter") {
        ErrorKind::InvalidParameterValue
    } else {
        ErrorKind::InvalidStatement
    }
}

/// Whether a gRPC status's message is tonic's report of a broken or failed
/// connection (a peer that is gone), rather than an error the peer returned.
/// tonic gives those codes `Unknown` or `Internal`, so only the words tell.
pub fn is_transport_failure(message: &str) -> bool {
    [
        "transport",
        "connect",
        "h2 protocol",
        "broken pipe",
        "reset",
        "error reading a body",
    ]
    .iter()
    .any(|m| message.contains(m))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrow(e: ArrowError) -> DataFusionError {
        DataFusionError::ArrowError(Box::new(e), None)
    }

    #[test]
    fn kinds_come_from_the_error_and_survive_a_hop() {
        let s = from_datafusion(&arrow(ArrowError::DivideByZero));
        assert_eq!(kind_of(&s), ErrorKind::DivisionByZero);
        assert_eq!(s.code(), Code::InvalidArgument);
        // A worker's status read back by the coordinator keeps its kind.
        let hop = from_datafusion(&DataFusionError::External(Box::new(s)));
        assert_eq!(kind_of(&hop).sqlstate(), "22012");
        let cast = arrow(ArrowError::CastError(
            "Cannot cast string 'x' to value of Int64 type".into(),
        ));
        assert_eq!(classify(&cast), ErrorKind::InvalidTextRepresentation);
        let big = arrow(ArrowError::CastError(
            "Can't cast value 100000 to type Int16".into(),
        ));
        assert_eq!(classify(&big), ErrorKind::NumericOutOfRange);
        let abs = DataFusionError::Plan("Function 'abs' expects Numeric but received String. No function matches the given name and argument types 'abs(Utf8)'.".into());
        assert_eq!(classify(&abs), ErrorKind::UndefinedFunction);
        assert_eq!(
            classify(&DataFusionError::Plan(
                "table 'quiver.tpch.nope' not found".into()
            )),
            ErrorKind::UndefinedTable
        );
        assert_eq!(
            classify(&DataFusionError::Plan("Invalid function 'nope'.".into())),
            ErrorKind::UndefinedFunction
        );
        assert_eq!(
            classify(&DataFusionError::NotImplemented("x".into())),
            ErrorKind::FeatureNotSupported
        );
        let wrapped = DataFusionError::Context(
            "while planning".into(),
            Box::new(arrow(ArrowError::DivideByZero)),
        );
        assert_eq!(classify(&wrapped), ErrorKind::DivisionByZero);
    }

    #[test]
    fn untagged_statuses_get_the_kind_of_their_code() {
        assert_eq!(
            kind_of(&Status::permission_denied("no")),
            ErrorKind::InsufficientPrivilege
        );
        assert_eq!(kind_of(&Status::cancelled("x")), ErrorKind::QueryCanceled);
        assert_eq!(
            kind_of(&ErrorKind::DuplicateTable.status("exists")),
            ErrorKind::DuplicateTable
        );
        for k in ErrorKind::ALL {
            assert_eq!(ErrorKind::from_sqlstate(k.sqlstate()), Some(k));
        }
    }
}
