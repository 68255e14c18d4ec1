//! Alibaba Cloud SMS (Dysmsapi `SendSms`, version 2017-05-25) as the current official SDKs
//! send it (`docs/providers.md`): `POST /` with every parameter in the query and an empty body,
//! signed with V3 (`ACS3-HMAC-SHA256`) in the `Authorization` header.

use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use secrecy::ExposeSecret;
use serde::Deserialize;
use shared::{
    config::{AliyunSettings, ProviderName},
    domain::{Recipient, SmsCode},
};

use crate::{
    http::{self, hex, hmac_sha256, host_of, sha256_hex},
    provider::{Accepted, Message, SendError, SmsProvider},
    receipts::{Answer, Entry, Malformed, Push, Receipt},
};

/// The API action.
pub const ACTION: &str = "SendSms";
/// The API version; fixed by the provider.
pub const VERSION: &str = "2017-05-25";
/// The V3 signature algorithm, as named in `Authorization` and in the string to sign.
pub const ALGORITHM: &str = "ACS3-HMAC-SHA256";
/// Lower-case hex SHA-256 of an empty body: `x-acs-content-sha256` of every request we send.
pub const EMPTY_BODY_SHA256: &str = "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855";

/// RFC 3986: everything but `A–Z a–z 0–9 - _ . ~` is encoded, as UTF-8, in upper-case hex
/// (space is `%20`, never `+`; `*` is `%2A`).
const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// `SMS_PROVIDERS` with `aliyun`.
pub struct AliyunProvider {
    settings: AliyunSettings,
    /// The `host` header sent and signed: host, and port when the base URL names one.
    host: Option<String>,
    http: reqwest::Client,
}

impl AliyunProvider {
    /// A client for `settings` whose requests give up after `timeout`.
    pub fn new(settings: AliyunSettings, timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        let http = http::client(timeout)?;
        let host = host_of(&settings.base_url);
        Ok(Self { settings, host, http })
    }
}

/// Percent-encodes `s` per RFC 3986 (UTF-8): the encoding of the canonical query, and of the
/// query actually sent.
pub fn percent_encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The canonical query string: names and values percent-encoded, sorted by name (then
/// value), `name=value` joined by `&`; empty when there are no parameters.
pub fn canonical_query(params: &[(&str, &str)]) -> String {
    let mut pairs: Vec<(String, String)> =
        params.iter().map(|(name, value)| (percent_encode(name), percent_encode(value))).collect();
    pairs.sort();
    pairs.iter().map(|(name, value)| format!("{name}={value}")).collect::<Vec<_>>().join("&")
}

/// The parts of one request that V3 signs.
pub struct CanonicalRequest<'a> {
    /// `POST`.
    pub method: &'a str,
    /// `/` for RPC-style APIs.
    pub path: &'a str,
    /// The query parameters, not encoded.
    pub query: &'a [(&'a str, &'a str)],
    /// The headers to sign (`SignedHeaders`), names in any case, values as sent.
    pub headers: &'a [(&'a str, &'a str)],
    /// Lower-case hex SHA-256 of the body.
    pub payload_sha256: &'a str,
}

impl CanonicalRequest<'_> {
    /// The signed headers' names, lower-cased, sorted, joined by `;`.
    pub fn signed_headers(&self) -> String {
        self.sorted_headers().into_iter().map(|(name, _)| name).collect::<Vec<_>>().join(";")
    }

    /// The canonical request: method, path, canonical query, one `name:value` line per signed
    /// header, an empty line, the signed headers, the payload hash; `\n` between them.
    pub fn canonical(&self) -> String {
        let headers: String =
            self.sorted_headers().into_iter().map(|(name, value)| format!("{name}:{value}\n")).collect();
        format!(
            "{}\n{}\n{}\n{headers}\n{}\n{}",
            self.method,
            self.path,
            canonical_query(self.query),
            self.signed_headers(),
            self.payload_sha256
        )
    }

    fn sorted_headers(&self) -> Vec<(String, String)> {
        let mut headers: Vec<(String, String)> =
            self.headers.iter().map(|(name, value)| (name.to_ascii_lowercase(), value.trim().to_owned())).collect();
        headers.sort();
        headers
    }
}

/// `ACS3-HMAC-SHA256\n` + lower-case hex SHA-256 of the canonical request.
pub fn string_to_sign(canonical_request: &str) -> String {
    format!("{ALGORITHM}\n{}", sha256_hex(canonical_request.as_bytes()))
}

/// Lower-case hex HMAC-SHA256 of `string_to_sign`, keyed with the AccessKey secret as is
/// (unlike V1, no `&` is appended).
pub fn signature(access_key_secret: &str, string_to_sign: &str) -> String {
    hex(&hmac_sha256(access_key_secret.as_bytes(), string_to_sign.as_bytes()))
}

/// The `Authorization` header: comma-separated, no spaces.
pub fn authorization(access_key_id: &str, signed_headers: &str, signature: &str) -> String {
    format!("{ALGORITHM} Credential={access_key_id},SignedHeaders={signed_headers},Signature={signature}")
}

/// `x-acs-date`: UTC, `yyyy-MM-ddTHH:mm:ssZ`.
pub fn acs_date(now: DateTime<Utc>) -> String {
    now.format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

/// A signed SendSms request, ready to send as `POST {base}/?{query}` with an empty body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedRequest {
    /// The query string, encoded exactly as in the canonical request.
    pub query: String,
    /// Every header to send, `authorization` last; all the others are signed.
    pub headers: Vec<(&'static str, String)>,
}

impl SignedRequest {
    /// The value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str())
    }
}

/// Signs a `SendSms` call with `params` for `host` at `now`, with `nonce` as
/// `x-acs-signature-nonce` (unique per request; a reused one is refused). Pure: the client
/// passes the clock and a random nonce.
pub fn sign_send_sms(
    access_key_id: &str,
    access_key_secret: &str,
    host: &str,
    params: &[(&str, &str)],
    now: DateTime<Utc>,
    nonce: &str,
) -> SignedRequest {
    let date = acs_date(now);
    let signed: [(&'static str, &str); 6] = [
        ("host", host),
        ("x-acs-action", ACTION),
        ("x-acs-content-sha256", EMPTY_BODY_SHA256),
        ("x-acs-date", &date),
        ("x-acs-signature-nonce", nonce),
        ("x-acs-version", VERSION),
    ];
    let request = CanonicalRequest {
        method: "POST",
        path: "/",
        query: params,
        headers: &signed,
        payload_sha256: EMPTY_BODY_SHA256,
    };
    let signature = signature(access_key_secret, &string_to_sign(&request.canonical()));
    let authorization = authorization(access_key_id, &request.signed_headers(), &signature);
    let mut headers: Vec<(&'static str, String)> =
        signed.iter().map(|(name, value)| (*name, (*value).to_owned())).collect();
    headers.push(("authorization", authorization));
    SignedRequest { query: canonical_query(params), headers }
}

/// `PhoneNumbers`: the national number for mainland China, calling code + national number
/// without `+` or `00` for the rest (Aliyun's documented international form, `85251234567`).
pub fn phone_number(recipient: &Recipient) -> String {
    if recipient.country_code() == 86 {
        recipient.national().to_owned()
    } else {
        format!("{}{}", recipient.country_code(), recipient.national())
    }
}

/// `TemplateParam`: a JSON object of string values for the template's `${code}`.
pub fn template_param(code: &SmsCode) -> String {
    serde_json::json!({ "code": code.expose() }).to_string()
}

/// The answer body, for success, business refusals (HTTP 200) and gateway refusals (4xx) alike.
#[derive(Deserialize)]
struct SendSmsResponse {
    #[serde(rename = "Code")]
    code: String,
    #[serde(rename = "Message", default)]
    message: Option<String>,
    #[serde(rename = "BizId", default)]
    biz_id: Option<String>,
}

/// `Code` of an accepted message.
const OK: &str = "OK";

/// The class of a non-`OK` `Code` (`docs/providers.md`):
/// - transient: the provider's system error and API throttling (`Throttling.*`), which say
///   nothing about the message;
/// - number frequency limit: `isv.BUSINESS_LIMIT_CONTROL`, the per-number minute, hour and day
///   caps (`触发分钟级流控Permits:1`) that protect the user from SMS bombing;
/// - recipient: the number is malformed, or too many numbers;
/// - provider-side: everything else — credentials and signing (gateway codes), RAM, account,
///   balance, signature (签名) and template approval, parameter and content checks, and codes
///   we do not know — which another provider does not share.
///
/// `isv.DAY_LIMIT_CONTROL` is provider-side, not a number limit: the provider documents it as
/// the account's daily volume cap set in the console (已经达到您在控制台设置的短信日发送量限额值),
/// the same for every number, so failing every delivery over it would punish users for the
/// account's quota; the next provider may send. (`isv.MONTH_LIMIT_CONTROL` likewise.)
///
/// `isv.BLACK_KEY_CONTROL_LIMIT` (黑名单管控) is provider-side too: the provider explains it as
/// template variables carrying blacklisted keywords or URLs, a content check of its own and
/// not a barred number, so another provider may well send the same code.
pub fn classify(code: &str, reason: String) -> SendError {
    match code {
        "isp.SYSTEM_ERROR" | "InternalError" | "ServiceUnavailable" => SendError::Transient(reason),
        c if c == "Throttling" || c.starts_with("Throttling.") => SendError::Transient(reason),
        "isv.BUSINESS_LIMIT_CONTROL" => SendError::NumberLimited(reason),
        "isv.MOBILE_NUMBER_ILLEGAL" | "isv.MOBILE_COUNT_OVER_LIMIT" => SendError::Recipient(reason),
        _ => SendError::Provider(reason),
    }
}

/// `aliyun <Code>: <Message>`. A gateway message may end with the server's string to sign,
/// which for some signing versions echoes the whole request (number and code included): it is
/// cut off.
fn reason(code: &str, message: Option<&str>) -> String {
    let message = message.unwrap_or("no Message");
    let message = match message.find("server string to sign is") {
        Some(at) => message.get(..at).unwrap_or(message).trim_end(),
        None => message,
    };
    format!("aliyun {code}: {message}")
}

/// Our answer to a report push: Aliyun only checks that `code` is a number, and retries
/// anything but HTTP 200 (after 1, 5 and 10 minutes).
pub const RECEIPT_ANSWER: &str = r#"{"code":0,"msg":"接收成功"}"#;

/// Reads an `SmsReport` push: a JSON array of reports, each with `biz_id` (the `BizId` of the
/// send), `success` (a boolean), `err_code` (`DELIVERED`, or the carrier's code) and
/// `report_time` (Beijing time, `yyyy-MM-dd HH:mm:ss`). An entry that cannot be read is
/// marked; the others count.
pub fn receipts(body: &[u8]) -> Result<Push, Malformed> {
    let entries = crate::receipts::json_array(body, |report| {
        let message_id = crate::receipts::text(report.get("biz_id")).ok_or("no biz_id")?;
        let delivered = match report.get("success") {
            Some(serde_json::Value::Bool(b)) => *b,
            // A string "true"/"false" is read the same: the doc's sample receivers do.
            Some(serde_json::Value::String(s)) if s == "true" || s == "false" => s == "true",
            _ => return Err("success is not a boolean".to_owned()),
        };
        let error_code =
            (!delivered).then(|| crate::receipts::text(report.get("err_code")).unwrap_or_else(|| "FAILED".to_owned()));
        let reported_at = crate::receipts::beijing_time(
            crate::receipts::text(report.get("report_time")).as_deref(),
            "%Y-%m-%d %H:%M:%S",
        );
        Ok(Entry::Receipt(Receipt { message_id, delivered, status: delivered.to_string(), error_code, reported_at }))
    })?;
    Ok(Push { entries, answer: Answer::json(RECEIPT_ANSWER) })
}

impl SmsProvider for AliyunProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Aliyun
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let s = &self.settings;
            let Some(host) = self.host.as_deref() else {
                return Err(SendError::Provider(format!("aliyun: ALIYUN_BASE_URL {:?} has no host", s.base_url)));
            };
            let phone = phone_number(message.recipient);
            let param = template_param(message.code);
            let out_id = message.job_id.to_string();
            let params = [
                ("PhoneNumbers", phone.as_str()),
                ("SignName", s.sign_name.as_str()),
                ("TemplateCode", s.template_code.as_str()),
                ("TemplateParam", param.as_str()),
                // Only echoed in delivery receipts: Aliyun has no idempotency key, so a retry
                // after a lost answer can send twice.
                ("OutId", out_id.as_str()),
            ];
            let nonce = uuid::Uuid::new_v4().simple().to_string();
            let signed =
                sign_send_sms(&s.access_key_id, s.access_key_secret.expose_secret(), host, &params, Utc::now(), &nonce);
            let mut request = self.http.post(format!("{}/?{}", s.base_url, signed.query));
            for (name, value) in &signed.headers {
                request = request.header(*name, value);
            }
            // The URL carries the number and the code: `exchange` keeps it out of errors.
            let (status, bytes) = http::exchange(ProviderName::Aliyun, request).await?;
            let parsed = serde_json::from_slice::<SendSmsResponse>(&bytes);
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                let code = parsed.map(|p| format!(" {}", p.code)).unwrap_or_default();
                return Err(SendError::Transient(format!("aliyun http {}{code}", status.as_u16())));
            }
            let parsed = match parsed {
                Ok(parsed) => parsed,
                Err(_) if !status.is_success() => {
                    return Err(SendError::Provider(format!("aliyun http {}", status.as_u16())));
                }
                Err(e) => return Err(SendError::Transient(format!("aliyun: unreadable response: {e}"))),
            };
            if parsed.code == OK && status.is_success() {
                let message_id = parsed.biz_id.filter(|id| !id.is_empty());
                return Ok(Accepted { message_id, note: None });
            }
            Err(classify(&parsed.code, reason(&parsed.code, parsed.message.as_deref())))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;
    use shared::domain::Mobile;

    use super::*;

    #[test]
    fn a_report_batch_is_read_entry_by_entry() -> Result<(), Malformed> {
        // The example of docs/providers.md, a failure, and two entries that cannot be read.
        let body = r#"[{"phone_number":"1381111****","send_time":"2017-01-01 00:00:00","report_time":"2017-01-01 00:00:00",
            "success":true,"err_code":"DELIVERED","err_msg":"用户接收成功","sms_size":"1","biz_id":"12345","out_id":"67890"},
            {"success":false,"err_code":"MK:0001","biz_id":"134523^435"},
            {"success":"maybe","biz_id":"1"}, 7]"#;
        let push = receipts(body.as_bytes())?;
        let at = chrono::TimeZone::with_ymd_and_hms(&Utc, 2016, 12, 31, 16, 0, 0).single();
        assert_eq!(push.entries.len(), 4);
        assert_eq!(
            push.entries[0],
            Entry::Receipt(Receipt {
                message_id: "12345".into(),
                delivered: true,
                status: "true".into(),
                error_code: None,
                reported_at: at,
            })
        );
        let Entry::Receipt(failed) = &push.entries[1] else { panic!("{:?}", push.entries[1]) };
        assert_eq!((failed.message_id.as_str(), failed.delivered), ("134523^435", false));
        assert_eq!(failed.error_code.as_deref(), Some("MK:0001"));
        assert!(matches!(push.entries[2], Entry::Malformed(_)) && matches!(push.entries[3], Entry::Malformed(_)));
        assert_eq!(push.answer.body, RECEIPT_ANSWER);
        Ok(())
    }

    #[test]
    fn a_push_that_is_not_an_array_is_malformed() {
        for body in [&b"{}"[..], b"", b"[", b"\"x\""] {
            assert!(receipts(body).is_err(), "{}", String::from_utf8_lossy(body));
        }
    }

    /// The official V3 example (section 2.6 of the protocol notes).
    const VECTOR_HEADERS: [(&str, &str); 6] = [
        ("host", "ecs.cn-shanghai.aliyuncs.com"),
        ("x-acs-action", "RunInstances"),
        ("x-acs-content-sha256", EMPTY_BODY_SHA256),
        ("x-acs-date", "2023-10-26T10:22:32Z"),
        ("x-acs-signature-nonce", "3156853299f313e23d1673dc12e1703d"),
        ("x-acs-version", "2014-05-26"),
    ];
    const VECTOR_QUERY: [(&str, &str); 2] =
        [("ImageId", "win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd"), ("RegionId", "cn-shanghai")];

    fn vector_request<'a>(headers: &'a [(&'a str, &'a str)]) -> CanonicalRequest<'a> {
        CanonicalRequest { method: "POST", path: "/", query: &VECTOR_QUERY, headers, payload_sha256: EMPTY_BODY_SHA256 }
    }

    #[test]
    fn the_official_v3_vector_is_reproduced() {
        let request = vector_request(&VECTOR_HEADERS);
        let canonical = request.canonical();
        assert_eq!(
            canonical,
            "POST\n/\nImageId=win2019_1809_x64_dtc_zh-cn_40G_alibase_20230811.vhd&RegionId=cn-shanghai\n\
             host:ecs.cn-shanghai.aliyuncs.com\nx-acs-action:RunInstances\n\
             x-acs-content-sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855\n\
             x-acs-date:2023-10-26T10:22:32Z\nx-acs-signature-nonce:3156853299f313e23d1673dc12e1703d\n\
             x-acs-version:2014-05-26\n\n\
             host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version\n\
             e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        let to_sign = string_to_sign(&canonical);
        assert_eq!(to_sign, "ACS3-HMAC-SHA256\n7ea06492da5221eba5297e897ce16e55f964061054b7695beedaac1145b1e259");
        let signature = signature("YourAccessKeySecret", &to_sign);
        assert_eq!(signature, "06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0");
        assert_eq!(
            authorization("YourAccessKeyId", &request.signed_headers(), &signature),
            "ACS3-HMAC-SHA256 Credential=YourAccessKeyId,\
             SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
             Signature=06563a9e1b43f5dfe96b81484da74bceab24a1d853912eee15083a6f0f3283c0"
        );
    }

    #[test]
    fn header_order_and_name_case_do_not_change_the_canonical_request() {
        let mut shuffled: Vec<(&str, &str)> = VECTOR_HEADERS.iter().rev().copied().collect();
        shuffled[0].0 = "X-Acs-Version";
        shuffled[5] = ("Host", " ecs.cn-shanghai.aliyuncs.com ");
        assert_eq!(vector_request(&shuffled).canonical(), vector_request(&VECTOR_HEADERS).canonical());
    }

    #[test]
    fn the_query_is_rfc3986_encoded_in_utf8_and_sorted() {
        // The parameters of the official V1 example, whose canonical query is published.
        let params = [
            ("Version", "2017-05-25"),
            ("Timestamp", "2017-07-12T02:42:19Z"),
            ("TemplateParam", r#"{"customer":"test"}"#),
            ("TemplateCode", "SMS_71390007"),
            ("SignatureVersion", "1.0"),
            ("SignatureNonce", "45e25e9b-0a6f-4070-8c85-2956eda1b466"),
            ("SignatureMethod", "HMAC-SHA1"),
            ("SignName", "阿里云短信测试专用"),
            ("RegionId", "cn-hangzhou"),
            ("PhoneNumbers", "15300000001"),
            ("OutId", "123"),
            ("Format", "XML"),
            ("Action", "SendSms"),
            ("AccessKeyId", "testId"),
        ];
        assert_eq!(
            canonical_query(&params),
            "AccessKeyId=testId&Action=SendSms&Format=XML&OutId=123&PhoneNumbers=15300000001&RegionId=cn-hangzhou\
             &SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95%E4%B8%93%E7%94%A8\
             &SignatureMethod=HMAC-SHA1&SignatureNonce=45e25e9b-0a6f-4070-8c85-2956eda1b466&SignatureVersion=1.0\
             &TemplateCode=SMS_71390007&TemplateParam=%7B%22customer%22%3A%22test%22%7D\
             &Timestamp=2017-07-12T02%3A42%3A19Z&Version=2017-05-25"
        );
        assert_eq!(percent_encode("a b*c~d+e/f"), "a%20b%2Ac~d%2Be%2Ff");
        assert_eq!(canonical_query(&[]), "");
    }

    fn send_sms_params() -> [(&'static str, &'static str); 5] {
        [
            ("PhoneNumbers", "13812345678"),
            ("SignName", "阿里云短信测试"),
            ("TemplateCode", "SMS_154950909"),
            ("TemplateParam", r#"{"code":"661474"}"#),
            ("OutId", "2df23a7f-03d3-479b-b331-2dcc1d821ad7"),
        ]
    }

    #[test]
    fn a_send_sms_request_signs_the_same_twice_and_differently_with_another_nonce() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 8, 30, 5).single().expect("valid date");
        let sign =
            |nonce: &str| sign_send_sms("LTAI5tKeyId", "secret", "127.0.0.1:8080", &send_sms_params(), now, nonce);
        let first = sign("0c7a3b1e6f2d4e8a9b5c1d3e7f9a2b4c");
        let second = sign("0c7a3b1e6f2d4e8a9b5c1d3e7f9a2b4c");
        assert_eq!(first, second);
        assert_ne!(first.header("authorization"), sign("another-nonce").header("authorization"));

        assert_eq!(first.header("host"), Some("127.0.0.1:8080"));
        assert_eq!(first.header("x-acs-action"), Some("SendSms"));
        assert_eq!(first.header("x-acs-version"), Some("2017-05-25"));
        assert_eq!(first.header("x-acs-date"), Some("2024-05-01T08:30:05Z"));
        assert_eq!(first.header("x-acs-signature-nonce"), Some("0c7a3b1e6f2d4e8a9b5c1d3e7f9a2b4c"));
        assert_eq!(first.header("x-acs-content-sha256"), Some(EMPTY_BODY_SHA256));
        let authorization = first.header("authorization").expect("authorization");
        let prefix = "ACS3-HMAC-SHA256 Credential=LTAI5tKeyId,\
                      SignedHeaders=host;x-acs-action;x-acs-content-sha256;x-acs-date;x-acs-signature-nonce;x-acs-version,\
                      Signature=";
        // Computed independently (Python: `urllib.parse.quote(s, safe='~')`, `hashlib`, `hmac`).
        assert_eq!(
            authorization.strip_prefix(prefix),
            Some("ea40c505b3a588dbfe4037824d2cfc7b2b76b8cfc78fd5f7324a4921f338255c")
        );
        assert_eq!(
            first.query,
            "OutId=2df23a7f-03d3-479b-b331-2dcc1d821ad7&PhoneNumbers=13812345678\
             &SignName=%E9%98%BF%E9%87%8C%E4%BA%91%E7%9F%AD%E4%BF%A1%E6%B5%8B%E8%AF%95\
             &TemplateCode=SMS_154950909&TemplateParam=%7B%22code%22%3A%22661474%22%7D"
        );
    }

    #[test]
    fn the_signature_depends_on_every_signed_input() {
        let now = Utc.with_ymd_and_hms(2024, 5, 1, 8, 30, 5).single().expect("valid date");
        let base = sign_send_sms("id", "secret", "h:1", &send_sms_params(), now, "n");
        let mut other_number = send_sms_params();
        other_number[0].1 = "13812345679";
        for other in [
            sign_send_sms("id", "secret2", "h:1", &send_sms_params(), now, "n"),
            sign_send_sms("id", "secret", "h:2", &send_sms_params(), now, "n"),
            sign_send_sms("id", "secret", "h:1", &other_number, now, "n"),
            sign_send_sms("id", "secret", "h:1", &send_sms_params(), now + chrono::Duration::seconds(1), "n"),
        ] {
            assert_ne!(base.header("authorization"), other.header("authorization"));
        }
    }

    #[test]
    fn each_documented_code_has_its_class() {
        let class = |code: &str| classify(code, String::new()).class();
        for code in ["isp.SYSTEM_ERROR", "Throttling.User", "Throttling", "Throttling.Api", "ServiceUnavailable"] {
            assert_eq!(class(code), "transient", "{code}");
        }
        assert_eq!(class("isv.BUSINESS_LIMIT_CONTROL"), "number_limited");
        for code in ["isv.MOBILE_NUMBER_ILLEGAL", "isv.MOBILE_COUNT_OVER_LIMIT"] {
            assert_eq!(class(code), "recipient", "{code}");
        }
        for code in [
            "isv.DAY_LIMIT_CONTROL",
            "isv.MONTH_LIMIT_CONTROL",
            "isv.BLACK_KEY_CONTROL_LIMIT",
            "isp.RAM_PERMISSION_DENY",
            "isv.OUT_OF_SERVICE",
            "isv.PRODUCT_UN_SUBSCRIPT",
            "isv.PRODUCT_UNSUBSCRIBE",
            "isv.ACCOUNT_NOT_EXISTS",
            "isv.ACCOUNT_ABNORMAL",
            "isv.SMS_TEMPLATE_ILLEGAL",
            "isv.SMS_SIGNATURE_ILLEGAL",
            "isv.INVALID_PARAMETERS",
            "isv.TEMPLATE_MISSING_PARAMETERS",
            "isv.INVALID_JSON_PARAM",
            "isv.PARAM_LENGTH_LIMIT",
            "isv.PARAM_NOT_SUPPORT_URL",
            "isv.AMOUNT_NOT_ENOUGH",
            "isv.DOMESTIC_NUMBER_NOT_SUPPORTED",
            "isv.SMS_SIGNATURE_SCENE_ILLEGAL",
            "isv.EXTEND_CODE_ERROR",
            "isv.DENY_IP_RANGE",
            "SignatureDoesNotMatch",
            "InvalidAccessKeyId.NotFound",
            "SignatureNonceUsed",
            "InvalidTimeStamp.Expired",
            "MissingPhoneNumbers",
            "MissingSignName",
            "MissingTemplateCode",
            "IncompleteSignature",
            "something.NEW",
            "",
        ] {
            assert_eq!(class(code), "provider", "{code}");
        }
    }

    #[test]
    fn mainland_numbers_go_national_others_with_their_calling_code() -> Result<(), shared::domain::DomainError> {
        assert_eq!(phone_number(&Recipient::parse(&Mobile::from_stored("13812345678"), 86)?), "13812345678");
        assert_eq!(phone_number(&Recipient::parse(&Mobile::from_stored("+8613812345678"), 86)?), "13812345678");
        assert_eq!(phone_number(&Recipient::parse(&Mobile::from_stored("+85251234567"), 86)?), "85251234567");
        assert_eq!(phone_number(&Recipient::parse(&Mobile::from_stored("+14155552671"), 86)?), "14155552671");
        Ok(())
    }

    #[test]
    fn the_template_param_is_a_json_object_of_strings() {
        assert_eq!(template_param(&SmsCode::from_stored("012345")), r#"{"code":"012345"}"#);
    }

    #[test]
    fn reasons_leave_out_the_servers_string_to_sign() {
        let message = "Specified signature is not matched with our calculation. server string to sign is:POST&%2F&\
                       PhoneNumbers%3D13812345678%26TemplateParam%3D%257B%2522code%2522%253A%2522661474%2522%257D";
        let reason = reason("SignatureDoesNotMatch", Some(message));
        assert_eq!(reason, "aliyun SignatureDoesNotMatch: Specified signature is not matched with our calculation.");
        assert_eq!(super::reason("isv.X", None), "aliyun isv.X: no Message");
    }
}
