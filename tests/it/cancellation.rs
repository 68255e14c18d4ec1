//! A request's lifetime: a client that resets its connection right after sending changes
//! nothing (the request runs to its end detached from the connection: job queued, or
//! everything given back), and a request that outlives `API_REQUEST_TIMEOUT_SECS` gets errno
//! JSON.

use std::time::Duration;

use rand::Rng;
use redis::AsyncCommands;
use tests::{TestApp, TestResult, ccp_fake::CcpFake, random_mobile, wait_until};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Sends `body` as `POST path` on a fresh connection, then resets it (RST, no FIN) after
/// `delay`, without reading the answer.
async fn post_then_reset(base: &str, path: &str, body: &str, delay: Duration) -> TestResult {
    let addr = base.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(addr).await?;
    let request = format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    tokio::time::sleep(delay).await;
    stream.set_zero_linger()?;
    drop(stream);
    Ok(())
}

/// What Redis and the provider say about `mobile`: (code stored, cooldown held, SMS received).
async fn state_of(app: &TestApp, fake: &CcpFake, mobile: &str) -> TestResult<(bool, bool, bool)> {
    let mut redis = app.redis.clone();
    let code: Option<String> = redis.get(format!("{}SMS_{mobile}", app.keys.prefix())).await?;
    let cooldown: bool = redis.exists(format!("{}SMSCooldown_{mobile}", app.keys.prefix())).await?;
    let received = fake.received().iter().any(|r| r.mobile == mobile);
    Ok((code.is_some(), cooldown, received))
}

#[tokio::test]
async fn requests_whose_connection_is_reset_leave_no_stored_code_without_a_job_and_no_lockout() -> TestResult {
    const REQUESTS: usize = 150;
    let fake = CcpFake::start().await?;
    let mut vars = fake.env();
    vars.push(("SMS_HOURLY_LIMIT_PER_IP".into(), "1000".into()));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    app.spawn_worker_from(app.settings.clone());

    let captchas = app.captchas(REQUESTS).await?;

    let resets = futures_util::future::join_all(captchas.iter().map(|(mobile, id, text)| {
        let body = serde_json::json!({"mobile": mobile, "image_code": text, "image_code_id": id}).to_string();
        let delay = Duration::from_micros(rand::rng().random_range(0..5_000));
        let base = app.base.clone();
        async move { post_then_reset(&base, "/passport/sms_code", &body, delay).await }
    }))
    .await;
    for reset in resets {
        reset?;
    }

    // Every mobile ends in one of two states: a code stored and sent, or nothing kept at all.
    let mobiles: Vec<&str> = captchas.iter().map(|(m, _, _)| m.as_str()).collect();
    let outcome = wait_until(Duration::from_secs(20), "every mobile to be sent or untouched", || async {
        let mut sent = 0;
        for mobile in &mobiles {
            match state_of(&app, &fake, mobile).await.ok()? {
                (true, true, true) => sent += 1,
                (false, false, false) => {}
                _ => return None,
            }
        }
        Some(sent)
    })
    .await;
    if outcome.is_err() {
        let mut bad = Vec::new();
        for mobile in &mobiles {
            let state = state_of(&app, &fake, mobile).await?;
            if !matches!(state, (true, true, true) | (false, false, false)) {
                bad.push(format!("{mobile}: code {} cooldown {} sms {}", state.0, state.1, state.2));
            }
        }
        return Err(format!("{} of {REQUESTS} mobiles are inconsistent, e.g. {:?}", bad.len(), bad.first()).into());
    }

    // A mobile for which nothing was sent can ask again at once.
    let untouched: Vec<&str> = {
        let mut list = Vec::new();
        for mobile in &mobiles {
            if state_of(&app, &fake, mobile).await? == (false, false, false) {
                list.push(*mobile);
            }
        }
        list
    };
    for mobile in untouched.iter().take(20) {
        let (_, body) = app.request_code(mobile).await?;
        assert_eq!(body["errno"], 0, "{mobile} can ask again: {body}");
    }
    eprintln!("reset burst: {REQUESTS} requests, {} sent, {} untouched", REQUESTS - untouched.len(), untouched.len());
    app.cleanup().await
}

#[tokio::test]
async fn a_register_whose_connection_is_reset_still_creates_the_user() -> TestResult {
    let app = TestApp::start(&[]).await?;
    let mut redis = app.redis.clone();
    let mut mobiles = Vec::new();
    for _ in 0..10 {
        let mobile = random_mobile();
        let () = redis.set_ex(format!("{}SMS_{mobile}", app.keys.prefix()), "654321", 300).await?;
        let body = serde_json::json!({"mobile": mobile, "sms_code": "654321", "password": "correct-horse"}).to_string();
        let delay = Duration::from_micros(rand::rng().random_range(0..5_000));
        post_then_reset(&app.base, "/passport/register", &body, delay).await?;
        mobiles.push(mobile);
    }
    // Each request either never started (the code is still there) or ran to its end (the
    // user exists and the code is used): never a code taken and no user.
    wait_until(Duration::from_secs(20), "every register to finish", || async {
        for mobile in &mobiles {
            let code = app.sms_code_of(mobile).await.ok()?;
            let users: i64 = sqlx::query_scalar("select count(*) from users where mobile = $1")
                .bind(mobile)
                .fetch_one(&app.db)
                .await
                .ok()?;
            if !matches!((code.is_some(), users), (true, 0) | (false, 1)) {
                return None;
            }
        }
        Some(())
    })
    .await?;
    app.cleanup().await
}

#[tokio::test]
async fn a_request_past_the_timeout_answers_errno_json() -> TestResult {
    let app = TestApp::start(&[("DEPENDENCY_TIMEOUT_MS", "200"), ("API_REQUEST_TIMEOUT_SECS", "3")]).await?;
    // A body that never finishes arriving keeps the handler waiting past the limit.
    let addr = app.base.trim_start_matches("http://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(&addr).await?;
    let head = format!(
        "POST /passport/sms_code HTTP/1.1\r\nHost: {addr}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{"
    );
    stream.write_all(head.as_bytes()).await?;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), async {
        let mut buf = [0u8; 4096];
        loop {
            let n = stream.read(&mut buf).await?;
            answer.extend_from_slice(&buf[..n]);
            if n == 0 || answer.windows(4).any(|w| w == b"\r\n\r\n") && answer.ends_with(b"}") {
                return Ok::<_, std::io::Error>(());
            }
        }
    })
    .await;
    assert!(read.is_ok(), "an answer within the limit");
    let text = String::from_utf8_lossy(&answer);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
    assert!(text.contains(r#""errno":4500"#), "errno JSON, not an empty 408: {text}");
    app.cleanup().await
}
