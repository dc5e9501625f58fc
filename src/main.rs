use clap::Parser;

fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "hearth=info,warn".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    hearth::cli::run(hearth::cli::Cli::parse())
}
