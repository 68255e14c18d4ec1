//! What every provider client shares: one bounded HTTP client, the request/answer exchange
//! (a transport failure is transient), transport errors without their URL, and the
//! hashing every signature scheme here is built from.

use std::time::Duration;

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};
use shared::config::ProviderName;

use crate::provider::SendError;

/// An HTTP client whose requests give up after `timeout` (`SMS_PROVIDER_TIMEOUT_SECS`); built
/// once per provider and reused, so connections are pooled.
pub fn client(timeout: Duration) -> Result<reqwest::Client, reqwest::Error> {
    reqwest::Client::builder().timeout(timeout).connect_timeout(timeout).build()
}

/// Sends `request` and reads the whole answer. No answer, or an answer cut off, is a
/// transient failure naming `provider` and the cause (never the URL, which may carry a
/// signature, the number or the code).
pub async fn exchange(
    provider: ProviderName,
    request: reqwest::RequestBuilder,
) -> Result<(reqwest::StatusCode, bytes::Bytes), SendError> {
    let response = request
        .send()
        .await
        .map_err(|e| SendError::Transient(format!("{provider} request failed: {}", describe(e))))?;
    let status = response.status();
    let body = response
        .bytes()
        .await
        .map_err(|e| SendError::Transient(format!("{provider} response lost: {}", describe(e))))?;
    Ok((status, body))
}

/// An error with its causes (`error sending request: … : Connection refused`), without the
/// URL: for `last_error`, where the top-level message alone rarely says what went wrong.
pub fn describe(error: reqwest::Error) -> String {
    let error = error.without_url();
    let mut text = error.to_string();
    let mut source = std::error::Error::source(&error);
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// The `Host` header for `base_url` (`dysmsapi.aliyuncs.com`, `127.0.0.1:8080`): the host,
/// with the port only when the URL names a non-default one, as an HTTP client sends it; what
/// a signature that covers `host` must use.
pub fn host_of(base_url: &str) -> Option<String> {
    let url = reqwest::Url::parse(base_url).ok()?;
    let host = url.host_str()?;
    Some(match url.port() {
        Some(port) => format!("{host}:{port}"),
        None => host.to_owned(),
    })
}

/// HMAC-SHA256 of `data` under `key`.
pub fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
        return [0; 32];
    };
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// Lower-case hex SHA-256 of `data`.
pub fn sha256_hex(data: &[u8]) -> String {
    hex(&Sha256::digest(data))
}

/// Lower-case hex.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_host_header_keeps_only_a_non_default_port() {
        assert_eq!(host_of("https://dysmsapi.aliyuncs.com").as_deref(), Some("dysmsapi.aliyuncs.com"));
        assert_eq!(host_of("https://sms.tencentcloudapi.com:443/").as_deref(), Some("sms.tencentcloudapi.com"));
        assert_eq!(host_of("http://127.0.0.1:8080").as_deref(), Some("127.0.0.1:8080"));
        assert_eq!(host_of("not a url"), None);
    }

    #[test]
    fn hashes_match_known_values() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        // RFC 4231 test case 2.
        assert_eq!(
            hex(&hmac_sha256(b"Jefe", b"what do ya want for nothing?")),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
    }
}
