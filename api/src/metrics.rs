//! Request metrics: a count by route and errno, and a latency histogram by route.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request},
    middleware::Next,
    response::Response,
};
use shared::Errno;

/// Records `smscode_api_requests_total{route, errno}` and
/// `smscode_api_request_duration_seconds{route}` for every request.
pub async fn record(request: Request, next: Next) -> Response {
    let started = Instant::now();
    // The route template, not the raw path: unmatched paths share one label.
    let route = request.extensions().get::<MatchedPath>().map_or("unmatched", MatchedPath::as_str).to_owned();
    let response = next.run(request).await;
    let errno = match response.extensions().get::<Errno>() {
        Some(errno) => errno.code().to_string(),
        None => "none".to_owned(),
    };
    let status = response.status().as_u16().to_string();
    metrics::counter!("smscode_api_requests_total", "route" => route.clone(), "errno" => errno, "status" => status)
        .increment(1);
    metrics::histogram!("smscode_api_request_duration_seconds", "route" => route)
        .record(started.elapsed().as_secs_f64());
    response
}
