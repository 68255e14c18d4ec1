//! SMS providers behind one trait, so the worker's logic does not depend on which one sends.
//!
//! One file per provider holds that provider's whole protocol: request signing, the request
//! itself, and the classification of its answers into [`SendError`] classes. Adding a
//! provider is one new file and one arm in [`from_settings`]. The protocol notes the code
//! relies on are in the repository's `docs/providers.md`.
//!
//! - [`log`]: dev only, writes the code to the log.
//! - [`ccp`]: Ronglian Cloud Communications (容联云通讯).

pub mod ccp;
pub mod log;
mod provider;

use std::sync::Arc;

pub use provider::{Accepted, Message, SendError, SmsProvider};
use shared::{Settings, config::ProviderSettings};

/// The provider `SMS_PROVIDER` selects, its HTTP client built (fails only when the TLS
/// backend cannot be set up).
pub fn from_settings(settings: &Settings) -> Result<Arc<dyn SmsProvider>, reqwest::Error> {
    Ok(match &settings.provider {
        ProviderSettings::Log => Arc::new(log::LogProvider),
        ProviderSettings::Ccp(ccp) => Arc::new(ccp::CcpProvider::new(ccp.clone(), settings.sms_provider_timeout)?),
    })
}
