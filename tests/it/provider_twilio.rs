//! The Twilio client against its strict fake, over HTTP: the number in E.164, the code and the
//! minutes in the text, each error class, timeouts, dropped connections and wrong credentials.

use std::time::{Duration, Instant};

use providers::{Accepted, Message, SendError, SmsProvider, twilio::TwilioProvider};
use secrecy::SecretString;
use serde_json::Value;
use shared::{
    config::{TwilioSender, TwilioSettings},
    domain::{Mobile, Recipient, SmsCode},
};
use tests::{
    TestResult,
    twilio_fake::{self, Reply, TwilioFake},
};

/// Long enough for any answer of the fake on a loaded machine.
const TIMEOUT: Duration = Duration::from_secs(10);

/// Sends `code` to `mobile` (national numbers are Chinese) through a client of `settings`.
async fn send(
    settings: &TwilioSettings,
    timeout: Duration,
    mobile: &str,
    code: &SmsCode,
    ttl_minutes: u64,
) -> TestResult<Result<Accepted, SendError>> {
    let recipient = Recipient::parse(&Mobile::from_stored(mobile), 86)?;
    let provider = TwilioProvider::new(settings.clone(), timeout)?;
    let message = Message { job_id: uuid::Uuid::new_v4(), recipient: &recipient, code, ttl_minutes };
    Ok(provider.send(&message).await)
}

#[tokio::test]
async fn a_mainland_number_is_sent_in_e164_with_the_code_and_minutes_in_the_body() -> TestResult {
    let fake = TwilioFake::start().await?;
    let mut settings = fake.settings();
    settings.text_template = "【注册】验证码{code}，{minutes}分钟内有效。".into();
    let code = SmsCode::generate();

    let accepted = send(&settings, TIMEOUT, "13812345678", &code, 5).await??;

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let received = fake.received();
    assert_eq!(received.len(), 1, "{received:?}");
    let got = &received[0];
    assert_eq!(got.to, "+8613812345678");
    assert_eq!(got.body, format!("【注册】验证码{}，5分钟内有效。", code.expose()));
    assert_eq!(got.from.as_deref(), Some(twilio_fake::FROM));
    assert_eq!(got.messaging_service_sid, None);
    assert_eq!(got.status_callback, None);
    assert_eq!(got.reply, "201 queued");
    let sid = got.message_sid.clone().ok_or("the fake returned no sid")?;
    assert!(sid.starts_with("SM") && sid.len() == 34, "{sid}");
    assert_eq!(accepted, Accepted { message_id: Some(sid), note: None });
    Ok(())
}

#[tokio::test]
async fn an_international_number_goes_through_the_messaging_service_with_a_status_callback() -> TestResult {
    let fake = TwilioFake::start().await?;
    let callback = "https://sms.example.com/receipts/twilio?token=a+b&x=%2F1";
    let settings = TwilioSettings {
        sender: TwilioSender::MessagingService(twilio_fake::MESSAGING_SERVICE_SID.into()),
        status_callback: Some(callback.into()),
        ..fake.settings()
    };
    let code = SmsCode::generate();

    let accepted = send(&settings, TIMEOUT, "+447911123456", &code, 10).await??;

    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    let received = fake.received_for("+447911123456");
    assert_eq!(received.len(), 1, "{:?}", fake.received());
    let got = &received[0];
    assert!(got.body.contains(code.expose()), "{}", got.body);
    assert!(got.body.contains("10 minutes"), "{}", got.body);
    assert_eq!(got.from, None);
    assert_eq!(got.messaging_service_sid.as_deref(), Some(twilio_fake::MESSAGING_SERVICE_SID));
    assert_eq!(got.status_callback.as_deref(), Some(callback), "the callback URL arrives byte for byte");
    assert_eq!(got.reply, "201 accepted");
    assert_eq!(accepted.message_id, got.message_sid);
    Ok(())
}

#[tokio::test]
async fn each_scripted_answer_comes_back_in_its_class() -> TestResult {
    let fake = TwilioFake::start().await?;
    let settings = fake.settings();
    let cases = [
        (Reply::Error(20429), "transient", "20429"),
        (Reply::Http(500), "transient", "http 500"),
        (Reply::Http(503), "transient", "http 503"),
        (Reply::Http(429), "transient", "http 429"),
        (Reply::ErrorAt(503, 20503), "transient", "20503"),
        (Reply::Error(14107), "number_limited", "14107"),
        (Reply::Error(21211), "recipient", "21211"),
        (Reply::Error(21610), "recipient", "21610"),
        (Reply::Error(21614), "recipient", "21614"),
        (Reply::CreatedFailed(30006), "recipient", "30006"),
        (Reply::Error(20003), "provider", "20003"),
        (Reply::Error(21408), "provider", "21408"),
        (Reply::Error(21606), "provider", "21606"),
        (Reply::Error(21659), "provider", "21659"),
        (Reply::Error(21603), "provider", "21603"),
        (Reply::Error(29999), "provider", "29999"),
        (Reply::CreatedFailed(30007), "provider", "30007"),
    ];
    let code = SmsCode::generate();
    for (i, (reply, class, label)) in cases.into_iter().enumerate() {
        fake.script([reply.clone()]);
        let outcome = send(&settings, TIMEOUT, "13812345678", &code, 5).await?;
        let Err(error) = outcome else { panic!("{reply:?} was accepted: {outcome:?}") };
        assert_eq!(error.class(), class, "{reply:?}: {error}");
        assert!(error.reason().starts_with("twilio ") && error.reason().contains(label), "{reply:?}: {error}");
        let received = fake.received();
        assert_eq!(received.len(), i + 1, "one request per send, no retry inside the client");
        let answered = &received[i].reply;
        assert!(answered.contains(label.trim_start_matches("http ")), "the fake answered {answered} to {reply:?}");
    }
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    // The script is used up: success again.
    assert!(send(&settings, TIMEOUT, "13812345678", &code, 5).await?.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_hang_past_the_client_timeout_is_transient() -> TestResult {
    let fake = TwilioFake::start().await?;
    let settings = fake.settings();
    let code = SmsCode::generate();
    let short = Duration::from_millis(300);

    fake.script([Reply::Hang]);
    let started = Instant::now();
    let outcome = send(&settings, short, "13812345678", &code, 5).await?;
    assert!(matches!(outcome, Err(SendError::Transient(_))), "{outcome:?}");
    assert!(started.elapsed() < Duration::from_secs(5), "gave up after {:?}", started.elapsed());
    assert_eq!(fake.received().last().map(|r| r.reply.as_str()), Some("hang"));

    fake.set_latency(Duration::from_secs(2));
    let outcome = send(&settings, short, "13812345678", &code, 5).await?;
    assert!(matches!(outcome, Err(SendError::Transient(_))), "{outcome:?}");

    fake.set_latency(Duration::ZERO);
    assert!(send(&settings, short, "13812345678", &code, 5).await?.is_ok());
    assert!(fake.violations().is_empty(), "{:?}", fake.violations());
    Ok(())
}

#[tokio::test]
async fn a_dropped_connection_is_transient() -> TestResult {
    let fake = TwilioFake::start().await?;
    let settings = fake.settings();
    let code = SmsCode::generate();
    fake.script([Reply::Drop]);

    let outcome = send(&settings, TIMEOUT, "13812345678", &code, 5).await?;

    let Err(SendError::Transient(reason)) = outcome else { panic!("{outcome:?}") };
    assert!(reason.starts_with("twilio request failed"), "no answer at all, not an HTTP status: {reason}");
    assert_eq!(fake.received().last().map(|r| r.reply.as_str()), Some("drop"));
    assert!(send(&settings, TIMEOUT, "13812345678", &code, 5).await?.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_wrong_auth_token_is_refused_as_provider_side_without_the_secret_in_the_error() -> TestResult {
    let fake = TwilioFake::start().await?;
    let secret = "0f0e0d0c0b0a09080706050403020100";
    let settings = TwilioSettings { auth_token: SecretString::from(secret), ..fake.settings() };
    let code = SmsCode::generate();

    let outcome = send(&settings, TIMEOUT, "13812345678", &code, 5).await?;

    let Err(SendError::Provider(reason)) = outcome else { panic!("{outcome:?}") };
    assert!(reason.starts_with("twilio 20003"), "{reason}");
    assert!(!reason.contains(secret), "{reason}");
    assert!(fake.received().is_empty(), "refused before any message was created");
    let violations = fake.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].starts_with("20003"), "{violations:?}");
    Ok(())
}

#[tokio::test]
async fn no_credentials_or_another_accounts_path_is_refused() -> TestResult {
    let fake = TwilioFake::start().await?;
    let response = reqwest::Client::new()
        .post(format!("{}/2010-04-01/Accounts/{}/Messages.json", fake.base_url, twilio_fake::ACCOUNT_SID))
        .form(&[("To", "+8613812345678"), ("From", twilio_fake::FROM), ("Body", "hi")])
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 401);
    assert!(response.headers().contains_key("www-authenticate"));
    let body: Value = response.json().await?;
    assert_eq!(body["code"].as_u64(), Some(20003), "{body}");

    // Right credentials, but the URL names an account they do not own.
    let (status, body) = post_raw(
        &fake,
        "AC00000000000000000000000000000000",
        "application/x-www-form-urlencoded",
        "To=%2B8613812345678&From=%2B15005550006&Body=hi",
    )
    .await?;
    assert_eq!((status, body["code"].as_u64()), (404, Some(20404)), "{body}");
    assert!(fake.received().is_empty());
    assert_eq!(fake.violations().len(), 2, "{:?}", fake.violations());
    Ok(())
}

#[tokio::test]
async fn what_twilio_would_refuse_is_refused_with_its_error_and_recorded() -> TestResult {
    let fake = TwilioFake::start().await?;
    let code = SmsCode::generate();
    let long = TwilioSettings { text_template: format!("{}{{code}}", "x".repeat(1600)), ..fake.settings() };
    let not_ours = TwilioSettings { sender: TwilioSender::From("+15005550001".into()), ..fake.settings() };
    let no_service = TwilioSettings {
        sender: TwilioSender::MessagingService("MG00000000000000000000000000000000".into()),
        ..fake.settings()
    };
    let relative = TwilioSettings { status_callback: Some("/receipts/twilio".into()), ..fake.settings() };
    for (settings, expected) in [(long, "21617"), (not_ours, "21606"), (no_service, "21701"), (relative, "21609")] {
        let outcome = send(&settings, TIMEOUT, "13812345678", &code, 5).await?;
        let Err(SendError::Provider(reason)) = outcome else { panic!("{expected}: {outcome:?}") };
        assert!(reason.starts_with(&format!("twilio {expected}")), "{reason}");
        assert!(fake.violations().last().is_some_and(|v| v.starts_with(expected)), "{:?}", fake.violations());
    }
    assert!(fake.received().is_empty(), "{:?}", fake.received());

    // What the client never sends, straight at the fake.
    let raw = [
        ("application/json", r#"{"To":"+8613812345678","From":"+15005550006","Body":"hi"}"#, 21604),
        ("application/x-www-form-urlencoded", "To=13812345678&From=%2B15005550006&Body=hi", 21211),
        ("application/x-www-form-urlencoded", "To=%2B8613812345678&Body=hi", 21603),
        (
            "application/x-www-form-urlencoded",
            "To=%2B8613812345678&From=%2B15005550006&MessagingServiceSid=MG6b2f0a8d4c1e7f3a9b5d2c8e0f4a6b1d&Body=hi",
            21603,
        ),
        ("application/x-www-form-urlencoded", "To=%2B8613812345678&From=%2B15005550006", 21602),
    ];
    for (content_type, body, expected) in raw {
        let (status, answer) = post_raw(&fake, twilio_fake::ACCOUNT_SID, content_type, body).await?;
        assert_eq!((status, answer["code"].as_u64()), (400, Some(expected)), "{body}: {answer}");
        assert_eq!(answer["more_info"], format!("https://www.twilio.com/docs/errors/{expected}"));
    }
    assert_eq!(fake.violations().len(), 4 + raw.len(), "{:?}", fake.violations());
    assert!(fake.received().is_empty(), "{:?}", fake.received());
    Ok(())
}

/// Posts `body` to the fake's Messages.json of account `sid` with the right credentials.
async fn post_raw(fake: &TwilioFake, sid: &str, content_type: &str, body: &str) -> TestResult<(u16, Value)> {
    let response = reqwest::Client::new()
        .post(format!("{}/2010-04-01/Accounts/{sid}/Messages.json", fake.base_url))
        .basic_auth(twilio_fake::ACCOUNT_SID, Some(twilio_fake::AUTH_TOKEN))
        .header("content-type", content_type)
        .body(body.to_owned())
        .send()
        .await?;
    Ok((response.status().as_u16(), response.json().await?))
}
