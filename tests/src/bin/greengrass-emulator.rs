//! `greengrass-emulator`: serves the Greengrass nucleus IPC (event-stream RPC) on a Unix socket,
//! so the agent's Greengrass mode can be run and inspected without a core device.
//!
//! ```text
//! cargo run -p integration-tests --bin greengrass-emulator -- --socket /tmp/ipc.socket \
//!     --record publishes.jsonl --recipe packaging/greengrass/recipe.json --svcuid TOKEN
//! ```
//!
//! Prints `listening <socket>` once it accepts connections. Commands, one JSON value per line
//! on standard input, each answered with one JSON line on standard output:
//!
//! * `{"config": {...}}`: merge into the component configuration and send update events;
//!   answers `{"changed": [[key, path], ...]}`.
//! * `"drop"`: close every connection; answers `{"dropped": N}`.
//! * `"stats"`: answers `{"connects", "connections", "published", "denied", "accepted",
//!   "rejected", "states"}`.
//!
//! Runs until SIGINT or SIGTERM.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use integration_tests::emulator::Outcome;
use integration_tests::greengrass::{options_from_args, spawn};
use serde_json::{json, Value};

#[derive(Debug, Parser)]
#[command(
    name = "greengrass-emulator",
    about = "Serves the AWS IoT Greengrass nucleus IPC on a Unix socket, like the nucleus"
)]
struct Args {
    /// Unix socket to listen on (replaced if it exists).
    #[arg(long)]
    socket: PathBuf,
    /// Append every PublishToIoTCore as a JSON line (topic, qos, base64 payload, time_ms).
    #[arg(long)]
    record: PathBuf,
    /// Component recipe (JSON): component name, DefaultConfiguration and accessControl.
    /// Without it every operation on every topic is allowed.
    #[arg(long)]
    recipe: Option<PathBuf>,
    /// The only token accepted; any token when not given.
    #[arg(long)]
    svcuid: Option<String>,
}

fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(args)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let opts = options_from_args(
        args.socket.clone(),
        Some(args.record),
        args.recipe,
        args.svcuid,
    )?;
    let h = spawn(opts)?;
    println!("listening {}", args.socket.display());
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    // Standard input is read on its own thread: commands arrive over a channel.
    let (tx, mut rx) = tokio::sync::mpsc::channel::<String>(16);
    std::thread::spawn(move || {
        for line in std::io::stdin().lines() {
            let Ok(line) = line else { break };
            if tx.blocking_send(line).is_err() {
                break;
            }
        }
    });
    let mut stdin_open = true;
    loop {
        let line = tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            l = rx.recv(), if stdin_open => l,
        };
        let Some(line) = line else {
            stdin_open = false;
            continue;
        };
        if line.trim().is_empty() {
            continue;
        }
        let answer = match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(m)) if m.contains_key("config") => {
                json!({ "changed": h.update_config(&m["config"]) })
            }
            Ok(Value::String(s)) if s == "drop" => {
                let n = h.connections();
                h.drop_connections();
                json!({ "dropped": n })
            }
            Ok(Value::String(s)) if s == "stats" => {
                let ex = h.exchanges();
                json!({
                    "connects": h.connects(),
                    "connections": h.connections(),
                    "published": h.published().len(),
                    "denied": h.denied().len(),
                    "accepted": ex.iter().filter(|e| e.outcome == Outcome::Accepted).count(),
                    "rejected": ex.iter().filter(|e| matches!(e.outcome, Outcome::Rejected { .. })).count(),
                    "states": h.states(),
                })
            }
            _ => {
                json!({ "error": format!("unknown command {line:?}: expected {{\"config\": {{...}}}}, \"drop\" or \"stats\"") })
            }
        };
        println!("{answer}");
    }
    drop(h);
    let _ = std::fs::remove_file(&args.socket);
    Ok(())
}
