//! The worker against the CCP fake: delivery, retries, failure classes, stale codes,
//! idempotency, horizontal scale, crashes and graceful shutdown.

use std::{collections::HashMap, sync::Arc, time::Duration};

use lapin::options::BasicGetOptions;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use shared::{
    Settings,
    config::ProviderSettings,
    domain::{Mobile, SmsCode},
    queue::{Publisher, SendJob, Topology},
};
use tests::{
    TestApp, TestResult,
    ccp_fake::{CcpFake, Reply},
    random_mobile, wait_until,
};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker-under-test");

/// An app whose settings point the provider at `fake`.
async fn app_with_fake(overrides: &[(&str, &str)]) -> TestResult<(TestApp, CcpFake)> {
    let fake = CcpFake::start().await?;
    let mut vars: Vec<(String, String)> = fake.env();
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    Ok((TestApp::start(&pairs).await?, fake))
}

/// Starts an in-process worker sending through the CCP configuration of `settings` (by
/// default the app's own).
fn spawn_ccp_worker(app: &mut TestApp, settings: Option<Settings>) -> TestResult {
    let settings = settings.unwrap_or_else(|| app.settings.clone());
    if !matches!(settings.providers.as_slice(), [ProviderSettings::Ccp(_)]) {
        return Err("settings do not select ccp".into());
    }
    app.spawn_worker_from(settings);
    Ok(())
}

/// Does what the api does for a code, without its rate limits: stores the code and
/// publishes the job.
async fn queue_job(app: &TestApp, publisher: &Publisher, mobile: &str) -> TestResult<SendJob> {
    let code = SmsCode::generate();
    let mut redis = app.redis.clone();
    let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), code.expose(), 300).await?;
    let key = app.settings.code_digest_key.expose_secret().as_bytes().to_vec();
    let job = SendJob::new(Mobile::from_stored(mobile), &code, &key, Duration::from_secs(300));
    publisher.publish(&job).await?;
    Ok(job)
}

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    attempts: i32,
    last_error: Option<String>,
    provider_message_id: Option<String>,
}

async fn row_of(app: &TestApp, mobile: &str) -> Option<Row> {
    sqlx::query_as::<_, Row>(
        "select status, attempts, last_error, provider_message_id from sms_deliveries where mobile = $1",
    )
    .bind(mobile)
    .fetch_optional(&app.db)
    .await
    .ok()
    .flatten()
}

async fn wait_for_status(app: &TestApp, mobile: &str, status: &str) -> TestResult<Row> {
    wait_until(Duration::from_secs(20), &format!("{mobile} to be {status}"), || async {
        row_of(app, mobile).await.filter(|r| r.status == status)
    })
    .await
}

async fn count_status(app: &TestApp, status: &str) -> i64 {
    sqlx::query_scalar("select count(*) from sms_deliveries where status = $1")
        .bind(status)
        .fetch_one(&app.db)
        .await
        .unwrap_or(-1)
}

#[tokio::test]
async fn a_sent_row_carries_the_providers_message_sid() -> TestResult {
    let (mut app, fake) = app_with_fake(&[]).await?;
    spawn_ccp_worker(&mut app, None)?;
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let code = app.sms_code_of(&mobile).await?.ok_or("no code")?;

    let row = wait_for_status(&app, &mobile, "sent").await?;
    let received = fake.received_for(&mobile);
    assert_eq!(received.len(), 1, "{received:?}");
    assert_eq!(received[0].code, code);
    assert_eq!(received[0].ttl_minutes, "5", "minutes as an integer, not the seed's 5.0");
    assert_eq!(received[0].template_id, "1");
    assert_eq!(row.provider_message_id, received[0].message_sid);
    assert_eq!(row.attempts, 1);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    app.cleanup().await
}

#[tokio::test]
async fn an_http_500_twice_is_retried_then_delivered_on_attempt_3() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1,1,1")]).await?;
    spawn_ccp_worker(&mut app, None)?;
    fake.script([Reply::Http(500), Reply::Http(500)]);
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");

    let row = wait_for_status(&app, &mobile, "sent").await?;
    assert_eq!(row.attempts, 3);
    let replies: Vec<String> = fake.received_for(&mobile).into_iter().map(|r| r.reply).collect();
    assert_eq!(replies, ["http 500", "http 500", "000000"]);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    app.cleanup().await
}

#[tokio::test]
async fn a_dropped_connection_is_retried() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    spawn_ccp_worker(&mut app, None)?;
    fake.script([Reply::Drop]);
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let row = wait_for_status(&app, &mobile, "sent").await?;
    assert_eq!(row.attempts, 2);
    // The first attempt reached the provider; the retry carries the same reqId.
    let received = fake.received_for(&mobile);
    assert_eq!(received.len(), 2);
    assert_eq!(received[0].req_id, received[1].req_id);
    app.cleanup().await
}

#[tokio::test]
async fn a_bad_number_160042_fails_after_exactly_one_request() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    spawn_ccp_worker(&mut app, None)?;
    fake.script([Reply::Status("160042")]);
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");

    let row = wait_for_status(&app, &mobile, "failed").await?;
    assert_eq!(row.attempts, 1);
    assert!(row.last_error.as_deref().is_some_and(|e| e.contains("160042")), "{row:?}");
    assert_eq!(fake.received_for(&mobile).len(), 1);
    // Failed is recorded only when no retry was queued: the retry queue is empty.
    let (connection, channel) = app.amqp().await?;
    let retry_queue = app.topology.retry_queue(Duration::from_secs(1));
    assert!(channel.basic_get(retry_queue.into(), BasicGetOptions { no_ack: true }).await?.is_none());
    let _ = connection.close(200, "done".into()).await;
    app.cleanup().await
}

#[tokio::test]
async fn the_providers_frequency_limit_fails_at_once() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    spawn_ccp_worker(&mut app, None)?;
    fake.script([Reply::Status("160038")]);
    let mobile = random_mobile();
    app.request_code(&mobile).await?;
    let row = wait_for_status(&app, &mobile, "failed").await?;
    assert_eq!(row.attempts, 1);
    assert!(row.last_error.as_deref().is_some_and(|e| e.starts_with("ccp 160038")), "{row:?}");
    app.cleanup().await
}

#[tokio::test]
async fn a_wrong_token_is_retried_on_the_schedule_then_fails_with_a_clear_last_error() -> TestResult {
    // Rejected credentials are a provider-side failure: another provider could send, and a
    // fixed token could too, so the job waits in the retry schedule rather than failing at once.
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    let mut settings = app.settings.clone();
    if let Some(ProviderSettings::Ccp(ccp)) = settings.providers.first_mut() {
        ccp.auth_token = "0000000000000000000000000000dead".into();
    }
    spawn_ccp_worker(&mut app, Some(settings))?;
    let mobiles = [random_mobile(), random_mobile()];
    for mobile in &mobiles {
        app.request_code(mobile).await?;
    }
    for mobile in &mobiles {
        let row = wait_for_status(&app, mobile, "failed").await?;
        assert_eq!(row.attempts, 2, "one attempt, one retry");
        assert!(
            row.last_error.as_deref().is_some_and(|e| e.starts_with("retries exhausted; last: ccp 111109")),
            "{row:?}"
        );
    }
    assert_eq!(fake.violations().len(), 4);
    assert!(fake.received().is_empty());
    app.cleanup().await
}

#[tokio::test]
async fn expired_and_superseded_codes_are_not_sent() -> TestResult {
    let (mut app, fake) = app_with_fake(&[]).await?;
    let publisher = Publisher::new(Arc::new(app.settings.clone()), "test");
    let (expired, superseded, live) = (random_mobile(), random_mobile(), random_mobile());

    let job = queue_job(&app, &publisher, &expired).await?;
    let mut redis = app.redis.clone();
    let () = redis.del(format!("{}SMS_{expired}", app.keys.prefix())).await?;
    drop(job);
    queue_job(&app, &publisher, &superseded).await?;
    let () = redis.set(format!("{}SMS_{superseded}", app.keys.prefix()), "999999x").await?;
    queue_job(&app, &publisher, &live).await?;

    spawn_ccp_worker(&mut app, None)?;
    wait_for_status(&app, &expired, "expired").await?;
    wait_for_status(&app, &superseded, "superseded").await?;
    wait_for_status(&app, &live, "sent").await?;
    assert!(fake.received_for(&expired).is_empty());
    assert!(fake.received_for(&superseded).is_empty());
    assert_eq!(fake.received_for(&live).len(), 1);
    app.cleanup().await
}

#[tokio::test]
async fn a_redelivered_sent_job_is_not_sent_again() -> TestResult {
    // One send at a time, so the jobs are handled in the order they were queued.
    let (mut app, fake) = app_with_fake(&[("WORKER_PREFETCH", "1")]).await?;
    let publisher = Publisher::new(Arc::new(app.settings.clone()), "test");
    let mobile = random_mobile();
    let job = queue_job(&app, &publisher, &mobile).await?;
    publisher.publish(&job).await?;
    let sentinel = random_mobile();
    queue_job(&app, &publisher, &sentinel).await?;

    spawn_ccp_worker(&mut app, None)?;
    wait_for_status(&app, &sentinel, "sent").await?;
    let row = row_of(&app, &mobile).await.ok_or("no row")?;
    assert_eq!((row.status.as_str(), row.attempts), ("sent", 1));
    assert_eq!(fake.received_for(&mobile).len(), 1, "the copy was acked without a send");
    app.cleanup().await
}

#[tokio::test]
async fn three_workers_deliver_300_jobs_to_every_mobile_exactly_once() -> TestResult {
    let (mut app, fake) = app_with_fake(&[]).await?;
    fake.set_latency(Duration::from_millis(20));
    for _ in 0..3 {
        spawn_ccp_worker(&mut app, None)?;
    }
    let publisher = Publisher::new(Arc::new(app.settings.clone()), "test");
    let mobiles: Vec<String> = (0..300).map(|_| random_mobile()).collect();
    let jobs = mobiles.iter().map(|m| queue_job(&app, &publisher, m));
    for result in futures_util::future::join_all(jobs).await {
        result?;
    }
    wait_until(Duration::from_secs(60), "300 sent rows", || async {
        (count_status(&app, "sent").await == 300).then_some(())
    })
    .await?;
    let mut per_mobile: HashMap<String, usize> = HashMap::new();
    for received in fake.received() {
        *per_mobile.entry(received.mobile).or_default() += 1;
    }
    assert_eq!(per_mobile.len(), 300);
    assert!(
        per_mobile.values().all(|n| *n == 1),
        "duplicates: {:?}",
        per_mobile.iter().filter(|(_, n)| **n > 1).collect::<Vec<_>>()
    );
    assert!(fake.violations().is_empty());
    app.cleanup().await
}

#[tokio::test]
async fn a_worker_killed_mid_send_leaves_every_job_to_the_other() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("WORKER_PREFETCH", "8")]).await?;
    fake.set_latency(Duration::from_millis(1500));
    let publisher = Publisher::new(Arc::new(app.settings.clone()), "test");
    let mobiles: Vec<String> = (0..20).map(|_| random_mobile()).collect();
    for mobile in &mobiles {
        queue_job(&app, &publisher, mobile).await?;
    }
    let pid = app.spawn_worker_process(WORKER_BIN, &fake.env())?;
    wait_until(Duration::from_secs(20), "the first worker to be mid-send", || async {
        (fake.in_flight() >= 8).then_some(())
    })
    .await?;
    std::process::Command::new("kill").args(["-KILL", &pid.to_string()]).status()?;
    app.wait_worker_process(pid, Duration::from_secs(10)).await?;

    fake.set_latency(Duration::from_millis(10));
    spawn_ccp_worker(&mut app, None)?;
    for mobile in &mobiles {
        wait_for_status(&app, mobile, "sent").await?;
    }
    wait_until(Duration::from_secs(10), "the dead worker's requests to finish", || async {
        (fake.in_flight() == 0).then_some(())
    })
    .await?;
    // Every mobile got its SMS accepted exactly once: a resend of a job the dead worker had
    // already sent carries the same reqId and is refused by the provider as a duplicate.
    for mobile in &mobiles {
        let accepted = fake.received_for(mobile).iter().filter(|r| r.reply == "000000").count();
        assert_eq!(accepted, 1, "{mobile}: {:?}", fake.received_for(mobile));
    }
    app.cleanup().await
}

#[tokio::test]
async fn sigterm_finishes_the_sends_in_flight_records_them_and_exits_0() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("WORKER_PREFETCH", "4")]).await?;
    fake.set_latency(Duration::from_millis(1500));
    let publisher = Publisher::new(Arc::new(app.settings.clone()), "test");
    let mobiles: Vec<String> = (0..10).map(|_| random_mobile()).collect();
    for mobile in &mobiles {
        queue_job(&app, &publisher, mobile).await?;
    }
    let pid = app.spawn_worker_process(WORKER_BIN, &fake.env())?;
    wait_until(Duration::from_secs(20), "4 sends in flight", || async { (fake.in_flight() == 4).then_some(()) })
        .await?;
    std::process::Command::new("kill").args(["-TERM", &pid.to_string()]).status()?;
    let code = app.wait_worker_process(pid, Duration::from_secs(20)).await?;
    assert_eq!(code, Some(0));

    let received = fake.received();
    assert_eq!(received.len(), 4, "only the sends in flight completed");
    for r in &received {
        let row = row_of(&app, &r.mobile).await.ok_or("no row")?;
        assert_eq!(row.status, "sent", "{}", r.mobile);
    }
    assert_eq!(count_status(&app, "sending").await, 0);
    // The 6 not started are back on the queue for the next worker.
    let mut left = 0;
    while app.take_queued().await?.is_some() {
        left += 1;
    }
    assert_eq!(left, 6);
    app.cleanup().await
}

#[tokio::test]
async fn a_retry_that_would_come_after_the_code_expires_is_not_scheduled() -> TestResult {
    // Codes live 300 s: the second retry, 400 s later, would be useless.
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1,400")]).await?;
    spawn_ccp_worker(&mut app, None)?;
    fake.script([Reply::Http(503), Reply::Http(503)]);
    let mobile = random_mobile();
    app.request_code(&mobile).await?;
    let row = wait_for_status(&app, &mobile, "expired").await?;
    assert_eq!(row.attempts, 2);
    assert!(row.last_error.as_deref().is_some_and(|e| e.contains("expires before the next retry")), "{row:?}");
    assert_eq!(fake.received_for(&mobile).len(), 2);
    app.cleanup().await
}

#[tokio::test]
async fn an_exhausted_schedule_fails_the_delivery() -> TestResult {
    let (mut app, fake) = app_with_fake(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    spawn_ccp_worker(&mut app, None)?;
    fake.script([Reply::Status("160001"), Reply::Status("160001")]);
    let mobile = random_mobile();
    app.request_code(&mobile).await?;
    let row = wait_for_status(&app, &mobile, "failed").await?;
    assert_eq!(row.attempts, 2);
    assert!(row.last_error.as_deref().is_some_and(|e| e.starts_with("retries exhausted; last: ccp 160001")), "{row:?}");
    app.cleanup().await
}

#[tokio::test]
async fn a_version_1_job_queued_before_the_upgrade_is_still_delivered() -> TestResult {
    let (mut app, fake) = app_with_fake(&[]).await?;
    spawn_ccp_worker(&mut app, None)?;
    let mobile = random_mobile();
    let mut redis = app.redis.clone();
    let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), "246810", 300).await?;
    let job = serde_json::json!({
        "v": 1, "id": uuid::Uuid::new_v4(), "mobile": mobile, "code": "246810", "template_id": "1",
        "ttl_secs": 300, "created_at": chrono::Utc::now(), "attempt": 0
    });
    let (connection, channel) = app.amqp().await?;
    channel
        .basic_publish(
            app.topology.exchange().into(),
            Topology::SEND_KEY.into(),
            lapin::options::BasicPublishOptions::default(),
            &serde_json::to_vec(&job)?,
            lapin::BasicProperties::default().with_delivery_mode(2),
        )
        .await?
        .await?;
    let _ = connection.close(200, "done".into()).await;
    wait_for_status(&app, &mobile, "sent").await?;
    assert_eq!(fake.received_for(&mobile)[0].code, "246810");
    app.cleanup().await
}
