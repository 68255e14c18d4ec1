//! `POST /passport/register`: code check, attempt limit, single use, password rules, races.

use redis::AsyncCommands;
use serde_json::{Value, json};
use tests::{TestApp, TestResult, random_mobile};

const PATH: &str = "/passport/register";

fn errno(body: &Value) -> i64 {
    body["errno"].as_i64().unwrap_or(-1)
}

async fn set_code(app: &TestApp, mobile: &str, code: &str) -> TestResult {
    let mut redis = app.redis.clone();
    let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), code, 300).await?;
    Ok(())
}

async fn users_with(app: &TestApp, mobile: &str) -> TestResult<Vec<String>> {
    Ok(sqlx::query_scalar("select password_hash from users where mobile = $1").bind(mobile).fetch_all(&app.db).await?)
}

#[tokio::test]
async fn a_requested_code_registers_the_user_once_with_an_argon2id_hash() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(errno(&body), 0, "{body}");
    let code = app.sms_code_of(&mobile).await?.ok_or("no code")?;

    let (status, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "sms_code": code, "password": "correct-horse"})).await?;
    assert_eq!((status, errno(&body)), (200, 0), "{body}");
    assert_eq!(body["errmsg"], "注册成功");
    let hashes = users_with(&app, &mobile).await?;
    assert_eq!(hashes.len(), 1);
    assert!(hashes[0].starts_with("$argon2id$"), "{}", hashes[0]);
    assert!(!hashes[0].contains("correct-horse"));

    // Single use: the code is gone, so the same request again finds nothing.
    assert_eq!(app.sms_code_of(&mobile).await?, None);
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "sms_code": code, "password": "correct-horse"})).await?;
    assert_eq!(errno(&body), 4002, "{body}");
    // And asking for a new code (once the cooldown is over) says the mobile is taken.
    let mut redis = app.redis.clone();
    let () = redis.del(format!("{}SMSCooldown_{mobile}", app.keys.prefix())).await?;
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(errno(&body), 4003, "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn the_seeds_smscode_field_name_is_accepted() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    set_code(&app, &mobile, "246810").await?;
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "smscode": "246810", "password": "12345678"})).await?;
    assert_eq!(errno(&body), 0, "{body}");
    app.cleanup().await
}

#[tokio::test]
async fn no_code_gets_4002_and_missing_fields_4103() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "sms_code": "123456", "password": "12345678"})).await?;
    assert_eq!((errno(&body), body["errmsg"].as_str()), (4002, Some("短信验证码已过期")));
    for missing in ["mobile", "sms_code", "password"] {
        let mut body = json!({"mobile": mobile, "sms_code": "123456", "password": "12345678"});
        body.as_object_mut().map(|o| o.remove(missing));
        let (status, answer) = app.post_json(PATH, &body).await?;
        assert_eq!((status, errno(&answer)), (200, 4103), "without {missing}");
    }
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": "123", "sms_code": "123456", "password": "12345678"})).await?;
    assert_eq!(errno(&body), 4004);
    app.cleanup().await
}

#[tokio::test]
async fn passwords_must_have_8_to_128_characters() -> TestResult {
    let app = TestApp::start(&[]).await?;
    for (password, expected) in
        [("1234567".to_owned(), 4103), ("密码".repeat(65), 4103), ("12345678".to_owned(), 0), ("密".repeat(128), 0)]
    {
        let mobile = random_mobile();
        set_code(&app, &mobile, "135790").await?;
        let (_, body) =
            app.post_json(PATH, &json!({"mobile": mobile, "sms_code": "135790", "password": password})).await?;
        assert_eq!(errno(&body), expected, "{} chars: {body}", password.chars().count());
        // A refused password does not burn the code.
        if expected != 0 {
            assert_eq!(app.sms_code_of(&mobile).await?.as_deref(), Some("135790"));
        }
    }
    app.cleanup().await
}

#[tokio::test]
async fn five_wrong_codes_delete_the_code_and_get_4201() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    set_code(&app, &mobile, "111111").await?;
    for attempt in 1..=5 {
        let (_, body) =
            app.post_json(PATH, &json!({"mobile": mobile, "sms_code": "222222", "password": "12345678"})).await?;
        let expected = if attempt < 5 { 4004 } else { 4201 };
        assert_eq!(errno(&body), expected, "attempt {attempt}: {body}");
    }
    assert_eq!(app.sms_code_of(&mobile).await?, None, "the code is gone after the limit");
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "sms_code": "111111", "password": "12345678"})).await?;
    assert_eq!(errno(&body), 4002, "the right code no longer works: {body}");
    assert!(users_with(&app, &mobile).await?.is_empty());
    app.cleanup().await
}

#[tokio::test]
async fn a_new_code_resets_the_wrong_try_count() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(errno(&body), 0);
    for _ in 0..4 {
        let (_, body) =
            app.post_json(PATH, &json!({"mobile": mobile, "sms_code": "x", "password": "12345678"})).await?;
        assert_eq!(errno(&body), 4004);
    }
    let attempts_key = format!("{}SMSAttempts_{mobile}", app.keys.prefix());
    let mut redis = app.redis.clone();
    let attempts: i64 = redis.get(&attempts_key).await?;
    assert_eq!(attempts, 4);
    // The api resets the count when it stores a new code (bypass the cooldown by clearing it).
    let () = redis.del(format!("{}SMSCooldown_{mobile}", app.keys.prefix())).await?;
    let (_, body) = app.request_code(&mobile).await?;
    assert_eq!(errno(&body), 0, "{body}");
    assert!(!redis.exists::<_, bool>(&attempts_key).await?);
    app.cleanup().await
}

#[tokio::test]
async fn concurrent_registers_with_one_code_create_one_user() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    set_code(&app, &mobile, "975310").await?;
    let body = json!({"mobile": mobile, "sms_code": "975310", "password": "12345678"});
    let answers = futures_util::future::join_all((0..10).map(|_| app.post_json(PATH, &body))).await;
    let mut errnos: Vec<i64> = Vec::new();
    for answer in answers {
        errnos.push(errno(&answer?.1));
    }
    errnos.sort();
    assert_eq!(errnos, [0, 4002, 4002, 4002, 4002, 4002, 4002, 4002, 4002, 4002]);
    assert_eq!(users_with(&app, &mobile).await?.len(), 1);
    app.cleanup().await
}

#[tokio::test]
async fn an_existing_mobile_gets_4003_from_the_unique_constraint() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    sqlx::query("insert into users (mobile, password_hash) values ($1, 'old')").bind(&mobile).execute(&app.db).await?;
    // A code can exist for a registered mobile (stored before the user signed up elsewhere).
    set_code(&app, &mobile, "864200").await?;
    let (_, body) =
        app.post_json(PATH, &json!({"mobile": mobile, "sms_code": "864200", "password": "12345678"})).await?;
    assert_eq!((errno(&body), body["errmsg"].as_str()), (4003, Some("该手机已被注册")));
    assert_eq!(users_with(&app, &mobile).await?, ["old"]);
    app.cleanup().await
}

#[tokio::test]
async fn a_failure_of_ours_after_the_code_was_taken_puts_the_code_back() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mobile = random_mobile();
    set_code(&app, &mobile, "482913").await?;
    // The insert fails the way a broken database does, after the code was taken.
    sqlx::query("alter table users rename to users_gone").execute(&app.db).await?;
    let register = json!({"mobile": mobile, "sms_code": "482913", "password": "correct-horse"});
    let (_, body) = app.post_json(PATH, &register).await?;
    assert_eq!(errno(&body), 4001, "{body}");

    let mut redis = app.redis.clone();
    let key = format!("{}SMS_{mobile}", app.keys.prefix());
    let (code, ttl): (Option<String>, i64) = redis::pipe().get(&key).pttl(&key).query_async(&mut redis).await?;
    assert_eq!(code.as_deref(), Some("482913"), "the code is back");
    assert!((1..=300_000).contains(&ttl), "with the lifetime it had left: {ttl} ms");

    sqlx::query("alter table users_gone rename to users").execute(&app.db).await?;
    let (_, body) = app.post_json(PATH, &register).await?;
    assert_eq!(errno(&body), 0, "the same code works once the database is back: {body}");
    app.cleanup().await
}

#[tokio::test]
async fn wrong_codes_are_limited_per_client_ip_without_burning_other_codes() -> TestResult {
    let app = TestApp::start(&[("REGISTER_HOURLY_FAILURES_PER_IP", "3")]).await?;
    let (victim, other) = (random_mobile(), random_mobile());
    set_code(&app, &victim, "111111").await?;
    set_code(&app, &other, "222222").await?;
    for guess in ["000001", "000002", "000003"] {
        let (_, body) =
            app.post_json(PATH, &json!({"mobile": victim, "sms_code": guess, "password": "correct-horse"})).await?;
        assert_eq!(errno(&body), 4004, "{body}");
    }
    let response = app
        .http
        .post(format!("{}{PATH}", app.base))
        .json(&json!({"mobile": other, "sms_code": "000004", "password": "correct-horse"}))
        .send()
        .await?;
    assert_eq!(response.status(), 429);
    assert!(response.headers().get("retry-after").is_some());
    let body: Value = response.json().await?;
    assert_eq!(errno(&body), 4201, "{body}");
    assert_eq!(app.sms_code_of(&other).await?.as_deref(), Some("222222"), "the refused try burned nothing");
    assert_eq!(app.sms_code_of(&victim).await?.as_deref(), Some("111111"), "3 wrong tries do not use up 5");
    app.cleanup().await
}
