//! `/`: the dashboard, one static HTML file with its script inline,
//! compiled into the binary (no build step). It holds no data: the script
//! polls the JSON API every 2 s with the token from the URL's `#token=`
//! (kept in the tab's session storage), and says so clearly when the token
//! is refused or the bridge is gone. It never lists the whole fleet: the
//! devices table is paged.

use axum::http::{header, HeaderValue};
use axum::response::{Html, IntoResponse, Response};

/// The page.
pub const DASHBOARD: &str = include_str!("dashboard.html");

/// Scripts and styles from the page itself only; it calls its own origin.
const CSP: &str = "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
                   connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'; \
                   frame-ancestors 'none'";

pub async fn dashboard() -> Response {
    let mut r = Html(DASHBOARD).into_response();
    r.headers_mut().insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    r
}
