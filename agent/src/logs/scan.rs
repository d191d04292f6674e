//! `edgewarden logs scan FILE… [--json] [--lines]`: classifies logs offline.
//!
//! Files are read in the order given, each with its own connection context, through one shared
//! tracker (so `auth.log.1 auth.log` behaves like one log). The line form is detected per line
//! (BSD syslog, ISO 8601, RFC 5424, `journalctl -o json`, Mosquitto, lines without a timestamp).
//! Input that starts like `journalctl -o export` output (`NAME=value`) is read as such, each
//! record counting as one line. `-` reads standard input. An rsyslog
//! `message repeated N times: [ … ]` line counts as N events of its inner message, attributed to
//! the line's own tag (at most [`MAX_REPEAT`](super::format::MAX_REPEAT)); `--lines` still shows
//! it as one row, with the inner message's class.
//!
//! Output formats (all UTF-8; addresses and names from the log are printed lossily):
//!
//! - default: for each file a header `FILE: N lines (K skipped)` then one line per non-zero class
//!   in taxonomy order (`  auth_failure  45`), and `  forged (in other)  N` when event lines
//!   came from programs that do not report such events; with several files a `total:` block; then
//!   `alerts:` (or `alerts: none`) and one line per alert:
//!   `  <kind>  <source or ->  <events> events  <file>:<line>  <detail>`.
//! - `--lines`: one tab-separated row per input line, `file<TAB>line<TAB>class<TAB>source`, the
//!   source empty when the line names none; lines over the cap get class `skipped`. No summary.
//! - `--json`: one JSON object: `{"files":[{"path","lines","skipped","forged","classes":{class:n}}],
//!   "classes":{class:n},"alerts":[{"kind","source","events","file","line","at_ms","detail"}]}`
//!   (`source` is null when unknown; `classes` list non-zero classes only).
//! - `--lines --json`: one JSON object per input line: `{"file","line","class","source"}`.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use serde_json::{json, Map, Value};

use super::analyze::{Analyzer, Stream};
use super::class::{ClassCounts, EventClass};
use super::export::{looks_like_export, ExportItem, ExportParser};
use super::lines::{LineSplitter, Piece};
use super::tracker::{LogAlert, Rules};

/// Options of `logs scan`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ScanOptions {
    /// JSON output.
    pub json: bool,
    /// One row per input line instead of the summary.
    pub lines: bool,
    /// Detection rules (brute-force limit and window from the configuration).
    pub rules: Option<Rules>,
}

/// Per-file result.
#[derive(Debug, Clone, PartialEq)]
pub struct FileSummary {
    /// The path as given.
    pub path: PathBuf,
    /// Lines read.
    pub lines: u64,
    /// Lines skipped for being longer than the cap.
    pub skipped: u64,
    /// Events per class: one per line, N for an rsyslog `message repeated N times: [ … ]` line.
    pub classes: ClassCounts,
    /// Events reported without coming from a program that reports it (counted as
    /// `other`).
    pub forged: u64,
}

/// An alert with the place it was raised.
#[derive(Debug, Clone, PartialEq)]
pub struct ScanAlert {
    /// The alert.
    pub alert: LogAlert,
    /// File of the line that raised it.
    pub file: PathBuf,
    /// 1-based line number of that line.
    pub line: u64,
}

/// Result of a scan.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ScanSummary {
    /// One entry per file, in order.
    pub files: Vec<FileSummary>,
    /// Sum over files.
    pub classes: ClassCounts,
    /// Alerts in the order raised.
    pub alerts: Vec<ScanAlert>,
}

/// One classified input line (for `--lines` and tests).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRow {
    /// 1-based line number.
    pub line: u64,
    /// The class, `None` for a skipped oversized line.
    pub class: Option<EventClass>,
    /// Source address, when the line names one.
    pub src: Option<std::sync::Arc<str>>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// Scans `reader` as one stream; calls `row` for every line. Alerts raised go to `alerts` with
/// their line number.
pub fn scan_reader(
    analyzer: &mut Analyzer,
    reader: &mut impl Read,
    mut row: impl FnMut(&LineRow),
    alerts: &mut Vec<(LogAlert, u64)>,
) -> io::Result<FileSummary> {
    let now = now_ms();
    let mut stream = Stream::new();
    let mut splitter = LineSplitter::new();
    let mut buf = vec![0u8; 64 * 1024];
    let mut n: u64 = 0;
    let mut summary = FileSummary {
        path: PathBuf::new(),
        lines: 0,
        skipped: 0,
        classes: ClassCounts::default(),
        forged: 0,
    };
    let mut handle = |p: Piece<'_>,
                      analyzer: &mut Analyzer,
                      summary: &mut FileSummary,
                      alerts: &mut Vec<(LogAlert, u64)>| {
        n += 1;
        match p {
            Piece::Line(l) => {
                let out = analyzer.line(&mut stream, l, now);
                summary.lines += 1;
                summary.classes.add_n(out.class, u64::from(out.occurrences));
                if out.forged {
                    summary.forged += u64::from(out.occurrences);
                }
                row(&LineRow {
                    line: n,
                    class: Some(out.class),
                    src: out.src,
                });
            }
            Piece::Oversized => {
                analyzer.skipped_line();
                summary.skipped += 1;
                row(&LineRow {
                    line: n,
                    class: None,
                    src: None,
                });
            }
        }
        for a in analyzer.take().alerts {
            alerts.push((a, n));
        }
    };
    // `journalctl -o export` input is recognised by its first bytes; its records are
    // numbered as lines.
    let mut export: Option<Option<ExportParser>> = None;
    loop {
        let got = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(g) => g,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let mode =
            export.get_or_insert_with(|| looks_like_export(&buf[..got]).then(ExportParser::new));
        match mode {
            Some(parser) => parser.feed(&buf[..got], |i| {
                handle(as_piece(i), analyzer, &mut summary, alerts)
            }),
            None => splitter.feed(&buf[..got], |p| handle(p, analyzer, &mut summary, alerts)),
        }
    }
    match export {
        Some(Some(mut parser)) => {
            parser.finish(|i| handle(as_piece(i), analyzer, &mut summary, alerts));
        }
        _ => splitter.finish(|p| handle(p, analyzer, &mut summary, alerts)),
    }
    Ok(summary)
}

fn as_piece(i: ExportItem<'_>) -> Piece<'_> {
    match i {
        ExportItem::Entry(j) => Piece::Line(j),
        ExportItem::Oversized => Piece::Oversized,
    }
}

fn open(path: &Path) -> io::Result<Box<dyn Read>> {
    if path == Path::new("-") {
        return Ok(Box::new(io::stdin()));
    }
    File::open(path)
        .map(|f| Box::new(f) as Box<dyn Read>)
        .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
}

fn lossy(p: &Path) -> String {
    p.to_string_lossy().into_owned()
}

fn classes_json(c: &ClassCounts) -> Value {
    let mut m = Map::new();
    for (class, n) in c.iter() {
        if n > 0 {
            m.insert(class.as_str().to_owned(), json!(n));
        }
    }
    Value::Object(m)
}

/// Scans `paths` and writes the report to `out` in the format `opts` selects.
pub fn scan_files(
    paths: &[PathBuf],
    opts: ScanOptions,
    out: &mut impl Write,
) -> io::Result<ScanSummary> {
    let mut analyzer = Analyzer::new(opts.rules.unwrap_or_default());
    let mut summary = ScanSummary::default();
    for path in paths {
        let mut reader = open(path)?;
        let file = lossy(path);
        let mut raised = Vec::new();
        let mut write_err: Option<io::Error> = None;
        let fs = scan_reader(
            &mut analyzer,
            &mut reader,
            |r| {
                if !opts.lines || write_err.is_some() {
                    return;
                }
                let class = r.class.map_or("skipped", EventClass::as_str);
                let res = if opts.json {
                    let v = json!({"file": file, "line": r.line, "class": class, "source": r.src.as_deref()});
                    writeln!(out, "{v}")
                } else {
                    writeln!(
                        out,
                        "{file}\t{}\t{class}\t{}",
                        r.line,
                        r.src.as_deref().unwrap_or("")
                    )
                };
                if let Err(e) = res {
                    write_err = Some(e);
                }
            },
            &mut raised,
        )?;
        if let Some(e) = write_err {
            return Err(e);
        }
        summary.classes.merge(&fs.classes);
        summary.files.push(FileSummary {
            path: path.clone(),
            ..fs
        });
        summary
            .alerts
            .extend(raised.into_iter().map(|(alert, line)| ScanAlert {
                alert,
                file: path.clone(),
                line,
            }));
    }
    if opts.lines {
        return Ok(summary);
    }
    if opts.json {
        let v = json!({
            "files": summary.files.iter().map(|f| json!({
                "path": lossy(&f.path), "lines": f.lines, "skipped": f.skipped, "forged": f.forged, "classes": classes_json(&f.classes),
            })).collect::<Vec<_>>(),
            "classes": classes_json(&summary.classes),
            "alerts": summary.alerts.iter().map(|a| json!({
                "kind": a.alert.kind.as_str(),
                "source": if a.alert.host.is_empty() { None } else { Some(&a.alert.host) },
                "events": a.alert.events,
                "file": lossy(&a.file),
                "line": a.line,
                "at_ms": a.alert.at_ms,
                "detail": a.alert.detail,
            })).collect::<Vec<_>>(),
        });
        writeln!(out, "{v}")?;
        return Ok(summary);
    }
    write_text(&summary, out)?;
    Ok(summary)
}

fn write_counts(c: &ClassCounts, out: &mut impl Write) -> io::Result<()> {
    for (class, n) in c.iter() {
        if n > 0 {
            writeln!(out, "  {:<24}{n}", class.as_str())?;
        }
    }
    Ok(())
}

fn write_text(s: &ScanSummary, out: &mut impl Write) -> io::Result<()> {
    for f in &s.files {
        writeln!(
            out,
            "{}: {} lines ({} skipped)",
            f.path.display(),
            f.lines,
            f.skipped
        )?;
        write_counts(&f.classes, out)?;
        if f.forged > 0 {
            writeln!(out, "  {:<24}{}", "forged (in other)", f.forged)?;
        }
    }
    if s.files.len() > 1 {
        let lines: u64 = s.files.iter().map(|f| f.lines).sum();
        let skipped: u64 = s.files.iter().map(|f| f.skipped).sum();
        writeln!(out, "total: {lines} lines ({skipped} skipped)")?;
        write_counts(&s.classes, out)?;
    }
    if s.alerts.is_empty() {
        writeln!(out, "alerts: none")?;
    } else {
        writeln!(out, "alerts:")?;
        for a in &s.alerts {
            let src = if a.alert.host.is_empty() {
                "-"
            } else {
                &a.alert.host
            };
            writeln!(
                out,
                "  {:<22}{:<18}{} events  {}:{}  {}",
                a.alert.kind.as_str(),
                src,
                a.alert.events,
                a.file.display(),
                a.line,
                a.alert.detail
            )?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const LOG: &str = "\
Mar  1 10:00:01 gw sshd[1]: Invalid user a from 203.0.113.5 port 1
Mar  1 10:00:02 gw sshd[2]: Invalid user b from 203.0.113.5 port 2
Mar  1 10:00:03 gw sshd[3]: Invalid user c from 203.0.113.5 port 3
Mar  1 10:00:04 gw sshd[4]: Invalid user d from 203.0.113.5 port 4
Mar  1 10:00:05 gw sshd[5]: Invalid user e from 203.0.113.5 port 5
Mar  1 10:00:06 gw sshd[6]: Invalid user f from 203.0.113.5 port 6
Mar  1 10:00:07 gw sshd[7]: pam_unix(sshd:session): session opened for user pi(uid=1000) by (uid=0)
";

    fn run(opts: ScanOptions) -> (String, ScanSummary) {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("auth.log");
        std::fs::write(&p, LOG).unwrap();
        let mut out = Vec::new();
        let s = scan_files(std::slice::from_ref(&p), opts, &mut out).unwrap();
        let text = String::from_utf8(out)
            .unwrap()
            .replace(&*p.to_string_lossy(), "FILE");
        (text, s)
    }

    #[test]
    fn lines_output_is_one_tab_separated_row_per_line() {
        let (text, _) = run(ScanOptions {
            lines: true,
            ..ScanOptions::default()
        });
        let rows: Vec<&str> = text.lines().collect();
        assert_eq!(rows.len(), 7);
        assert_eq!(rows[0], "FILE\t1\tinvalid_user\t203.0.113.5");
        assert_eq!(rows[6], "FILE\t7\tother\t");
    }

    #[test]
    fn summary_lists_counts_and_the_alerts_with_their_line() {
        let (text, s) = run(ScanOptions::default());
        assert!(text.starts_with("FILE: 7 lines (0 skipped)\n"), "{text}");
        assert!(text.contains("  invalid_user            6\n"), "{text}");
        assert!(text.contains("  other                   1\n"), "{text}");
        assert!(
            text.contains("brute_force           203.0.113.5       6 events  FILE:6  "),
            "{text}"
        );
        assert!(
            text.contains("user_enumeration      203.0.113.5       6 events  FILE:6  "),
            "{text}"
        );
        assert_eq!(s.alerts.len(), 2);
        assert_eq!(s.classes.get(EventClass::InvalidUser), 6);
    }

    #[test]
    fn json_output_parses_and_carries_the_same_numbers() {
        let (text, _) = run(ScanOptions {
            json: true,
            ..ScanOptions::default()
        });
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["classes"]["invalid_user"], 6);
        assert_eq!(v["files"][0]["lines"], 7);
        assert_eq!(v["alerts"][0]["kind"], "brute_force");
        assert_eq!(v["alerts"][0]["source"], "203.0.113.5");
        assert_eq!(v["alerts"][0]["line"], 6);
        let (text, _) = run(ScanOptions {
            json: true,
            lines: true,
            ..ScanOptions::default()
        });
        let first: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(first["class"], "invalid_user");
        assert_eq!(first["line"], 1);
    }

    #[test]
    fn journal_export_input_and_lines_without_a_timestamp_are_classified() {
        let mut export = Vec::new();
        for (i, (comm, uid)) in [("sshd", 0), ("logger", 1000), ("sshd", 0)]
            .iter()
            .enumerate()
        {
            export.extend_from_slice(
                format!(
                    "__CURSOR=s={i}\n_PID={}\n_UID={uid}\n_COMM={comm}\n_TRANSPORT=syslog\nSYSLOG_IDENTIFIER=sshd\nMESSAGE=Failed password for root from 198.51.100.{i} port 22 ssh2\n\n",
                    40 + i
                )
                .as_bytes(),
            );
        }
        let mut analyzer = Analyzer::new(Rules::default());
        let mut rows = Vec::new();
        let mut alerts = Vec::new();
        let fs = scan_reader(
            &mut analyzer,
            &mut &export[..],
            |r| rows.push(r.clone()),
            &mut alerts,
        )
        .unwrap();
        assert_eq!((fs.lines, fs.forged), (3, 1));
        assert_eq!(fs.classes.get(EventClass::AuthFailure), 2);
        assert_eq!(rows[2].src.as_deref(), Some("198.51.100.2"));

        let untimed = b"gw sshd[7]: Failed password for root from 198.51.100.9 port 22 ssh2\n";
        let fs = scan_reader(&mut analyzer, &mut &untimed[..], |_| {}, &mut alerts).unwrap();
        assert_eq!(fs.classes.get(EventClass::AuthFailure), 1);
    }

    #[test]
    fn a_repeated_message_line_is_scanned_as_its_repetitions() {
        let text = b"Mar  1 10:00:00 gw sshd[41]: Failed password for root from 198.51.100.7 port 22 ssh2
Mar  1 10:00:09 gw sshd[41]: message repeated 5 times: [ Failed password for root from 198.51.100.7 port 22 ssh2]
Mar  1 10:00:09 gw myapp[9]: message repeated 3 times: [ Failed password for root from 198.51.100.8 port 22 ssh2]
";
        let mut analyzer = Analyzer::new(Rules::default());
        let mut rows = Vec::new();
        let mut alerts = Vec::new();
        let fs = scan_reader(
            &mut analyzer,
            &mut &text[..],
            |r| rows.push(r.clone()),
            &mut alerts,
        )
        .unwrap();
        assert_eq!((fs.lines, fs.forged), (3, 3));
        assert_eq!(fs.classes.get(EventClass::AuthFailure), 6);
        assert_eq!(fs.classes.get(EventClass::Other), 3);
        assert_eq!(rows.len(), 3);
        assert_eq!(rows[1].class, Some(EventClass::AuthFailure));
        assert_eq!(rows[1].src.as_deref(), Some("198.51.100.7"));
        // The sixth attempt, on line 2, exceeds the brute-force limit of five.
        assert_eq!(alerts.len(), 1);
        assert_eq!((alerts[0].0.events, alerts[0].1), (6, 2));
    }

    #[test]
    fn a_missing_file_is_an_error_naming_it() {
        let mut out = Vec::new();
        let e = scan_files(
            &[PathBuf::from("/nonexistent/auth.log")],
            ScanOptions::default(),
            &mut out,
        )
        .unwrap_err();
        assert!(e.to_string().contains("/nonexistent/auth.log"), "{e}");
    }
}
