use clap::Parser;

fn main() -> std::process::ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hearth=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        // Plain text when read by a program (`hearth up` relays children's logs).
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match hearth::cli::run(hearth::cli::Cli::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            // One line for the user, whatever backtrace settings are in force.
            eprintln!("error: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}
