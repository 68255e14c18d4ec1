//! `GET /`: the signup page, embedded in the binary (no files to deploy next to it).

use axum::{http::header, response::IntoResponse};

/// The page: HTML with its CSS and JS inline.
const SIGNUP_HTML: &str = include_str!("../../assets/index.html");

/// `GET /`.
#[utoipa::path(get, path = "/", tag = "ops", responses((status = 200, description = "The signup page", content_type = "text/html")))]
pub async fn signup() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], SIGNUP_HTML)
}
