//! `smsctl`: list, count and replay SMS deliveries. See `smsctl --help`.

use std::process::ExitCode;

use clap::Parser;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = smsctl::Cli::parse();
    let settings = match shared::Settings::from_env() {
        Ok(settings) => settings,
        Err(e) => {
            eprintln!("smsctl: {e}");
            return ExitCode::from(2);
        }
    };
    let mut out = std::io::stdout().lock();
    match smsctl::run(cli, &settings, &mut out).await {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(e) => {
            eprintln!("smsctl: {e}");
            ExitCode::from(2)
        }
    }
}
