//! The event-stream RPC client: one connection to the nucleus over its Unix socket.
//!
//! [`Connection::connect`] performs the handshake (CONNECT with the component's token, then
//! CONNECT_ACK with the accepted flag). After it, [`Connection::request`] opens operation
//! streams with ids 1, 2, 3 … (the server refuses gaps, so ids are allocated and written in the
//! same `&mut self` call), and [`Connection::next_frame`] yields the server's frames.
//!
//! [`Connection::next_frame`] is cancel safe: it only awaits a socket read and keeps partial
//! frames in the connection, so it can sit in a `select!`. Writes are not, and are never raced.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::UnixStream;

use super::frame::{
    Decoder, Frame, FrameError, MessageType, FLAG_CONNECTION_ACCEPTED, FLAG_TERMINATE_STREAM,
    SERVICE_MODEL_TYPE,
};

/// Largest frame the client writes. Nucleus lite's whole-frame limit is 10 000 bytes; the Java
/// nucleus takes up to 24 MiB. Publishes above the lite limit are still sent (the Java nucleus
/// takes them) and fail with an error on lite.
pub const MAX_OUTGOING_FRAME: usize = 256 * 1024;

/// Why the connection failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum IpcError {
    /// The socket cannot be reached.
    #[error("cannot connect to the nucleus IPC socket {}: {source}", path.display())]
    Socket {
        /// The socket path.
        path: PathBuf,
        /// The OS error.
        #[source]
        source: std::io::Error,
    },
    /// Reading or writing failed.
    #[error("IPC socket I/O: {0}")]
    Io(#[from] std::io::Error),
    /// The nucleus closed the connection.
    #[error("the nucleus closed the IPC connection")]
    Closed,
    /// No CONNECT_ACK in time.
    #[error("no CONNECT_ACK from the nucleus within {} s", .0.as_secs_f32())]
    ConnectTimeout(Duration),
    /// The nucleus refused the component's token (or the protocol version).
    #[error(
        "the nucleus refused the IPC connection ({0}): check that SVCUID is this component's token"
    )]
    AuthRejected(&'static str),
    /// A frame could not be decoded (the byte stream is out of sync).
    #[error("malformed frame from the nucleus: {0}")]
    Frame(#[from] FrameError),
    /// The peer broke the protocol, or said we did (PROTOCOL_ERROR / INTERNAL_ERROR).
    #[error("IPC protocol error: {0}")]
    Protocol(String),
}

/// An operation's error answer (APPLICATION_ERROR).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RpcError {
    /// The modeled error name without the `aws.greengrass#` prefix (`UnauthorizedError`,
    /// `ServiceError`, …), or `Unmodeled` when the answer names none.
    pub code: String,
    /// The explanation (`message`, `_message`, or the raw payload of an unmodeled error).
    pub message: String,
}

impl RpcError {
    /// Reads an APPLICATION_ERROR frame.
    pub fn from_frame(f: &Frame) -> RpcError {
        let body: Option<Value> = serde_json::from_slice(&f.payload).ok();
        let code = f
            .string(SERVICE_MODEL_TYPE)
            .map(|m| m.strip_prefix("aws.greengrass#").unwrap_or(m).to_owned())
            .or_else(|| {
                body.as_ref()?
                    .get("_errorCode")?
                    .as_str()
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| "Unmodeled".to_owned());
        let message = body
            .as_ref()
            .and_then(|b| {
                ["message", "_message", "error"]
                    .iter()
                    .find_map(|k| b.get(*k)?.as_str())
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| {
                String::from_utf8_lossy(&f.payload)
                    .chars()
                    .take(200)
                    .collect()
            });
        RpcError { code, message }
    }

    /// True for errors that a later retry can cure (the nucleus failed, or gave no model).
    pub fn retryable(&self) -> bool {
        !matches!(
            self.code.as_str(),
            "UnauthorizedError" | "InvalidArgumentsError" | "ResourceNotFoundError"
        )
    }
}

impl std::fmt::Display for RpcError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

/// A connected, authenticated IPC connection.
#[derive(Debug)]
pub struct Connection {
    stream: UnixStream,
    decoder: Decoder,
    /// The id the next operation stream gets.
    next_stream: i32,
    read_buf: Box<[u8]>,
}

impl Connection {
    /// Connects to `path`, sends CONNECT with `token`, and waits up to `timeout` for an
    /// accepted CONNECT_ACK. Incoming frames above `max_frame` bytes end the connection.
    pub async fn connect(
        path: &Path,
        token: &str,
        timeout: Duration,
        max_frame: usize,
    ) -> Result<Connection, IpcError> {
        let stream = tokio::time::timeout(timeout, UnixStream::connect(path))
            .await
            .map_err(|_| IpcError::ConnectTimeout(timeout))?
            .map_err(|source| IpcError::Socket {
                path: path.to_owned(),
                source,
            })?;
        let mut c = Connection {
            stream,
            decoder: Decoder::new(max_frame),
            next_stream: 1,
            read_buf: vec![0u8; 16 * 1024].into_boxed_slice(),
        };
        c.send(&Frame::connect(token)).await?;
        let ack = match tokio::time::timeout(timeout, c.next_frame()).await {
            Err(_) => return Err(IpcError::ConnectTimeout(timeout)),
            Ok(Err(IpcError::Closed)) => {
                return Err(IpcError::AuthRejected(
                    "connection closed before CONNECT_ACK",
                ))
            }
            Ok(r) => r?,
        };
        match ack.message_type()? {
            MessageType::ConnectAck if ack.flags()? & FLAG_CONNECTION_ACCEPTED != 0 => Ok(c),
            MessageType::ConnectAck => Err(IpcError::AuthRejected(
                "CONNECT_ACK without the accepted flag",
            )),
            MessageType::ProtocolError => Err(IpcError::AuthRejected(
                "PROTOCOL_ERROR in answer to CONNECT",
            )),
            other => Err(IpcError::Protocol(format!(
                "expected CONNECT_ACK, got {other:?} on stream {}",
                ack.stream_id().unwrap_or(-1)
            ))),
        }
    }

    /// Writes one frame whole.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), IpcError> {
        let bytes = frame.encode(MAX_OUTGOING_FRAME)?;
        self.stream.write_all(&bytes).await?;
        Ok(())
    }

    /// Opens a stream for `operation` (e.g. `PublishToIoTCore`) with a JSON request; returns
    /// its stream id. Fails with [`IpcError::Protocol`] when the connection has used up its ids.
    pub async fn request(&mut self, operation: &str, body: &Value) -> Result<i32, IpcError> {
        let id = self.next_stream;
        if id == i32::MAX {
            return Err(IpcError::Protocol(
                "stream ids exhausted on this connection; reconnecting".into(),
            ));
        }
        let payload = serde_json::to_vec(body).expect("a JSON value always serializes");
        self.send(&Frame::request(id, operation, payload)).await?;
        self.next_stream += 1;
        Ok(id)
    }

    /// The highest stream id opened so far (0 before the first request).
    pub fn last_stream(&self) -> i32 {
        self.next_stream - 1
    }

    /// Closes a stream from the client side (best effort: the server does not answer).
    pub async fn terminate(&mut self, stream_id: i32) -> Result<(), IpcError> {
        self.send(&Frame::new(
            MessageType::ApplicationMessage,
            FLAG_TERMINATE_STREAM,
            stream_id,
        ))
        .await
    }

    /// The next frame from the server. Cancel safe.
    pub async fn next_frame(&mut self) -> Result<Frame, IpcError> {
        loop {
            if let Some(f) = self.decoder.next_frame()? {
                return Ok(f);
            }
            let n = self.stream.read(&mut self.read_buf).await?;
            if n == 0 {
                return Err(IpcError::Closed);
            }
            self.decoder.push(&self.read_buf[..n]);
        }
    }

    /// Shuts the write side down so the server sees a clean close.
    pub async fn close(mut self) {
        let _ = self.stream.shutdown().await;
    }
}
