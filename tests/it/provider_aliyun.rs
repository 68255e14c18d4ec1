//! The Aliyun client against its strict fake: what it sends, and the class of every kind of
//! answer; then the fake's own refusals, from requests signed by hand.

use std::{collections::BTreeMap, time::Duration};

use chrono::{DateTime, Utc};
use providers::{
    Accepted, Message, SendError, SmsProvider,
    aliyun::{self, AliyunProvider, CanonicalRequest, SignedRequest},
};
use serde_json::Value;
use shared::domain::{Mobile, Recipient, SmsCode};
use tests::{
    TestResult,
    aliyun_fake::{ACCESS_KEY_ID, ACCESS_KEY_SECRET, AliyunFake, Reply, SIGN_NAME, TEMPLATE_CODE},
};
use uuid::Uuid;

fn client(fake: &AliyunFake, timeout: Duration) -> TestResult<AliyunProvider> {
    Ok(AliyunProvider::new(fake.settings(), timeout)?)
}

async fn send(
    provider: &AliyunProvider,
    mobile: &str,
    code: &str,
    job_id: Uuid,
) -> TestResult<Result<Accepted, SendError>> {
    let recipient = Recipient::parse(&Mobile::from_stored(mobile), 86)?;
    let code = SmsCode::from_stored(code);
    let message = Message { job_id, recipient: &recipient, code: &code, ttl_minutes: 5 };
    Ok(provider.send(&message).await)
}

#[tokio::test]
async fn a_mainland_send_is_accepted_with_the_biz_id_the_fake_returned() -> TestResult {
    let fake = AliyunFake::start().await?;
    let job_id = Uuid::new_v4();
    let accepted = send(&client(&fake, Duration::from_secs(5))?, "13812345678", "661474", job_id).await??;

    assert_eq!(fake.violations(), Vec::<String>::new());
    let received = fake.received();
    assert_eq!(received.len(), 1);
    let got = &received[0];
    assert_eq!(got.phone_numbers, "13812345678");
    assert_eq!(got.sign_name, SIGN_NAME);
    assert_eq!(got.template_code, TEMPLATE_CODE);
    assert_eq!(got.template_param, BTreeMap::from([("code".to_owned(), "661474".to_owned())]));
    assert_eq!(got.out_id, Some(job_id.to_string()));
    assert_eq!(got.reply, "OK");
    assert!(got.biz_id.is_some());
    assert_eq!(accepted.message_id, got.biz_id);
    Ok(())
}

#[tokio::test]
async fn international_numbers_are_sent_as_calling_code_and_number_without_plus() -> TestResult {
    let fake = AliyunFake::start().await?;
    let provider = client(&fake, Duration::from_secs(5))?;
    for (mobile, sent) in [("+85251234567", "85251234567"), ("+14155552671", "14155552671")] {
        let accepted = send(&provider, mobile, "123456", Uuid::new_v4()).await??;
        let received = fake.received_for(sent);
        assert_eq!(received.len(), 1, "{mobile}: {:?}", fake.received());
        assert_eq!(accepted.message_id, received[0].biz_id);
    }
    assert_eq!(fake.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn each_kind_of_answer_comes_back_in_its_class() -> TestResult {
    let fake = AliyunFake::start().await?;
    let provider = client(&fake, Duration::from_secs(5))?;
    let cases = [
        (Reply::Code("isp.SYSTEM_ERROR"), "transient", "aliyun isp.SYSTEM_ERROR: 系统错误"),
        (Reply::Gateway(400, "Throttling.User"), "transient", "aliyun Throttling.User: Request was denied"),
        (Reply::Gateway(503, "ServiceUnavailable"), "transient", "aliyun http 503 ServiceUnavailable"),
        (Reply::Http(500), "transient", "aliyun http 500"),
        (Reply::Http(429), "transient", "aliyun http 429"),
        (Reply::Drop, "transient", "aliyun response lost"),
        (
            Reply::Code("isv.BUSINESS_LIMIT_CONTROL"),
            "number_limited",
            "aliyun isv.BUSINESS_LIMIT_CONTROL: 触发分钟级流控",
        ),
        (Reply::Code("isv.MOBILE_NUMBER_ILLEGAL"), "recipient", "aliyun isv.MOBILE_NUMBER_ILLEGAL: 非法手机号"),
        (Reply::Code("isv.DAY_LIMIT_CONTROL"), "provider", "aliyun isv.DAY_LIMIT_CONTROL: 触发日发送限额"),
        (Reply::Code("isv.BLACK_KEY_CONTROL_LIMIT"), "provider", "aliyun isv.BLACK_KEY_CONTROL_LIMIT"),
        (Reply::Code("isv.AMOUNT_NOT_ENOUGH"), "provider", "aliyun isv.AMOUNT_NOT_ENOUGH: 账户余额不足"),
        (Reply::Code("isv.SMS_TEMPLATE_ILLEGAL"), "provider", "aliyun isv.SMS_TEMPLATE_ILLEGAL"),
        (Reply::Code("isp.RAM_PERMISSION_DENY"), "provider", "aliyun isp.RAM_PERMISSION_DENY"),
        (Reply::Code("isv.SOMETHING_NEW"), "provider", "aliyun isv.SOMETHING_NEW: scripted failure"),
        (Reply::Http(404), "provider", "aliyun http 404"),
    ];
    for (i, (reply, class, reason)) in cases.iter().enumerate() {
        fake.script([reply.clone()]);
        let Err(error) = send(&provider, "13812345678", "123456", Uuid::new_v4()).await? else {
            return Err(format!("{reply:?} was taken as accepted").into());
        };
        assert_eq!(error.class(), *class, "{reply:?}: {error}");
        assert!(error.reason().starts_with(reason), "{reply:?}: {error}");
        // The fake answered this request, and with the scripted reply.
        assert_eq!(fake.received_count(), i + 1, "{reply:?}");
    }
    assert_eq!(fake.violations(), Vec::<String>::new());
    // Back to success once the script is used up.
    send(&provider, "13812345678", "123456", Uuid::new_v4()).await??;
    Ok(())
}

#[tokio::test]
async fn a_hang_past_the_client_timeout_is_transient() -> TestResult {
    let fake = AliyunFake::start().await?;
    fake.script([Reply::Hang(Duration::from_secs(10))]);
    let started = std::time::Instant::now();
    let result = send(&client(&fake, Duration::from_millis(300))?, "13812345678", "123456", Uuid::new_v4()).await?;
    let Err(SendError::Transient(reason)) = result else {
        return Err(format!("expected transient, got {result:?}").into());
    };
    assert!(reason.starts_with("aliyun request failed"), "{reason}");
    assert!(started.elapsed() < Duration::from_secs(3), "took {:?}", started.elapsed());
    assert_eq!(fake.received().iter().map(|r| r.reply.as_str()).collect::<Vec<_>>(), ["hang"]);
    Ok(())
}

#[tokio::test]
async fn a_wrong_secret_is_refused_as_signature_does_not_match_and_the_secret_stays_out() -> TestResult {
    let fake = AliyunFake::start().await?;
    let secret = "wrongAccessKeySecret0123456789";
    let settings = shared::config::AliyunSettings { access_key_secret: secret.into(), ..fake.settings() };
    let provider = AliyunProvider::new(settings, Duration::from_secs(5))?;
    let result = send(&provider, "13812345678", "661474", Uuid::new_v4()).await?;
    let Err(SendError::Provider(reason)) = result else {
        return Err(format!("expected provider-side, got {result:?}").into());
    };
    assert_eq!(reason, "aliyun SignatureDoesNotMatch: Specified signature is not matched with our calculation.");
    assert!(!reason.contains(secret) && !reason.contains("661474"), "{reason}");
    let violations = fake.violations();
    assert_eq!(violations.len(), 1, "{violations:?}");
    assert!(violations[0].starts_with("SignatureDoesNotMatch"), "{violations:?}");
    assert_eq!(fake.received_count(), 0);
    Ok(())
}

#[tokio::test]
async fn an_unknown_access_key_id_is_refused_as_provider_side() -> TestResult {
    let fake = AliyunFake::start().await?;
    let settings = shared::config::AliyunSettings { access_key_id: "LTAI5tSomebodyElse".into(), ..fake.settings() };
    let result =
        send(&AliyunProvider::new(settings, Duration::from_secs(5))?, "13812345678", "1", Uuid::new_v4()).await?;
    let Err(SendError::Provider(reason)) = result else {
        return Err(format!("expected provider-side, got {result:?}").into());
    };
    assert_eq!(reason, "aliyun InvalidAccessKeyId.NotFound: Specified access key is not found.");
    assert_eq!(fake.violations().len(), 1);
    Ok(())
}

// The fake's own strictness, from requests signed by hand with the client's pure functions.

const PARAMS: [(&str, &str); 5] = [
    ("PhoneNumbers", "13812345678"),
    ("SignName", SIGN_NAME),
    ("TemplateCode", TEMPLATE_CODE),
    ("TemplateParam", r#"{"code":"123456"}"#),
    ("OutId", "job-1"),
];

fn sign(fake: &AliyunFake, params: &[(&str, &str)], now: DateTime<Utc>, nonce: &str) -> TestResult<SignedRequest> {
    let host = providers::http::host_of(&fake.base_url).ok_or("fake base URL has no host")?;
    Ok(aliyun::sign_send_sms(ACCESS_KEY_ID, ACCESS_KEY_SECRET, &host, params, now, nonce))
}

fn nonce() -> String {
    Uuid::new_v4().simple().to_string()
}

/// Sends `query` and `headers` as `POST /?query`; returns the status and the JSON body.
async fn post(fake: &AliyunFake, query: &str, headers: &[(&str, String)]) -> TestResult<(u16, Value)> {
    let mut request = reqwest::Client::new().post(format!("{}/?{query}", fake.base_url));
    for (name, value) in headers {
        request = request.header(*name, value);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.json().await?))
}

async fn post_signed(fake: &AliyunFake, signed: &SignedRequest) -> TestResult<(u16, Value)> {
    post(fake, &signed.query, &signed.headers).await
}

fn code(body: &Value) -> &str {
    body["Code"].as_str().unwrap_or("")
}

#[tokio::test]
async fn a_reused_nonce_is_refused() -> TestResult {
    let fake = AliyunFake::start().await?;
    let signed = sign(&fake, &PARAMS, Utc::now(), &nonce())?;
    let (status, body) = post_signed(&fake, &signed).await?;
    assert_eq!((status, code(&body)), (200, "OK"), "{body}");
    let (status, body) = post_signed(&fake, &signed).await?;
    assert_eq!((status, code(&body)), (400, "SignatureNonceUsed"), "{body}");
    assert_eq!(body["Message"], "Specified signature nonce was used already.");
    assert_eq!(fake.received_count(), 1);
    Ok(())
}

#[tokio::test]
async fn a_date_more_than_15_minutes_off_is_refused() -> TestResult {
    let fake = AliyunFake::start().await?;
    for minutes in [-16, 16] {
        let signed = sign(&fake, &PARAMS, Utc::now() + chrono::Duration::minutes(minutes), &nonce())?;
        let (status, body) = post_signed(&fake, &signed).await?;
        assert_eq!((status, code(&body)), (400, "InvalidTimeStamp.Expired"), "{minutes} min: {body}");
    }
    let signed = sign(&fake, &PARAMS, Utc::now() - chrono::Duration::minutes(14), &nonce())?;
    let (status, body) = post_signed(&fake, &signed).await?;
    assert_eq!((status, code(&body)), (200, "OK"), "{body}");
    Ok(())
}

#[tokio::test]
async fn a_missing_business_parameter_is_refused_with_its_missing_code() -> TestResult {
    let fake = AliyunFake::start().await?;
    for name in ["PhoneNumbers", "SignName", "TemplateCode"] {
        let params: Vec<(&str, &str)> = PARAMS.iter().copied().filter(|(n, _)| *n != name).collect();
        let (status, body) = post_signed(&fake, &sign(&fake, &params, Utc::now(), &nonce())?).await?;
        assert_eq!((status, code(&body)), (400, format!("Missing{name}").as_str()), "{body}");
        assert_eq!(body["Message"], format!("{name} is mandatory for this action."));
    }
    assert_eq!(fake.received_count(), 0);
    Ok(())
}

#[tokio::test]
async fn the_template_param_must_be_a_json_object_of_strings_with_the_code() -> TestResult {
    let fake = AliyunFake::start().await?;
    for (param, expected) in [
        (r#"{"code":123456}"#, "isv.INVALID_JSON_PARAM"),
        (r#"["123456"]"#, "isv.INVALID_JSON_PARAM"),
        ("123456", "isv.INVALID_JSON_PARAM"),
        (r#"{"other":"123456"}"#, "isv.TEMPLATE_MISSING_PARAMETERS"),
    ] {
        let mut params = PARAMS;
        params[3].1 = param;
        let (status, body) = post_signed(&fake, &sign(&fake, &params, Utc::now(), &nonce())?).await?;
        assert_eq!((status, code(&body)), (200, expected), "{param}: {body}");
        assert!(body.get("BizId").is_none(), "{body}");
    }
    Ok(())
}

#[tokio::test]
async fn numbers_in_another_form_are_illegal() -> TestResult {
    let fake = AliyunFake::start().await?;
    for number in ["+85251234567", "0085251234567", "138-1234-5678", ""] {
        let mut params = PARAMS;
        params[0].1 = number;
        let (status, body) = post_signed(&fake, &sign(&fake, &params, Utc::now(), &nonce())?).await?;
        let expected =
            if number.is_empty() { (400, "MissingPhoneNumbers") } else { (200, "isv.MOBILE_NUMBER_ILLEGAL") };
        assert_eq!((status, code(&body)), expected, "{number:?}: {body}");
    }
    Ok(())
}

#[tokio::test]
async fn a_query_changed_after_signing_does_not_match() -> TestResult {
    let fake = AliyunFake::start().await?;
    let signed = sign(&fake, &PARAMS, Utc::now(), &nonce())?;
    let query = signed.query.replace("PhoneNumbers=13812345678", "PhoneNumbers=13900000000");
    assert_ne!(query, signed.query);
    let (status, body) = post(&fake, &query, &signed.headers).await?;
    assert_eq!((status, code(&body)), (400, "SignatureDoesNotMatch"), "{body}");
    assert_eq!(body["HostId"], "dysmsapi.aliyuncs.com");
    assert!(body["RequestId"].as_str().is_some_and(|id| !id.is_empty()), "{body}");
    assert!(body["Message"].as_str().is_some_and(|m| m.contains("server string to sign is:ACS3-HMAC-SHA256\n")));
    Ok(())
}

/// Signs `params` over `signed` headers (plus the V3 ones the client signs), sends `unsigned`
/// headers too; returns the status and the `Code`.
async fn post_custom(
    fake: &AliyunFake,
    signed: &[(&str, &str)],
    unsigned: &[(&str, &str)],
) -> TestResult<(u16, String)> {
    let host = providers::http::host_of(&fake.base_url).ok_or("no host")?;
    let date = aliyun::acs_date(Utc::now());
    let mut headers: Vec<(&str, &str)> = vec![
        ("host", &host),
        ("x-acs-action", aliyun::ACTION),
        ("x-acs-content-sha256", aliyun::EMPTY_BODY_SHA256),
        ("x-acs-date", &date),
        ("x-acs-version", aliyun::VERSION),
    ];
    headers.extend_from_slice(signed);
    let request = CanonicalRequest {
        method: "POST",
        path: "/",
        query: &PARAMS,
        headers: &headers,
        payload_sha256: aliyun::EMPTY_BODY_SHA256,
    };
    let signature = aliyun::signature(ACCESS_KEY_SECRET, &aliyun::string_to_sign(&request.canonical()));
    let mut sent: Vec<(&str, String)> = headers.iter().chain(unsigned).map(|(n, v)| (*n, (*v).to_owned())).collect();
    sent.push(("authorization", aliyun::authorization(ACCESS_KEY_ID, &request.signed_headers(), &signature)));
    let (status, body) = post(fake, &aliyun::canonical_query(&PARAMS), &sent).await?;
    Ok((status, code(&body).to_owned()))
}

#[tokio::test]
async fn the_fake_verifies_exactly_the_signed_headers_listed() -> TestResult {
    let fake = AliyunFake::start().await?;
    let nonce = nonce();
    // More signed headers than the minimum, as the Python SDK sends: verified and accepted.
    let accepted =
        post_custom(&fake, &[("x-acs-signature-nonce", &nonce), ("accept", "application/json")], &[]).await?;
    assert_eq!(accepted, (200, "OK".to_owned()));
    // An `x-acs-*` header sent but left out of the signature: refused.
    let other = self::nonce();
    let refused = post_custom(&fake, &[], &[("x-acs-signature-nonce", &other)]).await?;
    assert_eq!(refused, (400, "IncompleteSignature".to_owned()));
    assert_eq!(fake.violations().len(), 1, "{:?}", fake.violations());
    Ok(())
}
