//! The `prefsd` binary: parse the command line, set up logging, then run the daemon or a
//! client command, and map its outcome to the exit code (`cli::exit_code`, the one place
//! exit codes are chosen). No logic lives here.

use std::process::ExitCode;

/// mimalloc instead of the system allocator: under load, the daemon's threads free memory
/// other threads allocated, and glibc's arena locks showed up as futex wake-ups in the
/// profile (see the README's performance section).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use clap::Parser;
use prefsd::cli::args::{Cli, Command};

fn main() -> ExitCode {
    // SAFETY: this is the first thing the process does; no other thread exists yet.
    unsafe { prefsd::sched::return_freed_memory_sooner() };
    let cli = Cli::parse();
    // The daemon's `[log]` settings come from its config directory (an invalid one is
    // reported by `serve` itself, which loads it again).
    let log = match &cli.command {
        Command::Serve { .. } => prefsd::config::load_dir(&cli.config)
            .map(|config| config.settings.log)
            .unwrap_or_default(),
        _ => Default::default(),
    };
    prefsd::logs::init(&log);
    let socket = cli.socket.as_deref();
    let result = match cli.command {
        Command::Serve {
            database,
            database_url,
            schema,
        } => prefsd::server::main(prefsd::server::ServeOptions {
            config_dir: cli.config,
            overrides: prefsd::config::Overrides {
                socket: cli.socket,
                database,
                database_url,
                schema,
            },
        }),
        Command::Token(args) => prefsd::auth::mint::run(&args, &cli.config),
        Command::Init { dir } => prefsd::cli::init(dir.as_deref().unwrap_or(&cli.config)),
        Command::CheckConfig { dir } => {
            prefsd::cli::check_config(dir.as_deref().unwrap_or(&cli.config))
        }
        Command::Health { ready } => prefsd::cli::health(socket, &cli.config, cli.timeout, ready),
        Command::Client(command) => prefsd::cli::run(socket, &cli.config, cli.timeout, command),
        Command::Restore { backup, database } => {
            prefsd::cli::restore(&backup, database.as_deref(), &cli.config)
        }
        Command::Bench(args) => prefsd::bench::run(socket, &cli.config, args),
    };
    prefsd::cli::exit_code(result)
}
