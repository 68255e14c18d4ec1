//! The dev provider: writes the code to the log instead of sending an SMS. The one place
//! a code may appear in a log line.

use futures_util::future::BoxFuture;

use shared::config::ProviderName;

use crate::provider::{Accepted, Message, SendError, SmsProvider};

/// `SMS_PROVIDER=log`.
pub struct LogProvider;

impl SmsProvider for LogProvider {
    fn name(&self) -> ProviderName {
        ProviderName::Log
    }

    fn send<'a>(&'a self, message: &'a Message<'a>) -> BoxFuture<'a, Result<Accepted, SendError>> {
        Box::pin(async move {
            tracing::info!(
                mobile = %message.recipient.e164(),
                code = message.code.expose(),
                ttl_minutes = message.ttl_minutes,
                "log provider: SMS code (dev only, not sent)"
            );
            Ok(Accepted { message_id: None, note: None })
        })
    }
}
