//! Delivery reports ("receipts") as the providers push them: the shape every provider's
//! parser returns, and the answer each expects. The formats themselves live with each
//! provider's protocol (`ccp.rs`, `aliyun.rs`, `tencent.rs`, `twilio.rs`).

use chrono::{DateTime, NaiveDateTime, Utc};

/// One final report on one message: the handset got it, or the carrier gave up.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Receipt {
    /// The provider's id of the message, as its send answer gave it (CCP `smsMessageSid`,
    /// Aliyun `BizId`, Tencent `SerialNo`, Twilio `MessageSid`).
    pub message_id: String,
    /// Delivered to the handset (else: undelivered, final).
    pub delivered: bool,
    /// The provider's own word for the outcome, as written (`0`, `true`, `SUCCESS`,
    /// `undelivered`...).
    pub status: String,
    /// The carrier's or provider's error code, when not delivered.
    pub error_code: Option<String>,
    /// When the provider says the outcome happened, when it says so.
    pub reported_at: Option<DateTime<Utc>>,
}

/// One entry of a push.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A final report.
    Receipt(Receipt),
    /// A well-formed notification that is not a final delivery report (a CCP reply SMS, a
    /// Twilio `sent`): acknowledged, nothing recorded.
    Ignored,
    /// An entry of a batch that cannot be read; the others still count.
    Malformed(String),
}

/// What a provider expects back: the status, the content type and the body.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Answer {
    /// HTTP status.
    pub status: u16,
    /// `Content-Type`, when there is a body.
    pub content_type: Option<&'static str>,
    /// The body.
    pub body: &'static str,
}

impl Answer {
    /// A JSON answer with status 200.
    pub const fn json(body: &'static str) -> Self {
        Self { status: 200, content_type: Some("application/json"), body }
    }
}

/// A push, read: its entries, and the answer that tells the provider it was taken.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Push {
    /// The entries, in the order pushed.
    pub entries: Vec<Entry>,
    /// The success answer the provider expects.
    pub answer: Answer,
}

/// A push whose body cannot be read at all (answered 400).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("malformed receipt body: {0}")]
pub struct Malformed(pub String);

/// A time written in Beijing time (the Chinese providers' reports), in `format`; `None` when
/// absent or unreadable (the report still counts, without its time).
pub(crate) fn beijing_time(raw: Option<&str>, format: &str) -> Option<DateTime<Utc>> {
    let naive = NaiveDateTime::parse_from_str(raw?.trim(), format).ok()?;
    naive.and_local_timezone(shared::BEIJING).single().map(|t| t.with_timezone(&Utc))
}

/// The text of a JSON scalar: a string as is, a number or boolean as written; `None` for
/// null, absent, empty, or a structure.
pub(crate) fn text(value: Option<&serde_json::Value>) -> Option<String> {
    match value? {
        serde_json::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// The entries of a JSON-array push (Aliyun, Tencent), each read by `entry`; a body that is
/// not a JSON array is [`Malformed`].
pub(crate) fn json_array(
    body: &[u8],
    entry: impl Fn(&serde_json::Map<String, serde_json::Value>) -> Result<Entry, String>,
) -> Result<Vec<Entry>, Malformed> {
    let value: serde_json::Value = serde_json::from_slice(body).map_err(|e| Malformed(format!("json: {e}")))?;
    let serde_json::Value::Array(items) = value else {
        return Err(Malformed("not a JSON array".into()));
    };
    Ok(items
        .iter()
        .map(|item| match item.as_object() {
            Some(object) => entry(object).unwrap_or_else(Entry::Malformed),
            None => Entry::Malformed("not a JSON object".into()),
        })
        .collect())
}
