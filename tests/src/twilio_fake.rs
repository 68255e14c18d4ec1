//! A local stand-in for Twilio's Messages.json (`docs/providers.md`) that checks the real
//! protocol: route and account SID, HTTP Basic auth, form encoding and the message parameters.
//! A request that breaks it gets Twilio's error answer and is listed in [`TwilioFake::violations`].

use std::{
    collections::VecDeque,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{HeaderMap, StatusCode, Uri, header},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{Engine, engine::general_purpose::STANDARD};
use chrono::Utc;
use serde_json::{Value, json};
use shared::config::{Countries, DEFAULT_TEXT_TEMPLATE, TwilioSender, TwilioSettings};

/// The account the fake knows (`AC` + 32 hex).
pub const ACCOUNT_SID: &str = "AC3f1c0e9a7b5d4e2f8a6c4b2d0e9f7a15";
/// Its auth token.
pub const AUTH_TOKEN: &str = "9c4e1b7a2d5f8e0c3b6a9d2f5e8b1c4a";
/// The account's SMS-capable number, the `From` it accepts.
pub const FROM: &str = "+15005550006";
/// The account's Messaging Service, the `MessagingServiceSid` it accepts.
pub const MESSAGING_SERVICE_SID: &str = "MG6b2f0a8d4c1e7f3a9b5d2c8e0f4a6b1d";
/// The longest `Body` Twilio takes, in characters.
pub const MAX_BODY_CHARS: usize = 1600;
/// How long [`Reply::Hang`] keeps a request waiting: longer than any client timeout.
pub const HANG: Duration = Duration::from_secs(120);

/// One scripted answer, given to a protocol-correct request.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 201 with the Message resource (the default).
    Created,
    /// HTTP 201 with the Message resource already `failed` with this `error_code`.
    CreatedFailed(u32),
    /// Twilio's error JSON with this code, at the HTTP status Twilio uses for it.
    Error(u32),
    /// Twilio's error JSON with this code at this HTTP status.
    ErrorAt(u16, u32),
    /// This HTTP status with an empty body.
    Http(u16),
    /// No answer for [`HANG`]: the client's timeout fires first.
    Hang,
    /// The connection closes without an answer (no status line).
    Drop,
}

/// A request the fake accepted as protocol-correct.
#[derive(Clone, Debug)]
pub struct Received {
    /// `To`, exactly as sent.
    pub to: String,
    /// `Body`: the whole message text (Twilio has no template data; the code and the minutes
    /// are in it).
    pub body: String,
    /// `From`, when sent.
    pub from: Option<String>,
    /// `MessagingServiceSid`, when sent.
    pub messaging_service_sid: Option<String>,
    /// `StatusCallback`, when sent.
    pub status_callback: Option<String>,
    /// What the fake answered: `201 queued`, `201 accepted`, `201 failed <code>`, the error
    /// code, `http <status>`, `hang` or `drop`. (Twilio takes no correlation id, so none is
    /// recorded.)
    pub reply: String,
    /// The `sid` returned, on a 201.
    pub message_sid: Option<String>,
}

#[derive(Default)]
struct FakeState {
    receipts: crate::receipt_push::Pusher,
    script: Mutex<VecDeque<Reply>>,
    latency: Mutex<Duration>,
    received: Mutex<Vec<Received>>,
    violations: Mutex<Vec<String>>,
}

impl FakeState {
    fn violation(&self, what: String) {
        if let Ok(mut v) = self.violations.lock() {
            v.push(what);
        }
    }
}

/// A running fake.
#[derive(Clone)]
pub struct TwilioFake {
    /// `http://127.0.0.1:<port>`: the `TWILIO_BASE_URL` to use.
    pub base_url: String,
    state: Arc<FakeState>,
}

impl TwilioFake {
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
            .route("/2010-04-01/Accounts/{sid}/Messages.json", post(create_message))
            .fallback(not_found)
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base_url: format!("http://{addr}"), state })
    }

    /// Provider settings pointing at this fake, with the right credentials, sending from
    /// [`FROM`] with the default text, without a status callback, to every country.
    pub fn settings(&self) -> TwilioSettings {
        TwilioSettings {
            base_url: self.base_url.clone(),
            account_sid: ACCOUNT_SID.into(),
            auth_token: AUTH_TOKEN.into(),
            sender: TwilioSender::From(FROM.into()),
            text_template: DEFAULT_TEXT_TEMPLATE.into(),
            status_callback: None,
            countries: Countries::Any,
        }
    }

    /// The `TWILIO_*` environment variables pointing a worker process at this fake.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("TWILIO_BASE_URL", self.base_url.as_str()),
            ("TWILIO_ACCOUNT_SID", ACCOUNT_SID),
            ("TWILIO_AUTH_TOKEN", AUTH_TOKEN),
            ("TWILIO_FROM", FROM),
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

    /// Requests received for `to` (E.164).
    pub fn received_for(&self, to: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.to == to).collect()
    }

    /// What was wrong with the requests that broke the protocol, and the parameters Twilio
    /// would have ignored silently (a misspelt `StatusCallback` means no receipt ever comes).
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().map(|v| v.clone()).unwrap_or_default()
    }
}

/// Twilio's error answer.
struct Refusal {
    http: u16,
    code: u32,
    message: String,
}

fn refusal(http: u16, code: u32, message: impl Into<String>) -> Refusal {
    Refusal { http, code, message: message.into() }
}

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        let status = StatusCode::from_u16(self.http).unwrap_or(StatusCode::BAD_REQUEST);
        let body = json!({
            "code": self.code,
            "message": self.message,
            "more_info": format!("https://www.twilio.com/docs/errors/{}", self.code),
            "status": self.http,
        });
        let mut response = (status, Json(body)).into_response();
        if self.http == 401 {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Basic realm=\"Twilio API\""));
        }
        response
    }
}

/// The HTTP status Twilio answers a code with (`docs/providers.md` 4.2; 14107 at 400 is a
/// guess, the sources give none).
fn http_of(code: u32) -> u16 {
    match code {
        20003 => 401,
        20404 => 404,
        20429 => 429,
        20500 => 500,
        20503 => 503,
        _ => 400,
    }
}

async fn not_found(uri: Uri, state: State<Arc<FakeState>>) -> Response {
    state.violation(format!("20404: no such resource {}", uri.path()));
    refusal(404, 20404, format!("The requested resource {} was not found", uri.path())).into_response()
}

/// Basic auth as the account, and the account's own path; `Err` is Twilio's answer.
fn check_auth(sid: &str, headers: &HeaderMap) -> Result<(), (Refusal, String)> {
    let denied = |why: String| (refusal(401, 20003, "Authenticate"), format!("20003: {why}"));
    let value = headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let encoded = value
        .split_once(' ')
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("basic"))
        .map(|(_, credentials)| credentials.trim())
        // Only the scheme goes into the violation, never the credentials.
        .ok_or_else(|| {
            denied(format!("Authorization scheme {:?} is not Basic", value.split(' ').next().unwrap_or("")))
        })?;
    let decoded = STANDARD
        .decode(encoded)
        .ok()
        .and_then(|d| String::from_utf8(d).ok())
        .ok_or_else(|| denied("Basic credentials are not base64 of UTF-8".into()))?;
    let (user, password) = decoded.split_once(':').ok_or_else(|| denied("Basic credentials have no ':'".into()))?;
    if user != ACCOUNT_SID || password != AUTH_TOKEN {
        return Err(denied(format!("wrong credentials for user {user}")));
    }
    if sid != user {
        let path = format!("/2010-04-01/Accounts/{sid}/Messages.json");
        return Err((
            refusal(404, 20404, format!("The requested resource {path} was not found")),
            format!("20404: {path}"),
        ));
    }
    Ok(())
}

/// Parameters of Messages.json that Twilio documents; anything else it ignores.
const KNOWN_PARAMETERS: &[&str] = &[
    "To",
    "From",
    "MessagingServiceSid",
    "Body",
    "MediaUrl",
    "ContentSid",
    "ContentVariables",
    "StatusCallback",
    "ApplicationSid",
    "MaxPrice",
    "ProvideFeedback",
    "Attempt",
    "ValidityPeriod",
    "ForceDelivery",
    "ContentRetention",
    "AddressRetention",
    "SmartEncoded",
    "PersistentAction",
    "ShortenUrls",
    "ScheduleType",
    "SendAt",
    "SendAsMms",
    "RiskCheck",
];

fn is_e164(number: &str) -> bool {
    number.strip_prefix('+').is_some_and(|digits| {
        (2..=15).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) && !digits.starts_with('0')
    })
}

/// An absolute http(s) URL with a host Twilio can call (no underscores), at most 4000 chars.
fn is_callback_url(url: &str) -> bool {
    url.len() <= 4000
        && reqwest::Url::parse(url).is_ok_and(|u| {
            matches!(u.scheme(), "http" | "https") && u.host_str().is_some_and(|h| !h.is_empty() && !h.contains('_'))
        })
}

/// The form parameters; `Err` is Twilio's answer. Parameters Twilio ignores are reported in
/// `ignored` without failing the request.
fn check_message(headers: &HeaderMap, body: &[u8], ignored: &mut Vec<String>) -> Result<Received, (Refusal, String)> {
    let to_required = || refusal(400, 21604, "A 'To' phone number is required.");
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !content_type.to_ascii_lowercase().starts_with("application/x-www-form-urlencoded") {
        // Twilio reads form parameters only: a JSON body carries no `To` for it.
        return Err((to_required(), format!("21604: Content-Type is {content_type:?}, not a form")));
    }
    let params: Vec<(String, String)> = serde_urlencoded::from_bytes(body)
        .map_err(|e| (to_required(), format!("21604: body is not form-encoded: {e}")))?;
    for (i, (name, _)) in params.iter().enumerate() {
        if !KNOWN_PARAMETERS.contains(&name.as_str()) {
            ignored.push(format!("ignored parameter {name:?}"));
        } else if name != "MediaUrl" && params.iter().take(i).any(|(n, _)| n == name) {
            ignored.push(format!("{name} sent twice; Twilio takes one"));
        }
    }
    let get = |name: &str| params.iter().find(|(n, _)| n == name).map(|(_, v)| v.clone()).filter(|v| !v.is_empty());
    let to = get("To").ok_or_else(|| (to_required(), "21604: no To".to_owned()))?;
    let from = get("From");
    let service = get("MessagingServiceSid");
    match (&from, &service) {
        (None, None) => {
            return Err((
                refusal(400, 21603, "A 'From' phone number is required."),
                "21603: neither From nor MessagingServiceSid".into(),
            ));
        }
        (Some(_), Some(_)) => {
            // Twilio's own answer to both is not documented; one of them is what the
            // protocol asks for, so both is refused like neither.
            return Err((
                refusal(400, 21603, "Provide either a 'From' phone number or a MessagingServiceSid, not both."),
                "21603: both From and MessagingServiceSid".into(),
            ));
        }
        _ => {}
    }
    let body_text =
        get("Body").ok_or_else(|| (refusal(400, 21602, "Message body is required."), "21602: no Body".to_owned()))?;
    if !is_e164(&to) || from.as_deref() == Some(to.as_str()) {
        return Err((
            refusal(400, 21211, format!("The 'To' number {to} is not a valid phone number.")),
            format!("21211: To {to:?} is not E.164 (or equals From)"),
        ));
    }
    if let Some(from) = from.as_deref().filter(|f| *f != FROM) {
        return Err((
            refusal(
                400,
                21606,
                format!(
                    "The From phone number {from} is not a valid, SMS-capable inbound phone number or short code for your account."
                ),
            ),
            format!("21606: From {from:?} is not the account's"),
        ));
    }
    if let Some(service) = service.as_deref().filter(|s| *s != MESSAGING_SERVICE_SID) {
        return Err((
            refusal(400, 21701, "The Messaging Service does not exist"),
            format!("21701: MessagingServiceSid {service:?} is not the account's"),
        ));
    }
    let chars = body_text.chars().count();
    if chars > MAX_BODY_CHARS {
        return Err((
            refusal(400, 21617, "The concatenated message body exceeds the 1600 character limit."),
            format!("21617: Body has {chars} characters"),
        ));
    }
    let status_callback = get("StatusCallback");
    if let Some(url) = status_callback.as_deref().filter(|u| !is_callback_url(u)) {
        return Err((refusal(400, 21609, "Invalid 'StatusCallback'"), format!("21609: StatusCallback {url:?}")));
    }
    Ok(Received {
        to,
        body: body_text,
        from,
        messaging_service_sid: service,
        status_callback,
        reply: String::new(),
        message_sid: None,
    })
}

/// SMS segments Twilio would bill: GSM-7 (ASCII here) 160 alone or 153 per part, else UCS-2
/// 70 alone or 67 per part.
fn segments(body: &str) -> usize {
    let chars = body.chars().count();
    let (single, part) = if body.is_ascii() { (160, 153) } else { (70, 67) };
    if chars <= single { 1 } else { chars.div_ceil(part) }
}

/// The Message resource of a 201.
fn message_resource(received: &Received, sid: &str, status: &str, error_code: Option<u32>) -> Value {
    // RFC 2822, as Twilio writes it: `Tue, 26 Jul 2016 12:50:07 +0000`.
    let now = Utc::now().format("%a, %d %b %Y %H:%M:%S %z").to_string();
    let uri = format!("/2010-04-01/Accounts/{ACCOUNT_SID}/Messages/{sid}");
    json!({
        "account_sid": ACCOUNT_SID,
        "api_version": "2010-04-01",
        "body": received.body,
        "date_created": now,
        "date_sent": null,
        "date_updated": now,
        "direction": "outbound-api",
        "error_code": error_code,
        "error_message": error_code.map(|_| "scripted failure"),
        // With a Messaging Service the sender is chosen later: `from` is null until then.
        "from": received.from,
        "messaging_service_sid": received.messaging_service_sid,
        "num_media": "0",
        "num_segments": segments(&received.body).to_string(),
        "price": null,
        "price_unit": "USD",
        "sid": sid,
        "status": status,
        "subresource_uris": {"media": format!("{uri}/Media.json")},
        "to": received.to,
        "uri": format!("{uri}.json"),
    })
}

async fn create_message(
    State(state): State<Arc<FakeState>>,
    Path(sid): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (response, hang) = answer(&state, &sid, &headers, &body);
    let latency = state.latency.lock().map(|l| *l).unwrap_or_default();
    tokio::time::sleep(if hang { HANG } else { latency }).await;
    response
}

fn answer(state: &FakeState, sid: &str, headers: &HeaderMap, body: &[u8]) -> (Response, bool) {
    let mut ignored = Vec::new();
    let checked = check_auth(sid, headers).and_then(|()| check_message(headers, body, &mut ignored));
    for what in ignored {
        state.violation(what);
    }
    let mut received = match checked {
        Ok(received) => received,
        Err((refusal, why)) => {
            state.violation(why);
            return (refusal.into_response(), false);
        }
    };
    let reply = state.script.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(Reply::Created);
    let mut hang = false;
    let response = match reply {
        Reply::Created | Reply::CreatedFailed(_) => {
            let message_sid = format!("SM{}", uuid::Uuid::new_v4().simple());
            let (status, error_code) = match reply {
                Reply::CreatedFailed(code) => ("failed", Some(code)),
                _ if received.messaging_service_sid.is_some() => ("accepted", None),
                _ => ("queued", None),
            };
            received.reply = match error_code {
                Some(code) => format!("201 failed {code}"),
                None => format!("201 {status}"),
            };
            let resource = message_resource(&received, &message_sid, status, error_code);
            received.message_sid = Some(message_sid);
            (StatusCode::CREATED, Json(resource)).into_response()
        }
        Reply::Error(code) => {
            received.reply = code.to_string();
            refusal(http_of(code), code, "scripted failure").into_response()
        }
        Reply::ErrorAt(http, code) => {
            received.reply = code.to_string();
            refusal(http, code, "scripted failure").into_response()
        }
        Reply::Http(code) => {
            received.reply = format!("http {code}");
            StatusCode::from_u16(code).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR).into_response()
        }
        Reply::Hang => {
            received.reply = "hang".into();
            hang = true;
            StatusCode::CREATED.into_response()
        }
        Reply::Drop => {
            received.reply = "drop".into();
            // A body that fails before its first byte: hyper gives up on the connection before
            // it has flushed the status line, so the client sees the connection close.
            let broken = futures_util::stream::once(async {
                Err::<Bytes, std::io::Error>(std::io::Error::new(std::io::ErrorKind::ConnectionReset, "dropped"))
            });
            Response::new(Body::from_stream(broken))
        }
    };
    // Twilio reports to the request's StatusCallback; pushing is on while a target is set.
    // Signed over the StatusCallback as given; posted to the target host (the api behind the
    // public URL), as a reverse proxy in front of the api would pass it on.
    if let (Some(sid), Some(callback), Some(target)) =
        (received.message_sid.clone(), received.status_callback.clone(), state.receipts.target())
    {
        let params = status_callback(&sid, &received.to, &state.receipts.outcome());
        let signature = signature(AUTH_TOKEN, &callback, &params);
        let path = reqwest::Url::parse(&callback)
            .map(|u| format!("{}{}", u.path(), u.query().map(|q| format!("?{q}")).unwrap_or_default()))
            .unwrap_or_default();
        let url = format!("{}{path}", target.trim_end_matches('/'));
        state.receipts.send_later(sid, |http| {
            http.post(url)
                .header("x-twilio-signature", signature)
                .header("content-type", "application/x-www-form-urlencoded")
                .body(serde_urlencoded::to_string(&params).unwrap_or_default())
        });
    }
    if let Ok(mut r) = state.received.lock() {
        r.push(received);
    }
    (response, hang)
}

/// The form parameters of a status callback on `message_sid` to `to`: `delivered`, or
/// `undelivered` with the code as `ErrorCode`.
pub fn status_callback(message_sid: &str, to: &str, outcome: &crate::receipt_push::Outcome) -> Vec<(String, String)> {
    let (status, code) = match outcome {
        crate::receipt_push::Outcome::Delivered => ("delivered", None),
        crate::receipt_push::Outcome::Undelivered(code) => ("undelivered", Some(*code)),
    };
    let mut params = vec![
        ("AccountSid", ACCOUNT_SID),
        ("ApiVersion", "2010-04-01"),
        ("From", FROM),
        ("To", to),
        ("MessageSid", message_sid),
        ("SmsSid", message_sid),
        ("MessageStatus", status),
        ("SmsStatus", status),
        ("RawDlrDoneDate", "2611261200"),
    ];
    if let Some(code) = code {
        params.push(("ErrorCode", code));
    }
    params.into_iter().map(|(k, v)| (k.to_owned(), v.to_owned())).collect()
}

/// `X-Twilio-Signature` as Twilio computes it (twilio-python's `RequestValidator`): base64 of
/// HMAC-SHA1 under the auth token of the URL followed by each parameter's name and value,
/// sorted by name.
pub fn signature(auth_token: &str, url: &str, params: &[(String, String)]) -> String {
    use hmac::{Hmac, Mac};
    let mut sorted: Vec<&(String, String)> = params.iter().collect();
    sorted.sort();
    let mut data = url.to_owned();
    for (name, value) in sorted {
        data.push_str(name);
        data.push_str(value);
    }
    match Hmac::<sha1::Sha1>::new_from_slice(auth_token.as_bytes()) {
        Ok(mut mac) => {
            mac.update(data.as_bytes());
            STANDARD.encode(mac.finalize().into_bytes())
        }
        Err(_) => String::new(),
    }
}
