//! Delivery reports end to end: the real api and worker, each provider's fake pushing its own
//! report format to `POST /receipts/{provider}`; authentication, idempotence, order, batches,
//! and the funnel that a register completes.

use std::time::Duration;

use chrono::{DateTime, Utc};
use clap::Parser;
use serde_json::{Value, json};
use tests::{
    TestApp, TestResult,
    aliyun_fake::{self, AliyunFake},
    ccp_fake::{self, CcpFake},
    random_mobile,
    receipt_push::Outcome,
    tencent_fake::TencentFake,
    twilio_fake::{self, TwilioFake},
    wait_until,
};

/// `RECEIPT_TOKEN` of these tests.
const TOKEN: &str = "r3ceipt-t0ken";
/// `RECEIPT_BASE_URL` of the Twilio tests: the public URL Twilio signs, in front of the api.
const PUBLIC_URL: &str = "https://sms.example.com";

#[derive(Debug, sqlx::FromRow)]
struct Row {
    status: String,
    last_error: Option<String>,
    provider_message_id: Option<String>,
    delivered_at: Option<DateTime<Utc>>,
    updated_at: DateTime<Utc>,
}

async fn delivery(app: &TestApp, mobile: &str) -> Option<Row> {
    sqlx::query_as(
        "select status, last_error, provider_message_id, delivered_at, updated_at
         from sms_deliveries where mobile = $1",
    )
    .bind(mobile)
    .fetch_optional(&app.db)
    .await
    .ok()
    .flatten()
}

async fn wait_for(app: &TestApp, mobile: &str, status: &str) -> TestResult<Row> {
    wait_until(Duration::from_secs(30), &format!("{mobile} to be {status}"), || async {
        delivery(app, mobile).await.filter(|r| r.status == status)
    })
    .await
}

/// The report on the provider call of `mobile`'s delivery: `(receipt_status, receipt_error)`.
async fn receipt_of(app: &TestApp, mobile: &str) -> TestResult<(Option<String>, Option<String>)> {
    Ok(sqlx::query_as(
        "select a.receipt_status, a.receipt_error from sms_attempts a
         join sms_deliveries d on d.id = a.delivery_id where d.mobile = $1 and a.outcome = 'sent'",
    )
    .bind(mobile)
    .fetch_one(&app.db)
    .await?)
}

/// An api and worker sending through a provider configured by `env`, with receipts on.
async fn app_with(env: Vec<(String, String)>, extra: &[(&str, &str)]) -> TestResult<TestApp> {
    let mut vars = env;
    vars.push(("RECEIPT_TOKEN".into(), TOKEN.into()));
    vars.extend(extra.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    app.spawn_worker_from(app.settings.clone());
    Ok(app)
}

fn receipt_url(app: &TestApp, provider: &str) -> String {
    format!("{}/receipts/{provider}?token={TOKEN}", app.base)
}

/// Requests a code for a new mobile and waits for the provider to have accepted it.
async fn sent_code(app: &TestApp) -> TestResult<(String, Row)> {
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(body["errno"], 0, "{body}");
    let row = wait_for(app, &mobile, "sent").await?;
    Ok((mobile, row))
}

async fn post(app: &TestApp, url: &str, content_type: &str, body: String) -> TestResult<(u16, String)> {
    let response = app.http.post(url).header("content-type", content_type).body(body).send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

/// The value of the counter `smscode_api_receipts_total` for `provider` and `status`.
async fn receipts_counted(app: &TestApp, provider: &str, status: &str) -> TestResult<f64> {
    metric(app, &format!(r#"smscode_api_receipts_total{{provider="{provider}",status="{status}"}}"#)).await
}

/// The value of the series `series` (name and labels as exposed) on `/metrics`; 0 when absent.
async fn metric(app: &TestApp, series: &str) -> TestResult<f64> {
    let text = app.http.get(format!("{}/metrics", app.base)).send().await?.text().await?;
    let wanted = format!("{series} ");
    Ok(text.lines().find_map(|l| l.strip_prefix(&wanted)).and_then(|v| v.trim().parse().ok()).unwrap_or(0.0))
}

async fn smsctl(app: &TestApp, args: &[&str]) -> TestResult<String> {
    let cli = smsctl::Cli::try_parse_from(std::iter::once("smsctl").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    smsctl::run(cli, &app.settings, &mut out).await?;
    Ok(String::from_utf8(out)?)
}

/// Two codes through a provider whose fake pushes reports: the first reported delivered, the
/// second undelivered with `code`; returns the app and both mobiles.
async fn delivered_then_undelivered(
    app: &TestApp,
    pusher: &tests::receipt_push::Pusher,
    code: &'static str,
) -> TestResult<(String, String)> {
    let (delivered, _) = sent_code(app).await?;
    let row = wait_for(app, &delivered, "delivered").await?;
    assert!(row.delivered_at.is_some(), "{row:?}");
    assert_eq!(receipt_of(app, &delivered).await?, (Some("delivered".into()), None));

    pusher.set_outcome(Outcome::Undelivered(code));
    let (undelivered, _) = sent_code(app).await?;
    let row = wait_for(app, &undelivered, "undelivered").await?;
    assert_eq!(row.last_error.as_deref(), Some(code));
    assert_eq!(row.delivered_at, None, "delivered_at is for delivered only");
    assert_eq!(receipt_of(app, &undelivered).await?, (Some("undelivered".into()), Some(code.to_owned())));
    Ok((delivered, undelivered))
}

#[tokio::test]
async fn ccp_reports_mark_deliveries_delivered_or_undelivered() -> TestResult {
    let fake = CcpFake::start().await?;
    let app = app_with(fake.env(), &[]).await?;
    fake.receipts().set_target(Some(receipt_url(&app, "ccp")));

    delivered_then_undelivered(&app, fake.receipts(), "MK:0001").await?;

    let pushed = fake.receipts().pushed();
    assert_eq!(pushed.len(), 2, "{pushed:?}");
    for p in &pushed {
        assert_eq!((p.status, p.body.as_str()), (200, providers::ccp::RECEIPT_ANSWER_XML), "{p:?}");
    }
    assert_eq!(receipts_counted(&app, "ccp", "delivered").await?, 1.0);
    assert_eq!(receipts_counted(&app, "ccp", "undelivered").await?, 1.0);
    let timed = r#"smscode_api_receipt_delivery_seconds_count{provider="ccp"}"#;
    assert_eq!(metric(&app, timed).await?, 1.0, "the delivered one is timed");
    app.cleanup().await
}

#[tokio::test]
async fn aliyun_reports_mark_deliveries_and_a_bad_entry_spoils_no_batch() -> TestResult {
    let fake = AliyunFake::start().await?;
    let mut env = fake.env();
    env.push(("SMS_PROVIDERS".into(), "aliyun".into()));
    let app = app_with(env, &[]).await?;
    fake.receipts().set_target(Some(receipt_url(&app, "aliyun")));

    delivered_then_undelivered(&app, fake.receipts(), "MK:0005").await?;
    assert!(fake.receipts().pushed().iter().all(|p| p.status == 200 && p.body.contains(r#""code":0"#)));

    // By hand: a batch of an entry that cannot be read, a report on an unknown id, and a good one.
    fake.receipts().set_target(None);
    let (mobile, row) = sent_code(&app).await?;
    let biz_id = row.provider_message_id.ok_or("no BizId recorded")?;
    let batch = json!([
        {"success": "perhaps", "biz_id": biz_id},
        aliyun_fake::report("999999999999^0", &mobile, &Outcome::Delivered),
        aliyun_fake::report(&biz_id, &mobile, &Outcome::Delivered),
    ]);
    let (status, body) = post(&app, &receipt_url(&app, "aliyun"), "application/json", batch.to_string()).await?;
    assert_eq!((status, body.as_str()), (200, providers::aliyun::RECEIPT_ANSWER));
    assert!(wait_for(&app, &mobile, "delivered").await?.delivered_at.is_some());
    assert_eq!(receipts_counted(&app, "aliyun", "malformed").await?, 1.0);
    assert_eq!(receipts_counted(&app, "aliyun", "unknown").await?, 1.0);
    app.cleanup().await
}

#[tokio::test]
async fn tencent_reports_mark_deliveries_delivered_or_undelivered() -> TestResult {
    let fake = TencentFake::start().await?;
    let mut env = fake.env();
    env.push(("SMS_PROVIDERS".into(), "tencent".into()));
    let app = app_with(env, &[]).await?;
    fake.receipts().set_target(Some(receipt_url(&app, "tencent")));

    let (delivered, _) = delivered_then_undelivered(&app, fake.receipts(), "MN:0017").await?;
    let pushed = fake.receipts().pushed();
    assert!(pushed.iter().all(|p| p.status == 200 && p.body == providers::tencent::RECEIPT_ANSWER), "{pushed:?}");

    // What on-call sees.
    let out = smsctl(&app, &["deliveries", "--mobile", &delivered, "--json"]).await?;
    let listed: Value = serde_json::from_str(out.trim())?;
    assert_eq!(listed["status"], "delivered", "{out}");
    assert!(listed["delivered_at"].is_string(), "{out}");
    app.cleanup().await
}

#[tokio::test]
async fn twilio_status_callbacks_are_verified_and_recorded() -> TestResult {
    let fake = TwilioFake::start().await?;
    let mut env = fake.env();
    env.push(("SMS_PROVIDERS".into(), "twilio".into()));
    let app = app_with(env, &[("RECEIPT_BASE_URL", PUBLIC_URL)]).await?;
    fake.receipts().set_target(Some(app.base.clone()));

    let (delivered, _) = delivered_then_undelivered(&app, fake.receipts(), "30003").await?;
    let sent = fake.received();
    assert!(
        sent.iter().all(|r| r.status_callback.as_deref() == Some("https://sms.example.com/receipts/twilio")),
        "{sent:?}"
    );
    assert!(fake.receipts().pushed().iter().all(|p| p.status == 204), "{:?}", fake.receipts().pushed());

    // A forged callback: right form, wrong signature. Refused; nothing changes.
    fake.receipts().set_target(None);
    let (mobile, row) = sent_code(&app).await?;
    let sid = row.provider_message_id.ok_or("no sid recorded")?;
    let params = twilio_fake::status_callback(&sid, "+8613800138000", &Outcome::Undelivered("30005"));
    let body = serde_urlencoded::to_string(&params)?;
    let url = format!("{}/receipts/twilio", app.base);
    let forged = twilio_fake::signature("not-the-auth-token", &format!("{PUBLIC_URL}/receipts/twilio"), &params);
    // Signed over the address the api is reached at, not the public one Twilio was given.
    let wrong_url = twilio_fake::signature(twilio_fake::AUTH_TOKEN, &url, &params);
    for signature in [Some(forged.as_str()), Some(wrong_url.as_str()), None] {
        let mut request = app.http.post(&url).header("content-type", "application/x-www-form-urlencoded");
        if let Some(signature) = signature {
            request = request.header("x-twilio-signature", signature);
        }
        let response = request.body(body.clone()).send().await?;
        assert_eq!(response.status(), 403, "{signature:?}");
    }
    assert_eq!(row_status(&app, &mobile).await?, "sent");
    assert_eq!(receipts_counted(&app, "twilio", "forbidden").await?, 3.0);

    // The same callback signed as Twilio signs it is taken.
    let good = twilio_fake::signature(twilio_fake::AUTH_TOKEN, &format!("{PUBLIC_URL}/receipts/twilio"), &params);
    let response = app
        .http
        .post(&url)
        .header("content-type", "application/x-www-form-urlencoded")
        .header("x-twilio-signature", good)
        .body(body)
        .send()
        .await?;
    assert_eq!(response.status(), 204);
    assert_eq!(wait_for(&app, &mobile, "undelivered").await?.last_error.as_deref(), Some("30005"));
    assert_eq!(row_status(&app, &delivered).await?, "delivered");
    app.cleanup().await
}

async fn row_status(app: &TestApp, mobile: &str) -> TestResult<String> {
    Ok(delivery(app, mobile).await.ok_or("no delivery")?.status)
}

/// A CCP app whose fake does not push: the test pushes by hand.
async fn quiet_ccp_app() -> TestResult<(TestApp, CcpFake)> {
    let fake = CcpFake::start().await?;
    let app = app_with(fake.env(), &[]).await?;
    Ok((app, fake))
}

#[tokio::test]
async fn reports_need_the_token_and_are_idempotent_and_the_first_final_one_wins() -> TestResult {
    let (app, _fake) = quiet_ccp_app().await?;
    let (mobile, row) = sent_code(&app).await?;
    let sid = row.provider_message_id.ok_or("no smsMessageSid recorded")?;
    let delivered = ccp_fake::report_xml(&sid, &mobile, &Outcome::Delivered);
    let ccp = |query: &str| format!("{}/receipts/ccp{query}", app.base);

    for query in ["", "?token=", "?token=wrong", "?token=r3ceipt-t0ke", "?tok=r3ceipt-t0ken"] {
        let (status, _) = post(&app, &ccp(query), "application/xml", delivered.clone()).await?;
        assert_eq!(status, 403, "{query}");
    }
    assert_eq!(row_status(&app, &mobile).await?, "sent", "a refused report records nothing");
    assert_eq!(receipts_counted(&app, "ccp", "forbidden").await?, 5.0);

    // Eight copies at once (a provider retrying while the first is in flight): one wins.
    let url = receipt_url(&app, "ccp");
    let copies = (0..8).map(|_| post(&app, &url, "application/xml", delivered.clone()));
    for answer in futures_util::future::join_all(copies).await {
        let (status, body) = answer?;
        assert_eq!((status, body.as_str()), (200, providers::ccp::RECEIPT_ANSWER_XML));
    }
    let first = wait_for(&app, &mobile, "delivered").await?;
    assert_eq!(receipts_counted(&app, "ccp", "delivered").await?, 1.0);
    assert_eq!(receipts_counted(&app, "ccp", "duplicate").await?, 7.0);

    // The same report again, then a contrary one after the final: acknowledged, no change.
    let undelivered = ccp_fake::report_xml(&sid, &mobile, &Outcome::Undelivered("MK:0001"));
    for report in [delivered, undelivered] {
        let (status, _) = post(&app, &receipt_url(&app, "ccp"), "application/xml", report).await?;
        assert_eq!(status, 200);
    }
    let after = delivery(&app, &mobile).await.ok_or("no delivery")?;
    assert_eq!(
        (after.status.as_str(), after.last_error, after.delivered_at, after.updated_at),
        ("delivered", first.last_error, first.delivered_at, first.updated_at)
    );
    assert_eq!(receipt_of(&app, &mobile).await?, (Some("delivered".into()), None));
    assert_eq!(receipts_counted(&app, "ccp", "duplicate").await?, 9.0);

    // The JSON form, on an id we never sent: acknowledged in JSON, and counted.
    let unknown = json!({"Request": {"action": "SMSArrived", "smsType": "1", "content": "0123456789abcdef",
        "status": "0", "deliverCode": "DELIVRD", "recvTime": "20261126120000"}});
    let (status, body) = post(&app, &receipt_url(&app, "ccp"), "application/json", unknown.to_string()).await?;
    assert_eq!((status, body.as_str()), (200, providers::ccp::RECEIPT_ANSWER_JSON));
    assert_eq!(receipts_counted(&app, "ccp", "unknown").await?, 1.0);

    // A reply SMS (smsType 0) is acknowledged and ignored.
    let reply = "<Request><action>SMSArrived</action><smsType>0</smsType><content>hi</content></Request>";
    let (status, _) = post(&app, &receipt_url(&app, "ccp"), "application/xml", reply.into()).await?;
    assert_eq!(status, 200);
    assert_eq!(receipts_counted(&app, "ccp", "ignored").await?, 1.0);

    // Bodies no format reads: 400, for each provider; nothing recorded.
    for (provider, content_type, body) in [
        ("ccp", "application/xml", "<Request><action>"),
        ("ccp", "application/json", "{\"Request\": 5}"),
        ("aliyun", "application/json", "{\"biz_id\": \"1\"}"),
        ("tencent", "application/json", "[{"),
    ] {
        let (status, _) = post(&app, &receipt_url(&app, provider), content_type, body.into()).await?;
        assert_eq!(status, 400, "{provider} {body}");
    }
    let too_big = format!("[{}]", vec!["{}"; 40_000].join(","));
    let (status, _) = post(&app, &receipt_url(&app, "tencent"), "application/json", too_big).await?;
    assert_eq!(status, 413);
    app.cleanup().await
}

#[tokio::test]
async fn receipts_answer_404_where_they_are_not_configured() -> TestResult {
    let app = TestApp::start(&[]).await?;
    for path in ["ccp?token=x", "aliyun", "tencent?token=", "twilio", "log", "nope"] {
        let (status, _) = post(&app, &format!("{}/receipts/{path}", app.base), "application/json", "[]".into()).await?;
        assert_eq!(status, 404, "{path}");
    }
    app.cleanup().await?;

    // A token does not enable Twilio, which needs its auth token and the public URL it signs.
    let app = TestApp::start(&[("RECEIPT_TOKEN", TOKEN), ("TWILIO_AUTH_TOKEN", twilio_fake::AUTH_TOKEN)]).await?;
    let (status, _) = post(&app, &format!("{}/receipts/twilio", app.base), "text/plain", String::new()).await?;
    assert_eq!(status, 404);
    let (status, _) = post(&app, &receipt_url(&app, "log"), "application/json", "[]".into()).await?;
    assert_eq!(status, 404);
    let (status, body) = post(&app, &receipt_url(&app, "tencent"), "application/json", "[]".into()).await?;
    assert_eq!((status, body.as_str()), (200, providers::tencent::RECEIPT_ANSWER));

    // The document schemathesis fuzzes declares what the endpoint answers.
    let doc: Value = app.http.get(format!("{}/openapi.json", app.base)).send().await?.json().await?;
    let responses = &doc["paths"]["/receipts/{provider}"]["post"]["responses"];
    for status in ["200", "204", "400", "403", "404", "413", "503"] {
        assert!(responses.get(status).is_some(), "{status}: {responses}");
    }
    app.cleanup().await
}

#[tokio::test]
async fn a_register_marks_the_delivery_verified_and_stats_show_the_funnel() -> TestResult {
    let fake = CcpFake::start().await?;
    let app = app_with(fake.env(), &[]).await?;
    fake.receipts().set_target(Some(receipt_url(&app, "ccp")));

    // Two codes to one mobile: the register uses the second, which is the one marked.
    let mobile = random_mobile();
    for n in 1..=2 {
        let (_, body) = app.request_code(&mobile).await?;
        assert_eq!(body["errno"], 0, "{body}");
        wait_until(Duration::from_secs(30), "the delivery to be delivered", || async {
            let rows: Vec<(String,)> = sqlx::query_as("select status from sms_deliveries where mobile = $1")
                .bind(&mobile)
                .fetch_all(&app.db)
                .await
                .ok()?;
            (rows.len() == n && rows.iter().all(|(s,)| s == "delivered")).then_some(())
        })
        .await?;
        // Past the resend cooldown at once.
        let cooldown = app.keys.resend_cooldown(&shared::domain::Mobile::from_stored(mobile.as_str()));
        let _: () = redis::AsyncCommands::del(&mut app.redis.clone(), cooldown).await?;
    }
    let code = app.sms_code_of(&mobile).await?.ok_or("no code")?;
    let (_, body) = app
        .post_json("/passport/register", &json!({"mobile": mobile, "sms_code": code, "password": "correct-horse-9"}))
        .await?;
    assert_eq!(body["errno"], 0, "{body}");

    let marked: Vec<(DateTime<Utc>, Option<DateTime<Utc>>)> =
        sqlx::query_as("select created_at, verified_at from sms_deliveries where mobile = $1 order by created_at")
            .bind(&mobile)
            .fetch_all(&app.db)
            .await?;
    assert_eq!(marked.len(), 2, "{marked:?}");
    assert!(marked[0].1.is_none() && marked[1].1.is_some(), "only the code used is verified: {marked:?}");
    assert_eq!(metric(&app, r#"smscode_api_verified_total{provider="ccp"}"#).await?, 1.0);

    let out = smsctl(&app, &["stats", "--json"]).await?;
    let stats: Value = serde_json::from_str(out.trim())?;
    assert_eq!(stats["delivered"], 2, "{out}");
    let funnel = json!({"sent": 2, "delivered": 2, "undelivered": 0, "verified": 1});
    assert_eq!(stats["funnel"]["providers"]["ccp"], funnel, "{out}");
    assert_eq!(stats["funnel"]["countries"]["86"], funnel, "{out}");
    let table = smsctl(&app, &["stats", "--since", "1h"]).await?;
    assert!(
        table.lines().any(|l| l.split_whitespace().collect::<Vec<_>>() == ["ccp", "2", "2", "0", "1", "100.0", "50.0"]),
        "{table}"
    );
    let providers = smsctl(&app, &["providers", "--json"]).await?;
    let ccp: Value = serde_json::from_str(providers.lines().next().unwrap_or_default())?;
    assert_eq!((ccp["sent"].as_i64(), ccp["delivered"].as_i64()), (Some(2), Some(2)), "{providers}");
    app.cleanup().await
}
