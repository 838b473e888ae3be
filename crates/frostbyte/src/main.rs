//! The `frostbyte` binary: parses the command line, loads configuration, sets up logging, and dispatches.

use std::process::ExitCode;

use clap::Parser;
use frostbyte::cli::{Cli, Command};
use frostbyte::config::{Config, LogFormat, Overrides};
use frostbyte::{app, commands};

/// jemalloc instead of the system allocator. glibc gives each thread that allocates an arena of its own (up to
/// eight per core) and keeps what is freed there until the arena's top is free: parsing and embedding on many
/// blocking threads, and SQLite on a thread per connection, left each arena at its own high-water mark, which
/// doubled the peak RSS of a PDF ingest. jemalloc is built with two arenas and returns freed pages to the
/// system within a second from a background thread (`JEMALLOC_SYS_WITH_MALLOC_CONF` in `.cargo/config.toml`).
#[cfg(feature = "jemalloc")]
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

fn init_logging(config: &Config) {
    let filter = tracing_subscriber::EnvFilter::try_new(&config.log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
    match config.log.format {
        LogFormat::Json => builder.json().init(),
        LogFormat::Text => builder.init(),
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let overrides = match &cli.command {
        Command::Serve(args) => {
            Overrides { host: args.host.clone(), port: args.port, data_dir: cli.global.data_dir.clone() }
        }
        _ => Overrides { data_dir: cli.global.data_dir.clone(), ..Default::default() },
    };
    let config = match Config::load(cli.global.config.as_deref(), &overrides) {
        Ok(c) => c,
        Err(errors) => {
            eprint!("error: {errors}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config);
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let json = cli.global.json;
    let result: anyhow::Result<i32> = runtime.block_on(async move {
        match cli.command {
            Command::Serve(_) => app::serve(config).await.map(|()| 0),
            Command::Migrate => commands::migrate(&config).await.map(|()| 0),
            Command::CheckConfig => {
                commands::check_config(&config, json);
                Ok(0)
            }
            Command::Tenant(cmd) => commands::tenant(&config, cmd, json).await.map(|()| 0),
            Command::Key(cmd) => commands::key(&config, cmd, json).await.map(|()| 0),
            Command::Audit(cmd) => commands::audit(&config, cmd, json).await,
            Command::Ingest(args) => {
                let request = frostbyte::ingest_command::IngestRequest {
                    paths: args.paths,
                    tenant: args.tenant,
                    collection: args.collection,
                    metadata: args.metadata,
                    no_wait: args.no_wait,
                };
                frostbyte::ingest_command::ingest(&config, request, json).await
            }
            Command::Worker => app::work(config).await.map(|()| 0),
            Command::Signals(cmd) => commands::signals(&config, cmd, json).await,
            Command::Search(args) => frostbyte::search_cli::search_command(&config, args, json).await.map(|()| 0),
            Command::Bench(cmd) => frostbyte::bench::bench(&config, cmd, json).await.map(|()| 0),
            Command::Pipeline(cmd) => frostbyte::engine::command::run(&config, cmd, json).await,
            Command::Schedule(cmd) => frostbyte::engine::schedule_command::run(&config, cmd, json).await,
        }
    });
    match result {
        Ok(0) => ExitCode::SUCCESS,
        Ok(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
