//! Command-line front end of the detector.
//!
//! ```text
//! edgewarden-detector nab   --data DIR --out DIR [--params FILE]
//! edgewarden-detector score --input FILE.csv [--plot FILE.svg] [--params FILE]
//! edgewarden-detector params [--params FILE]
//! ```
//!
//! `nab` runs the detector as a stream over every `DIR/<category>/<name>.csv` (columns
//! `timestamp,value`) and writes `OUT/<category>/<name>.csv` with the columns
//! `timestamp,value,anomaly_score`, same rows, same order. `score` reads any CSV whose
//! first column is a timestamp and whose other columns are numeric features, writes
//! one verdict per row on standard output and optionally renders an SVG plot.
//!
//! `params` prints the effective parameters (the defaults, overridden by `--params`) as
//! JSON.
//!
//! `--params` names a JSON file of `DetectorParams` fields (unknown keys are refused);
//! the feature names always come from the data.

use std::fmt::Write as _;
use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Instant;

use edgewarden_detector::{Detector, DetectorParams, Verdict};

const USAGE: &str = "usage:
  edgewarden-detector nab --data DIR --out DIR [--params FILE]
  edgewarden-detector score --input FILE.csv [--plot FILE.svg] [--params FILE]
  edgewarden-detector params [--params FILE]";

#[derive(Debug)]
enum Command {
    Nab {
        data: PathBuf,
        out: PathBuf,
        params: Option<PathBuf>,
    },
    Score {
        input: PathBuf,
        plot: Option<PathBuf>,
        params: Option<PathBuf>,
    },
    Params {
        params: Option<PathBuf>,
    },
    Help,
}

fn parse_args(args: &[String]) -> Result<Command, String> {
    let Some((cmd, rest)) = args.split_first() else {
        return Err("missing command".to_owned());
    };
    if cmd == "-h" || cmd == "--help" || cmd == "help" {
        return Ok(Command::Help);
    }
    let mut flags: Vec<(&str, PathBuf)> = Vec::new();
    let mut it = rest.iter();
    while let Some(flag) = it.next() {
        let allowed: &[&str] = match cmd.as_str() {
            "nab" => &["--data", "--out", "--params"],
            "score" => &["--input", "--plot", "--params"],
            "params" => &["--params"],
            other => return Err(format!("unknown command {other:?}")),
        };
        if flag == "-h" || flag == "--help" {
            return Ok(Command::Help);
        }
        let Some(name) = allowed.iter().find(|a| **a == flag.as_str()) else {
            return Err(format!("unknown option {flag:?} for {cmd}"));
        };
        let Some(value) = it.next() else {
            return Err(format!("{flag} needs a value"));
        };
        if flags.iter().any(|(n, _)| n == name) {
            return Err(format!("{flag} given twice"));
        }
        flags.push((name, PathBuf::from(value)));
    }
    let mut take = |name: &str| {
        flags
            .iter()
            .position(|(n, _)| *n == name)
            .map(|i| flags.swap_remove(i).1)
    };
    match cmd.as_str() {
        "nab" => Ok(Command::Nab {
            data: take("--data").ok_or("nab needs --data DIR")?,
            out: take("--out").ok_or("nab needs --out DIR")?,
            params: take("--params"),
        }),
        "score" => Ok(Command::Score {
            input: take("--input").ok_or("score needs --input FILE.csv")?,
            plot: take("--plot"),
            params: take("--params"),
        }),
        "params" => Ok(Command::Params {
            params: take("--params"),
        }),
        other => Err(format!("unknown command {other:?}")),
    }
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match parse_args(&args) {
        Ok(Command::Help) => {
            eprintln!("{USAGE}");
            return ExitCode::SUCCESS;
        }
        Ok(Command::Nab { data, out, params }) => run_nab(&data, &out, params.as_deref()),
        Ok(Command::Score {
            input,
            plot,
            params,
        }) => run_score(&input, plot.as_deref(), params.as_deref()),
        Ok(Command::Params { params }) => run_params(params.as_deref()),
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::FAILURE
        }
    }
}

fn load_params(path: Option<&Path>) -> Result<DetectorParams, String> {
    let Some(path) = path else {
        return Ok(DetectorParams::default());
    };
    let text = fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
}

#[allow(clippy::print_stdout)]
fn run_params(params: Option<&Path>) -> Result<(), String> {
    let params = load_params(params)?;
    params
        .clone()
        .validate()
        .map_err(|e| format!("invalid parameters: {e}"))?;
    let json = serde_json::to_string_pretty(&params).map_err(|e| e.to_string())?;
    println!("{json}");
    Ok(())
}

fn new_detector(base: &DetectorParams, features: Vec<String>) -> Result<Detector, String> {
    let params = DetectorParams {
        features,
        ..base.clone()
    };
    Detector::new(params).map_err(|e| format!("invalid parameters: {e}"))
}

// ------------------------------------------------------------------ nab ---

fn run_nab(data: &Path, out: &Path, params: Option<&Path>) -> Result<(), String> {
    let base = load_params(params)?;
    let mut files = Vec::new();
    let categories = read_dir_sorted(data)?;
    for cat in categories.iter().filter(|p| p.is_dir()) {
        for file in read_dir_sorted(cat)? {
            if file.extension().is_some_and(|e| e == "csv") {
                files.push(file);
            }
        }
    }
    if files.is_empty() {
        return Err(format!("{}: no <category>/<name>.csv file", data.display()));
    }
    let started = Instant::now();
    let mut rows = 0usize;
    for file in &files {
        let rel = file
            .strip_prefix(data)
            .map_err(|_| format!("{}: outside {}", file.display(), data.display()))?;
        let target = out.join(rel);
        rows += nab_file(&base, file, &target)?;
    }
    eprintln!(
        "scored {} files, {rows} rows in {:.3} s",
        files.len(),
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

fn read_dir_sorted(dir: &Path) -> Result<Vec<PathBuf>, String> {
    let mut entries: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .collect();
    entries.sort();
    Ok(entries)
}

fn nab_file(base: &DetectorParams, input: &Path, target: &Path) -> Result<usize, String> {
    let text = fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty file", input.display()))?;
    let cols: Vec<&str> = header.split(',').map(str::trim).collect();
    if cols.len() < 2 || cols[0] != "timestamp" || cols[1] != "value" {
        return Err(format!(
            "{}:1: header must start with timestamp,value, got {header:?}",
            input.display()
        ));
    }
    let mut det = new_detector(base, vec!["value".to_owned()])?;
    let mut out = String::with_capacity(text.len() + text.len() / 2);
    out.push_str("timestamp,value,anomaly_score\n");
    let mut rows = 0;
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 2;
        let mut parts = line.split(',');
        let ts_text = parts.next().unwrap_or_default().trim();
        let value_text = parts.next().unwrap_or_default().trim();
        let ts = parse_timestamp_ms(ts_text)
            .ok_or_else(|| format!("{}:{line_no}: bad timestamp {ts_text:?}", input.display()))?;
        // An unparsable value is scored as a skipped (non-finite) sample.
        let value = value_text.parse::<f64>().unwrap_or(f64::NAN);
        let verdict = det.observe_and_retrain(ts, &[value]);
        let _ = writeln!(out, "{ts_text},{value_text},{}", verdict.score);
        rows += 1;
    }
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("{}: {e}", parent.display()))?;
    }
    fs::write(target, out).map_err(|e| format!("{}: {e}", target.display()))?;
    Ok(rows)
}

// ---------------------------------------------------------------- score ---

struct Series {
    names: Vec<String>,
    stamps: Vec<String>,
    /// The feature cells of each row, as written in the input.
    cells: Vec<String>,
    ts_ms: Vec<u64>,
    /// Row-major values, NaN where a cell did not parse.
    values: Vec<Vec<f64>>,
}

fn read_series(input: &Path) -> Result<Series, String> {
    let text = fs::read_to_string(input).map_err(|e| format!("{}: {e}", input.display()))?;
    let mut lines = text.lines();
    let header = lines
        .next()
        .ok_or_else(|| format!("{}: empty file", input.display()))?;
    let cols: Vec<String> = header.split(',').map(|c| c.trim().to_owned()).collect();
    if cols.len() < 2 {
        return Err(format!(
            "{}:1: need a timestamp column and at least one feature column",
            input.display()
        ));
    }
    let names = cols[1..].to_vec();
    let mut series = Series {
        names,
        stamps: Vec::new(),
        cells: Vec::new(),
        ts_ms: Vec::new(),
        values: Vec::new(),
    };
    for (i, line) in lines.enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let line_no = i + 2;
        let cells: Vec<&str> = line.split(',').map(str::trim).collect();
        if cells.len() != cols.len() {
            return Err(format!(
                "{}:{line_no}: expected {} columns, got {}",
                input.display(),
                cols.len(),
                cells.len()
            ));
        }
        let ts = parse_timestamp_ms(cells[0]).ok_or_else(|| {
            format!(
                "{}:{line_no}: bad timestamp {:?}",
                input.display(),
                cells[0]
            )
        })?;
        series.stamps.push(cells[0].to_owned());
        series.cells.push(cells[1..].join(","));
        series.ts_ms.push(ts);
        series.values.push(
            cells[1..]
                .iter()
                .map(|c| c.parse::<f64>().unwrap_or(f64::NAN))
                .collect(),
        );
    }
    Ok(series)
}

#[allow(clippy::print_stdout)]
fn run_score(input: &Path, plot: Option<&Path>, params: Option<&Path>) -> Result<(), String> {
    let base = load_params(params)?;
    let series = read_series(input)?;
    let mut det = new_detector(&base, series.names.clone())?;
    let mut verdicts = Vec::with_capacity(series.ts_ms.len());
    let stdout = std::io::stdout();
    let mut w = std::io::BufWriter::new(stdout.lock());
    let io = |e: std::io::Error| format!("stdout: {e}");
    writeln!(
        w,
        "timestamp,{},anomaly_score,anomalous,status,top_feature",
        series.names.join(",")
    )
    .map_err(io)?;
    for (row, (&ts, values)) in series.ts_ms.iter().zip(&series.values).enumerate() {
        let v = det.observe_and_retrain(ts, values);
        let top = v
            .top()
            .first()
            .map(|c| det.feature_names()[c.feature].as_str())
            .unwrap_or("");
        let status = match v.status {
            edgewarden_detector::Status::Learning => "learning".to_owned(),
            edgewarden_detector::Status::Armed => "armed".to_owned(),
            edgewarden_detector::Status::Skipped(r) => format!("skipped:{r:?}"),
        };
        writeln!(
            w,
            "{},{},{:.6},{},{status},{top}",
            series.stamps[row], series.cells[row], v.score, v.anomalous
        )
        .map_err(io)?;
        verdicts.push(v);
    }
    w.flush().map_err(io)?;
    let skipped = det.skipped();
    eprintln!(
        "{} rows, {} alarms, {} skipped (non-finite {}, out of order {}, out of range {})",
        series.ts_ms.len(),
        verdicts.iter().filter(|v| v.anomalous).count(),
        skipped.total(),
        skipped.non_finite,
        skipped.out_of_order,
        skipped.out_of_range
    );
    if let Some(path) = plot {
        let svg = render_svg(&series, &verdicts, input);
        fs::write(path, svg).map_err(|e| format!("{}: {e}", path.display()))?;
    }
    Ok(())
}

// ------------------------------------------------------------------ svg ---

/// Largest number of feature panels drawn; further features are listed but not plotted.
const MAX_PANELS: usize = 8;
/// Largest number of points per polyline (longer series are min/max decimated).
const MAX_POINTS: usize = 2000;

fn render_svg(series: &Series, verdicts: &[Verdict], input: &Path) -> String {
    let width = 1200.0;
    let panel_h = 140.0;
    let gap = 28.0;
    let left = 70.0;
    let right = 20.0;
    let top = 40.0;
    let panels = series.names.len().min(MAX_PANELS);
    let height = top + (panels + 1) as f64 * (panel_h + gap) + 20.0;
    let n = series.ts_ms.len();
    let plot_w = width - left - right;
    let x_of = |i: usize| left + plot_w * i as f64 / (n.max(2) - 1) as f64;
    let mut svg = String::new();
    let _ = writeln!(
        svg,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(
        svg,
        r#"<rect width="100%" height="100%" fill="white"/><text x="{left}" y="22" font-size="15">{} — {n} rows, {} alarms (red)</text>"#,
        xml_escape(&input.display().to_string()),
        verdicts.iter().filter(|v| v.anomalous).count()
    );
    let alarms: Vec<usize> = (0..n).filter(|&i| verdicts[i].anomalous).collect();
    let mut draw_panel = |k: usize,
                          label: &str,
                          ys: &[f64],
                          fixed: Option<(f64, f64)>,
                          color: &str| {
        let y0 = top + k as f64 * (panel_h + gap);
        let finite = ys.iter().copied().filter(|v| v.is_finite());
        let (mut lo, mut hi) = fixed.unwrap_or_else(|| {
            finite.fold((f64::INFINITY, f64::NEG_INFINITY), |(a, b), v| {
                (a.min(v), b.max(v))
            })
        });
        if !(lo.is_finite() && hi.is_finite()) {
            (lo, hi) = (0.0, 1.0);
        }
        if hi - lo <= 0.0 {
            (lo, hi) = (lo - 0.5, hi + 0.5);
        }
        let y_of = move |v: f64| y0 + panel_h - panel_h * (v - lo) / (hi - lo);
        let _ = writeln!(
            svg,
            r##"<rect x="{left}" y="{y0}" width="{plot_w}" height="{panel_h}" fill="none" stroke="#bbb"/><text x="{left}" y="{}">{}</text><text x="{}" y="{}" text-anchor="end">{}</text><text x="{}" y="{}" text-anchor="end">{}</text>"##,
            y0 - 6.0,
            xml_escape(label),
            left - 6.0,
            y0 + 10.0,
            fmt_num(hi),
            left - 6.0,
            y0 + panel_h,
            fmt_num(lo)
        );
        for &i in &alarms {
            let x = x_of(i);
            let _ = writeln!(
                svg,
                r##"<line x1="{x:.1}" y1="{y0}" x2="{x:.1}" y2="{}" stroke="#f4a6a6"/>"##,
                y0 + panel_h
            );
        }
        let mut points = String::new();
        let bucket = n.div_ceil(MAX_POINTS).max(1);
        for start in (0..n).step_by(bucket) {
            let end = (start + bucket).min(n);
            let chunk = &ys[start..end];
            let (mut imin, mut imax) = (start, start);
            for (off, v) in chunk.iter().enumerate() {
                if v.is_finite() {
                    if !ys[imin].is_finite() || *v < ys[imin] {
                        imin = start + off;
                    }
                    if !ys[imax].is_finite() || *v > ys[imax] {
                        imax = start + off;
                    }
                }
            }
            let (a, b) = if imin <= imax {
                (imin, imax)
            } else {
                (imax, imin)
            };
            for i in [a, b] {
                if ys[i].is_finite() {
                    let _ = write!(points, "{:.1},{:.1} ", x_of(i), y_of(ys[i]));
                }
            }
        }
        let _ = writeln!(
            svg,
            r#"<polyline fill="none" stroke="{color}" stroke-width="1" points="{points}"/>"#
        );
        for &i in &alarms {
            if ys[i].is_finite() {
                let _ = writeln!(
                    svg,
                    r##"<circle cx="{:.1}" cy="{:.1}" r="3.5" fill="#d62728"/>"##,
                    x_of(i),
                    y_of(ys[i])
                );
            }
        }
        y_of
    };
    for (k, name) in series.names.iter().take(panels).enumerate() {
        let ys: Vec<f64> = series.values.iter().map(|row| row[k]).collect();
        let _ = draw_panel(k, name, &ys, None, "#1f77b4");
    }
    let scores: Vec<f64> = verdicts.iter().map(|v| v.score).collect();
    let threshold = verdicts.first().map_or(0.5, |v| v.threshold);
    let y_of = draw_panel(
        panels,
        "anomaly score",
        &scores,
        Some((0.0, 1.0)),
        "#2ca02c",
    );
    let y = y_of(threshold);
    let _ = writeln!(
        svg,
        r##"<line x1="{left}" y1="{y:.1}" x2="{}" y2="{y:.1}" stroke="#d62728" stroke-dasharray="4 3"/><text x="{}" y="{:.1}" text-anchor="end" fill="#d62728">threshold {threshold}</text>"##,
        left + plot_w,
        left + plot_w - 4.0,
        y - 4.0
    );
    if series.names.len() > panels {
        let _ = writeln!(
            svg,
            r#"<text x="{left}" y="{}">{} more features not drawn</text>"#,
            height - 6.0,
            series.names.len() - panels
        );
    }
    svg.push_str("</svg>\n");
    svg
}

fn fmt_num(v: f64) -> String {
    if v.abs() >= 1e5 || (v != 0.0 && v.abs() < 1e-3) {
        format!("{v:.3e}")
    } else {
        format!("{v:.3}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

// ----------------------------------------------------------- timestamps ---

/// Parses `YYYY-MM-DD[ T]HH:MM[:SS[.fff…]][Z]`, a bare date, or a number of seconds since
/// the Unix epoch, into milliseconds since the epoch (UTC; zone-less times are taken as
/// UTC).
fn parse_timestamp_ms(text: &str) -> Option<u64> {
    let text = text.trim();
    if let Ok(secs) = text.parse::<f64>() {
        return ((0.0..1e15).contains(&secs)).then(|| (secs * 1000.0).round() as u64);
    }
    let text = text.strip_suffix('Z').unwrap_or(text);
    let (date, time) = match text.find([' ', 'T']) {
        Some(i) => (&text[..i], text[i + 1..].trim()),
        None => (text, ""),
    };
    let mut d = date.split('-');
    let year: i64 = d.next()?.parse().ok()?;
    let month: u32 = d.next()?.parse().ok()?;
    let day: u32 = d.next()?.parse().ok()?;
    if d.next().is_some()
        || !(0..=9999).contains(&year)
        || !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
    {
        return None;
    }
    let (mut h, mut m, mut s_ms) = (0u64, 0u64, 0u64);
    if !time.is_empty() {
        let mut t = time.split(':');
        h = t.next()?.parse().ok()?;
        m = t.next()?.parse().ok()?;
        if let Some(sec) = t.next() {
            let (whole, frac) = sec.split_once('.').unwrap_or((sec, ""));
            let whole: u64 = whole.parse().ok().filter(|w| *w <= 60)?;
            let mut frac_ms = 0u64;
            for (k, c) in frac.chars().take(3).enumerate() {
                frac_ms += u64::from(c.to_digit(10)?) * 10u64.pow(2 - k as u32);
            }
            if !frac.chars().all(|c| c.is_ascii_digit()) {
                return None;
            }
            s_ms = whole * 1000 + frac_ms;
        }
        if t.next().is_some() || h > 23 || m > 59 || s_ms >= 61_000 {
            return None;
        }
    }
    let days = days_from_civil(year, month, day);
    let ms = days * 86_400_000 + (h * 3_600_000 + m * 60_000 + s_ms) as i64;
    u64::try_from(ms).ok()
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let m = i64::from(m);
    let doy = (153 * (if m > 2 { m - 3 } else { m + 9 }) + 2) / 5 + i64::from(d) - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn timestamps_parse_in_the_nab_formats() {
        assert_eq!(parse_timestamp_ms("1970-01-01 00:00:00"), Some(0));
        assert_eq!(
            parse_timestamp_ms("2014-04-01 00:05:00"),
            Some(1_396_310_700_000)
        );
        assert_eq!(
            parse_timestamp_ms("2014-04-01T00:05:00.250000"),
            Some(1_396_310_700_250)
        );
        assert_eq!(parse_timestamp_ms("2000-03-01"), Some(951_868_800_000));
        assert_eq!(parse_timestamp_ms("1396310700"), Some(1_396_310_700_000));
        assert_eq!(parse_timestamp_ms("2014-13-01 00:00:00"), None);
        assert_eq!(parse_timestamp_ms("2014-04-01 24:00:00"), None);
        assert_eq!(parse_timestamp_ms("yesterday"), None);
    }

    #[test]
    fn arguments_are_checked() {
        let args = |s: &str| s.split_whitespace().map(str::to_owned).collect::<Vec<_>>();
        assert!(matches!(
            parse_args(&args("nab --data a --out b")),
            Ok(Command::Nab { .. })
        ));
        assert!(parse_args(&args("nab --data a")).is_err());
        assert!(parse_args(&args("nab --data a --out b --plot c")).is_err());
        assert!(parse_args(&args("score --input")).is_err());
        assert!(parse_args(&args("frobnicate")).is_err());
    }

    proptest! {
        #[test]
        fn timestamp_parser_never_panics(s in "\\PC{0,40}") {
            let _ = parse_timestamp_ms(&s);
        }

        #[test]
        fn timestamp_parser_never_panics_on_near_misses(
            s in "[0-9]{1,6}-[0-9]{1,3}-[0-9]{1,3}[ T][0-9]{1,3}:[0-9]{1,3}(:[0-9]{1,3}(\\.[0-9a-z]{0,8})?)?Z?"
        ) {
            let _ = parse_timestamp_ms(&s);
        }
    }
}
