//! Reading environment-style variables: defaults, required values, typed parsing, and the
//! error that names the variable at fault.

use std::{str::FromStr, time::Duration};

/// A configuration error: always names the variable at fault.
#[derive(Debug, thiserror::Error)]
#[error("invalid configuration: {var}: {reason}")]
pub struct ConfigError {
    /// The environment variable at fault.
    pub var: &'static str,
    /// What is wrong with its value.
    pub reason: String,
}

/// A `ConfigError` for `var`.
pub(super) fn invalid(var: &'static str, reason: String) -> ConfigError {
    ConfigError { var, reason }
}

/// The variables, as a lookup function; absent and empty values are the same.
pub(super) struct Vars<'a>(pub(super) &'a dyn Fn(&str) -> Option<String>);

impl Vars<'_> {
    pub(super) fn get(&self, name: &str) -> Option<String> {
        (self.0)(name).map(|v| v.trim().to_owned()).filter(|v| !v.is_empty())
    }

    pub(super) fn str(&self, name: &str, default: &str) -> String {
        self.get(name).unwrap_or_else(|| default.to_owned())
    }

    /// A value that must be set; `why` says when (`"required when SMS_PROVIDERS has ccp"`).
    pub(super) fn required(&self, name: &'static str, why: &str) -> Result<String, ConfigError> {
        self.get(name).ok_or_else(|| invalid(name, why.to_owned()))
    }

    pub(super) fn parse<T: FromStr>(&self, name: &'static str, default: &str) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let raw = self.str(name, default);
        raw.parse().map_err(|e| invalid(name, format!("{raw:?}: {e}")))
    }

    pub(super) fn positive(&self, name: &'static str, default: u32) -> Result<u32, ConfigError> {
        match self.parse::<u32>(name, &default.to_string())? {
            0 => Err(invalid(name, "must be at least 1".into())),
            n => Ok(n),
        }
    }

    pub(super) fn secs(&self, name: &'static str, default: u32) -> Result<Duration, ConfigError> {
        Ok(Duration::from_secs(self.positive(name, default)?.into()))
    }

    /// A positive number of seconds no larger than `max`: a value far beyond any sensible one
    /// (a code living for years, a timeout of decades) is a typo, and would overflow the dates
    /// and TTLs computed from it further on.
    pub(super) fn secs_at_most(&self, name: &'static str, default: u32, max: u32) -> Result<Duration, ConfigError> {
        let secs = self.secs(name, default)?;
        if secs.as_secs() > u64::from(max) {
            return Err(invalid(name, format!("{} s is more than the maximum, {max} s", secs.as_secs())));
        }
        Ok(secs)
    }

    pub(super) fn bool(&self, name: &'static str, default: bool) -> Result<bool, ConfigError> {
        match self.get(name).as_deref().map(str::to_ascii_lowercase).as_deref() {
            None => Ok(default),
            Some("true" | "1" | "yes" | "on") => Ok(true),
            Some("false" | "0" | "no" | "off") => Ok(false),
            Some(other) => Err(invalid(name, format!("{other:?}: expected true or false"))),
        }
    }

    /// A base URL: `http(s)://…`, without its trailing slash.
    pub(super) fn url(&self, name: &'static str, default: &str) -> Result<String, ConfigError> {
        let url = self.str(name, default).trim_end_matches('/').to_owned();
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url)
        } else {
            Err(invalid(name, format!("{url:?}: expected an http:// or https:// URL")))
        }
    }
}
