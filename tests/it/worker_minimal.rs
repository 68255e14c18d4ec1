//! The worker, minimal path: consume, send through the `log` provider, record the row.

use std::time::Duration;

use secrecy::ExposeSecret;
use shared::domain::SmsCode;
use tests::{TestApp, TestResult, random_mobile, wait_until};

#[tokio::test]
async fn the_worker_records_a_sent_row_for_a_requested_code() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    app.spawn_worker();
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let code = app.sms_code_of(&mobile).await?.ok_or("no code")?;

    let row = wait_until(Duration::from_secs(15), "a sent delivery row", || async {
        sqlx::query_as::<_, (uuid::Uuid, String, String, i32, String, Option<chrono::DateTime<chrono::Utc>>, String)>(
            "select id, mobile, status, attempts, provider, sent_at, code_digest from sms_deliveries where mobile = $1",
        )
        .bind(&mobile)
        .fetch_optional(&app.db)
        .await
        .ok()
        .flatten()
        .filter(|row| row.2 == "sent")
    })
    .await?;
    let (id, row_mobile, _, attempts, provider, sent_at, digest) = row;
    assert_eq!(row_mobile, mobile);
    assert_eq!(attempts, 1);
    assert_eq!(provider, "log");
    assert!(sent_at.is_some());
    let key = app.settings.code_digest_key.expose_secret().as_bytes().to_vec();
    assert_eq!(digest, SmsCode::from_stored(code).digest(&key, id), "code_digest is this job's code");
    assert!(app.take_queued().await?.is_none(), "the message was acked");
    app.cleanup().await
}

#[tokio::test]
async fn an_undecodable_message_is_dead_lettered_not_looped() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    app.spawn_worker();
    // Publish straight to the exchange, as a buggy or foreign producer would.
    let (connection, channel) = app.amqp().await?;
    let newer = br#"{"v": 99, "id": "00000000-0000-0000-0000-000000000000", "mobile": "13800000000"}"#;
    // Garbage, then a job of a version this worker does not know: both go to the dead
    // queue untouched.
    for poison in [&b"{not json"[..], &newer[..]] {
        channel
            .basic_publish(
                app.topology.exchange().into(),
                "send".into(),
                lapin::options::BasicPublishOptions::default(),
                poison,
                lapin::BasicProperties::default(),
            )
            .await?
            .await?;
        let dead = wait_until(Duration::from_secs(15), "the poison message on the dead queue", || async {
            channel
                .basic_get(app.topology.dead_queue().into(), lapin::options::BasicGetOptions { no_ack: true })
                .await
                .ok()
                .flatten()
        })
        .await?;
        assert_eq!(dead.delivery.data, poison);
    }
    let _ = connection.close(200, "done".into()).await;
    // And a good job after it still goes through.
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0);
    wait_until(Duration::from_secs(15), "the next job sent", || async {
        sqlx::query_scalar::<_, String>("select status from sms_deliveries where mobile = $1")
            .bind(&mobile)
            .fetch_optional(&app.db)
            .await
            .ok()
            .flatten()
            .filter(|s| s == "sent")
    })
    .await?;
    app.cleanup().await
}
