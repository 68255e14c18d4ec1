//! Operations: smsctl, readiness, metrics, OpenAPI, request ids and what logs may contain.

use std::{sync::Arc, time::Duration};

use clap::Parser;
use providers::ccp::CcpProvider;
use redis::AsyncCommands;
use serde_json::Value;
use tests::{
    DEAD_PORT, TestApp, TestResult,
    ccp_fake::{AUTH_TOKEN, CcpFake, Reply},
    random_mobile, wait_until,
};

/// Runs smsctl with `args` against `app`'s configuration: (success, output).
async fn smsctl(app: &TestApp, args: &[&str]) -> TestResult<(bool, String)> {
    let cli = smsctl::Cli::try_parse_from(std::iter::once("smsctl").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let ok = smsctl::run(cli, &app.settings, &mut out).await?;
    Ok((ok, String::from_utf8(out)?))
}

async fn statuses(app: &TestApp, mobile: &str) -> TestResult<Vec<(String, Option<uuid::Uuid>)>> {
    Ok(sqlx::query_as("select status, replay_of from sms_deliveries where mobile = $1 order by created_at")
        .bind(mobile)
        .fetch_all(&app.db)
        .await?)
}

/// An app whose worker sends through a CCP fake that refuses the first request with 160042
/// (a recipient refusal: no provider would do better, so the delivery fails at once).
async fn app_with_one_failed_delivery() -> TestResult<(TestApp, CcpFake, String)> {
    let fake = CcpFake::start().await?;
    let vars = fake.env();
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    let provider = Arc::new(CcpProvider::new(fake.settings(), Duration::from_secs(5))?);
    app.spawn_worker_with(app.settings.clone(), provider);
    fake.script([Reply::Status("160042")]);
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    wait_until(Duration::from_secs(15), "a failed delivery", || async {
        statuses(&app, &mobile).await.ok().filter(|s| s.first().is_some_and(|(st, _)| st == "failed"))
    })
    .await?;
    Ok((app, fake, mobile))
}

#[tokio::test]
async fn replay_resends_a_failed_delivery_once_and_only_while_its_code_is_live() -> TestResult {
    let (app, fake, mobile) = app_with_one_failed_delivery().await?;

    // --dry-run says what it would do and changes nothing.
    let (ok, out) = smsctl(&app, &["replay", "--status", "failed", "--dry-run"]).await?;
    assert!(ok, "{out}");
    assert!(out.contains("would replay"), "{out}");
    assert!(out.contains("replay (dry run): 1 replayed, 0 skipped, 0 failed"), "{out}");
    assert_eq!(statuses(&app, &mobile).await?.len(), 1);

    let (ok, out) = smsctl(&app, &["replay", "--status", "failed"]).await?;
    assert!(ok, "{out}");
    assert!(out.ends_with("replay: 1 replayed, 0 skipped, 0 failed\n"), "{out}");
    let rows = wait_until(Duration::from_secs(15), "the replay to be sent", || async {
        statuses(&app, &mobile).await.ok().filter(|s| s.len() == 2 && s[1].0 == "sent")
    })
    .await?;
    let original: uuid::Uuid =
        sqlx::query_scalar("select id from sms_deliveries where mobile = $1 and replay_of is null")
            .bind(&mobile)
            .fetch_one(&app.db)
            .await?;
    assert_eq!(rows[1].1, Some(original), "linked by replay_of");
    let replies: Vec<String> = fake.received_for(&mobile).into_iter().map(|r| r.reply).collect();
    assert_eq!(replies, ["160042", "000000"]);
    assert_eq!(fake.received_for(&mobile)[1].code, app.sms_code_of(&mobile).await?.ok_or("code")?);

    // A second run finds nothing to do.
    let (ok, out) = smsctl(&app, &["replay", "--id", &original.to_string()]).await?;
    assert!(ok, "{out}");
    assert!(out.contains("already replayed as"), "{out}");
    assert!(out.contains("0 replayed, 1 skipped, 0 failed"), "{out}");
    assert_eq!(fake.received_for(&mobile).len(), 2);
    app.cleanup().await
}

#[tokio::test]
async fn replay_skips_an_expired_or_superseded_code() -> TestResult {
    let (app, fake, mobile) = app_with_one_failed_delivery().await?;
    let key = format!("{}SMS_{mobile}", app.keys.prefix());
    let mut redis = app.redis.clone();
    let () = redis.set_ex(&key, "000000", 300).await?;
    let (ok, out) = smsctl(&app, &["replay", "--status", "failed", "--mobile", &mobile]).await?;
    assert!(ok);
    assert!(out.contains("code superseded"), "{out}");
    let () = redis.del(&key).await?;
    let (ok, out) = smsctl(&app, &["replay", "--status", "failed"]).await?;
    assert!(ok);
    assert!(out.contains("code expired"), "{out}");
    assert!(out.contains("0 replayed, 1 skipped, 0 failed"), "{out}");
    assert_eq!(statuses(&app, &mobile).await?.len(), 1);
    assert_eq!(fake.received_for(&mobile).len(), 1);

    // An unknown id is a failure: exit status 1.
    let (ok, out) = smsctl(&app, &["replay", "--id", &uuid::Uuid::new_v4().to_string()]).await?;
    assert!(!ok, "{out}");
    assert!(out.contains("no such delivery"), "{out}");
    app.cleanup().await
}

#[tokio::test]
async fn deliveries_and_stats_show_what_happened() -> TestResult {
    let (app, _fake, mobile) = app_with_one_failed_delivery().await?;
    let (_, out) = smsctl(&app, &["deliveries", "--status", "failed", "--json"]).await?;
    let rows: Vec<Value> = out.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["mobile"], mobile.as_str());
    assert!(rows[0]["last_error"].as_str().is_some_and(|e| e.starts_with("ccp 160042")), "{}", rows[0]);
    assert!(rows[0].get("code_digest").is_none(), "digest not printed");

    let (_, out) = smsctl(&app, &["deliveries", "--since", "1h", "--mobile", &mobile]).await?;
    assert!(out.contains("1 deliveries") && out.contains("failed"), "{out}");
    let (_, out) = smsctl(&app, &["stats", "--since", "1h", "--json"]).await?;
    let counts: Value = serde_json::from_str(out.trim())?;
    assert_eq!(counts["failed"], 1, "{out}");
    assert!(smsctl(&app, &["replay"]).await.is_err(), "replay needs --id or --status");
    app.cleanup().await
}

#[tokio::test]
async fn readyz_names_the_dependency_that_is_down() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let response = app.http.get(format!("{}/readyz", app.base)).send().await?;
    assert_eq!(response.status(), 200);
    app.cleanup().await?;

    for (var, url, name) in [
        ("REDIS_URL", format!("redis://127.0.0.1:{DEAD_PORT}"), "redis"),
        ("AMQP_URL", format!("amqp://guest:guest@127.0.0.1:{DEAD_PORT}/%2f"), "rabbitmq"),
    ] {
        let app = TestApp::start(&[(var, &url)]).await?;
        let response = app.http.get(format!("{}/readyz", app.base)).send().await?;
        assert_eq!(response.status(), 503, "{name}");
        let body: Value = response.json().await?;
        assert_eq!(body["failing"], serde_json::json!([name]), "{body}");
        app.cleanup().await?;
    }
    Ok(())
}

#[tokio::test]
async fn metrics_move_with_traffic_on_the_api_and_the_worker() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    let worker = app.spawn_worker();
    for _ in 0..2 {
        let (_, body) = app.request_code(&random_mobile()).await?;
        assert_eq!(body["errno"], 0);
    }
    app.post_json("/passport/sms_code", &serde_json::json!({})).await?;
    wait_until(Duration::from_secs(15), "two sent rows", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from sms_deliveries where status = 'sent'")
            .fetch_one(&app.db)
            .await
            .ok()?;
        (n == 2).then_some(())
    })
    .await?;

    let text = app.http.get(format!("{}/metrics", app.base)).send().await?.text().await?;
    let value = |line_start: &str| -> f64 {
        text.lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0.0)
    };
    assert!(value(r#"smscode_api_requests_total{route="/passport/sms_code",errno="0",status="200"}"#) >= 2.0, "{text}");
    assert!(
        value(r#"smscode_api_requests_total{route="/passport/sms_code",errno="4103",status="200"}"#) >= 1.0,
        "{text}"
    );
    assert!(text.contains("smscode_api_request_duration_seconds_bucket"), "a latency histogram");
    assert!(value(r#"smscode_worker_deliveries_total{status="sent",provider="log"}"#) >= 2.0, "{text}");

    // The worker serves its own endpoints.
    let worker_ready = app.http.get(format!("http://{worker}/readyz")).send().await?;
    assert_eq!(worker_ready.status(), 200);
    let worker_metrics = app.http.get(format!("http://{worker}/metrics")).send().await?.text().await?;
    assert!(worker_metrics.contains("smscode_worker_provider_duration_seconds"), "{worker_metrics}");
    assert!(worker_metrics.contains("smscode_worker_sends_in_flight"));
    app.cleanup().await
}

#[tokio::test]
async fn the_openapi_document_lists_every_endpoint() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let doc: Value = app.http.get(format!("{}/openapi.json", app.base)).send().await?.json().await?;
    assert!(doc["openapi"].as_str().is_some_and(|v| v.starts_with("3.")), "{}", doc["openapi"]);
    for (path, method) in [
        ("/passport/image_code", "get"),
        ("/passport/sms_code", "post"),
        ("/passport/register", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
        ("/openapi.json", "get"),
        ("/", "get"),
    ] {
        assert!(doc["paths"][path][method].is_object(), "{method} {path} missing");
    }
    let schemas = &doc["components"]["schemas"];
    for schema in ["Reply", "SmsCodeRequest", "RegisterRequest"] {
        assert!(schemas[schema].is_object(), "schema {schema}");
    }
    let description = doc["info"]["description"].as_str().unwrap_or("");
    for errno in shared::Errno::ALL {
        assert!(description.contains(&format!("| {} |", errno.code())), "errno {errno:?} documented");
    }
    app.cleanup().await
}

#[tokio::test]
async fn a_request_id_is_echoed_and_carried_into_the_job() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let id = uuid::Uuid::new_v4().to_string();
    let text = app.captcha(&id).await?;
    let response = app
        .http
        .post(format!("{}/passport/sms_code", app.base))
        .header("x-request-id", "trace-me-42")
        .json(&serde_json::json!({"mobile": random_mobile(), "image_code": text, "image_code_id": id}))
        .send()
        .await?;
    assert_eq!(response.headers()["x-request-id"], "trace-me-42");
    let job: Value = serde_json::from_slice(&app.take_queued().await?.ok_or("no job")?.data)?;
    assert_eq!(job["request_id"], "trace-me-42");
    // Generated when absent.
    let response = app.http.get(format!("{}/healthz", app.base)).send().await?;
    assert!(response.headers().get("x-request-id").is_some_and(|v| v.len() >= 32));
    app.cleanup().await
}

const API_BIN: &str = env!("CARGO_BIN_EXE_api-under-test");
const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker-under-test");

#[tokio::test]
async fn no_code_token_or_full_mobile_reaches_the_logs() -> TestResult {
    let fake = CcpFake::start().await?;
    let mut app = TestApp::start(&[]).await?;
    let dir = std::env::temp_dir().join(format!("smscode-logs-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir)?;
    let (api_log, worker_log) = (dir.join("api.log"), dir.join("worker.log"));
    let port = std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
    let verbose = [("RUST_LOG".to_owned(), "debug".to_owned()), ("LOG_FORMAT".to_owned(), "json".to_owned())];
    let mut api_env = verbose.to_vec();
    api_env.push(("API_ADDR".into(), format!("127.0.0.1:{port}")));
    app.spawn_process(API_BIN, &api_env, Some(&api_log))?;
    let mut worker_env = verbose.to_vec();
    worker_env.extend(fake.env());
    app.spawn_process(WORKER_BIN, &worker_env, Some(&worker_log))?;

    let base = format!("http://127.0.0.1:{port}");
    wait_until(Duration::from_secs(20), "the api process", || async {
        app.http.get(format!("{base}/healthz")).send().await.ok().filter(|r| r.status().is_success())
    })
    .await?;
    let mobile = random_mobile();
    let id = uuid::Uuid::new_v4().to_string();
    app.http.get(format!("{base}/passport/image_code?image_code_id={id}")).send().await?;
    let mut redis = app.redis.clone();
    let captcha: String = redis.get(format!("{}ImageCode_{id}", app.keys.prefix())).await?;
    let body = serde_json::json!({"mobile": mobile, "image_code": captcha, "image_code_id": id});
    let answer: Value = app.http.post(format!("{base}/passport/sms_code")).json(&body).send().await?.json().await?;
    assert_eq!(answer["errno"], 0, "{answer}");
    let code = app.sms_code_of(&mobile).await?.ok_or("no code")?;
    wait_until(Duration::from_secs(20), "the delivery", || async {
        (fake.received_for(&mobile).len() == 1).then_some(())
    })
    .await?;
    // The worker has written its last lines about the job once the row is recorded.
    wait_until(Duration::from_secs(10), "the sent row", || async {
        let n: i64 = sqlx::query_scalar("select count(*) from sms_deliveries where status = 'sent'")
            .fetch_one(&app.db)
            .await
            .ok()?;
        (n == 1).then_some(())
    })
    .await?;
    let answer: Value = app
        .http
        .post(format!("{base}/passport/register"))
        .json(&serde_json::json!({"mobile": mobile, "sms_code": code, "password": "secret-password-1"}))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["errno"], 0, "{answer}");
    app.cleanup().await?;

    let logs = std::fs::read_to_string(&api_log)? + &std::fs::read_to_string(&worker_log)?;
    assert!(logs.lines().count() > 10, "debug logs were written:\n{logs}");
    assert!(logs.contains("138****") || logs.contains(&format!("{}****", &mobile[..3])), "masked mobiles are logged");
    // The code as a JSON string value or inside an escaped one (a bare 6-digit search would
    // also hit the microseconds of timestamps).
    let quoted_code = [format!("\"{code}\""), format!("{code}\\\"")];
    for secret in [quoted_code[0].as_str(), quoted_code[1].as_str(), AUTH_TOKEN, mobile.as_str(), "secret-password-1"] {
        let hits: Vec<&str> = logs.lines().filter(|l| l.contains(secret)).collect();
        assert!(hits.is_empty(), "{secret:?} found in logs: {hits:#?}");
    }
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}
