//! Output: a table for people, one JSON object per line for scripts.

use std::{io::Write, time::Duration};

use shared::db::deliveries::{Delivery, DeliveryStatus};

use crate::error::CtlError;

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
        "{:<36}  {:<13}  {:<10}  {:>3}  {:<20}  {:<36}  last_error",
        "id", "mobile", "status", "try", "created_at", "replay_of"
    )?;
    for r in rows {
        writeln!(
            out,
            "{:<36}  {:<13}  {:<10}  {:>3}  {:<20}  {:<36}  {}",
            r.id,
            r.mobile,
            r.status.as_str(),
            r.attempts,
            r.created_at.format("%Y-%m-%d %H:%M:%S"),
            r.replay_of.map(|id| id.to_string()).unwrap_or_default(),
            r.last_error.as_deref().unwrap_or("")
        )?;
    }
    writeln!(out, "{} deliveries", rows.len())?;
    Ok(())
}

/// Prints counts by status over `since`, as a table or one JSON object.
pub fn stats(
    out: &mut impl Write,
    counts: &[(DeliveryStatus, i64)],
    since: Duration,
    json: bool,
) -> Result<(), CtlError> {
    if json {
        let map: serde_json::Map<String, serde_json::Value> =
            counts.iter().map(|(s, n)| (s.as_str().to_owned(), serde_json::Value::from(*n))).collect();
        writeln!(out, "{}", serde_json::to_string(&map)?)?;
    } else {
        writeln!(out, "deliveries created in the last {}", humantime::format_duration(since))?;
        for (status, n) in counts {
            writeln!(out, "{:<11} {n}", status.as_str())?;
        }
        writeln!(out, "{:<11} {}", "total", counts.iter().map(|(_, n)| n).sum::<i64>())?;
    }
    Ok(())
}
