//! Automated remediation: configured, rate-limited actions on audit findings and on violations
//! as they go into alarm (never on their clearing).
//!
//! Off by default (`[remediation] enabled = false`) and dry-run by default when on
//! (`dry_run = true`: every action is recorded with what it *would* do, nothing is run). Per
//! check or violation name, `[remediation.actions]` lists actions, run in order:
//!
//! - `hook`: runs `[remediation] hook` with the trigger as JSON on stdin and in
//!   `$EDGEWARDEN_TRIGGER`, killed after `hook_timeout`; the exit status is recorded;
//! - `publish`: sends the trigger on `[remediation] publish_topic` as well (findings are
//!   already published on the audit topic);
//! - `block_source`: adds the violation's source address to an nftables set with a timeout
//!   ([`nft`]); never a loopback or allow-listed address;
//! - `reenable_logging`: runs `[remediation] logging_command` (e.g. a script setting
//!   `Storage=persistent` and restarting systemd-journald).
//!
//! Each action has its own budget per sliding hour ([`rate`]). Every action considered is one
//! [`ActionRecord`] line in `<state_dir>/outbox/actions.jsonl`; carried-out and simulated ones
//! count as `remediation_actions`, failed ones also as `remediation_failures`.

pub mod nft;
pub mod rate;

use std::net::IpAddr;
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::audit::command;
use crate::config::{RemediationAction, RemediationConfig};

/// Environment variable carrying the trigger's JSON to the hook.
pub const ENV_TRIGGER: &str = "EDGEWARDEN_TRIGGER";

/// A finding or violation that may call for actions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Trigger {
    /// Check name (`LOGGING_DISABLED`) or violation name (`brute_force`).
    pub name: String,
    /// `findingId` or `violationId`.
    pub id: String,
    /// Source address of a violation, when known.
    pub source: Option<IpAddr>,
    /// The finding or violation as JSON.
    pub json: Vec<u8>,
}

/// What became of one action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Outcome {
    /// Carried out successfully.
    Done,
    /// Dry run: recorded, not carried out.
    DryRun,
    /// Carried out and failed (see `detail`).
    Failed,
    /// Not allowed for this trigger (e.g. a loopback or allow-listed source).
    Refused,
    /// Over the action's budget for the hour.
    RateLimited,
}

/// One line of `actions.jsonl`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ActionRecord {
    /// When, ms since the UNIX epoch.
    pub time: u64,
    /// Thing name.
    pub thing_name: String,
    /// `hook`, `publish`, `block_source`, `reenable_logging`.
    pub action: String,
    /// The check or violation name.
    pub trigger: String,
    /// The finding or violation id.
    pub trigger_id: String,
    /// The address acted on (`block_source`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub target: Option<String>,
    /// Dry run.
    pub dry_run: bool,
    /// What became of it.
    pub outcome: Outcome,
    /// Exit status, command, or reason.
    pub detail: String,
}

/// The result of handling one trigger.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    /// One record per action considered.
    pub records: Vec<ActionRecord>,
    /// Messages to send: (topic, payload).
    pub publish: Vec<(String, Vec<u8>)>,
}

/// Runs actions. Blocking (commands); the agent calls it off the async workers.
#[derive(Debug, Clone)]
pub struct Remediator {
    cfg: RemediationConfig,
    thing: String,
    limits: rate::RateLimiter,
    nft: nft::Nft,
}

impl Remediator {
    /// A remediator for this thing.
    pub fn new(cfg: &RemediationConfig, thing: &str) -> Remediator {
        Remediator {
            limits: rate::RateLimiter::new(cfg.max_per_hour.clone()),
            nft: nft::Nft::new(&cfg.nft, &cfg.nft_set),
            cfg: cfg.clone(),
            thing: thing.to_owned(),
        }
    }

    /// True when remediation is on and `name` has actions.
    pub fn wants(&self, name: &str) -> bool {
        self.cfg.enabled && self.cfg.actions.get(name).is_some_and(|a| !a.is_empty())
    }

    /// Runs the actions configured for `t.name`.
    pub fn handle(&mut self, t: &Trigger, now: Instant, now_ms: u64) -> Handled {
        let mut out = Handled::default();
        if !self.cfg.enabled {
            return out;
        }
        let actions = self.cfg.actions.get(&t.name).cloned().unwrap_or_default();
        for action in actions {
            let mut rec = ActionRecord {
                time: now_ms,
                thing_name: self.thing.clone(),
                action: action.as_str().to_owned(),
                trigger: t.name.clone(),
                trigger_id: t.id.clone(),
                target: None,
                dry_run: self.cfg.dry_run,
                outcome: Outcome::Done,
                detail: String::new(),
            };
            if action == RemediationAction::BlockSource {
                match t.source {
                    None => {
                        rec.outcome = Outcome::Refused;
                        rec.detail = "no source address to block".into();
                        out.records.push(rec);
                        continue;
                    }
                    Some(ip) => {
                        rec.target = Some(ip.to_string());
                        if let Some(why) = nft::refusal(ip, &self.cfg.allow_list) {
                            rec.outcome = Outcome::Refused;
                            rec.detail = why;
                            out.records.push(rec);
                            continue;
                        }
                    }
                }
            }
            if !self.limits.allow(action, now) {
                rec.outcome = Outcome::RateLimited;
                rec.detail = format!(
                    "more than {} {} actions within an hour",
                    self.cfg.max_per_hour.get(&action).copied().unwrap_or(0),
                    action.as_str()
                );
                out.records.push(rec);
                continue;
            }
            let result = if self.cfg.dry_run {
                rec.outcome = Outcome::DryRun;
                Ok(format!("would run: {}", self.describe(action, t)))
            } else {
                self.carry_out(action, t, &mut out)
            };
            match result {
                Ok(d) => rec.detail = d,
                Err(e) => {
                    rec.outcome = Outcome::Failed;
                    rec.detail = e;
                }
            }
            out.records.push(rec);
        }
        out
    }

    fn describe(&self, action: RemediationAction, t: &Trigger) -> String {
        match action {
            RemediationAction::Hook => format!(
                "{} (trigger on stdin and in ${ENV_TRIGGER})",
                self.cfg.hook.join(" ")
            ),
            RemediationAction::Publish => format!("publish on {}", self.topic()),
            RemediationAction::BlockSource => match t.source {
                Some(ip) => self.nft.describe(ip, self.cfg.block_timeout),
                None => "nothing (no source)".into(),
            },
            RemediationAction::ReenableLogging => self.cfg.logging_command.join(" "),
        }
    }

    fn topic(&self) -> String {
        self.cfg.publish_topic.replace("{thing}", &self.thing)
    }

    fn carry_out(
        &mut self,
        action: RemediationAction,
        t: &Trigger,
        out: &mut Handled,
    ) -> Result<String, String> {
        match action {
            RemediationAction::Hook => {
                let json = String::from_utf8_lossy(&t.json).into_owned();
                run_command(
                    &self.cfg.hook,
                    &[(ENV_TRIGGER, json.as_str())],
                    &t.json,
                    self.cfg.hook_timeout,
                )
            }
            RemediationAction::Publish => {
                let topic = self.topic();
                out.publish.push((topic.clone(), t.json.clone()));
                Ok(format!("queued on {topic}"))
            }
            RemediationAction::BlockSource => {
                let ip = t.source.expect("checked above: block_source has a source");
                self.nft.block(ip, self.cfg.block_timeout)
            }
            RemediationAction::ReenableLogging => {
                run_command(&self.cfg.logging_command, &[], b"", self.cfg.hook_timeout)
            }
        }
    }
}

fn run_command(
    argv: &[String],
    env: &[(&str, &str)],
    stdin: &[u8],
    timeout: std::time::Duration,
) -> Result<String, String> {
    let Some((program, args)) = argv.split_first() else {
        return Err("no command configured".into());
    };
    let o = command::run(program, args, env, stdin, timeout)?;
    let d = o.describe(timeout);
    if o.success() {
        Ok(d)
    } else {
        Err(d)
    }
}

#[cfg(test)]
mod tests;
