//! The `edgewarden` binary: parse the command line, set up logging, dispatch, map errors to exit
//! codes (2 = bad configuration or input, so systemd does not restart; 1 = runtime failure).
#![forbid(unsafe_code)]
// `unwrap` only in tests: elsewhere a failure is handled, or `expect` says why it cannot happen.
#![cfg_attr(not(test), deny(clippy::unwrap_used))]

mod commands;

use std::io::Write as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Parser as _;
use edgewarden::cli::{Cli, Command, ConfigArg, FormatArg, LogsCommand, ProfileCommand};
use edgewarden::config::{Config, ConfigErrors, ReportFormat, DEFAULT_CONFIG_PATH, ENV_CONFIG};
use edgewarden::{metrics, pipeline, telemetry};

/// An error that means "the input was wrong": exit code 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct UsageError(String);

fn main() -> ExitCode {
    let cli = Cli::parse();
    telemetry::init(cli.log_format, cli.log_level.as_deref());
    match dispatch(cli) {
        Ok(code) => code,
        Err(e) if e.is::<ConfigErrors>() || e.is::<UsageError>() => {
            eprintln!("error: {e:#}");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Which configuration file applies: `--config`, `$EDGEWARDEN_CONFIG`, the default path when
/// it exists; `None` means the embedded default.
fn config_path(arg: &ConfigArg) -> Option<std::path::PathBuf> {
    arg.config
        .clone()
        .or_else(|| {
            std::env::var_os(ENV_CONFIG)
                .filter(|s| !s.is_empty())
                .map(Into::into)
        })
        .or_else(|| {
            let p = std::path::Path::new(DEFAULT_CONFIG_PATH);
            p.exists().then(|| p.to_owned())
        })
}

/// The configuration that applies (see [`config_path`]).
fn load_config(arg: &ConfigArg) -> anyhow::Result<Config> {
    match config_path(arg) {
        Some(p) => Ok(Config::load(&p)?),
        None => Ok(Config::embedded_default()),
    }
}

fn dispatch(cli: Cli) -> anyhow::Result<ExitCode> {
    match cli.command {
        Command::Run(arg) => {
            let cfg = load_config(&arg)?;
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(1)
                .max_blocking_threads(2)
                .enable_all()
                .thread_name("edgewarden")
                .build()
                .context("cannot start the async runtime")?;
            rt.block_on(async {
                let stop =
                    edgewarden::shutdown::on_signals().context("cannot install signal handlers")?;
                pipeline::run(cfg, stop).await.map_err(anyhow::Error::from)
            })?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Collect(args) => {
            let cfg = load_config(&args.config)?;
            let format = match args.format {
                Some(FormatArg::Json) => ReportFormat::Json,
                Some(FormatArg::JsonShort) => ReportFormat::JsonShort,
                Some(FormatArg::Cbor) => ReportFormat::Cbor,
                None => cfg.report.format,
            };
            let bytes = commands::collect_once(&cfg, format, args.pretty)?;
            let mut out = std::io::stdout().lock();
            out.write_all(&bytes).context("cannot write to stdout")?;
            if format != ReportFormat::Cbor {
                out.write_all(b"\n").context("cannot write to stdout")?;
            }
            out.flush().context("cannot write to stdout")?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Validate(arg) => {
            // The configuration `run` would use, whichever it is.
            let (cfg, name) = match config_path(&arg) {
                Some(path) => (Config::load(&path)?, path.display().to_string()),
                None => (
                    Config::embedded_default(),
                    "embedded default (no configuration file)".to_owned(),
                ),
            };
            let warnings =
                pipeline::preflight(&cfg).map_err(|e| UsageError(format!("{name}: {e:#}")))?;
            edgewarden::state_dir::check_writable(&cfg.state_dir)
                .map_err(|e| UsageError(format!("{name}: {e}")))?;
            for w in cfg.warnings.iter().chain(&warnings) {
                eprintln!("warning: {w}");
            }
            eprintln!("{name}: configuration is valid");
            Ok(ExitCode::SUCCESS)
        }
        Command::PrintConfig(arg) => {
            let cfg = load_config(&arg)?;
            print_stdout(cfg.to_toml().as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile(ProfileCommand::Check { file }) => {
            let profile =
                edgewarden::detect::load_profile(&file).map_err(|e| UsageError(format!("{e}")))?;
            eprintln!(
                "{}: {} behaviours, all valid",
                file.display(),
                profile.behaviors.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Profile(ProfileCommand::Default) => {
            let p = edgewarden::detect::default_profile();
            let mut s =
                serde_json::to_string_pretty(&p).context("cannot encode the default profile")?;
            s.push('\n');
            print_stdout(s.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Status(arg) => {
            let cfg = load_config(&arg)?;
            let text = commands::status_text(&cfg)?;
            print_stdout(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Logs(LogsCommand::Scan(args)) => {
            for f in &args.files {
                check_scan_input(f)?;
            }
            let cfg = load_config(&args.config)?;
            let code = commands::logs_scan(&cfg, &args)?;
            Ok(code)
        }
        Command::Audit(args) => {
            let cfg = load_config(&args.config)?;
            if !args.root.is_dir() {
                return Err(
                    UsageError(format!("--root {}: not a directory", args.root.display())).into(),
                );
            }
            let inputs =
                edgewarden::audit::AuditInputs::from_config(&cfg, &args.root, pipeline::now_ms());
            let report = edgewarden::audit::run(&inputs);
            let text = if args.json {
                let mut s = serde_json::to_string_pretty(&report)
                    .context("cannot encode the audit report")?;
                s.push('\n');
                s
            } else {
                report.to_text()
            };
            print_stdout(text.as_bytes())?;
            Ok(ExitCode::from(report.exit_code()))
        }
        Command::Metrics(args) => {
            let text = if args.markdown {
                metrics::markdown_table()
            } else {
                metrics::create_commands()
            };
            print_stdout(text.as_bytes())?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// A file given to `logs scan` must be a readable, uncompressed log (`-` is stdin): a missing
/// file or a rotated `.gz` is a usage error (exit 2) that says what to do.
fn check_scan_input(path: &std::path::Path) -> Result<(), UsageError> {
    use std::io::Read as _;
    if path == std::path::Path::new("-") {
        return Ok(());
    }
    let mut magic = [0u8; 2];
    let read = std::fs::File::open(path).and_then(|mut f| f.read(&mut magic));
    match read {
        Err(e) => Err(UsageError(format!("{}: {e}", path.display()))),
        Ok(2) if magic == [0x1f, 0x8b] => Err(UsageError(format!(
            "{}: gzip-compressed; scan it with `zcat {} | edgewarden logs scan -`",
            path.display(),
            path.display()
        ))),
        Ok(_) => Ok(()),
    }
}

fn print_stdout(bytes: &[u8]) -> anyhow::Result<()> {
    let mut out = std::io::stdout().lock();
    out.write_all(bytes).context("cannot write to stdout")?;
    out.flush().context("cannot write to stdout")
}
