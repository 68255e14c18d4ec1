//! `Settings`: every environment variable the processes read (listed in the README's
//! Configuration section), parsed and validated once at start-up. An invalid value stops the
//! process with a message naming the variable.

mod providers;
mod vars;

use std::{net::SocketAddr, time::Duration};

pub use providers::{
    AliyunSettings, CcpSettings, Countries, DEFAULT_TEXT_TEMPLATE, LogSettings, ProviderName, ProviderSettings,
    TencentSettings, TwilioSender, TwilioSettings,
};
use regex_lite::Regex;
use secrecy::SecretString;
pub use vars::ConfigError;
use vars::{Vars, invalid};

use crate::names::text_enum;

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
    /// `SMS_PROVIDERS` (or `SMS_PROVIDER`), in order, each with its settings.
    pub providers: Vec<ProviderSettings>,
    /// `DEFAULT_COUNTRY_CODE` (86): the country of a mobile written without `+`.
    pub default_country_code: u16,
    /// `PROVIDER_BREAKER_FAILURES` (5): failures in a row that open a provider's breaker.
    pub provider_breaker_failures: u32,
    /// `PROVIDER_BREAKER_OPEN_SECS` (30): how long an open breaker skips its provider.
    pub provider_breaker_open: Duration,
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
        let providers = providers::parse(&vars)?;
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
            providers,
            default_country_code: {
                let code: u16 = vars.parse("DEFAULT_COUNTRY_CODE", "86")?;
                if !(1..=999).contains(&code) {
                    return Err(invalid("DEFAULT_COUNTRY_CODE", format!("{code} is not a calling code (1-999)")));
                }
                code
            },
            provider_breaker_failures: vars.positive("PROVIDER_BREAKER_FAILURES", 5)?,
            provider_breaker_open: vars.secs("PROVIDER_BREAKER_OPEN_SECS", 30)?,
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
        if self.providers.iter().any(|p| p.name() == ProviderName::Log) {
            tracing::warn!("the log provider is configured: codes are written to the worker's log, not sent");
        }
    }

    /// The template the send jobs name: that of the first provider of `SMS_PROVIDERS`
    /// (`CCP_TEMPLATE_ID` for ccp, `1` for log). Each provider sends its own template; this is
    /// what `sms_deliveries.template_id` records.
    pub fn provider_template_id(&self) -> &str {
        self.providers.first().map_or("1", ProviderSettings::template_id)
    }

    /// The SMS code lifetime in whole minutes, as the provider template's `{2}` (`"5"`).
    pub fn sms_code_ttl_minutes(&self) -> u64 {
        self.sms_code_ttl.as_secs().div_ceil(60)
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
        assert!(matches!(s.providers.as_slice(), [ProviderSettings::Log(_)]));
        assert_eq!(s.default_country_code, 86);
        assert_eq!((s.provider_breaker_failures, s.provider_breaker_open), (5, Duration::from_secs(30)));
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
    fn each_provider_requires_its_credentials() {
        for (list, var) in [
            ("ccp", "CCP_ACCOUNT_SID"),
            ("aliyun", "ALIYUN_ACCESS_KEY_ID"),
            ("tencent", "TENCENT_SECRET_ID"),
            ("twilio", "TWILIO_ACCOUNT_SID"),
            ("log,log", "SMS_PROVIDERS"),
            ("log,fax", "SMS_PROVIDERS"),
        ] {
            let err = with(&[("SMS_PROVIDERS", list)]).err();
            assert_eq!(err.as_ref().map(|e| e.var), Some(var), "{list}: {err:?}");
        }
        let err = with(&[("SMS_PROVIDER", "ccp")]).err().map(|e| e.var);
        assert_eq!(err, Some("CCP_ACCOUNT_SID"), "SMS_PROVIDER is the one-provider form");
    }

    #[test]
    fn providers_keep_their_order_and_countries() -> Result<(), ConfigError> {
        let s = with(&[
            ("SMS_PROVIDERS", "tencent, twilio"),
            ("TENCENT_SECRET_ID", "id"),
            ("TENCENT_SECRET_KEY", "key"),
            ("TENCENT_SMS_SDK_APP_ID", "1400006666"),
            ("TENCENT_SIGN_NAME", "sign"),
            ("TENCENT_TEMPLATE_ID", "1110"),
            ("TENCENT_COUNTRIES", "86, +852"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "token"),
            ("TWILIO_MESSAGING_SERVICE_SID", "MG1"),
            ("RECEIPT_BASE_URL", "https://sms.example.com/"),
        ])?;
        let names: Vec<ProviderName> = s.providers.iter().map(ProviderSettings::name).collect();
        assert_eq!(names, [ProviderName::Tencent, ProviderName::Twilio]);
        assert_eq!(s.providers[0].countries(), &Countries::Codes(vec![86, 852]));
        assert!(s.providers[1].countries().serves(1));
        let ProviderSettings::Twilio(twilio) = &s.providers[1] else { panic!("twilio settings") };
        assert_eq!(twilio.sender, TwilioSender::MessagingService("MG1".into()));
        assert_eq!(twilio.status_callback.as_deref(), Some("https://sms.example.com/receipts/twilio"));
        assert_eq!(s.provider_template_id(), "1110");
        for (var, value) in [("TENCENT_COUNTRIES", "china"), ("TWILIO_FROM", "+1555"), ("SMS_TEXT_TEMPLATE", "no code")]
        {
            let mut pairs = vec![
                ("SMS_PROVIDERS", "tencent,twilio"),
                ("TENCENT_SECRET_ID", "id"),
                ("TENCENT_SECRET_KEY", "key"),
                ("TENCENT_SMS_SDK_APP_ID", "1"),
                ("TENCENT_SIGN_NAME", "s"),
                ("TENCENT_TEMPLATE_ID", "1"),
                ("TWILIO_ACCOUNT_SID", "AC1"),
                ("TWILIO_AUTH_TOKEN", "t"),
                ("TWILIO_MESSAGING_SERVICE_SID", "MG1"),
            ];
            pairs.push((var, value));
            assert_eq!(with(&pairs).err().map(|e| e.var), Some(var), "{var}={value}");
        }
        Ok(())
    }
}
