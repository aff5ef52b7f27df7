//! `h2o` command-line tool: info, ppl, speed, bench, compare and heatmap on exported Pythia graphs.

mod commands;

use clap::Parser;

fn main() -> std::process::ExitCode {
    let cli = commands::Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("H2O_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            commands::write_stderr_line(format_args!("error: {}", commands::error_text(&e)));
            std::process::ExitCode::from(commands::exit_code(&e))
        }
    }
}
