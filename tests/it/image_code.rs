//! `GET /passport/image_code`.

use redis::AsyncCommands;
use serde_json::Value;
use tests::{TestApp, TestResult};

#[tokio::test]
async fn a_captcha_is_a_png_whose_text_is_stored_for_five_minutes() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let response = app.http.get(format!("{}/passport/image_code?image_code_id=abc-123_X", app.base)).send().await?;
    assert_eq!(response.status(), 200);
    assert_eq!(response.headers()["content-type"], "image/png");
    assert_eq!(response.headers()["cache-control"], "no-store");
    let bytes = response.bytes().await?;
    let decoder = png::Decoder::new(std::io::Cursor::new(bytes.to_vec()));
    let reader = decoder.read_info()?;
    let (w, h) = (reader.info().width, reader.info().height);
    assert!(w >= 100 && h >= 40, "a readable captcha, got {w}x{h}");

    let mut redis = app.redis.clone();
    let key = format!("{}ImageCode_abc-123_X", app.keys.prefix());
    let text: String = redis.get(&key).await?;
    assert_eq!(text.chars().count(), 4);
    for ambiguous in ['0', 'O', 'o', '1', 'I', 'l', 'i'] {
        assert!(!text.contains(ambiguous), "ambiguous character in {text}");
    }
    let ttl: i64 = redis.ttl(&key).await?;
    assert!((295..=300).contains(&ttl), "ttl {ttl}");
    app.cleanup().await
}

#[tokio::test]
async fn the_original_frontends_parameter_name_is_accepted() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let response = app.http.get(format!("{}/passport/image_code?imageCodeId=legacy1", app.base)).send().await?;
    assert_eq!(response.headers()["content-type"], "image/png");
    let mut redis = app.redis.clone();
    let text: Option<String> = redis.get(format!("{}ImageCode_legacy1", app.keys.prefix())).await?;
    assert!(text.is_some());
    app.cleanup().await
}

#[tokio::test]
async fn a_missing_or_malformed_id_gets_errno_4103() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let long = "a".repeat(65);
    for query in
        ["", "?image_code_id=", "?image_code_id=a%20b", "?image_code_id=a/b", &format!("?image_code_id={long}")]
    {
        let response = app.http.get(format!("{}/passport/image_code{query}", app.base)).send().await?;
        assert_eq!(response.status(), 200, "{query}");
        let body: Value = response.json().await?;
        assert_eq!(body["errno"], 4103, "{query}: {body}");
    }
    let mut redis = app.redis.clone();
    let stored: Vec<String> = redis.keys(format!("{}ImageCode_*", app.keys.prefix())).await?;
    assert!(stored.is_empty(), "nothing stored for bad ids: {stored:?}");
    app.cleanup().await
}

#[tokio::test]
async fn redis_down_gets_errno_4001_not_a_5xx() -> TestResult {
    let app = TestApp::start(&[("REDIS_URL", &format!("redis://127.0.0.1:{}", tests::DEAD_PORT))]).await?;
    let started = std::time::Instant::now();
    let response = app.http.get(format!("{}/passport/image_code?image_code_id=x", app.base)).send().await?;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await?;
    assert_eq!(body["errno"], 4001);
    assert!(started.elapsed() < std::time::Duration::from_secs(5), "answered in {:?}", started.elapsed());
    app.cleanup().await
}
