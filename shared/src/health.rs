//! Readiness checks shared by the api's and the worker's `/readyz`.

use std::time::Duration;

use redis::aio::ConnectionManager;
use sqlx::PgPool;

/// Pings Redis and PostgreSQL (each within `timeout`) and takes the broker's state as
/// `broker_ok`; returns the names of the dependencies that failed, empty when all answer.
pub async fn failing(redis: &ConnectionManager, db: &PgPool, timeout: Duration, broker_ok: bool) -> Vec<&'static str> {
    let mut redis = redis.clone();
    let (redis_ok, db_ok) = tokio::join!(
        async {
            tokio::time::timeout(timeout, redis::cmd("PING").query_async::<String>(&mut redis))
                .await
                .is_ok_and(|r| r.is_ok())
        },
        async { tokio::time::timeout(timeout, sqlx::query("select 1").execute(db)).await.is_ok_and(|r| r.is_ok()) },
    );
    [("redis", redis_ok), ("postgres", db_ok), ("rabbitmq", broker_ok)]
        .into_iter()
        .filter_map(|(name, ok)| (!ok).then_some(name))
        .collect()
}

/// The JSON body of `/readyz` and whether it is a 200.
pub fn report(failing: &[&str]) -> (bool, serde_json::Value) {
    if failing.is_empty() {
        (true, serde_json::json!({ "status": "ready" }))
    } else {
        (false, serde_json::json!({ "status": "unavailable", "failing": failing }))
    }
}
