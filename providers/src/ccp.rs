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
    receipts::{Answer, Entry, Malformed, Push, Receipt},
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

/// A CCP report, as its XML `<Request>` carries it (the JSON form carries the same names).
/// Every field is optional here: what a report needs is checked in [`report`].
#[derive(Deserialize, Default)]
struct ArrivedXml {
    action: Option<String>,
    #[serde(rename = "smsType")]
    sms_type: Option<String>,
    content: Option<String>,
    status: Option<String>,
    #[serde(rename = "deliverCode")]
    deliver_code: Option<String>,
    #[serde(rename = "recvTime")]
    recv_time: Option<String>,
}

/// Our answer to an XML push (`docs/providers.md`: the form Ronglian's own callbacks use).
pub const RECEIPT_ANSWER_XML: &str =
    r#"<?xml version="1.0" encoding="UTF-8"?><Response><statusCode>000000</statusCode></Response>"#;
/// Our answer to a JSON push.
pub const RECEIPT_ANSWER_JSON: &str = r#"{"statusCode":"000000"}"#;

/// Reads an `SMSArrived` push: XML `<Request>…</Request>` or JSON `{"Request": {…}}` (the
/// `Content-Type`, else the first character, tells which; the answer is in the same form).
/// Only `smsType` 1 is a delivery report (0 is a reply from the handset, acknowledged and
/// ignored); `status` 0 is delivered, anything else failed with `deliverCode` as the code;
/// `content` is the `smsMessageSid` of the send; `recvTime` is Beijing time.
pub fn receipts(content_type: Option<&str>, body: &[u8]) -> Result<Push, Malformed> {
    let first = body.iter().copied().find(|b| !b.is_ascii_whitespace());
    let declared_json = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("json"));
    let declared_xml = content_type.is_some_and(|t| t.to_ascii_lowercase().contains("xml"));
    let json = declared_json || (!declared_xml && first == Some(b'{'));
    let arrived = if json {
        let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Malformed(format!("json: {e}")))?;
        let Some(request) = value.get("Request").and_then(serde_json::Value::as_object) else {
            return Err(Malformed("no Request object".into()));
        };
        let field = |name: &str| crate::receipts::text(request.get(name));
        ArrivedXml {
            action: field("action"),
            sms_type: field("smsType"),
            content: field("content"),
            status: field("status"),
            deliver_code: field("deliverCode"),
            recv_time: field("recvTime"),
        }
    } else {
        let text = std::str::from_utf8(body).map_err(|_| Malformed("xml: not UTF-8".into()))?;
        quick_xml::de::from_str::<ArrivedXml>(text).map_err(|e| Malformed(format!("xml: {e}")))?
    };
    let answer = Answer::json(if json { RECEIPT_ANSWER_JSON } else { RECEIPT_ANSWER_XML });
    let answer = if json { answer } else { Answer { content_type: Some("application/xml"), ..answer } };
    Ok(Push { entries: vec![report(arrived)], answer })
}

fn report(arrived: ArrivedXml) -> Entry {
    let trimmed = |v: Option<String>| v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty());
    if trimmed(arrived.action).as_deref() != Some("SMSArrived") {
        return Entry::Malformed("action is not SMSArrived".into());
    }
    match trimmed(arrived.sms_type).as_deref() {
        Some("1") => {}
        Some(_) => return Entry::Ignored,
        None => return Entry::Malformed("no smsType".into()),
    }
    let (Some(message_id), Some(status)) = (trimmed(arrived.content), trimmed(arrived.status)) else {
        return Entry::Malformed("a report needs content and status".into());
    };
    let delivered = status == "0";
    let error_code = (!delivered).then(|| trimmed(arrived.deliver_code).unwrap_or_else(|| status.clone()));
    let reported_at = crate::receipts::beijing_time(arrived.recv_time.as_deref(), "%Y%m%d%H%M%S");
    Entry::Receipt(Receipt { message_id, delivered, status, error_code, reported_at })
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
    fn an_xml_delivery_report_is_read() -> Result<(), Malformed> {
        // The example of docs/providers.md.
        let body = br#"<?xml version="1.0" encoding="UTF-8"?>
<Request><action>SMSArrived</action><smsType>1</smsType><apiVersion>2013-12-26</apiVersion>
<content>4121908f3d1b4edb9210f0eb4742f62c</content><fromNum>13912345678</fromNum>
<dateSent>20130923010000</dateSent><recvTime>20130923010010</recvTime><status>0</status>
<deliverCode>DELIVRD</deliverCode><reqId>123</reqId><smsCount>2</smsCount><spCode>10690876</spCode></Request>"#;
        let push = receipts(Some("application/xml"), body)?;
        let at = Utc.with_ymd_and_hms(2013, 9, 22, 17, 0, 10).single();
        assert_eq!(
            push.entries,
            vec![Entry::Receipt(Receipt {
                message_id: "4121908f3d1b4edb9210f0eb4742f62c".into(),
                delivered: true,
                status: "0".into(),
                error_code: None,
                reported_at: at,
            })]
        );
        assert_eq!(push.answer.body, RECEIPT_ANSWER_XML);
        assert_eq!(push.answer.content_type, Some("application/xml"));
        Ok(())
    }

    #[test]
    fn a_json_failure_report_carries_its_deliver_code() -> Result<(), Malformed> {
        let body = br#"{"Request":{"action":"SMSArrived","smsType":"1","content":"abc","status":"1",
            "deliverCode":"MK:0001","recvTime":"20261126120000"}}"#;
        let push = receipts(None, body)?;
        let Some(Entry::Receipt(receipt)) = push.entries.first() else { panic!("a receipt: {push:?}") };
        assert!(!receipt.delivered);
        assert_eq!(receipt.error_code.as_deref(), Some("MK:0001"));
        assert_eq!(push.answer, Answer::json(RECEIPT_ANSWER_JSON));
        // Numbers instead of strings are read the same.
        let body = br#"{"Request":{"action":"SMSArrived","smsType":1,"content":"abc","status":0}}"#;
        let Some(Entry::Receipt(receipt)) = receipts(Some("application/json"), body)?.entries.first().cloned() else {
            panic!("a receipt")
        };
        assert!(receipt.delivered && receipt.reported_at.is_none());
        Ok(())
    }

    #[test]
    fn a_reply_sms_is_acknowledged_and_ignored() -> Result<(), Malformed> {
        let body = b"<Request><action>SMSArrived</action><smsType>0</smsType><content>hello</content></Request>";
        assert_eq!(receipts(None, body)?.entries, vec![Entry::Ignored]);
        Ok(())
    }

    #[test]
    fn malformed_pushes_are_refused_or_marked() {
        for body in [&b"<Request><action>"[..], b"{\"Request\": 1}", b"{not json", b"", b"\xff\xfe"] {
            assert!(receipts(None, body).is_err(), "{}", String::from_utf8_lossy(body));
        }
        let no_id = b"<Request><action>SMSArrived</action><smsType>1</smsType><status>0</status></Request>";
        assert!(matches!(receipts(None, no_id).map(|p| p.entries), Ok(e) if matches!(e[..], [Entry::Malformed(_)])));
    }

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
