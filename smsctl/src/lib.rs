//! `smsctl`: what on-call engineers run to see deliveries and to resend the failed ones
//! whose code is still live, without writing SQL.
//!
//! - [`Cli`] (`cli.rs`): the subcommands and flags.
//! - `replay.rs`: replaying a failed delivery at most once.
//! - `fraud.rs`: the fraud guard's blocked and watched prefixes (Redis only).
//! - `print.rs`: tables and JSON lines; `funnel.rs`: sent → delivered → verified, grouped.
//!
//! Every statement it runs is in `shared::db::deliveries`.

mod cli;
mod error;
mod fraud;
mod funnel;
mod print;
mod replay;

use std::io::Write;

pub use cli::{Cli, Command, FraudAction};
pub use error::CtlError;
use replay::{Replayer, Summary};
use shared::{
    Settings, StartError,
    db::{self, attempts, deliveries, receipts},
};

/// PostgreSQL connections: smsctl runs one statement at a time.
const DB_POOL_SIZE: u32 = 2;

/// Runs `cli`, writing to `out`. `Ok(false)` when something failed (exit status 1).
pub async fn run(cli: Cli, settings: &Settings, out: &mut impl Write) -> Result<bool, CtlError> {
    // The fraud guard lives in Redis only: no database needed.
    if let Command::Fraud { action, limit, json } = cli.command {
        return fraud::run(settings, action, limit, json, out).await;
    }
    let db = db::connect(settings, DB_POOL_SIZE).await.map_err(StartError::from)?;
    match cli.command {
        Command::Deliveries { id: Some(id), json, .. } => {
            let Some(delivery) = deliveries::by_ids(&db, &[id]).await?.into_iter().next() else {
                writeln!(out, "no such delivery: {id}")?;
                return Ok(false);
            };
            print::delivery_with_attempts(out, &delivery, &attempts::of_delivery(&db, id).await?, json)?;
            Ok(true)
        }
        Command::Deliveries { id: None, status, mobile, since, limit, json } => {
            let filter = deliveries::Filter { status, mobile: mobile.as_deref(), since, limit: Some(limit) };
            print::deliveries(out, &deliveries::list(&db, &filter).await?, json)?;
            Ok(true)
        }
        Command::Providers { since, json } => {
            print::providers(out, &attempts::stats_by_provider(&db, since).await?, since, json)?;
            Ok(true)
        }
        Command::Stats { since, json } => {
            let counts = deliveries::count_by_status(&db, since).await?;
            let funnel = funnel::Funnels::of(&receipts::funnel(&db, since).await?, settings.default_country_code);
            print::stats(out, &counts, &funnel, since, json)?;
            Ok(true)
        }
        Command::Replay { stale: Some(still_for), dry_run, .. } => {
            let replayer = Replayer::new(settings, db.clone())?;
            let mut summary = Summary::default();
            for delivery in deliveries::stale(&db, still_for).await? {
                let outcome = replayer.requeue(&delivery, dry_run).await;
                summary.count(&outcome);
                writeln!(out, "{}", outcome.line(&delivery, dry_run))?;
            }
            writeln!(
                out,
                "requeue{}: {} requeued, {} skipped, {} failed",
                if dry_run { " (dry run)" } else { "" },
                summary.replayed,
                summary.skipped,
                summary.failed
            )?;
            Ok(summary.failed == 0)
        }
        // Run above without connecting to PostgreSQL; the same call here keeps the match whole.
        Command::Fraud { action, limit, json } => fraud::run(settings, action, limit, json, out).await,
        Command::Replay { ids, status, since, mobile, dry_run, stale: None } => {
            let candidates = if ids.is_empty() {
                let filter = deliveries::Filter { status, mobile: mobile.as_deref(), since: Some(since), limit: None };
                deliveries::list(&db, &filter).await?
            } else {
                deliveries::by_ids(&db, &ids).await?
            };
            let mut summary = Summary::default();
            for id in ids.iter().filter(|id| !candidates.iter().any(|c| c.id == **id)) {
                writeln!(out, "failed   {id}: no such delivery")?;
                summary.failed += 1;
            }
            let replayer = Replayer::new(settings, db)?;
            for delivery in &candidates {
                let outcome = replayer.replay(delivery, dry_run).await;
                summary.count(&outcome);
                writeln!(out, "{}", outcome.line(delivery, dry_run))?;
            }
            writeln!(
                out,
                "replay{}: {} replayed, {} skipped, {} failed{}",
                if dry_run { " (dry run)" } else { "" },
                summary.replayed,
                summary.skipped,
                summary.failed,
                if summary.unconfirmed > 0 { format!(", {} unconfirmed", summary.unconfirmed) } else { String::new() }
            )?;
            Ok(summary.failed == 0 && summary.unconfirmed == 0)
        }
    }
}
