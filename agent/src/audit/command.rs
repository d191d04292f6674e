//! Running an external command with a deadline: `sshd -T` for the audit, hooks and `nft` for
//! remediation. The child gets its input on stdin, its output is collected (bounded), and it is
//! killed when the deadline passes, so a hanging command never holds the agent.

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// Output kept per stream; the rest is read and discarded.
const MAX_OUTPUT: usize = 64 * 1024;

/// How a command ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandOutcome {
    /// Exit status; `None` when killed by a signal (including the deadline).
    pub status: Option<i32>,
    /// The deadline passed and the child was killed.
    pub timed_out: bool,
    /// Stdout (at most 64 KiB).
    pub stdout: Vec<u8>,
    /// Stderr (at most 64 KiB).
    pub stderr: Vec<u8>,
}

impl CommandOutcome {
    /// Exit status 0.
    pub fn success(&self) -> bool {
        self.status == Some(0) && !self.timed_out
    }

    /// One line: `exit 0`, `exit 3: <stderr>`, `killed after 10s`.
    pub fn describe(&self, timeout: Duration) -> String {
        let err = String::from_utf8_lossy(&self.stderr);
        let err = err.trim();
        let err: String = err.chars().take(300).collect();
        match (self.timed_out, self.status) {
            (true, _) => format!("killed after {} s (timeout)", timeout.as_secs_f32()),
            (false, Some(c)) if err.is_empty() => format!("exit {c}"),
            (false, Some(c)) => format!("exit {c}: {err}"),
            (false, None) => "killed by a signal".into(),
        }
    }
}

fn drain(mut r: impl std::io::Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut kept = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            match r.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    let room = MAX_OUTPUT.saturating_sub(kept.len());
                    kept.extend_from_slice(&buf[..n.min(room)]);
                }
            }
        }
        kept
    })
}

/// Runs `program args…` with `stdin` as input and extra environment variables, killing it after
/// `timeout`. `Err` says why it could not be started.
pub fn run(
    program: &str,
    args: &[String],
    env: &[(&str, &str)],
    stdin: &[u8],
    timeout: Duration,
) -> Result<CommandOutcome, String> {
    let mut cmd = Command::new(program);
    cmd.args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start {program}: {e}"))?;
    let out = child.stdout.take().map(drain);
    let err = child.stderr.take().map(drain);
    if let Some(mut w) = child.stdin.take() {
        let input = stdin.to_vec();
        // A child that never reads its input must not block us: write from a thread.
        std::thread::spawn(move || {
            let _ = w.write_all(&input);
        });
    }
    let deadline = Instant::now() + timeout;
    let mut timed_out = false;
    let status = loop {
        match child.try_wait() {
            Ok(Some(s)) => break Some(s),
            Ok(None) if Instant::now() >= deadline => {
                timed_out = true;
                let _ = child.kill();
                break child.wait().ok();
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(format!("cannot wait for {program}: {e}")),
        }
    };
    // A grandchild holding the pipes open must not block us either: bounded join.
    let join = |h: Option<std::thread::JoinHandle<Vec<u8>>>| -> Vec<u8> {
        let Some(h) = h else { return Vec::new() };
        let until = Instant::now() + Duration::from_millis(200);
        while !h.is_finished() && Instant::now() < until {
            std::thread::sleep(Duration::from_millis(2));
        }
        if h.is_finished() {
            h.join().unwrap_or_default()
        } else {
            Vec::new()
        }
    };
    let stdout = join(out);
    let stderr = join(err);
    Ok(CommandOutcome {
        status: status.and_then(|s| s.code()),
        timed_out,
        stdout,
        stderr,
    })
}
