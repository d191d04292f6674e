//! The one seam between the pipeline and the transport that empties the spool: MQTT with the
//! device's own certificate, or the Greengrass nucleus's IPC. Nothing upstream of the spool
//! knows which one runs.
//!
//! Selection ([`Publisher::select`]): an `[mqtt]` section means MQTT. Without one, the
//! nucleus's environment (`AWS_GG_NUCLEUS_DOMAIN_SOCKET_FILEPATH_FOR_COMPONENT` and `SVCUID`)
//! means Greengrass. With neither, there is no transport and reports go to the local outbox.

use std::sync::Arc;

use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::info;

use super::greengrass::{self, ComponentSettings, GreengrassParams, NucleusEnv};
use super::mqtt::{self, TransportParams};
use super::{TransportError, TransportStats};
use crate::config::{Config, ENV_THING_NAME};
use crate::spool::SharedSpool;

/// The transport behind the spool.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum Publisher {
    /// rumqttc over mutual TLS to AWS IoT Core (or any broker).
    Mqtt(TransportParams),
    /// `PublishToIoTCore` through the Greengrass nucleus.
    Greengrass(GreengrassParams),
}

impl Publisher {
    /// The publisher this configuration and this process's environment call for; `None` means
    /// the local outbox.
    pub fn select(cfg: &Config) -> Option<Publisher> {
        let explicit_thing = std::env::var(ENV_THING_NAME).is_ok_and(|s| !s.is_empty());
        Publisher::select_with(cfg, NucleusEnv::from_env(), explicit_thing)
    }

    /// [`Publisher::select`] with the nucleus environment given. In Greengrass mode the thing
    /// name is the nucleus's (`AWS_IOT_THING_NAME`) unless `explicit_thing` says the
    /// configured one was set explicitly through the environment.
    pub fn select_with(
        cfg: &Config,
        env: Option<NucleusEnv>,
        explicit_thing: bool,
    ) -> Option<Publisher> {
        if let Some(m) = &cfg.mqtt {
            if env.is_some() {
                info!(
                    "Greengrass nucleus environment present, but [mqtt] is configured: using MQTT."
                );
            }
            return Some(Publisher::Mqtt(TransportParams::new(
                m.clone(),
                cfg.thing_name.clone(),
                cfg.report.format,
            )));
        }
        let env = env?;
        let thing = match &env.thing_name {
            Some(t) if !explicit_thing && valid_thing_name(t) => t.clone(),
            _ => cfg.thing_name.clone(),
        };
        Some(Publisher::Greengrass(GreengrassParams::new(env, thing)))
    }

    /// `mqtt` or `greengrass`, for logs.
    pub fn name(&self) -> &'static str {
        match self {
            Publisher::Mqtt(_) => "mqtt",
            Publisher::Greengrass(_) => "greengrass",
        }
    }

    /// The thing name the topics are built with.
    pub fn thing_name(&self) -> &str {
        match self {
            Publisher::Mqtt(p) => &p.thing,
            Publisher::Greengrass(p) => &p.thing,
        }
    }

    /// Checks what can be checked before the first connection (MQTT certificate files).
    pub fn preflight(&self) -> Result<(), TransportError> {
        match self {
            Publisher::Mqtt(p) => super::check_mqtt_files(&p.mqtt),
            Publisher::Greengrass(_) => Ok(()),
        }
    }

    /// Runs until `stop`, then drains. Configuration pushed by the platform (Greengrass) goes
    /// to `live`; MQTT has none. Returns an error only for configuration problems found before
    /// the first connection.
    pub async fn run(
        self,
        spool: SharedSpool,
        stats: Arc<TransportStats>,
        live: watch::Sender<ComponentSettings>,
        stop: CancellationToken,
    ) -> Result<(), TransportError> {
        match self {
            Publisher::Mqtt(p) => mqtt::run(p, spool, stats, stop).await,
            Publisher::Greengrass(p) => {
                greengrass::run(p, spool, stats, live, stop).await;
                Ok(())
            }
        }
    }
}

fn valid_thing_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b':' | b'_' | b'-'))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::transport::greengrass::Token;

    fn env(thing: Option<&str>) -> NucleusEnv {
        NucleusEnv {
            socket: PathBuf::from("/greengrass/v2/ipc.socket"),
            token: Token::new("ABCDEFGHIJKLMNOP"),
            thing_name: thing.map(str::to_owned),
        }
    }

    #[test]
    fn greengrass_is_chosen_only_without_an_mqtt_section() {
        let cfg = Config::from_toml("thing_name = \"from-file\"\n").unwrap();
        assert!(Publisher::select_with(&cfg, None, false).is_none());
        let p = Publisher::select_with(&cfg, Some(env(Some("gw-01"))), false).unwrap();
        assert_eq!(p.name(), "greengrass");
        assert_eq!(p.thing_name(), "gw-01");
        let p = Publisher::select_with(&cfg, Some(env(Some("gw-01"))), true).unwrap();
        assert_eq!(p.thing_name(), "from-file");
        let p = Publisher::select_with(&cfg, Some(env(Some("bad name/#"))), false).unwrap();
        assert_eq!(p.thing_name(), "from-file");
        let mqtt = Config::from_toml(
            "[mqtt]\nendpoint = \"example.com\"\nca_file = \"/ca\"\ncert_file = \"/c\"\nkey_file = \"/k\"\n",
        )
        .unwrap();
        let p = Publisher::select_with(&mqtt, Some(env(Some("gw-01"))), false).unwrap();
        assert_eq!(p.name(), "mqtt");
    }
}
