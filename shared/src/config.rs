//! `Settings`: every environment variable the processes read (listed in the README's
//! Configuration section), parsed and validated once at start-up. An invalid value stops the
//! process with a message naming the variable.

use std::{net::SocketAddr, str::FromStr, time::Duration};

use regex_lite::Regex;
use secrecy::SecretString;

use crate::names::text_enum;

/// A configuration error: always names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

text_enum! {
    /// The RabbitMQ queue type of the send and retry queues (`AMQP_QUEUE_TYPE`).
    pub enum QueueType {
        /// Replicated, the default: survives a broker node loss.
        Quorum = "quorum",
        /// Single-node classic queues, for brokers without quorum support.
        Classic = "classic",
    }
}

text_enum! {
    /// The log output format (`LOG_FORMAT`).
    pub enum LogFormat {
        /// Human-readable lines.
        Text = "text",
        /// One JSON object per line, for log shippers.
        Json = "json",
    }
}

text_enum! {
    /// The SMS providers (`SMS_PROVIDER`); also the name recorded in `sms_deliveries.provider`.
    pub enum ProviderName {
        /// Dev only: the code goes to the worker's log.
        Log = "log",
        /// Ronglian Cloud Communications (容联云通讯).
        Ccp = "ccp",
    }
}

/// Which SMS provider the worker sends through.
#[derive(Clone, Debug)]
pub enum ProviderSettings {
    /// Dev only: writes the code to the worker's log instead of sending it.
    Log,
    /// Ronglian Cloud Communications (容联云通讯) template SMS.
    Ccp(CcpSettings),
}

/// Credentials and endpoint of the Ronglian (CCP) REST API.
#[derive(Clone, Debug)]
pub struct CcpSettings {
    /// `CCP_BASE_URL`, scheme + host + port, no trailing slash.
    pub base_url: String,
    /// `CCP_ACCOUNT_SID`.
    pub account_sid: String,
    /// `CCP_AUTH_TOKEN`: never logged.
    pub auth_token: SecretString,
    /// `CCP_APP_ID`.
    pub app_id: String,
    /// `CCP_TEMPLATE_ID`.
    pub template_id: String,
}

/// All configuration of api, worker and smsctl.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL`: PostgreSQL; the database is created at start-up when missing.
    pub database_url: String,
    /// `REDIS_URL`.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX` (default empty, the seed's keys): lets deployments or test runs
    /// share one Redis.
    pub redis_key_prefix: String,
    /// `AMQP_URL`.
    pub amqp_url: String,
    /// `AMQP_PREFIX`: the exchange name and the prefix of every queue.
    pub amqp_prefix: String,
    /// `AMQP_QUEUE_TYPE` (`quorum` | `classic`).
    pub amqp_queue_type: QueueType,
    /// `API_ADDR`: where the api listens.
    pub api_addr: SocketAddr,
    /// `MOBILE_PATTERN`: what a valid mobile looks like.
    pub mobile_pattern: Regex,
    /// `IMAGE_CODE_TTL_SECS`: captcha lifetime.
    pub image_code_ttl: Duration,
    /// `SMS_CODE_TTL_SECS`: SMS code lifetime.
    pub sms_code_ttl: Duration,
    /// `SMS_RESEND_INTERVAL_SECS`: resend cooldown per mobile.
    pub sms_resend_interval: Duration,
    /// `SMS_DAILY_LIMIT_PER_MOBILE`.
    pub sms_daily_limit_per_mobile: u32,
    /// `SMS_HOURLY_LIMIT_PER_IP`.
    pub sms_hourly_limit_per_ip: u32,
    /// `SMS_VERIFY_MAX_ATTEMPTS`: wrong tries allowed per SMS code.
    pub sms_verify_max_attempts: u32,
    /// `TRUST_PROXY_HEADERS`: take the client IP from `X-Forwarded-For`.
    pub trust_proxy_headers: bool,
    /// `API_REQUEST_TIMEOUT_SECS`: the longest any api request may take.
    pub api_request_timeout: Duration,
    /// `DEPENDENCY_TIMEOUT_MS`: the longest one Redis, PostgreSQL or broker call may take
    /// before the request answers with an errno.
    pub dependency_timeout: Duration,
    /// `WORKER_METRICS_ADDR`: where the worker serves `/healthz`, `/readyz` and `/metrics`.
    pub worker_metrics_addr: SocketAddr,
    /// `WORKER_PREFETCH`: sends in flight per worker.
    pub worker_prefetch: u16,
    /// `SMS_RETRY_SCHEDULE_SECS`: delays between attempts; one retry queue per step.
    pub sms_retry_schedule: Vec<Duration>,
    /// `SMS_PROVIDER_TIMEOUT_SECS`.
    pub sms_provider_timeout: Duration,
    /// `SMS_PROVIDER` and its keys.
    pub provider: ProviderSettings,
    /// `CODE_DIGEST_KEY`: key of the `code_digest` HMAC stored with each delivery.
    pub code_digest_key: SecretString,
    /// `LOG_FORMAT`.
    pub log_format: LogFormat,
}

/// Used when `CODE_DIGEST_KEY` is not set: fine on a laptop, a warning in production.
pub const DEV_CODE_DIGEST_KEY: &str = "smscode-dev-digest-key";

impl Settings {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_vars(|name| std::env::var(name).ok())
    }

    /// Reads configuration from `lookup` (the environment in production, a map in tests);
    /// a variable that is absent or empty takes its default.
    pub fn from_vars(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let vars = Vars(&lookup);
        let provider = match vars.parse("SMS_PROVIDER", "log")? {
            ProviderName::Log => ProviderSettings::Log,
            ProviderName::Ccp => ProviderSettings::Ccp(CcpSettings {
                base_url: vars.str("CCP_BASE_URL", "https://app.cloopen.com:8883").trim_end_matches('/').to_owned(),
                account_sid: vars.required("CCP_ACCOUNT_SID")?,
                auth_token: SecretString::from(vars.required("CCP_AUTH_TOKEN")?),
                app_id: vars.required("CCP_APP_ID")?,
                template_id: vars.str("CCP_TEMPLATE_ID", "1"),
            }),
        };
        let amqp_prefix = vars.str("AMQP_PREFIX", "sms");
        if amqp_prefix.is_empty()
            || amqp_prefix.len() > 200
            || !amqp_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid("AMQP_PREFIX", "1-200 characters of [A-Za-z0-9._-]".into()));
        }
        let settings = Settings {
            database_url: vars.str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sms"),
            redis_url: vars.str("REDIS_URL", "redis://127.0.0.1:6379"),
            redis_key_prefix: vars.str("REDIS_KEY_PREFIX", ""),
            amqp_url: vars.str("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f"),
            amqp_prefix,
            amqp_queue_type: vars.parse("AMQP_QUEUE_TYPE", "quorum")?,
            api_addr: vars.parse("API_ADDR", "0.0.0.0:8000")?,
            mobile_pattern: {
                let pattern = vars.str("MOBILE_PATTERN", r"^1[3-9]\d{9}$");
                Regex::new(&pattern).map_err(|e| invalid("MOBILE_PATTERN", e.to_string()))?
            },
            image_code_ttl: vars.secs("IMAGE_CODE_TTL_SECS", 300)?,
            sms_code_ttl: vars.secs("SMS_CODE_TTL_SECS", 300)?,
            sms_resend_interval: vars.secs("SMS_RESEND_INTERVAL_SECS", 60)?,
            sms_daily_limit_per_mobile: vars.positive("SMS_DAILY_LIMIT_PER_MOBILE", 10)?,
            sms_hourly_limit_per_ip: vars.positive("SMS_HOURLY_LIMIT_PER_IP", 30)?,
            sms_verify_max_attempts: vars.positive("SMS_VERIFY_MAX_ATTEMPTS", 5)?,
            trust_proxy_headers: vars.bool("TRUST_PROXY_HEADERS", false)?,
            api_request_timeout: vars.secs("API_REQUEST_TIMEOUT_SECS", 10)?,
            dependency_timeout: Duration::from_millis(vars.positive("DEPENDENCY_TIMEOUT_MS", 2000)?.into()),
            worker_metrics_addr: vars.parse("WORKER_METRICS_ADDR", "0.0.0.0:9100")?,
            worker_prefetch: {
                let n: u16 = vars.parse("WORKER_PREFETCH", "32")?;
                if n == 0 {
                    return Err(invalid("WORKER_PREFETCH", "must be at least 1".into()));
                }
                n
            },
            sms_retry_schedule: {
                let raw = vars.str("SMS_RETRY_SCHEDULE_SECS", "2,10,30,60,120");
                let mut steps = Vec::new();
                for part in raw.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    match part.parse::<u64>() {
                        Ok(n) if n > 0 => steps.push(Duration::from_secs(n)),
                        _ => {
                            return Err(invalid(
                                "SMS_RETRY_SCHEDULE_SECS",
                                format!("{part:?} is not a positive number of seconds"),
                            ));
                        }
                    }
                }
                if steps.is_empty() {
                    return Err(invalid("SMS_RETRY_SCHEDULE_SECS", "needs at least one delay".into()));
                }
                steps
            },
            sms_provider_timeout: vars.secs("SMS_PROVIDER_TIMEOUT_SECS", 5)?,
            provider,
            code_digest_key: SecretString::from(vars.str("CODE_DIGEST_KEY", DEV_CODE_DIGEST_KEY)),
            log_format: vars.parse("LOG_FORMAT", "text")?,
        };
        Ok(settings)
    }

    /// Logs a warning for settings that are fine on a laptop but not in production.
    pub fn warn_about_dev_defaults(&self) {
        use secrecy::ExposeSecret;
        if self.code_digest_key.expose_secret() == DEV_CODE_DIGEST_KEY {
            tracing::warn!("CODE_DIGEST_KEY is not set: using the development key");
        }
        if matches!(self.provider, ProviderSettings::Log) {
            tracing::warn!("SMS_PROVIDER=log: codes are written to the worker's log, not sent");
        }
    }

    /// The provider `SMS_PROVIDER` names.
    pub fn provider_name(&self) -> ProviderName {
        match &self.provider {
            ProviderSettings::Log => ProviderName::Log,
            ProviderSettings::Ccp(_) => ProviderName::Ccp,
        }
    }

    /// The template the send jobs name (`CCP_TEMPLATE_ID`; `1`, the test template, for `log`).
    pub fn provider_template_id(&self) -> &str {
        match &self.provider {
            ProviderSettings::Ccp(ccp) => &ccp.template_id,
            ProviderSettings::Log => "1",
        }
    }

    /// The SMS code lifetime in whole minutes, as the provider template's `{2}` (`"5"`).
    pub fn sms_code_ttl_minutes(&self) -> u64 {
        self.sms_code_ttl.as_secs().div_ceil(60)
    }
}

fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError { var, reason }
}

struct Vars<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    fn str(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| invalid(name, "required when SMS_PROVIDER=ccp".into()))
    }

    fn parse<T: FromStr>(&self, name: &'static str, default: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.str(name, default);
        raw.parse().map_err(|e| invalid(name, format!("{raw:?}: {e}")))
    }

    fn positive(&self, name: &'static str, default: u32) -> Result<u32, ConfigError> {
        match self.parse::<u32>(name, &default.to_string())? {
            0 => Err(invalid(name, "must be at least 1".into())),
            n => Ok(n),
        }
    }

    fn secs(&self, name: &'static str, default: u32) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.positive(name, default)?.into()))
    }

    fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(invalid(name, format!("{other:?}: expected true or false"))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let pairs: Vec<(String, String)> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        Settings::from_vars(move |name| pairs.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone()))
    }

    #[test]
    fn defaults_match_the_spec() -> Result<(), ConfigError> {
        let s = with(&[])?;
        assert_eq!(s.api_addr.to_string(), "0.0.0.0:8000");
        assert_eq!(s.amqp_prefix, "sms");
        assert_eq!(s.sms_code_ttl, Duration::from_secs(300));
        assert_eq!(s.sms_code_ttl_minutes(), 5);
        assert_eq!(s.worker_prefetch, 32);
        assert_eq!(s.sms_daily_limit_per_mobile, 10);
        assert_eq!(s.sms_hourly_limit_per_ip, 30);
        assert_eq!(s.sms_retry_schedule.iter().map(Duration::as_secs).collect::<Vec<_>>(), [2, 10, 30, 60, 120]);
        assert!(s.mobile_pattern.is_match("19912345678"));
        assert!(!s.mobile_pattern.is_match("12912345678"));
        assert!(matches!(s.provider, ProviderSettings::Log));
        Ok(())
    }

    #[test]
    fn an_invalid_value_names_its_variable() {
        for (var, value) in [
            ("API_ADDR", "nowhere"),
            ("SMS_CODE_TTL_SECS", "-1"),
            ("WORKER_PREFETCH", "0"),
            ("SMS_RETRY_SCHEDULE_SECS", "2,x"),
            ("TRUST_PROXY_HEADERS", "maybe"),
            ("MOBILE_PATTERN", "(["),
            ("SMS_PROVIDER", "carrier-pigeon"),
            ("AMQP_PREFIX", "has space"),
        ] {
            let err = with(&[(var, value)]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(var), "{var}={value} gave {err:?}");
        }
    }

    #[test]
    fn ccp_requires_its_credentials() {
        let err = with(&[("SMS_PROVIDER", "ccp")]).err().map(|e| e.var);
        assert_eq!(err, Some("CCP_ACCOUNT_SID"));
    }
}
