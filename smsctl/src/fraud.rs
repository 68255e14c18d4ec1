//! `smsctl fraud`: the fraud guard's blocked and watched number prefixes, and lifting a block.
//! Reads and writes only Redis, through `shared::fraud`.

use std::{io::Write, time::Duration};

use serde_json::json;
use shared::{
    Settings, StartError,
    fraud::{self, Report, Window},
    keys::Keys,
};

use crate::{cli::FraudAction, error::CtlError};

/// Runs `smsctl fraud [unblock PREFIX]`. `Ok(false)` when the prefix to unblock was not
/// blocked, so that a mistyped prefix does not pass for a lifted block.
pub async fn run(
    settings: &Settings,
    action: Option<FraudAction>,
    limit: usize,
    json: bool,
    out: &mut impl Write,
) -> Result<bool, CtlError> {
    let mut redis = shared::cache::connect(settings).map_err(StartError::from)?;
    let keys = Keys::from(settings);
    match action {
        Some(FraudAction::Unblock { prefix }) => match fraud::unblock(&mut redis, &keys, &prefix).await? {
            Some(left) => {
                writeln!(
                    out,
                    "unblocked {prefix} ({} of its block were left); its window counts were reset, so it is \
                     blocked again only after FRAUD_MIN_SENDS ({}) new sends with too few verified",
                    humantime::format_duration(whole_secs(left)),
                    settings.fraud.min_sends
                )?;
                Ok(true)
            }
            None => {
                writeln!(out, "{prefix} is not blocked: nothing changed")?;
                Ok(false)
            }
        },
        None => {
            let report = fraud::report(&mut redis, &keys, Window::from(&settings.fraud)).await?;
            print(out, &report, settings, limit, json)?;
            Ok(true)
        }
    }
}

/// Prints the blocked prefixes and the `limit` watched ones with most sends: two tables, or
/// one JSON object.
fn print(out: &mut impl Write, report: &Report, settings: &Settings, limit: usize, json: bool) -> Result<(), CtlError> {
    let f = &settings.fraud;
    let watched = &report.watched[..report.watched.len().min(limit)];
    if json {
        let value = json!({
            "window_secs": f.window.as_secs(),
            "min_sends": f.min_sends,
            "min_conversion": f.min_conversion,
            "blocked": report.blocked.iter().map(|b| json!({
                "prefix": b.prefix,
                "remaining_secs": b.remaining.as_secs(),
                "sends": b.sends,
                "verified": b.verified,
            })).collect::<Vec<_>>(),
            "watched": watched.iter().map(|w| json!({
                "prefix": w.prefix,
                "sends": w.sends,
                "verified": w.verified,
                "conversion": w.conversion(),
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{value}")?;
        return Ok(());
    }
    writeln!(out, "blocked prefixes: {}", report.blocked.len())?;
    if !report.blocked.is_empty() {
        writeln!(out, "  {:<18}  {:>12}  {:>7}  {:>8}", "prefix", "remaining", "sends", "verified")?;
        for b in &report.blocked {
            let left = humantime::format_duration(whole_secs(b.remaining)).to_string();
            writeln!(out, "  {:<18}  {:>12}  {:>7}  {:>8}", b.prefix, left, b.sends, b.verified)?;
        }
    }
    writeln!(
        out,
        "watched prefixes in the last {}: {} (blocked at >= {} sends and < {:.1}% verified)",
        humantime::format_duration(f.window),
        report.watched.len(),
        f.min_sends,
        f.min_conversion * 100.0
    )?;
    if !watched.is_empty() {
        writeln!(out, "  {:<18}  {:>7}  {:>8}  {:>10}", "prefix", "sends", "verified", "conversion")?;
        for w in watched {
            let conversion = format!("{:.1}%", w.conversion() * 100.0);
            writeln!(out, "  {:<18}  {:>7}  {:>8}  {:>10}", w.prefix, w.sends, w.verified, conversion)?;
        }
        if watched.len() < report.watched.len() {
            writeln!(out, "  … {} more (--limit)", report.watched.len() - watched.len())?;
        }
    }
    Ok(())
}

/// `d` without its fraction of a second, for printing.
fn whole_secs(d: Duration) -> Duration {
    Duration::from_secs(d.as_secs())
}
