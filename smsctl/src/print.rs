//! Output: a table for people, one JSON object per line for scripts.

use std::{io::Write, time::Duration};

use shared::db::{
    attempts::{Attempt, ProviderStats},
    deliveries::{Delivery, DeliveryStatus},
};

use crate::{error::CtlError, funnel::Funnels};

/// Prints deliveries as a table, or as JSON lines.
pub fn deliveries(out: &mut impl Write, rows: &[Delivery], json: bool) -> Result<(), CtlError> {
    if json {
        for row in rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(());
    }
    writeln!(
        out,
        "{:<36}  {:<13}  {:<10}  {:<8}  {:>3}  {:<20}  {:<36}  last_error",
        "id", "mobile", "status", "provider", "try", "created_at", "replay_of"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<36}  {:<13}  {:<10}  {:<8}  {:>3}  {:<20}  {:<36}  {}",
            r.id,
            r.mobile,
            r.status.as_str(),
            r.provider,
            r.attempts,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.replay_of.map(|id| id.to_string()).unwrap_or_default(),
            r.last_error.as_deref().unwrap_or("")
        )?;
    }
    writeln!(out, "{} deliveries", rows.len())?;
    Ok(())
}

/// Prints counts by status and the funnel over `since`, as a table or one JSON object (the
/// counts by status as keys, and `funnel` with `providers` and `countries`).
pub fn stats(
    out: &mut impl Write,
    counts: &[(DeliveryStatus, i64)],
    funnel: &Funnels,
    since: Duration,
    json: bool,
) -> Result<(), CtlError> {
    if json {
        let mut map: serde_json::Map<String, serde_json::Value> =
            counts.iter().map(|(s, n)| (s.as_str().to_owned(), serde_json::Value::from(*n))).collect();
        map.insert("funnel".into(), serde_json::to_value(funnel)?);
        writeln!(out, "{}", serde_json::to_string(&map)?)?;
        return Ok(());
    }
    writeln!(out, "deliveries created in the last {}", humantime::format_duration(since))?;
    for (status, n) in counts {
        writeln!(out, "{:<11} {n}", status.as_str())?;
    }
    writeln!(out, "{:<11} {}", "total", counts.iter().map(|(_, n)| n).sum::<i64>())?;
    for (title, groups) in [("provider", &funnel.providers), ("country", &funnel.countries)] {
        writeln!(out)?;
        writeln!(
            out,
            "{title:<8}  {:>6}  {:>9}  {:>11}  {:>8}  {:>10}  {:>10}",
            "sent", "delivered", "undelivered", "verified", "delivered%", "verified%"
        )?;
        for (name, f) in groups {
            writeln!(
                out,
                "{name:<8}  {:>6}  {:>9}  {:>11}  {:>8}  {:>10}  {:>10}",
                f.sent,
                f.delivered,
                f.undelivered,
                f.verified,
                share(f.delivered, f.sent),
                share(f.verified, f.sent)
            )?;
        }
    }
    Ok(())
}

/// `part` of `whole` as a percentage with one decimal, `-` when there is no whole.
fn share(part: i64, whole: i64) -> String {
    if whole == 0 { "-".to_owned() } else { format!("{:.1}", part as f64 * 100.0 / whole as f64) }
}

/// Prints one delivery and each provider call it made: a table, or one JSON object with an
/// `attempts` array.
pub fn delivery_with_attempts(
    out: &mut impl Write,
    delivery: &Delivery,
    calls: &[Attempt],
    json: bool,
) -> Result<(), CtlError> {
    if json {
        let mut value = serde_json::to_value(delivery)?;
        value["attempts"] = serde_json::to_value(calls)?;
        writeln!(out, "{value}")?;
        return Ok(());
    }
    deliveries(out, std::slice::from_ref(delivery), false)?;
    writeln!(out, "provider calls:")?;
    writeln!(
        out,
        "  {:>3}  {:<8}  {:<14}  {:>7}  {:<20}  error / message id",
        "try", "provider", "outcome", "ms", "at"
    )?;
    for a in calls {
        writeln!(
            out,
            "  {:>3}  {:<8}  {:<14}  {:>7}  {:<20}  {}",
            a.attempt,
            a.provider,
            a.outcome,
            a.latency_ms,
            a.created_at.format("%Y-%m-%d %H:%M:%S"),
            a.error.as_deref().or(a.provider_message_id.as_deref()).unwrap_or("")
        )?;
    }
    writeln!(out, "{} calls", calls.len())?;
    Ok(())
}

/// Prints calls per provider over `since`.
pub fn providers(out: &mut impl Write, rows: &[ProviderStats], since: Duration, json: bool) -> Result<(), CtlError> {
    if json {
        for row in rows {
            writeln!(out, "{}", serde_json::to_string(row)?)?;
        }
        return Ok(());
    }
    writeln!(out, "provider calls in the last {}", humantime::format_duration(since))?;
    writeln!(
        out,
        "{:<8}  {:>6}  {:>6}  {:>9}  {:>8}  {:>9}  {:>14}  {:>10}  {:>7}  {:>7}",
        "provider",
        "calls",
        "sent",
        "transient",
        "provider",
        "recipient",
        "number_limited",
        "delivered%",
        "p50 ms",
        "p95 ms"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<8}  {:>6}  {:>6}  {:>9}  {:>8}  {:>9}  {:>14}  {:>10}  {:>7.0}  {:>7.0}",
            r.provider,
            r.calls,
            r.sent,
            r.transient,
            r.provider_side,
            r.recipient,
            r.number_limited,
            share(r.delivered, r.sent),
            r.p50_ms,
            r.p95_ms
        )?;
    }
    Ok(())
}
