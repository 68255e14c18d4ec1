//! A local stand-in for Alibaba Cloud Dysmsapi `SendSms` that checks V3 (`ACS3-HMAC-SHA256`)
//! signing from what it received, as the real gateway does, and answers with the real error
//! bodies. A refused request is listed in [`AliyunFake::violations`]; replies can be scripted.

use std::{
    collections::{BTreeMap, HashSet, VecDeque},
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
    extract::{RawQuery, State},
    http::{HeaderMap, Method, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use chrono::{NaiveDateTime, Utc};
use futures_util::StreamExt;
use hmac::{Hmac, Mac};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use shared::config::{AliyunSettings, Countries};

/// The AccessKey id the fake knows.
pub const ACCESS_KEY_ID: &str = "LTAI5tFakeAccessKeyId7Q";
/// Its secret.
pub const ACCESS_KEY_SECRET: &str = "fakeAccessKeySecretForLoopbackOnly";
/// The approved signature (签名): UTF-8, so that its encoding is exercised.
pub const SIGN_NAME: &str = "阿里云短信测试";
/// The approved template, with one variable `${code}`.
pub const TEMPLATE_CODE: &str = "SMS_154950909";
/// `HostId` of gateway error bodies.
pub const HOST_ID: &str = "dysmsapi.aliyuncs.com";
/// How far `x-acs-date` may be from the fake's clock.
pub const MAX_SKEW_SECS: i64 = 15 * 60;

const RFC3986: &AsciiSet = &NON_ALPHANUMERIC.remove(b'-').remove(b'_').remove(b'.').remove(b'~');

/// One scripted answer to a protocol-correct request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 200 with this `Code` (`"OK"` is success, with a fresh `BizId`).
    Code(&'static str),
    /// A gateway refusal: this HTTP status, with this `Code` in the gateway's error body.
    Gateway(u16, &'static str),
    /// This HTTP status with an empty body.
    Http(u16),
    /// Waits this long, then answers success (a client with a shorter timeout gives up).
    Hang(Duration),
    /// Headers sent, then the connection breaks before the body completes.
    Drop,
}

/// A request the fake accepted as protocol-correct.
#[derive(Clone, Debug)]
pub struct Received {
    /// `PhoneNumbers`, decoded, exactly as sent.
    pub phone_numbers: String,
    /// `SignName`, decoded.
    pub sign_name: String,
    /// `TemplateCode`.
    pub template_code: String,
    /// `TemplateParam`, parsed.
    pub template_param: BTreeMap<String, String>,
    /// `OutId`, if sent.
    pub out_id: Option<String>,
    /// `x-acs-signature-nonce`.
    pub nonce: String,
    /// What the fake answered: the `Code`, or `http <status>`, `hang`, `drop`.
    pub reply: String,
    /// The `BizId` returned, on success.
    pub biz_id: Option<String>,
}

#[derive(Default)]
struct FakeState {
    receipts: crate::receipt_push::Pusher,
    script: Mutex<VecDeque<Reply>>,
    latency: Mutex<Duration>,
    received: Mutex<Vec<Received>>,
    violations: Mutex<Vec<String>>,
    nonces: Mutex<HashSet<String>>,
    in_flight: AtomicUsize,
}

/// A running fake.
#[derive(Clone)]
pub struct AliyunFake {
    /// `http://127.0.0.1:<port>`: the `ALIYUN_BASE_URL` to use.
    pub base_url: String,
    state: Arc<FakeState>,
}

impl AliyunFake {
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
        let app = Router::new().route("/", post(send_sms)).fallback(elsewhere).with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base_url: format!("http://{addr}"), state })
    }

    /// Provider settings pointing at this fake, with the credentials it accepts.
    pub fn settings(&self) -> AliyunSettings {
        AliyunSettings {
            base_url: self.base_url.clone(),
            access_key_id: ACCESS_KEY_ID.into(),
            access_key_secret: ACCESS_KEY_SECRET.into(),
            sign_name: SIGN_NAME.into(),
            template_code: TEMPLATE_CODE.into(),
            countries: Countries::Codes(vec![86]),
        }
    }

    /// The `ALIYUN_*` environment variables pointing a worker at this fake.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("ALIYUN_BASE_URL", self.base_url.as_str()),
            ("ALIYUN_ACCESS_KEY_ID", ACCESS_KEY_ID),
            ("ALIYUN_ACCESS_KEY_SECRET", ACCESS_KEY_SECRET),
            ("ALIYUN_SIGN_NAME", SIGN_NAME),
            ("ALIYUN_TEMPLATE_CODE", TEMPLATE_CODE),
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

    /// How many protocol-correct requests were received.
    pub fn received_count(&self) -> usize {
        self.state.received.lock().map(|r| r.len()).unwrap_or(0)
    }

    /// Requests received for `phone_numbers` (in the form sent).
    pub fn received_for(&self, phone_numbers: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.phone_numbers == phone_numbers).collect()
    }

    /// Refused requests, each as `<Code>: <what was wrong>`.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }
}

/// Why a request is refused: the real answer, and what the test log should say.
struct Refusal {
    /// 200 for business refusals (`isv.*`), 4xx for the gateway's.
    status: StatusCode,
    code: &'static str,
    message: String,
    why: String,
}

fn gateway(status: StatusCode, code: &'static str, message: &str, why: impl Into<String>) -> Refusal {
    Refusal { status, code, message: message.to_owned(), why: why.into() }
}

fn business(code: &'static str, message: &str, why: impl Into<String>) -> Refusal {
    Refusal { status: StatusCode::OK, code, message: message.to_owned(), why: why.into() }
}

fn request_id() -> String {
    uuid::Uuid::new_v4().to_string().to_uppercase()
}

/// The gateway's error body: `RequestId`, `HostId`, `Code`, `Message`, `Recommend`.
fn gateway_body(status: StatusCode, code: &str, message: &str) -> Response {
    let id = request_id();
    let recommend = format!("https://api.aliyun.com/troubleshoot?q={code}&product=Dysmsapi&requestId={id}");
    let body = json!({"RequestId": id, "HostId": HOST_ID, "Code": code, "Message": message, "Recommend": recommend});
    (status, Json(body)).into_response()
}

/// A business answer (HTTP 200): `RequestId`, `Code`, `Message`, and `BizId` on success.
fn business_body(code: &str, message: &str, biz_id: Option<&str>) -> Response {
    let mut body = json!({"RequestId": request_id(), "Code": code, "Message": message});
    if let (Some(id), Some(map)) = (biz_id, body.as_object_mut()) {
        map.insert("BizId".into(), Value::String(id.to_owned()));
    }
    Json(body).into_response()
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        if self.status == StatusCode::OK {
            business_body(self.code, &self.message, None)
        } else {
            gateway_body(self.status, self.code, &self.message)
        }
    }
}

/// The real messages of the codes a test may script.
fn message_of(code: &str) -> &'static str {
    match code {
        "OK" => "OK",
        "isv.BUSINESS_LIMIT_CONTROL" => "触发分钟级流控Permits:1",
        "isv.DAY_LIMIT_CONTROL" => "触发日发送限额",
        "isv.MOBILE_NUMBER_ILLEGAL" => "非法手机号",
        "isv.MOBILE_COUNT_OVER_LIMIT" => "手机号码数量超过限制",
        "isv.BLACK_KEY_CONTROL_LIMIT" => "黑名单管控",
        "isv.AMOUNT_NOT_ENOUGH" => "账户余额不足",
        "isv.OUT_OF_SERVICE" => "业务停机",
        "isv.SMS_SIGNATURE_ILLEGAL" => "该账号下找不到对应签名",
        "isv.SMS_TEMPLATE_ILLEGAL" => "该账号下找不到对应模板",
        "isp.RAM_PERMISSION_DENY" => "RAM权限DENY",
        "isp.SYSTEM_ERROR" => "系统错误",
        "Throttling.User" => "Request was denied due to user flow control.",
        "SignatureDoesNotMatch" => "Specified signature is not matched with our calculation.",
        "InvalidAccessKeyId.NotFound" => "Specified access key is not found.",
        "SignatureNonceUsed" => "Specified signature nonce was used already.",
        "InvalidTimeStamp.Expired" => "Specified time stamp or date value is expired.",
        "ServiceUnavailable" => "The request has failed due to a temporary failure of the server.",
        "InternalError" => "The request processing has failed due to some unknown error, exception or failure.",
        _ => "scripted failure",
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn encode(s: &str) -> String {
    utf8_percent_encode(s, RFC3986).to_string()
}

/// The three parts of `ACS3-HMAC-SHA256 Credential=…,SignedHeaders=…,Signature=…`.
struct Authorization<'a> {
    credential: &'a str,
    signed_headers: &'a str,
    signature: &'a str,
}

fn parse_authorization(value: &str) -> Option<Authorization<'_>> {
    let rest = value.strip_prefix("ACS3-HMAC-SHA256 ")?;
    let mut parts = rest.split(',');
    let credential = parts.next()?.strip_prefix("Credential=")?;
    let signed_headers = parts.next()?.strip_prefix("SignedHeaders=")?;
    let signature = parts.next()?.strip_prefix("Signature=")?;
    if parts.next().is_some() || credential.is_empty() || signed_headers.is_empty() || signature.is_empty() {
        return None;
    }
    Some(Authorization { credential, signed_headers, signature })
}

/// The query's parameters, percent-decoded as UTF-8 (`+` is a literal plus).
fn decode_query(raw: &str) -> Result<Vec<(String, String)>, String> {
    raw.split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| {
            let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
            let decode = |s: &str| {
                percent_decode_str(s).decode_utf8().map(|c| c.into_owned()).map_err(|e| format!("{s:?}: {e}"))
            };
            Ok((decode(name)?, decode(value)?))
        })
        .collect()
}

/// The string to sign, recomputed from the received query, the headers named in
/// `SignedHeaders` and the hash of the received body.
fn server_string_to_sign(params: &[(String, String)], headers: &HeaderMap, signed: &[&str], body: &[u8]) -> String {
    let mut pairs: Vec<(String, String)> = params.iter().map(|(k, v)| (encode(k), encode(v))).collect();
    pairs.sort();
    let query = pairs.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join("&");
    let canonical_headers: String = signed
        .iter()
        .map(|name| {
            let value = headers.get(*name).and_then(|v| v.to_str().ok()).unwrap_or("").trim();
            format!("{name}:{value}\n")
        })
        .collect();
    let canonical =
        format!("POST\n/\n{query}\n{canonical_headers}\n{}\n{}", signed.join(";"), hex(&Sha256::digest(body)));
    format!("ACS3-HMAC-SHA256\n{}", hex(&Sha256::digest(canonical.as_bytes())))
}

fn expected_signature(string_to_sign: &str) -> String {
    match Hmac::<Sha256>::new_from_slice(ACCESS_KEY_SECRET.as_bytes()) {
        Ok(mut mac) => {
            mac.update(string_to_sign.as_bytes());
            hex(&mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}

/// Whether `number` is one of the documented `PhoneNumbers` forms: mainland 11 digits
/// (optionally after `+86`, `0086` or `86`), or calling code + number, digits only.
fn valid_number(number: &str) -> bool {
    let mainland = number.strip_prefix("+86").or_else(|| number.strip_prefix("0086")).unwrap_or(number);
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if mainland.len() == 11 && mainland.starts_with('1') && digits(mainland) {
        return true;
    }
    digits(number) && (7..=15).contains(&number.len()) && !number.starts_with('0')
}

/// Checks a request the way the gateway and then the SMS service do; `Ok` is a request
/// worth answering. A good signature uses up its nonce.
fn check(state: &FakeState, raw_query: &str, headers: &HeaderMap, body: &[u8]) -> Result<Received, Refusal> {
    let bad = StatusCode::BAD_REQUEST;
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let incomplete = |why: String| {
        gateway(bad, "IncompleteSignature", "The request signature does not conform to Aliyun standards.", why)
    };

    let auth = header("authorization").ok_or_else(|| incomplete("no Authorization header".into()))?;
    let auth = parse_authorization(auth).ok_or_else(|| incomplete(format!("Authorization {auth:?} is not V3")))?;

    if header("x-acs-action") != Some("SendSms") {
        let why = format!("x-acs-action {:?}", header("x-acs-action"));
        return Err(gateway(
            StatusCode::NOT_FOUND,
            "InvalidAction.NotFound",
            "Specified api is not found, please check your url and method.",
            why,
        ));
    }
    if header("x-acs-version") != Some("2017-05-25") {
        let why = format!("x-acs-version {:?}", header("x-acs-version"));
        return Err(gateway(bad, "InvalidVersion", "Specified parameter Version is not valid.", why));
    }

    let date = header("x-acs-date").unwrap_or("");
    let at = NaiveDateTime::parse_from_str(date, "%Y-%m-%dT%H:%M:%SZ").map_err(|_| {
        gateway(
            bad,
            "InvalidTimeStamp.Format",
            "Specified time stamp or date value is not well formatted.",
            format!("x-acs-date {date:?} is not yyyy-MM-ddTHH:mm:ssZ"),
        )
    })?;
    let skew = (Utc::now().naive_utc() - at).num_seconds();
    if skew.abs() > MAX_SKEW_SECS {
        return Err(gateway(
            bad,
            "InvalidTimeStamp.Expired",
            message_of("InvalidTimeStamp.Expired"),
            format!("x-acs-date {date} is {skew} s from now"),
        ));
    }

    let nonce = header("x-acs-signature-nonce").filter(|n| !n.is_empty()).ok_or_else(|| {
        gateway(bad, "MissingSignatureNonce", "SignatureNonce is mandatory for this action.", "no nonce")
    })?;
    if state.nonces.lock().map(|n| n.contains(nonce)).unwrap_or(false) {
        let why = format!("nonce {nonce} was used already");
        return Err(gateway(bad, "SignatureNonceUsed", message_of("SignatureNonceUsed"), why));
    }

    if auth.credential != ACCESS_KEY_ID {
        let why = format!("unknown AccessKeyId {:?}", auth.credential);
        let message = message_of("InvalidAccessKeyId.NotFound");
        return Err(gateway(StatusCode::NOT_FOUND, "InvalidAccessKeyId.NotFound", message, why));
    }

    // The signature covers exactly the headers the client listed, which must be lower-case,
    // sorted, present, and include `host` and every `x-acs-*` header sent (and
    // `content-type` when there is one).
    let signed: Vec<&str> = auth.signed_headers.split(';').collect();
    let sorted = signed.windows(2).all(|w| matches!(w, [a, b] if a < b));
    if !sorted || signed.iter().any(|n| n.is_empty() || n.bytes().any(|b| b.is_ascii_uppercase())) {
        return Err(incomplete(format!("SignedHeaders {:?} not lower-case and sorted", auth.signed_headers)));
    }
    if let Some(name) = signed.iter().find(|name| !headers.contains_key(**name)) {
        return Err(incomplete(format!("signed header {name} was not sent")));
    }
    let must_sign = headers
        .keys()
        .map(|name| name.as_str())
        .filter(|name| name.starts_with("x-acs-") || *name == "content-type" || *name == "host");
    for name in must_sign.chain(["host", "x-acs-content-sha256"]) {
        if !signed.contains(&name) {
            return Err(incomplete(format!("{name} is not in SignedHeaders {:?}", auth.signed_headers)));
        }
    }

    let params = decode_query(raw_query)
        .map_err(|e| gateway(bad, "InvalidParameter", "The specified parameter is not valid.", e))?;
    let string_to_sign = server_string_to_sign(&params, headers, &signed, body);
    if auth.signature != expected_signature(&string_to_sign) {
        return Err(gateway(
            bad,
            "SignatureDoesNotMatch",
            &format!("{} server string to sign is:{string_to_sign}", message_of("SignatureDoesNotMatch")),
            "signature does not match",
        ));
    }
    let body_hash = hex(&Sha256::digest(body));
    if header("x-acs-content-sha256") != Some(body_hash.as_str()) {
        let why = format!("x-acs-content-sha256 {:?} is not the body's {body_hash}", header("x-acs-content-sha256"));
        return Err(gateway(bad, "SignatureDoesNotMatch", message_of("SignatureDoesNotMatch"), why));
    }
    if let Ok(mut nonces) = state.nonces.lock() {
        nonces.insert(nonce.to_owned());
    }

    let param = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let required = |name: &'static str, code: &'static str| {
        param(name).ok_or_else(|| gateway(bad, code, &format!("{name} is mandatory for this action."), code))
    };
    let phone_numbers = required("PhoneNumbers", "MissingPhoneNumbers")?;
    let sign_name = required("SignName", "MissingSignName")?;
    let template_code = required("TemplateCode", "MissingTemplateCode")?;

    let numbers: Vec<&str> = phone_numbers.split(',').collect();
    if numbers.len() > 1000 {
        return Err(business("isv.MOBILE_COUNT_OVER_LIMIT", "手机号码数量超过限制", "more than 1000 numbers"));
    }
    if let Some(n) = numbers.iter().find(|n| !valid_number(n)) {
        return Err(business("isv.MOBILE_NUMBER_ILLEGAL", "非法手机号", format!("PhoneNumbers {n:?}")));
    }
    if sign_name != SIGN_NAME {
        return Err(business("isv.SMS_SIGNATURE_ILLEGAL", "该账号下找不到对应签名", format!("SignName {sign_name:?}")));
    }
    if template_code != TEMPLATE_CODE {
        let why = format!("TemplateCode {template_code:?}");
        return Err(business("isv.SMS_TEMPLATE_ILLEGAL", "该账号下找不到对应模板", why));
    }
    let missing_variable = || business("isv.TEMPLATE_MISSING_PARAMETERS", "模板缺少变量", "no ${code} value");
    let raw_param = param("TemplateParam").ok_or_else(missing_variable)?;
    let not_strings = || {
        let why = format!("TemplateParam {raw_param:?} is not a JSON object of strings");
        business("isv.INVALID_JSON_PARAM", "JSON参数不合法，只接受字符串值", why)
    };
    let object = match serde_json::from_str::<Value>(&raw_param) {
        Ok(Value::Object(object)) => object,
        _ => return Err(not_strings()),
    };
    let mut template_param = BTreeMap::new();
    for (name, value) in object {
        let Value::String(value) = value else { return Err(not_strings()) };
        template_param.insert(name, value);
    }
    if !template_param.contains_key("code") {
        return Err(missing_variable());
    }

    Ok(Received {
        phone_numbers,
        sign_name,
        template_code,
        template_param,
        out_id: param("OutId"),
        nonce: nonce.to_owned(),
        reply: String::new(),
        biz_id: None,
    })
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

fn violation(state: &FakeState, text: String) {
    if let Ok(mut v) = state.violations.lock() {
        v.push(text);
    }
}

fn success(received: &mut Received) -> Response {
    let biz_id = format!("{:018}^0", uuid::Uuid::new_v4().as_u128() % 1_000_000_000_000_000_000);
    received.reply = "OK".into();
    received.biz_id = Some(biz_id.clone());
    business_body("OK", "OK", Some(&biz_id))
}

async fn send_sms(
    State(state): State<Arc<FakeState>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    let mut received = match check(&state, query.as_deref().unwrap_or(""), &headers, &body) {
        Ok(received) => received,
        Err(refusal) => {
            violation(&state, format!("{}: {}", refusal.code, refusal.why));
            return refusal.into_response();
        }
    };
    let reply = state.script.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(Reply::Code("OK"));
    let mut hang = Duration::ZERO;
    let response = match reply {
        Reply::Code("OK") => success(&mut received),
        Reply::Code(code) => {
            received.reply = code.into();
            business_body(code, message_of(code), None)
        }
        Reply::Gateway(status, code) => {
            received.reply = code.into();
            gateway_body(StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST), code, message_of(code))
        }
        Reply::Http(status) => {
            received.reply = format!("http {status}");
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
        Reply::Hang(duration) => {
            hang = duration;
            let response = success(&mut received);
            received.reply = "hang".into();
            response
        }
        Reply::Drop => {
            received.reply = "drop".into();
            // Part of a body first, and a pause that lets it go out with the headers: the
            // break comes mid-body.
            let broken = futures_util::stream::iter([Ok(Bytes::from_static(b"{\"RequestId\":"))]).chain(
                futures_util::stream::once(async {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped"))
                }),
            );
            let mut response = Response::new(Body::from_stream(broken));
            response.headers_mut().insert(header::CONTENT_TYPE, header::HeaderValue::from_static("application/json"));
            response
        }
    };
    if let (Some(biz_id), Some(url)) = (received.biz_id.clone(), state.receipts.target()) {
        let body = serde_json::Value::Array(vec![report(&biz_id, &received.phone_numbers, &state.receipts.outcome())]);
        state.receipts.send_later(biz_id, |http| http.post(url).json(&body));
    }
    // Recorded on arrival, as the provider takes a request in when it arrives.
    if let Ok(mut r) = state.received.lock() {
        r.push(received);
    }
    let latency = state.latency.lock().map(|l| *l).unwrap_or_default();
    tokio::time::sleep(latency + hang).await;
    response
}

/// Anything but `POST /`: the SDKs send SendSms as `POST /`, so the client must too.
async fn elsewhere(State(state): State<Arc<FakeState>>, method: Method, uri: Uri) -> Response {
    let why = format!("{method} {}", uri.path());
    violation(&state, format!("InvalidAction.NotFound: {why}"));
    gateway_body(
        StatusCode::NOT_FOUND,
        "InvalidAction.NotFound",
        "Specified api is not found, please check your url and method.",
    )
}

/// One `SmsReport` entry on `biz_id` to `phone_number` (pushed inside a JSON array).
pub fn report(biz_id: &str, phone_number: &str, outcome: &crate::receipt_push::Outcome) -> Value {
    let now = crate::receipt_push::beijing_now("%Y-%m-%d %H:%M:%S");
    let (success, code, message) = match outcome {
        crate::receipt_push::Outcome::Delivered => (true, "DELIVERED", "用户接收成功"),
        crate::receipt_push::Outcome::Undelivered(code) => (false, *code, "用户接收失败"),
    };
    serde_json::json!({
        "phone_number": phone_number, "send_time": now, "report_time": now, "success": success,
        "err_code": code, "err_msg": message, "sms_size": "1", "biz_id": biz_id, "out_id": ""
    })
}
