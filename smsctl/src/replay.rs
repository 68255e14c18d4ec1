//! Replaying failed deliveries: a new job for the same live code, linked by `replay_of`,
//! at most once per delivery, even when the broker's confirm is lost.

use std::{sync::Arc, time::Duration};

use secrecy::ExposeSecret;
use shared::cache::Redis;
use shared::db::Db;
use shared::{
    Settings, StartError,
    db::deliveries::{self, Delivery, DeliveryStatus, NewReplay},
    domain::{Mobile, SmsCode},
    keys::Keys,
    queue::{PublishError, Publisher, SendJob},
};
use uuid::Uuid;

/// What replays need: the database, the live codes in Redis and the broker.
pub struct Replayer {
    db: Db,
    redis: Redis,
    keys: Keys,
    publisher: Publisher,
    digest_key: Vec<u8>,
}

/// What became of one candidate.
pub enum Outcome {
    /// Queued as this new job (or, in a dry run, would be).
    Replayed(Uuid),
    /// Queued again as the same job (`--stale`; or, in a dry run, would be).
    Requeued,
    /// Published as this new job, but the broker did not confirm it (why): it may be queued
    /// or not. The claim is kept, marked unconfirmed, so that no later run sends it again.
    Unconfirmed(Uuid, String),
    /// Not replayed, and rightly so (why).
    Skipped(String),
    /// Should have been replayed but could not be (why).
    Failed(String),
}

impl Outcome {
    /// The report line for delivery `d`.
    pub fn line(&self, d: &Delivery, dry_run: bool) -> String {
        let mobile = Mobile::from_stored(d.mobile.as_str()).masked();
        match self {
            Outcome::Replayed(_) if dry_run => format!("would replay {} ({mobile})", d.id),
            Outcome::Replayed(new) => format!("replayed {} -> {new} ({mobile})", d.id),
            Outcome::Requeued if dry_run => format!("would requeue {} ({mobile})", d.id),
            Outcome::Requeued => format!("requeued {} ({mobile})", d.id),
            Outcome::Unconfirmed(new, why) => format!(
                "unconfirmed {} -> {new} ({mobile}): {why}; recorded as an unconfirmed replay, which a re-run skips",
                d.id
            ),
            Outcome::Skipped(why) => format!("skipped  {} ({mobile}): {why}", d.id),
            Outcome::Failed(why) => format!("failed   {} ({mobile}): {why}", d.id),
        }
    }
}

/// Counts of a replay run.
#[derive(Default)]
pub struct Summary {
    /// Replayed (or would be).
    pub replayed: usize,
    /// Skipped.
    pub skipped: usize,
    /// Failed.
    pub failed: usize,
    /// Published without the broker's confirm (the job may be queued).
    pub unconfirmed: usize,
}

impl Summary {
    /// Counts one outcome.
    pub fn count(&mut self, outcome: &Outcome) {
        match outcome {
            Outcome::Replayed(_) | Outcome::Requeued => self.replayed += 1,
            Outcome::Skipped(_) => self.skipped += 1,
            Outcome::Failed(_) => self.failed += 1,
            Outcome::Unconfirmed(..) => self.unconfirmed += 1,
        }
    }
}

impl Replayer {
    /// A replayer over `db` and the Redis and broker of `settings` (both connect lazily).
    pub fn new(settings: &Settings, db: Db) -> Result<Self, StartError> {
        Ok(Self {
            db,
            redis: shared::cache::connect(settings)?,
            keys: Keys::from(settings),
            publisher: Publisher::new(Arc::new(settings.clone()), "smsctl"),
            digest_key: settings.code_digest_key.expose_secret().as_bytes().to_vec(),
        })
    }

    /// Replays `d` if it failed and its code is still live; never fails, reports instead.
    pub async fn replay(&self, d: &Delivery, dry_run: bool) -> Outcome {
        match self.try_replay(d, dry_run).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// Requeues a delivery left `sending` or `retrying` (its job lost) as the same job, if its
    /// code is still live: the worker takes it up where it stopped, and its idempotency check
    /// makes a second copy of the job harmless. Never fails, reports instead.
    pub async fn requeue(&self, d: &Delivery, dry_run: bool) -> Outcome {
        match self.try_requeue(d, dry_run).await {
            Ok(outcome) => outcome,
            Err(e) => Outcome::Failed(e),
        }
    }

    /// The live code of `d`'s mobile and its remaining lifetime, if it is still `d`'s (the
    /// digests match: the code itself is not stored) and lives a second more; else why to skip.
    async fn live_code(&self, d: &Delivery, mobile: &Mobile) -> Result<Result<(SmsCode, Duration), Outcome>, String> {
        let key = self.keys.sms_code(mobile);
        let (live, ttl_ms): (Option<String>, i64) = redis::pipe()
            .get(&key)
            .pttl(&key)
            .query_async(&mut self.redis.clone())
            .await
            .map_err(|e| format!("redis: {e}"))?;
        let Some(live) = live.map(SmsCode::from_stored) else {
            return Ok(Err(Outcome::Skipped("code expired".into())));
        };
        if live.digest(&self.digest_key, d.id) != d.code_digest {
            return Ok(Err(Outcome::Skipped("code superseded by a newer one".into())));
        }
        if ttl_ms < 1000 {
            return Ok(Err(Outcome::Skipped("code expires in less than a second".into())));
        }
        Ok(Ok((live, Duration::from_millis(u64::try_from(ttl_ms).unwrap_or(0)))))
    }

    async fn try_requeue(&self, d: &Delivery, dry_run: bool) -> Result<Outcome, String> {
        if !matches!(d.status, DeliveryStatus::Sending | DeliveryStatus::Retrying) {
            return Ok(Outcome::Skipped(format!(
                "status {}: only sending or retrying deliveries are requeued",
                d.status
            )));
        }
        let mobile = Mobile::from_stored(d.mobile.as_str());
        let ttl = match self.live_code(d, &mobile).await? {
            Ok((_, ttl)) => ttl,
            Err(skipped) => return Ok(skipped),
        };
        if dry_run {
            return Ok(Outcome::Requeued);
        }
        let attempt = u32::try_from(d.attempts).unwrap_or(0);
        let job = SendJob::resume(d.id, mobile, d.code_digest.clone(), ttl, attempt);
        self.publisher.publish(&job).await.map_err(|e| format!("not queued: {e}"))?;
        Ok(Outcome::Requeued)
    }

    async fn try_replay(&self, d: &Delivery, dry_run: bool) -> Result<Outcome, String> {
        if d.status != DeliveryStatus::Failed {
            return Ok(Outcome::Skipped(format!("status {}: only failed deliveries are replayed", d.status)));
        }
        if let Some(claim) = deliveries::replay_claim(&self.db, d.id).await.map_err(|e| format!("database: {e}"))? {
            let note = if claim.unconfirmed { " (unconfirmed)" } else { "" };
            return Ok(Outcome::Skipped(format!("already replayed as {}{note}", claim.id)));
        }

        let mobile = Mobile::from_stored(d.mobile.as_str());
        let (live, ttl) = match self.live_code(d, &mobile).await? {
            Ok(live) => live,
            Err(skipped) => return Ok(skipped),
        };
        if dry_run {
            return Ok(Outcome::Replayed(d.id));
        }

        let mut job = SendJob::new(mobile, &live, &self.digest_key, ttl);
        job.request_id = Some(format!("replay-of-{}", d.id));
        let digest = job.digest(&self.digest_key);
        let replay = NewReplay {
            id: job.id,
            replay_of: d.id,
            mobile: job.mobile.as_str(),
            template_id: &d.template_id,
            provider: &d.provider,
            code_digest: &digest,
        };
        // A broker that is down is found before claiming: nothing is left to clean up, and a
        // publish error after this point is more likely one of the ambiguous ones below.
        self.publisher.connect().await.map_err(|e| format!("not queued: {e}"))?;
        // The claim is the lock: a concurrent smsctl loses here.
        if !deliveries::claim_replay(&self.db, &replay).await.map_err(|e| format!("database: {e}"))? {
            return Ok(Outcome::Skipped("already replayed (concurrently)".into()));
        }
        match self.publisher.publish(&job).await {
            Ok(()) => Ok(Outcome::Replayed(job.id)),
            // Ambiguous: the broker may have queued the job and only its confirm was lost (or
            // the connection died while waiting for it). Deleting the claim would let a re-run
            // send the user a second SMS; keep it, marked, where `smsctl deliveries` shows it.
            Err(e @ (PublishError::Timeout(_) | PublishError::Broker(_))) => {
                let why = format!("{e}; the job may be queued");
                deliveries::mark_replay_unconfirmed(&self.db, job.id, &why)
                    .await
                    .map_err(|db| format!("{why}; could not record it as unconfirmed: {db}"))?;
                Ok(Outcome::Unconfirmed(job.id, why))
            }
            // Refused (nack, returned) or never sent: remove the claim so that a later replay
            // can try again.
            Err(e) => {
                let _ = deliveries::delete(&self.db, job.id).await;
                Err(format!("not queued: {e}"))
            }
        }
    }
}
