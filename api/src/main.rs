//! The api binary: settings, logging, listener, shutdown signal; the rest is `api::run`.

use anyhow::Context;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = shared::Settings::from_env()?;
    shared::telemetry::init(settings.log_format);
    let listener = tokio::net::TcpListener::bind(settings.api_addr)
        .await
        .with_context(|| format!("API_ADDR: cannot listen on {}", settings.api_addr))?;
    api::run(settings, listener, shared::shutdown::on_signal()).await?;
    Ok(())
}
