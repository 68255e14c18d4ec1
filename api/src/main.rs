//! The api binary: settings, logging, listener, shutdown signal; the rest is `api::run`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = shared::Settings::from_env()?;
    shared::telemetry::init(settings.log_format);
    let listener = shared::listen("API_ADDR", settings.api_addr).await?;
    api::run(settings, listener, shared::shutdown::on_signal()).await?;
    Ok(())
}
