//! Opening a broker connection, bounded by `DEPENDENCY_TIMEOUT_MS`.

use std::sync::Arc;

use lapin::{Connection, ConnectionProperties, types::LongString};

use crate::Settings;

/// Opens a connection to `AMQP_URL`, giving up after `DEPENDENCY_TIMEOUT_MS`. The connection
/// is named `<name> <AMQP_PREFIX>` in the broker's management tools.
pub async fn connect(settings: &Settings, name: &str) -> Result<Connection, lapin::Error> {
    let name = format!("{name} {}", settings.amqp_prefix);
    let properties = ConnectionProperties::default().with_connection_name(LongString::from(name.into_bytes()));
    match tokio::time::timeout(settings.dependency_timeout, Connection::connect(&settings.amqp_url, properties)).await {
        Ok(result) => result,
        Err(_) => Err(lapin::Error::from(lapin::ErrorKind::IOError(Arc::new(std::io::Error::new(
            std::io::ErrorKind::TimedOut,
            "timed out connecting to the broker",
        ))))),
    }
}
