//! The command line: subcommands and their flags.

use std::{str::FromStr, time::Duration};

use clap::{Parser, Subcommand};
use shared::db::deliveries::DeliveryStatus;
use uuid::Uuid;

/// smsctl: list, count and replay SMS deliveries (the `sms_deliveries` table); see and lift
/// the fraud guard's blocks.
///
/// Reads the same environment as api and worker (DATABASE_URL, REDIS_URL, AMQP_URL,
/// AMQP_PREFIX, REDIS_KEY_PREFIX, CODE_DIGEST_KEY, FRAUD_*).
///
/// Provider outage drill: `smsctl stats --since 1h` shows the failed count; `smsctl
/// deliveries --status failed --since 1h` shows why (last_error); once the provider is back,
/// `smsctl replay --status failed --since 1h --dry-run` shows what would be resent, and the
/// same without --dry-run resends it. Codes live 5 minutes: older failures are reported as
/// expired and skipped, never resent.
#[derive(Debug, Parser)]
#[command(name = "smsctl", version)]
pub struct Cli {
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// List deliveries, newest first; with --id, one delivery and each provider call it made.
    Deliveries {
        /// Only this delivery, with its provider calls (sms_attempts).
        #[arg(long, conflicts_with_all = ["status", "mobile", "since"])]
        id: Option<Uuid>,
        /// Only this status: sending, sent, retrying, failed, expired, superseded, delivered or
        /// undelivered.
        #[arg(long, value_parser = DeliveryStatus::from_str)]
        status: Option<DeliveryStatus>,
        /// Only this mobile.
        #[arg(long)]
        mobile: Option<String>,
        /// Only deliveries created within this window, e.g. 30m, 1h, 2d.
        #[arg(long, value_parser = window)]
        since: Option<Duration>,
        /// At most this many rows.
        #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(i64).range(0..))]
        limit: i64,
        /// One JSON object per line instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Resend failed deliveries whose code is still live in Redis, as new jobs linked by
    /// replay_of. A code that expired or was replaced by a newer one is reported and
    /// skipped; a delivery is never replayed twice (safe to run twice or concurrently).
    /// A replay the broker did not confirm may be queued: it is kept, marked unconfirmed
    /// (`deliveries --status retrying` shows it), and a re-run skips it.
    /// Exits 1 when a replay failed or is unconfirmed.
    Replay {
        /// These deliveries (repeat --id for several).
        #[arg(long = "id", required_unless_present_any = ["status", "stale"], conflicts_with_all = ["status", "stale"])]
        ids: Vec<Uuid>,
        /// Instead: requeue deliveries left `sending` or `retrying` that have not moved for this
        /// long (their job was lost), as the same job, while their code is live, e.g. 10m.
        #[arg(long, value_parser = window, conflicts_with = "status")]
        stale: Option<Duration>,
        /// Every delivery with this status within --since (only `failed` is replayed).
        #[arg(long, value_parser = DeliveryStatus::from_str)]
        status: Option<DeliveryStatus>,
        /// With --status: the window, e.g. 15m, 1h.
        #[arg(long, value_parser = window, default_value = "1h")]
        since: Duration,
        /// With --status: only this mobile.
        #[arg(long)]
        mobile: Option<String>,
        /// Say what would be done; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Provider calls over a window, per provider: outcomes and latency. Shows a provider
    /// outage and the failover that covered it.
    Providers {
        /// The window, e.g. 15m, 1h, 24h.
        #[arg(long, value_parser = window, default_value = "1h")]
        since: Duration,
        /// JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// The fraud guard: blocked number prefixes (time left) and the watched ones (sends,
    /// verified and conversion over FRAUD_WINDOW_SECS), most sends first.
    ///
    /// When a block fires: look at the prefix here and at the provider's bill for that range.
    /// Pumping (many sends, nothing verified) is best left blocked; it lifts by itself after
    /// FRAUD_BLOCK_SECS. A real user base (a campaign, a region whose SMS arrive late) is
    /// unblocked with `smsctl fraud unblock PREFIX`.
    Fraud {
        /// What to do; without one, list.
        #[command(subcommand)]
        action: Option<FraudAction>,
        /// At most this many watched prefixes (every blocked one is listed).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// One JSON object instead of tables.
        #[arg(long)]
        json: bool,
    },
    /// Count deliveries by status over a window, and the funnel sent → delivered → verified
    /// per provider and per country (calling code) from the providers' delivery reports and
    /// the registers that used a code.
    Stats {
        /// The window, e.g. 1h, 24h, 7d.
        #[arg(long, value_parser = window, default_value = "1h")]
        since: Duration,
        /// JSON instead of a table.
        #[arg(long)]
        json: bool,
    },
}

/// What `smsctl fraud` does besides listing.
#[derive(Debug, Subcommand)]
pub enum FraudAction {
    /// Lift the block of PREFIX and reset its window counts (so that the next request does
    /// not block it again at once). Exits 1 when PREFIX was not blocked.
    Unblock {
        /// The prefix as `smsctl fraud` lists it: `+`, calling code, first national digits
        /// (`+861381234`; the `+` may be left out).
        #[arg(value_parser = prefix)]
        prefix: String,
    },
}

/// A number prefix, `+` and 2-18 digits; the `+` is added when missing.
fn prefix(raw: &str) -> Result<String, String> {
    let digits = raw.trim().trim_start_matches('+');
    if (2..=18).contains(&digits.len()) && digits.bytes().all(|b| b.is_ascii_digit()) {
        Ok(format!("+{digits}"))
    } else {
        Err(format!("{raw:?} is not a prefix: expected + and digits, as `smsctl fraud` lists them"))
    }
}

/// A window back from now, `--since` (`30m`, `1h`, `7d`). One that reaches back before the
/// earliest time PostgreSQL stores (24 November 4714 BC) is refused here, rather than clamped
/// into a query that would mean something else.
fn window(raw: &str) -> Result<Duration, String> {
    let window = humantime::parse_duration(raw).map_err(|e| e.to_string())?;
    let earliest = chrono::NaiveDate::from_ymd_opt(-4713, 11, 24).and_then(|d| d.and_hms_opt(0, 0, 0));
    let start = chrono::TimeDelta::from_std(window).ok().and_then(|w| chrono::Utc::now().checked_sub_signed(w));
    match (start, earliest) {
        (Some(start), Some(earliest)) if start.naive_utc() >= earliest => Ok(window),
        _ => Err(format!(
            "{raw} reaches back before 4714 BC, the earliest time PostgreSQL stores: give a shorter window"
        )),
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[test]
    fn a_window_postgresql_cannot_represent_is_refused_with_a_clear_message() {
        assert_eq!(window("1h"), Ok(Duration::from_secs(3600)));
        assert!(window("6000y").is_ok());
        assert!(window("7000y").is_err());
        for args in [
            &["deliveries", "--since", "100000000y"][..],
            &["stats", "--since", "100000000y"],
            &["providers", "--since", "100000000y"],
            &["replay", "--status", "failed", "--since", "100000000y"],
        ] {
            let err = Cli::try_parse_from(std::iter::once("smsctl").chain(args.iter().copied()))
                .err()
                .map(|e| e.to_string())
                .unwrap_or_default();
            assert!(err.contains("--since") && err.contains("earliest time PostgreSQL stores"), "{args:?}: {err}");
        }
        assert!(Cli::try_parse_from(["smsctl", "deliveries", "--limit", "-1"]).is_err());
    }

    #[test]
    fn a_prefix_to_unblock_is_digits_with_or_without_its_plus() {
        assert_eq!(prefix("+861381234"), Ok("+861381234".to_owned()));
        assert_eq!(prefix("861381234"), Ok("+861381234".to_owned()));
        for bad in ["", "+", "+8", "86-138", "abc", "+8613812345678901234"] {
            assert!(prefix(bad).is_err(), "{bad}");
        }
    }
}
