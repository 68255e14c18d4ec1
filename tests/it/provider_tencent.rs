//! The Tencent client against its strict fake over HTTP: what it sends, how each answer is
//! classified, timeouts and broken connections, a wrong secret; and that the fake refuses
//! what the service refuses.

use std::time::{Duration, Instant};

use chrono::Utc;
use providers::{
    Accepted, Message, SendError, SmsProvider,
    tencent::{self, TencentProvider},
};
use serde_json::Value;
use shared::domain::{Mobile, Recipient, SmsCode};
use tests::{
    TestResult,
    tencent_fake::{self, Reply, TencentFake},
};
use uuid::Uuid;

const TIMEOUT: Duration = Duration::from_secs(5);

/// What one send was made of, to compare with what the fake saw.
struct Sent {
    job_id: Uuid,
    code: SmsCode,
    result: Result<Accepted, SendError>,
}

async fn send(provider: &TencentProvider, mobile: &str) -> TestResult<Sent> {
    let recipient = Recipient::parse(&Mobile::from_stored(mobile), 86)?;
    let code = SmsCode::generate();
    let job_id = Uuid::new_v4();
    let message = Message { job_id, recipient: &recipient, code: &code, ttl_minutes: 5 };
    let result = provider.send(&message).await;
    Ok(Sent { job_id, code, result })
}

async fn fake_and_client(timeout: Duration) -> TestResult<(TencentFake, TencentProvider)> {
    let fake = TencentFake::start().await?;
    let provider = TencentProvider::new(fake.settings(), timeout)?;
    Ok((fake, provider))
}

/// Sends to `mobile` and checks everything the fake recorded against what was sent.
async fn accepted_send_is_recorded_as_sent(mobile: &str, e164: &str) -> TestResult {
    let (fake, provider) = fake_and_client(TIMEOUT).await?;
    let sent = send(&provider, mobile).await?;
    let accepted = sent.result.map_err(|e| format!("send refused: {e}; violations {:?}", fake.violations()))?;
    assert_eq!(fake.violations(), Vec::<String>::new());
    let received = fake.received();
    let [r] = received.as_slice() else { return Err(format!("expected one request, got {received:?}").into()) };
    assert_eq!(r.phone_numbers, vec![e164.to_owned()]);
    assert_eq!(r.template_params, vec![sent.code.expose().to_owned(), "5".to_owned()]);
    assert_eq!(r.template_id, tencent_fake::TEMPLATE_ID);
    assert_eq!(r.sign_name.as_deref(), Some(tencent_fake::SIGN_NAME));
    assert_eq!(r.session_context, Some(sent.job_id.to_string()));
    assert_eq!(r.region, tencent_fake::REGION);
    assert_eq!(r.signed_headers, "content-type;host;x-tc-action");
    assert_eq!(r.reply, "Ok");
    assert!(r.serial_no.as_deref().is_some_and(|s| s.starts_with("5000:")), "{:?}", r.serial_no);
    assert_eq!(accepted.message_id, r.serial_no);
    Ok(())
}

#[tokio::test]
async fn a_mainland_send_is_accepted_with_the_serial_no_the_fake_returned() -> TestResult {
    accepted_send_is_recorded_as_sent("13812345678", "+8613812345678").await
}

#[tokio::test]
async fn an_international_send_goes_out_in_e164() -> TestResult {
    accepted_send_is_recorded_as_sent("+85251234567", "+85251234567").await
}

#[tokio::test]
async fn each_scripted_answer_comes_back_in_its_class() -> TestResult {
    let (fake, provider) = fake_and_client(TIMEOUT).await?;
    let cases: [(Reply, &str, &str); 14] = [
        (Reply::Error("InternalError.Timeout"), "transient", "InternalError.Timeout"),
        (Reply::Status("InternalError.SendAndRecvFail"), "transient", "InternalError.SendAndRecvFail"),
        (Reply::Error("RequestLimitExceeded"), "transient", "RequestLimitExceeded"),
        (Reply::Http(500), "transient", "http 500"),
        (Reply::Http(503), "transient", "http 503"),
        (Reply::Status("LimitExceeded.PhoneNumberThirtySecondLimit"), "number_limited", "PhoneNumberThirtySecondLimit"),
        (Reply::Status("LimitExceeded.PhoneNumberDailyLimit"), "number_limited", "PhoneNumberDailyLimit"),
        (Reply::Status("LimitExceeded.DeliveryFrequencyLimit"), "number_limited", "DeliveryFrequencyLimit"),
        (Reply::Status("InvalidParameterValue.IncorrectPhoneNumber"), "recipient", "IncorrectPhoneNumber"),
        (Reply::Status("FailedOperation.PhoneNumberInBlacklist"), "recipient", "PhoneNumberInBlacklist"),
        (Reply::Error("FailedOperation.TemplateIncorrectOrUnapproved"), "provider", "TemplateIncorrectOrUnapproved"),
        (Reply::Status("LimitExceeded.AppDailyLimit"), "provider", "AppDailyLimit"),
        (Reply::Error("InternalError.RequestTimeException"), "provider", "RequestTimeException"),
        (Reply::Error("UnauthorizedOperation.SmsSdkAppIdVerifyFail"), "provider", "SmsSdkAppIdVerifyFail"),
    ];
    fake.script(cases.iter().map(|(reply, _, _)| reply.clone()));
    for (i, (reply, class, code)) in cases.iter().enumerate() {
        let sent = send(&provider, "13812345678").await?;
        let error = match sent.result {
            Ok(accepted) => return Err(format!("{reply:?} was accepted: {accepted:?}").into()),
            Err(error) => error,
        };
        assert_eq!(error.class(), *class, "{reply:?}: {error}");
        assert!(error.reason().starts_with("tencent "), "{error}");
        assert!(error.reason().contains(code), "{reply:?}: {error}");
        let received = fake.received();
        let seen = received.get(i).ok_or(format!("the fake did not see request {i}"))?;
        assert!(seen.reply.contains(code), "the fake answered {} to {reply:?}", seen.reply);
    }
    assert_eq!(fake.violations(), Vec::<String>::new());
    // The script is used up: success again.
    assert!(send(&provider, "13812345678").await?.result.is_ok());
    Ok(())
}

#[tokio::test]
async fn a_hang_past_the_client_timeout_is_transient() -> TestResult {
    let (fake, provider) = fake_and_client(Duration::from_millis(300)).await?;
    fake.script([Reply::Hang]);
    let started = Instant::now();
    let sent = send(&provider, "13812345678").await?;
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    let Err(SendError::Transient(reason)) = sent.result else {
        return Err(format!("expected transient, got {:?}", sent.result).into());
    };
    assert!(reason.starts_with("tencent request failed"), "{reason}");
    let received = fake.received();
    assert_eq!(received.iter().map(|r| r.reply.as_str()).collect::<Vec<_>>(), ["hang"]);
    Ok(())
}

#[tokio::test]
async fn a_dropped_connection_is_transient() -> TestResult {
    let (fake, provider) = fake_and_client(TIMEOUT).await?;
    fake.script([Reply::Drop]);
    let sent = send(&provider, "13812345678").await?;
    assert_eq!(sent.result.as_ref().map_err(SendError::class), Err("transient"), "{:?}", sent.result);
    assert_eq!(fake.received().iter().map(|r| r.reply.as_str()).collect::<Vec<_>>(), ["drop"]);
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_is_refused_by_the_fake_and_is_provider_side() -> TestResult {
    const WRONG: &str = "SKWRONGWRONGWRONGWRONGWRONGWRONG";
    let fake = TencentFake::start().await?;
    let mut settings = fake.settings();
    settings.secret_key = WRONG.into();
    let provider = TencentProvider::new(settings, TIMEOUT)?;
    let sent = send(&provider, "13812345678").await?;
    let Err(SendError::Provider(reason)) = &sent.result else {
        return Err(format!("expected provider-side, got {:?}", sent.result).into());
    };
    assert!(reason.starts_with("tencent AuthFailure.SignatureFailure: "), "{reason}");
    assert!(!reason.contains(WRONG) && !reason.contains(tencent_fake::SECRET_KEY), "{reason}");
    let violations = fake.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations.iter().all(|v| v.starts_with("AuthFailure.SignatureFailure: ")), "{violations:?}");
    assert_eq!(fake.received_count(), 0);
    Ok(())
}

#[tokio::test]
async fn an_unknown_secret_id_is_provider_side() -> TestResult {
    let fake = TencentFake::start().await?;
    let mut settings = fake.settings();
    settings.secret_id = "AKIDUNKNOWNUNKNOWNUNKNOWNUNKNOWN99".into();
    let provider = TencentProvider::new(settings, TIMEOUT)?;
    let sent = send(&provider, "13812345678").await?;
    let Err(SendError::Provider(reason)) = &sent.result else {
        return Err(format!("expected provider-side, got {:?}", sent.result).into());
    };
    assert!(reason.starts_with("tencent AuthFailure.SecretIdNotFound: "), "{reason}");
    assert_eq!(fake.violations().len(), 1);
    Ok(())
}

/// A request made by hand, signed with the client's signing function unless `tamper` changes
/// it afterwards: the fake's answer as JSON.
struct Raw {
    headers: Vec<(&'static str, String)>,
    body: String,
    signed_at: chrono::DateTime<Utc>,
    signed_body: Option<String>,
}

impl Raw {
    fn new(phone: &str) -> Self {
        let body = format!(
            r#"{{"PhoneNumberSet":["{phone}"],"SmsSdkAppId":"{}","SignName":"{}","TemplateId":"{}","TemplateParamSet":["123456","5"]}}"#,
            tencent_fake::SMS_SDK_APP_ID,
            tencent_fake::SIGN_NAME,
            tencent_fake::TEMPLATE_ID,
        );
        Self {
            headers: vec![
                ("X-TC-Action", "SendSms".into()),
                ("X-TC-Version", "2021-01-11".into()),
                ("X-TC-Region", "ap-guangzhou".into()),
            ],
            body,
            signed_at: Utc::now(),
            signed_body: None,
        }
    }

    fn header(mut self, name: &'static str, value: Option<&str>) -> Self {
        self.headers.retain(|(n, _)| *n != name);
        if let Some(value) = value {
            self.headers.push((name, value.to_owned()));
        }
        self
    }

    async fn send(self, fake: &TencentFake) -> TestResult<Value> {
        let host = fake.base_url.trim_start_matches("http://").to_owned();
        let signed_body = self.signed_body.unwrap_or_else(|| self.body.clone());
        let signature = tencent::sign(&tencent::Signing {
            secret_id: tencent_fake::SECRET_ID,
            secret_key: tencent_fake::SECRET_KEY,
            service: tencent::SERVICE,
            headers: &[("content-type", tencent::CONTENT_TYPE), ("host", &host), ("x-tc-action", "SendSms")],
            payload: signed_body.as_bytes(),
            now: self.signed_at,
        });
        let mut request = reqwest::Client::new()
            .post(format!("{}/", fake.base_url))
            .header("content-type", tencent::CONTENT_TYPE)
            .header("x-tc-timestamp", self.signed_at.timestamp().to_string())
            .header("authorization", signature.authorization)
            .body(self.body);
        for (name, value) in self.headers {
            request = request.header(name, value);
        }
        let response = request.send().await?;
        assert_eq!(response.status(), reqwest::StatusCode::OK);
        let content_type = response.headers().get("content-type").and_then(|v| v.to_str().ok()).map(str::to_owned);
        assert_eq!(content_type.as_deref(), Some("application/json"));
        Ok(response.json().await?)
    }
}

fn error_code(answer: &Value) -> Option<&str> {
    answer.pointer("/Response/Error/Code").and_then(Value::as_str)
}

#[tokio::test]
async fn the_fake_refuses_what_the_service_refuses() -> TestResult {
    let fake = TencentFake::start().await?;

    // A correct request by hand is accepted: the cases below differ from it in one thing.
    let ok = Raw::new("+8613812345678").send(&fake).await?;
    assert_eq!(ok.pointer("/Response/SendStatusSet/0/Code").and_then(Value::as_str), Some("Ok"), "{ok}");
    assert_eq!(ok.pointer("/Response/SendStatusSet/0/IsoCode").and_then(Value::as_str), Some("CN"), "{ok}");
    assert_eq!(ok.pointer("/Response/SendStatusSet/0/Fee").and_then(Value::as_u64), Some(1), "{ok}");
    assert_eq!(fake.violations(), Vec::<String>::new());

    let mut stale = Raw::new("+8613812345678");
    stale.signed_at = Utc::now() - chrono::Duration::seconds(400);
    assert_eq!(error_code(&stale.send(&fake).await?), Some("AuthFailure.SignatureExpire"));

    let mut tampered = Raw::new("+8613812345678");
    tampered.signed_body = Some(tampered.body.clone());
    tampered.body = tampered.body.replace("123456", "654321");
    assert_eq!(error_code(&tampered.send(&fake).await?), Some("AuthFailure.SignatureFailure"));

    let old_version = Raw::new("+8613812345678").header("X-TC-Version", Some("2019-07-11"));
    assert_eq!(error_code(&old_version.send(&fake).await?), Some("NoSuchVersion"));

    let no_region = Raw::new("+8613812345678").header("X-TC-Region", None);
    assert_eq!(error_code(&no_region.send(&fake).await?), Some("MissingParameter"));

    let national = Raw::new("13812345678").send(&fake).await?;
    assert_eq!(error_code(&national), None, "{national}");
    assert_eq!(
        national.pointer("/Response/SendStatusSet/0/Code").and_then(Value::as_str),
        Some("InvalidParameterValue.IncorrectPhoneNumber"),
        "{national}"
    );

    let codes: Vec<String> = fake.violations().iter().filter_map(|v| v.split(':').next().map(str::to_owned)).collect();
    assert_eq!(
        codes,
        [
            "AuthFailure.SignatureExpire",
            "AuthFailure.SignatureFailure",
            "NoSuchVersion",
            "MissingParameter",
            "InvalidParameterValue.IncorrectPhoneNumber",
        ]
    );
    assert_eq!(fake.received_count(), 1);
    Ok(())
}
