//! The fraud guard against SMS pumping: a burst of unused codes to one number prefix blocks
//! it (and only it) on every replica, smsctl lists and lifts the block, used codes keep a
//! prefix open; allowed countries; test numbers.

use std::time::Duration;

use clap::Parser;
use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};
use tests::{TestApp, TestEnv, TestResult, random_mobile};
use uuid::Uuid;

const PATH: &str = "/passport/sms_code";

/// Enough sms_code requests from one address for a burst: the per-IP limit is not under test.
const HIGH_IP_LIMIT: (&str, &str) = ("SMS_HOURLY_LIMIT_PER_IP", "100000");

fn errno(body: &Value) -> i64 {
    body["errno"].as_i64().unwrap_or(-1)
}

/// A random 7-digit national prefix of a Chinese mobile: (`139dddd`, `+86139dddd`).
fn random_prefix() -> (String, String) {
    let n = Uuid::new_v4().as_u128() % 10_000;
    let national = format!("139{n:04}");
    let prefix = format!("+86{national}");
    (national, prefix)
}

/// One sms_code answer as a client sees it.
struct Answer {
    status: u16,
    errno: i64,
    retry_after: Option<u64>,
}

/// `POST /passport/sms_code` with a captcha already fetched.
async fn send(app: &TestApp, mobile: &str, id: &str, text: &str) -> TestResult<Answer> {
    let response = app
        .http
        .post(format!("{}{PATH}", app.base))
        .json(&json!({"mobile": mobile, "image_code": text, "image_code_id": id}))
        .send()
        .await?;
    let status = response.status().as_u16();
    let retry_after = response.headers().get("retry-after").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok());
    let body: Value = response.json().await?;
    Ok(Answer { status, errno: errno(&body), retry_after })
}

/// A fresh captcha, then sms_code for `mobile`.
async fn request(app: &TestApp, mobile: &str) -> TestResult<Answer> {
    let id = Uuid::new_v4().to_string();
    let text = app.captcha(&id).await?;
    send(app, mobile, &id, &text).await
}

/// sms_code for each of `mobiles`, eight at a time, each with its own captcha.
async fn burst(app: &TestApp, mobiles: &[String]) -> TestResult<Vec<Answer>> {
    let captchas = app.captchas(mobiles.len()).await?;
    let answers: Vec<TestResult<Answer>> = futures_util::stream::iter(
        mobiles.iter().zip(&captchas).map(|(mobile, (_, id, text))| send(app, mobile, id, text)),
    )
    .buffer_unordered(8)
    .collect()
    .await;
    answers.into_iter().collect()
}

/// Runs smsctl with `args` against `app`'s configuration: (success, output).
async fn smsctl(app: &TestApp, args: &[&str]) -> TestResult<(bool, String)> {
    let cli = smsctl::Cli::try_parse_from(std::iter::once("smsctl").chain(args.iter().copied()))?;
    let mut out = Vec::new();
    let ok = smsctl::run(cli, &app.settings, &mut out).await?;
    Ok((ok, String::from_utf8(out)?))
}

async fn fraud_report(app: &TestApp) -> TestResult<Value> {
    let (ok, out) = smsctl(app, &["fraud", "--json"]).await?;
    assert!(ok, "{out}");
    Ok(serde_json::from_str(&out)?)
}

fn watched<'a>(report: &'a Value, prefix: &str) -> Option<&'a Value> {
    report["watched"].as_array()?.iter().find(|w| w["prefix"] == prefix)
}

#[tokio::test]
async fn a_pumping_burst_blocks_its_prefix_until_smsctl_lifts_it_and_other_prefixes_keep_working() -> TestResult {
    let app = TestApp::start(&[HIGH_IP_LIMIT]).await?;
    let (national, prefix) = random_prefix();
    let mobiles: Vec<String> = (0..60).map(|i| format!("{national}{i:04}")).collect();

    // 60 codes to distinct numbers of one range, none used: the 50th send (FRAUD_MIN_SENDS)
    // blocks the range, the 10 after it are refused.
    let answers = burst(&app, &mobiles).await?;
    let sent = answers.iter().filter(|a| (a.status, a.errno) == (200, 0)).count();
    let refused: Vec<&Answer> = answers.iter().filter(|a| (a.status, a.errno) == (429, 4201)).collect();
    assert_eq!((sent, refused.len()), (50, 10));
    for a in &refused {
        let retry_after = a.retry_after.ok_or("a refusal without Retry-After")?;
        assert!((3500..=3600).contains(&retry_after), "Retry-After {retry_after}");
    }

    // Any number of the range is refused, before its captcha is taken; another range is not.
    let id = Uuid::new_v4().to_string();
    let text = app.captcha(&id).await?;
    let blocked = send(&app, &format!("{national}9999"), &id, &text).await?;
    assert_eq!((blocked.status, blocked.errno), (429, 4201));
    let mut redis = app.redis.clone();
    let kept: Option<String> = redis.get(format!("{}ImageCode_{id}", app.keys.prefix())).await?;
    assert_eq!(kept.as_deref(), Some(text.as_str()), "the captcha of a blocked request is kept");
    let other = send(&app, &random_mobile(), &id, &text).await?;
    assert_eq!((other.status, other.errno), (200, 0));

    // smsctl shows the block and the counts that caused it.
    let report = fraud_report(&app).await?;
    let block = &report["blocked"][0];
    assert_eq!(
        (block["prefix"].as_str(), block["sends"].as_u64(), block["verified"].as_u64()),
        (Some(prefix.as_str()), Some(50), Some(0))
    );
    assert!(block["remaining_secs"].as_u64().is_some_and(|s| s > 3500), "{report}");
    assert_eq!(watched(&report, &prefix).map(|w| w["sends"].clone()), Some(json!(50)), "{report}");
    let (ok, table) = smsctl(&app, &["fraud"]).await?;
    assert!(ok && table.contains("blocked prefixes: 1") && table.contains(&prefix), "{table}");

    // The block is counted once and each refusal by prefix.
    let metrics = app.http.get(format!("{}/metrics", app.base)).send().await?.text().await?;
    assert!(metrics.contains(&format!("smscode_api_fraud_blocks_total{{prefix=\"{prefix}\"}} 1")), "{metrics}");
    assert!(metrics.contains(&format!("smscode_api_fraud_refused_total{{prefix=\"{prefix}\"}} 11")), "{metrics}");

    // Unblocking lifts it and resets the counts: the range answers 0 again.
    let (ok, out) = smsctl(&app, &["fraud", "unblock", &prefix]).await?;
    assert!(ok && out.contains(&format!("unblocked {prefix}")), "{out}");
    let again = request(&app, &format!("{national}9999")).await?;
    assert_eq!((again.status, again.errno), (200, 0));
    let report = fraud_report(&app).await?;
    assert_eq!(report["blocked"], json!([]), "{report}");
    assert_eq!(watched(&report, &prefix).map(|w| w["sends"].clone()), Some(json!(1)), "{report}");

    // A prefix that is not blocked: said so, exit status 1.
    let (ok, out) = smsctl(&app, &["fraud", "unblock", &prefix]).await?;
    assert!(!ok && out.contains("is not blocked"), "{out}");
    app.cleanup().await
}

#[tokio::test]
async fn two_api_replicas_share_a_block_and_it_is_set_once() -> TestResult {
    let env = TestEnv::new(&[HIGH_IP_LIMIT, ("FRAUD_MIN_SENDS", "10")]).await?;
    let twin = TestEnv {
        id: env.id.clone(),
        settings: env.settings.clone(),
        db_name: env.db_name.clone(),
        vars: env.vars.clone(),
    };
    let (a, b) = (TestApp::spawn(env).await?, TestApp::spawn(twin).await?);
    let (national, prefix) = random_prefix();
    let mobiles: Vec<String> = (0..12).map(|i| format!("{national}{i:04}")).collect();

    // Ten sends spread over both replicas block the range on both.
    let (first, second) = mobiles.split_at(5);
    let mut answers = burst(&a, first).await?;
    answers.extend(burst(&b, &second[..5]).await?);
    assert!(answers.iter().all(|x| x.errno == 0), "every send below the threshold passes");
    for app in [&a, &b] {
        let refused = request(app, &second[5]).await?;
        assert_eq!((refused.status, refused.errno), (429, 4201));
    }
    // Both replicas run in this process and share its metrics: one block, not one per replica.
    let metrics = a.http.get(format!("{}/metrics", a.base)).send().await?.text().await?;
    assert!(metrics.contains(&format!("smscode_api_fraud_blocks_total{{prefix=\"{prefix}\"}} 1")), "{metrics}");

    // Lifted through one, lifted for both.
    let (ok, out) = smsctl(&a, &["fraud", "unblock", &prefix]).await?;
    assert!(ok, "{out}");
    assert_eq!(request(&b, &second[6]).await?.errno, 0);
    b.cleanup().await?;
    a.cleanup().await
}

#[tokio::test]
async fn a_prefix_whose_codes_are_used_is_not_blocked() -> TestResult {
    let app = TestApp::start(&[HIGH_IP_LIMIT]).await?;
    let (national, prefix) = random_prefix();
    let mobiles: Vec<String> = (0..60).map(|i| format!("{national}{i:04}")).collect();

    // Three users of the range register: 3 of 60 is FRAUD_MIN_CONVERSION (5%), not below it.
    for mobile in &mobiles[..3] {
        assert_eq!(request(&app, mobile).await?.errno, 0);
        let code = app.sms_code_of(mobile).await?.ok_or("no code")?;
        let (_, body) = app
            .post_json("/passport/register", &json!({"mobile": mobile, "sms_code": code, "password": "correct-horse"}))
            .await?;
        assert_eq!(errno(&body), 0, "{body}");
    }
    let answers = burst(&app, &mobiles[3..]).await?;
    assert!(answers.iter().all(|a| (a.status, a.errno) == (200, 0)), "a range with used codes stays open");

    let report = fraud_report(&app).await?;
    assert_eq!(report["blocked"], json!([]), "{report}");
    let counts = watched(&report, &prefix).ok_or("the prefix is not watched")?;
    assert_eq!((counts["sends"].as_u64(), counts["verified"].as_u64()), (Some(60), Some(3)), "{report}");
    app.cleanup().await
}

#[tokio::test]
async fn sends_older_than_the_window_no_longer_count() -> TestResult {
    let app = TestApp::start(&[HIGH_IP_LIMIT, ("FRAUD_WINDOW_SECS", "2"), ("FRAUD_MIN_SENDS", "5")]).await?;
    let (national, prefix) = random_prefix();
    // Ten sends, one every 600 ms: never five within two seconds, so never a block, as long as
    // the old ones leave the window (the window hash is touched too often to expire instead).
    // The pacing is the traffic under test, not a wait for an effect.
    let mut pace = tokio::time::interval(Duration::from_millis(600));
    pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    for i in 0..10 {
        pace.tick().await;
        let answer = request(&app, &format!("{national}{i:04}")).await?;
        assert_eq!((answer.status, answer.errno), (200, 0), "send {i}");
    }
    let report = fraud_report(&app).await?;
    assert_eq!(report["blocked"], json!([]), "{report}");
    assert!(watched(&report, &prefix).and_then(|w| w["sends"].as_u64()).is_some_and(|n| n <= 4), "{report}");
    app.cleanup().await
}

#[tokio::test]
async fn a_request_that_queues_nothing_is_not_counted_as_a_send() -> TestResult {
    let app = TestApp::start(&[HIGH_IP_LIMIT]).await?;
    let mobile = random_mobile();
    assert_eq!(request(&app, &mobile).await?.errno, 0);
    let code = app.sms_code_of(&mobile).await?.ok_or("no code")?;
    let (_, body) = app
        .post_json("/passport/register", &json!({"mobile": mobile, "sms_code": code, "password": "12345678"}))
        .await?;
    assert_eq!(errno(&body), 0, "{body}");
    // Registered: a new code is refused (4003) after the limits were taken, and given back.
    let mut redis = app.redis.clone();
    let () = redis.del(format!("{}SMSCooldown_{mobile}", app.keys.prefix())).await?;
    assert_eq!(request(&app, &mobile).await?.errno, 4003);

    let report = fraud_report(&app).await?;
    let prefix = format!("+86{}", &mobile[..7]);
    let counts = watched(&report, &prefix).ok_or("the prefix is not watched")?;
    assert_eq!((counts["sends"].as_u64(), counts["verified"].as_u64()), (Some(1), Some(1)), "{report}");
    app.cleanup().await
}

#[tokio::test]
async fn a_number_outside_the_allowed_countries_gets_4004_and_keeps_its_captcha() -> TestResult {
    // A deployment whose pattern admits international numbers; SMS_ALLOWED_COUNTRIES stays 86.
    let app = TestApp::start(&[("MOBILE_PATTERN", r"^(\+\d{8,15}|1[3-9]\d{9})$")]).await?;
    let id = Uuid::new_v4().to_string();
    let text = app.captcha(&id).await?;
    for mobile in ["+14155552671", "+447911123456", "+999123456789"] {
        let (status, body) =
            app.post_json(PATH, &json!({"mobile": mobile, "image_code": text, "image_code_id": id})).await?;
        assert_eq!((status, errno(&body), body["errmsg"].as_str()), (200, 4004, Some("手机号不正确")), "{mobile}");
    }
    // A Chinese number, national or E.164, is sent: with the same, untouched captcha.
    let sent = send(&app, &format!("+86{}", random_mobile()), &id, &text).await?;
    assert_eq!((sent.status, sent.errno), (200, 0));
    app.cleanup().await
}

#[tokio::test]
async fn a_test_number_gets_its_fixed_code_without_an_sms_and_registers_with_it() -> TestResult {
    let test_mobile = "13700000001";
    let app = TestApp::start(&[("SMS_TEST_NUMBERS", "13700000001:246810")]).await?;
    // A real number first: its job shows the queue exists, and is taken off it.
    assert_eq!(request(&app, &random_mobile()).await?.errno, 0);
    assert!(app.take_queued().await?.is_some(), "a real number's job is queued");

    let answer = request(&app, test_mobile).await?;
    assert_eq!((answer.status, answer.errno), (200, 0));
    assert_eq!(app.sms_code_of(test_mobile).await?.as_deref(), Some("246810"));
    let mut redis = app.redis.clone();
    let ttl: i64 = redis.ttl(format!("{}SMS_{test_mobile}", app.keys.prefix())).await?;
    assert!((295..=300).contains(&ttl), "ttl {ttl}");
    assert!(app.take_queued().await?.is_none(), "no job, so no SMS, for a test number");
    let deliveries: i64 = sqlx::query_scalar("select count(*) from sms_deliveries").fetch_one(&app.db).await?;
    assert_eq!(deliveries, 0);
    // Its limits are everyone's: the resend cooldown applies.
    let again = request(&app, test_mobile).await?;
    assert_eq!((again.status, again.errno), (429, 4201));
    // It is not counted by the fraud guard.
    let report = fraud_report(&app).await?;
    assert!(watched(&report, "+861370000").is_none(), "{report}");

    let (_, body) = app
        .post_json("/passport/register", &json!({"mobile": test_mobile, "sms_code": "246810", "password": "12345678"}))
        .await?;
    assert_eq!(errno(&body), 0, "{body}");
    let report = fraud_report(&app).await?;
    assert!(watched(&report, "+861370000").is_none(), "{report}");
    app.cleanup().await
}
