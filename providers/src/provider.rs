//! The provider interface: one message in, accepted or a classified failure out.

use futures_util::future::BoxFuture;
use shared::{
    config::ProviderName,
    domain::{Recipient, SmsCode},
};

/// One message to send.
pub struct Message<'a> {
    /// The job it belongs to: the idempotency or correlation id where the provider has one
    /// (CCP `reqId`, Aliyun `OutId`, Tencent `SessionContext`).
    pub job_id: uuid::Uuid,
    /// Recipient, normalised; each provider takes the form its API documents.
    pub recipient: &'a Recipient,
    /// The code (template variable `{1}`, `${code}` or `{code}`).
    pub code: &'a SmsCode,
    /// The code's lifetime in whole minutes (template variable `{2}` or `{minutes}`).
    pub ttl_minutes: u64,
}

/// The provider accepted the message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Accepted {
    /// The provider's id for it (CCP `smsMessageSid`, Aliyun `BizId`, Tencent `SerialNo`,
    /// Twilio `sid`): what its delivery receipts refer to.
    pub message_id: Option<String>,
    /// Something worth recording about the acceptance (kept in `last_error`).
    pub note: Option<String>,
}

/// The provider did not accept the message. The class decides what the worker does next;
/// the text (the provider's code and message, never a secret) is recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    /// Worth trying again, here or elsewhere: timeouts, connection errors, HTTP 5xx,
    /// "busy" or throttled answers. Fails over to the next provider.
    #[error("transient: {0}")]
    Transient(String),
    /// This provider refuses for reasons of its own: credentials, template or signature not
    /// approved, balance, region or feature not enabled. Another provider may well succeed:
    /// fails over.
    #[error("provider: {0}")]
    Provider(String),
    /// The number itself is refused (invalid, barred, unsubscribed): no provider will do
    /// better. The delivery fails.
    #[error("recipient: {0}")]
    Recipient(String),
    /// The provider's own frequency limit for this number: it guards the user against
    /// bombing, and another provider must not be used to get round it. The delivery fails.
    #[error("number frequency limit: {0}")]
    NumberLimited(String),
}

impl SendError {
    /// Whether the next provider of the route should be tried.
    pub fn fails_over(&self) -> bool {
        matches!(self, Self::Transient(_) | Self::Provider(_))
    }

    /// The class, as recorded in `sms_attempts.outcome` and metrics labels.
    pub fn class(&self) -> &'static str {
        match self {
            Self::Transient(_) => "transient",
            Self::Provider(_) => "provider",
            Self::Recipient(_) => "recipient",
            Self::NumberLimited(_) => "number_limited",
        }
    }

    /// The provider's code and message.
    pub fn reason(&self) -> &str {
        match self {
            Self::Transient(r) | Self::Provider(r) | Self::Recipient(r) | Self::NumberLimited(r) => r,
        }
    }
}

/// Something that can send a templated SMS.
pub trait SmsProvider: Send + Sync {
    /// The name recorded in `sms_deliveries.provider` and in metrics labels.
    fn name(&self) -> ProviderName;

    /// Sends one message. Implementations bound their own HTTP time; the caller also bounds
    /// the whole call by `SMS_PROVIDER_TIMEOUT_SECS`.
    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>>;
}
