//! Domain newtypes, made by `parse()` at the edge so that nothing past it passes raw strings.

use std::fmt;

use hmac::{Hmac, Mac};
use rand::Rng;
use regex_lite::Regex;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use uuid::Uuid;

/// Why an input is not a valid domain value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DomainError {
    /// The mobile does not match `MOBILE_PATTERN`.
    #[error("mobile number does not match MOBILE_PATTERN")]
    Mobile,
    /// The image-code id is not 1–64 characters of `[A-Za-z0-9_-]`.
    #[error("image code id must be 1-64 characters of [A-Za-z0-9_-]")]
    ImageCodeId,
    /// The mobile is not a valid phone number of its country (libphonenumber's rules).
    #[error("not a valid phone number")]
    PhoneNumber,
}

/// A mobile number that matched `MOBILE_PATTERN`.
#[derive(Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Mobile(String);

impl Mobile {
    /// Checks `raw` against `pattern` (`MOBILE_PATTERN`).
    pub fn parse(raw: &str, pattern: &Regex) -> Result<Self, DomainError> {
        // The pattern decides, but a mobile also ends up inside Redis keys and AMQP
        // short strings: keep it to a sane length of digits and '+'.
        let sane = !raw.is_empty() && raw.len() <= 32 && raw.bytes().all(|b| b.is_ascii_digit() || b == b'+');
        if sane && pattern.is_match(raw) { Ok(Self(raw.to_owned())) } else { Err(DomainError::Mobile) }
    }

    /// A mobile read back from our own storage (a queued job, a database row), which was
    /// parsed when it entered the system.
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The number itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The number with its middle digits hidden (`138****5678`): the only form logs carry.
    pub fn masked(&self) -> String {
        let s = &self.0;
        if s.len() < 7 {
            return "*".repeat(s.len());
        }
        format!("{}****{}", &s[..3], &s[s.len() - 4..])
    }
}

impl fmt::Debug for Mobile {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked())
    }
}

/// A recipient's number, normalised: its calling code and national number, from which each
/// provider takes the form its API documents (national digits, or E.164 `+8613812345678`).
#[derive(Clone, PartialEq, Eq)]
pub struct Recipient {
    country_code: u16,
    national: String,
}

impl Recipient {
    /// Normalises `mobile`: a number starting with `+` carries its country; any other is a
    /// national number of `default_country_code` (`DEFAULT_COUNTRY_CODE`). Numbers that are
    /// not valid for their country (libphonenumber's metadata) are refused.
    pub fn parse(mobile: &Mobile, default_country_code: u16) -> Result<Self, DomainError> {
        let number = parse_number(mobile, default_country_code)?;
        if !phonenumber::is_valid(&number) {
            return Err(DomainError::PhoneNumber);
        }
        Ok(Self { country_code: number.code().value(), national: number.national().to_string() })
    }

    /// Where `mobile` is, by the same parsing as [`parse`](Self::parse) but without
    /// libphonenumber's validity check: the api judges the country and the number range, the
    /// worker and the provider judge the number. A national number that does not parse at all
    /// counts as `default_country_code` with its digits as given; a `+` number whose calling
    /// code is unknown has no country, and is refused.
    pub fn locate(mobile: &Mobile, default_country_code: u16) -> Result<Self, DomainError> {
        match parse_number(mobile, default_country_code) {
            Ok(number) => Ok(Self { country_code: number.code().value(), national: number.national().to_string() }),
            Err(e) if mobile.as_str().starts_with('+') => Err(e),
            Err(_) => Ok(Self { country_code: default_country_code, national: mobile.as_str().to_owned() }),
        }
    }

    /// The number range the fraud guard counts this number under: `+`, the calling code and
    /// the first `digits` national digits (`+861381234`).
    pub fn prefix(&self, digits: u8) -> String {
        let end = self.national.len().min(usize::from(digits));
        format!("+{}{}", self.country_code, &self.national[..end])
    }

    /// The calling code (`86`).
    pub fn country_code(&self) -> u16 {
        self.country_code
    }

    /// The national significant number (`13812345678`).
    pub fn national(&self) -> &str {
        &self.national
    }

    /// E.164 (`+8613812345678`).
    pub fn e164(&self) -> String {
        format!("+{}{}", self.country_code, self.national)
    }

    /// The national number for the calling code `home` (`86` for the Chinese providers),
    /// E.164 for any other: the form the providers that default to one country document.
    pub fn national_in(&self, home: u16) -> String {
        if self.country_code == home { self.national.clone() } else { self.e164() }
    }
}

/// `mobile` parsed by libphonenumber: `+` numbers carry their country, others are national
/// numbers of `default_country_code`.
fn parse_number(mobile: &Mobile, default_country_code: u16) -> Result<phonenumber::PhoneNumber, DomainError> {
    use phonenumber::{country, metadata::DATABASE};
    let raw = mobile.as_str();
    let parsed = if raw.starts_with('+') {
        phonenumber::parse(None, raw)
    } else {
        let region = DATABASE
            .region(&default_country_code)
            .and_then(|regions| regions.first().and_then(|r| r.parse::<country::Id>().ok()))
            .ok_or(DomainError::PhoneNumber)?;
        phonenumber::parse(Some(region), raw)
    };
    parsed.map_err(|_| DomainError::PhoneNumber)
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "+{} {}", self.country_code, Mobile::from_stored(self.national.as_str()).masked())
    }
}

/// The id under which a captcha's text is stored: 1–64 characters of `[A-Za-z0-9_-]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ImageCodeId(String);

impl ImageCodeId {
    /// Validates `raw`.
    pub fn parse(raw: &str) -> Result<Self, DomainError> {
        let ok =
            (1..=64).contains(&raw.len()) && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
        if ok { Ok(Self(raw.to_owned())) } else { Err(DomainError::ImageCodeId) }
    }

    /// The id itself.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// A 6-digit SMS verification code. Its `Debug` hides the digits so that it cannot reach a
/// log by accident.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct SmsCode(String);

impl SmsCode {
    /// A fresh code, `%06d` of a number drawn from the thread-local CSPRNG (ChaCha,
    /// seeded from the OS).
    pub fn generate() -> Self {
        let n: u32 = rand::rng().random_range(0..1_000_000);
        Self(format!("{n:06}"))
    }

    /// A code read back from storage or typed by a user.
    pub fn from_stored(raw: impl Into<String>) -> Self {
        Self(raw.into())
    }

    /// The digits: for the provider request and Redis only.
    pub fn expose(&self) -> &str {
        &self.0
    }

    /// `code_digest`: HMAC-SHA256 of job id and code under `CODE_DIGEST_KEY`, hex. Lets ops
    /// tell whether the live code in Redis is still a job's without storing the code.
    pub fn digest(&self, key: &[u8], job_id: Uuid) -> String {
        // HMAC takes keys of any length; new_from_slice cannot fail for it.
        let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(key) else {
            return String::new();
        };
        mac.update(job_id.as_bytes());
        mac.update(self.0.as_bytes());
        mac.finalize().into_bytes().iter().map(|b| format!("{b:02x}")).collect()
    }
}

impl fmt::Debug for SmsCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SmsCode(******)")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pattern() -> Regex {
        match Regex::new(r"^1[3-9]\d{9}$") {
            Ok(r) => r,
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn mobiles_are_checked_and_masked() {
        let p = pattern();
        assert_eq!(Mobile::parse("13812345678", &p).map(|m| m.masked()), Ok("138****5678".to_owned()));
        for bad in ["", "1381234567", "23812345678", "1381234567x", "12012345678", "138123456789"] {
            assert_eq!(Mobile::parse(bad, &p), Err(DomainError::Mobile), "{bad}");
        }
        // A permissive pattern still cannot smuggle key separators into Redis keys.
        let any = Regex::new(".*").ok();
        assert!(any.is_some_and(|any| Mobile::parse("1:2", &any).is_err()));
    }

    #[test]
    fn recipients_are_normalised_to_their_country() -> Result<(), DomainError> {
        let cn = Recipient::parse(&Mobile::from_stored("13812345678"), 86)?;
        assert_eq!((cn.country_code(), cn.national(), cn.e164().as_str()), (86, "13812345678", "+8613812345678"));
        assert_eq!(cn.national_in(86), "13812345678");
        let us = Recipient::parse(&Mobile::from_stored("+14155552671"), 86)?;
        assert_eq!((us.country_code(), us.e164().as_str()), (1, "+14155552671"));
        assert_eq!(us.national_in(86), "+14155552671");
        let hk = Recipient::parse(&Mobile::from_stored("51234567"), 852)?;
        assert_eq!(hk.e164(), "+85251234567");
        assert_eq!(format!("{cn:?}"), "+86 138****5678");
        for bad in ["12345", "+8612345", "+999123456789"] {
            assert_eq!(Recipient::parse(&Mobile::from_stored(bad), 86), Err(DomainError::PhoneNumber), "{bad}");
        }
        Ok(())
    }

    #[test]
    fn numbers_are_located_without_judging_them_and_ranged_by_prefix() -> Result<(), DomainError> {
        let cn = Recipient::locate(&Mobile::from_stored("13812345678"), 86)?;
        assert_eq!(cn.prefix(7), "+861381234");
        assert_eq!(cn.prefix(15), "+8613812345678");
        let us = Recipient::locate(&Mobile::from_stored("+14155552671"), 86)?;
        assert_eq!((us.country_code(), us.prefix(3).as_str()), (1, "+1415"));
        // Not a valid Chinese number, but national: counted in the default country.
        let odd = Recipient::locate(&Mobile::from_stored("14012345678"), 86)?;
        assert_eq!(odd.country_code(), 86);
        assert!(Recipient::locate(&Mobile::from_stored("+999123456789"), 86).is_err());
        Ok(())
    }

    #[test]
    fn image_code_ids_are_bounded() {
        assert!(ImageCodeId::parse("0b8f2a1c-58b4-4a46-9d7f-3f1c2e5f4e10").is_ok());
        assert!(ImageCodeId::parse(&"a".repeat(64)).is_ok());
        for bad in ["", "a b", "a/b", "中文", &"a".repeat(65)] {
            assert!(ImageCodeId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn codes_are_six_digits_and_not_constant() {
        let codes: std::collections::HashSet<String> =
            (0..200).map(|_| SmsCode::generate().expose().to_owned()).collect();
        assert!(codes.iter().all(|c| c.len() == 6 && c.bytes().all(|b| b.is_ascii_digit())));
        assert!(codes.len() > 190, "200 draws gave only {} distinct codes", codes.len());
        assert_eq!(format!("{:?}", SmsCode::from_stored("123456")), "SmsCode(******)");
    }

    #[test]
    fn the_digest_depends_on_key_job_and_code() {
        let id = Uuid::new_v4();
        let code = SmsCode::from_stored("123456");
        let d = code.digest(b"k", id);
        assert_eq!(d.len(), 64);
        assert_ne!(d, code.digest(b"other", id));
        assert_ne!(d, code.digest(b"k", Uuid::new_v4()));
        assert_ne!(d, SmsCode::from_stored("123457").digest(b"k", id));
    }
}
