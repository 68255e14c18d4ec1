//! Which provider's parser reads a push: the one place that knows every provider's receipt
//! format (the shapes they return are in `receipts.rs`, which the providers' files import).

use shared::config::ProviderName;

use crate::receipts::{Malformed, Push};

/// Reads a push of `provider` (`content_type` as sent, `body` as received). Twilio's form
/// parameters are parsed by the caller, who needs them for the signature first: see
/// [`crate::twilio::receipts`].
pub fn parse(provider: ProviderName, content_type: Option<&str>, body: &[u8]) -> Result<Push, Malformed> {
    match provider {
        ProviderName::Ccp => crate::ccp::receipts(content_type, body),
        ProviderName::Aliyun => crate::aliyun::receipts(body),
        ProviderName::Tencent => crate::tencent::receipts(body),
        ProviderName::Twilio => {
            let params: Vec<(String, String)> =
                serde_urlencoded::from_bytes(body).map_err(|e| Malformed(format!("form: {e}")))?;
            Ok(crate::twilio::receipts(&params))
        }
        ProviderName::Log => Err(Malformed("the log provider pushes no receipts".into())),
    }
}
