//! The provider interface: one message in, accepted or a classified failure out.

use futures_util::future::BoxFuture;
use shared::{
    config::ProviderName,
    domain::{Mobile, SmsCode},
};

/// One message to send.
pub struct Message<'a> {
    /// The job it belongs to (CCP's `reqId`, so a retry is recognised as one).
    pub job_id: uuid::Uuid,
    /// Recipient.
    pub mobile: &'a Mobile,
    /// The code (template datum `{1}`).
    pub code: &'a SmsCode,
    /// The code's lifetime in minutes (template datum `{2}`).
    pub ttl_minutes: u64,
    /// Provider template id.
    pub template_id: &'a str,
}

/// The provider accepted the message.
#[derive(Debug)]
pub struct Accepted {
    /// The provider's id for it (`smsMessageSid` for CCP).
    pub message_id: Option<String>,
    /// Something worth recording about the acceptance (kept in `last_error`).
    pub note: Option<String>,
}

/// The provider did not accept the message.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// Worth trying again later: timeouts, connection errors, HTTP 5xx, "busy" codes.
    #[error("transient: {0}")]
    Transient(String),
    /// Trying again will not help: bad number, template or credentials, or the provider's
    /// frequency limit for this number.
    #[error("permanent: {0}")]
    Permanent(String),
}

/// Something that can send a templated SMS.
pub trait SmsProvider: Send + Sync {
    /// The name recorded in `sms_deliveries.provider` and in metrics labels.
    fn name(&self) -> ProviderName;

    /// Sends one message.
    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>>;
}
