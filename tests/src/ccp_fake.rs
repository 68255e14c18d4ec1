//! A local stand-in for the Ronglian (CCP) REST API that checks the real protocol
//! (`docs/providers.md`): route, `sig`, `Authorization`, timestamp window, headers and
//! body. A request that breaks the protocol gets the error `statusCode` the real server
//! would send and is listed in [`CcpFake::violations`]. Replies can be scripted.

use std::{
    collections::{HashSet, VecDeque},
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
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::post,
};
use base64::{
    Engine,
    engine::general_purpose::{STANDARD, URL_SAFE},
};
use chrono::{NaiveDateTime, Utc};
use md5::{Digest, Md5};
use serde_json::{Value, json};
use shared::config::{CcpSettings, Countries};

/// Credentials the fake accepts.
pub const ACCOUNT_SID: &str = "aaf98f894032b237014047963bb9009d";
/// The matching token.
pub const AUTH_TOKEN: &str = "3d8e4ab5a8a44b0e8a3fcb2c3c1d6b3e";
/// The application id the fake knows.
pub const APP_ID: &str = "ff8080813fc70a7b013fc72312324213";

/// One scripted answer.
#[derive(Clone, Debug)]
pub enum Reply {
    /// HTTP 200 with this `statusCode` (`"000000"` is success).
    Status(&'static str),
    /// This HTTP status with an empty body.
    Http(u16),
    /// Headers sent, then the connection breaks before the body completes.
    Drop,
}

/// A request the fake accepted as protocol-correct.
#[derive(Clone, Debug)]
pub struct Received {
    /// `to`.
    pub mobile: String,
    /// `datas[0]`.
    pub code: String,
    /// `datas[1]`.
    pub ttl_minutes: String,
    /// `templateId`.
    pub template_id: String,
    /// `reqId`, if sent.
    pub req_id: Option<String>,
    /// What the fake answered: the `statusCode`, or `http <status>`, or `drop`.
    pub reply: String,
    /// The `smsMessageSid` returned, on success.
    pub message_sid: Option<String>,
}

#[derive(Default)]
struct FakeState {
    receipts: crate::receipt_push::Pusher,
    script: Mutex<VecDeque<Reply>>,
    latency: Mutex<Duration>,
    received: Mutex<Vec<Received>>,
    violations: Mutex<Vec<String>>,
    accepted_req_ids: Mutex<HashSet<String>>,
    in_flight: AtomicUsize,
}

/// A running fake.
#[derive(Clone)]
pub struct CcpFake {
    /// `http://127.0.0.1:<port>`: the `CCP_BASE_URL` to use.
    pub base_url: String,
    state: Arc<FakeState>,
}

impl CcpFake {
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
            .route("/2013-12-26/Accounts/{sid}/SMS/TemplateSMS", post(template_sms))
            .with_state(state.clone());
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self { base_url: format!("http://{addr}"), state })
    }

    /// Provider settings pointing at this fake, with the right credentials.
    pub fn settings(&self) -> CcpSettings {
        CcpSettings {
            base_url: self.base_url.clone(),
            account_sid: ACCOUNT_SID.into(),
            auth_token: AUTH_TOKEN.into(),
            app_id: APP_ID.into(),
            template_id: "1".into(),
            countries: Countries::Codes(vec![86]),
        }
    }

    /// Environment variables pointing a worker process at this fake.
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("SMS_PROVIDER", "ccp"),
            ("CCP_BASE_URL", &self.base_url),
            ("CCP_ACCOUNT_SID", ACCOUNT_SID),
            ("CCP_AUTH_TOKEN", AUTH_TOKEN),
            ("CCP_APP_ID", APP_ID),
            ("CCP_TEMPLATE_ID", "1"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
    }

    /// Answers the next requests with `replies`, in order; then success again.
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

    /// Requests received for `mobile`.
    pub fn received_for(&self, mobile: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.mobile == mobile).collect()
    }

    /// Requests that broke the protocol, with what was wrong.
    pub fn violations(&self) -> Vec<String> {
        self.state.violations.lock().map(|v| v.clone()).unwrap_or_default()
    }

    /// Requests being answered right now.
    pub fn in_flight(&self) -> usize {
        self.state.in_flight.load(Ordering::SeqCst)
    }
}

fn status(code: &str, msg: &str) -> Response {
    Json(json!({"statusCode": code, "statusMsg": msg})).into_response()
}

/// Checks everything but the body; `Err` is the real server's answer.
fn check_auth(sid: &str, sig: Option<&str>, headers: &HeaderMap) -> Result<(), (&'static str, String)> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !header("accept").starts_with("application/json") {
        return Err(("111100", format!("Accept is {:?}", header("accept"))));
    }
    if !header("content-type").starts_with("application/json") {
        return Err(("160030", format!("Content-Type is {:?}", header("content-type"))));
    }
    let authorization = header("authorization");
    if authorization.is_empty() {
        return Err(("111101", "no Authorization".into()));
    }
    let decoded = STANDARD
        .decode(authorization)
        .or_else(|_| URL_SAFE.decode(authorization))
        .map_err(|_| ("111102", "Authorization is not base64".to_owned()))?;
    let decoded = String::from_utf8(decoded).map_err(|_| ("111103", "Authorization not UTF-8".to_owned()))?;
    let (id, ts) = decoded.split_once(':').ok_or(("111103", format!("Authorization {decoded:?} is not id:ts")))?;
    if id != sid {
        return Err(("111107", format!("Authorization id {id} != URL id {sid}")));
    }
    if ts.len() != 14 || !ts.bytes().all(|b| b.is_ascii_digit()) {
        return Err(("111113", format!("timestamp {ts:?} is not yyyyMMddHHmmss")));
    }
    let at = NaiveDateTime::parse_from_str(ts, "%Y%m%d%H%M%S").map_err(|_| ("111113", format!("timestamp {ts}")))?;
    let now = Utc::now().with_timezone(&shared::BEIJING).naive_local();
    // Beijing time, within the 24 h validity (and not from the future beyond clock skew).
    if (now - at).num_seconds().abs() > 24 * 3600 || (at - now).num_seconds() > 300 {
        return Err(("111106", format!("timestamp {ts} is not current Beijing time ({now})")));
    }
    let Some(sig) = sig else {
        return Err(("111108", "no sig".into()));
    };
    if sid != ACCOUNT_SID {
        return Err(("111141", format!("unknown account {sid}")));
    }
    let expected: String =
        Md5::digest(format!("{sid}{AUTH_TOKEN}{ts}").as_bytes()).iter().map(|b| format!("{b:02X}")).collect();
    if sig != expected {
        // Strict: the SDKs send upper case, and so must we.
        return Err(("111109", "sig does not match".into()));
    }
    Ok(())
}

fn check_body(body: &[u8]) -> Result<Received, (&'static str, String)> {
    let value: Value = serde_json::from_slice(body).map_err(|e| ("160031", format!("body: {e}")))?;
    let text = |field: &str| value.get(field).and_then(Value::as_str).map(str::to_owned);
    let to = text("to").filter(|t| !t.is_empty()).ok_or(("112300", "no `to`".to_owned()))?;
    if text("appId").as_deref() != Some(APP_ID) {
        return Err(("111181", format!("unknown appId {:?}", value.get("appId"))));
    }
    let template_id = text("templateId").ok_or(("112307", "no templateId".to_owned()))?;
    if template_id.is_empty() || !template_id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(("112318", format!("templateId {template_id:?} is not numeric")));
    }
    let datas: Vec<String> = value
        .get("datas")
        .and_then(Value::as_array)
        .map(|a| a.iter().filter_map(|d| d.as_str().map(str::to_owned)).collect())
        .unwrap_or_default();
    let [code, ttl_minutes] = <[String; 2]>::try_from(datas).map_err(|d| ("112308", format!("datas {d:?}")))?;
    let req_id = text("reqId");
    if req_id.as_ref().is_some_and(|r| r.len() > 32) {
        return Err(("160055", "reqId longer than 32".into()));
    }
    Ok(Received { mobile: to, code, ttl_minutes, template_id, req_id, reply: String::new(), message_sid: None })
}

async fn template_sms(
    State(state): State<Arc<FakeState>>,
    Path(sid): Path<String>,
    Query(query): Query<std::collections::HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let _in_flight = InFlight::enter(&state);
    // Decided on arrival, as a real provider takes a request in when it arrives: a second
    // request with the same reqId is a duplicate even while the first is still answering.
    let response = answer(&state, &sid, query.get("sig").map(String::as_str), &headers, &body);
    let latency = state.latency.lock().map(|l| *l).unwrap_or_default();
    tokio::time::sleep(latency).await;
    response
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

/// Records an accepted `reqId`; false if it was accepted before.
fn first_use_of(state: &FakeState, req_id: Option<&str>) -> bool {
    match (req_id, state.accepted_req_ids.lock()) {
        (Some(id), Ok(mut ids)) => ids.insert(id.to_owned()),
        _ => true,
    }
}

fn answer(state: &FakeState, sid: &str, sig: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Response {
    let checked = check_auth(sid, sig, headers).and_then(|()| check_body(body));
    let mut received = match checked {
        Ok(received) => received,
        Err((code, why)) => {
            if let Ok(mut v) = state.violations.lock() {
                v.push(format!("{code}: {why}"));
            }
            return status(code, &why);
        }
    };
    let reply = state.script.lock().ok().and_then(|mut s| s.pop_front()).unwrap_or(Reply::Status("000000"));
    let response = match reply {
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
        Reply::Status("000000") if !first_use_of(state, received.req_id.as_deref()) => {
            received.reply = "160054".into();
            status("160054", "请求重复")
        }
        Reply::Status("000000") => {
            let sid = uuid::Uuid::new_v4().simple().to_string();
            received.reply = "000000".into();
            received.message_sid = Some(sid.clone());
            let created = Utc::now().with_timezone(&shared::BEIJING).format("%Y%m%d%H%M%S").to_string();
            Json(json!({"statusCode": "000000", "templateSMS": {"dateCreated": created, "smsMessageSid": sid}}))
                .into_response()
        }
        Reply::Status(code) => {
            received.reply = code.into();
            status(code, "scripted failure")
        }
    };
    if let (Some(sid), Some(url)) = (received.message_sid.clone(), state.receipts.target()) {
        let body = report_xml(&sid, &received.mobile, &state.receipts.outcome());
        state.receipts.send_later(sid, |http| http.post(url).header("content-type", "application/xml").body(body));
    }
    if let Ok(mut r) = state.received.lock() {
        r.push(received);
    }
    response
}

/// An `SMSArrived` delivery report on message `sms_message_sid` to `mobile`, in the XML form:
/// `status` 0 when delivered, else 1 with the carrier code as `deliverCode`.
pub fn report_xml(sms_message_sid: &str, mobile: &str, outcome: &crate::receipt_push::Outcome) -> String {
    let (status, code) = match outcome {
        crate::receipt_push::Outcome::Delivered => ("0", "DELIVRD"),
        crate::receipt_push::Outcome::Undelivered(code) => ("1", *code),
    };
    let now = crate::receipt_push::beijing_now("%Y%m%d%H%M%S");
    format!(
        r#"<?xml version="1.0" encoding="UTF-8"?><Request><action>SMSArrived</action><smsType>1</smsType><apiVersion>2013-12-26</apiVersion><content>{sms_message_sid}</content><fromNum>{mobile}</fromNum><dateSent>{now}</dateSent><recvTime>{now}</recvTime><status>{status}</status><deliverCode>{code}</deliverCode><smsCount>1</smsCount><spCode>10690876</spCode></Request>"#
    )
}
