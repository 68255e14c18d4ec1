//! The send job: the JSON body of every message on the send and retry queues, versioned so
//! that a consumer can refuse a format it does not know.
//!
//! Version 2 carries no code: only a keyed digest of job id and code (`code_digest`), so the
//! broker and its dead-letter queue never hold a usable code. The worker reads the live code
//! from Redis and sends it only if its digest matches, which is also the stale/superseded
//! check. Version 1 jobs (with the plaintext `code`) are still handled, so that a rolling
//! upgrade loses nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use uuid::Uuid;

use crate::domain::{Mobile, SmsCode};

/// The version written in every new job (`"v"`).
pub const JOB_VERSION: u32 = 2;

/// The longest code lifetime a job may carry (a larger one is a corrupt job).
pub const MAX_TTL_SECS: u64 = 7 * 24 * 3600;

/// A send job: the JSON of every message on the send and retry queues.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendJob {
    /// Job format version: [`JOB_VERSION`], or 1 for jobs queued before the upgrade.
    pub v: u32,
    /// Job id: the `sms_deliveries` id and the AMQP `message_id`.
    pub id: Uuid,
    /// Recipient, as the client sent it (the Redis key is `SMS_<mobile>`).
    pub mobile: Mobile,
    /// Version 2: HMAC-SHA256 of job id and code under `CODE_DIGEST_KEY`, hex.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code_digest: Option<String>,
    /// Version 1 only: the code itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<SmsCode>,
    /// Version 1 only: the provider template the api chose.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub template_id: Option<String>,
    /// Lifetime of the code from `created_at`: no attempt is made after it.
    pub ttl_secs: u64,
    /// When the api stored the code.
    pub created_at: DateTime<Utc>,
    /// Attempts already made (0 on the first delivery).
    pub attempt: u32,
    /// The `x-request-id` of the api request that created the job, for following it in logs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

/// Why a message body is not a job this version can handle.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Not JSON of the job's shape.
    #[error("malformed job: {0}")]
    Malformed(#[from] serde_json::Error),
    /// A job version this consumer does not know.
    #[error("unknown job version {0}")]
    UnknownVersion(u32),
    /// JSON of the right shape with values no api writes.
    #[error("invalid job: {0}")]
    Invalid(&'static str),
}

impl SendJob {
    /// A new job for `code`, just stored in Redis: the job carries its digest, not the code.
    pub fn new(mobile: Mobile, code: &SmsCode, digest_key: &[u8], ttl: Duration) -> Self {
        let id = Uuid::new_v4();
        Self {
            v: JOB_VERSION,
            id,
            mobile,
            code_digest: Some(code.digest(digest_key, id)),
            code: None,
            template_id: None,
            ttl_secs: ttl.as_secs(),
            created_at: Utc::now(),
            attempt: 0,
            request_id: None,
        }
    }

    /// The job of an existing delivery again (same id, same digest), for a row left
    /// `sending` or `retrying` whose job was lost: the worker takes it up where it stopped.
    pub fn resume(id: Uuid, mobile: Mobile, code_digest: String, ttl: Duration, attempt: u32) -> Self {
        Self {
            v: JOB_VERSION,
            id,
            mobile,
            code_digest: Some(code_digest),
            code: None,
            template_id: None,
            ttl_secs: ttl.as_secs(),
            created_at: Utc::now(),
            attempt,
            request_id: None,
        }
    }

    /// Parses and checks a message body: a job that decodes is safe to handle (its mobile is
    /// short ASCII digits, its dates and lifetime in range, its version's code field present).
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let Version { v } = serde_json::from_slice(body)?;
        if !matches!(v, 1 | JOB_VERSION) {
            return Err(DecodeError::UnknownVersion(v));
        }
        let job: Self = serde_json::from_slice(body)?;
        let mobile = job.mobile.as_str();
        if mobile.is_empty() || mobile.len() > 32 || !mobile.bytes().all(|b| b.is_ascii_digit() || b == b'+') {
            return Err(DecodeError::Invalid("mobile is not 1-32 digits"));
        }
        if job.ttl_secs > MAX_TTL_SECS {
            return Err(DecodeError::Invalid("ttl_secs out of range"));
        }
        match (v, &job.code_digest, &job.code) {
            (1, _, Some(_)) | (JOB_VERSION, Some(_), None) => Ok(job),
            (1, _, None) => Err(DecodeError::Invalid("a version 1 job needs its code")),
            _ => Err(DecodeError::Invalid("a version 2 job carries code_digest and no code")),
        }
    }

    /// Whether `live` (the code in Redis) is this job's code.
    pub fn is_code(&self, live: &SmsCode, digest_key: &[u8]) -> bool {
        match (&self.code_digest, &self.code) {
            (Some(digest), _) => bool::from(live.digest(digest_key, self.id).as_bytes().ct_eq(digest.as_bytes())),
            (None, Some(code)) => bool::from(live.expose().as_bytes().ct_eq(code.expose().as_bytes())),
            (None, None) => false,
        }
    }

    /// The `code_digest` recorded in `sms_deliveries` (computed for a version 1 job).
    pub fn digest(&self, digest_key: &[u8]) -> String {
        match (&self.code_digest, &self.code) {
            (Some(digest), _) => digest.clone(),
            (None, Some(code)) => code.digest(digest_key, self.id),
            (None, None) => String::new(),
        }
    }

    /// When the code stops being valid.
    pub fn expires_at(&self) -> DateTime<Utc> {
        let ttl = i64::try_from(self.ttl_secs).unwrap_or(i64::MAX);
        self.created_at + chrono::TimeDelta::try_seconds(ttl).unwrap_or(chrono::TimeDelta::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"test-digest-key";

    #[test]
    fn new_jobs_carry_a_digest_and_never_the_code() -> Result<(), DecodeError> {
        let code = SmsCode::from_stored("012345");
        let job = SendJob::new(Mobile::from_stored("13812345678"), &code, KEY, Duration::from_secs(300));
        let body = serde_json::to_vec(&job)?;
        let text = String::from_utf8_lossy(&body);
        assert!(!text.contains("012345") && !text.contains(r#""code""#), "{text}");
        let back = SendJob::decode(&body)?;
        assert_eq!((back.v, back.id), (2, job.id));
        assert!(back.is_code(&code, KEY));
        assert!(!back.is_code(&SmsCode::from_stored("012346"), KEY), "another code is not this job's");
        assert!(!back.is_code(&code, b"another key"));
        assert_eq!((back.expires_at() - back.created_at).num_seconds(), 300);
        Ok(())
    }

    #[test]
    fn version_1_jobs_are_still_handled() -> Result<(), DecodeError> {
        let id = Uuid::new_v4();
        let body = serde_json::json!({
            "v": 1, "id": id, "mobile": "13812345678", "code": "654321", "template_id": "1",
            "ttl_secs": 300, "created_at": "2026-11-26T01:00:00Z", "attempt": 0
        });
        let job = SendJob::decode(&serde_json::to_vec(&body)?)?;
        assert!(job.is_code(&SmsCode::from_stored("654321"), KEY));
        assert_eq!(job.digest(KEY), SmsCode::from_stored("654321").digest(KEY, id));
        assert_eq!(job.template_id.as_deref(), Some("1"));
        Ok(())
    }

    #[test]
    fn unknown_versions_and_values_no_api_writes_are_refused() -> Result<(), serde_json::Error> {
        let valid = serde_json::json!({
            "v": 2, "id": Uuid::new_v4(), "mobile": "13812345678", "code_digest": "ab",
            "ttl_secs": 300, "created_at": "2026-11-26T01:00:00Z", "attempt": 0
        });
        let decode = |change: &dyn Fn(&mut serde_json::Value)| {
            let mut body = valid.clone();
            change(&mut body);
            SendJob::decode(&serde_json::to_vec(&body).unwrap_or_default())
        };
        assert!(decode(&|_| {}).is_ok());
        assert!(matches!(decode(&|b| b["v"] = 3.into()), Err(DecodeError::UnknownVersion(3))));
        assert!(matches!(decode(&|b| b["mobile"] = "１３８".into()), Err(DecodeError::Invalid(_))));
        assert!(matches!(decode(&|b| b["ttl_secs"] = u64::MAX.into()), Err(DecodeError::Invalid(_))));
        assert!(matches!(decode(&|b| b["code"] = "123456".into()), Err(DecodeError::Invalid(_))));
        assert!(matches!(decode(&|b| b["v"] = 1.into()), Err(DecodeError::Invalid(_))));
        assert!(matches!(SendJob::decode(b"not json"), Err(DecodeError::Malformed(_))));
        Ok(())
    }
}
