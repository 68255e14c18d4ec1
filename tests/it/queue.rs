//! What the api puts on the broker, and the retry topology.

use std::time::Duration;

use serde_json::Value;
use shared::{
    domain::{Mobile, SmsCode},
    queue::{Publisher, SendJob, Topology},
};
use tests::{TestApp, TestResult, random_mobile, wait_until};

#[tokio::test]
async fn the_queued_job_is_persistent_json_with_a_message_id_and_no_code() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let delivery = app.take_queued().await?.ok_or("no message on the send queue")?;

    let props = &delivery.properties;
    assert_eq!(props.delivery_mode(), &Some(2), "persistent");
    assert_eq!(props.content_type().as_ref().map(|s| s.as_str()), Some("application/json"));
    let job: Value = serde_json::from_slice(&delivery.data)?;
    let message_id = props.message_id().as_ref().map(|s| s.to_string());
    assert_eq!(message_id.as_deref(), job["id"].as_str());

    assert!(job["id"].as_str().is_some_and(|id| uuid::Uuid::parse_str(id).is_ok()), "{job}");
    assert_eq!(job["mobile"], mobile.as_str());
    // No usable code on the broker: only its keyed digest.
    let code = app.sms_code_of(&mobile).await?.ok_or("no code stored")?;
    assert_eq!(job["v"], 2);
    assert!(job.get("code").is_none() && job.get("template_id").is_none(), "{job}");
    assert!(!String::from_utf8_lossy(&delivery.data).contains(&code), "the code is nowhere in the message");
    let key = secrecy::ExposeSecret::expose_secret(&app.settings.code_digest_key).as_bytes().to_vec();
    let id = uuid::Uuid::parse_str(job["id"].as_str().ok_or("id")?)?;
    assert_eq!(job["code_digest"].as_str(), Some(SmsCode::from_stored(code).digest(&key, id).as_str()));
    assert_eq!(job["ttl_secs"], 300);
    assert_eq!(job["attempt"], 0);
    let created = job["created_at"].as_str().ok_or("created_at")?;
    let created = chrono::DateTime::parse_from_rfc3339(created)?;
    assert!((chrono::Utc::now() - created.to_utc()).num_seconds().abs() < 30);
    assert!(app.take_queued().await?.is_none(), "exactly one message");
    app.cleanup().await
}

#[tokio::test]
async fn a_retry_queue_hands_its_message_back_to_the_send_queue_after_its_delay() -> TestResult {
    let app = TestApp::start(&[("SMS_RETRY_SCHEDULE_SECS", "1,30")]).await?;
    let publisher = Publisher::new(std::sync::Arc::new(app.settings.clone()), "test");
    let job =
        SendJob::new(Mobile::from_stored(random_mobile()), &SmsCode::generate(), b"key", Duration::from_secs(300));
    let sent_at = std::time::Instant::now();
    publisher.publish_retry(Duration::from_secs(1), &job).await?;
    assert!(app.take_queued().await?.is_none(), "not on the send queue before its delay");
    let delivery = wait_until(Duration::from_secs(10), "the retried job on the send queue", || async {
        app.take_queued().await.ok().flatten()
    })
    .await?;
    assert!(sent_at.elapsed() >= Duration::from_millis(900), "waited {:?}", sent_at.elapsed());
    assert_eq!(SendJob::decode(&delivery.data)?.id, job.id);
    app.cleanup().await
}

#[tokio::test]
async fn quorum_retry_queues_hand_back_at_least_once() -> TestResult {
    use lapin::{
        options::QueueDeclareOptions,
        types::{AMQPValue, FieldTable, LongString},
    };
    let app = TestApp::start(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    let queue = app.topology.retry_queue(Duration::from_secs(1));
    let shared = &app;
    let declare = |strategy: &'static str, overflow: &'static str| {
        let mut args = FieldTable::default();
        let text = |s: &str| AMQPValue::LongString(LongString::from(s.as_bytes().to_vec()));
        args.insert("x-queue-type".into(), text("quorum"));
        args.insert("x-message-ttl".into(), AMQPValue::LongLongInt(1000));
        args.insert("x-dead-letter-exchange".into(), text(shared.topology.exchange()));
        args.insert("x-dead-letter-routing-key".into(), text(Topology::SEND_KEY));
        args.insert("x-dead-letter-strategy".into(), text(strategy));
        args.insert("x-overflow".into(), text(overflow));
        // Every quorum queue is declared with its replica count (AMQP_QUORUM_SIZE, 3).
        args.insert("x-quorum-initial-group-size".into(), AMQPValue::LongInt(3));
        let queue = queue.clone();
        async move {
            let (connection, channel) = shared.amqp().await?;
            let options = QueueDeclareOptions { durable: true, ..Default::default() };
            let declared = channel.queue_declare(queue.as_str().into(), options, args).await;
            let _ = connection.close(200, "done".into()).await;
            TestResult::Ok(declared.is_ok())
        }
    };
    // The api declared the topology at start-up; an equivalent declaration is accepted, a
    // different one refused (the broker compares these arguments).
    assert!(declare("at-least-once", "reject-publish").await?, "declared with at-least-once and reject-publish");
    assert!(!declare("at-most-once", "drop-head").await?, "the broker would accept the default strategy: not declared");
    app.cleanup().await
}
