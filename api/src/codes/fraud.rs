//! The fraud guard against SMS pumping, api side: which number prefix a mobile is counted
//! under (and whether its country is allowed at all), the log line and metrics of a block,
//! and counting verified codes. Sends are counted, and blocks set and checked, inside the
//! admission script (`admission.rs`), so the guard adds no round trip to sms_code.

use shared::{
    Settings,
    domain::{Mobile, Recipient, SmsCode},
    fraud::{self, Window},
};

use super::store::CodeStore;
use crate::error::ApiError;

/// How the fraud guard treats one mobile, decided right after its format check.
#[derive(Clone, Debug)]
pub enum Guard {
    /// Counted, and refused while blocked, under this prefix (`+861381234`).
    Prefix(String),
    /// One of `SMS_TEST_NUMBERS`, with its fixed code: never sent an SMS, so neither counted
    /// nor blocked, and not held to `SMS_ALLOWED_COUNTRIES`.
    TestNumber(SmsCode),
}

impl Guard {
    /// The guard for `mobile`: `CountryNotAllowed` (4004) when its calling code is not in
    /// `SMS_ALLOWED_COUNTRIES`. The country comes from the parsing the worker uses
    /// (`DEFAULT_COUNTRY_CODE` for a national number).
    pub fn of(settings: &Settings, mobile: &Mobile) -> Result<Self, ApiError> {
        if let Some(code) = settings.test_code(mobile.as_str()) {
            return Ok(Self::TestNumber(SmsCode::from_stored(code)));
        }
        let recipient =
            Recipient::locate(mobile, settings.default_country_code).map_err(|_| ApiError::CountryNotAllowed)?;
        if !settings.fraud.allowed_countries.serves(recipient.country_code()) {
            return Err(ApiError::CountryNotAllowed);
        }
        Ok(Self::Prefix(recipient.prefix(settings.fraud.prefix_digits)))
    }

    /// The prefix the mobile is counted under; `None` for a test number.
    pub fn prefix(&self) -> Option<&str> {
        match self {
            Self::Prefix(prefix) => Some(prefix),
            Self::TestNumber(_) => None,
        }
    }
}

/// A request refused because its prefix is blocked.
pub(super) fn refused(prefix: &str) {
    metrics::counter!("smscode_api_fraud_refused_total", "prefix" => prefix.to_owned()).increment(1);
}

/// This replica's admission script set the block of `prefix`: logged once across replicas.
pub(super) fn blocked(prefix: &str, sends: i64, verified: i64, settings: &Settings) {
    metrics::counter!("smscode_api_fraud_blocks_total", "prefix" => prefix.to_owned()).increment(1);
    tracing::warn!(
        prefix,
        sends,
        verified,
        window_secs = settings.fraud.window.as_secs(),
        block_secs = settings.fraud.block.as_secs(),
        "number prefix blocked: many codes sent, few used (SMS pumping?); see `smsctl fraud`"
    );
}

impl CodeStore {
    /// Counts a code of `mobile` that was used (a successful register) for its prefix; test
    /// numbers and numbers outside `SMS_ALLOWED_COUNTRIES` are not counted. Best effort: a
    /// failure is logged, the registration stands.
    #[tracing::instrument(skip_all)]
    pub async fn count_verified(&self, mobile: &Mobile) {
        let Ok(Guard::Prefix(prefix)) = Guard::of(&self.settings, mobile) else {
            return;
        };
        let window = Window::from(&self.settings.fraud);
        if let Err(e) = fraud::record_verified(&mut self.redis.clone(), &self.keys, window, &prefix).await {
            tracing::warn!(error = %e, prefix, "could not count a verified code for the fraud guard");
        }
    }
}
