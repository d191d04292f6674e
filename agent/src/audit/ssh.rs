//! `SSH_WEAK_CONFIG`: `PermitRootLogin yes`, `PasswordAuthentication yes`,
//! `PermitEmptyPasswords yes`.
//!
//! The effective settings come from `sshd -T` when auditing `/` and it works (it needs root and
//! the host keys); otherwise from `sshd_config`, following its `Include` directives in place,
//! with sshd's rule that the *first* value of a keyword wins. `Match` blocks are conditional and
//! not judged. Unset keywords take OpenSSH's defaults (`PasswordAuthentication yes`).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{dir_files, read_optional, Draft, Findings, Severity, SSH_WEAK_CONFIG};

const SSHD_CONFIG: &str = "/etc/ssh/sshd_config";
/// Bound on nested `Include`s (sshd's own limit is 16).
const MAX_DEPTH: usize = 16;

/// The settings judged, their OpenSSH defaults, and what the bad value means.
const RULES: &[(&str, &str, Severity, &str, &str)] = &[
    (
        "permitrootlogin",
        "prohibit-password",
        Severity::High,
        "root may log in with a password",
        "PermitRootLogin no (or prohibit-password)",
    ),
    (
        "passwordauthentication",
        "yes",
        Severity::Medium,
        "password logins are accepted, so the gateway can be brute-forced",
        "PasswordAuthentication no (keys only)",
    ),
    (
        "permitemptypasswords",
        "no",
        Severity::Critical,
        "accounts with an empty password may log in",
        "PermitEmptyPasswords no",
    ),
];

/// Where the settings came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    /// `sshd -T`.
    SshdTest,
    /// The files, with the file that set each keyword.
    Files(BTreeMap<String, PathBuf>),
}

/// Parses `sshd -T` output or config text into lower-case keyword → first value.
fn first_values(text: &str, into: &mut BTreeMap<String, String>) {
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t
            .split_once(|c: char| c.is_whitespace() || c == '=')
            .unwrap_or((t, ""));
        into.entry(k.to_ascii_lowercase())
            .or_insert_with(|| v.trim().trim_start_matches('=').trim().to_ascii_lowercase());
    }
}

fn read_files(
    out: &mut Findings<'_>,
    file: &Path,
    depth: usize,
    values: &mut BTreeMap<String, String>,
    origin: &mut BTreeMap<String, PathBuf>,
) -> bool {
    let Some(text) = read_optional(out, SSH_WEAK_CONFIG, file) else {
        return false;
    };
    for line in text.lines() {
        let t = line.trim();
        if t.is_empty() || t.starts_with('#') {
            continue;
        }
        let (k, v) = t.split_once(char::is_whitespace).unwrap_or((t, ""));
        let k = k.to_ascii_lowercase();
        if k == "match" {
            // Everything after a Match line is conditional, up to the end of the file.
            break;
        }
        if k == "include" {
            if depth >= MAX_DEPTH {
                out.error(SSH_WEAK_CONFIG, file, "Include nested too deeply");
                continue;
            }
            for pattern in v.split_whitespace() {
                let pat = if pattern.starts_with('/') {
                    PathBuf::from(pattern)
                } else {
                    Path::new("/etc/ssh").join(pattern)
                };
                for f in expand(out, &pat) {
                    read_files(out, &f, depth + 1, values, origin);
                }
            }
            continue;
        }
        let mut one = BTreeMap::new();
        first_values(t, &mut one);
        for (k, v) in one {
            if let std::collections::btree_map::Entry::Vacant(e) = values.entry(k) {
                origin.insert(e.key().clone(), file.to_owned());
                e.insert(v);
            }
        }
    }
    true
}

/// Expands a single-`*` file-name pattern (`/etc/ssh/sshd_config.d/*.conf`).
fn expand(out: &Findings<'_>, pat: &Path) -> Vec<PathBuf> {
    let name = pat
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let Some(dir) = pat.parent() else {
        return Vec::new();
    };
    match name.split_once('*') {
        None => vec![pat.to_owned()],
        Some((pre, suf)) => dir_files(out.inputs(), dir, suf)
            .into_iter()
            .filter(|f| {
                f.file_name()
                    .map(|n| n.to_string_lossy().starts_with(pre))
                    .unwrap_or(false)
            })
            .collect(),
    }
}

/// `sshd -T`, when auditing `/` and it answers within 5 s.
fn sshd_test(out: &Findings<'_>) -> Option<String> {
    let inputs = out.inputs();
    if !inputs.sshd_test || inputs.root != Path::new("/") {
        return None;
    }
    let sshd = ["/usr/sbin/sshd", "/usr/bin/sshd", "/sbin/sshd"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    let out = crate::audit::run_with_timeout(sshd, &["-T"], Duration::from_secs(5)).ok()?;
    (out.0 == Some(0) && !out.1.is_empty()).then(|| String::from_utf8_lossy(&out.1).into_owned())
}

/// The effective settings, or `None` when there is no SSH server configuration at all.
pub fn settings(out: &mut Findings<'_>) -> Option<(BTreeMap<String, String>, Source)> {
    if let Some(text) = sshd_test(out) {
        let mut values = BTreeMap::new();
        first_values(&text, &mut values);
        return Some((values, Source::SshdTest));
    }
    let mut values = BTreeMap::new();
    let mut origin = BTreeMap::new();
    if !read_files(out, Path::new(SSHD_CONFIG), 0, &mut values, &mut origin) {
        return None;
    }
    Some((values, Source::Files(origin)))
}

/// Runs the check.
pub fn check(out: &mut Findings<'_>) {
    let Some((values, source)) = settings(out) else {
        out.skip(
            SSH_WEAK_CONFIG,
            format!("no SSH server configuration ({SSHD_CONFIG} is absent)"),
        );
        return;
    };
    for &(key, default, severity, meaning, fix) in RULES {
        let value = values.get(key).map(String::as_str).unwrap_or(default);
        if value != "yes" {
            continue;
        }
        let from = match &source {
            Source::SshdTest => "sshd -T".to_owned(),
            Source::Files(origin) => match origin.get(key) {
                Some(f) => f.display().to_string(),
                None => "OpenSSH default".to_owned(),
            },
        };
        let name = fix.split_whitespace().next().unwrap_or(key);
        out.add(Draft {
            check: SSH_WEAK_CONFIG,
            severity,
            resource_type: "SSH_SETTING",
            id: vec![("setting", name.to_owned())],
            info: vec![("value", value.to_owned()), ("source", from.clone())],
            reason: format!("sshd {name} yes ({from}): {meaning}."),
            fix: format!("Set {fix} in {SSHD_CONFIG} (or a file in sshd_config.d read before it) and reload sshd."),
        });
    }
}
