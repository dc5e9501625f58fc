use clap::Parser;
use hearth::cli::LogFormat;

fn main() -> std::process::ExitCode {
    let cli = hearth::cli::Cli::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| "hearth=info,warn".into());
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cli.global.log_format {
        LogFormat::Json => logs.json().with_current_span(true).init(),
        // Plain text when read by a program (`hearth up` relays children's logs).
        LogFormat::Text => logs
            .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
            .init(),
    }
    match hearth::cli::run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line for the user, whatever backtrace settings are in force.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
