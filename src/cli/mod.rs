//! The `hearth` command line: argument definitions (`args`) and the glue
//! that turns them into library calls, by concept: serving and topologies
//! here, the document store (`documents`: ingest, the retrieval eval), the
//! models on their own (`models`: embed, generate, chat), and the
//! benchmarks (`bench`). `main.rs` only parses and calls [`run`].

mod args;
mod bench;
mod documents;
mod keys;
mod models;
mod sync;

pub use args::*;

use crate::config::{Config, ConfigArgs, Role};
use crate::models::device;
use crate::server::{Backends, Server, Spec};
use crate::topology;
use anyhow::{bail, Result};

/// Run a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    if let Some(n) = cli.global.threads {
        use_threads(n);
    }
    let device_name = cli.global.device.as_deref();
    let load_config = |args: &ConfigArgs| Config::load(args, device_name, cli.global.threads);
    let device = || device::open(device_name.unwrap_or("cpu"));
    match cli.command {
        Command::Serve(args) => {
            let config = load_config(&args.config)?;
            if let (None, Some(n)) = (cli.global.threads, config.threads) {
                use_threads(n); // `threads` from the config file
            }
            serve(config, spec(&args)?)
        }
        Command::Up(args) => {
            let config = load_config(&args.config)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(topology::up(
                    &config,
                    args.topology,
                    args.endpoints_file.as_deref(),
                ))?;
            Ok(())
        }
        Command::GatewayConfig(args) => {
            let config = load_config(&args.config)?;
            let written = topology::nginx::write(&config, &args.out)?;
            for path in written {
                println!("wrote {}", path.display());
            }
            Ok(())
        }
        Command::Deploy(DeployCommand::Kubernetes(args)) => {
            let config = load_config(&args.config)?;
            let options = topology::kubernetes::Options {
                topology: args.topology,
                image: args.image,
                replicas: args.replicas,
                max_replicas: args.max_replicas,
                cpus: args.cpus,
                models_dir: args.models_dir,
                models_from: match (args.models_host_path, args.models_in_image) {
                    (Some(dir), _) => topology::kubernetes::ModelsFrom::HostPath(dir),
                    (None, true) => topology::kubernetes::ModelsFrom::Image,
                    (None, false) => topology::kubernetes::ModelsFrom::Claim(args.models_claim),
                },
                keda: args.keda,
                metrics_namespace: args.metrics_namespace,
            };
            let files = topology::kubernetes::render(&config, &options)?;
            topology::kubernetes::write(&files, &args.out)?;
            let out = args.out.display();
            println!("wrote {} files into {out}", files.len());
            if !files.contains_key(topology::kubernetes::KEYS_FILE) {
                println!(
                    "no api_keys in the config: write {out}/{} as `api-keys=<a long random key>` before applying",
                    topology::kubernetes::KEYS_FILE
                );
            }
            println!("then: kubectl apply -k {out}");
            Ok(())
        }
        Command::Bench(args) => bench::bench(args, &load_config, &device),
        Command::Ingest(args) => documents::ingest(load_config(&args.config)?, args),
        Command::Keys(command) => keys::run(command),
        Command::Documents(DocumentsCommand::Sync(args)) => {
            let config = match args.url {
                // Through a server: this process opens nothing of its own.
                Some(_) => None,
                None => Some(load_config(&args.config)?),
            };
            sync::run(config, args)
        }
        Command::EvalRetrieval(args) => documents::eval_retrieval(load_config(&args.config)?, args),
        Command::Embed(args) => models::embed(args, &device()?),
        Command::Generate(args) => models::generate(args, &device()?),
        Command::Chat(args) => models::chat(args, &device()?),
        Command::Models(ModelsCommand::Inspect { file, json }) => models::inspect(&file, json),
    }
}

/// Size the compute pools; read by candle when it builds them, so call
/// before any model loads.
fn use_threads(n: usize) {
    std::env::set_var("RAYON_NUM_THREADS", n.to_string());
    std::env::set_var("CANDLE_NUM_THREADS", n.to_string());
}

fn spec(args: &ServeArgs) -> Result<Spec> {
    let gateway = args.role == Role::Gateway;
    if gateway && args.rag_url.is_none() && args.fine_tuned_url.is_none() {
        bail!("--role gateway needs --rag-url and/or --fine-tuned-url");
    }
    if !gateway && (args.rag_url.is_some() || args.fine_tuned_url.is_some()) {
        bail!("--rag-url and --fine-tuned-url are for --role gateway");
    }
    let url = |u: &Option<String>| u.as_ref().map(|u| u.trim_end_matches('/').to_string());
    Ok(Spec {
        role: args.role,
        model: args.model,
        backends: Backends {
            rag: url(&args.rag_url),
            fine_tuned: url(&args.fine_tuned_url),
        },
    })
}

fn serve(config: Config, spec: Spec) -> Result<()> {
    tokio::runtime::Runtime::new()?.block_on(async move {
        let server = Server::bind(config, spec).await?;
        // On stdout, for scripts and tests that wait for it.
        println!("hearth listening on http://{}", server.local_addr());
        server.run().await?;
        Ok(())
    })
}
