//! A local stand-in for Tencent Cloud SMS `SendSms` (API 3.0, 2021-01-11) that checks the real
//! protocol (`docs/providers.md`): `X-TC-*` headers, TC3-HMAC-SHA256 recomputed from the bytes
//! received, the timestamp window and the body. A request that breaks it gets the service's
//! error answer and is listed in [`TencentFake::violations`]. Replies can be scripted.

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::State,
    http::{HeaderMap, Method, StatusCode, Uri},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{DateTime, Utc};
use hmac::{Hmac, Mac};
use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};
use shared::config::{Countries, TencentSettings};

/// The `SecretId` the fake knows.
pub const SECRET_ID: &str = "AKIDEXAMPLEEXAMPLEEXAMPLEEXAMPLE12";
/// Its `SecretKey`.
pub const SECRET_KEY: &str = "SKEXAMPLEEXAMPLEEXAMPLEEXAMPLE12";
/// The SMS application the fake knows.
pub const SMS_SDK_APP_ID: &str = "1400006666";
/// The approved signature (签名).
pub const SIGN_NAME: &str = "测试签名";
/// The approved template: a verification template with two variables, `{1}` the code and
/// `{2}` the minutes.
pub const TEMPLATE_ID: &str = "1110";
/// The region the fake is configured with.
pub const REGION: &str = "ap-guangzhou";
/// The regions SMS is served from.
const REGIONS: [&str; 3] = ["ap-guangzhou", "ap-beijing", "ap-nanjing"];
/// How far `X-TC-Timestamp` may be from the fake's clock.
const WINDOW_SECS: i64 = 300;
/// Longer than any client timeout in the tests.
const HANG: Duration = Duration::from_secs(60);
/// The fields `SendSms` 2021-01-11 knows.
const FIELDS: [&str; 8] = [
    "PhoneNumberSet",
    "SmsSdkAppId",
    "SignName",
    "TemplateId",
    "TemplateParamSet",
    "ExtendCode",
    "SessionContext",
    "SenderId",
];

/// One scripted answer to a protocol-correct request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// Every number accepted: `Code` `Ok` and a fresh `SerialNo`.
    Ok,
    /// HTTP 200 with `Response.Error` of this code: the request as a whole failed.
    Error(&'static str),
    /// HTTP 200 without `Response.Error`, every number's `Code` this code: a per-number failure.
    Status(&'static str),
    /// This HTTP status with an empty body, as a gateway in front of the service would.
    Http(u16),
    /// Success, but only after a minute: past any client timeout.
    Hang,
    /// Headers sent, then the connection breaks before the body completes.
    Drop,
}

/// A request the fake accepted as protocol-correct.
#[derive(Clone, Debug)]
pub struct Received {
    /// `PhoneNumberSet`, exactly as sent.
    pub phone_numbers: Vec<String>,
    /// `TemplateParamSet`.
    pub template_params: Vec<String>,
    /// `TemplateId`.
    pub template_id: String,
    /// `SignName`, if sent.
    pub sign_name: Option<String>,
    /// `SessionContext`, if sent: the client's job id.
    pub session_context: Option<String>,
    /// `X-TC-Region`.
    pub region: String,
    /// `SignedHeaders` of `Authorization`.
    pub signed_headers: String,
    /// What the fake answered: `Ok`, the scripted code, `http <status>`, `hang` or `drop`.
    pub reply: String,
    /// The `SerialNo` returned for the first number, on success.
    pub serial_no: Option<String>,
}

#[derive(Default)]
struct FakeState {
    receipts: crate::receipt_push::Pusher,
    script: Mutex<VecDeque<Reply>>,
    latency: Mutex<Duration>,
    received: Mutex<Vec<Received>>,
    violations: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
}

/// A running fake.
#[derive(Clone)]
pub struct TencentFake {
    /// `http://127.0.0.1:<port>`: the `TENCENT_BASE_URL` to use.
    pub base_url: String,
    state: Arc<FakeState>,
}

impl TencentFake {
    /// Delivery reports: off until a target is set; then each accepted message is reported
    /// there, in this provider's push format, a moment after the accept.
    pub fn receipts(&self) -> &crate::receipt_push::Pusher {
        &self.state.receipts
    }

    /// Starts the fake on a random port; it lives as long as the test's runtime.
    pub async fn start() -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr: SocketAddr = listener.local_addr()?;
        let state = Arc::new(FakeState::default());
        let app = Router::new()
            .route("/", post(send_sms))
            .fallback(elsewhere)
            .method_not_allowed_fallback(elsewhere)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base_url: format!("http://{addr}"), state })
    }

    /// Provider settings pointing at this fake, with the credentials it accepts.
    pub fn settings(&self) -> TencentSettings {
        TencentSettings {
            base_url: self.base_url.clone(),
            secret_id: SECRET_ID.into(),
            secret_key: SECRET_KEY.into(),
            sms_sdk_app_id: SMS_SDK_APP_ID.into(),
            sign_name: SIGN_NAME.into(),
            template_id: TEMPLATE_ID.into(),
            region: REGION.into(),
            countries: Countries::Codes(vec![86]),
        }
    }

    /// The `TENCENT_*` environment variables pointing a worker at this fake.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("TENCENT_BASE_URL", self.base_url.as_str()),
            ("TENCENT_SECRET_ID", SECRET_ID),
            ("TENCENT_SECRET_KEY", SECRET_KEY),
            ("TENCENT_SMS_SDK_APP_ID", SMS_SDK_APP_ID),
            ("TENCENT_SIGN_NAME", SIGN_NAME),
            ("TENCENT_TEMPLATE_ID", TEMPLATE_ID),
            ("TENCENT_REGION", REGION),
            ("TENCENT_COUNTRIES", "86"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Answers the next protocol-correct requests with `replies`, in order; then success again.
    pub fn script(&self, replies: impl IntoIterator<Item = Reply>) {
        if let Ok(mut script) = self.state.script.lock() {
            script.extend(replies);
        }
    }

    /// Waits this long before answering each request.
    pub fn set_latency(&self, latency: Duration) {
        if let Ok(mut l) = self.state.latency.lock() {
            *l = latency;
        }
    }

    /// Protocol-correct requests received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().map(|r| r.clone()).unwrap_or_default()
    }

    /// How many protocol-correct requests were received (without copying them).
    pub fn received_count(&self) -> usize {
        self.state.received.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Requests received for the E.164 number `phone`.
    pub fn received_for(&self, phone: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.phone_numbers.iter().any(|p| p == phone)).collect()
    }

    /// Requests that broke the protocol, each as `<error code answered>: <what was wrong>`.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }
}

/// A request the service refuses: the code and message it answers, and for
/// [`TencentFake::violations`] what exactly was wrong.
struct Fault {
    code: &'static str,
    message: String,
    why: String,
}

fn fault(code: &'static str, why: impl Into<String>) -> Fault {
    let why = why.into();
    // The service's own wording for authentication failures; details only in `violations`.
    let message = match code {
        "AuthFailure.SignatureFailure" => {
            "The provided credentials could not be validated. Please check your signature is correct.".to_owned()
        }
        "AuthFailure.SignatureExpire" => {
            "Signature expired. Timestamp and server time cannot differ by more than five minutes.".to_owned()
        }
        "AuthFailure.SecretIdNotFound" => {
            "The SecretId is not found, please ensure that your SecretId is correct.".into()
        }
        "AuthFailure.InvalidAuthorization" => "The Authorization header is invalid.".into(),
        _ => why.clone(),
    };
    Fault { code, message, why }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string()
}

/// HTTP 200 `{"Response":{"Error":…,"RequestId":…}}`, as the service answers every error.
fn error_response(code: &str, message: &str) -> Response {
    Json(json!({"Response": {"Error": {"Code": code, "Message": message}, "RequestId": request_id()}})).into_response()
}

/// What the headers and `Authorization` said, once verified.
struct Verified {
    region: String,
    signed_headers: String,
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, Fault> {
    match headers.get(name) {
        None => Ok(None),
        Some(value) => {
            value.to_str().map(Some).map_err(|_| fault("InvalidParameter", format!("header {name} is not ASCII")))
        }
    }
}

fn required<'h>(headers: &'h HeaderMap, name: &str) -> Result<&'h str, Fault> {
    header(headers, name)?.ok_or_else(|| fault("MissingParameter", format!("the request is missing header {name}")))
}

/// The common parameters and the signature, in the service's order.
fn verify(headers: &HeaderMap, body: &[u8], now: DateTime<Utc>) -> Result<Verified, Fault> {
    let content_type = required(headers, "content-type")?;
    let media_type = content_type.split(';').next().unwrap_or("").trim();
    if !media_type.eq_ignore_ascii_case("application/json") {
        return Err(fault(
            "InvalidParameter",
            format!("Content-Type {content_type:?}: TC3 POST takes application/json"),
        ));
    }
    let action = required(headers, "x-tc-action")?;
    if action != "SendSms" {
        return Err(fault("InvalidAction", format!("X-TC-Action {action:?} does not exist")));
    }
    let version = required(headers, "x-tc-version")?;
    if version != "2021-01-11" {
        return Err(fault("NoSuchVersion", format!("X-TC-Version {version:?} does not exist")));
    }
    let region = required(headers, "x-tc-region")?;
    if !REGIONS.contains(&region) {
        return Err(fault("UnsupportedRegion", format!("X-TC-Region {region:?} is not served")));
    }
    let timestamp = required(headers, "x-tc-timestamp")?;
    let timestamp: i64 = timestamp
        .parse()
        .map_err(|_| fault("InvalidParameter", format!("X-TC-Timestamp {timestamp:?} is not unix seconds")))?;

    let authorization = header(headers, "authorization")?
        .ok_or_else(|| fault("AuthFailure.InvalidAuthorization", "no Authorization header"))?;
    let auth = parse_authorization(authorization)?;
    if auth.secret_id != SECRET_ID {
        return Err(fault("AuthFailure.SecretIdNotFound", format!("unknown SecretId {:?}", auth.secret_id)));
    }
    if (now.timestamp() - timestamp).abs() > WINDOW_SECS {
        return Err(fault(
            "AuthFailure.SignatureExpire",
            format!("X-TC-Timestamp {timestamp} is more than {WINDOW_SECS} s from now ({})", now.timestamp()),
        ));
    }
    let utc_date = DateTime::from_timestamp(timestamp, 0).map(|t| t.format("%Y-%m-%d").to_string());
    if utc_date.as_deref() != Some(auth.date) {
        return Err(fault(
            "AuthFailure.SignatureFailure",
            format!("credential date {} is not the UTC date of X-TC-Timestamp {timestamp} ({utc_date:?})", auth.date),
        ));
    }
    let mut canonical_headers = String::new();
    for name in &auth.signed_headers {
        let value = header(headers, name)?.ok_or_else(|| {
            fault("AuthFailure.InvalidAuthorization", format!("signed header {name} is not in the request"))
        })?;
        canonical_headers.push_str(&format!("{name}:{}\n", value.trim().to_lowercase()));
    }
    let signed_headers = auth.signed_headers.join(";");
    let canonical_request = format!("POST\n/\n\n{canonical_headers}\n{signed_headers}\n{}", hex(&Sha256::digest(body)));
    let scope = format!("{}/sms/tc3_request", auth.date);
    let string_to_sign =
        format!("TC3-HMAC-SHA256\n{timestamp}\n{scope}\n{}", hex(&Sha256::digest(canonical_request.as_bytes())));
    let key = hmac(&hmac(&hmac(format!("TC3{SECRET_KEY}").as_bytes(), auth.date.as_bytes()), b"sms"), b"tc3_request");
    let expected = hex(&hmac(&key, string_to_sign.as_bytes()));
    if auth.signature != expected {
        return Err(fault(
            "AuthFailure.SignatureFailure",
            format!("signature does not match; canonical request was {canonical_request:?}"),
        ));
    }
    Ok(Verified { region: region.to_owned(), signed_headers })
}

struct Authorization<'a> {
    secret_id: &'a str,
    date: &'a str,
    signed_headers: Vec<&'a str>,
    signature: &'a str,
}

/// `TC3-HMAC-SHA256 Credential=<id>/<date>/sms/tc3_request, SignedHeaders=<a;b>, Signature=<hex>`.
fn parse_authorization(value: &str) -> Result<Authorization<'_>, Fault> {
    let invalid = |why: String| fault("AuthFailure.InvalidAuthorization", why);
    let rest = value
        .strip_prefix("TC3-HMAC-SHA256 ")
        .ok_or_else(|| invalid(format!("Authorization {value:?} is not TC3-HMAC-SHA256")))?;
    let (mut credential, mut signed_headers, mut signature) = (None, None, None);
    for part in rest.split(',').map(str::trim) {
        match part.split_once('=') {
            Some(("Credential", v)) => credential = Some(v),
            Some(("SignedHeaders", v)) => signed_headers = Some(v),
            Some(("Signature", v)) => signature = Some(v),
            _ => return Err(invalid(format!("Authorization part {part:?} is unknown"))),
        }
    }
    let (Some(credential), Some(signed_headers), Some(signature)) = (credential, signed_headers, signature) else {
        return Err(invalid("Authorization lacks Credential, SignedHeaders or Signature".into()));
    };
    let parts: Vec<&str> = credential.split('/').collect();
    let [secret_id, date, service, terminator] = parts.as_slice() else {
        return Err(invalid(format!("Credential {credential:?} is not id/date/service/tc3_request")));
    };
    if *service != "sms" || *terminator != "tc3_request" {
        return Err(invalid(format!("Credential scope {credential:?} is not <date>/sms/tc3_request")));
    }
    let signed: Vec<&str> = signed_headers.split(';').collect();
    let lower_sorted_unique = signed.iter().all(|h| !h.is_empty() && *h == h.to_ascii_lowercase())
        && signed.windows(2).all(|w| matches!(w, [a, b] if a < b));
    if !lower_sorted_unique || !signed.contains(&"content-type") || !signed.contains(&"host") {
        return Err(invalid(format!(
            "SignedHeaders {signed_headers:?} must be lower-case, sorted and include content-type and host"
        )));
    }
    Ok(Authorization { secret_id, date, signed_headers: signed, signature })
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    match Hmac::<Sha256>::new_from_slice(key) {
        Ok(mut mac) => {
            mac.update(data);
            mac.finalize().into_bytes().to_vec()
        }
        Err(_) => Vec::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The body's fields, once checked.
struct SendRequest {
    phone_numbers: Vec<String>,
    template_params: Vec<String>,
    template_id: String,
    sign_name: Option<String>,
    session_context: Option<String>,
}

fn strings(body: &Map<String, Value>, field: &str) -> Result<Option<Vec<String>>, Fault> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::Array(items)) => items
            .iter()
            .map(|i| i.as_str().map(str::to_owned))
            .collect::<Option<Vec<_>>>()
            .map(Some)
            .ok_or_else(|| fault("InvalidParameter", format!("{field} must be an array of strings"))),
        Some(other) => Err(fault("InvalidParameter", format!("{field} must be an array of strings, not {other}"))),
    }
}

fn string(body: &Map<String, Value>, field: &str) -> Result<Option<String>, Fault> {
    match body.get(field) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s.clone())),
        Some(other) => Err(fault("InvalidParameter", format!("{field} must be a string, not {other}"))),
    }
}

fn check_body(body: &[u8]) -> Result<SendRequest, Fault> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| fault("FailedOperation.JsonParseFail", format!("body: {e}")))?;
    let Value::Object(body) = value else {
        return Err(fault("FailedOperation.JsonParseFail", "body is not a JSON object"));
    };
    if let Some(unknown) = body.keys().find(|k| !FIELDS.contains(&k.as_str())) {
        return Err(fault("UnknownParameter", format!("the parameter {unknown} is not recognized")));
    }
    let missing = |field: &str| fault("MissingParameter", format!("the request is missing {field}"));
    let phone_numbers = strings(&body, "PhoneNumberSet")?.ok_or_else(|| missing("PhoneNumberSet"))?;
    if phone_numbers.is_empty() {
        return Err(fault("MissingParameter.EmptyPhoneNumberSet", "PhoneNumberSet is empty"));
    }
    if phone_numbers.len() > 200 {
        return Err(fault("LimitExceeded.PhoneNumberCountLimit", "more than 200 numbers"));
    }
    let app_id = string(&body, "SmsSdkAppId")?.ok_or_else(|| missing("SmsSdkAppId"))?;
    if app_id != SMS_SDK_APP_ID {
        return Err(fault("InvalidParameterValue.SdkAppIdNotExist", format!("SmsSdkAppId {app_id:?} does not exist")));
    }
    let template_id = string(&body, "TemplateId")?.ok_or_else(|| missing("TemplateId"))?;
    if template_id != TEMPLATE_ID {
        return Err(fault(
            "FailedOperation.TemplateIncorrectOrUnapproved",
            format!("template {template_id:?} is not approved"),
        ));
    }
    let template_params = strings(&body, "TemplateParamSet")?.unwrap_or_default();
    if template_params.len() != 2 {
        return Err(fault(
            "FailedOperation.TemplateParamSetNotMatchApprovedTemplate",
            format!("template {TEMPLATE_ID} has 2 variables, got {template_params:?}"),
        ));
    }
    if let Some(bad) = template_params.iter().find(|p| p.len() > 6 || !p.bytes().all(|b| b.is_ascii_digit())) {
        return Err(fault(
            "InvalidParameterValue.TemplateParameterFormatError",
            format!("verification template variables are 0-6 digits, got {bad:?}"),
        ));
    }
    let sign_name = string(&body, "SignName")?;
    let session_context = string(&body, "SessionContext")?;
    if session_context.as_ref().is_some_and(|s| s.len() >= 512) {
        return Err(fault("InvalidParameter", "SessionContext is 512 bytes or longer"));
    }
    string(&body, "ExtendCode")?;
    string(&body, "SenderId")?;
    Ok(SendRequest { phone_numbers, template_params, template_id, sign_name, session_context })
}

/// `+` then 7 to 15 digits, the first not 0.
fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (7..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
    })
}

/// `IsoCode` of an E.164 number (`DEF` when the fake does not know the country).
fn iso_code(number: &str) -> &'static str {
    const CODES: [(&str, &str); 9] = [
        ("+852", "HK"),
        ("+853", "MO"),
        ("+886", "TW"),
        ("+86", "CN"),
        ("+81", "JP"),
        ("+65", "SG"),
        ("+44", "GB"),
        ("+1", "US"),
        ("+7", "RU"),
    ];
    CODES.iter().find(|(prefix, _)| number.starts_with(prefix)).map_or("DEF", |(_, iso)| iso)
}

fn is_mainland(number: &str) -> bool {
    iso_code(number) == "CN"
}

/// `5000:` and 28 digits, the form the service's serial numbers take.
fn serial_no() -> String {
    format!("5000:{:028}", uuid::Uuid::new_v4().as_u128() % 10u128.pow(28))
}

/// One `SendStatusSet` entry.
fn status_entry(number: &str, code: &str, message: &str, session: Option<&str>) -> (Value, Option<String>) {
    let serial = (code == "Ok").then(serial_no);
    let entry = json!({
        "SerialNo": serial.clone().unwrap_or_default(),
        "PhoneNumber": number,
        "Fee": u8::from(code == "Ok"),
        "SessionContext": session.unwrap_or(""),
        "Code": code,
        "Message": message,
        "IsoCode": iso_code(number),
    });
    (entry, serial)
}

fn send_status_response(entries: Vec<Value>) -> Response {
    Json(json!({"Response": {"SendStatusSet": entries, "RequestId": request_id()}})).into_response()
}

fn record_violation(state: &FakeState, code: &str, why: &str) {
    if let Ok(mut v) = state.violations.lock() {
        v.push(format!("{code}: {why}"));
    }
}

async fn send_sms(State(state): State<Arc<FakeState>>, headers: HeaderMap, body: Bytes) -> Response {
    let _in_flight = InFlight::enter(&state);
    let (response, delay) = answer(&state, &headers, &body);
    let latency = state.latency.lock().map(|l| *l).unwrap_or_default();
    tokio::time::sleep(latency + delay).await;
    response
}

/// Anything but `POST /`: not part of what the client may send.
async fn elsewhere(State(state): State<Arc<FakeState>>, method: Method, uri: Uri) -> Response {
    let why = format!("{method} {uri}: SendSms is POST /");
    if method == Method::GET || method == Method::POST {
        record_violation(&state, "http 404", &why);
        StatusCode::NOT_FOUND.into_response()
    } else {
        record_violation(&state, "UnsupportedProtocol", &why);
        error_response("UnsupportedProtocol", "HTTP(S) request protocol error; only GET and POST are supported.")
    }
}

/// Counts a request in flight until its handler finishes or is dropped (client gone).
struct InFlight(Arc<FakeState>);

impl InFlight {
    fn enter(state: &Arc<FakeState>) -> Self {
        state.in_flight.fetch_add(1, Ordering::SeqCst);
        Self(state.clone())
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

/// The answer, and how long to hold it back beyond the latency.
fn answer(state: &FakeState, headers: &HeaderMap, body: &[u8]) -> (Response, Duration) {
    let checked = verify(headers, body, Utc::now()).and_then(|v| Ok((v, check_body(body)?)));
    let (verified, request) = match checked {
        Ok(checked) => checked,
        Err(f) => {
            record_violation(state, f.code, &f.why);
            return (error_response(f.code, &f.message), Duration::ZERO);
        }
    };
    let session = request.session_context.as_deref();
    // Per-number checks: the request went through, the malformed numbers did not.
    if request.phone_numbers.iter().any(|n| !is_e164(n)) {
        let entries = request
            .phone_numbers
            .iter()
            .map(|n| match is_e164(n) {
                true => status_entry(n, "Ok", "send success", session).0,
                false => {
                    status_entry(n, "InvalidParameterValue.IncorrectPhoneNumber", "incorrect number format", session).0
                }
            })
            .collect();
        let bad: Vec<&String> = request.phone_numbers.iter().filter(|n| !is_e164(n)).collect();
        record_violation(state, "InvalidParameterValue.IncorrectPhoneNumber", &format!("not E.164: {bad:?}"));
        return (send_status_response(entries), Duration::ZERO);
    }
    let mainland = request.phone_numbers.iter().filter(|n| is_mainland(n)).count();
    if mainland != 0 && mainland != request.phone_numbers.len() {
        let f = fault("UnsupportedOperation.ContainDomesticAndInternationalPhoneNumber", "mainland and other numbers");
        record_violation(state, f.code, &f.why);
        return (error_response(f.code, &f.message), Duration::ZERO);
    }
    if mainland != 0 && request.sign_name.as_deref() != Some(SIGN_NAME) {
        let f = fault(
            "FailedOperation.SignatureIncorrectOrUnapproved",
            format!("mainland SMS needs the approved SignName, got {:?}", request.sign_name),
        );
        record_violation(state, f.code, &f.why);
        return (error_response(f.code, &f.message), Duration::ZERO);
    }

    let mut received = Received {
        phone_numbers: request.phone_numbers.clone(),
        template_params: request.template_params,
        template_id: request.template_id,
        sign_name: request.sign_name,
        session_context: request.session_context.clone(),
        region: verified.region,
        signed_headers: verified.signed_headers,
        reply: String::new(),
        serial_no: None,
    };
    let reply = state.script.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(Reply::Ok);
    let mut delay = Duration::ZERO;
    let all = |code: &str, message: &str| -> (Vec<Value>, Option<String>) {
        let entries: Vec<(Value, Option<String>)> =
            request.phone_numbers.iter().map(|n| status_entry(n, code, message, session)).collect();
        let first_serial = entries.first().and_then(|(_, s)| s.clone());
        (entries.into_iter().map(|(e, _)| e).collect(), first_serial)
    };
    let response = match reply {
        Reply::Ok | Reply::Hang => {
            if matches!(reply, Reply::Hang) {
                received.reply = "hang".into();
                delay = HANG;
            } else {
                received.reply = "Ok".into();
            }
            let (entries, serial) = all("Ok", "send success");
            received.serial_no = serial;
            send_status_response(entries)
        }
        Reply::Error(code) => {
            received.reply = code.into();
            error_response(code, "scripted failure")
        }
        Reply::Status(code) => {
            received.reply = code.into();
            send_status_response(all(code, "scripted failure").0)
        }
        Reply::Http(code) => {
            received.reply = format!("http {code}");
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
        Reply::Drop => {
            received.reply = "drop".into();
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped"))
            });
            Response::new(Body::from_stream(broken))
        }
    };
    if let (Some(sid), Some(url), Some(mobile)) =
        (received.serial_no.clone(), state.receipts.target(), received.phone_numbers.first())
    {
        let body = Value::Array(vec![report(&sid, mobile, &state.receipts.outcome())]);
        state.receipts.send_later(sid, |http| http.post(url).json(&body));
    }
    if let Ok(mut r) = state.received.lock() {
        r.push(received);
    }
    (response, delay)
}

/// One status-callback entry on `sid` to `phone` (E.164, as sent; pushed inside a JSON array).
pub fn report(sid: &str, phone: &str, outcome: &crate::receipt_push::Outcome) -> Value {
    let (nation, mobile) = match phone.strip_prefix("+86") {
        Some(national) => ("86", national),
        None => ("", phone),
    };
    let (status, code, description) = match outcome {
        crate::receipt_push::Outcome::Delivered => ("SUCCESS", "DELIVRD", "用户短信送达成功"),
        crate::receipt_push::Outcome::Undelivered(code) => ("FAIL", *code, "用户短信接收失败"),
    };
    json!({
        "user_receive_time": crate::receipt_push::beijing_now("%Y-%m-%d %H:%M:%S"), "nationcode": nation,
        "mobile": mobile, "report_status": status, "errmsg": code, "description": description, "sid": sid
    })
}
