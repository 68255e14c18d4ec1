//! Redis key builders. `ImageCode_<id>` and `SMS_<mobile>` are the seed's keys, so an existing
//! register view keeps working; the rate-limit keys are this project's own (see the README).
//! Every key starts with `REDIS_KEY_PREFIX` (empty by default).

use std::net::{IpAddr, Ipv6Addr};

use chrono::{DateTime, Timelike, Utc};

use crate::{
    BEIJING, Settings,
    domain::{ImageCodeId, Mobile},
};

/// Builds every Redis key the services use.
#[derive(Clone, Debug, Default)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    /// Keys under `prefix` (`REDIS_KEY_PREFIX`).
    pub fn new(prefix: impl Into<String>) -> Self {
        Self { prefix: prefix.into() }
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// `ImageCode_<id>`: the captcha text.
    pub fn image_code(&self, id: &ImageCodeId) -> String {
        format!("{}ImageCode_{}", self.prefix, id.as_str())
    }

    /// `SMS_<mobile>`: the live SMS code.
    pub fn sms_code(&self, mobile: &Mobile) -> String {
        format!("{}SMS_{}", self.prefix, mobile.as_str())
    }

    /// `SMSCooldown_<mobile>`: present while a resend is not allowed.
    pub fn resend_cooldown(&self, mobile: &Mobile) -> String {
        format!("{}SMSCooldown_{}", self.prefix, mobile.as_str())
    }

    /// `SMSDaily_<mobile>_<yyyymmdd>`: codes sent to a mobile on one Beijing day.
    pub fn daily_count(&self, mobile: &Mobile, now: DateTime<Utc>) -> String {
        let day = now.with_timezone(&BEIJING).format("%Y%m%d");
        format!("{}SMSDaily_{}_{day}", self.prefix, mobile.as_str())
    }

    /// `SMSIpHourly_<ip>_<yyyymmddhh>`: codes requested from one client IP ([`ip_bucket`]) in
    /// one hour.
    pub fn ip_hourly_count(&self, ip: IpAddr, now: DateTime<Utc>) -> String {
        self.per_ip_hour("SMSIpHourly", ip, now)
    }

    /// `ImageCodeIpHourly_<ip>_<yyyymmddhh>`: captchas issued to one client IP ([`ip_bucket`])
    /// in one hour.
    pub fn image_code_ip_hourly(&self, ip: IpAddr, now: DateTime<Utc>) -> String {
        self.per_ip_hour("ImageCodeIpHourly", ip, now)
    }

    /// `SMSAttempts_<mobile>`: wrong tries against the live SMS code.
    pub fn verify_attempts(&self, mobile: &Mobile) -> String {
        format!("{}SMSAttempts_{}", self.prefix, mobile.as_str())
    }

    /// `RegisterFailIp_<ip>_<yyyymmddhh>`: wrong SMS codes sent from one client IP
    /// ([`ip_bucket`]) in one hour.
    pub fn register_failures(&self, ip: IpAddr, now: DateTime<Utc>) -> String {
        self.per_ip_hour("RegisterFailIp", ip, now)
    }

    /// `FraudWindow_<prefix>`: a hash of the fraud guard's counts for one number prefix
    /// (`+861381234`): per time bucket `s<bucket>` (codes sent) and `v<bucket>` (codes
    /// verified), their totals over the window `s` and `v`, and `p`, the oldest bucket that
    /// may still hold counts. Expires one window after its last count.
    pub fn fraud_window(&self, prefix: &str) -> String {
        format!("{}FraudWindow_{prefix}", self.prefix)
    }

    /// `FraudBlock_<prefix>`: present while a number prefix is blocked; its TTL is what is
    /// left of the block, its value `<sends> <verified>` when it was set.
    pub fn fraud_block(&self, prefix: &str) -> String {
        format!("{}FraudBlock_{prefix}", self.prefix)
    }

    /// `FraudWatched`: a sorted set of the number prefixes with counts, scored by the time of
    /// their last count (ms): what `smsctl fraud` lists, without `KEYS`.
    pub fn fraud_watched(&self) -> String {
        format!("{}FraudWatched", self.prefix)
    }

    /// `FraudBlocked`: a sorted set of the blocked number prefixes, scored by the end of their
    /// block (ms).
    pub fn fraud_blocked(&self) -> String {
        format!("{}FraudBlocked", self.prefix)
    }

    /// `<name>_<ip bucket>_<yyyymmddhh>`: the one shape of every per-IP hourly counter.
    fn per_ip_hour(&self, name: &str, ip: IpAddr, now: DateTime<Utc>) -> String {
        let hour = now.with_timezone(&BEIJING).format("%Y%m%d%H");
        format!("{}{name}_{}_{hour}", self.prefix, ip_bucket(ip))
    }
}

impl From<&Settings> for Keys {
    /// The keys of a deployment (`REDIS_KEY_PREFIX`).
    fn from(settings: &Settings) -> Self {
        Self::new(settings.redis_key_prefix.clone())
    }
}

/// The client a per-IP limit counts: an IPv4 address as is, an IPv6 address by its /64
/// (`2001:db8:1:2::/64`), because one subscriber or host gets a whole /64 and could otherwise
/// take a fresh budget per address. An IPv4-mapped IPv6 address counts as its IPv4 address.
pub fn ip_bucket(ip: IpAddr) -> String {
    match ip.to_canonical() {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let network = u128::from(v6) & !(u128::from(u64::MAX));
            format!("{}/64", Ipv6Addr::from(network))
        }
    }
}

/// Seconds until the Beijing day of `now` ends: the TTL of a daily counter.
pub fn secs_until_day_end(now: DateTime<Utc>) -> u64 {
    let local = now.with_timezone(&BEIJING);
    let elapsed = u64::from(local.num_seconds_from_midnight());
    86_400 - elapsed
}

/// Seconds until the hour of `now` ends: the TTL of an hourly counter.
pub fn secs_until_hour_end(now: DateTime<Utc>) -> u64 {
    let elapsed = u64::from(now.minute() * 60 + now.second());
    3_600 - elapsed
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn seed_keys_are_kept() -> Result<(), crate::domain::DomainError> {
        let keys = Keys::default();
        let mobile = Mobile::from_stored("13812345678");
        assert_eq!(keys.sms_code(&mobile), "SMS_13812345678");
        assert_eq!(keys.image_code(&ImageCodeId::parse("abc-1")?), "ImageCode_abc-1");
        assert_eq!(Keys::new("t1:").sms_code(&mobile), "t1:SMS_13812345678");
        Ok(())
    }

    #[test]
    fn ipv6_clients_are_counted_per_64_and_ipv4_per_address() -> Result<(), std::net::AddrParseError> {
        let bucket = |s: &str| s.parse().map(ip_bucket);
        assert_eq!(bucket("203.0.113.7")?, "203.0.113.7");
        assert_eq!(bucket("::ffff:203.0.113.7")?, "203.0.113.7");
        assert_eq!(bucket("2001:db8:1:2::1")?, "2001:db8:1:2::/64");
        assert_eq!(bucket("2001:db8:1:2:ffff:ffff:ffff:ffff")?, "2001:db8:1:2::/64");
        assert_ne!(bucket("2001:db8:1:3::1")?, bucket("2001:db8:1:2::1")?);
        assert_eq!(bucket("::1")?, "::/64");
        let key = Keys::new("p:").ip_hourly_count("2001:db8::5".parse()?, Utc::now());
        assert!(key.starts_with("p:SMSIpHourly_2001:db8::/64_"), "{key}");
        Ok(())
    }

    #[test]
    fn windows_follow_beijing_time() {
        // 2026-01-01 15:59:30 UTC is 23:59:30 in Beijing: 30 s left in the day.
        let t = Utc.with_ymd_and_hms(2026, 1, 1, 15, 59, 30).single();
        let Some(t) = t else { panic!("valid time") };
        assert_eq!(secs_until_day_end(t), 30);
        assert_eq!(secs_until_hour_end(t), 30);
        let mobile = Mobile::from_stored("13812345678");
        assert!(Keys::default().daily_count(&mobile, t).ends_with("_20260101"));
    }
}
