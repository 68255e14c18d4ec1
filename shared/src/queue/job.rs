//! The send job: the JSON body of every message on the send and retry queues, versioned so
//! that a consumer can refuse a format it does not know.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::domain::{Mobile, SmsCode};

/// The version written in every job (`"v"`); a consumer rejects versions it does not know.
pub const JOB_VERSION: u32 = 1;

/// A send job: the JSON of every message on the send and retry queues.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct SendJob {
    /// Job format version, [`JOB_VERSION`].
    pub v: u32,
    /// Job id: the `sms_deliveries` id and the AMQP `message_id`.
    pub id: Uuid,
    /// Recipient.
    pub mobile: Mobile,
    /// The code to send (never logged: its `Debug` is masked).
    pub code: SmsCode,
    /// Provider template id.
    pub template_id: String,
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
}

impl SendJob {
    /// A new job for a code just stored in Redis.
    pub fn new(mobile: Mobile, code: SmsCode, template_id: String, ttl: Duration) -> Self {
        Self {
            v: JOB_VERSION,
            id: Uuid::new_v4(),
            mobile,
            code,
            template_id,
            ttl_secs: ttl.as_secs(),
            created_at: Utc::now(),
            attempt: 0,
            request_id: None,
        }
    }

    /// Parses a message body.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        #[derive(Deserialize)]
        struct Version {
            v: u32,
        }
        let Version { v } = serde_json::from_slice(body)?;
        if v != JOB_VERSION {
            return Err(DecodeError::UnknownVersion(v));
        }
        Ok(serde_json::from_slice(body)?)
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

    #[test]
    fn jobs_round_trip_and_unknown_versions_are_refused() -> Result<(), DecodeError> {
        let job = SendJob::new(
            Mobile::from_stored("13812345678"),
            SmsCode::from_stored("012345"),
            "1".into(),
            Duration::from_secs(300),
        );
        let body = serde_json::to_vec(&job)?;
        let back = SendJob::decode(&body)?;
        assert_eq!(back.id, job.id);
        assert_eq!(back.code.expose(), "012345");
        assert_eq!((back.expires_at() - back.created_at).num_seconds(), 300);

        let mut value: serde_json::Value = serde_json::from_slice(&body)?;
        value["v"] = 2.into();
        let newer = serde_json::to_vec(&value)?;
        assert!(matches!(SendJob::decode(&newer), Err(DecodeError::UnknownVersion(2))));
        assert!(matches!(SendJob::decode(b"not json"), Err(DecodeError::Malformed(_))));
        Ok(())
    }
}
