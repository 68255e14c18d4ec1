//! The worker binary's exact start-up, built inside the tests package so that integration
//! tests can run it as a separate process (to kill it, or stop it with SIGTERM) through
//! `CARGO_BIN_EXE_worker-under-test`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = shared::Settings::from_env()?;
    shared::telemetry::init(settings.log_format);
    worker::run(settings, shared::shutdown::on_signal()).await?;
    Ok(())
}
