//! The worker's duplicate and stall windows: a job another handler is still sending is not
//! sent twice, a database error that is not an outage parks the job instead of holding its
//! prefetch slot, and waiting for Redis does not spend the retry budget.

use std::time::Duration;

use lapin::options::QueueDeclareOptions;
use redis::AsyncCommands;
use secrecy::ExposeSecret;
use shared::{
    domain::{Mobile, SmsCode},
    queue::{Publisher, SendJob},
};
use tests::{DEAD_PORT, TestApp, TestResult, ccp_fake::CcpFake, random_mobile, wait_until};

/// An api and a CCP worker (fast retries), and the fake behind it.
async fn app_with_worker(overrides: &[(&str, &str)]) -> TestResult<(TestApp, CcpFake)> {
    let fake = CcpFake::start().await?;
    let mut vars = fake.env();
    vars.push(("SMS_RETRY_SCHEDULE_SECS".into(), "1,1,1,1,1".into()));
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let app = TestApp::start(&pairs).await?;
    Ok((app, fake))
}

async fn status_of(app: &TestApp, mobile: &str) -> Option<(String, i32)> {
    sqlx::query_as("select status, attempts from sms_deliveries where mobile = $1")
        .bind(mobile)
        .fetch_optional(&app.db)
        .await
        .ok()
        .flatten()
}

/// Messages ready in the first retry queue (`<prefix>.retry.1s`).
async fn parked(app: &TestApp) -> Option<u32> {
    let (connection, channel) = app.amqp().await.ok()?;
    let queue = app.topology.retry_queue(Duration::from_secs(1));
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared = channel.queue_declare(queue.as_str().into(), options, Default::default()).await.ok();
    let _ = connection.close(200, "done".into()).await;
    declared.map(|q| q.message_count())
}

/// `smscode_worker_jobs_parked_total{reason}` of the worker whose endpoints are at `addr`.
async fn parked_total(addr: std::net::SocketAddr, reason: &str) -> Option<f64> {
    let text = reqwest::get(format!("http://{addr}/metrics")).await.ok()?.text().await.ok()?;
    let label = format!(r#"reason="{reason}""#);
    text.lines()
        .find(|l| l.starts_with("smscode_worker_jobs_parked_total") && l.contains(&label))?
        .rsplit(' ')
        .next()?
        .parse()
        .ok()
}

#[tokio::test]
async fn a_job_another_handler_is_still_sending_is_not_sent_twice() -> TestResult {
    let (mut app, fake) = app_with_worker(&[("SMS_PROVIDER_TIMEOUT_SECS", "1")]).await?;
    let mobile = random_mobile();
    let code = SmsCode::generate();
    let mut redis = app.redis.clone();
    let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), code.expose(), 300).await?;
    let key = app.settings.code_digest_key.expose_secret().as_bytes().to_vec();
    let job = SendJob::new(Mobile::from_stored(mobile.as_str()), &code, &key, Duration::from_secs(300));
    // Another handler owns the row: `sending`, touched just now (a redelivery overlapping it).
    sqlx::query(
        "insert into sms_deliveries (id, mobile, template_id, provider, status, attempts, code_digest)
         values ($1, $2, '1', 'ccp', 'sending', 1, $3)",
    )
    .bind(job.id)
    .bind(&mobile)
    .bind(job.digest(&key))
    .execute(&app.db)
    .await?;
    app.spawn_worker_from(app.settings.clone());
    Publisher::new(std::sync::Arc::new(app.settings.clone()), "test").publish(&job).await?;

    // While the other handler keeps the row alive, the job comes back and is parked again,
    // never sent.
    let live_for = std::time::Instant::now();
    while live_for.elapsed() < Duration::from_secs(3) {
        sqlx::query("update sms_deliveries set updated_at = now() where id = $1").bind(job.id).execute(&app.db).await?;
        assert!(fake.received_for(&mobile).is_empty(), "sent while another handler owned the row");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The other handler died: once the row has sat still past the round's budget (1 s) and
    // the margin, the job is taken over and sent once.
    let row = wait_until(Duration::from_secs(20), "the job taken over and sent", || async {
        status_of(&app, &mobile).await.filter(|(status, _)| status == "sent")
    })
    .await?;
    assert_eq!(row.1, 2, "the dead handler's attempt and this one");
    assert_eq!(fake.received_for(&mobile).len(), 1);
    app.cleanup().await
}

#[tokio::test]
async fn a_database_error_that_is_not_an_outage_parks_the_job_instead_of_stalling() -> TestResult {
    let (mut app, fake) = app_with_worker(&[]).await?;
    // Every statement on sms_deliveries now fails (42P01), as a broken migration or a
    // permission change would: not an outage to wait out.
    sqlx::query("alter table sms_deliveries rename to sms_deliveries_gone").execute(&app.db).await?;
    app.spawn_worker_from(app.settings.clone());
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");

    // The job leaves the worker (parked in the first retry queue) rather than sitting
    // unacked in one of its prefetch slots.
    wait_until(Duration::from_secs(10), "the job parked in the retry queue", || async {
        parked(&app).await.filter(|n| *n >= 1)
    })
    .await?;
    sqlx::query("alter table sms_deliveries_gone rename to sms_deliveries").execute(&app.db).await?;
    wait_until(Duration::from_secs(20), "the job sent once the table is back", || async {
        status_of(&app, &mobile).await.filter(|(status, _)| status == "sent")
    })
    .await?;
    assert_eq!(fake.received_for(&mobile).len(), 1);
    app.cleanup().await
}

#[tokio::test]
async fn waiting_for_redis_does_not_spend_the_retry_budget() -> TestResult {
    let (mut app, fake) = app_with_worker(&[]).await?;
    let mut blind = app.settings.clone();
    blind.redis_url = format!("redis://127.0.0.1:{DEAD_PORT}");
    let blind_addr = app.spawn_worker_from(blind);
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");

    // The worker that cannot reach Redis parks the job again and again…
    wait_until(Duration::from_secs(20), "the job parked three times", || async {
        parked_total(blind_addr, "redis").await.filter(|n| *n >= 3.0)
    })
    .await?;
    // …without an attempt being counted: the schedule has 5 steps, none spent.
    assert_eq!(status_of(&app, &mobile).await, None, "no attempt recorded while Redis was unreachable");

    // A worker that reaches Redis sends it on its first attempt.
    app.spawn_worker_from(app.settings.clone());
    let row = wait_until(Duration::from_secs(30), "the job sent", || async {
        status_of(&app, &mobile).await.filter(|(status, _)| status == "sent")
    })
    .await?;
    assert_eq!(row.1, 1);
    assert_eq!(fake.received_for(&mobile).len(), 1);
    app.cleanup().await
}

#[tokio::test]
async fn smsctl_requeues_a_delivery_whose_job_was_lost_while_its_code_is_live() -> TestResult {
    use clap::Parser;
    let (mut app, fake) = app_with_worker(&[]).await?;
    let key = app.settings.code_digest_key.expose_secret().as_bytes().to_vec();
    let mut redis = app.redis.clone();
    // Two rows left `retrying` whose jobs are nowhere: one untouched for an hour, one just now.
    let (lost, recent) = (random_mobile(), random_mobile());
    for (mobile, idle) in [(&lost, "1 hour"), (&recent, "0 seconds")] {
        let code = SmsCode::generate();
        let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), code.expose(), 300).await?;
        let id = uuid::Uuid::new_v4();
        sqlx::query(
            "insert into sms_deliveries (id, mobile, template_id, provider, status, attempts, code_digest, updated_at)
             values ($1, $2, '1', 'ccp', 'retrying', 1, $3, now() - $4::interval)",
        )
        .bind(id)
        .bind(mobile)
        .bind(code.digest(&key, id))
        .bind(idle)
        .execute(&app.db)
        .await?;
    }
    let cli = smsctl::Cli::try_parse_from(["smsctl", "replay", "--stale", "10m"])?;
    let mut out = Vec::new();
    assert!(smsctl::run(cli, &app.settings, &mut out).await?);
    let out = String::from_utf8(out)?;
    assert!(out.contains("requeue: 1 requeued, 0 skipped, 0 failed"), "{out}");

    app.spawn_worker_from(app.settings.clone());
    let row = wait_until(Duration::from_secs(20), "the lost job sent", || async {
        status_of(&app, &lost).await.filter(|(status, _)| status == "sent")
    })
    .await?;
    assert_eq!(row.1, 2, "it went on from its attempt");
    assert_eq!(fake.received_for(&lost).len(), 1);
    assert_eq!(
        status_of(&app, &recent).await.map(|r| r.0).as_deref(),
        Some("retrying"),
        "a row still moving is left alone"
    );
    app.cleanup().await
}

#[tokio::test]
async fn a_handler_that_was_taken_over_does_not_overwrite_the_outcome() -> TestResult {
    use shared::db::deliveries::{self, AttemptOutcome, AttemptStart, DeliveryStatus, NewAttempt};
    let app = TestApp::start(&[]).await?;
    let db = shared::db::Db::from(app.db.clone());
    let (id, mobile) = (uuid::Uuid::new_v4(), random_mobile());
    let attempt = NewAttempt { id, mobile: &mobile, template_id: "1", provider: "ccp", code_digest: "d" };
    let window = Duration::from_secs(60);
    assert_eq!(deliveries::start_attempt(&db, &attempt, window).await?, AttemptStart::Proceed { attempts: 1 });
    // A redelivery while the first handler is live is told to wait, not to send.
    assert_eq!(deliveries::start_attempt(&db, &attempt, window).await?, AttemptStart::InFlight);
    // The first handler stalled past the window; a second one took the row over and sent it.
    sqlx::query("update sms_deliveries set updated_at = now() - interval '2 minutes' where id = $1")
        .bind(id)
        .execute(&app.db)
        .await?;
    assert_eq!(deliveries::start_attempt(&db, &attempt, window).await?, AttemptStart::Proceed { attempts: 2 });
    let sent =
        AttemptOutcome { status: DeliveryStatus::Sent, provider: None, provider_message_id: None, last_error: None };
    assert!(deliveries::finish_attempt(&db, id, 2, &sent, &[]).await?);
    // The stalled first handler comes back with a failure: it must not overwrite `sent`.
    let late = AttemptOutcome { status: DeliveryStatus::Retrying, last_error: Some("late".into()), ..sent.clone() };
    assert!(!deliveries::finish_attempt(&db, id, 1, &late, &[]).await?);
    let status: String =
        sqlx::query_scalar("select status from sms_deliveries where id = $1").bind(id).fetch_one(&app.db).await?;
    assert_eq!(status, "sent");
    app.cleanup().await
}

/// The worker's group commit: one statement answers each row of a batch as the one-row form
/// would, whatever else the batch holds.
#[tokio::test]
async fn a_batch_of_starts_and_outcomes_answers_each_job_as_alone() -> TestResult {
    use shared::db::{
        attempts::NewCall,
        deliveries::{self, AttemptOutcome, AttemptStart, DeliveryStatus, Finish, NewAttempt},
    };
    let app = TestApp::start(&[]).await?;
    let db = shared::db::Db::from(app.db.clone());
    let window = Duration::from_secs(60);
    let ids: Vec<uuid::Uuid> = (0..4).map(|_| uuid::Uuid::new_v4()).collect();
    let mobiles: Vec<String> = (0..4).map(|_| random_mobile()).collect();
    let attempt =
        |i: usize| NewAttempt { id: ids[i], mobile: &mobiles[i], template_id: "1", provider: "ccp", code_digest: "d" };
    // Job 1 is being sent, job 2 waits for a retry, job 3 is done; job 0 is new.
    for i in 1..4 {
        deliveries::start_attempt(&db, &attempt(i), window).await?;
    }
    for (i, status) in [(2, "retrying"), (3, "sent")] {
        sqlx::query("update sms_deliveries set status = $2 where id = $1")
            .bind(ids[i])
            .bind(status)
            .execute(&app.db)
            .await?;
    }
    let batch: Vec<NewAttempt<'_>> = (0..4).map(attempt).collect();
    assert_eq!(
        deliveries::start_attempts(&db, &batch, window).await?,
        [
            AttemptStart::Proceed { attempts: 1 },
            AttemptStart::InFlight,
            AttemptStart::Proceed { attempts: 2 },
            AttemptStart::AlreadyFinal(DeliveryStatus::Sent),
        ]
    );

    let sent = AttemptOutcome {
        status: DeliveryStatus::Sent,
        provider: Some(shared::config::ProviderName::Ccp),
        provider_message_id: Some("m0".into()),
        last_error: None,
    };
    let call = NewCall {
        provider: "ccp",
        outcome: "sent",
        error: None,
        provider_message_id: Some("m0".into()),
        latency: Duration::from_millis(7),
    };
    let retrying = AttemptOutcome {
        status: DeliveryStatus::Retrying,
        provider_message_id: None,
        last_error: Some("ccp http 500".into()),
        ..sent.clone()
    };
    let calls = [call];
    let finishes = [
        Finish { id: ids[0], attempt: 1, outcome: &sent, calls: &calls },
        // Attempt 1 of job 2 is not the row's attempt any more (2 is): not written.
        Finish { id: ids[2], attempt: 1, outcome: &retrying, calls: &[] },
        Finish { id: ids[2], attempt: 2, outcome: &retrying, calls: &[] },
    ];
    // Distinct ids per batch: the stale attempt goes alone first, then the live one.
    assert_eq!(deliveries::finish_attempts(&db, &finishes[..2]).await?, [true, false]);
    assert_eq!(deliveries::finish_attempts(&db, &finishes[2..]).await?, [true]);
    let rows: Vec<(String, Option<String>, i64)> = sqlx::query_as(
        "select d.status, d.provider_message_id, (select count(*) from sms_attempts a where a.delivery_id = d.id) \
         from sms_deliveries d where d.id = any($1) order by array_position($1, d.id)",
    )
    .bind(&ids[..3])
    .fetch_all(&app.db)
    .await?;
    assert_eq!(
        rows,
        [
            ("sent".to_owned(), Some("m0".to_owned()), 1),
            ("sending".to_owned(), None, 0),
            ("retrying".to_owned(), None, 0),
        ]
    );
    app.cleanup().await
}

/// Messages ready in this test's dead-letter queue.
async fn dead_letters(app: &TestApp) -> Option<u32> {
    let (connection, channel) = app.amqp().await.ok()?;
    let options = QueueDeclareOptions { passive: true, ..Default::default() };
    let declared =
        channel.queue_declare(app.topology.dead_queue().as_str().into(), options, Default::default()).await.ok();
    let _ = connection.close(200, "done".into()).await;
    declared.map(|q| q.message_count())
}

#[tokio::test]
async fn a_job_that_cannot_be_parked_goes_back_to_the_queue_instead_of_the_dead_letters() -> TestResult {
    let (mut app, fake) = app_with_worker(&[]).await?;
    // Every job needs parking: its table is gone.
    sqlx::query("alter table sms_deliveries rename to sms_deliveries_gone").execute(&app.db).await?;
    let worker = app.spawn_worker_from(app.settings.clone());
    // A first job is parked: the worker's retry publisher is now connected, its topology declared.
    let (_, body) = app.request_code(&random_mobile()).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let before = wait_until(Duration::from_secs(15), "a first job parked", || async {
        parked_total(worker, "database").await.filter(|n| *n >= 1.0)
    })
    .await?;
    // Now parking fails: the first retry queue is gone, a publish to it comes back unroutable.
    let (connection, channel) = app.amqp().await?;
    let retry = app.topology.retry_queue(Duration::from_secs(1));
    channel.queue_delete(retry.as_str().into(), Default::default()).await?;
    let _ = connection.close(200, "done".into()).await;

    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    // The worker keeps trying the job (back on the send queue after a pause), never
    // dead-letters it…
    wait_until(Duration::from_secs(15), "the job tried, requeued and tried again", || async {
        parked_total(worker, "database").await.filter(|n| *n >= before + 2.0)
    })
    .await?;
    assert_eq!(dead_letters(&app).await, Some(0), "not dead-lettered");
    // …so once the table is back, it is sent.
    sqlx::query("alter table sms_deliveries_gone rename to sms_deliveries").execute(&app.db).await?;
    wait_until(Duration::from_secs(20), "the job sent", || async {
        status_of(&app, &mobile).await.filter(|(status, _)| status == "sent")
    })
    .await?;
    assert_eq!(fake.received_for(&mobile).len(), 1);
    app.cleanup().await
}
