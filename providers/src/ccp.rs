//! Ronglian Cloud Communications (容联云通讯, "CCP") template SMS over its REST API
//! (`docs/providers.md`): `sig` = upper-case MD5 of sid + token + timestamp,
//! `Authorization` = base64 of `sid:timestamp`, timestamp in Beijing time.

use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::{DateTime, Utc};
use futures_util::future::BoxFuture;
use md5::{Digest, Md5};
use secrecy::ExposeSecret;
use serde::{Deserialize, Serialize};
use shared::config::{CcpSettings, ProviderName};

use crate::provider::{Accepted, Message, SendError, SmsProvider};

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
        let http = reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()?;
        Ok(Self { settings, http })
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

/// Whether a non-success status code is worth retrying (`docs/providers.md`): internal
/// errors, busy channels, concurrency limits and generic send failures. Everything else —
/// credentials, configuration, recipient, and the provider's frequency caps for this
/// number (160038–160041, 112314, 160056) — is permanent.
pub fn is_transient(code: &str) -> bool {
    let Ok(n) = code.parse::<u32>() else {
        return false;
    };
    matches!(n, 160000..=160010 | 111000..=111099 | 111111 | 160050 | 160063 | 160064 | 172001)
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
            let body = TemplateSmsRequest {
                to: message.mobile.as_str(),
                app_id: &s.app_id,
                template_id: message.template_id,
                datas: [message.code.expose(), &ttl],
                req_id: &req_id,
            };
            let response = self
                .http
                .post(url)
                .header(reqwest::header::ACCEPT, "application/json")
                .header(reqwest::header::CONTENT_TYPE, "application/json;charset=utf-8")
                .header(reqwest::header::AUTHORIZATION, authorization)
                .json(&body)
                .send()
                .await
                // The URL carries `sig`: keep it out of the error text.
                .map_err(|e| SendError::Transient(format!("ccp request failed: {}", chain(e.without_url()))))?;
            let status = response.status();
            if status.is_server_error() || status == reqwest::StatusCode::TOO_MANY_REQUESTS {
                return Err(SendError::Transient(format!("ccp http {}", status.as_u16())));
            }
            if !status.is_success() {
                return Err(SendError::Permanent(format!("ccp http {}", status.as_u16())));
            }
            let bytes = response
                .bytes()
                .await
                .map_err(|e| SendError::Transient(format!("ccp response lost: {}", chain(e.without_url()))))?;
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
            if is_transient(&code) { Err(SendError::Transient(reason)) } else { Err(SendError::Permanent(reason)) }
        })
    }
}

/// An error with its causes (`error sending request: … : Connection refused`), for
/// `last_error`: the top-level message alone rarely says what went wrong.
fn chain(error: reqwest::Error) -> String {
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
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
    fn busy_and_internal_codes_are_transient_the_rest_permanent() {
        for code in ["160000", "160001", "160010", "111000", "111099", "111111", "160050", "160063", "160064"] {
            assert!(is_transient(code), "{code}");
        }
        for code in ["160038", "160039", "160040", "160041", "112314", "160056", "160042", "111109", "111106", "oops"] {
            assert!(!is_transient(code), "{code}");
        }
    }
}
