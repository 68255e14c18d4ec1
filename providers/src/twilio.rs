//! Twilio Programmable Messaging over its REST API (`docs/providers.md`): a form-encoded
//! `POST …/Accounts/{AccountSid}/Messages.json` with HTTP Basic auth, the message text from
//! `SMS_TEXT_TEMPLATE`, and the `X-Twilio-Signature` of its status callbacks.

use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::future::BoxFuture;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};
use reqwest::header::{ACCEPT, AUTHORIZATION, CONTENT_TYPE, HeaderValue};
use secrecy::ExposeSecret;
use serde::Deserialize;
use shared::config::{ProviderName, TwilioSender, TwilioSettings};

use crate::{
    http::{self, describe},
    provider::{Accepted, Message, SendError, SmsProvider},
    receipts::{Answer, Entry, Push, Receipt},
};

/// The REST API version segment; fixed by the provider.
const API_VERSION: &str = "2010-04-01";

/// The longest provider message kept in an error: Twilio's messages are one sentence, but
/// whatever a proxy in between answers ends up in `last_error`.
const MAX_REASON_CHARS: usize = 200;

/// `SMS_PROVIDERS` with `twilio`.
pub struct TwilioProvider {
    settings: TwilioSettings,
    http: reqwest::Client,
}

impl TwilioProvider {
    /// A client for `settings` whose requests give up after `timeout`.
    pub fn new(settings: TwilioSettings, timeout: std::time::Duration) -> Result<Self, reqwest::Error> {
        let http = http::client(timeout)?;
        Ok(Self { settings, http })
    }
}

/// The `Authorization` header value: HTTP Basic with the account SID as user name and the
/// auth token as password.
pub fn basic_authorization(account_sid: &str, auth_token: &str) -> String {
    format!("Basic {}", STANDARD.encode(format!("{account_sid}:{auth_token}")))
}

/// The message text: `template` with `{code}` and `{minutes}` filled in.
pub fn body_text(template: &str, code: &str, minutes: u64) -> String {
    template.replace("{code}", code).replace("{minutes}", &minutes.to_string())
}

/// What `application/x-www-form-urlencoded` leaves as is: ASCII letters, digits and `*-._`
/// (space becomes `+`, done after encoding).
const FORM: &AsciiSet = &NON_ALPHANUMERIC.remove(b'*').remove(b'-').remove(b'.').remove(b'_');

fn form_encode(value: &str) -> String {
    // A literal `%` is encoded as `%25`, so `%20` can only come from a space.
    utf8_percent_encode(value, FORM).to_string().replace("%20", "+")
}

/// The request body: `To` (E.164), `From` or `MessagingServiceSid`, `Body`, and
/// `StatusCallback` when receipts are wanted. Twilio has no idempotency key, so none is sent.
pub fn form_body(to: &str, sender: &TwilioSender, text: &str, status_callback: Option<&str>) -> String {
    let sender = match sender {
        TwilioSender::From(from) => ("From", from.as_str()),
        TwilioSender::MessagingService(sid) => ("MessagingServiceSid", sid.as_str()),
    };
    let mut pairs = vec![("To", to), sender, ("Body", text)];
    if let Some(url) = status_callback {
        pairs.push(("StatusCallback", url));
    }
    pairs.iter().map(|(name, value)| format!("{name}={}", form_encode(value))).collect::<Vec<_>>().join("&")
}

/// `X-Twilio-Signature` of a status callback: base64 of HMAC-SHA1 under the auth token of the
/// callback URL (as configured, query included) followed by every POST parameter as
/// name + value, sorted by name then value, identical pairs once (as twilio-python does).
pub fn callback_signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use hmac::{Hmac, Mac};
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    sorted.dedup();
    // HMAC takes keys of any length; new_from_slice cannot fail for it.
    let Ok(mut mac) = Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    for (name, value) in sorted {
        mac.update(name.as_bytes());
        mac.update(value.as_bytes());
    }
    STANDARD.encode(mac.finalize().into_bytes())
}

/// A non-2xx answer: `{"code", "message", "more_info", "status"}`.
#[derive(Deserialize)]
struct ErrorResponse {
    #[serde(default)]
    code: Option<serde_json::Value>,
    #[serde(default)]
    message: Option<String>,
}

/// The parts of the Message resource a 2xx carries that matter here.
#[derive(Deserialize)]
struct MessageResource {
    #[serde(default)]
    sid: Option<String>,
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    error_code: Option<serde_json::Value>,
    #[serde(default)]
    error_message: Option<String>,
}

/// A Twilio error code, sent as a JSON number (a numeric string is taken too).
fn code_of(value: Option<&serde_json::Value>) -> Option<u32> {
    match value? {
        serde_json::Value::Number(n) => n.as_u64().and_then(|n| u32::try_from(n).ok()),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn shorten(text: &str) -> String {
    match text.char_indices().nth(MAX_REASON_CHARS) {
        Some((end, _)) => format!("{}…", text.get(..end).unwrap_or(text)),
        None => text.to_owned(),
    }
}

/// The class of a refusal (`docs/providers.md`), from Twilio's error `code` when there is one,
/// else from the HTTP status:
/// - transient: 20429 (too many concurrent requests), 30001 (queue overflow), and with no
///   known code HTTP 429 and 5xx;
/// - number frequency limit: 14107 (the send rate between two numbers);
/// - recipient: 21211 (not a valid `To`), 21610 (the recipient replied STOP), 21614 (not a
///   mobile number), and for a message created already failed 30003–30006 (unreachable,
///   blocked, unknown or landline handset);
/// - provider-side: everything else (20003 credentials, 20404 wrong account path, 21408
///   region not enabled, 21606/21659 sender not ours, 21602–21604 missing parameters, 21609,
///   21617, 30007 carrier filtering, unknown codes), which another provider may not share.
pub fn classify(http_status: u16, code: Option<u32>, reason: String) -> SendError {
    match code {
        Some(20429 | 30001) => SendError::Transient(reason),
        Some(14107) => SendError::NumberLimited(reason),
        Some(21211 | 21610 | 21614 | 30003..=30006) => SendError::Recipient(reason),
        _ if http_status == 429 || http_status >= 500 => SendError::Transient(reason),
        _ => SendError::Provider(reason),
    }
}

/// Reads one answer, given its HTTP status and body.
///
/// A 2xx means Twilio created the message, so it is accepted even when its body cannot be
/// read: there is no idempotency key, and a retry would text the user twice. The exception is
/// a 2xx whose `status` is already `failed` or `undelivered`: nothing will be delivered, so it
/// is a refusal, classed by its `error_code` like any other.
pub fn outcome(http_status: u16, body: &[u8]) -> Result<Accepted, SendError> {
    if (200..300).contains(&http_status) {
        let Ok(message) = serde_json::from_slice::<MessageResource>(body) else {
            return Ok(Accepted {
                message_id: None,
                note: Some(format!("twilio http {http_status} with an unreadable body: the message was created")),
            });
        };
        let status = message.status.as_deref().unwrap_or("");
        if matches!(status, "failed" | "undelivered") {
            let code = code_of(message.error_code.as_ref());
            let label = code.map_or_else(|| status.to_owned(), |c| c.to_string());
            let text = message.error_message.as_deref().unwrap_or(status);
            let sid = message.sid.as_deref().unwrap_or("no sid");
            return Err(classify(http_status, code, format!("twilio {label}: {} ({sid})", shorten(text))));
        }
        let note = message.sid.is_none().then(|| format!("twilio http {http_status} without a sid"));
        return Ok(Accepted { message_id: message.sid, note });
    }
    let parsed = serde_json::from_slice::<ErrorResponse>(body).ok();
    let code = parsed.as_ref().and_then(|p| code_of(p.code.as_ref()));
    let text = parsed.as_ref().and_then(|p| p.message.as_deref()).map(shorten);
    let reason = match (code, text) {
        (Some(code), Some(text)) => format!("twilio {code}: {text}"),
        (Some(code), None) => format!("twilio {code}: http {http_status}"),
        (None, Some(text)) => format!("twilio http {http_status}: {text}"),
        (None, None) => format!("twilio http {http_status}"),
    };
    Err(classify(http_status, code, reason))
}

/// Whether `signature` (the `X-Twilio-Signature` header) is Twilio's for a callback to `url`
/// with form parameters `params`, compared in constant time. `url` must be the URL Twilio was
/// given (our `RECEIPT_BASE_URL` + path and query), not what a proxy rewrote it to.
pub fn verify_callback(auth_token: &str, url: &str, params: &[(String, String)], signature: &str) -> bool {
    use subtle::ConstantTimeEq;
    let expected = callback_signature(auth_token, url, params);
    !expected.is_empty() && bool::from(expected.as_bytes().ct_eq(signature.trim().as_bytes()))
}

/// Our answer to a status callback: any 2xx will do; 204, no content.
pub const RECEIPT_ANSWER: Answer = Answer { status: 204, content_type: None, body: "" };

/// Reads a status callback's form parameters: `MessageSid` and `MessageStatus`; only the
/// final `delivered` (delivered), `undelivered` and `failed` (not, with `ErrorCode`) are
/// reports; `queued`, `sent` and the other intermediate statuses are acknowledged and ignored.
pub fn receipts(params: &[(String, String)]) -> Push {
    let param =
        |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim().to_owned()).filter(|v| !v.is_empty());
    let entry = match (param("MessageSid"), param("MessageStatus").or_else(|| param("SmsStatus"))) {
        (Some(message_id), Some(status)) => match status.as_str() {
            "delivered" => {
                Entry::Receipt(Receipt { message_id, delivered: true, status, error_code: None, reported_at: None })
            }
            "undelivered" | "failed" => {
                let error_code = Some(param("ErrorCode").unwrap_or_else(|| status.clone()));
                Entry::Receipt(Receipt { message_id, delivered: false, status, error_code, reported_at: None })
            }
            _ => Entry::Ignored,
        },
        _ => Entry::Malformed("a status callback needs MessageSid and MessageStatus".into()),
    };
    Push { entries: vec![entry], answer: RECEIPT_ANSWER }
}

impl SmsProvider for TwilioProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Twilio
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            let s = &self.settings;
            let url = format!("{}/{API_VERSION}/Accounts/{}/Messages.json", s.base_url, s.account_sid);
            let text = body_text(&s.text_template, message.code.expose(), message.ttl_minutes);
            let body = form_body(&message.recipient.e164(), &s.sender, &text, s.status_callback.as_deref());
            let mut authorization =
                HeaderValue::from_str(&basic_authorization(&s.account_sid, s.auth_token.expose_secret()))
                    .map_err(|_| SendError::Provider("twilio: the credentials do not fit a header".into()))?;
            // Keeps the credentials out of reqwest's own debug output.
            authorization.set_sensitive(true);
            let response = self
                .http
                .post(url)
                .header(ACCEPT, "application/json")
                .header(CONTENT_TYPE, "application/x-www-form-urlencoded")
                .header(AUTHORIZATION, authorization)
                .body(body)
                .send()
                .await
                .map_err(|e| SendError::Transient(format!("twilio request failed: {}", describe(e))))?;
            let status = response.status().as_u16();
            match response.bytes().await {
                Ok(bytes) => outcome(status, &bytes),
                // The message exists once Twilio has said 2xx: see `outcome`.
                Err(e) if (200..300).contains(&status) => Ok(Accepted {
                    message_id: None,
                    note: Some(format!("twilio http {status}, answer lost ({}): the message was created", describe(e))),
                }),
                Err(e) => Err(classify(status, None, format!("twilio http {status}: answer lost: {}", describe(e)))),
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn form(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_callback_is_verified_against_the_official_vector() {
        let params = form(&[
            ("To", "+18005551212"),
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
        ]);
        let url = "https://mycompany.com/myapp.php?foo=1&bar=2";
        assert!(verify_callback("12345", url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!verify_callback("12345", url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8"));
        assert!(!verify_callback("54321", url, &params, "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!verify_callback(
            "12345",
            "https://mycompany.com/myapp.php?foo=1",
            &params,
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        ));
        assert!(!verify_callback("12345", url, &params[1..], "RSOYDt4T1cUTdK1PDd93/VVr8B8="));
        assert!(!verify_callback("12345", url, &params, ""));
    }

    #[test]
    fn the_mock_fixture_of_the_protocol_notes_verifies() -> Result<(), serde_urlencoded::de::Error> {
        let body = "AccountSid=ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX&ApiVersion=2010-04-01&From=%2B15017122661\
            &MessageSid=SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX&MessageStatus=undelivered&ErrorCode=30003\
            &SmsSid=SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX&SmsStatus=undelivered&To=%2B15558675310";
        let params: Vec<(String, String)> = serde_urlencoded::from_str(body)?;
        assert!(verify_callback("12345", "https://example.com/sms/status", &params, "JsuPk7GxILES45ugLAFdKYTapfY="));
        let push = receipts(&params);
        assert_eq!(
            push.entries,
            vec![Entry::Receipt(Receipt {
                message_id: "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX".into(),
                delivered: false,
                status: "undelivered".into(),
                error_code: Some("30003".into()),
                reported_at: None,
            })]
        );
        assert_eq!((push.answer.status, push.answer.body), (204, ""));
        Ok(())
    }

    #[test]
    fn only_final_statuses_are_reports() {
        let with = |status: &str| receipts(&form(&[("MessageSid", "SM1"), ("MessageStatus", status)])).entries;
        assert!(matches!(&with("delivered")[..], [Entry::Receipt(r)] if r.delivered));
        assert!(
            matches!(&with("failed")[..], [Entry::Receipt(r)] if !r.delivered && r.error_code.as_deref() == Some("failed"))
        );
        for status in ["queued", "sending", "sent", "accepted", "read"] {
            assert_eq!(with(status), vec![Entry::Ignored], "{status}");
        }
        assert!(matches!(&receipts(&form(&[("MessageStatus", "delivered")])).entries[..], [Entry::Malformed(_)]));
    }

    #[test]
    fn the_basic_auth_header_is_base64_of_sid_and_token() {
        // echo -n 'AC0123456789abcdef0123456789abcdef:your_auth_token' | base64
        assert_eq!(
            basic_authorization("AC0123456789abcdef0123456789abcdef", "your_auth_token"),
            "Basic QUMwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZjp5b3VyX2F1dGhfdG9rZW4="
        );
    }

    #[test]
    fn the_form_body_of_a_known_message() {
        let text = body_text(shared::config::DEFAULT_TEXT_TEMPLATE, "123456", 5);
        assert_eq!(text, "Your verification code is 123456. It expires in 5 minutes.");
        let sender = TwilioSender::From("+15005550006".into());
        // Python's urllib.parse.urlencode of the same pairs.
        assert_eq!(
            form_body("+8613812345678", &sender, &text, Some("https://example.com/receipts/twilio")),
            "To=%2B8613812345678&From=%2B15005550006\
             &Body=Your+verification+code+is+123456.+It+expires+in+5+minutes.\
             &StatusCallback=https%3A%2F%2Fexample.com%2Freceipts%2Ftwilio"
        );
        let service = TwilioSender::MessagingService("MG00000000000000000000000000000000".into());
        assert_eq!(
            form_body("+447911123456", &service, "a%b 验证码 *-._~+&=", None),
            "To=%2B447911123456&MessagingServiceSid=MG00000000000000000000000000000000\
             &Body=a%25b+%E9%AA%8C%E8%AF%81%E7%A0%81+*-._%7E%2B%26%3D"
        );
    }

    #[test]
    fn every_placeholder_is_filled() {
        assert_eq!(body_text("{code} {code}, {minutes} min", "042000", 10), "042000 042000, 10 min");
    }

    #[test]
    fn the_callback_signature_matches_the_official_vector() {
        let params: Vec<(String, String)> = [
            ("CallSid", "CA1234567890ABCDE"),
            ("Caller", "+14158675309"),
            ("Digits", "1234"),
            ("From", "+14158675309"),
            ("To", "+18005551212"),
        ]
        .into_iter()
        .rev()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect();
        assert_eq!(
            callback_signature("12345", "https://mycompany.com/myapp.php?foo=1&bar=2", &params),
            "RSOYDt4T1cUTdK1PDd93/VVr8B8="
        );
    }

    #[test]
    fn each_error_code_has_its_class() {
        let class = |http: u16, code: Option<u32>| classify(http, code, String::new()).class();
        for (http, code) in
            [(429, Some(20429)), (429, None), (500, None), (503, None), (500, Some(20500)), (201, Some(30001))]
        {
            assert_eq!(class(http, code), "transient", "{http} {code:?}");
        }
        // The code decides before the HTTP status.
        for http in [400, 429] {
            assert_eq!(class(http, Some(14107)), "number_limited", "{http}");
        }
        for (http, code) in [(400, 21211), (400, 21610), (400, 21614), (201, 30003), (201, 30005), (201, 30006)] {
            assert_eq!(class(http, Some(code)), "recipient", "{code}");
        }
        for (http, code) in [
            (401, Some(20003)),
            (404, Some(20404)),
            (400, Some(21408)),
            (400, Some(21606)),
            (400, Some(21659)),
            (400, Some(21602)),
            (400, Some(21603)),
            (400, Some(21604)),
            (400, Some(21609)),
            (400, Some(21617)),
            (400, Some(99999)),
            (201, Some(30007)),
            (400, None),
            (401, None),
        ] {
            assert_eq!(class(http, code), "provider", "{http} {code:?}");
        }
    }

    #[test]
    fn an_error_body_gives_code_and_message() {
        let body = br#"{"code": 21211, "message": "The 'To' number +1555 is not a valid phone number.",
            "more_info": "https://www.twilio.com/docs/errors/21211", "status": 400}"#;
        assert_eq!(
            outcome(400, body),
            Err(SendError::Recipient("twilio 21211: The 'To' number +1555 is not a valid phone number.".into()))
        );
        assert_eq!(outcome(502, b"<html>Bad Gateway</html>"), Err(SendError::Transient("twilio http 502".into())));
        let long = format!(r#"{{"code": 20003, "message": "{}"}}"#, "x".repeat(500));
        let Err(SendError::Provider(reason)) = outcome(401, long.as_bytes()) else { panic!("provider-side") };
        assert!(reason.chars().count() < 230, "{reason}");
    }

    #[test]
    fn a_created_message_is_accepted_with_its_sid() {
        let body = br#"{"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "queued", "error_code": null}"#;
        assert_eq!(
            outcome(201, body),
            Ok(Accepted { message_id: Some("SM1f0e8ae6ade43cb3c0ce4525424e404f".into()), note: None })
        );
        // Created, so not sent again, even if the answer cannot be read.
        let Ok(accepted) = outcome(201, b"{\"sid\": \"SM1f") else { panic!("accepted") };
        assert_eq!(accepted.message_id, None);
        assert!(accepted.note.is_some());
    }

    #[test]
    fn a_message_created_failed_is_refused_by_its_error_code() {
        let body = br#"{"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "failed", "error_code": 30006,
            "error_message": "Landline or unreachable carrier"}"#;
        assert_eq!(
            outcome(201, body),
            Err(SendError::Recipient(
                "twilio 30006: Landline or unreachable carrier (SM1f0e8ae6ade43cb3c0ce4525424e404f)".into()
            ))
        );
        let body = br#"{"sid": "SM1f0e8ae6ade43cb3c0ce4525424e404f", "status": "undelivered"}"#;
        assert_eq!(
            outcome(201, body),
            Err(SendError::Provider("twilio undelivered: undelivered (SM1f0e8ae6ade43cb3c0ce4525424e404f)".into()))
        );
    }
}
