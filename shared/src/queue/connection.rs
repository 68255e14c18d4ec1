//! Opening a broker connection to one node of `AMQP_URL` (a comma-separated list of the
//! nodes of one cluster), each try bounded by `DEPENDENCY_TIMEOUT_MS`.

use std::{
    sync::{
        Arc,
        atomic::{AtomicUsize, Ordering},
    },
    time::Duration,
};

use lapin::{Connection, ConnectionProperties, types::LongString};
use rand::Rng;

use crate::Settings;

/// The nodes of `AMQP_URL` and which to try first.
///
/// Each process starts at a random node, so that the api replicas and workers spread over
/// the cluster; after a connection to node *i*, the next connection (which only happens
/// once that one is lost) tries node *i + 1* first, since node *i* has probably just gone.
pub struct Nodes {
    urls: Vec<String>,
    next: AtomicUsize,
}

/// The shortest time one node gets to answer when there are several: a handshake on a busy
/// host takes a few hundred milliseconds.
const MIN_TRY: Duration = Duration::from_secs(1);

impl Nodes {
    /// The nodes of `settings.amqp_url`, starting at a random one.
    pub fn new(settings: &Settings) -> Self {
        let urls: Vec<String> = settings.amqp_nodes().into_iter().map(str::to_owned).collect();
        let start = if urls.len() > 1 { rand::rng().random_range(0..urls.len()) } else { 0 };
        Self { urls, next: AtomicUsize::new(start) }
    }

    /// How many nodes `AMQP_URL` lists.
    pub fn len(&self) -> usize {
        self.urls.len()
    }

    /// Whether `AMQP_URL` lists no node (never, once `Settings` validated it).
    pub fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Connects to the first node that answers, trying each once. A node gets
    /// `DEPENDENCY_TIMEOUT_MS` divided among the nodes (at least `MIN_TRY`): a node that
    /// hangs costs a slice of the budget, not all of it. The connection is named
    /// `<name> <AMQP_PREFIX>` in the broker's management tools.
    pub async fn connect(&self, settings: &Settings, name: &str) -> Result<Connection, lapin::Error> {
        let count = self.urls.len().max(1);
        let per_try = if count == 1 {
            settings.dependency_timeout
        } else {
            (settings.dependency_timeout / u32::try_from(count).unwrap_or(u32::MAX))
                .max(MIN_TRY)
                .min(settings.dependency_timeout)
        };
        let start = self.next.load(Ordering::Relaxed);
        let mut last_error = None;
        for offset in 0..count {
            let index = (start + offset) % count;
            let Some(url) = self.urls.get(index) else { continue };
            match connect_one(url, settings, name, per_try).await {
                Ok(connection) => {
                    self.next.store((index + 1) % count, Ordering::Relaxed);
                    if count > 1 {
                        tracing::info!(node = %authority(url), "connected to broker node");
                    }
                    return Ok(connection);
                }
                Err(e) => {
                    if count > 1 {
                        tracing::warn!(node = %authority(url), error = %e, "broker node did not answer; trying the next");
                    }
                    last_error = Some(e);
                }
            }
        }
        Err(last_error.unwrap_or_else(|| timed_out("AMQP_URL lists no node")))
    }
}

/// Opens a connection to the nodes of `AMQP_URL` (see [`Nodes::connect`]), starting at a
/// random one.
pub async fn connect(settings: &Settings, name: &str) -> Result<Connection, lapin::Error> {
    Nodes::new(settings).connect(settings, name).await
}

async fn connect_one(url: &str, settings: &Settings, name: &str, limit: Duration) -> Result<Connection, lapin::Error> {
    let name = format!("{name} {}", settings.amqp_prefix);
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name.into_bytes()));
    match tokio::time::timeout(limit, Connection::connect(url, properties)).await {
        Ok(result) => result,
        Err(_) => Err(timed_out("timed out connecting to the broker")),
    }
}

fn timed_out(why: &'static str) -> lapin::Error {
    lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(std::io::Error::new(std::io::ErrorKind::TimedOut, why))))
}

/// `host:port` of a node URL, without its credentials (for logs).
fn authority(url: &str) -> &str {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let rest = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
    rest.split('/').next().unwrap_or(rest)
}

#[cfg(test)]
mod tests {
    use super::authority;

    #[test]
    fn a_node_is_logged_without_its_credentials() {
        assert_eq!(authority("amqp://guest:secret@10.0.0.2:5672/%2f"), "10.0.0.2:5672");
        assert_eq!(authority("amqps://rabbit-2:5671"), "rabbit-2:5671");
    }
}
