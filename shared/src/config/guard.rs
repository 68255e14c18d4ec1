//! The settings of the features that sit around the send path rather than on it: delivery
//! receipts (`RECEIPT_*`), the fraud guard against SMS pumping (`SMS_ALLOWED_COUNTRIES`,
//! `FRAUD_*`) and the fixed codes of test numbers (`SMS_TEST_NUMBERS`).

use std::time::Duration;

use secrecy::SecretString;

use super::{
    Countries,
    vars::{ConfigError, Vars, invalid},
};

/// Where providers push delivery reports, and how those pushes are authenticated.
#[derive(Clone, Debug, Default)]
pub struct ReceiptSettings {
    /// `RECEIPT_BASE_URL` (no trailing slash): the public URL of the api, as the providers
    /// reach it. Twilio signs the full URL, so its reports can only be checked when this is set.
    pub base_url: Option<String>,
    /// `RECEIPT_TOKEN`: the secret `token` query parameter that ccp, aliyun and tencent reports
    /// must carry (they sign nothing). Unset: their receipt endpoints answer 404.
    pub token: Option<SecretString>,
    /// `TWILIO_AUTH_TOKEN`: the key of `X-Twilio-Signature`. Read here even when the api has no
    /// `SMS_PROVIDERS`: the api checks reports, the worker sends.
    pub twilio_auth_token: Option<SecretString>,
}

/// The fraud guard: per number prefix, codes sent against codes used.
#[derive(Clone, Debug)]
pub struct FraudSettings {
    /// `SMS_ALLOWED_COUNTRIES` (`86`): the calling codes sms_code accepts at all.
    pub allowed_countries: Countries,
    /// `FRAUD_PREFIX_DIGITS` (7, 1-15): national digits that, after the calling code, make a
    /// prefix (a number range sold to one operator).
    pub prefix_digits: u8,
    /// `FRAUD_WINDOW_SECS` (3600): the sliding window sends and verifications are counted over.
    pub window: Duration,
    /// `FRAUD_MIN_SENDS` (50): sends in the window before the conversion is judged.
    pub min_sends: u32,
    /// `FRAUD_MIN_CONVERSION` (0.05): the verified/sent share under which a prefix is blocked.
    pub min_conversion: f64,
    /// `FRAUD_BLOCK_SECS` (3600): how long a block lasts.
    pub block: Duration,
}

/// One `SMS_TEST_NUMBERS` entry: a mobile (as the client sends it) and its fixed code.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TestNumber {
    /// The mobile, as in `SMS_<mobile>`.
    pub mobile: String,
    /// Its fixed six-digit code.
    pub code: String,
}

impl ReceiptSettings {
    /// The URL Twilio is given as `StatusCallback` and signs its reports over:
    /// `RECEIPT_BASE_URL` + `/receipts/twilio`; `None` without a base URL.
    pub fn twilio_callback(&self) -> Option<String> {
        self.base_url.as_ref().map(|base| format!("{base}/receipts/twilio"))
    }
}

pub(super) fn receipts(vars: &Vars<'_>) -> Result<ReceiptSettings, ConfigError> {
    Ok(ReceiptSettings {
        base_url: match vars.get("RECEIPT_BASE_URL") {
            Some(_) => Some(vars.url("RECEIPT_BASE_URL", "")?),
            None => None,
        },
        token: vars.get("RECEIPT_TOKEN").map(SecretString::from),
        twilio_auth_token: vars.get("TWILIO_AUTH_TOKEN").map(SecretString::from),
    })
}

pub(super) fn fraud(vars: &Vars<'_>) -> Result<FraudSettings, ConfigError> {
    let prefix_digits: u8 = vars.parse("FRAUD_PREFIX_DIGITS", "7")?;
    if !(1..=15).contains(&prefix_digits) {
        return Err(invalid("FRAUD_PREFIX_DIGITS", format!("{prefix_digits}: expected 1-15 digits")));
    }
    let min_conversion: f64 = vars.parse("FRAUD_MIN_CONVERSION", "0.05")?;
    if !(0.0..=1.0).contains(&min_conversion) {
        return Err(invalid("FRAUD_MIN_CONVERSION", format!("{min_conversion}: expected a share from 0 to 1")));
    }
    Ok(FraudSettings {
        allowed_countries: Countries::parse("SMS_ALLOWED_COUNTRIES", &vars.str("SMS_ALLOWED_COUNTRIES", "86"))?,
        prefix_digits,
        window: vars.secs_at_most("FRAUD_WINDOW_SECS", 3600, 7 * 86_400)?,
        min_sends: vars.positive("FRAUD_MIN_SENDS", 50)?,
        min_conversion,
        block: vars.secs_at_most("FRAUD_BLOCK_SECS", 3600, 30 * 86_400)?,
    })
}

/// `SMS_TEST_NUMBERS`: `mobile:code` pairs, comma-separated; each code six digits.
pub(super) fn test_numbers(vars: &Vars<'_>) -> Result<Vec<TestNumber>, ConfigError> {
    let var = "SMS_TEST_NUMBERS";
    let mut numbers: Vec<TestNumber> = Vec::new();
    for part in vars.str(var, "").split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let Some((mobile, code)) = part.split_once(':').map(|(m, c)| (m.trim(), c.trim())) else {
            return Err(invalid(var, format!("{part:?}: expected mobile:code")));
        };
        if mobile.is_empty() || code.len() != 6 || !code.bytes().all(|b| b.is_ascii_digit()) {
            return Err(invalid(var, format!("{mobile:?}: expected a mobile and a six-digit code")));
        }
        if numbers.iter().any(|n| n.mobile == mobile) {
            return Err(invalid(var, format!("{mobile} is listed twice")));
        }
        numbers.push(TestNumber { mobile: mobile.to_owned(), code: code.to_owned() });
    }
    Ok(numbers)
}
