//! `LOGGING_DISABLED`: the journal keeps nothing across reboots (`Storage=volatile` or `none`,
//! or `auto` with no `/var/log/journal`), or no authentication log is readable at all: none of the
//! `[logs] files` opens and the journal is not read, absent, or keeps nothing.

use std::path::{Path, PathBuf};

use super::{dir_files, read_optional, Draft, Findings, Severity, LOGGING_DISABLED};

/// Where systemd-journald lives (runtime socket directory, or the daemon's binary).
const JOURNALD: &[&str] = &[
    "/run/systemd/journal",
    "/usr/lib/systemd/systemd-journald",
    "/lib/systemd/systemd-journald",
];

/// `Storage=` of journald: the last assignment in `journald.conf` and then its drop-ins (sorted)
/// wins, as systemd reads them. `None` when no file sets it.
pub fn journald_storage(out: &mut Findings<'_>) -> Option<(String, PathBuf)> {
    let mut files = vec![PathBuf::from("/etc/systemd/journald.conf")];
    for d in [
        "/usr/lib/systemd/journald.conf.d",
        "/etc/systemd/journald.conf.d",
    ] {
        files.extend(dir_files(out.inputs(), Path::new(d), ".conf"));
    }
    let mut storage = None;
    for f in files {
        let Some(text) = read_optional(out, LOGGING_DISABLED, &f) else {
            continue;
        };
        let mut in_journal = false;
        for line in text.lines() {
            let t = line.trim();
            if t.starts_with('[') {
                in_journal = t == "[Journal]";
                continue;
            }
            if !in_journal || t.starts_with('#') || t.starts_with(';') {
                continue;
            }
            if let Some((k, v)) = t.split_once('=') {
                if k.trim() == "Storage" {
                    storage = Some((v.trim().to_ascii_lowercase(), f.clone()));
                }
            }
        }
    }
    storage
}

/// Runs the check.
pub fn check(out: &mut Findings<'_>) {
    let inputs = out.inputs();
    let has_journald = JOURNALD.iter().any(|p| inputs.path(Path::new(p)).exists());
    let mut journal_usable = false;
    if has_journald {
        let (storage, file) =
            journald_storage(out).unwrap_or_else(|| ("auto".into(), PathBuf::from("(default)")));
        journal_usable = storage != "none";
        let var_log_journal = inputs.path(Path::new("/var/log/journal")).is_dir();
        let problem = match storage.as_str() {
            "none" => Some((Severity::High, "journald discards every message (Storage=none)".to_owned())),
            "volatile" => Some((Severity::Medium, "journald keeps logs in memory only (Storage=volatile); they are lost at reboot".to_owned())),
            "auto" if !var_log_journal => Some((Severity::Medium, "journald keeps logs in memory only (Storage=auto and no /var/log/journal); they are lost at reboot".to_owned())),
            _ => None,
        };
        if let Some((severity, reason)) = problem {
            out.add(Draft {
                check: LOGGING_DISABLED,
                severity,
                resource_type: "LOGGING",
                id: vec![("service", "systemd-journald".into())],
                info: vec![("storage", storage.clone()), ("setBy", file.display().to_string())],
                reason: format!("{reason}."),
                fix: "Set Storage=persistent in /etc/systemd/journald.conf (or create /var/log/journal) and restart systemd-journald.".into(),
            });
        }
    }
    let readable: Vec<&PathBuf> = inputs
        .log_files
        .iter()
        .filter(|p| readable_log(&inputs.path(p)))
        .collect();
    let journal_read = inputs.journal && journal_usable;
    if readable.is_empty() && !journal_read {
        let files: Vec<String> = inputs
            .log_files
            .iter()
            .map(|p| p.display().to_string())
            .collect();
        out.add(Draft {
            check: LOGGING_DISABLED,
            severity: Severity::High,
            resource_type: "LOGGING",
            id: vec![("log", "authentication".into())],
            info: vec![("files", files.join(", ")), ("journal", if inputs.journal { "read".into() } else { "not read".into() })],
            reason: "No authentication log is readable: none of the configured log files can be opened and the journal is not read or keeps nothing.".into(),
            fix: "Enable rsyslog's auth facility (/var/log/auth.log) or a persistent journal, and let the agent read it (group adm or systemd-journal).".into(),
        });
    }
}

/// True when `path` is a regular file this process can open for reading. Opened non-blocking and
/// without following a link, as the log followers do: a FIFO or a device planted at a log path
/// must never block the audit.
fn readable_log(path: &std::path::Path) -> bool {
    use std::os::unix::fs::OpenOptionsExt as _;
    std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(path)
        .and_then(|f| f.metadata())
        .is_ok_and(|m| m.is_file())
}
