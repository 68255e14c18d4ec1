//! `Settings`: every environment variable the processes read (listed in the README's
//! Configuration section), parsed and validated once at start-up. An invalid value stops the
//! process with a message naming the variable.

mod guard;
mod providers;
mod vars;

use std::{net::SocketAddr, time::Duration};

pub use guard::{FraudSettings, ReceiptSettings, TestNumber};
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

text_enum! {
    /// Where the process runs (`APP_ENV`): production refuses the settings that are only fit
    /// for a laptop instead of warning about them.
    pub enum AppEnv {
        /// The default: dev defaults (digest key, `log` provider, plain-HTTP fakes) only warn.
        Development = "development",
        /// Dev defaults stop start-up, naming the variable.
        Production = "production",
    }
}

/// RabbitMQ's largest `x-message-ttl` (2^32-1 ms), in whole seconds: a retry queue cannot
/// delay a message longer, and the broker refuses to declare one that would.
pub const MAX_RETRY_DELAY_SECS: u64 = 4_294_967;

/// The most steps `SMS_RETRY_SCHEDULE_SECS` may have (each distinct step is a queue).
const MAX_RETRY_STEPS: usize = 50;

/// The longest a captcha or code may live, and the longest resend cooldown: one day (the
/// daily limit covers longer spans).
const MAX_TTL_SECS: u32 = 86_400;

/// The longest `DEPENDENCY_TIMEOUT_MS`: a minute (a dependency slower than that is down).
const MAX_DEPENDENCY_TIMEOUT_MS: u32 = 60_000;

/// All configuration of api, worker and smsctl.
#[derive(Clone, Debug)]
pub struct Settings {
    /// `DATABASE_URL`: PostgreSQL; the database is created at start-up when missing.
    pub database_url: String,
    /// `DATABASE_MIGRATION_URL` (default `DATABASE_URL`): a direct connection for the
    /// migrations, which hold a session-level lock that a transaction pooler cannot carry.
    pub database_migration_url: String,
    /// `DATABASE_PREPARED_STATEMENTS` (true): false switches sqlx's named prepared-statement
    /// cache off, for a pooler that cannot carry prepared statements across transactions.
    pub database_prepared_statements: bool,
    /// `REDIS_URL`: `redis://…` for one server, or
    /// `redis+sentinel://host:port,host:port/<master>` to follow a Sentinel group's primary.
    pub redis_url: String,
    /// `REDIS_KEY_PREFIX` (default empty, the seed's keys): lets deployments or test runs
    /// share one Redis.
    pub redis_key_prefix: String,
    /// `AMQP_URL`: one broker, or the nodes of one cluster, comma-separated (see
    /// [`Settings::amqp_nodes`]).
    pub amqp_url: String,
    /// `AMQP_PREFIX`: the exchange name and the prefix of every queue.
    pub amqp_prefix: String,
    /// `AMQP_QUEUE_TYPE` (`quorum` | `classic`).
    pub amqp_queue_type: QueueType,
    /// `AMQP_QUORUM_SIZE` (3): the initial replica count of each quorum queue.
    pub amqp_quorum_size: u16,
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
    /// `REGISTER_HOURLY_FAILURES_PER_IP` (30): wrong SMS codes allowed per client IP per hour.
    pub register_hourly_failures_per_ip: u32,
    /// `IMAGE_CODE_HOURLY_LIMIT_PER_IP` (600): captchas issued per client IP per hour.
    pub image_code_hourly_limit_per_ip: u32,
    /// `TRUST_PROXY_HEADERS`: take the client IP from `X-Forwarded-For`.
    pub trust_proxy_headers: bool,
    /// `TRUSTED_PROXY_HOPS` (1, at most 10): which `X-Forwarded-For` entry, counted from the
    /// right, our own proxies wrote; entries left of it are the client's to forge.
    pub trusted_proxy_hops: u8,
    /// `API_HEADER_TIMEOUT_SECS` (10): the longest a client may take to send its request
    /// headers (a client that trickles them is cut off).
    pub api_header_timeout: Duration,
    /// `API_MAX_CONNECTIONS` (4096): connections the api serves at once.
    pub api_max_connections: usize,
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
    /// Which of the two variables listed them (for error messages).
    pub providers_var: &'static str,
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
    /// `APP_ENV` (`development` | `production`).
    pub app_env: AppEnv,
    /// `RECEIPT_BASE_URL`, `RECEIPT_TOKEN`, `TWILIO_AUTH_TOKEN`: the receipt endpoints.
    pub receipts: ReceiptSettings,
    /// `SMS_ALLOWED_COUNTRIES` and `FRAUD_*`: the fraud guard.
    pub fraud: FraudSettings,
    /// `SMS_TEST_NUMBERS`: numbers with a fixed code that are never sent an SMS.
    pub sms_test_numbers: Vec<TestNumber>,
}

fn split_nodes(url: &str) -> Vec<&str> {
    url.split(',').map(str::trim).filter(|n| !n.is_empty()).collect()
}

/// Why a development setting is refused.
const PRODUCTION_ONLY: &str = "not allowed with APP_ENV=production";

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
        let receipts = guard::receipts(&vars)?;
        let (providers_var, providers) = providers::parse(&vars, &receipts)?;
        let amqp_prefix = vars.str("AMQP_PREFIX", "sms");
        if amqp_prefix.is_empty()
            || amqp_prefix.len() > 200
            || !amqp_prefix.chars().all(|c| c.is_ascii_alphanumeric() || "._-".contains(c))
        {
            return Err(invalid("AMQP_PREFIX", "1-200 characters of [A-Za-z0-9._-]".into()));
        }
        let database_url = vars.str("DATABASE_URL", "postgres://postgres@127.0.0.1:5432/sms");
        let amqp_url = vars.str("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/%2f");
        let nodes = split_nodes(&amqp_url);
        if nodes.is_empty() {
            return Err(invalid("AMQP_URL", "lists no broker node".into()));
        }
        if let Some(bad) = nodes.iter().position(|n| !(n.starts_with("amqp://") || n.starts_with("amqps://"))) {
            return Err(invalid("AMQP_URL", format!("node {} is not an amqp:// or amqps:// URL", bad + 1)));
        }
        let settings = Settings {
            database_migration_url: vars.str("DATABASE_MIGRATION_URL", &database_url),
            database_url,
            database_prepared_statements: vars.bool("DATABASE_PREPARED_STATEMENTS", true)?,
            redis_url: vars.str("REDIS_URL", "redis://127.0.0.1:6379"),
            redis_key_prefix: vars.str("REDIS_KEY_PREFIX", ""),
            amqp_url,
            amqp_prefix,
            amqp_queue_type: vars.parse("AMQP_QUEUE_TYPE", "quorum")?,
            amqp_quorum_size: {
                let n: u16 = vars.parse("AMQP_QUORUM_SIZE", "3")?;
                if !(1..=99).contains(&n) {
                    return Err(invalid("AMQP_QUORUM_SIZE", format!("{n}: expected 1-99 replicas")));
                }
                n
            },
            api_addr: vars.parse("API_ADDR", "0.0.0.0:8000")?,
            mobile_pattern: {
                let pattern = vars.str("MOBILE_PATTERN", r"^1[3-9]\d{9}$");
                Regex::new(&pattern).map_err(|e| invalid("MOBILE_PATTERN", e.to_string()))?
            },
            image_code_ttl: vars.secs_at_most("IMAGE_CODE_TTL_SECS", 300, MAX_TTL_SECS)?,
            sms_code_ttl: vars.secs_at_most("SMS_CODE_TTL_SECS", 300, MAX_TTL_SECS)?,
            sms_resend_interval: vars.secs_at_most("SMS_RESEND_INTERVAL_SECS", 60, MAX_TTL_SECS)?,
            sms_daily_limit_per_mobile: vars.positive("SMS_DAILY_LIMIT_PER_MOBILE", 10)?,
            sms_hourly_limit_per_ip: vars.positive("SMS_HOURLY_LIMIT_PER_IP", 30)?,
            sms_verify_max_attempts: vars.positive("SMS_VERIFY_MAX_ATTEMPTS", 5)?,
            register_hourly_failures_per_ip: vars.positive("REGISTER_HOURLY_FAILURES_PER_IP", 30)?,
            image_code_hourly_limit_per_ip: vars.positive("IMAGE_CODE_HOURLY_LIMIT_PER_IP", 600)?,
            trust_proxy_headers: vars.bool("TRUST_PROXY_HEADERS", false)?,
            trusted_proxy_hops: {
                let hops: u8 = vars.parse("TRUSTED_PROXY_HOPS", "1")?;
                if !(1..=10).contains(&hops) {
                    return Err(invalid("TRUSTED_PROXY_HOPS", format!("{hops}: expected 1-10 proxies")));
                }
                hops
            },
            api_header_timeout: vars.secs_at_most("API_HEADER_TIMEOUT_SECS", 10, 3600)?,
            api_max_connections: usize::try_from(vars.positive("API_MAX_CONNECTIONS", 4096)?).unwrap_or(usize::MAX),
            api_request_timeout: vars.secs_at_most("API_REQUEST_TIMEOUT_SECS", 15, 3600)?,
            dependency_timeout: {
                let ms = vars.positive("DEPENDENCY_TIMEOUT_MS", 2000)?;
                if ms > MAX_DEPENDENCY_TIMEOUT_MS {
                    return Err(invalid(
                        "DEPENDENCY_TIMEOUT_MS",
                        format!("{ms} ms is more than the maximum, {MAX_DEPENDENCY_TIMEOUT_MS} ms"),
                    ));
                }
                Duration::from_millis(ms.into())
            },
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
                        Ok(n) if n > MAX_RETRY_DELAY_SECS => {
                            return Err(invalid(
                                "SMS_RETRY_SCHEDULE_SECS",
                                format!(
                                    "{n} s is longer than RabbitMQ can delay a message (x-message-ttl is at most \
                                     2^32-1 ms, {MAX_RETRY_DELAY_SECS} s)"
                                ),
                            ));
                        }
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
                if steps.len() > MAX_RETRY_STEPS {
                    return Err(invalid(
                        "SMS_RETRY_SCHEDULE_SECS",
                        format!("{} steps: at most {MAX_RETRY_STEPS}", steps.len()),
                    ));
                }
                steps
            },
            sms_provider_timeout: vars.secs_at_most("SMS_PROVIDER_TIMEOUT_SECS", 5, 300)?,
            providers,
            providers_var,
            default_country_code: {
                let code: u16 = vars.parse("DEFAULT_COUNTRY_CODE", "86")?;
                if !(1..=999).contains(&code) {
                    return Err(invalid("DEFAULT_COUNTRY_CODE", format!("{code} is not a calling code (1-999)")));
                }
                code
            },
            provider_breaker_failures: vars.positive("PROVIDER_BREAKER_FAILURES", 5)?,
            provider_breaker_open: vars.secs_at_most("PROVIDER_BREAKER_OPEN_SECS", 30, MAX_TTL_SECS)?,
            code_digest_key: SecretString::from(vars.str("CODE_DIGEST_KEY", DEV_CODE_DIGEST_KEY)),
            log_format: vars.parse("LOG_FORMAT", "text")?,
            app_env: vars.parse("APP_ENV", "development")?,
            receipts,
            fraud: guard::fraud(&vars)?,
            sms_test_numbers: guard::test_numbers(&vars)?,
        };
        if settings.app_env == AppEnv::Production {
            settings.refuse_dev_settings()?;
        }
        // The sms_code path makes at most five dependency calls (check, lookup, store,
        // publish, give back), each bounded by DEPENDENCY_TIMEOUT_MS: the request timeout must
        // outlast them, or a slow request would answer "timed out" while its job gets queued.
        let worst = settings.dependency_timeout * 5 + Duration::from_secs(1);
        if settings.api_request_timeout <= worst {
            return Err(invalid(
                "API_REQUEST_TIMEOUT_SECS",
                format!("must be longer than 5 × DEPENDENCY_TIMEOUT_MS + 1 s ({} ms)", worst.as_millis()),
            ));
        }
        Ok(settings)
    }

    /// The broker nodes of `AMQP_URL`, in the order given: several URLs separated by commas
    /// are nodes of one cluster (a comma inside a password must be written `%2C`).
    pub fn amqp_nodes(&self) -> Vec<&str> {
        split_nodes(&self.amqp_url)
    }

    /// In production, the dev digest key is an error: anyone can compute it.
    fn refuse_dev_settings(&self) -> Result<(), ConfigError> {
        use secrecy::ExposeSecret;
        if self.code_digest_key.expose_secret() == DEV_CODE_DIGEST_KEY {
            return Err(invalid(
                "CODE_DIGEST_KEY",
                format!("unset or the development key: {PRODUCTION_ONLY}; set a secret one"),
            ));
        }
        if !self.sms_test_numbers.is_empty() {
            return Err(invalid(
                "SMS_TEST_NUMBERS",
                format!("fixed codes let anyone who knows them register those numbers: {PRODUCTION_ONLY}"),
            ));
        }
        Ok(())
    }

    /// In production, the providers that are only fit for a laptop are errors: the `log`
    /// provider (codes go to a log, not to phones) and a provider reached over plain HTTP
    /// (credentials and codes in clear on the network). Checked by the worker, the one process
    /// that sends: the api does not need provider settings at all.
    pub fn refuse_dev_providers(&self) -> Result<(), ConfigError> {
        if self.app_env != AppEnv::Production {
            return Ok(());
        }
        if self.providers.iter().any(|p| p.name() == ProviderName::Log) {
            return Err(invalid(
                self.providers_var,
                format!(
                    "the log provider (the default) writes codes to the log instead of sending them: {PRODUCTION_ONLY}"
                ),
            ));
        }
        for provider in &self.providers {
            if let Some((var, url)) = provider.base_url()
                && !url.starts_with("https://")
            {
                return Err(invalid(var, format!("{url:?} is not https://: {PRODUCTION_ONLY}")));
            }
        }
        Ok(())
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
        if !self.sms_test_numbers.is_empty() {
            let mobiles: Vec<&str> = self.sms_test_numbers.iter().map(|n| n.mobile.as_str()).collect();
            tracing::warn!(
                mobiles = %mobiles.join(","),
                "SMS_TEST_NUMBERS is set: these numbers get their fixed code and are never sent an SMS"
            );
        }
    }

    /// The fixed code of `mobile` if it is one of `SMS_TEST_NUMBERS`.
    pub fn test_code(&self, mobile: &str) -> Option<&str> {
        self.sms_test_numbers.iter().find(|n| n.mobile == mobile).map(|n| n.code.as_str())
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
        assert_eq!(s.image_code_hourly_limit_per_ip, 600);
        assert_eq!((s.trust_proxy_headers, s.trusted_proxy_hops), (false, 1));
        assert_eq!(s.sms_retry_schedule.iter().map(Duration::as_secs).collect::<Vec<_>>(), [2, 10, 30, 60, 120]);
        assert!(s.mobile_pattern.is_match("19912345678"));
        assert!(!s.mobile_pattern.is_match("12912345678"));
        assert!(matches!(s.providers.as_slice(), [ProviderSettings::Log(_)]));
        assert_eq!(s.default_country_code, 86);
        assert_eq!((s.provider_breaker_failures, s.provider_breaker_open), (5, Duration::from_secs(30)));
        assert_eq!(s.database_migration_url, s.database_url);
        assert!(s.database_prepared_statements);
        assert_eq!(s.amqp_quorum_size, 3);
        assert_eq!(s.fraud.allowed_countries, Countries::Codes(vec![86]));
        assert_eq!((s.fraud.prefix_digits, s.fraud.min_sends, s.fraud.min_conversion), (7, 50, 0.05));
        assert_eq!((s.fraud.window, s.fraud.block), (Duration::from_secs(3600), Duration::from_secs(3600)));
        assert!(s.sms_test_numbers.is_empty());
        assert!(s.receipts.base_url.is_none() && s.receipts.token.is_none() && s.receipts.twilio_auth_token.is_none());
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
            ("AMQP_QUORUM_SIZE", "0"),
            ("DATABASE_PREPARED_STATEMENTS", "sometimes"),
            ("RECEIPT_BASE_URL", "ftp://example.com"),
            ("SMS_ALLOWED_COUNTRIES", "china"),
            ("FRAUD_PREFIX_DIGITS", "0"),
            ("FRAUD_MIN_CONVERSION", "1.5"),
            ("FRAUD_MIN_SENDS", "0"),
            ("FRAUD_WINDOW_SECS", "0"),
            ("SMS_TEST_NUMBERS", "13800138000"),
            ("SMS_TEST_NUMBERS", "13800138000:12345"),
            ("SMS_TEST_NUMBERS", "13800138000:123456,13800138000:654321"),
            ("AMQP_URL", " , "),
            ("AMQP_URL", "amqp://a:5672,rabbit-2:5672"),
        ] {
            let err = with(&[(var, value)]).err().map(|e| e.to_string()).unwrap_or_default();
            assert!(err.contains(var), "{var}={value} gave {err:?}");
        }
    }

    #[test]
    fn amqp_url_may_list_the_nodes_of_a_cluster() -> Result<(), ConfigError> {
        let s = with(&[("AMQP_URL", "amqp://u:p@r1:5672/%2f, amqp://u:p@r2:5672/%2f,,amqps://u:p@r3:5671/%2f")])?;
        assert_eq!(s.amqp_nodes(), ["amqp://u:p@r1:5672/%2f", "amqp://u:p@r2:5672/%2f", "amqps://u:p@r3:5671/%2f"]);
        assert_eq!(with(&[])?.amqp_nodes(), ["amqp://guest:guest@127.0.0.1:5672/%2f"]);
        Ok(())
    }

    #[test]
    fn test_numbers_and_the_migration_url_are_read() -> Result<(), ConfigError> {
        let s = with(&[
            ("SMS_TEST_NUMBERS", " 13800138000:123456 , +15005550006:000000"),
            ("DATABASE_URL", "postgres://app@pgbouncer:6432/sms"),
            ("DATABASE_MIGRATION_URL", "postgres://app@db:5432/sms"),
            ("SMS_ALLOWED_COUNTRIES", "86,1"),
        ])?;
        let numbers: Vec<(&str, &str)> =
            s.sms_test_numbers.iter().map(|n| (n.mobile.as_str(), n.code.as_str())).collect();
        assert_eq!(numbers, [("13800138000", "123456"), ("+15005550006", "000000")]);
        assert_eq!(s.database_migration_url, "postgres://app@db:5432/sms");
        assert!(s.fraud.allowed_countries.serves(1) && !s.fraud.allowed_countries.serves(44));
        Ok(())
    }

    #[test]
    fn trusted_proxy_hops_is_bounded_to_one_through_ten() -> Result<(), ConfigError> {
        assert_eq!(with(&[("TRUSTED_PROXY_HOPS", "10")])?.trusted_proxy_hops, 10);
        for bad in ["0", "11", "-1", "300", "two"] {
            let err = with(&[("TRUSTED_PROXY_HOPS", bad)]).err().map(|e| e.var);
            assert_eq!(err, Some("TRUSTED_PROXY_HOPS"), "{bad}");
        }
        let err = with(&[("IMAGE_CODE_HOURLY_LIMIT_PER_IP", "0")]).err().map(|e| e.var);
        assert_eq!(err, Some("IMAGE_CODE_HOURLY_LIMIT_PER_IP"));
        Ok(())
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

    /// A production configuration that passes: a secret digest key and a real provider over
    /// HTTPS.
    const PRODUCTION: [(&str, &str); 6] = [
        ("APP_ENV", "production"),
        ("CODE_DIGEST_KEY", "a-long-random-secret"),
        ("SMS_PROVIDERS", "ccp"),
        ("CCP_ACCOUNT_SID", "sid"),
        ("CCP_AUTH_TOKEN", "token"),
        ("CCP_APP_ID", "app"),
    ];

    /// The settings a worker would start with (the provider checks included).
    fn production_with(pairs: &[(&'static str, &'static str)]) -> Result<Settings, ConfigError> {
        let mut all: Vec<(&str, &str)> = PRODUCTION.to_vec();
        for (k, v) in pairs {
            all.retain(|(name, _)| name != k);
            all.push((k, v));
        }
        with(&all).and_then(|s| s.refuse_dev_providers().map(|()| s))
    }

    #[test]
    fn production_refuses_the_dev_digest_key_the_log_provider_and_plain_http() -> Result<(), ConfigError> {
        assert_eq!(production_with(&[])?.app_env, AppEnv::Production);
        for (pairs, var) in [
            (vec![("CODE_DIGEST_KEY", "")], "CODE_DIGEST_KEY"),
            (vec![("CODE_DIGEST_KEY", DEV_CODE_DIGEST_KEY)], "CODE_DIGEST_KEY"),
            (vec![("SMS_TEST_NUMBERS", "13800138000:123456")], "SMS_TEST_NUMBERS"),
            (vec![("SMS_PROVIDERS", "ccp,log")], "SMS_PROVIDERS"),
            (vec![("SMS_PROVIDERS", ""), ("SMS_PROVIDER", "log")], "SMS_PROVIDER"),
            (vec![("SMS_PROVIDERS", "")], "SMS_PROVIDERS"),
            (vec![("CCP_BASE_URL", "http://app.cloopen.com:8883")], "CCP_BASE_URL"),
        ] {
            let err = production_with(&pairs).err();
            assert_eq!(err.as_ref().map(|e| e.var), Some(var), "{pairs:?}: {err:?}");
            let message = err.map(|e| e.to_string()).unwrap_or_default();
            assert!(message.contains(var) && message.contains("APP_ENV=production"), "{message}");
        }
        let err = production_with(&[
            ("SMS_PROVIDERS", "ccp,twilio"),
            ("TWILIO_ACCOUNT_SID", "AC1"),
            ("TWILIO_AUTH_TOKEN", "t"),
            ("TWILIO_FROM", "+15005550006"),
            ("TWILIO_BASE_URL", "http://127.0.0.1:9"),
        ])
        .err();
        assert_eq!(err.map(|e| e.var), Some("TWILIO_BASE_URL"));
        Ok(())
    }

    #[test]
    fn development_only_warns_about_the_same_settings() -> Result<(), ConfigError> {
        let s = with(&[("SMS_PROVIDERS", "log"), ("CCP_BASE_URL", "http://127.0.0.1:9")])?;
        assert_eq!(s.app_env, AppEnv::Development);
        let s = with(&[("APP_ENV", "development")])?;
        assert!(matches!(s.providers.as_slice(), [ProviderSettings::Log(_)]));
        assert_eq!(with(&[("APP_ENV", "prod")]).err().map(|e| e.var), Some("APP_ENV"));
        Ok(())
    }

    #[test]
    fn a_retry_delay_beyond_the_brokers_ttl_limit_stops_start_up() -> Result<(), ConfigError> {
        let s = with(&[("SMS_RETRY_SCHEDULE_SECS", "2,4294967")])?;
        assert_eq!(s.sms_retry_schedule.last().map(Duration::as_secs), Some(MAX_RETRY_DELAY_SECS));
        let err = with(&[("SMS_RETRY_SCHEDULE_SECS", "2,4294968")]).err();
        assert_eq!(err.as_ref().map(|e| e.var), Some("SMS_RETRY_SCHEDULE_SECS"));
        let message = err.map(|e| e.to_string()).unwrap_or_default();
        assert!(message.contains("x-message-ttl"), "{message}");
        let steps = vec!["1"; MAX_RETRY_STEPS + 1].join(",");
        assert_eq!(with(&[("SMS_RETRY_SCHEDULE_SECS", &steps)]).err().map(|e| e.var), Some("SMS_RETRY_SCHEDULE_SECS"));
        Ok(())
    }

    #[test]
    fn durations_beyond_their_bound_name_their_variable() -> Result<(), ConfigError> {
        for (var, max) in [
            ("IMAGE_CODE_TTL_SECS", "86400"),
            ("SMS_CODE_TTL_SECS", "86400"),
            ("SMS_RESEND_INTERVAL_SECS", "86400"),
            ("SMS_PROVIDER_TIMEOUT_SECS", "300"),
            ("PROVIDER_BREAKER_OPEN_SECS", "86400"),
            ("DEPENDENCY_TIMEOUT_MS", "60000"),
        ] {
            // The longest request timeout, so that it outlasts the longest dependency timeout.
            let timeout = ("API_REQUEST_TIMEOUT_SECS", "3600");
            with(&[(var, max), timeout])?;
            let over = (max.parse::<u64>().unwrap_or(0) + 1).to_string();
            let err = with(&[(var, &over), timeout]).err();
            assert_eq!(err.as_ref().map(|e| e.var), Some(var), "{var}={over}: {err:?}");
            assert!(err.map(|e| e.to_string()).unwrap_or_default().contains("maximum"));
        }
        for var in ["SMS_CODE_TTL_SECS", "API_REQUEST_TIMEOUT_SECS"] {
            let err = with(&[(var, "4294967295")]).err().map(|e| e.var);
            assert_eq!(err, Some(var));
        }
        Ok(())
    }
}
