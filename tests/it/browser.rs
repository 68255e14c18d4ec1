//! The signup flow in a real browser: headless Chromium driven by playwright-core
//! (`tests/browser/signup.mjs`) against the real api, worker and the CCP fake. Screenshots
//! land in `tests/artifacts/browser/`. Needs `node`, `tests/browser/node_modules` (`npm ci`)
//! and Chromium, which `scripts/test` installs; set `SMSCODE_SKIP_BROWSER=1` to skip it
//! knowingly.

use std::{sync::Arc, time::Duration};

use axum::{Router, extract::Path, http::StatusCode, routing::get};
use providers::ccp::CcpProvider;
use redis::AsyncCommands;
use tests::{TestApp, TestResult, ccp_fake::CcpFake};

#[tokio::test]
async fn a_user_signs_up_in_a_real_browser_and_cannot_sign_up_twice() -> TestResult {
    if std::env::var("SMSCODE_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("SMSCODE_SKIP_BROWSER=1: browser test skipped");
        return Ok(());
    }
    let root = std::path::PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/.."));
    let script = root.join("tests/browser/signup.mjs");
    if !root.join("tests/browser/node_modules/playwright-core").exists() {
        return Err("tests/browser/node_modules is missing: run `npm ci` in tests/browser (scripts/test does)".into());
    }

    let fake = CcpFake::start().await?;
    let mut vars = fake.env();
    // The page's second step asks again for a registered mobile: keep the cooldown short.
    vars.push(("SMS_RESEND_INTERVAL_SECS".into(), "1".into()));
    let pairs: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let mut app = TestApp::start(&pairs).await?;
    let provider = Arc::new(CcpProvider::new(fake.settings(), Duration::from_secs(5))?);
    app.spawn_worker_with(app.settings.clone(), provider);

    // What a person reads off elsewhere: the captcha (from the image) and the SMS (phone).
    let oracle = Router::new()
        .route(
            "/captcha/{id}",
            get({
                let (redis, prefix) = (app.redis.clone(), app.keys.prefix().to_owned());
                move |Path(id): Path<String>| {
                    let mut redis = redis.clone();
                    let key = format!("{prefix}ImageCode_{id}");
                    async move {
                        match redis.get::<_, Option<String>>(key).await {
                            Ok(Some(text)) => Ok(text),
                            _ => Err(StatusCode::NOT_FOUND),
                        }
                    }
                }
            }),
        )
        .route(
            "/code/{mobile}",
            get({
                let fake = fake.clone();
                move |Path(mobile): Path<String>| {
                    let last = fake.received_for(&mobile).into_iter().rev().find(|r| r.reply == "000000");
                    async move { last.map(|r| r.code).ok_or(StatusCode::NOT_FOUND) }
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let oracle_url = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move {
        let _ = axum::serve(listener, oracle).await;
    });

    let out = root.join("tests/artifacts/browser");
    let run = tokio::process::Command::new("node")
        .arg(&script)
        .args(["--base", &app.base, "--oracle", &oracle_url])
        .arg("--out")
        .arg(&out)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run).await??;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}{stderr}");
    assert!(output.status.success(), "browser test failed:\n{stdout}\n{stderr}");
    assert!(stdout.lines().any(|l| l == "browser: 3 passed, 0 failed"), "{stdout}");
    for shot in ["signup-desktop-success.png", "signup-desktop-registered.png", "signup-phone.png"] {
        assert!(out.join(shot).metadata().is_ok_and(|m| m.len() > 1000), "screenshot {shot}");
    }
    // The browser's signup is real: one user, one accepted SMS, no protocol violation.
    let users: i64 = sqlx::query_scalar("select count(*) from users").fetch_one(&app.db).await?;
    assert_eq!(users, 1);
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    app.cleanup().await
}
