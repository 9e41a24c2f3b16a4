//! What a Flight SQL request carries besides its command: the caller, the headers
//! that ask for string views or name the query's id.

use tonic::Request;

use crate::frontends::run::{self, Caller};
use crate::security::authn::User;

/// The request header with which a client asks for results with string and binary
/// views (`Utf8View`, `BinaryView`) as DataFusion makes them, rather than `Utf8`.
pub const STRING_VIEWS_HEADER: &str = "x-quiver-string-views";

/// Whether the request carries [`STRING_VIEWS_HEADER`] set to `true`/`on`/`1`.
pub(super) fn string_views<T>(request: &Request<T>) -> bool {
    request
        .metadata()
        .get(STRING_VIEWS_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| {
            matches!(
                v.trim().to_ascii_lowercase().as_str(),
                "true" | "on" | "1" | "yes"
            )
        })
}

/// Who is calling, from a request the authenticator let through.
pub(super) fn caller_of<T>(request: &Request<T>) -> Caller {
    let no_cache = run::cache_off(
        request
            .metadata()
            .get(run::CACHE_HEADER)
            .and_then(|v| v.to_str().ok()),
    );
    Caller {
        user: request.extensions().get::<User>().cloned(),
        client: request.remote_addr().map(|a| a.to_string()),
        no_cache,
    }
}

/// The query id a client chose (`x-quiver-query-id`, a UUID), so it can follow the
/// query's progress in `system.queries` while it waits for the result.
pub(super) fn chosen_query_id<T>(request: &Request<T>) -> Option<String> {
    let value = request.metadata().get(QUERY_ID_HEADER)?.to_str().ok()?;
    uuid::Uuid::parse_str(value).ok().map(|u| u.to_string())
}

/// The header a client names its query's id in.
pub const QUERY_ID_HEADER: &str = "x-quiver-query-id";
