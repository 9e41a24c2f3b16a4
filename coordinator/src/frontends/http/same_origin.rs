//! Cross-site request refusal for the HTTP door's state-changing calls
//! (`POST /v1/sql`, the console's cancel).
//!
//! A browser that is logged in (Basic credentials it remembers, or a cookie) sends
//! them along with a request that a hostile page makes: a `<form method=post
//! enctype=text/plain>` on another site can post `drop table … --=x` to
//! `/v1/sql`. Browsers mark such requests: `Sec-Fetch-Site` says whether the page
//! that made it is of the same origin, and `Origin` names that page's origin. A
//! POST is refused (403, JSON) when
//! - `Sec-Fetch-Site` is present and is neither `same-origin` nor `none` (typed in
//!   by the user); or
//! - `Origin` is present and is neither this server's own origin (the `Host` the
//!   request was sent to) nor one of `server.http_allowed_origins`; or
//! - it comes from a browser (carries `Origin` or `Sec-Fetch-Site`) with a body
//!   type that an HTML form can send (`text/plain`, `application/x-www-form-urlencoded`,
//!   `multipart/form-data`): the console and scripts send `application/sql`.
//!
//! Programs that are not browsers (curl, drivers, scripts) send neither header
//! and are unaffected, whatever their content type.

use std::sync::Arc;

use axum::extract::{Request, State};
use axum::http::{header, HeaderMap, Method, StatusCode};
use axum::middleware::Next;
use axum::response::Response;

use super::{error_response, Http};

/// The body types an HTML form can send without script.
const FORM_TYPES: &[&str] = &[
    "text/plain",
    "application/x-www-form-urlencoded",
    "multipart/form-data",
];

pub(super) async fn guard(State(http): State<Arc<Http>>, request: Request, next: Next) -> Response {
    if request.method() == Method::GET
        || request.method() == Method::HEAD
        || request.method() == Method::OPTIONS
    {
        return next.run(request).await;
    }
    match refusal(request.headers(), &http.allowed_origins) {
        Some(reason) => {
            tracing::warn!(path = %request.uri().path(), reason, "cross-site request refused");
            error_response(
                StatusCode::FORBIDDEN,
                &format!("cross-site request refused: {reason}"),
            )
        }
        None => next.run(request).await,
    }
}

/// Why a state-changing request is refused, or None when it may go on.
pub(super) fn refusal(headers: &HeaderMap, allowed: &[String]) -> Option<String> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    let fetch_site = get("sec-fetch-site");
    let origin = get(header::ORIGIN.as_str());
    let host = get(header::HOST.as_str());
    if let Some(site) = fetch_site {
        let own = matches!(site.to_ascii_lowercase().as_str(), "same-origin" | "none");
        let allowed_origin = origin.is_some_and(|o| is_allowed(o, allowed));
        if !own && !allowed_origin {
            return Some(format!(
                "the request was made by a page of another origin (Sec-Fetch-Site: {site})"
            ));
        }
    }
    if let Some(origin) = origin {
        let own =
            host.is_some_and(|h| origin_host(origin).is_some_and(|o| o.eq_ignore_ascii_case(h)));
        if !own && !is_allowed(origin, allowed) {
            return Some(format!(
                "Origin {origin} is not this server and not in server.http_allowed_origins"
            ));
        }
    }
    if fetch_site.is_some() || origin.is_some() {
        let kind = get(header::CONTENT_TYPE.as_str()).unwrap_or("");
        let kind = kind
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase();
        if FORM_TYPES.contains(&kind.as_str()) {
            return Some(format!(
                "a browser request with the form body type {kind}: send the statement as application/sql"
            ));
        }
    }
    None
}

/// `host[:port]` of an origin (`scheme://host[:port]`); None for `null`.
fn origin_host(origin: &str) -> Option<&str> {
    let (_, rest) = origin.split_once("://")?;
    Some(rest.trim_end_matches('/'))
}

fn is_allowed(origin: &str, allowed: &[String]) -> bool {
    allowed.iter().any(|a| {
        a.trim_end_matches('/')
            .eq_ignore_ascii_case(origin.trim_end_matches('/'))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().expect("header value"));
        }
        h
    }

    #[test]
    fn a_hostile_form_is_refused() {
        let form = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("content-type", "text/plain"),
        ]);
        assert!(refusal(&form, &[]).is_some());
        // An old browser without Sec-Fetch-*, and a page with its referrer hidden (Origin: null).
        assert!(refusal(
            &headers(&[("host", "h:1"), ("origin", "http://evil.example")]),
            &[]
        )
        .is_some());
        assert!(refusal(
            &headers(&[
                ("host", "h:1"),
                ("origin", "null"),
                ("content-type", "text/plain")
            ]),
            &[]
        )
        .is_some());
        // Same site is not same origin.
        assert!(refusal(
            &headers(&[("host", "h:1"), ("sec-fetch-site", "same-site")]),
            &[]
        )
        .is_some());
    }

    #[test]
    fn the_console_scripts_and_allowed_origins_pass() {
        let console = headers(&[
            ("host", "127.0.0.1:8080"),
            ("origin", "http://127.0.0.1:8080"),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "application/sql"),
        ]);
        assert_eq!(refusal(&console, &[]), None);
        // curl -d sends a form type, but no browser headers.
        assert_eq!(
            refusal(
                &headers(&[
                    ("host", "h:1"),
                    ("content-type", "application/x-www-form-urlencoded")
                ]),
                &[]
            ),
            None
        );
        let app = headers(&[
            ("host", "h:1"),
            ("origin", "https://bi.example"),
            ("sec-fetch-site", "cross-site"),
            ("content-type", "application/sql"),
        ]);
        assert!(refusal(&app, &[]).is_some());
        assert_eq!(refusal(&app, &["https://bi.example".to_string()]), None);
    }

    #[test]
    fn a_same_origin_form_body_is_refused_too() {
        let h = headers(&[
            ("host", "h:1"),
            ("origin", "http://h:1"),
            ("sec-fetch-site", "same-origin"),
            ("content-type", "multipart/form-data; boundary=x"),
        ]);
        assert!(refusal(&h, &[]).is_some());
    }
}
