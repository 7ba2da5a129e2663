//! `warren-admin`: parses the command line, loads the settings, runs one subcommand.
//! Exit status: 0 done, 1 failed (connection, configuration), 2 refused by Warren.

use clap::Parser;

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::process::ExitCode {
    let cli = warren_admin::cli::Cli::parse();
    let config = match warren_admin::AdminConfig::load(cli.config.as_deref(), &cli) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("warren-admin: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    match warren_admin::run(&config, &cli).await {
        Ok(outcome) => outcome.exit_code(),
        Err(e) => {
            eprintln!("warren-admin: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}
