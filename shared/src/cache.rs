//! The Redis connection: one multiplexed, auto-reconnecting handle per process, to a fixed
//! server (`redis://…`) or to whichever server the Sentinels name primary
//! (`redis+sentinel://host:port,host:port/<master>`).

use std::{
    sync::{
        Arc, Mutex, RwLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use redis::{
    Cmd, ConnectionAddr, ErrorKind, Pipeline, RedisError, RedisFuture, RedisResult, ServerErrorKind, Value,
    aio::{ConnectionLike, ConnectionManager, ConnectionManagerConfig},
    sentinel::{SentinelClient, SentinelClientBuilder, SentinelServerType},
};

use crate::Settings;

/// The URL scheme of a Sentinel-managed primary.
const SENTINEL_SCHEME: &str = "redis+sentinel://";

/// How long after a failed primary lookup commands fail at once instead of asking the
/// Sentinels again: during a failover every request would otherwise queue up behind lookups.
const LOOKUP_PAUSE: Duration = Duration::from_millis(200);

/// A cloneable Redis handle; every command gives up after `DEPENDENCY_TIMEOUT_MS`.
///
/// It implements [`ConnectionLike`], so commands, pipelines and scripts run on it as on a
/// `ConnectionManager`. A `Script` reloads itself on NOSCRIPT (EVALSHA, then LOAD and
/// EVALSHA again), which is what a new primary answers after a failover.
#[derive(Clone)]
pub struct Redis {
    target: Target,
}

#[derive(Clone)]
enum Target {
    /// One server: the manager reconnects to it.
    Direct(ConnectionManager),
    /// The primary of a Sentinel group, looked up again whenever it stops answering as one.
    Sentinel(Arc<SentinelPrimary>),
}

/// A lazily connected handle for `REDIS_URL`: the process starts even while Redis is down.
pub fn connect(settings: &Settings) -> RedisResult<Redis> {
    let config = manager_config(settings.dependency_timeout);
    let target = match settings.redis_url.strip_prefix(SENTINEL_SCHEME) {
        Some(rest) => Target::Sentinel(Arc::new(SentinelPrimary::new(rest, config, settings.dependency_timeout)?)),
        None => Target::Direct(ConnectionManager::new_lazy_with_config(
            redis::Client::open(settings.redis_url.as_str())?,
            config,
        )?),
    };
    Ok(Redis { target })
}

fn manager_config(timeout: Duration) -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(timeout))
        .set_response_timeout(Some(timeout))
        // Reconnects happen in the background on the next command; do not stall a request
        // retrying here.
        .set_number_of_retries(1)
}

impl ConnectionLike for Redis {
    fn req_packed_command<'a>(&'a mut self, cmd: &'a Cmd) -> RedisFuture<'a, Value> {
        match &mut self.target {
            Target::Direct(manager) => manager.req_packed_command(cmd),
            Target::Sentinel(primary) => {
                let primary = primary.clone();
                Box::pin(async move {
                    let (generation, mut manager) = primary.manager().await?;
                    let result = manager.req_packed_command(cmd).await;
                    primary.after(generation, result.as_ref().err());
                    result
                })
            }
        }
    }

    fn req_packed_commands<'a>(
        &'a mut self,
        pipeline: &'a Pipeline,
        offset: usize,
        count: usize,
    ) -> RedisFuture<'a, Vec<Value>> {
        match &mut self.target {
            Target::Direct(manager) => manager.req_packed_commands(pipeline, offset, count),
            Target::Sentinel(primary) => {
                let primary = primary.clone();
                Box::pin(async move {
                    let (generation, mut manager) = primary.manager().await?;
                    let result = manager.req_packed_commands(pipeline, offset, count).await;
                    primary.after(generation, result.as_ref().err());
                    result
                })
            }
        }
    }

    fn get_db(&self) -> i64 {
        match &self.target {
            Target::Direct(manager) => manager.get_db(),
            Target::Sentinel(primary) => primary.db,
        }
    }
}

/// The current primary of a Sentinel group and how to find the next one.
struct SentinelPrimary {
    /// Asks the Sentinels; one lookup at a time.
    sentinels: tokio::sync::Mutex<SentinelClient>,
    /// The primary in use, numbered so that a failure reported late does not drop a newer one.
    current: RwLock<Option<(u64, ConnectionManager)>>,
    /// Numbers the primaries found.
    generations: AtomicU64,
    /// When the last lookup failed.
    last_failure: Mutex<Option<Instant>>,
    config: ConnectionManagerConfig,
    timeout: Duration,
    db: i64,
}

impl SentinelPrimary {
    /// From the part of `redis+sentinel://[user:password@]host:port[,host:port…]/<master>[/<db>]`
    /// after the scheme. The credentials and database are the primary's; the Sentinels
    /// themselves are reached without authentication.
    fn new(rest: &str, config: ConnectionManagerConfig, timeout: Duration) -> RedisResult<Self> {
        let invalid =
            |why: &str| RedisError::from((ErrorKind::InvalidClientConfig, "invalid Sentinel URL", why.into()));
        let (authority, path) = rest.split_once('/').ok_or_else(|| invalid("no /<master> after the Sentinel list"))?;
        let (credentials, hosts) = match authority.rsplit_once('@') {
            Some((credentials, hosts)) => (Some(credentials), hosts),
            None => (None, authority),
        };
        let mut sentinels = Vec::new();
        for host in hosts.split(',').map(str::trim).filter(|h| !h.is_empty()) {
            let (name, port) = host.rsplit_once(':').unwrap_or((host, "26379"));
            let port = port.parse::<u16>().map_err(|_| invalid("a Sentinel port is not a number"))?;
            sentinels.push(ConnectionAddr::Tcp(name.trim_matches(['[', ']']).to_owned(), port));
        }
        if sentinels.is_empty() {
            return Err(invalid("no Sentinel host"));
        }
        let mut parts = path.split('/');
        let master = parts.next().filter(|m| !m.is_empty()).ok_or_else(|| invalid("no master name"))?;
        let db = match parts.next().filter(|d| !d.is_empty()) {
            Some(db) => db.parse::<i64>().map_err(|_| invalid("the database is not a number"))?,
            None => 0,
        };
        let mut builder =
            SentinelClientBuilder::new(sentinels, master, SentinelServerType::Master)?.set_client_to_redis_db(db);
        if let Some(credentials) = credentials {
            let (user, password) = credentials.split_once(':').unwrap_or(("", credentials));
            let decode = |s: &str| percent_decode(s).ok_or_else(|| invalid("bad percent-encoding in the credentials"));
            if !user.is_empty() {
                builder = builder.set_client_to_redis_username(decode(user)?);
            }
            if !password.is_empty() {
                builder = builder.set_client_to_redis_password(decode(password)?);
            }
        }
        Ok(Self {
            sentinels: tokio::sync::Mutex::new(builder.build()?),
            current: RwLock::new(None),
            generations: AtomicU64::new(0),
            last_failure: Mutex::new(None),
            config,
            timeout,
            db,
        })
    }

    /// The manager of the current primary, asking the Sentinels for it when there is none.
    async fn manager(&self) -> RedisResult<(u64, ConnectionManager)> {
        if let Some(current) = self.current() {
            return Ok(current);
        }
        let mut sentinels = self.sentinels.lock().await;
        // Another command may have found the primary while this one waited.
        if let Some(current) = self.current() {
            return Ok(current);
        }
        if self.last_failure.lock().map(|t| t.is_some_and(|t| t.elapsed() < LOOKUP_PAUSE)).unwrap_or(false) {
            return Err(unreachable("no primary: the last Sentinel lookup failed just now"));
        }
        // The lookup asks the Sentinels, then checks that the server they name answers ROLE
        // as a primary.
        let found = match tokio::time::timeout(self.timeout, sentinels.async_get_client()).await {
            Ok(result) => result,
            Err(_) => Err(unreachable("the Sentinels did not name a primary in time")),
        }
        .and_then(|client| ConnectionManager::new_lazy_with_config(client, self.config.clone()));
        match found {
            Ok(manager) => {
                let mut slot = self.current.write().map_err(|_| unreachable("lock poisoned"))?;
                let generation = self.generations.fetch_add(1, Ordering::Relaxed);
                *slot = Some((generation, manager.clone()));
                tracing::info!("following the Redis primary the Sentinels name");
                Ok((generation, manager))
            }
            Err(e) => {
                if let Ok(mut t) = self.last_failure.lock() {
                    *t = Some(Instant::now());
                }
                Err(e)
            }
        }
    }

    fn current(&self) -> Option<(u64, ConnectionManager)> {
        self.current.read().ok()?.clone()
    }

    /// Forgets primary `generation` when `error` says it is gone or no longer the primary,
    /// so that the next command asks the Sentinels.
    fn after(&self, generation: u64, error: Option<&RedisError>) {
        let Some(error) = error else { return };
        let lost = error.is_io_error()
            || error.is_connection_dropped()
            || error.is_connection_refusal()
            || error.is_timeout()
            || matches!(error.kind(), ErrorKind::Server(ServerErrorKind::ReadOnly | ServerErrorKind::MasterDown));
        if !lost {
            return;
        }
        if let Ok(mut slot) = self.current.write()
            && slot.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            tracing::warn!(error = %error, "the Redis primary stopped answering; asking the Sentinels again");
            *slot = None;
        }
    }
}

fn unreachable(why: &'static str) -> RedisError {
    RedisError::from(std::io::Error::new(std::io::ErrorKind::NotConnected, why))
}

/// `%XX` sequences decoded; `None` for a bad sequence or text that is not UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(rest: &str) -> RedisResult<SentinelPrimary> {
        SentinelPrimary::new(rest, manager_config(Duration::from_secs(1)), Duration::from_secs(1))
    }

    #[test]
    fn a_sentinel_url_names_the_sentinels_the_master_and_optionally_a_database() -> RedisResult<()> {
        assert_eq!(parse("10.0.0.1:26379,10.0.0.2:26380/mymaster")?.db, 0);
        assert_eq!(parse(":s%40cret@s1:26379,s2/mymaster/3")?.db, 3);
        for bad in ["s1:26379", "s1:26379/", "/mymaster", "s1:port/mymaster", "s1/mymaster/x", ":%zz@s1/m"] {
            assert!(parse(bad).is_err(), "{bad} is refused");
        }
        Ok(())
    }

    #[test]
    fn percent_escapes_are_decoded() {
        assert_eq!(percent_decode("a%2Cb%40c").as_deref(), Some("a,b@c"));
        assert_eq!(percent_decode("%4"), None);
    }
}
