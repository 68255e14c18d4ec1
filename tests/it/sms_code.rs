//! `POST /passport/sms_code`: every errno branch of steps 1–10 (`docs/http-api.md`), the rate limits and
//! bodies that must never get a 5xx.

use std::time::Duration;

use redis::AsyncCommands;
use serde_json::{Value, json};
use tests::{DEAD_PORT, TestApp, TestResult, random_mobile, wait_until};
use uuid::Uuid;

const PATH: &str = "/passport/sms_code";

fn errno(body: &Value) -> i64 {
    body["errno"].as_i64().unwrap_or(-1)
}

#[tokio::test]
async fn a_right_captcha_stores_a_six_digit_code_for_five_minutes() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (status, body) = app.request_code(&mobile).await?;
    assert_eq!((status, errno(&body)), (200, 0), "{body}");
    assert_eq!(body["errmsg"], "发送成功");
    let code = app.sms_code_of(&mobile).await?.ok_or("no code stored")?;
    assert!(code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()), "{code}");
    let mut redis = app.redis.clone();
    let ttl: i64 = redis.ttl(format!("{}SMS_{mobile}", app.keys.prefix())).await?;
    assert!((295..=300).contains(&ttl), "ttl {ttl}");
    app.cleanup().await
}

#[tokio::test]
async fn a_missing_empty_or_non_string_field_gets_4103() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let full = json!({"mobile": "13812345678", "image_code": "ABCD", "image_code_id": "x1"});
    for field in ["mobile", "image_code", "image_code_id"] {
        for bad in [Value::Null, json!(""), json!(13812345678_u64), json!(["a"]), json!({"a": 1})] {
            let mut body = full.clone();
            body[field] = bad.clone();
            let (status, answer) = app.post_json(PATH, &body).await?;
            assert_eq!((status, errno(&answer)), (200, 4103), "{field}={bad}: {answer}");
            assert_eq!(answer["errmsg"], "参数不全");
        }
        let mut body = full.clone();
        body.as_object_mut().map(|o| o.remove(field));
        let (status, answer) = app.post_json(PATH, &body).await?;
        assert_eq!((status, errno(&answer)), (200, 4103), "without {field}");
    }
    app.cleanup().await
}

#[tokio::test]
async fn a_bad_mobile_gets_4004_and_keeps_the_captcha() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let text = app.captcha("keep").await?;
    for mobile in ["12345", "1381234567", "12812345678", "2381234567a", "138123456789"] {
        let (status, body) =
            app.post_json(PATH, &json!({"mobile": mobile, "image_code": text, "image_code_id": "keep"})).await?;
        assert_eq!((status, errno(&body)), (200, 4004), "{mobile}: {body}");
        assert_eq!(body["errmsg"], "手机号不正确");
    }
    // The seed checks the mobile before touching the captcha.
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": random_mobile(), "image_code": text, "image_code_id": "keep"})).await?;
    assert_eq!(errno(&body), 0, "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn a_numbering_range_issued_since_the_seed_is_accepted() -> TestResult {
    let app = TestApp::start(&[]).await?;
    // 19x and 16x numbers: rejected by the seed's ^1[3578], valid today.
    let n = Uuid::new_v4().as_u128() % 100_000_000;
    let (_, body) = app.request_code(&format!("199{n:08}")).await?;
    assert_eq!(errno(&body), 0, "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn an_unknown_captcha_gets_4002_and_a_wrong_one_4004_and_is_used_up() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "image_code": "ABCD", "image_code_id": "never"})).await?;
    assert_eq!((errno(&body), body["errmsg"].as_str()), (4002, Some("验证码已过期")));

    let text = app.captcha("once").await?;
    let wrong: String = text.chars().rev().collect::<String>() + "x";
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "image_code": wrong, "image_code_id": "once"})).await?;
    assert_eq!((errno(&body), body["errmsg"].as_str()), (4004, Some("验证码输入错误")));
    // A captcha is good for one try: the right text now finds nothing.
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "image_code": text, "image_code_id": "once"})).await?;
    assert_eq!(errno(&body), 4002, "{body}");
    assert_eq!(app.sms_code_of(&mobile).await?, None);
    app.cleanup().await
}

#[tokio::test]
async fn the_captcha_is_compared_case_insensitively() -> TestResult {
    let app = TestApp::start(&[]).await?;
    // A captcha of digits only would not test anything: take one with a letter in it.
    let mut text = app.captcha("case").await?;
    while !text.chars().any(|c| c.is_ascii_alphabetic()) {
        text = app.captcha("case").await?;
    }
    let flipped: String =
        text.chars().map(|c| if c.is_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() }).collect();
    let (_, body) = app
        .post_json(PATH, &json!({"mobile": random_mobile(), "image_code": flipped, "image_code_id": "case"}))
        .await?;
    assert_eq!(errno(&body), 0, "{text} vs {flipped}: {body}");
    app.cleanup().await
}

#[tokio::test]
async fn exactly_one_of_thirty_concurrent_requests_reusing_a_captcha_passes() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let text = app.captcha("shared").await?;
    let requests = (0..30).map(|_| {
        let body = json!({"mobile": random_mobile(), "image_code": text, "image_code_id": "shared"});
        let app = &app;
        async move { app.post_json(PATH, &body).await }
    });
    let answers = futures_util::future::join_all(requests).await;
    let mut by_errno = std::collections::BTreeMap::new();
    for answer in answers {
        let (status, body) = answer?;
        assert_eq!(status, 200);
        *by_errno.entry(errno(&body)).or_insert(0) += 1;
    }
    assert_eq!(by_errno, [(0, 1), (4002, 29)].into_iter().collect());
    app.cleanup().await
}

#[tokio::test]
async fn a_registered_mobile_gets_4003_and_no_code_and_no_cooldown() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    sqlx::query("insert into users (mobile, password_hash) values ($1, 'x')").bind(&mobile).execute(&app.db).await?;
    for _ in 0..2 {
        // The second try is answered 4003 again, not 429: the failed one gave back its cooldown.
        let (status, body) = app.request_code(&mobile).await?;
        assert_eq!((status, errno(&body)), (200, 4003), "{body}");
        assert_eq!(body["errmsg"], "该手机已被注册");
    }
    assert_eq!(app.sms_code_of(&mobile).await?, None);
    assert!(app.take_queued().await?.is_none(), "no job for a registered mobile");
    app.cleanup().await
}

#[tokio::test]
async fn a_resend_within_the_cooldown_gets_429_with_retry_after() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (_, first) = app.request_code(&mobile).await?;
    assert_eq!(errno(&first), 0);
    let code = app.sms_code_of(&mobile).await?;

    let id = Uuid::new_v4().to_string();
    let text = app.captcha(&id).await?;
    let response = app
        .http
        .post(format!("{}{PATH}", app.base))
        .json(&json!({"mobile": mobile, "image_code": text, "image_code_id": id}))
        .send()
        .await?;
    assert_eq!(response.status(), 429);
    let retry_after: u64 = response.headers()["retry-after"].to_str()?.parse()?;
    assert!((1..=60).contains(&retry_after), "Retry-After {retry_after}");
    let body: Value = response.json().await?;
    assert_eq!(errno(&body), 4201);
    assert_eq!(app.sms_code_of(&mobile).await?, code, "the live code is untouched");
    app.cleanup().await
}

#[tokio::test]
async fn the_daily_cap_per_mobile_holds_after_the_cooldown() -> TestResult {
    let app = TestApp::start(&[("SMS_RESEND_INTERVAL_SECS", "1"), ("SMS_DAILY_LIMIT_PER_MOBILE", "2")]).await?;
    let mobile = random_mobile();
    let cooldown = format!("{}SMSCooldown_{mobile}", app.keys.prefix());
    for _ in 0..2 {
        let (_, body) = app.request_code(&mobile).await?;
        assert_eq!(errno(&body), 0, "{body}");
        wait_until(Duration::from_secs(5), "the cooldown to end", || {
            let (mut redis, key) = (app.redis.clone(), cooldown.clone());
            async move { (!redis.exists::<_, bool>(key).await.unwrap_or(true)).then_some(()) }
        })
        .await?;
    }
    let (status, body) = app.request_code(&mobile).await?;
    assert_eq!((status, errno(&body)), (429, 4201), "{body}");
    assert_eq!(body["errmsg"], "该手机号今日发送次数已达上限");
    app.cleanup().await
}

#[tokio::test]
async fn the_hourly_cap_per_ip_counts_the_peer_or_the_trusted_proxy_header() -> TestResult {
    // Without TRUST_PROXY_HEADERS a forged X-Forwarded-For changes nothing.
    let app = TestApp::start(&[("SMS_HOURLY_LIMIT_PER_IP", "2")]).await?;
    for expected in [0, 0, 4201] {
        let id = Uuid::new_v4().to_string();
        let text = app.captcha(&id).await?;
        let response = app
            .http
            .post(format!("{}{PATH}", app.base))
            .header("x-forwarded-for", format!("10.0.0.{}", expected % 7))
            .json(&json!({"mobile": random_mobile(), "image_code": text, "image_code_id": id}))
            .send()
            .await?;
        let status = response.status().as_u16();
        let body: Value = response.json().await?;
        assert_eq!(errno(&body), expected, "{body}");
        if expected == 4201 {
            assert_eq!(status, 429);
        }
    }
    app.cleanup().await?;

    // Behind a trusted proxy, each client address has its own budget.
    let app = TestApp::start(&[("SMS_HOURLY_LIMIT_PER_IP", "1"), ("TRUST_PROXY_HEADERS", "true")]).await?;
    for (client, expected) in [("203.0.113.1", 0), ("203.0.113.2", 0), ("203.0.113.1", 4201)] {
        let id = Uuid::new_v4().to_string();
        let text = app.captcha(&id).await?;
        let response = app
            .http
            .post(format!("{}{PATH}", app.base))
            .header("x-forwarded-for", format!("10.0.0.1, {client}"))
            .json(&json!({"mobile": random_mobile(), "image_code": text, "image_code_id": id}))
            .send()
            .await?;
        let body: Value = response.json().await?;
        assert_eq!(errno(&body), expected, "{client}: {body}");
    }
    app.cleanup().await
}

#[tokio::test]
async fn redis_down_gets_4001_quickly() -> TestResult {
    let app = TestApp::start(&[("REDIS_URL", &format!("redis://127.0.0.1:{DEAD_PORT}"))]).await?;
    let started = std::time::Instant::now();
    let (status, body) =
        app.post_json(PATH, &json!({"mobile": random_mobile(), "image_code": "ABCD", "image_code_id": "x"})).await?;
    assert_eq!((status, errno(&body)), (200, 4001), "{body}");
    assert_eq!(body["errmsg"], "获取图片验证码失败");
    assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
    app.cleanup().await
}

#[tokio::test]
async fn broker_down_gets_4301_and_the_stored_code_is_removed() -> TestResult {
    let app = TestApp::start(&[("AMQP_URL", &format!("amqp://guest:guest@127.0.0.1:{DEAD_PORT}/%2f"))]).await?;
    let mobile = random_mobile();
    for _ in 0..2 {
        // Twice: the failed request gave back its cooldown, so the retry is not a 429.
        let started = std::time::Instant::now();
        let (status, body) = app.request_code(&mobile).await?;
        assert_eq!((status, errno(&body)), (200, 4301), "{body}");
        assert_eq!(body["errmsg"], "发送短信失败");
        assert!(started.elapsed() < Duration::from_secs(5), "answered in {:?}", started.elapsed());
        assert_eq!(app.sms_code_of(&mobile).await?, None, "no code left without a job");
    }
    let mut redis = app.redis.clone();
    let daily: Vec<String> = redis.keys(format!("{}SMSDaily_{mobile}_*", app.keys.prefix())).await?;
    assert!(daily.is_empty(), "daily count given back: {daily:?}");
    app.cleanup().await
}

#[tokio::test]
async fn database_down_gets_4001_and_gives_the_cooldown_back() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    // Make the user lookup fail the way a broken database does.
    sqlx::query("alter table users rename to users_gone").execute(&app.db).await?;
    for _ in 0..2 {
        let (status, body) = app.request_code(&mobile).await?;
        assert_eq!((status, errno(&body)), (200, 4001), "{body}");
        assert_eq!(body["errmsg"], "数据库查询错误");
    }
    assert_eq!(app.sms_code_of(&mobile).await?, None);
    sqlx::query("alter table users_gone rename to users").execute(&app.db).await?;
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(errno(&body), 0, "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn malformed_oversized_and_mistyped_bodies_never_get_a_5xx() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let url = format!("{}{PATH}", app.base);
    let huge = format!("{{\"mobile\": \"{}\"}}", "1".repeat(64 * 1024));
    let cases: Vec<(&str, Vec<u8>, u16)> = vec![
        ("not json", b"mobile=1".to_vec(), 400),
        ("truncated", br#"{"mobile": "1381"#.to_vec(), 400),
        ("array", b"[1,2]".to_vec(), 400),
        ("array shaped like the fields", br#"["13812345678", "ABCD", "x1"]"#.to_vec(), 400),
        ("string", br#""hello""#.to_vec(), 400),
        ("null", b"null".to_vec(), 400),
        ("empty", Vec::new(), 400),
        ("invalid utf-8", vec![b'{', 0xff, 0xfe, b'}'], 400),
        ("too large", huge.into_bytes(), 400),
        ("empty object", b"{}".to_vec(), 200),
        ("numbers", br#"{"mobile": 1, "image_code": 2, "image_code_id": 3}"#.to_vec(), 200),
        ("nested", br#"{"mobile": {"$gt": ""}, "image_code": [], "image_code_id": true}"#.to_vec(), 200),
    ];
    for (name, body, expected) in cases {
        let response = app.http.post(&url).header("content-type", "application/json").body(body).send().await?;
        let status = response.status().as_u16();
        let answer: Value = response.json().await?;
        assert_eq!((status, errno(&answer)), (expected, 4103), "{name}: {answer}");
    }
    // A GET is not a crash either, and a body not declared JSON is refused.
    let response = app.http.get(&url).send().await?;
    assert!(response.status().is_client_error(), "GET: {}", response.status());
    let response = app.http.post(&url).body(r#"{"mobile": ""}"#).send().await?;
    assert_eq!(response.status(), 400);
    app.cleanup().await
}

#[tokio::test]
async fn failing_to_store_the_code_gets_4001_and_gives_the_cooldown_back() -> TestResult {
    // A Redis user that may do everything but SETEX, except on captcha keys (an ACL
    // selector): storing the code fails for real, the scripts and the give-back still work.
    let probe = tests::TestEnv::new(&[]).await?;
    let prefix = probe.settings.redis_key_prefix.clone();
    let user = format!("smscode_test_{}", probe.id);
    let mut admin = redis::Client::open(tests::redis_url())?.get_multiplexed_async_connection().await?;
    let rules =
        ["on".into(), "nopass".into(), "resetkeys".into(), format!("~{prefix}*"), "+@all".into(), "-setex".into()];
    let () = redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(&rules)
        .arg(format!("(~{prefix}ImageCode_* +setex)"))
        .query_async(&mut admin)
        .await?;

    let limited_url = format!("redis://{user}:x@{}", tests::redis_url().trim_start_matches("redis://"));
    let mut env = probe;
    env.settings.redis_url = limited_url;
    let app = TestApp::spawn(env).await?;
    let mobile = random_mobile();
    for _ in 0..2 {
        let (status, body) = app.request_code(&mobile).await?;
        assert_eq!((status, errno(&body)), (200, 4001), "{body}");
        assert_eq!(body["errmsg"], "保存短信验证码失败");
    }
    assert_eq!(app.sms_code_of(&mobile).await?, None);
    assert!(app.take_queued().await?.is_none());
    let () = redis::cmd("ACL").arg("DELUSER").arg(&user).query_async(&mut admin).await?;
    app.cleanup().await
}
