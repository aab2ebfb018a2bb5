//! The `prefsd` binary: parse the command line, set up logging, then run the daemon or a
//! client command. No logic lives here.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: under load, the daemon's threads free memory
/// other threads allocated, and glibc's arena locks showed up as futex wake-ups in the
/// profile (see the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use prefsd::cli::{Cli, Command};

fn main() -> ExitCode {
    prefsd::sched::return_freed_memory_sooner();
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("PREFSD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    match cli.command {
        Command::Serve { database } => {
            let options = prefsd::server::ServeOptions {
                config_dir: cli.config,
                overrides: prefsd::config::Overrides {
                    socket: cli.socket,
                    database,
                },
            };
            let mut builder = tokio::runtime::Builder::new_multi_thread();
            if let Some(workers) = prefsd::server::async_workers() {
                builder.worker_threads(workers);
            }
            let Some(runtime) = prefsd::cli::runtime(builder) else {
                return ExitCode::from(2);
            };
            match runtime.block_on(prefsd::server::serve(options)) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::from(2)
                }
            }
        }
        Command::Token(args) => prefsd::auth::mint::run(&args, &cli.config),
        Command::Bench(args) => prefsd::bench::run(cli.socket.as_deref(), &cli.config, args),
        Command::CheckConfig { dir } => {
            prefsd::cli::check_config(dir.as_deref().unwrap_or(&cli.config))
        }
        _ => prefsd::cli::run(cli),
    }
}
