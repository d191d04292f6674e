//! `AGENT_CONFIG_INSECURE`: the agent's own files can be changed by anyone.
//!
//! A world-writable configuration file, state directory, binary or CA bundle lets any local user
//! redirect the agent, forge its reports, replace it, or swap the CA it verifies the endpoint
//! against, which turns TLS verification off in effect (the configuration itself has no switch
//! that disables verification). Each writable path is one finding.

use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use super::{Draft, Findings, Severity, AGENT_CONFIG_INSECURE};

/// Runs the check.
pub fn check(out: &mut Findings<'_>) {
    let inputs = out.inputs();
    // (role, path, severity, whether the path is on the audited root or is the file this process
    // actually read, like the configuration given with --config).
    let mut paths: Vec<(&'static str, PathBuf, Severity, bool)> = Vec::new();
    if let Some(c) = &inputs.config_file {
        paths.push(("configuration file", c.clone(), Severity::High, false));
        if let Some(parent) = c.parent().filter(|p| !p.as_os_str().is_empty()) {
            paths.push((
                "configuration directory",
                parent.to_owned(),
                Severity::High,
                false,
            ));
        }
    }
    paths.push((
        "state directory",
        inputs.state_dir.clone(),
        Severity::High,
        true,
    ));
    if let Some(b) = &inputs.binary {
        paths.push(("agent binary", b.clone(), Severity::Critical, true));
    }
    if let Some(ca) = &inputs.ca_file {
        paths.push((
            "CA bundle (TLS verification)",
            ca.clone(),
            Severity::Critical,
            true,
        ));
    }
    for (what, path, severity, rooted) in paths {
        let real = if rooted {
            inputs.path(&path)
        } else {
            path.clone()
        };
        let meta = match std::fs::metadata(&real) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => {
                out.error(AGENT_CONFIG_INSECURE, &path, format!("cannot stat: {e}"));
                continue;
            }
        };
        let mode = meta.mode() & 0o7777;
        // A world-writable directory with the sticky bit (like /tmp) still stops others from
        // replacing files they do not own; the agent's directories should not be like that anyway.
        if mode & 0o002 == 0 {
            continue;
        }
        out.add(Draft {
            check: AGENT_CONFIG_INSECURE,
            severity,
            resource_type: "FILE",
            id: vec![("path", display(&path))],
            info: vec![("mode", format!("{mode:04o}")), ("role", what.into())],
            reason: format!(
                "The agent's {what} {} is world-writable (mode {mode:04o}).",
                display(&path)
            ),
            fix: format!("chmod o-w {}", display(&path)),
        });
    }
}

fn display(p: &Path) -> String {
    p.display().to_string()
}
