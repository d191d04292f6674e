//! A Greengrass nucleus IPC emulator: serves the event-stream RPC protocol on a Unix socket the
//! way the Java nucleus does, so the agent's Greengrass mode (and AWS's own Python client) can
//! be tested without a core device.
//!
//! * Handshake: CONNECT first, `:version` `0.1.0`, the token compared with the configured one
//!   (any token when none is configured); a refused token gets a CONNECT_ACK without the
//!   accepted flag and the socket closes after [`GgOptions::reject_close_delay`].
//! * Protocol rules: a frame before the handshake, a second CONNECT, a new stream id other than
//!   last + 1, a new stream without `operation`, an application message on stream 0 or a
//!   control message on a stream get PROTOCOL_ERROR and a close; a bad CRC a close.
//! * `PublishToIoTCore`: requires `topicName` and QoS `"0"`/`"1"`, authorises the topic with
//!   the recipe's `accessControl` (`aws.greengrass.ipc.mqttproxy`), records `(topic, qos,
//!   payload)` (also as JSON lines in the record file), and answers Device Defender reports on
//!   `…/accepted` or `…/rejected` with the strict [`Validator`](crate::validator) through
//!   [`Engine`], delivered to matching `SubscribeToIoTCore` streams.
//! * `GetConfiguration`, `SubscribeToConfigurationUpdate`: the configuration is seeded from the
//!   recipe's `DefaultConfiguration`; [`GgHandle::update_config`] merges a change and sends one
//!   event per changed leaf.
//! * `UpdateState` is recorded; any other operation gets the nucleus's "Unsupported Operation"
//!   error.
//! * Fault knobs: [`GgHandle::drop_connections`] closes every connection,
//!   [`GgHandle::drop_on_publish`] closes the connection that sends the Nth next publish
//!   before recording or answering it, [`GgHandle::fail_publishes`] answers publishes with
//!   `ServiceError`.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{bail, Context};
use base64::Engine as _;
use edgewarden::transport::greengrass::frame::{
    Decoder, Frame, MessageType, DEFAULT_MAX_FRAME_LEN, FLAG_CONNECTION_ACCEPTED,
    FLAG_TERMINATE_STREAM, JSON, OPERATION, PROTOCOL_VERSION, VERSION,
};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::emulator::{Engine, Exchange, ThrottleMode};
use crate::validator::{Registry, Validator};

/// The IPC service id whose policies authorise IoT Core publishes and subscriptions.
pub const MQTT_PROXY: &str = "aws.greengrass.ipc.mqttproxy";

/// One `accessControl` policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// Operations (`aws.greengrass#PublishToIoTCore`, … or `*`).
    pub operations: Vec<String>,
    /// Topic filters (`+`, `#` MQTT wildcards, `*` glob).
    pub resources: Vec<String>,
}

/// The `aws.greengrass.ipc.mqttproxy` policies of a component; `None` allows everything.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AccessControl {
    policies: Option<Vec<Policy>>,
}

impl AccessControl {
    /// Allows every operation on every topic (no recipe given).
    pub fn allow_all() -> AccessControl {
        AccessControl { policies: None }
    }

    /// Reads `accessControl.aws.greengrass.ipc.mqttproxy` of a configuration object.
    pub fn from_configuration(config: &Value) -> anyhow::Result<AccessControl> {
        let mut policies = Vec::new();
        if let Some(map) = config.get("accessControl").and_then(|a| a.get(MQTT_PROXY)) {
            let map = map
                .as_object()
                .with_context(|| format!("accessControl.{MQTT_PROXY} is not an object"))?;
            for (id, p) in map {
                let list = |k: &str| -> anyhow::Result<Vec<String>> {
                    p.get(k)
                        .and_then(Value::as_array)
                        .with_context(|| {
                            format!("accessControl.{MQTT_PROXY}.{id}.{k} is not a list")
                        })?
                        .iter()
                        .map(|v| {
                            v.as_str().map(str::to_owned).with_context(|| {
                                format!("accessControl.{MQTT_PROXY}.{id}.{k}: {v} is not a string")
                            })
                        })
                        .collect()
                };
                policies.push(Policy {
                    operations: list("operations")?,
                    resources: list("resources")?,
                });
            }
        }
        Ok(AccessControl {
            policies: Some(policies),
        })
    }

    /// True when `operation` (e.g. `aws.greengrass#PublishToIoTCore`) on `topic` is allowed.
    pub fn allows(&self, operation: &str, topic: &str) -> bool {
        let Some(policies) = &self.policies else {
            return true;
        };
        policies.iter().any(|p| {
            p.operations.iter().any(|o| o == "*" || o == operation)
                && p.resources.iter().any(|r| resource_matches(r, topic))
        })
    }
}

/// Greengrass mqttproxy resource matching: MQTT wildcards per level (`+` one level, `#` the
/// rest), `*` a glob within the string.
pub fn resource_matches(resource: &str, topic: &str) -> bool {
    if resource == topic || resource == "#" || (resource.contains('*') && glob(resource, topic)) {
        return true;
    }
    let r: Vec<&str> = resource.split('/').collect();
    let t: Vec<&str> = topic.split('/').collect();
    let mut i = 0;
    while i < r.len() {
        if r[i] == "#" && i == r.len() - 1 {
            return true;
        }
        if i >= t.len() {
            return false;
        }
        if r[i] != "+" && !glob(r[i], t[i]) {
            return false;
        }
        i += 1;
    }
    i == t.len()
}

fn glob(pattern: &str, s: &str) -> bool {
    match pattern.split_once('*') {
        None => pattern == s,
        Some((head, tail)) => {
            let Some(rest) = s.strip_prefix(head) else {
                return false;
            };
            (0..=rest.len())
                .filter(|&k| rest.is_char_boundary(k))
                .any(|k| glob(tail, &rest[k..]))
        }
    }
}

/// Reads a recipe (JSON) and returns its `ComponentName` and `DefaultConfiguration`.
pub fn load_recipe(path: &Path) -> anyhow::Result<(String, Value)> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read recipe {}", path.display()))?;
    let recipe: Value = serde_json::from_str(&text).with_context(|| {
        format!(
            "recipe {} is not JSON (give the JSON twin of a YAML recipe)",
            path.display()
        )
    })?;
    let name = recipe
        .get("ComponentName")
        .and_then(Value::as_str)
        .with_context(|| format!("recipe {}: ComponentName is missing", path.display()))?
        .to_owned();
    let config = recipe
        .pointer("/ComponentConfiguration/DefaultConfiguration")
        .cloned()
        .unwrap_or_else(|| json!({}));
    Ok((name, config))
}

/// How the emulator runs.
#[derive(Debug, Clone)]
pub struct GgOptions {
    /// The Unix socket to listen on (created; an existing file is replaced).
    pub socket: PathBuf,
    /// JSON lines of every `PublishToIoTCore`: `topic`, `qos`, base64 `payload`, `time_ms`.
    pub record: Option<PathBuf>,
    /// The only accepted token; any token when `None`.
    pub svcuid: Option<String>,
    /// The component's name (answers `componentName`).
    pub component: String,
    /// The component configuration (from the recipe's `DefaultConfiguration`).
    pub config: Value,
    /// Authorisation of IoT Core operations.
    pub access: AccessControl,
    /// Time between a refused CONNECT_ACK and the close.
    pub reject_close_delay: Duration,
}

impl GgOptions {
    /// Any token, everything allowed, an empty configuration.
    pub fn new(socket: impl Into<PathBuf>) -> GgOptions {
        GgOptions {
            socket: socket.into(),
            record: None,
            svcuid: None,
            component: "com.edgewarden.Agent".into(),
            config: json!({}),
            access: AccessControl::allow_all(),
            reject_close_delay: Duration::from_millis(200),
        }
    }

    /// Takes the component name, configuration and `accessControl` of a JSON recipe.
    pub fn with_recipe(mut self, path: &Path) -> anyhow::Result<GgOptions> {
        let (name, config) = load_recipe(path)?;
        self.access = AccessControl::from_configuration(&config)?;
        self.component = name;
        self.config = config;
        Ok(self)
    }
}

/// One recorded `PublishToIoTCore`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Topic.
    pub topic: String,
    /// `"0"` or `"1"`.
    pub qos: String,
    /// Decoded payload.
    pub payload: Vec<u8>,
    /// Receipt time, ms since the epoch.
    pub time_ms: u64,
}

#[derive(Debug)]
struct Subscription {
    conn: u64,
    stream: i32,
    /// Topic filter (IoT Core) or key path (configuration).
    filter: Vec<String>,
    tx: mpsc::UnboundedSender<Frame>,
}

#[derive(Debug)]
struct State {
    opts: GgOptions,
    engine: Engine,
    config: Value,
    published: Vec<Published>,
    exchanges: Vec<Exchange>,
    denied: Vec<(String, String)>,
    states: Vec<String>,
    iot_subs: Vec<Subscription>,
    config_subs: Vec<Subscription>,
    connections: HashMap<u64, CancellationToken>,
    connects: u64,
    drop_on_publish: Option<usize>,
    fail_publishes: usize,
    record: Option<std::fs::File>,
}

/// A running emulator. Dropping it stops it.
#[derive(Debug)]
pub struct GgHandle {
    state: Arc<Mutex<State>>,
    stop: CancellationToken,
    socket: PathBuf,
}

impl Drop for GgHandle {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

static NEXT_CONN: AtomicU64 = AtomicU64::new(1);

/// Starts an emulator on the current tokio runtime; it listens when this returns.
pub fn spawn(opts: GgOptions) -> anyhow::Result<GgHandle> {
    let _ = std::fs::remove_file(&opts.socket);
    let listener = UnixListener::bind(&opts.socket)
        .with_context(|| format!("cannot listen on {}", opts.socket.display()))?;
    let record = match &opts.record {
        Some(p) => Some(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(p)
                .with_context(|| format!("cannot open record file {}", p.display()))?,
        ),
        None => None,
    };
    let validator = Validator::strict().with_registry(Registry::edgewarden());
    let state = Arc::new(Mutex::new(State {
        engine: Engine::new(validator, ThrottleMode::Off, Duration::from_secs(300)),
        config: opts.config.clone(),
        opts: opts.clone(),
        published: Vec::new(),
        exchanges: Vec::new(),
        denied: Vec::new(),
        states: Vec::new(),
        iot_subs: Vec::new(),
        config_subs: Vec::new(),
        connections: HashMap::new(),
        connects: 0,
        drop_on_publish: None,
        fail_publishes: 0,
        record,
    }));
    let stop = CancellationToken::new();
    let (st, stop2) = (state.clone(), stop.clone());
    tokio::spawn(async move {
        loop {
            tokio::select! {
                _ = stop2.cancelled() => break,
                r = listener.accept() => match r {
                    Ok((stream, _)) => {
                        let id = NEXT_CONN.fetch_add(1, Ordering::Relaxed);
                        let token = stop2.child_token();
                        st.lock().unwrap().connections.insert(id, token.clone());
                        tokio::spawn(serve(st.clone(), id, stream, token));
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "IPC emulator: accept failed.");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                }
            }
        }
    });
    Ok(GgHandle {
        state,
        stop,
        socket: opts.socket,
    })
}

impl GgHandle {
    /// The socket path.
    pub fn socket(&self) -> &Path {
        &self.socket
    }

    /// Every recorded publish, in arrival order.
    pub fn published(&self) -> Vec<Published> {
        self.state.lock().unwrap().published.clone()
    }

    /// Every Device Defender exchange (reports judged), in arrival order.
    pub fn exchanges(&self) -> Vec<Exchange> {
        self.state.lock().unwrap().exchanges.clone()
    }

    /// Publishes refused by `accessControl`: `(topic, message)`.
    pub fn denied(&self) -> Vec<(String, String)> {
        self.state.lock().unwrap().denied.clone()
    }

    /// States reported with `UpdateState`.
    pub fn states(&self) -> Vec<String> {
        self.state.lock().unwrap().states.clone()
    }

    /// Accepted handshakes so far.
    pub fn connects(&self) -> u64 {
        self.state.lock().unwrap().connects
    }

    /// Open connections.
    pub fn connections(&self) -> usize {
        self.state.lock().unwrap().connections.len()
    }

    /// Subscriptions to configuration updates currently open.
    pub fn config_subscriptions(&self) -> usize {
        self.state.lock().unwrap().config_subs.len()
    }

    /// The current configuration.
    pub fn config(&self) -> Value {
        self.state.lock().unwrap().config.clone()
    }

    /// Merges `patch` into the configuration (objects recursively, anything else replaces) and
    /// sends one `ConfigurationUpdateEvents` per changed leaf to the matching subscriptions.
    /// Returns the changed key paths.
    pub fn update_config(&self, patch: &Value) -> Vec<Vec<String>> {
        let mut st = self.state.lock().unwrap();
        let mut changed = Vec::new();
        merge(&mut st.config, patch, &mut Vec::new(), &mut changed);
        let component = st.opts.component.clone();
        for path in &changed {
            for sub in &st.config_subs {
                let related = sub.filter.iter().zip(path.iter()).all(|(a, b)| a == b);
                if related {
                    let body = json!({"configurationUpdateEvent": {"componentName": component, "keyPath": path}});
                    let _ = sub.tx.send(event(
                        sub.stream,
                        "aws.greengrass#ConfigurationUpdateEvents",
                        &body,
                    ));
                }
            }
        }
        changed
    }

    /// Closes every open connection (the peers see EOF).
    pub fn drop_connections(&self) {
        let st = self.state.lock().unwrap();
        for t in st.connections.values() {
            t.cancel();
        }
    }

    /// Closes the connection that sends the `n`th next publish (1 = the next one), before that
    /// publish is recorded or answered.
    pub fn drop_on_publish(&self, n: usize) {
        self.state.lock().unwrap().drop_on_publish = Some(n.max(1));
    }

    /// Answers the next `n` publishes with `ServiceError` (the nucleus could not forward them
    /// to IoT Core), without recording them.
    pub fn fail_publishes(&self, n: usize) {
        self.state.lock().unwrap().fail_publishes = n;
    }

    /// Polls `cond` every 20 ms until it holds or `timeout` passes.
    pub async fn wait_for(
        &self,
        timeout: Duration,
        mut cond: impl FnMut(&GgHandle) -> bool,
    ) -> bool {
        let until = Instant::now() + timeout;
        loop {
            if cond(self) {
                return true;
            }
            if Instant::now() >= until {
                return false;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

fn merge(
    target: &mut Value,
    patch: &Value,
    path: &mut Vec<String>,
    changed: &mut Vec<Vec<String>>,
) {
    match (target.as_object_mut(), patch.as_object()) {
        (Some(t), Some(p)) => {
            for (k, v) in p {
                path.push(k.clone());
                match t.get_mut(k) {
                    Some(cur) if cur.is_object() && v.is_object() => merge(cur, v, path, changed),
                    Some(cur) if cur == v => {}
                    _ => {
                        t.insert(k.clone(), v.clone());
                        changed.push(path.clone());
                    }
                }
                path.pop();
            }
        }
        _ => {
            if target != patch {
                *target = patch.clone();
                changed.push(path.clone());
            }
        }
    }
}

fn event(stream: i32, model: &str, body: &Value) -> Frame {
    Frame::reply(
        MessageType::ApplicationMessage,
        0,
        stream,
        JSON,
        Some(model),
        serde_json::to_vec(body).expect("JSON"),
    )
}

fn response(stream: i32, op: &str, body: &Value, terminate: bool) -> Frame {
    Frame::reply(
        MessageType::ApplicationMessage,
        if terminate { FLAG_TERMINATE_STREAM } else { 0 },
        stream,
        JSON,
        Some(&format!("aws.greengrass#{op}Response")),
        serde_json::to_vec(body).expect("JSON"),
    )
}

/// A modeled operation error, as the nucleus sends it.
fn modeled_error(stream: i32, name: &str, message: &str) -> Frame {
    Frame::reply(
        MessageType::ApplicationError,
        FLAG_TERMINATE_STREAM,
        stream,
        JSON,
        Some(&format!("aws.greengrass#{name}")),
        serde_json::to_vec(&json!({
            "_service": "aws.greengrass#GreengrassCoreIPC",
            "_message": message,
            "_errorCode": name,
            "message": message,
        }))
        .expect("JSON"),
    )
}

fn protocol_error(message: &str) -> Frame {
    let mut f = Frame::new(MessageType::ProtocolError, 0, 0);
    f.headers
        .push(edgewarden::transport::greengrass::frame::Header::new(
            ":content-type",
            edgewarden::transport::greengrass::frame::HeaderValue::String(JSON.into()),
        ));
    f.payload = serde_json::to_vec(&json!({ "message": message })).expect("JSON");
    f
}

/// Per-connection protocol state.
struct Conn {
    id: u64,
    tx: mpsc::UnboundedSender<Frame>,
    connected: bool,
    last_stream: i32,
    /// Streams the client opened and that are still open.
    open: HashMap<i32, &'static str>,
}

/// What the reader does after a frame.
enum Next {
    Continue,
    /// Send what is queued, then close (after a delay).
    Close(Duration),
}

async fn serve(state: Arc<Mutex<State>>, id: u64, stream: UnixStream, stop: CancellationToken) {
    let (mut rd, mut wr) = stream.into_split();
    let (tx, mut rx) = mpsc::unbounded_channel::<Frame>();
    let writer_stop = CancellationToken::new();
    let ws = writer_stop.clone();
    let writer = tokio::spawn(async move {
        loop {
            let f = tokio::select! {
                f = rx.recv() => f,
                _ = ws.cancelled() => {
                    // Flush what is queued, then stop.
                    rx.close();
                    rx.recv().await
                }
            };
            let Some(f) = f else { break };
            let Ok(bytes) = f.encode(usize::MAX) else {
                break;
            };
            if wr.write_all(&bytes).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let mut c = Conn {
        id,
        tx,
        connected: false,
        last_stream: 0,
        open: HashMap::new(),
    };
    let mut decoder = Decoder::new(DEFAULT_MAX_FRAME_LEN * 24);
    let mut buf = vec![0u8; 64 * 1024];
    let mut close_delay = Duration::ZERO;
    'conn: loop {
        let n = tokio::select! {
            _ = stop.cancelled() => break,
            r = rd.read(&mut buf) => match r {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
        };
        decoder.push(&buf[..n]);
        loop {
            match decoder.next_frame() {
                Ok(None) => break,
                Ok(Some(f)) => {
                    let next = handle(&state, &mut c, f);
                    if let Next::Close(d) = next {
                        close_delay = d;
                        break 'conn;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, "IPC emulator: undecodable frame; closing.");
                    break 'conn;
                }
            }
        }
    }
    {
        let mut st = state.lock().unwrap();
        st.connections.remove(&id);
        st.iot_subs.retain(|s| s.conn != id);
        st.config_subs.retain(|s| s.conn != id);
    }
    if !close_delay.is_zero() {
        tokio::time::sleep(close_delay).await;
    }
    // The writer ends when the last sender is gone: only now.
    drop(c);
    writer_stop.cancel();
    let _ = writer.await;
}

fn handle(state: &Arc<Mutex<State>>, c: &mut Conn, f: Frame) -> Next {
    let (ty, flags, stream) = match (f.message_type(), f.flags(), f.stream_id()) {
        (Ok(t), Ok(fl), Ok(s)) => (t, fl, s),
        (Err(e), _, _) | (_, Err(e), _) | (_, _, Err(e)) => {
            let _ = c.tx.send(protocol_error(&e.to_string()));
            return Next::Close(Duration::ZERO);
        }
    };
    if !c.connected {
        if ty != MessageType::Connect || stream != 0 || flags != 0 {
            let _ = c.tx.send(protocol_error("the first frame must be CONNECT"));
            return Next::Close(Duration::ZERO);
        }
        let st = state.lock().unwrap();
        let version_ok = f.string(VERSION) == Some(PROTOCOL_VERSION);
        let token = serde_json::from_slice::<Value>(&f.payload)
            .ok()
            .and_then(|v| v.get("authToken")?.as_str().map(str::to_owned));
        let token_ok = match (&st.opts.svcuid, &token) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(want), Some(got)) => want == got,
        };
        if version_ok && token_ok {
            drop(st);
            let _ = c.tx.send(Frame::new(
                MessageType::ConnectAck,
                FLAG_CONNECTION_ACCEPTED,
                0,
            ));
            c.connected = true;
            state.lock().unwrap().connects += 1;
            return Next::Continue;
        }
        let delay = st.opts.reject_close_delay;
        let _ = c.tx.send(Frame::new(MessageType::ConnectAck, 0, 0));
        return Next::Close(delay);
    }
    if stream == 0 {
        return match ty {
            MessageType::Ping => {
                let mut pong = Frame::new(MessageType::PingResponse, 0, 0);
                pong.payload = f.payload;
                let _ = c.tx.send(pong);
                Next::Continue
            }
            MessageType::PingResponse => Next::Continue,
            MessageType::Connect => {
                let _ = c.tx.send(protocol_error("a second CONNECT"));
                Next::Close(Duration::ZERO)
            }
            _ => {
                let _ = c.tx.send(protocol_error(&format!("{ty:?} on stream 0")));
                Next::Close(Duration::ZERO)
            }
        };
    }
    if !matches!(
        ty,
        MessageType::ApplicationMessage | MessageType::ApplicationError
    ) {
        let _ =
            c.tx.send(protocol_error(&format!("{ty:?} on stream {stream}")));
        return Next::Close(Duration::ZERO);
    }
    if stream <= c.last_stream {
        // An existing stream: only a client-side close is meaningful.
        if flags & FLAG_TERMINATE_STREAM != 0 && c.open.remove(&stream).is_some() {
            let mut st = state.lock().unwrap();
            st.iot_subs
                .retain(|s| !(s.conn == c.id && s.stream == stream));
            st.config_subs
                .retain(|s| !(s.conn == c.id && s.stream == stream));
        }
        return Next::Continue;
    }
    if stream != c.last_stream + 1 {
        let _ = c.tx.send(protocol_error(&format!(
            "new stream id {stream}, expected {}",
            c.last_stream + 1
        )));
        return Next::Close(Duration::ZERO);
    }
    c.last_stream = stream;
    let Some(op) = f.string(OPERATION).map(str::to_owned) else {
        let _ = c.tx.send(protocol_error(&format!(
            "new stream {stream} without an operation header"
        )));
        return Next::Close(Duration::ZERO);
    };
    let body: Value = match serde_json::from_slice(&f.payload) {
        Ok(v) => v,
        Err(_) => {
            let mut e = Frame::reply(
                MessageType::ApplicationError,
                FLAG_TERMINATE_STREAM,
                stream,
                "text/plain",
                None,
                b"InternalServerError".to_vec(),
            );
            e.headers.retain(|h| h.name != "service-model-type");
            let _ = c.tx.send(e);
            return Next::Continue;
        }
    };
    let short = op.strip_prefix("aws.greengrass#").unwrap_or(&op).to_owned();
    match short.as_str() {
        "PublishToIoTCore" => publish(state, c, stream, &body),
        "SubscribeToIoTCore" => {
            let (topic, qos) = (body["topicName"].as_str(), body["qos"].as_str());
            let Some(topic) = topic else {
                let _ = c.tx.send(modeled_error(
                    stream,
                    "InvalidArgumentsError",
                    "topicName is required",
                ));
                return Next::Continue;
            };
            if !matches!(qos, Some("0") | Some("1")) {
                let _ = c.tx.send(modeled_error(
                    stream,
                    "InvalidArgumentsError",
                    &format!("Invalid QoS value: {}", body["qos"]),
                ));
                return Next::Continue;
            }
            let mut st = state.lock().unwrap();
            if !st
                .opts
                .access
                .allows("aws.greengrass#SubscribeToIoTCore", topic)
            {
                let msg = format!("Principal {} is not authorized to perform aws.greengrass.ipc.mqttproxy:aws.greengrass#SubscribeToIoTCore on resource {topic}", st.opts.component);
                let _ = c.tx.send(modeled_error(stream, "UnauthorizedError", &msg));
                return Next::Continue;
            }
            let _ =
                c.tx.send(response(stream, "SubscribeToIoTCore", &json!({}), false));
            c.open.insert(stream, "SubscribeToIoTCore");
            st.iot_subs.push(Subscription {
                conn: c.id,
                stream,
                filter: vec![topic.to_owned()],
                tx: c.tx.clone(),
            });
            Next::Continue
        }
        "GetConfiguration" => {
            let st = state.lock().unwrap();
            let component = st.opts.component.clone();
            if let Some(other) = body["componentName"].as_str().filter(|n| *n != component) {
                let _ = c.tx.send(modeled_error(
                    stream,
                    "ResourceNotFoundError",
                    &format!("component {other} not found"),
                ));
                return Next::Continue;
            }
            let path: Vec<String> = body["keyPath"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let mut node = &st.config;
            for k in &path {
                match node.get(k) {
                    Some(n) => node = n,
                    None => {
                        let _ = c.tx.send(modeled_error(
                            stream,
                            "ResourceNotFoundError",
                            &format!("key {} not found", path.join("/")),
                        ));
                        return Next::Continue;
                    }
                }
            }
            let value = if node.is_object() || path.is_empty() {
                node.clone()
            } else {
                json!({ path.last().expect("non-empty").clone(): node.clone() })
            };
            let _ = c.tx.send(response(
                stream,
                "GetConfiguration",
                &json!({"componentName": component, "value": value}),
                true,
            ));
            Next::Continue
        }
        "SubscribeToConfigurationUpdate" => {
            let path: Vec<String> = body["keyPath"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default();
            let _ = c.tx.send(response(
                stream,
                "SubscribeToConfigurationUpdate",
                &json!({}),
                false,
            ));
            c.open.insert(stream, "SubscribeToConfigurationUpdate");
            state.lock().unwrap().config_subs.push(Subscription {
                conn: c.id,
                stream,
                filter: path,
                tx: c.tx.clone(),
            });
            Next::Continue
        }
        "UpdateState" => {
            let s = body["state"].as_str().unwrap_or("").to_owned();
            if !matches!(s.as_str(), "RUNNING" | "ERRORED") {
                let _ = c.tx.send(modeled_error(
                    stream,
                    "InvalidArgumentsError",
                    &format!("Invalid state: {}", body["state"]),
                ));
                return Next::Continue;
            }
            state.lock().unwrap().states.push(s);
            let _ = c.tx.send(response(stream, "UpdateState", &json!({}), true));
            Next::Continue
        }
        _ => {
            let e = Frame::reply(
                MessageType::ApplicationError,
                FLAG_TERMINATE_STREAM,
                stream,
                JSON,
                None,
                serde_json::to_vec(&json!({"error": "Unsupported Operation", "message": format!("{op} is an unsupported operation.")})).expect("JSON"),
            );
            let _ = c.tx.send(e);
            Next::Continue
        }
    }
}

fn publish(state: &Arc<Mutex<State>>, c: &mut Conn, stream: i32, body: &Value) -> Next {
    let mut st = state.lock().unwrap();
    if let Some(n) = st.drop_on_publish {
        if n <= 1 {
            st.drop_on_publish = None;
            return Next::Close(Duration::ZERO);
        }
        st.drop_on_publish = Some(n - 1);
    }
    if st.fail_publishes > 0 {
        st.fail_publishes -= 1;
        let _ = c.tx.send(modeled_error(
            stream,
            "ServiceError",
            "Failed to publish the message to IoT Core",
        ));
        return Next::Continue;
    }
    let Some(topic) = body["topicName"].as_str().map(str::to_owned) else {
        let _ = c.tx.send(modeled_error(
            stream,
            "InvalidArgumentsError",
            "topicName is required",
        ));
        return Next::Continue;
    };
    let qos = match &body["qos"] {
        Value::Null => "0".to_owned(),
        Value::String(q) if q == "0" || q == "1" => q.clone(),
        other => {
            let _ = c.tx.send(modeled_error(
                stream,
                "InvalidArgumentsError",
                &format!("Invalid QoS value: {other}"),
            ));
            return Next::Continue;
        }
    };
    let payload = match body["payload"].as_str() {
        None => Vec::new(),
        Some(b) => match base64::engine::general_purpose::STANDARD.decode(b) {
            Ok(p) => p,
            Err(e) => {
                let _ = c.tx.send(modeled_error(
                    stream,
                    "InvalidArgumentsError",
                    &format!("payload is not base64: {e}"),
                ));
                return Next::Continue;
            }
        },
    };
    if !st
        .opts
        .access
        .allows("aws.greengrass#PublishToIoTCore", &topic)
    {
        let msg = format!("Principal {} is not authorized to perform aws.greengrass.ipc.mqttproxy:aws.greengrass#PublishToIoTCore on resource {topic}", st.opts.component);
        st.denied.push((topic, msg.clone()));
        let _ = c.tx.send(modeled_error(stream, "UnauthorizedError", &msg));
        return Next::Continue;
    }
    let time_ms = now_ms();
    if let Some(f) = st.record.as_mut() {
        let line = json!({
            "topic": topic,
            "qos": qos,
            "payload": base64::engine::general_purpose::STANDARD.encode(&payload),
            "time_ms": time_ms,
        });
        let _ = writeln!(f, "{line}");
        let _ = f.flush();
    }
    st.published.push(Published {
        topic: topic.clone(),
        qos,
        payload: payload.clone(),
        time_ms,
    });
    let _ =
        c.tx.send(response(stream, "PublishToIoTCore", &json!({}), true));
    if crate::validator::parse_report_topic(&topic).is_some() {
        let ex = st.engine.handle(&topic, &payload, Instant::now(), time_ms);
        if let Some(r) = &ex.response {
            deliver(&st, &r.topic, &r.payload);
        }
        st.exchanges.push(ex);
    }
    Next::Continue
}

/// Sends an IoT Core message to every subscription whose filter matches.
fn deliver(st: &State, topic: &str, payload: &[u8]) {
    let body = json!({"message": {
        "topicName": topic,
        "payload": base64::engine::general_purpose::STANDARD.encode(payload),
    }});
    for sub in &st.iot_subs {
        if resource_matches(&sub.filter[0], topic) {
            let _ = sub
                .tx
                .send(event(sub.stream, "aws.greengrass#IoTCoreMessage", &body));
        }
    }
}

/// Parses `--socket`-style arguments shared by the binary: fails on a missing recipe file.
pub fn options_from_args(
    socket: PathBuf,
    record: Option<PathBuf>,
    recipe: Option<PathBuf>,
    svcuid: Option<String>,
) -> anyhow::Result<GgOptions> {
    let mut o = GgOptions::new(socket);
    if let Some(r) = recipe {
        if !r.exists() {
            bail!("recipe {} does not exist", r.display());
        }
        o = o.with_recipe(&r)?;
    }
    o.record = record;
    o.svcuid = svcuid;
    Ok(o)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resources_match_like_the_mqtt_proxy() {
        assert!(resource_matches(
            "$aws/things/+/defender/metrics/+",
            "$aws/things/gw-1/defender/metrics/json"
        ));
        assert!(!resource_matches(
            "$aws/things/+/defender/metrics/+",
            "$aws/things/gw-1/defender/metrics/json/accepted"
        ));
        assert!(resource_matches(
            "$aws/things/+/defender/metrics/+/accepted",
            "$aws/things/gw-1/defender/metrics/cbor/accepted"
        ));
        assert!(resource_matches(
            "edgewarden/#",
            "edgewarden/gw-1/violations"
        ));
        assert!(resource_matches(
            "edgewarden/*/violations",
            "edgewarden/gw-1/violations"
        ));
        assert!(resource_matches("edge*", "edgewarden/gw-1/violations"));
        assert!(!resource_matches(
            "edgewarden/+",
            "edgewarden/gw-1/violations"
        ));
        assert!(!resource_matches("other/#", "edgewarden/gw-1/violations"));
    }

    #[test]
    fn access_control_reads_the_mqttproxy_policies() {
        let cfg = json!({"accessControl": {MQTT_PROXY: {"p1": {
            "operations": ["aws.greengrass#PublishToIoTCore"],
            "resources": ["a/+"]
        }}}});
        let ac = AccessControl::from_configuration(&cfg).unwrap();
        assert!(ac.allows("aws.greengrass#PublishToIoTCore", "a/b"));
        assert!(!ac.allows("aws.greengrass#SubscribeToIoTCore", "a/b"));
        assert!(!ac.allows("aws.greengrass#PublishToIoTCore", "b/a"));
        let bad = json!({"accessControl": {MQTT_PROXY: {"p1": {"operations": "x"}}}});
        let e = AccessControl::from_configuration(&bad).unwrap_err();
        assert!(e.to_string().contains("p1.operations is not a list"), "{e}");
    }

    #[test]
    fn configuration_merge_reports_each_changed_leaf() {
        let mut v =
            json!({"report": {"interval": "300s", "format": "json"}, "logs": {"enabled": true}});
        let mut changed = Vec::new();
        merge(
            &mut v,
            &json!({"report": {"interval": "5s", "format": "json"}, "new": 1}),
            &mut Vec::new(),
            &mut changed,
        );
        changed.sort();
        assert_eq!(
            changed,
            vec![
                vec!["new".to_owned()],
                vec!["report".to_owned(), "interval".to_owned()]
            ]
        );
        assert_eq!(v["report"]["interval"], "5s");
    }
}
