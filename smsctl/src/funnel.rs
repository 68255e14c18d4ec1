//! The funnel sent → delivered → verified, per provider and per country: the rows come per
//! provider and mobile from `shared::db::receipts`, the country from the mobile's calling code
//! (national numbers are in `DEFAULT_COUNTRY_CODE`).

use std::collections::BTreeMap;

use serde::Serialize;
use shared::{
    db::receipts::{Funnel, FunnelRow},
    domain::{Mobile, Recipient},
};

/// The funnel, grouped two ways.
#[derive(Debug, Default, Serialize)]
pub struct Funnels {
    /// By provider name.
    pub providers: BTreeMap<String, Funnel>,
    /// By calling code (`86`), or `unknown` for a number libphonenumber does not take.
    pub countries: BTreeMap<String, Funnel>,
}

impl Funnels {
    /// Groups `rows`.
    pub fn of(rows: &[FunnelRow], default_country_code: u16) -> Self {
        let mut funnels = Self::default();
        for row in rows {
            let country = Recipient::parse(&Mobile::from_stored(row.mobile.as_str()), default_country_code)
                .map_or_else(|_| "unknown".to_owned(), |r| r.country_code().to_string());
            *funnels.providers.entry(row.provider.clone()).or_default() += row.funnel();
            *funnels.countries.entry(country).or_default() += row.funnel();
        }
        funnels
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(provider: &str, mobile: &str, sent: i64, delivered: i64, verified: i64) -> FunnelRow {
        FunnelRow { provider: provider.into(), mobile: mobile.into(), sent, delivered, undelivered: 0, verified }
    }

    #[test]
    fn rows_are_grouped_by_provider_and_calling_code() {
        let rows = [
            row("ccp", "13812345678", 2, 2, 1),
            row("twilio", "+14155552671", 1, 1, 1),
            row("twilio", "13912345678", 1, 0, 0),
            row("log", "12345", 1, 0, 0),
        ];
        let funnels = Funnels::of(&rows, 86);
        assert_eq!(funnels.providers["twilio"], Funnel { sent: 2, delivered: 1, undelivered: 0, verified: 1 });
        assert_eq!(funnels.countries["86"], Funnel { sent: 3, delivered: 2, undelivered: 0, verified: 1 });
        assert_eq!(funnels.countries["1"].verified, 1);
        assert_eq!(funnels.countries["unknown"].sent, 1);
    }
}
