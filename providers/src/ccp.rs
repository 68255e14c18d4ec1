//! Ronglian Cloud Communications (容联云通讯, "CCP") template SMS over its REST API
//! (`docs/providers.md`): `sig` = upper-case MD5 of sid + token + timestamp,
//! `Authorization` = base64 of `sid:timestamp`, timestamp in Beijing time.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use md5::{Digest, Md5};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::{
    config::{CcpSettings, ProviderName},
    domain::Recipient,
};

use crate::{
    http,
    provider::{Accepted, Message, SendError, SmsProvider},
};

/// The REST API version segment; fixed by the provider.
const VERSION: &str = "2013-12-26";

/// `SMS_PROVIDER=ccp`.
pub struct CcpProvider {
    settings: CcpSettings,
    http: reqwest::Client,
}

impl CcpProvider {
    /// A client for `settings` whose requests give up after `timeout`.
    pub fn new(settings: CcpSettings, timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        Ok(Self { settings, http: http::client(timeout)? })
    }
}

/// The request timestamp: `yyyyMMddHHmmss` in Beijing time, as the official SDKs send it.
pub fn timestamp(now: DateTime<Utc>) -> String {
    now.with_timezone(&shared::BEIJING).format("%Y%m%d%H%M%S").to_string()
}

/// `(sig, Authorization)` for one request.
pub fn sign(account_sid: &str, auth_token: &str, timestamp: &str) -> (String, String) {
    let digest = Md5::digest(format!("{account_sid}{auth_token}{timestamp}").as_bytes());
    let sig = digest.iter().map(|b| format!("{b:02X}")).collect();
    let authorization = STANDARD.encode(format!("{account_sid}:{timestamp}"));
    (sig, authorization)
}

/// The JSON body of a template SMS request.
#[derive(Serialize)]
struct TemplateSmsRequest<'a> {
    to: &'a str,
    #[serde(rename = "appId")]
    app_id: &'a str,
    #[serde(rename = "templateId")]
    template_id: &'a str,
    datas: [&'a str; 2],
    /// Our job id: the provider refuses a second request with the same `reqId` on the same
    /// day (160054), so a retry after a lost answer cannot send the SMS twice.
    #[serde(rename = "reqId")]
    req_id: &'a str,
}

#[derive(Deserialize)]
struct TemplateSmsResponse {
    #[serde(rename = "statusCode")]
    status_code: serde_json::Value,
    #[serde(rename = "statusMsg", default)]
    status_msg: Option<String>,
    #[serde(rename = "templateSMS", default)]
    template_sms: Option<TemplateSms>,
}

#[derive(Deserialize)]
struct TemplateSms {
    #[serde(rename = "smsMessageSid", default)]
    sms_message_sid: Option<String>,
}

/// `000000`: accepted.
const OK: &str = "000000";
/// `reqId` already used: an earlier attempt of this job was accepted.
const DUPLICATE_REQUEST: &str = "160054";

/// The class of a non-success `statusCode` (`docs/providers.md`):
/// - transient: internal errors, busy channels, the concurrency cap and generic send failures;
/// - recipient: the number is empty, malformed, blacklisted or unsubscribed;
/// - number frequency limit: this number's per-minute and per-day caps (160038–160041,
///   112314, 160056);
/// - provider-side: everything else (credentials, account, application, template, balance,
///   IP, international permission, and codes we do not know), which another provider may not
///   share.
pub fn classify(code: &str, reason: String) -> SendError {
    let n = code.parse::<u32>().unwrap_or(0);
    match n {
        160000..=160010 | 111000..=111099 | 111111 | 160050 | 160063 | 160064 | 172001 => SendError::Transient(reason),
        160038..=160041 | 112314 | 160056 => SendError::NumberLimited(reason),
        112300
        | 112306
        | 112316
        | 112317
        | 112319
        | 160034
        | 160042
        | 160044
        | 160048
        | 160051
        | 160068
        | 160072..=160074 => SendError::Recipient(reason),
        _ => SendError::Provider(reason),
    }
}

/// The `to` form: national digits for mainland China, `00` + calling code + number for
/// the rest (Ronglian's international form).
pub fn to(recipient: &Recipient) -> String {
    if recipient.country_code() == 86 {
        recipient.national().to_owned()
    } else {
        format!("00{}{}", recipient.country_code(), recipient.national())
    }
}

impl SmsProvider for CcpProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Ccp
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let s = &self.settings;
            let ts = timestamp(Utc::now());
            let (sig, authorization) = sign(&s.account_sid, s.auth_token.expose_secret(), &ts);
            let url = format!("{}/{VERSION}/Accounts/{}/SMS/TemplateSMS?sig={sig}", s.base_url, s.account_sid);
            let ttl = message.ttl_minutes.to_string();
            let req_id = message.job_id.simple().to_string();
            let to = to(message.recipient);
            let body = TemplateSmsRequest {
                to: &to,
                app_id: &s.app_id,
                template_id: &s.template_id,
                datas: [message.code.expose(), &ttl],
                req_id: &req_id,
            };
            let request = self
                .http
                .post(url)
                .header(reqwest::header::ACCEPT, "application/json")
                .header(reqwest::header::CONTENT_TYPE, "application/json;charset=utf-8")
                .header(reqwest::header::AUTHORIZATION, authorization)
                .json(&body);
            let (status, bytes) = http::exchange(ProviderName::Ccp, request).await?;
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(SendError::Transient(format!("ccp http {}", status.as_u16())));
            }
            if !status.is_success() {
                return Err(SendError::Provider(format!("ccp http {}", status.as_u16())));
            }
            let parsed: TemplateSmsResponse = serde_json::from_slice(&bytes)
                .map_err(|e| SendError::Transient(format!("ccp 172003: unreadable response: {e}")))?;
            let code = match &parsed.status_code {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            if code == OK {
                let message_id = parsed.template_sms.and_then(|t| t.sms_message_sid);
                return Ok(Accepted { message_id, note: None });
            }
            if code == DUPLICATE_REQUEST {
                return Ok(Accepted {
                    message_id: None,
                    note: Some("ccp 160054: accepted by an earlier attempt of this job".into()),
                });
            }
            let reason = format!("ccp {code}: {}", parsed.status_msg.as_deref().unwrap_or("no statusMsg"));
            Err(classify(&code, reason))
        })
    }
}

#[cfg(test)]
mod tests {
    use chrono::TimeZone;

    use super::*;

    #[test]
    fn signature_matches_the_worked_example() {
        // The worked example of docs/providers.md.
        let (sig, authorization) =
            sign("aaf98f894032b237014047963bb9009d", "3d8e4ab5a8a44b0e8a3fcb2c3c1d6b3e", "20140416142030");
        assert_eq!(sig, "3BC8F98861B68CC939B46D2C25DCB7FD");
        assert_eq!(authorization, "YWFmOThmODk0MDMyYjIzNzAxNDA0Nzk2M2JiOTAwOWQ6MjAxNDA0MTYxNDIwMzA=");
    }

    #[test]
    fn the_timestamp_is_beijing_time() {
        let Some(now) = Utc.with_ymd_and_hms(2014, 4, 16, 6, 20, 30).single() else { panic!("valid date") };
        assert_eq!(timestamp(now), "20140416142030");
    }

    #[test]
    fn each_status_code_has_its_class() {
        let class = |code: &str| classify(code, String::new()).class();
        for code in ["160000", "160001", "160010", "111000", "111099", "111111", "160050", "160063", "160064"] {
            assert_eq!(class(code), "transient", "{code}");
        }
        for code in ["160038", "160039", "160040", "160041", "112314", "160056"] {
            assert_eq!(class(code), "number_limited", "{code}");
        }
        for code in ["112300", "112317", "160034", "160042", "160051", "160068", "160073"] {
            assert_eq!(class(code), "recipient", "{code}");
        }
        for code in ["111109", "111106", "111142", "112311", "160014", "160053", "160061", "oops"] {
            assert_eq!(class(code), "provider", "{code}");
        }
    }

    #[test]
    fn mainland_numbers_go_national_others_international() -> Result<(), shared::domain::DomainError> {
        use shared::domain::Mobile;
        assert_eq!(to(&Recipient::parse(&Mobile::from_stored("13812345678"), 86)?), "13812345678");
        assert_eq!(to(&Recipient::parse(&Mobile::from_stored("+85251234567"), 86)?), "0085251234567");
        Ok(())
    }
}
