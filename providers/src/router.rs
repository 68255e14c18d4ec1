//! The failover router: the providers of `SMS_PROVIDERS`, in order, each with the countries
//! it serves and its circuit breaker. One call of [`Router::send`] is one round over a
//! number's route.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use shared::{
    Settings,
    config::{Countries, ProviderName, ProviderSettings},
};

use crate::{
    aliyun,
    breaker::{Admission, Breaker, BreakerState},
    ccp, log,
    provider::{Accepted, Message, SendError, SmsProvider},
    tencent, twilio,
};

/// The client of one configured provider, its HTTP requests bounded by `timeout`
/// (`SMS_PROVIDER_TIMEOUT_SECS`). Adding a provider adds one arm here. Fails only when the
/// TLS backend cannot be set up.
pub fn build(settings: &ProviderSettings, timeout: Duration) -> Result<Arc<dyn SmsProvider>, reqwest::Error> {
    Ok(match settings {
        ProviderSettings::Log(_) => Arc::new(log::LogProvider),
        ProviderSettings::Ccp(s) => Arc::new(ccp::CcpProvider::new(s.clone(), timeout)?),
        ProviderSettings::Aliyun(s) => Arc::new(aliyun::AliyunProvider::new(s.clone(), timeout)?),
        ProviderSettings::Tencent(s) => Arc::new(tencent::TencentProvider::new(s.clone(), timeout)?),
        ProviderSettings::Twilio(s) => Arc::new(twilio::TwilioProvider::new(s.clone(), timeout)?),
    })
}

/// One provider call of a round, as recorded in `sms_attempts`.
#[derive(Debug)]
pub struct Call {
    /// Who was called.
    pub provider: ProviderName,
    /// What it answered.
    pub result: Result<Accepted, SendError>,
    /// How long it took.
    pub latency: Duration,
}

/// How a round ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Routed {
    /// The last call's provider accepted the message.
    Sent,
    /// The last call's answer ends the delivery: the recipient is refused, or the provider's
    /// per-number frequency limit was hit.
    Refused,
    /// Every provider of the route failed (transient or provider-side) or was skipped by an
    /// open breaker: the job waits for the next step of the retry schedule.
    RoundFailed,
    /// No provider of `SMS_PROVIDERS` serves the number's calling code.
    NoRoute,
}

/// A round: the calls made, in order, and how it ended.
#[derive(Debug)]
pub struct Round {
    /// Every provider call, in order (none when every breaker was open or there is no route).
    pub calls: Vec<Call>,
    /// How it ended.
    pub routed: Routed,
    /// Providers of the route skipped because their breaker was open.
    pub skipped: Vec<ProviderName>,
}

impl Round {
    /// The last call, if any was made.
    pub fn last(&self) -> Option<&Call> {
        self.calls.last()
    }
}

struct Entry {
    provider: Arc<dyn SmsProvider>,
    countries: Countries,
    breaker: Breaker,
}

/// The configured providers, in order.
pub struct Router {
    entries: Vec<Entry>,
    timeout: Duration,
}

impl Router {
    /// The providers of `SMS_PROVIDERS` with their clients built, breakers per
    /// `PROVIDER_BREAKER_*`, calls bounded by `SMS_PROVIDER_TIMEOUT_SECS`.
    pub fn from_settings(settings: &Settings) -> Result<Self, reqwest::Error> {
        let mut providers = Vec::with_capacity(settings.providers.len());
        for provider in &settings.providers {
            providers.push((build(provider, settings.sms_provider_timeout)?, provider.countries().clone()));
        }
        Ok(Self::new(providers, settings))
    }

    /// A router over given clients (tests pass clients pointed at local fakes).
    pub fn new(providers: Vec<(Arc<dyn SmsProvider>, Countries)>, settings: &Settings) -> Self {
        let entries = providers
            .into_iter()
            .map(|(provider, countries)| {
                let breaker = Breaker::new(settings.provider_breaker_failures, settings.provider_breaker_open);
                metrics::gauge!("smscode_worker_provider_breaker_state", "provider" => provider.name().as_str())
                    .set(BreakerState::Closed as u8 as f64);
                Entry { provider, countries, breaker }
            })
            .collect();
        Self { entries, timeout: settings.sms_provider_timeout }
    }

    /// The longest one round can take: every provider called, each until its timeout.
    pub fn round_budget(&self) -> Duration {
        self.timeout * u32::try_from(self.entries.len()).unwrap_or(u32::MAX)
    }

    /// The first provider that serves `country_code` (what a new delivery row names before
    /// any call is made).
    pub fn first_for(&self, country_code: u16) -> Option<ProviderName> {
        self.entries.iter().find(|e| e.countries.serves(country_code)).map(|e| e.provider.name())
    }

    /// One round over the message's route: providers that serve its number, in order. A
    /// transient or provider-side failure goes at once to the next provider; a success or an
    /// answer that ends the delivery stops the round. Providers whose breaker is open are
    /// skipped (the half-open probe is let through).
    pub async fn send(&self, message: &Message<'_>) -> Round {
        let country = message.recipient.country_code();
        let mut round = Round { calls: Vec::new(), routed: Routed::NoRoute, skipped: Vec::new() };
        for entry in self.entries.iter().filter(|e| e.countries.serves(country)) {
            round.routed = Routed::RoundFailed;
            let name = entry.provider.name();
            if entry.breaker.admit(Instant::now()) == Admission::Skip {
                round.skipped.push(name);
                continue;
            }
            let started = Instant::now();
            let result = tokio::time::timeout(self.timeout, entry.provider.send(message))
                .await
                .unwrap_or_else(|_| Err(SendError::Transient(format!("{name} timed out after {:?}", self.timeout))));
            let latency = started.elapsed();
            let healthy = result.as_ref().map_or_else(|e| !e.fails_over(), |_| true);
            let state = entry.breaker.record(healthy, Instant::now());
            let outcome = result.as_ref().map_or_else(SendError::class, |_| "sent");
            metrics::counter!("smscode_worker_provider_requests_total", "provider" => name.as_str(), "outcome" => outcome)
                .increment(1);
            metrics::histogram!("smscode_worker_provider_duration_seconds", "provider" => name.as_str())
                .record(latency.as_secs_f64());
            metrics::gauge!("smscode_worker_provider_breaker_state", "provider" => name.as_str())
                .set(state as u8 as f64);
            let done = match &result {
                Ok(_) => Some(Routed::Sent),
                Err(e) if !e.fails_over() => Some(Routed::Refused),
                Err(_) => None,
            };
            round.calls.push(Call { provider: name, result, latency });
            if let Some(routed) = done {
                round.routed = routed;
                return round;
            }
        }
        round
    }
}
