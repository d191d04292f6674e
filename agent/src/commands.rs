//! Bodies of the one-shot commands (`collect`, `status`, `logs scan`): they print and return;
//! none of them creates or changes the running agent's state.

use std::process::ExitCode;
use std::time::Duration;

use edgewarden::cli::LogsScanArgs;
use edgewarden::collect::Collector;
use edgewarden::config::{Config, ReportFormat};
use edgewarden::detect::{self, Engine};
use edgewarden::pipeline::now_ms;
use edgewarden::report::{self, Aggregator};
use edgewarden::snapshot::Snapshot;

/// One report of this machine: two samples `warm_up`-apart (at least 1 s) so that the report
/// carries deltas.
pub(crate) fn collect_once(
    cfg: &Config,
    format: ReportFormat,
    pretty: bool,
) -> anyhow::Result<Vec<u8>> {
    let mut c = Collector::new(&cfg.collect);
    let mut agg = Aggregator::new(&cfg.report);
    let first: Snapshot = c.sample();
    agg.add(&first);
    std::thread::sleep(
        cfg.report
            .warm_up
            .clamp(Duration::from_secs(1), Duration::from_secs(2)),
    );
    agg.add(&c.sample());
    // Printed, never sent: the id is the wall clock, and the running agent's persisted id in the
    // state directory is neither read nor advanced.
    let rep = agg.take(now_ms());
    let bytes = report::encode(&rep, format);
    if pretty && format != ReportFormat::Cbor {
        let v: serde_json::Value = serde_json::from_slice(&bytes)?;
        return Ok(serde_json::to_vec_pretty(&v)?);
    }
    Ok(bytes)
}

/// `edgewarden status`: the persisted detector state and the outbox/spool position.
pub(crate) fn status_text(cfg: &Config) -> anyhow::Result<String> {
    let mut s = format!(
        "thing: {}\nstate_dir: {}\n",
        cfg.thing_name,
        cfg.state_dir.display()
    );
    match detect::persist::load(&cfg.state_dir) {
        None => s.push_str(
            "detector: no learned state yet (the agent has not run, or detection is off)\n",
        ),
        Some(state) => {
            let profile = match &cfg.detect.profile {
                Some(p) => detect::load_profile(p).map_err(|e| anyhow::anyhow!("{e}"))?,
                None => detect::default_profile(),
            };
            let engine = Engine::new(profile, &cfg.detect, &cfg.thing_name, Some(state));
            s.push_str(&engine.status().to_string());
        }
    }
    Ok(s)
}

/// `edgewarden logs scan`.
pub(crate) fn logs_scan(cfg: &Config, args: &LogsScanArgs) -> anyhow::Result<ExitCode> {
    let opts = edgewarden::logs::ScanOptions {
        json: args.json,
        lines: args.lines,
        rules: Some(edgewarden::logs::Rules::from_config(&cfg.logs)),
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    edgewarden::logs::scan_files(&args.files, opts, &mut out)?;
    std::io::Write::flush(&mut out)?;
    Ok(ExitCode::SUCCESS)
}
