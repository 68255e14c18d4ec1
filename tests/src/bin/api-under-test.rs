//! The api binary's exact start-up, built inside the tests package so that integration
//! tests can run it as a separate process (to read its logs) through
//! `CARGO_BIN_EXE_api-under-test`.

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let settings = shared::Settings::from_env()?;
    shared::telemetry::init(settings.log_format);
    let listener = shared::listen("API_ADDR", settings.api_addr).await?;
    api::run(settings, listener, shared::shutdown::on_signal()).await?;
    Ok(())
}
