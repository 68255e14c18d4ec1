//! The route table (`/openapi.json`, which documents these routes, is added by `lib.rs`).

pub mod ops;
pub mod page;
pub mod passport;
pub mod receipts;

use axum::{
    Router,
    routing::{get, post},
};

use crate::state::AppState;

/// Every route of the api but `/openapi.json`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/passport/image_code", get(passport::image_code))
        .route("/passport/sms_code", post(passport::sms_code))
        .route("/passport/register", post(passport::register))
        .route("/receipts/{provider}", post(receipts::receipt))
        .route("/", get(page::signup))
        .route("/healthz", get(ops::healthz))
        .route("/readyz", get(ops::readyz))
        .route("/metrics", get(ops::metrics))
}
