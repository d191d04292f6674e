//! `defender-emulator`: answers Device Defender metrics reports on a local MQTT broker, so an
//! agent can be developed without an AWS account.
//!
//! ```text
//! cargo run -p integration-tests --bin defender-emulator -- --broker 127.0.0.1:1883
//! cargo run -p integration-tests --bin defender-emulator -- --broker localhost:8883 \
//!     --ca ca.pem --cert emulator.pem --key emulator.key --throttle reject --min-interval 300s
//! ```
//!
//! Each report is printed as one line (thing, encoding, report id, outcome) followed by its
//! problems, warnings and value-quality flags. Ctrl-C prints the totals and exits.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use integration_tests::emulator::{
    parse_broker, Emulator, EmulatorOptions, Exchange, ThrottleMode, TlsOptions,
};
use integration_tests::validator::{MetricType, Mode, Registry};

#[derive(Debug, Parser)]
#[command(
    name = "defender-emulator",
    about = "Answers AWS IoT Device Defender metrics reports on an MQTT broker, like the service"
)]
struct Args {
    /// Broker address, HOST:PORT.
    #[arg(long)]
    broker: String,
    /// CA bundle (PEM) of the broker's certificate; enables TLS.
    #[arg(long)]
    ca: Option<PathBuf>,
    /// Client certificate (PEM), with --key.
    #[arg(long, requires = "key", requires = "ca")]
    cert: Option<PathBuf>,
    /// Client private key (PEM), with --cert.
    #[arg(long, requires = "cert")]
    key: Option<PathBuf>,
    /// ALPN protocol to offer over TLS (e.g. x-amzn-mqtt-ca).
    #[arg(long, requires = "ca")]
    alpn: Option<String>,
    /// MQTT client id of the emulator.
    #[arg(long)]
    client_id: Option<String>,
    /// Lenient validation: accept mixed key styles, unknown keys, other versions, duplicates.
    #[arg(long)]
    lenient: bool,
    /// Reports sooner than --min-interval after the last accepted one: off, drop or reject.
    #[arg(long, default_value = "off", value_parser = parse_throttle)]
    throttle: ThrottleMode,
    /// Minimum interval between reports of one thing, e.g. "300s" or "5m".
    #[arg(long, default_value = "300s", value_parser = edgewarden::units::parse_duration)]
    min_interval: std::time::Duration,
    /// Register a custom metric, NAME=TYPE with TYPE one of number, number-list, string-list,
    /// ip-address-list (repeatable). Unregistered metrics are flagged, not rejected.
    #[arg(long = "metric", value_parser = parse_metric)]
    metrics: Vec<(String, MetricType)>,
    /// Start from an empty registry instead of edgewarden's custom metrics.
    #[arg(long)]
    no_edgewarden_metrics: bool,
    /// Record answers but publish none (lets a device test its response timeout).
    #[arg(long)]
    silent: bool,
    /// Do not check custom metric registration at all.
    #[arg(long, conflicts_with_all = ["metrics", "no_edgewarden_metrics"])]
    no_registry: bool,
}

fn parse_throttle(s: &str) -> Result<ThrottleMode, String> {
    ThrottleMode::parse(s).ok_or_else(|| format!("{s:?} is not one of off, drop, reject"))
}

fn parse_metric(s: &str) -> Result<(String, MetricType), String> {
    let (name, ty) = s
        .split_once('=')
        .ok_or_else(|| format!("{s:?} is not NAME=TYPE"))?;
    let ty = MetricType::parse(ty).ok_or_else(|| {
        format!("{ty:?} is not one of number, number-list, string-list, ip-address-list")
    })?;
    if !integration_tests::validator::valid_metric_name(name) {
        return Err(format!("{name:?} is not a valid custom metric name"));
    }
    Ok((name.to_owned(), ty))
}

#[allow(clippy::print_stdout)]
fn print_exchange(ex: &Exchange) {
    println!("{ex}");
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let args = Args::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    match run(args).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("defender-emulator: {e:#}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> anyhow::Result<()> {
    let (host, port) = parse_broker(&args.broker)?;
    let mut opts = EmulatorOptions::new(host, port);
    if let Some(id) = args.client_id {
        opts.client_id = id;
    }
    opts.tls = args.ca.map(|ca_file| TlsOptions {
        ca_file,
        client_auth: args.cert.zip(args.key),
        alpn: args.alpn,
    });
    opts.mode = if args.lenient {
        Mode::Lenient
    } else {
        Mode::Strict
    };
    opts.throttle = args.throttle;
    opts.silent = args.silent;
    // Each exchange is printed as it comes; only recent ones need to stay in memory.
    opts.max_exchanges = 1_000;
    opts.min_interval = args.min_interval;
    opts.registry = if args.no_registry {
        None
    } else {
        let mut r = if args.no_edgewarden_metrics {
            Registry::new()
        } else {
            Registry::edgewarden()
        };
        for (name, ty) in &args.metrics {
            r.register(name, *ty);
        }
        Some(r)
    };
    let emulator = Emulator::spawn(opts).await?;
    eprintln!(
        "defender-emulator: listening on {} for $aws/things/+/defender/metrics/+ (Ctrl-C to stop)",
        args.broker
    );
    let mut printed = 0;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            res = emulator.wait_for(printed + 1, std::time::Duration::from_secs(3600)) => {
                if res.is_ok() {
                    let (new, next) = emulator.exchanges_since(printed);
                    for ex in &new {
                        print_exchange(ex);
                    }
                    printed = next;
                }
            }
        }
    }
    let s = emulator.stats();
    eprintln!(
        "defender-emulator: {} received, {} accepted, {} rejected, {} duplicates, {} throttled, {} oversized, {} flagged",
        s.received, s.accepted, s.rejected, s.duplicates, s.throttled, s.oversized, s.flagged
    );
    emulator.shutdown().await;
    Ok(())
}
