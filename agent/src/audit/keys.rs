//! `PRIVATE_KEY_PERMISSIVE`: the device key is readable or writable by group or others, or is
//! not owned by the service user.

use std::os::unix::fs::MetadataExt as _;

use super::{Draft, Findings, Severity, PRIVATE_KEY_PERMISSIVE};

/// The uid the key must belong to: `service_user` (a name from `<root>/etc/passwd`, or a number),
/// else the user running the audit. `Err` names why the user is unknown.
pub fn service_uid(out: &mut Findings<'_>) -> Result<u32, String> {
    let inputs = out.inputs();
    match &inputs.service_user {
        None => std::fs::metadata("/proc/self")
            .map(|m| m.uid())
            .map_err(|e| format!("cannot tell which user runs the audit: {e}")),
        Some(u) => {
            if let Ok(n) = u.parse::<u32>() {
                return Ok(n);
            }
            let passwd = std::fs::read_to_string(inputs.path(std::path::Path::new("/etc/passwd")))
                .map_err(|e| format!("cannot read /etc/passwd to look up {u:?}: {e}"))?;
            passwd
                .lines()
                .filter_map(|l| {
                    let mut f = l.split(':');
                    let name = f.next()?;
                    let uid = f.nth(1)?.parse::<u32>().ok()?;
                    (name == u).then_some(uid)
                })
                .next()
                .ok_or_else(|| format!("user {u:?} is not in /etc/passwd"))
        }
    }
}

/// Runs the check.
pub fn check(out: &mut Findings<'_>) {
    let Some(path) = out.inputs().key_file.clone() else {
        out.skip(
            PRIVATE_KEY_PERMISSIVE,
            "no private key configured ([mqtt] key_file or [audit] key_file)",
        );
        return;
    };
    let meta = match std::fs::metadata(out.inputs().path(&path)) {
        Ok(m) => m,
        Err(e) => {
            out.error(
                PRIVATE_KEY_PERMISSIVE,
                &path,
                format!("cannot stat the private key: {e}"),
            );
            return;
        }
    };
    let mode = meta.mode() & 0o7777;
    let mut problems = Vec::new();
    if mode & 0o066 != 0 {
        let mut who = Vec::new();
        if mode & 0o060 != 0 {
            who.push("group");
        }
        if mode & 0o006 != 0 {
            who.push("others");
        }
        problems.push(format!(
            "mode {mode:04o} lets {} read or write it",
            who.join(" and ")
        ));
    }
    let mut info = vec![("mode", format!("{mode:04o}"))];
    match service_uid(out) {
        Ok(uid) if uid != meta.uid() => {
            problems.push(format!(
                "owned by uid {} instead of the service user (uid {uid})",
                meta.uid()
            ));
            info.push(("uid", meta.uid().to_string()));
        }
        Ok(_) => {}
        Err(e) => out.error(PRIVATE_KEY_PERMISSIVE, &path, e),
    }
    if problems.is_empty() {
        return;
    }
    out.add(Draft {
        check: PRIVATE_KEY_PERMISSIVE,
        severity: Severity::High,
        resource_type: "PRIVATE_KEY",
        id: vec![("path", path.display().to_string())],
        info,
        reason: format!("Device private key: {}.", problems.join("; ")),
        fix: format!("chown <service user> {0} && chmod 600 {0}", path.display()),
    });
}
