//! Command line: what this process runs and how (the file says what the agent does).

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

/// edgewarden: on-device security agent for Linux IoT gateways (AWS IoT Device Defender).
#[derive(Debug, Parser)]
#[command(name = "edgewarden", version, about, long_about = None)]
pub struct Cli {
    /// Log format on stderr.
    #[arg(long, value_enum, default_value_t = LogFormat::Human, global = true)]
    pub log_format: LogFormat,
    /// Log filter (tracing EnvFilter syntax); `RUST_LOG` also works.
    #[arg(long, global = true)]
    pub log_level: Option<String>,
    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// Report encoding on the command line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FormatArg {
    /// JSON, long key names.
    Json,
    /// JSON, short key names.
    JsonShort,
    /// CBOR (raw bytes on stdout).
    Cbor,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the agent until SIGINT/SIGTERM.
    Run(ConfigArg),
    /// Collect once and write one Device Defender report of this machine to stdout.
    Collect(CollectArgs),
    /// Validate a configuration file: exit 0, or exit 2 listing every problem.
    Validate(ConfigArg),
    /// Print the effective configuration, defaults included.
    PrintConfig(ConfigArg),
    /// Security profiles.
    #[command(subcommand)]
    Profile(ProfileCommand),
    /// Show the local detector's state: learning or armed, active violations, recent scores.
    Status(ConfigArg),
    /// Security events from logs.
    #[command(subcommand)]
    Logs(LogsCommand),
    /// List the custom metrics the agent reports, with the commands that register them.
    Metrics(MetricsArgs),
    /// Audit this device's security configuration: exit 0 no finding, 3 low/medium, 4 high/critical.
    Audit(AuditArgs),
}

/// `audit` arguments.
#[derive(Debug, Args)]
pub struct AuditArgs {
    /// JSON output (one object: findings and errors).
    #[arg(long)]
    pub json: bool,
    /// Filesystem root to audit (a mounted image or a fixture tree).
    #[arg(long, default_value = "/")]
    pub root: PathBuf,
    /// Configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `--config FILE`
#[derive(Debug, Args)]
pub struct ConfigArg {
    /// Configuration file (default: $EDGEWARDEN_CONFIG, else /etc/edgewarden/edgewarden.toml when it exists, else the embedded default).
    #[arg(long, short = 'c')]
    pub config: Option<PathBuf>,
}

/// `collect` arguments.
#[derive(Debug, Args)]
pub struct CollectArgs {
    /// Collect one report and exit (the only mode; kept explicit for scripts).
    #[arg(long)]
    pub once: bool,
    /// Encoding (default: the configured `[report] format`).
    #[arg(long, value_enum)]
    pub format: Option<FormatArg>,
    /// Indent JSON.
    #[arg(long)]
    pub pretty: bool,
    /// Configuration file.
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `profile` subcommands.
#[derive(Debug, Subcommand)]
pub enum ProfileCommand {
    /// Validate a security profile file (Device Defender behaviours JSON).
    Check {
        /// The profile file.
        file: PathBuf,
    },
    /// Print the built-in default profile.
    Default,
}

/// `logs` subcommands.
#[derive(Debug, Subcommand)]
pub enum LogsCommand {
    /// Classify log files offline and print per-class counts and the alerts they would raise.
    Scan(LogsScanArgs),
}

/// `logs scan` arguments.
#[derive(Debug, Args)]
pub struct LogsScanArgs {
    /// Log files (syslog, RFC 5424, ISO timestamps, or `journalctl -o json` lines).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// JSON output.
    #[arg(long)]
    pub json: bool,
    /// One tab-separated row per input line: file, line, class, source address.
    #[arg(long)]
    pub lines: bool,
    /// Configuration file (brute-force thresholds).
    #[command(flatten)]
    pub config: ConfigArg,
}

/// `metrics` arguments.
#[derive(Debug, Args)]
pub struct MetricsArgs {
    /// Print a Markdown table (as in the README) instead of shell commands.
    #[arg(long)]
    pub markdown: bool,
}
