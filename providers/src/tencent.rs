//! Tencent Cloud SMS `SendSms` (API 3.0, version 2021-01-11; `docs/providers.md`): a JSON
//! POST signed with TC3-HMAC-SHA256, numbers in E.164, `SerialNo` as the message id.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::config::{ProviderName, TencentSettings};

use crate::{
    http::{self, hex, hmac_sha256, sha256_hex},
    provider::{Accepted, Message, SendError, SmsProvider},
    receipts::{Answer, Entry, Malformed, Push, Receipt},
};

/// `X-TC-Action`.
pub const ACTION: &str = "SendSms";
/// `X-TC-Version`: the API version whose field names the body uses.
pub const VERSION: &str = "2021-01-11";
/// The service in the credential scope.
pub const SERVICE: &str = "sms";
/// The `Content-Type` sent, and signed: the two must be the same bytes.
pub const CONTENT_TYPE: &str = "application/json; charset=utf-8";
/// The signature's algorithm name, first word of `Authorization`.
pub const ALGORITHM: &str = "TC3-HMAC-SHA256";
/// A number's `Code` when it was accepted (capital O, lower-case k).
const OK: &str = "Ok";

/// `SMS_PROVIDERS` with `tencent`.
pub struct TencentProvider {
    settings: TencentSettings,
    http: reqwest::Client,
    /// `None` when `TENCENT_BASE_URL` has no host: every send is then refused.
    endpoint: Option<Endpoint>,
}

/// Where requests go, and the `Host` they carry and sign.
struct Endpoint {
    url: reqwest::Url,
    host: String,
}

impl TencentProvider {
    /// A client for `settings` whose requests give up after `timeout`.
    pub fn new(settings: TencentSettings, timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        let http = http::client(timeout)?;
        let endpoint = endpoint(&settings.base_url);
        Ok(Self { settings, http, endpoint })
    }
}

/// `{base_url}/` and its `Host` header: the host, with the port only when the URL names a
/// non-default one (`127.0.0.1:8080`, `sms.tencentcloudapi.com`), as an HTTP client sends it.
fn endpoint(base_url: &str) -> Option<Endpoint> {
    let url = reqwest::Url::parse(&format!("{}/", base_url.trim_end_matches('/'))).ok()?;
    let host = match (url.host_str(), url.port()) {
        (Some(host), Some(port)) => format!("{host}:{port}"),
        (Some(host), None) => host.to_owned(),
        (None, _) => return None,
    };
    Some(Endpoint { url, host })
}

/// What one request is signed over.
pub struct Signing<'a> {
    /// `SecretId`, named in the credential.
    pub secret_id: &'a str,
    /// `SecretKey`: the HMAC key, never sent.
    pub secret_key: &'a str,
    /// The product (`sms`; the official CVM example uses `cvm`).
    pub service: &'a str,
    /// The signed headers as `(name, value)`, in any order and case: names and values are
    /// lower-cased and trimmed for the canonical request.
    pub headers: &'a [(&'a str, &'a str)],
    /// The exact body bytes sent.
    pub payload: &'a [u8],
    /// The request time: `X-TC-Timestamp`, and through its UTC date the credential scope.
    pub now: DateTime<Utc>,
}

/// A computed signature and the intermediate hashes the official examples publish.
pub struct Signature {
    /// Hex SHA-256 of the body.
    pub payload_hash: String,
    /// Hex SHA-256 of the canonical request.
    pub canonical_request_hash: String,
    /// Hex HMAC-SHA256 of the string to sign.
    pub signature: String,
    /// The `Authorization` header value.
    pub authorization: String,
}

/// Signs one POST to `/` with TC3-HMAC-SHA256: pure, the time is a parameter.
pub fn sign(input: &Signing<'_>) -> Signature {
    let mut headers: Vec<(String, String)> = input
        .headers
        .iter()
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_lowercase()))
        .collect();
    headers.sort();
    let canonical_headers: String = headers.iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
    let signed_headers = headers.iter().map(|(name, _)| name.as_str()).collect::<Vec<_>>().join(";");
    let payload_hash = sha256_hex(input.payload);
    // Method, URI, query (empty for a POST), headers, the signed header list, the body hash.
    let canonical_request = format!("POST\n/\n\n{canonical_headers}\n{signed_headers}\n{payload_hash}");
    let canonical_request_hash = sha256_hex(canonical_request.as_bytes());
    // The UTC date: a Beijing date would be refused around midnight.
    let date = input.now.format("%Y-%m-%d").to_string();
    let scope = format!("{date}/{}/tc3_request", input.service);
    let string_to_sign = format!("{ALGORITHM}\n{}\n{scope}\n{canonical_request_hash}", input.now.timestamp());
    let secret_date = hmac_sha256(format!("TC3{}", input.secret_key).as_bytes(), date.as_bytes());
    let secret_service = hmac_sha256(&secret_date, input.service.as_bytes());
    let secret_signing = hmac_sha256(&secret_service, b"tc3_request");
    let signature = hex(&hmac_sha256(&secret_signing, string_to_sign.as_bytes()));
    let authorization = format!(
        "{ALGORITHM} Credential={}/{scope}, SignedHeaders={signed_headers}, Signature={signature}",
        input.secret_id
    );
    Signature { payload_hash, canonical_request_hash, signature, authorization }
}

/// The JSON body of `SendSms` (2021-01-11 field names).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct SendSmsRequest<'a> {
    phone_number_set: [&'a str; 1],
    sms_sdk_app_id: &'a str,
    sign_name: &'a str,
    template_id: &'a str,
    template_param_set: [&'a str; 2],
    /// Our job id, echoed back in the answer and in receipts (`ext`): the provider has no
    /// idempotency key, so this is for correlation only.
    session_context: &'a str,
}

/// The body bytes for `message`: one E.164 number, `[code, minutes]`, the job id.
fn request_body(settings: &TencentSettings, message: &Message<'_>) -> Result<Vec<u8>, serde_json::Error> {
    let e164 = message.recipient.e164();
    let ttl = message.ttl_minutes.to_string();
    let session = message.job_id.to_string();
    serde_json::to_vec(&SendSmsRequest {
        phone_number_set: [&e164],
        sms_sdk_app_id: &settings.sms_sdk_app_id,
        sign_name: &settings.sign_name,
        template_id: &settings.template_id,
        template_param_set: [message.code.expose(), &ttl],
        session_context: &session,
    })
}

#[derive(Deserialize)]
struct Envelope {
    #[serde(rename = "Response")]
    response: SendSmsResponse,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendSmsResponse {
    #[serde(default)]
    error: Option<ApiError>,
    #[serde(default)]
    send_status_set: Option<Vec<SendStatus>>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ApiError {
    code: String,
    #[serde(default)]
    message: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct SendStatus {
    #[serde(default)]
    serial_no: Option<String>,
    #[serde(default)]
    phone_number: Option<String>,
    code: String,
    #[serde(default)]
    message: Option<String>,
}

/// The class of an error code, from `Response.Error.Code` or `SendStatusSet[].Code`
/// (`docs/providers.md`):
/// - transient: `InternalError` and `InternalError.*` but the clock one, `RequestLimitExceeded*`;
/// - number frequency limit: this number's caps, `LimitExceeded.PhoneNumber*` (but the
///   count of numbers in one request) and `LimitExceeded.DeliveryFrequencyLimit`;
/// - recipient: a malformed, unparseable or opted-out number;
/// - provider-side: everything else — credentials and signature (`AuthFailure.*`, a clock
///   more than 10 minutes off), permissions, sign and template approval, balance,
///   account-wide daily caps, and codes we do not know — which another provider may not share.
pub fn classify(code: &str, reason: String) -> SendError {
    match code {
        "InternalError.RequestTimeException" => SendError::Provider(reason),
        "InternalError" | "RequestLimitExceeded" => SendError::Transient(reason),
        c if c.starts_with("InternalError.") || c.starts_with("RequestLimitExceeded.") => SendError::Transient(reason),
        "LimitExceeded.PhoneNumberCountLimit" => SendError::Provider(reason),
        "LimitExceeded.DeliveryFrequencyLimit" => SendError::NumberLimited(reason),
        c if c.starts_with("LimitExceeded.PhoneNumber") => SendError::NumberLimited(reason),
        "InvalidParameterValue.IncorrectPhoneNumber"
        | "FailedOperation.PhoneNumberParseFail"
        | "FailedOperation.PhoneNumberInBlacklist" => SendError::Recipient(reason),
        _ => SendError::Provider(reason),
    }
}

/// Reads an answer: `Response.Error` first (the request failed), then this number's entry
/// of `SendStatusSet` (accepted only when its `Code` is `Ok`).
fn interpret(status: reqwest::StatusCode, body: &[u8], e164: &str) -> Result<Accepted, SendError> {
    // The service answers 200 to everything it processed, errors included.
    if status != reqwest::StatusCode::OK {
        return Err(SendError::Transient(format!("tencent http {}", status.as_u16())));
    }
    let Envelope { response } =
        serde_json::from_slice(body).map_err(|e| SendError::Transient(format!("tencent unreadable response: {e}")))?;
    if let Some(error) = response.error {
        let reason = format!("tencent {}: {}", error.code, error.message.as_deref().unwrap_or("no Message"));
        return Err(classify(&error.code, reason));
    }
    let statuses = response.send_status_set.unwrap_or_default();
    let Some(entry) = statuses.iter().find(|s| s.phone_number.as_deref() == Some(e164)).or(statuses.first()) else {
        return Err(SendError::Transient("tencent unreadable response: no Error and no SendStatusSet".into()));
    };
    if entry.code != OK {
        let reason = format!("tencent {}: {}", entry.code, entry.message.as_deref().unwrap_or("no Message"));
        return Err(classify(&entry.code, reason));
    }
    match entry.serial_no.as_deref().filter(|s| !s.is_empty()) {
        Some(serial_no) => Ok(Accepted { message_id: Some(serial_no.to_owned()), note: None }),
        None => Ok(Accepted { message_id: None, note: Some("tencent Ok without a SerialNo".into()) }),
    }
}

/// Our answer to a status push.
pub const RECEIPT_ANSWER: &str = r#"{"result":0,"errmsg":"OK"}"#;

/// Reads a status push (短信下发状态通知): a JSON array of at most 100 reports, each with
/// `sid` (the `SerialNo` of the send), `report_status` (`SUCCESS` or `FAIL`), `errmsg` (the
/// carrier's code, `DELIVRD` on success) and `user_receive_time` (Beijing time). An entry that
/// cannot be read is marked; the others count.
pub fn receipts(body: &[u8]) -> Result<Push, Malformed> {
    let entries = crate::receipts::json_array(body, |report| {
        let message_id = crate::receipts::text(report.get("sid")).ok_or("no sid")?;
        let status = crate::receipts::text(report.get("report_status")).ok_or("no report_status")?;
        let delivered = match status.as_str() {
            "SUCCESS" => true,
            "FAIL" => false,
            other => return Err(format!("report_status {other:?}")),
        };
        let error_code =
            (!delivered).then(|| crate::receipts::text(report.get("errmsg")).unwrap_or_else(|| status.clone()));
        let reported_at = crate::receipts::beijing_time(
            crate::receipts::text(report.get("user_receive_time")).as_deref(),
            "%Y-%m-%d %H:%M:%S",
        );
        Ok(Entry::Receipt(Receipt { message_id, delivered, status, error_code, reported_at }))
    })?;
    Ok(Push { entries, answer: Answer::json(RECEIPT_ANSWER) })
}

impl SmsProvider for TencentProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Tencent
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let s = &self.settings;
            let Some(endpoint) = &self.endpoint else {
                return Err(SendError::Provider("tencent TENCENT_BASE_URL has no host".into()));
            };
            let payload = request_body(s, message)
                .map_err(|e| SendError::Provider(format!("tencent request not encodable: {e}")))?;
            let now = Utc::now();
            let signature = sign(&Signing {
                secret_id: &s.secret_id,
                secret_key: s.secret_key.expose_secret(),
                service: SERVICE,
                headers: &[("content-type", CONTENT_TYPE), ("host", &endpoint.host), ("x-tc-action", ACTION)],
                payload: &payload,
                now,
            });
            let request = self
                .http
                .post(endpoint.url.clone())
                .header(reqwest::header::CONTENT_TYPE, CONTENT_TYPE)
                // Sent explicitly so that it is the same bytes as signed.
                .header(reqwest::header::HOST, &endpoint.host)
                .header("X-TC-Action", ACTION)
                .header("X-TC-Version", VERSION)
                .header("X-TC-Timestamp", now.timestamp().to_string())
                .header("X-TC-Region", &s.region)
                .header(reqwest::header::AUTHORIZATION, signature.authorization)
                .body(payload);
            let (status, bytes) = http::exchange(ProviderName::Tencent, request).await?;
            interpret(status, &bytes, &message.recipient.e164())
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use secrecy::SecretString;
    use shared::{
        config::Countries,
        domain::{Mobile, Recipient, SmsCode},
    };

    use super::*;

    #[test]
    fn a_status_push_is_read_entry_by_entry() -> Result<(), Malformed> {
        let body = r#"[{"user_receive_time":"2015-10-17 08:03:04","nationcode":"86","mobile":"13xxxxxxxxx",
            "report_status":"SUCCESS","errmsg":"DELIVRD","description":"用户短信送达成功","sid":"xxxxxxx"},
            {"report_status":"FAIL","errmsg":"MN:0001","sid":"2019:1"}, {"report_status":"SUCCESS"},
            {"report_status":"LOST","sid":"3"}]"#;
        let push = receipts(body.as_bytes())?;
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2015, 10, 17, 0, 3, 4).single();
        assert_eq!(
            push.entries[0],
            Entry::Receipt(Receipt {
                message_id: "xxxxxxx".into(),
                delivered: true,
                status: "SUCCESS".into(),
                error_code: None,
                reported_at: at,
            })
        );
        let Entry::Receipt(failed) = &push.entries[1] else { panic!("{:?}", push.entries[1]) };
        assert_eq!((failed.delivered, failed.error_code.as_deref()), (false, Some("MN:0001")));
        assert!(matches!(push.entries[2], Entry::Malformed(_)) && matches!(push.entries[3], Entry::Malformed(_)));
        assert_eq!(push.answer.body, RECEIPT_ANSWER);
        assert!(receipts(b"{\"sid\":\"1\"}").is_err());
        Ok(())
    }

    fn at(timestamp: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(timestamp, 0).single().expect("valid timestamp")
    }

    #[test]
    fn the_official_cvm_example_signs_to_its_published_signature() {
        let payload = r#"{"Limit": 1, "Filters": [{"Values": ["\u672a\u547d\u540d"], "Name": "instance-name"}]}"#;
        let signed = sign(&Signing {
            secret_id: "AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE",
            secret_key: "Gu5t9xGARNpq86cd98joQYCN3EXAMPLE",
            service: "cvm",
            headers: &[("content-type", "application/json; charset=utf-8"), ("host", "cvm.tencentcloudapi.com")],
            payload: payload.as_bytes(),
            now: at(1551113065),
        });
        assert_eq!(signed.payload_hash, "35e9c5b0e3ae67532d3c9f17ead6c90222632e5b1ff7f6e89887f1398934f064");
        assert_eq!(signed.canonical_request_hash, "5ffe6a04c0664d6b969fab9a13bdab201d63ee709638e2749d62a09ca18d7031");
        assert_eq!(signed.signature, "72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168");
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDz8krbsJ5yKBZQpn74WFkmLPx3EXAMPLE/2019-02-25/cvm/tc3_request, \
             SignedHeaders=content-type;host, \
             Signature=72e494ea809ad7a8c8f7a4507b9bddcbaa8e581f516e8da2f66e2c5a96525168"
        );
    }

    #[test]
    fn the_sms_example_signs_with_the_action_lower_cased() {
        let payload = r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400006666","SignName":"测试签名","TemplateId":"1110","TemplateParamSet":["123456","5"]}"#;
        // Headers as the client passes them: any order, the action in its sent case.
        let signed = sign(&Signing {
            secret_id: "AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE12",
            secret_key: "SKEXAMPLEEXAMPLEEXAMPLEEXAMPLE12",
            service: SERVICE,
            headers: &[("x-tc-action", ACTION), ("host", "sms.tencentcloudapi.com"), ("content-type", CONTENT_TYPE)],
            payload: payload.as_bytes(),
            now: at(1700000000),
        });
        assert_eq!(signed.payload_hash, "197126659ca8c8d7d6a5b577644177915fb6bec0c732c01f08f1f9fc0902525d");
        assert_eq!(signed.canonical_request_hash, "4df6e2fd7c470069eab0774987fc73612e82f57662f132bc66467b4fbb1f7bf6");
        assert_eq!(signed.signature, "79d50366f8a70c6a4a6662e6221a97e8c2593f4875675013daf495f4a70c8126");
        assert_eq!(
            signed.authorization,
            "TC3-HMAC-SHA256 Credential=AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE12/2023-11-14/sms/tc3_request, \
             SignedHeaders=content-type;host;x-tc-action, \
             Signature=79d50366f8a70c6a4a6662e6221a97e8c2593f4875675013daf495f4a70c8126"
        );
    }

    #[test]
    fn the_credential_date_is_the_utc_date() {
        // 2023-11-14 23:30 UTC is already the 15th in Beijing.
        let signed = sign(&Signing {
            secret_id: "id",
            secret_key: "key",
            service: SERVICE,
            headers: &[("content-type", CONTENT_TYPE), ("host", "h")],
            payload: b"{}",
            now: at(1700004600),
        });
        assert!(
            signed.authorization.contains("Credential=id/2023-11-14/sms/tc3_request, "),
            "{}",
            signed.authorization
        );
    }

    #[test]
    fn the_host_header_carries_a_port_only_when_the_url_names_one() {
        let host = |url: &str| endpoint(url).map(|e| e.host);
        assert_eq!(host("http://127.0.0.1:8080").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host("https://sms.tencentcloudapi.com").as_deref(), Some("sms.tencentcloudapi.com"));
        assert_eq!(host("https://sms.tencentcloudapi.com:443/").as_deref(), Some("sms.tencentcloudapi.com"));
        assert_eq!(
            endpoint("http://127.0.0.1:8080").map(|e| e.url.to_string()).as_deref(),
            Some("http://127.0.0.1:8080/")
        );
        assert!(endpoint("not a url").is_none());
    }

    fn settings() -> TencentSettings {
        TencentSettings {
            base_url: "https://sms.tencentcloudapi.com".into(),
            secret_id: "AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE12".into(),
            secret_key: SecretString::from("SKEXAMPLEEXAMPLEEXAMPLEEXAMPLE12"),
            sms_sdk_app_id: "1400006666".into(),
            sign_name: "测试签名".into(),
            template_id: "1110".into(),
            region: "ap-guangzhou".into(),
            countries: Countries::Codes(vec![86]),
        }
    }

    #[test]
    fn the_body_has_one_e164_number_the_code_and_minutes_and_the_job_id() -> Result<(), Box<dyn std::error::Error>> {
        let recipient = Recipient::parse(&Mobile::from_stored("13800138000"), 86)?;
        let code = SmsCode::from_stored("123456");
        let job_id = uuid::Uuid::nil();
        let message = Message { job_id, recipient: &recipient, code: &code, ttl_minutes: 5 };
        let body = String::from_utf8(request_body(&settings(), &message)?)?;
        assert_eq!(
            body,
            r#"{"PhoneNumberSet":["+8613800138000"],"SmsSdkAppId":"1400006666","SignName":"测试签名","TemplateId":"1110","TemplateParamSet":["123456","5"],"SessionContext":"00000000-0000-0000-0000-000000000000"}"#
        );
        Ok(())
    }

    const E164: &str = "+8618511122233";

    fn read(body: &str) -> Result<Accepted, SendError> {
        interpret(reqwest::StatusCode::OK, body.as_bytes(), E164)
    }

    #[test]
    fn an_ok_number_is_accepted_with_its_serial_no() {
        let body = r#"{"Response":{"SendStatusSet":[{"SerialNo":"5000:1045710669157053657849499619","PhoneNumber":"+8618511122233","Fee":1,"SessionContext":"test","Code":"Ok","Message":"send success","IsoCode":"CN"}],"RequestId":"a0aabda6-cf91-4f3e-a81f-9198114a2279"}}"#;
        assert_eq!(
            read(body),
            Ok(Accepted { message_id: Some("5000:1045710669157053657849499619".into()), note: None })
        );
    }

    #[test]
    fn a_request_error_wins_and_is_classified() {
        let body = r#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure","Message":"The provided credentials could not be validated. Please check your signature is correct."},"RequestId":"ed93f3cb-f35e-473f-b9f3-0d451b8b79c6"}}"#;
        assert_eq!(
            read(body),
            Err(SendError::Provider(
                "tencent AuthFailure.SignatureFailure: The provided credentials could not be validated. \
                 Please check your signature is correct."
                    .into()
            ))
        );
    }

    #[test]
    fn a_number_failure_is_classified_by_its_own_code() {
        let body = r#"{"Response":{"SendStatusSet":[{"SerialNo":"","PhoneNumber":"+8618511122233","Fee":0,"SessionContext":"","Code":"LimitExceeded.PhoneNumberThirtySecondLimit","Message":"too often","IsoCode":"CN"}],"RequestId":"r"}}"#;
        assert_eq!(
            read(body),
            Err(SendError::NumberLimited("tencent LimitExceeded.PhoneNumberThirtySecondLimit: too often".into()))
        );
    }

    #[test]
    fn odd_answers_are_transient() {
        let class = |status: u16, body: &str| {
            let status = reqwest::StatusCode::from_u16(status).expect("status");
            interpret(status, body.as_bytes(), E164).map_err(|e| e.class())
        };
        assert_eq!(class(502, ""), Err("transient"));
        assert_eq!(class(404, r#"{"Response":{"Error":{"Code":"AuthFailure.SignatureFailure"}}}"#), Err("transient"));
        assert_eq!(class(200, "<html>"), Err("transient"));
        assert_eq!(class(200, r#"{"Response":{"RequestId":"r"}}"#), Err("transient"));
        assert_eq!(class(200, r#"{"Response":{"SendStatusSet":null,"RequestId":"r"}}"#), Err("transient"));
    }

    #[test]
    fn each_documented_code_has_its_class() {
        let class = |code: &str| classify(code, String::new()).class();
        for code in [
            "InternalError",
            "InternalError.Timeout",
            "InternalError.SendAndRecvFail",
            "InternalError.OtherError",
            "InternalError.JsonParseFail",
            "InternalError.UnknownError",
            "RequestLimitExceeded",
        ] {
            assert_eq!(class(code), "transient", "{code}");
        }
        for code in [
            "LimitExceeded.PhoneNumberThirtySecondLimit",
            "LimitExceeded.PhoneNumberOneHourLimit",
            "LimitExceeded.PhoneNumberDailyLimit",
            "LimitExceeded.PhoneNumberSameContentDailyLimit",
            "LimitExceeded.DeliveryFrequencyLimit",
        ] {
            assert_eq!(class(code), "number_limited", "{code}");
        }
        for code in [
            "InvalidParameterValue.IncorrectPhoneNumber",
            "FailedOperation.PhoneNumberParseFail",
            "FailedOperation.PhoneNumberInBlacklist",
        ] {
            assert_eq!(class(code), "recipient", "{code}");
        }
        for code in [
            "AuthFailure.SignatureFailure",
            "AuthFailure.SignatureExpire",
            "AuthFailure.SecretIdNotFound",
            "AuthFailure.InvalidSecretId",
            "AuthFailure.InvalidAuthorization",
            "AuthFailure.UnauthorizedOperation",
            "InternalError.RequestTimeException",
            "InvalidParameter",
            "MissingParameter",
            "MissingParameter.EmptyPhoneNumberSet",
            "NoSuchVersion",
            "ActionOffline",
            "LimitExceeded.AppDailyLimit",
            "LimitExceeded.AppMainlandChinaDailyLimit",
            "LimitExceeded.PhoneNumberCountLimit",
            "FailedOperation.SignatureIncorrectOrUnapproved",
            "FailedOperation.TemplateIncorrectOrUnapproved",
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            "FailedOperation.ContainSensitiveWord",
            "FailedOperation.InsufficientBalanceInSmsPackage",
            "FailedOperation.JsonParseFail",
            "FailedOperation.FailResolvePacket",
            "InvalidParameterValue.SdkAppIdNotExist",
            "InvalidParameterValue.TemplateParameterFormatError",
            "InvalidParameterValue.TemplateParameterLengthLimit",
            "InvalidParameterValue.ContentLengthLimit",
            "InvalidParameterValue.ProhibitedUseUrlInTemplateParameter",
            "UnauthorizedOperation.SmsSdkAppIdVerifyFail",
            "UnauthorizedOperation.RequestIpNotInWhitelist",
            "UnauthorizedOperation.SdkAppIdIsDisabled",
            "UnauthorizedOperation.ServiceSuspendDueToArrears",
            "UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber",
            "Something.New",
        ] {
            assert_eq!(class(code), "provider", "{code}");
        }
    }
}
