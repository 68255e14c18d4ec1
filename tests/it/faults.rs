//! Dependency outages against the real servers: broker connections closed, the broker
//! restarted, PostgreSQL backends terminated, Redis restarted. Some of these disturb every
//! client of a shared server, so `scripts/test` runs this module on its own, one test at a
//! time, after the rest of the suite; each test leaves the servers running as it found them.

use std::{
    process::Command,
    time::{Duration, Instant},
};

use serde_json::Value;
use tests::{TestApp, TestResult, random_mobile, wait_until};

/// The longest any request may take while a dependency is failing.
const MAX_ANSWER: Duration = Duration::from_secs(5);

/// A stream sends more requests from one address than the default hourly cap allows.
const STREAM_LIMITS: &[(&str, &str)] = &[("SMS_HOURLY_LIMIT_PER_IP", "1000")];

/// One request of a stream: (mobile, errno, how long it took).
type Answer = (String, i64, Duration);

/// Sends sms_code requests one after another: `before` of them, then `disrupt`, then more
/// until five in a row succeed again (at most for a minute).
async fn stream(app: &TestApp, before: usize, disrupt: impl AsyncFnOnce()) -> TestResult<Vec<Answer>> {
    let mut answers: Vec<Answer> = Vec::new();
    let mut disrupt = Some(disrupt);
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if answers.len() == before
            && let Some(disrupt) = disrupt.take()
        {
            disrupt().await;
        }
        let recovered =
            disrupt.is_none() && answers.len() > before + 5 && answers.iter().rev().take(5).all(|a| a.1 == 0);
        if recovered || Instant::now() > deadline {
            return Ok(answers);
        }
        let mobile = random_mobile();
        let started = Instant::now();
        let errno = match app.request_code(&mobile).await {
            Ok((_, body)) => body["errno"].as_i64().unwrap_or(-1),
            // The captcha fetch itself failed (Redis down): count it as the api's 4001.
            Err(_) => 4001,
        };
        answers.push((mobile, errno, started.elapsed()));
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every answer is one of `allowed`, none took long, the stream recovered, and every mobile
/// answered 0 gets its SMS.
async fn check_no_loss(app: &TestApp, answers: &[Answer], allowed: &[i64]) -> TestResult {
    for (mobile, errno, took) in answers {
        assert!(allowed.contains(errno), "{mobile}: errno {errno}");
        assert!(*took < MAX_ANSWER, "{mobile} waited {took:?}");
    }
    let tail_ok = answers.iter().rev().take(5).all(|(_, errno, _)| *errno == 0);
    assert!(tail_ok, "the last requests succeed again: {answers:?}");
    let accepted: Vec<&String> = answers.iter().filter(|(_, e, _)| *e == 0).map(|(m, _, _)| m).collect();
    wait_until(Duration::from_secs(60), "every accepted code delivered", || async {
        let sent: i64 =
            sqlx::query_scalar("select count(*) from sms_deliveries where status = 'sent' and mobile = any($1)")
                .bind(&accepted)
                .fetch_one(&app.db)
                .await
                .ok()?;
        (sent == accepted.len() as i64).then_some(())
    })
    .await
}

fn rabbitmqctl(args: &[&str]) -> TestResult<String> {
    let output = Command::new("rabbitmqctl").args(args).output()?;
    if !output.status.success() {
        return Err(format!("rabbitmqctl {args:?}: {}", String::from_utf8_lossy(&output.stderr)).into());
    }
    Ok(String::from_utf8(output.stdout)?)
}

#[tokio::test]
async fn closing_our_broker_connections_mid_stream_loses_nothing() -> TestResult {
    let mut app = TestApp::start(STREAM_LIMITS).await?;
    app.spawn_worker();
    let prefix = app.settings.amqp_prefix.clone();
    let answers = stream(&app, 15, async || {
        // Only this test's connections (named "<role> <AMQP_PREFIX>").
        if let Ok(list) = rabbitmqctl(&["-q", "list_connections", "pid", "client_properties"]) {
            for line in list.lines().filter(|l| l.contains(&format!(" {prefix}\""))) {
                if let Some(pid) = line.split('\t').next() {
                    let _ = rabbitmqctl(&["close_connection", pid, "fault test"]);
                }
            }
        }
    })
    .await?;
    check_no_loss(&app, &answers, &[0, 4301]).await?;
    app.cleanup().await
}

#[tokio::test]
async fn a_broker_restart_mid_stream_answers_4301_quickly_then_recovers() -> TestResult {
    let mut app = TestApp::start(STREAM_LIMITS).await?;
    app.spawn_worker();
    let answers = stream(&app, 10, async || {
        let _ = rabbitmqctl(&["stop_app"]);
        // Back in the background while requests keep coming.
        std::thread::spawn(|| {
            std::thread::sleep(Duration::from_secs(2));
            let _ = rabbitmqctl(&["start_app"]);
        });
    })
    .await;
    // Whatever happened, leave the broker running.
    let _ = rabbitmqctl(&["start_app"]);
    let _ = rabbitmqctl(&["await_startup"]);
    let answers = answers?;
    assert!(answers.iter().any(|(_, e, _)| *e == 4301), "the outage was seen: {answers:?}");
    check_no_loss(&app, &answers, &[0, 4301]).await?;
    app.cleanup().await
}

#[tokio::test]
async fn terminated_postgres_backends_lose_nothing() -> TestResult {
    let mut app = TestApp::start(STREAM_LIMITS).await?;
    app.spawn_worker();
    let database: String = sqlx::query_scalar("select current_database()").fetch_one(&app.db).await?;
    let admin = sqlx::PgPool::connect(&format!("{}/postgres", tests::pg_server_url())).await?;
    let answers = stream(&app, 10, async || {
        let _ = sqlx::query("select pg_terminate_backend(pid) from pg_stat_activity where datname = $1")
            .bind(&database)
            .execute(&admin)
            .await;
    })
    .await?;
    // The pool may hand out one dead connection per process before it notices: 4001 then.
    check_no_loss(&app, &answers, &[0, 4001]).await?;
    app.cleanup().await
}

/// Restarts the shared Redis on drop, so a failing test never leaves it down.
struct RedisGuard;

impl Drop for RedisGuard {
    fn drop(&mut self) {
        if std::net::TcpStream::connect("127.0.0.1:6379").is_err() {
            let _ = start_redis();
        }
    }
}

/// The machine's own command for its Redis (see the env notes in the README).
fn start_redis() -> std::io::Result<std::process::ExitStatus> {
    let dir = if std::path::Path::new("/var/lib/redis").is_dir() { "/var/lib/redis" } else { "/tmp" };
    Command::new("redis-server")
        .args([
            "--daemonize",
            "yes",
            "--bind",
            "127.0.0.1",
            "-::1",
            "--port",
            "6379",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .args(["--dir", dir, "--logfile", "/tmp/smscode-redis-fault-test.log"])
        .status()
}

#[tokio::test]
async fn a_redis_restart_answers_4001_while_down_and_recovers() -> TestResult {
    let mut app = TestApp::start(STREAM_LIMITS).await?;
    app.spawn_worker();
    let _guard = RedisGuard;
    let (ok, _) = app.request_code(&random_mobile()).await?;
    assert_eq!(ok, 200);

    let _ = Command::new("redis-cli").args(["-p", "6379", "shutdown", "nosave"]).status();
    wait_until(Duration::from_secs(10), "redis to stop", || async {
        std::net::TcpStream::connect("127.0.0.1:6379").is_err().then_some(())
    })
    .await?;
    for _ in 0..3 {
        let started = Instant::now();
        let (status, body): (u16, Value) = app
            .post_json(
                "/passport/sms_code",
                &serde_json::json!({"mobile": random_mobile(), "image_code": "ABCD", "image_code_id": "x"}),
            )
            .await?;
        assert_eq!((status, body["errno"].as_i64()), (200, Some(4001)), "{body}");
        assert!(started.elapsed() < MAX_ANSWER, "waited {:?}", started.elapsed());
    }
    let ready = app.http.get(format!("{}/readyz", app.base)).send().await?;
    assert_eq!(ready.status(), 503);

    start_redis()?;
    wait_until(Duration::from_secs(15), "the api to work again", || async {
        let (_, body) = app.request_code(&random_mobile()).await.ok()?;
        (body["errno"] == 0).then_some(())
    })
    .await?;
    let ready = app.http.get(format!("{}/readyz", app.base)).send().await?;
    assert_eq!(ready.status(), 200);
    app.cleanup().await
}
