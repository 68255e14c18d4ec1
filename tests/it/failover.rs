//! Routing, failover and circuit breakers across providers, end to end: the real api and
//! worker, the real servers, and strict fakes of each provider's HTTP API.

use std::time::Duration;

use chrono::{DateTime, Utc};
use tests::{
    TestApp, TestResult,
    aliyun_fake::AliyunFake,
    ccp_fake::{self, CcpFake},
    random_mobile,
    tencent_fake::{self, TencentFake},
    twilio_fake::TwilioFake,
    wait_until,
};

const WORKER_BIN: &str = env!("CARGO_BIN_EXE_worker-under-test");

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    provider: String,
    attempts: i32,
    provider_message_id: Option<String>,
    last_error: Option<String>,
    sent_at: Option<DateTime<Utc>>,
}

#[derive(Debug, PartialEq, Eq, sqlx::FromRow)]
struct Call {
    attempt: i32,
    provider: String,
    outcome: String,
}

/// The delivery of `mobile` once it reaches `status`.
async fn wait_for(app: &TestApp, mobile: &str, status: &str) -> TestResult<Row> {
    wait_until(Duration::from_secs(20), &format!("{mobile} to be {status}"), || async {
        sqlx::query_as::<_, Row>(
            "select status, provider, attempts, provider_message_id, last_error, sent_at
             from sms_deliveries where mobile = $1",
        )
        .bind(mobile)
        .fetch_optional(&app.db)
        .await
        .ok()
        .flatten()
        .filter(|row| row.status == status)
    })
    .await
}

/// The provider calls recorded for `mobile`, in order.
async fn calls(app: &TestApp, mobile: &str) -> TestResult<Vec<Call>> {
    Ok(sqlx::query_as(
        "select a.attempt, a.provider, a.outcome from sms_attempts a
         join sms_deliveries d on d.id = a.delivery_id where d.mobile = $1 order by a.id",
    )
    .bind(mobile)
    .fetch_all(&app.db)
    .await?)
}

fn call(attempt: i32, provider: &str, outcome: &str) -> Call {
    Call { attempt, provider: provider.into(), outcome: outcome.into() }
}

/// An api and a worker whose `SMS_PROVIDERS` is `ccp,tencent`, both pointed at fakes.
async fn ccp_then_tencent(overrides: &[(&str, &str)]) -> TestResult<(TestApp, CcpFake, TencentFake)> {
    let (ccp, tencent) = (CcpFake::start().await?, TencentFake::start().await?);
    let mut vars: Vec<(String, String)> = ccp.env().into_iter().filter(|(k, _)| k != "SMS_PROVIDER").collect();
    vars.extend(tencent.env());
    vars.push(("SMS_PROVIDERS".into(), "ccp,tencent".into()));
    vars.push(("SMS_HOURLY_LIMIT_PER_IP".into(), "1000".into()));
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    app.spawn_worker_from(app.settings.clone());
    Ok((app, ccp, tencent))
}

/// Requests a code for a new mobile; returns it and the code stored in Redis.
async fn request(app: &TestApp) -> TestResult<(String, String)> {
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let code = app.sms_code_of(&mobile).await?.ok_or("no code stored")?;
    Ok((mobile, code))
}

#[tokio::test]
async fn a_ccp_5xx_fails_over_to_tencent_at_once_with_the_same_code() -> TestResult {
    let (app, ccp, tencent) = ccp_then_tencent(&[]).await?;
    ccp.script([ccp_fake::Reply::Http(500)]);
    let (mobile, code) = request(&app).await?;

    let row = wait_for(&app, &mobile, "sent").await?;
    assert_eq!((row.provider.as_str(), row.attempts), ("tencent", 1), "failed over within the first attempt: {row:?}");
    let got = tencent.received_for(&format!("+86{mobile}"));
    assert_eq!(got.len(), 1, "tencent got the number in E.164");
    assert_eq!(got[0].template_params, [code.as_str(), "5"], "the same code, never a new one");
    assert_eq!(row.provider_message_id, got[0].serial_no, "the message id is tencent's SerialNo");
    assert_eq!(calls(&app, &mobile).await?, [call(1, "ccp", "transient"), call(1, "tencent", "sent")]);
    assert!(ccp.violations().is_empty() && tencent.violations().is_empty());
    app.cleanup().await
}

/// Runs smsctl with `args` against `app`'s configuration: (success, output).
async fn smsctl(app: &TestApp, args: &[&str]) -> TestResult<(bool, String)> {
    use clap::Parser;
    let cli = smsctl::Cli::try_parse_from(std::iter::once("smsctl").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let ok = smsctl::run(cli, &app.settings, &mut out).await?;
    Ok((ok, String::from_utf8(out)?))
}

#[tokio::test]
async fn smsctl_shows_the_outage_and_the_failover_that_covered_it() -> TestResult {
    let (app, ccp, _tencent) = ccp_then_tencent(&[]).await?;
    ccp.script([ccp_fake::Reply::Http(502), ccp_fake::Reply::Http(502), ccp_fake::Reply::Status("160000")]);
    let mut mobiles = Vec::new();
    for _ in 0..4 {
        let (mobile, _) = request(&app).await?;
        wait_for(&app, &mobile, "sent").await?;
        mobiles.push(mobile);
    }

    let (ok, json) = smsctl(&app, &["providers", "--since", "1h", "--json"]).await?;
    assert!(ok);
    let rows: Vec<serde_json::Value> = json.lines().map(serde_json::from_str).collect::<Result<_, _>>()?;
    let of = |name: &str| rows.iter().find(|r| r["provider"] == name).cloned().unwrap_or_default();
    assert_eq!(
        (of("ccp")["calls"].as_i64(), of("ccp")["transient"].as_i64(), of("ccp")["sent"].as_i64()),
        (Some(4), Some(3), Some(1))
    );
    assert_eq!((of("tencent")["calls"].as_i64(), of("tencent")["sent"].as_i64()), (Some(3), Some(3)));

    let id: uuid::Uuid = sqlx::query_scalar("select id from sms_deliveries where mobile = $1")
        .bind(&mobiles[0])
        .fetch_one(&app.db)
        .await?;
    let (ok, table) = smsctl(&app, &["deliveries", "--id", &id.to_string()]).await?;
    assert!(ok, "{table}");
    assert!(table.contains("ccp       transient") && table.contains("tencent   sent"), "{table}");
    assert!(table.contains("ccp http 502"), "{table}");
    let (_, summary) = smsctl(&app, &["providers", "--since", "1h"]).await?;
    eprintln!("{summary}\n{table}");
    app.cleanup().await
}

#[tokio::test]
async fn a_ccp_timeout_fails_over_to_tencent() -> TestResult {
    let (app, ccp, tencent) = ccp_then_tencent(&[("SMS_PROVIDER_TIMEOUT_SECS", "1")]).await?;
    ccp.set_latency(Duration::from_secs(3));
    let (mobile, code) = request(&app).await?;

    let row = wait_for(&app, &mobile, "sent").await?;
    assert_eq!((row.provider.as_str(), row.attempts), ("tencent", 1), "{row:?}");
    assert_eq!(tencent.received_for(&format!("+86{mobile}"))[0].template_params[0], code);
    assert_eq!(calls(&app, &mobile).await?, [call(1, "ccp", "transient"), call(1, "tencent", "sent")]);
    app.cleanup().await
}

#[tokio::test]
async fn a_provider_side_refusal_fails_over_but_a_recipient_refusal_or_number_limit_does_not() -> TestResult {
    let (app, ccp, tencent) = ccp_then_tencent(&[]).await?;

    // 160014: the channel's balance is used up; another provider can still send.
    ccp.script([ccp_fake::Reply::Status("160014")]);
    let (balance, _) = request(&app).await?;
    let row = wait_for(&app, &balance, "sent").await?;
    assert_eq!(row.provider, "tencent");
    assert_eq!(calls(&app, &balance).await?, [call(1, "ccp", "provider"), call(1, "tencent", "sent")]);

    // 160042: a malformed number; no provider would do better.
    ccp.script([ccp_fake::Reply::Status("160042")]);
    let (bad_number, _) = request(&app).await?;
    let row = wait_for(&app, &bad_number, "failed").await?;
    assert!(row.last_error.as_deref().is_some_and(|e| e.starts_with("ccp 160042")), "{row:?}");
    assert_eq!(calls(&app, &bad_number).await?, [call(1, "ccp", "recipient")]);

    // 160038: ccp's own frequency limit for this number; tencent must not get round it.
    ccp.script([ccp_fake::Reply::Status("160038")]);
    let (limited, _) = request(&app).await?;
    let row = wait_for(&app, &limited, "failed").await?;
    assert_eq!(calls(&app, &limited).await?, [call(1, "ccp", "number_limited")]);
    assert_eq!(row.attempts, 1);

    for mobile in [&bad_number, &limited] {
        assert!(tencent.received_for(&format!("+86{mobile}")).is_empty(), "{mobile} must not reach tencent");
    }
    app.cleanup().await
}

#[tokio::test]
async fn when_every_provider_fails_the_job_waits_for_the_schedule_then_succeeds() -> TestResult {
    let (app, ccp, tencent) = ccp_then_tencent(&[("SMS_RETRY_SCHEDULE_SECS", "1")]).await?;
    ccp.script([ccp_fake::Reply::Http(503)]);
    tencent.script([tencent_fake::Reply::Error("InternalError.Timeout")]);
    let (mobile, _) = request(&app).await?;

    let row = wait_for(&app, &mobile, "sent").await?;
    assert_eq!((row.provider.as_str(), row.attempts), ("ccp", 2), "the second round starts again at ccp: {row:?}");
    assert_eq!(
        calls(&app, &mobile).await?,
        [call(1, "ccp", "transient"), call(1, "tencent", "transient"), call(2, "ccp", "sent")]
    );
    app.cleanup().await
}

#[tokio::test]
async fn the_breaker_stops_ccp_traffic_after_n_failures_and_probes_after_the_open_period() -> TestResult {
    let (app, ccp, tencent) =
        ccp_then_tencent(&[("PROVIDER_BREAKER_FAILURES", "3"), ("PROVIDER_BREAKER_OPEN_SECS", "2")]).await?;
    ccp.script(std::iter::repeat_n(ccp_fake::Reply::Http(500), 3));

    // One request at a time, so that the count of calls is exact.
    let mut opened = std::time::Instant::now();
    for n in 1..=6 {
        let (mobile, _) = request(&app).await?;
        assert_eq!(wait_for(&app, &mobile, "sent").await?.provider, "tencent");
        if n == 3 {
            // The third failure opened the breaker (at the latest) now.
            opened = std::time::Instant::now();
        }
    }
    assert_eq!(ccp.received().len(), 3, "after 3 failures ccp is skipped");
    assert_eq!(tencent.received().len(), 6);

    // ccp works again (its script is used up); after the open period one probe reaches it
    // and closes the breaker.
    let probe = wait_until(Duration::from_secs(15), "a probe to reach ccp", || async {
        let (mobile, _) = request(&app).await.ok()?;
        let row = wait_for(&app, &mobile, "sent").await.ok()?;
        (row.provider == "ccp").then_some(mobile)
    })
    .await?;
    assert!(opened.elapsed() >= Duration::from_secs(2), "no probe before the open period ends");
    assert_eq!(calls(&app, &probe).await?, [call(1, "ccp", "sent")]);
    let (next, _) = request(&app).await?;
    assert_eq!(wait_for(&app, &next, "sent").await?.provider, "ccp", "closed again");
    app.cleanup().await
}

#[tokio::test]
async fn numbers_are_routed_by_country() -> TestResult {
    let (ccp, twilio) = (CcpFake::start().await?, TwilioFake::start().await?);
    let mut vars: Vec<(String, String)> = ccp.env().into_iter().filter(|(k, _)| k != "SMS_PROVIDER").collect();
    vars.extend(twilio.env());
    vars.push(("SMS_PROVIDERS".into(), "ccp,twilio".into()));
    vars.push(("MOBILE_PATTERN".into(), r"^(1[3-9]\d{9}|\+\d{8,15})$".into()));
    vars.push(("SMS_ALLOWED_COUNTRIES".into(), "86,1".into()));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    app.spawn_worker_from(app.settings.clone());

    let us = "+14155552671";
    let cn = random_mobile();
    for mobile in [us, cn.as_str()] {
        let (_, body) = app.request_code(mobile).await?;
        assert_eq!(body["errno"], 0, "{body}");
    }
    assert_eq!(wait_for(&app, us, "sent").await?.provider, "twilio");
    assert_eq!(wait_for(&app, &cn, "sent").await?.provider, "ccp", "ccp comes first for +86");
    assert_eq!(twilio.received_for(us).len(), 1);
    assert!(ccp.received().iter().all(|r| r.mobile == cn), "ccp serves only +86");
    app.cleanup().await
}

#[tokio::test]
async fn a_number_no_provider_serves_fails_naming_its_country() -> TestResult {
    let ccp = CcpFake::start().await?;
    let mut vars = ccp.env();
    vars.push(("MOBILE_PATTERN".into(), r"^\+\d{8,15}$".into()));
    vars.push(("SMS_ALLOWED_COUNTRIES".into(), "*".into()));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    app.spawn_worker_from(app.settings.clone());
    let uk = "+447911123456";
    app.request_code(uk).await?;
    let row = wait_for(&app, uk, "failed").await?;
    assert_eq!(row.last_error.as_deref(), Some("no provider in SMS_PROVIDERS serves +44"));
    assert!(ccp.received().is_empty());
    app.cleanup().await
}

#[tokio::test]
async fn each_provider_delivers_a_code_in_its_number_form_with_its_template_data() -> TestResult {
    // ccp: national digits, datas [code, minutes].
    let ccp = CcpFake::start().await?;
    let (app, mobile, code) = deliver_through("ccp", ccp.env()).await?;
    let got = ccp.received().into_iter().find(|r| r.mobile == mobile).ok_or("ccp got nothing")?;
    assert_eq!((got.code.as_str(), got.ttl_minutes.as_str()), (code.as_str(), "5"));
    assert_eq!(wait_for(&app, &mobile, "sent").await?.provider_message_id, got.message_sid);
    app.cleanup().await?;

    // aliyun: national digits, TemplateParam {"code": …}.
    let aliyun = AliyunFake::start().await?;
    let (app, mobile, code) = deliver_through("aliyun", aliyun.env()).await?;
    let got = aliyun.received_for(&mobile);
    assert_eq!(got.len(), 1, "aliyun got the national number");
    assert_eq!(got[0].template_param.get("code"), Some(&code));
    assert_eq!(wait_for(&app, &mobile, "sent").await?.provider_message_id, got[0].biz_id);
    assert!(aliyun.violations().is_empty(), "{:?}", aliyun.violations());
    app.cleanup().await?;

    // tencent: E.164, TemplateParamSet [code, minutes].
    let tencent = TencentFake::start().await?;
    let (app, mobile, code) = deliver_through("tencent", tencent.env()).await?;
    let got = tencent.received_for(&format!("+86{mobile}"));
    assert_eq!(got.len(), 1, "tencent got E.164");
    assert_eq!(got[0].template_params, [code.as_str(), "5"]);
    assert_eq!(got[0].template_id, tencent_fake::TEMPLATE_ID);
    app.cleanup().await?;

    // twilio: E.164, the text of SMS_TEXT_TEMPLATE.
    let twilio = TwilioFake::start().await?;
    let (app, mobile, code) = deliver_through("twilio", twilio.env()).await?;
    let got = twilio.received_for(&format!("+86{mobile}"));
    assert_eq!(got.len(), 1, "twilio got E.164");
    assert_eq!(got[0].body, format!("Your verification code is {code}. It expires in 5 minutes."));
    assert_eq!(wait_for(&app, &mobile, "sent").await?.provider_message_id, got[0].message_sid);
    app.cleanup().await
}

/// An api and worker with `SMS_PROVIDERS=name` configured by `env`; one code requested and
/// sent. Returns the app, the mobile and its code.
async fn deliver_through(name: &str, env: Vec<(String, String)>) -> TestResult<(TestApp, String, String)> {
    let mut vars: Vec<(String, String)> = env.into_iter().filter(|(k, _)| k != "SMS_PROVIDER").collect();
    vars.push(("SMS_PROVIDERS".into(), name.into()));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    app.spawn_worker_from(app.settings.clone());
    let (mobile, code) = request(&app).await?;
    let row = wait_for(&app, &mobile, "sent").await?;
    assert_eq!(row.provider, name, "{row:?}");
    Ok((app, mobile, code))
}

#[tokio::test]
async fn a_missing_provider_setting_stops_the_worker_naming_it() -> TestResult {
    let mut app = TestApp::start(&[]).await?;
    let log = std::env::temp_dir().join(format!("smscode-worker-{}.log", uuid::Uuid::new_v4()));
    let extra = [("SMS_PROVIDERS".to_owned(), "ccp,tencent".to_owned())];
    let mut env: Vec<(String, String)> = extra.to_vec();
    env.extend(ccp_env_for_missing_test());
    let pid = app.spawn_process(WORKER_BIN, &env, Some(&log))?;
    let code = app.wait_worker_process(pid, Duration::from_secs(20)).await?;
    let output = std::fs::read_to_string(&log)?;
    let _ = std::fs::remove_file(&log);
    assert_ne!(code, Some(0), "the worker must not start: {output}");
    assert!(output.contains("TENCENT_SECRET_ID"), "the message names the variable: {output}");
    app.cleanup().await
}

/// Complete CCP settings (so that only tencent's are missing).
fn ccp_env_for_missing_test() -> Vec<(String, String)> {
    [
        ("CCP_ACCOUNT_SID", ccp_fake::ACCOUNT_SID),
        ("CCP_AUTH_TOKEN", ccp_fake::AUTH_TOKEN),
        ("CCP_APP_ID", ccp_fake::APP_ID),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

#[tokio::test]
async fn a_burst_with_ccp_failing_is_delivered_entirely_by_tencent() -> TestResult {
    const REQUESTS: usize = 200;
    let (app, ccp, tencent) = ccp_then_tencent(&[("PROVIDER_BREAKER_FAILURES", "5")]).await?;
    ccp.script(std::iter::repeat_n(ccp_fake::Reply::Http(500), 1000));

    // Captchas first, a few at a time; then every sms_code request at once.
    let captchas = app.captchas(REQUESTS).await?;
    let shared = &app;
    let answers = futures_util::future::join_all(captchas.into_iter().map(|(mobile, id, text)| async move {
        let asked = Utc::now();
        let body = serde_json::json!({"mobile": mobile, "image_code": text, "image_code_id": id});
        shared.post_json("/passport/sms_code", &body).await.map(|(_, answer)| (mobile, asked, answer))
    }))
    .await;
    let mut latencies = Vec::with_capacity(REQUESTS);
    for answer in answers {
        let (mobile, asked, answer) = answer?;
        assert_eq!(answer["errno"], 0, "{answer}");
        let row = wait_for(&app, &mobile, "sent").await?;
        assert_eq!((row.provider.as_str(), row.attempts), ("tencent", 1), "{row:?}");
        let sent_at = row.sent_at.ok_or("sent without sent_at")?;
        latencies.push((sent_at - asked).num_milliseconds());
    }
    assert_eq!(tencent.received().len(), REQUESTS);
    let prefetch = usize::from(app.settings.worker_prefetch);
    let ccp_calls = ccp.received().len() + ccp.violations().len();
    assert!(
        (5..5 + prefetch).contains(&ccp_calls),
        "the breaker opens after 5 failures; only calls already in flight can pass it: {ccp_calls}"
    );
    latencies.sort_unstable();
    eprintln!(
        "failover burst: {REQUESTS} codes via tencent, ccp called {ccp_calls} times; request → sent ms: p50 {} max {}",
        latencies[REQUESTS / 2],
        latencies[REQUESTS - 1]
    );
    app.cleanup().await
}
