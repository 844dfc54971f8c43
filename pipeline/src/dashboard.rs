//! The web dashboard: one static page (`assets/dashboard.html`) served at `/dashboard`. It
//! reads the tenant API with the caller's bearer token (typed in, or passed as
//! `#tenant=…&token=…` so it never reaches a server log): the task history timeline with a
//! narrative per session, the HITL SLA panel, and the alerts. It refreshes every 5 s.

use axum::http::header;
use axum::response::{IntoResponse, Response};

const PAGE: &str = include_str!("../assets/dashboard.html");

/// `GET /dashboard`.
pub async fn page() -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (
                header::CONTENT_SECURITY_POLICY,
                "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
            ),
        ],
        PAGE,
    )
        .into_response()
}
