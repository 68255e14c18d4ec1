//! The worker binary: settings, logging, shutdown signal; the rest is `worker::run`.

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let settings = shared::Settings::from_env()?;
    shared::telemetry::init(settings.log_format);
    worker::run(settings, shared::shutdown::on_signal()).await?;
    Ok(())
}
