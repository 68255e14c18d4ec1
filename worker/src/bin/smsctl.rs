//! `smsctl`: list, count and replay SMS deliveries. See `smsctl --help`.

use clap::Parser;

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = worker::ctl::Cli::parse();
    let settings = match shared::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("smsctl: {e}");
            return std::process::ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    match worker::ctl::run(cli, &settings, &mut out).await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("smsctl: {e}");
            std::process::ExitCode::from(2)
        }
    }
}
