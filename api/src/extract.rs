//! Extractors whose rejections are `ApiError`s, so that a bad request never gets axum's
//! plain-text rejections: the JSON body (type, size, shape) and the client IP.

use std::{
    net::{IpAddr, SocketAddr},
    pin::Pin,
    time::Duration,
};

use axum::{
    body::{Body, Bytes, HttpBody},
    extract::{ConnectInfo, FromRef, FromRequest, FromRequestParts, Request},
    http::{HeaderMap, header, request::Parts},
};
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::ApiError;

/// The largest request body accepted; larger ones get HTTP 400 with errno 4103.
pub const MAX_BODY_BYTES: usize = 16 * 1024;

/// How long a refused oversize body is still read (and dropped) after the answer, at most.
const LINGER_TOTAL: Duration = Duration::from_secs(5);
/// ...and how long a silent client is waited for before the connection is closed.
const LINGER_IDLE: Duration = Duration::from_secs(1);

/// A request body that must be declared JSON (`Content-Type: application/json`, parameters
/// allowed) and be a JSON object of at most `MAX_BODY_BYTES` (else HTTP 400, errno 4103),
/// read into the handler's request type `T`. A field of the wrong type is the handler's errno
/// answer (4103 参数不全), not a rejection with axum's plain-text message.
pub struct JsonBody<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, Self::Rejection> {
        let declared_json = is_json(req.headers());
        let declared_len = req.headers().get(header::CONTENT_LENGTH).and_then(|v| v.to_str().ok()?.parse::<u64>().ok());
        let expects_continue = req
            .headers()
            .get(header::EXPECT)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"));
        let mut body = req.into_body();
        // Refused before a byte is read: the answer goes out while the client is still sending.
        if declared_len.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
            if expects_continue {
                // The client waits for "100 Continue" before sending: reading now would invite
                // the body we refuse. Dropped unread, nothing is left on the socket to reset it.
                drop(body);
            } else {
                linger(body);
            }
            return Err(ApiError::BodyTooLarge);
        }
        let mut bytes = Vec::with_capacity(declared_len.map_or(0, |n| n as usize));
        while let Some(frame) = next_frame(&mut body).await {
            let frame = frame.map_err(|e| ApiError::MalformedBody(e.to_string()))?;
            if let Some(data) = frame {
                if bytes.len() + data.len() > MAX_BODY_BYTES {
                    linger(body);
                    return Err(ApiError::BodyTooLarge);
                }
                bytes.extend_from_slice(&data);
            }
        }
        // Checked after the (small) body is read, so the connection stays usable. A browser
        // may post text/plain or a form across sites without asking first; only JSON is ours.
        if !declared_json {
            return Err(ApiError::MalformedBody("Content-Type is not application/json".into()));
        }
        // A struct would also deserialize from a JSON array: only an object is a body.
        if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
            return Err(ApiError::MalformedBody("not a JSON object".into()));
        }
        // One parse on the normal path; only a failure looks again, to tell a malformed
        // body (HTTP 400) from a well-formed object with a mistyped field (errno 4103).
        serde_json::from_slice::<T>(&bytes).map(Self).map_err(|e| match serde_json::from_slice::<Value>(&bytes) {
            Ok(Value::Object(_)) => ApiError::MissingParams,
            _ => ApiError::MalformedBody(e.to_string()),
        })
    }
}

/// Whether the `Content-Type` is `application/json`, with or without parameters
/// (`; charset=utf-8`), in any case.
fn is_json(headers: &HeaderMap) -> bool {
    headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|media| media.trim().eq_ignore_ascii_case("application/json"))
}

/// The next frame of `body`: its data, or `None` for a trailers frame; `None` at the end.
async fn next_frame(body: &mut Body) -> Option<Result<Option<Bytes>, axum::Error>> {
    let frame = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await?;
    Some(frame.map(|f| f.into_data().ok()))
}

/// Reads and drops the rest of a refused body in the background, for at most `LINGER_TOTAL`
/// (a "lingering close"). Dropped unread, the body makes hyper close the socket while the
/// client's bytes are still arriving; the kernel then answers them with a reset, which can
/// destroy our answer before the client reads it (it sees a broken pipe instead).
fn linger(mut body: Body) {
    tokio::spawn(async move {
        let deadline = tokio::time::Instant::now() + LINGER_TOTAL;
        loop {
            let wait = deadline.min(tokio::time::Instant::now() + LINGER_IDLE);
            match tokio::time::timeout_at(wait, next_frame(&mut body)).await {
                Ok(Some(Ok(_))) => {}
                // The body ended, failed, or the client went quiet or past the deadline.
                _ => break,
            }
        }
    });
}

/// The value of a required text field: `None` when absent or empty (the seed's `not all(...)`).
pub fn required(field: &str) -> Option<&str> {
    Some(field).filter(|f| !f.is_empty())
}

/// The client's IP: the peer address, or, with `TRUST_PROXY_HEADERS=true`, the
/// `X-Forwarded-For` entry our own proxy added (see [`ProxyTrust`]).
pub struct ClientIp(pub IpAddr);

/// Whether to believe `X-Forwarded-For`, and how far: taken from the app state.
#[derive(Clone, Copy, Debug)]
pub struct ProxyTrust {
    /// `TRUST_PROXY_HEADERS`: only behind a proxy that sets the header itself.
    pub trust: bool,
    /// `TRUSTED_PROXY_HOPS`: our proxies in front of the api. Each appends the address it
    /// was reached from, so the client is the entry this many places from the right; every
    /// entry left of it was written by the client and proves nothing.
    pub hops: u8,
}

impl<S> FromRequestParts<S> for ClientIp
where
    S: Send + Sync,
    ProxyTrust: FromRef<S>,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, Self::Rejection> {
        let trust = ProxyTrust::from_ref(state);
        if trust.trust
            && let Some(ip) = forwarded_client(&parts.headers, trust.hops)
        {
            return Ok(Self(ip));
        }
        parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map(|ConnectInfo(addr)| Self(addr.ip()))
            .ok_or_else(|| ApiError::Internal("no peer address: serve with connect info".into()))
    }
}

/// The `X-Forwarded-For` entry `hops` places from the right (1 = the rightmost), over every
/// such header field in order (several fields are one list). `None`, so the peer address
/// counts, when there are fewer entries or that entry is not an address. Bytes that are not
/// text, left of it, do not matter: they are the client's.
fn forwarded_client(headers: &HeaderMap, hops: u8) -> Option<IpAddr> {
    let mut entries: Vec<&[u8]> = Vec::new();
    for field in headers.get_all("x-forwarded-for") {
        entries.extend(field.as_bytes().split(|b| *b == b','));
    }
    let entry = entries.iter().rev().nth(usize::from(hops).checked_sub(1)?)?;
    parse_entry(std::str::from_utf8(entry).ok()?.trim())
}

/// An address as proxies write it: `203.0.113.7`, `2001:db8::1`, or with a port or brackets
/// (`203.0.113.7:4711`, `[2001:db8::1]:443`, `[2001:db8::1]`).
fn parse_entry(entry: &str) -> Option<IpAddr> {
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| entry.strip_prefix('[')?.strip_suffix(']')?.parse().ok())
}

#[cfg(test)]
mod tests {
    use axum::http::HeaderValue;

    use super::*;

    fn headers(fields: &[&[u8]]) -> HeaderMap {
        let mut map = HeaderMap::new();
        for field in fields {
            if let Ok(value) = HeaderValue::from_bytes(field) {
                map.append("x-forwarded-for", value);
            }
        }
        map
    }

    fn ip(s: &str) -> Option<IpAddr> {
        s.parse().ok()
    }

    #[test]
    fn the_client_is_counted_from_the_right_never_the_forgeable_left() {
        let h = headers(&[b"6.6.6.6, 203.0.113.7"]);
        assert_eq!(forwarded_client(&h, 1), ip("203.0.113.7"));
        assert_eq!(forwarded_client(&h, 2), ip("6.6.6.6"));
        assert_eq!(forwarded_client(&h, 3), None, "fewer entries than hops: the peer counts");
        // Two fields are one list, in order.
        let h = headers(&[b"6.6.6.6", b"203.0.113.7, 10.0.0.2"]);
        assert_eq!(forwarded_client(&h, 2), ip("203.0.113.7"));
        assert_eq!(forwarded_client(&HeaderMap::new(), 1), None);
    }

    #[test]
    fn client_written_garbage_left_of_the_proxy_entry_does_not_matter() {
        let h = headers(&[b"\xff\xfe, nonsense,, 2001:db8::7"]);
        assert_eq!(forwarded_client(&h, 1), ip("2001:db8::7"));
        assert_eq!(forwarded_client(&headers(&[b"1.2.3.4, unknown"]), 1), None);
    }

    #[test]
    fn entries_with_ports_or_brackets_are_addresses() {
        for (entry, expected) in [
            ("203.0.113.7:4711", "203.0.113.7"),
            ("[2001:db8::1]:443", "2001:db8::1"),
            ("[2001:db8::1]", "2001:db8::1"),
            ("2001:db8::1", "2001:db8::1"),
        ] {
            assert_eq!(parse_entry(entry), ip(expected), "{entry}");
        }
    }

    #[test]
    fn only_application_json_is_a_json_content_type() {
        for (value, expected) in [
            ("application/json", true),
            ("application/json; charset=utf-8", true),
            ("Application/JSON;charset=UTF-8", true),
            ("text/plain", false),
            ("application/x-www-form-urlencoded", false),
            ("multipart/form-data; boundary=x", false),
            ("application/jsonp", false),
            ("text/plain; application/json", false),
        ] {
            let mut h = HeaderMap::new();
            h.insert(header::CONTENT_TYPE, HeaderValue::from_static(value));
            assert_eq!(is_json(&h), expected, "{value}");
        }
        assert!(!is_json(&HeaderMap::new()), "no Content-Type");
    }
}
