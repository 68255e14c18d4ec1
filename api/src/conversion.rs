//! Conversion: a register that used an SMS code marks the delivery that carried it
//! (`verified_at`), so that sent → delivered → verified can be measured per provider.

use secrecy::ExposeSecret;
use shared::{
    db::{self, receipts},
    domain::{Mobile, SmsCode},
};
use subtle::ConstantTimeEq;

use crate::state::AppState;

/// Marks the delivery whose code `code` (just used by a register of `mobile`) was: among the
/// deliveries to that mobile within the code's lifetime, the newest whose `code_digest` is
/// this code's. Best effort: a failure is logged (never the code) and the register stands.
pub async fn mark_verified(state: &AppState, mobile: &Mobile, code: &str) {
    if let Err(e) = mark(state, mobile, &SmsCode::from_stored(code)).await {
        tracing::warn!(mobile = %mobile.masked(), error = %e, "could not mark the delivery verified");
    }
}

async fn mark(state: &AppState, mobile: &Mobile, code: &SmsCode) -> Result<(), sqlx::Error> {
    let limit = state.settings.dependency_timeout;
    let key = state.settings.code_digest_key.expose_secret().as_bytes();
    // A little past the TTL: the job's row is written when the worker takes it, a moment
    // after the code was stored.
    let within = state.settings.sms_code_ttl + std::time::Duration::from_secs(60);
    let candidates = db::within(limit, receipts::verify_candidates(&state.db, mobile.as_str(), within)).await?;
    let Some(used) =
        candidates.iter().find(|c| bool::from(code.digest(key, c.id).as_bytes().ct_eq(c.code_digest.as_bytes())))
    else {
        // A test number, or a code whose job no worker has recorded yet.
        tracing::debug!(mobile = %mobile.masked(), "no delivery carries the code used");
        return Ok(());
    };
    if db::within(limit, receipts::mark_verified(&state.db, used.id)).await? {
        metrics::counter!("smscode_api_verified_total", "provider" => used.provider.clone()).increment(1);
    }
    Ok(())
}
