//! The `berth` command: thin; parse the arguments, call the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use argh::FromArgs;

/// berth: a container image registry in one binary.
#[derive(FromArgs)]
struct Args {
    #[argh(subcommand)]
    command: Command,
}

#[derive(FromArgs)]
#[argh(subcommand)]
enum Command {
    Serve(Serve),
}

/// Serve the OCI Distribution API.
#[derive(FromArgs)]
#[argh(subcommand, name = "serve")]
struct Serve {
    /// address to listen on (default 127.0.0.1:5000; port 0 picks a free port)
    #[argh(option, default = "berth::config::DEFAULT_LISTEN.parse().unwrap()")]
    listen: SocketAddr,
    /// data directory, created if missing (default ./berth-data)
    #[argh(option, default = "PathBuf::from(berth::config::DEFAULT_DATA_DIR)")]
    data: PathBuf,
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let args: Args = argh::from_env();
    let result = match args.command {
        Command::Serve(serve) => run_serve(serve),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("berth: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_serve(args: Serve) -> std::io::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(async {
        let mut config = berth::Config::new(args.data);
        config.listen = args.listen;
        let registry = berth::Registry::start(config).await?;
        // One line on stdout with the real address, for harnesses to read.
        let mut stdout = std::io::stdout();
        writeln!(stdout, "berth listening on {}", registry.url())?;
        stdout.flush()?;
        wait_for_signal().await?;
        log::info!("shutting down");
        registry.shutdown().await;
        Ok(())
    })
}

async fn wait_for_signal() -> std::io::Result<()> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate())?;
    tokio::select! {
        r = tokio::signal::ctrl_c() => r,
        _ = term.recv() => Ok(()),
    }
}
