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

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::UnixListener;

    /// A server that accepts one connection, reads the CONNECT, then writes `reply`.
    async fn server(reply: Vec<u8>) -> (tempfile::TempDir, PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ipc.socket");
        let listener = UnixListener::bind(&path).unwrap();
        tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.unwrap();
            let mut d = Decoder::new(4096);
            let mut buf = [0u8; 1024];
            loop {
                let n = s.read(&mut buf).await.unwrap();
                d.push(&buf[..n]);
                if let Some(f) = d.next_frame().unwrap() {
                    assert_eq!(f.message_type().unwrap(), MessageType::Connect);
                    break;
                }
            }
            s.write_all(&reply).await.unwrap();
            tokio::time::sleep(Duration::from_secs(5)).await;
        });
        (dir, path)
    }

    #[tokio::test]
    async fn a_server_that_never_answers_connect_times_out() {
        let (_dir, path) = server(Vec::new()).await;
        let e = Connection::connect(&path, "T", Duration::from_millis(200), 4096)
            .await
            .unwrap_err();
        assert!(matches!(e, IpcError::ConnectTimeout(_)), "{e}");
        assert_eq!(
            e.to_string(),
            "no CONNECT_ACK from the nucleus within 0.2 s"
        );
    }

    #[tokio::test]
    async fn an_ack_without_the_accepted_flag_is_an_authentication_failure() {
        let ack = Frame::new(MessageType::ConnectAck, 0, 0)
            .encode(4096)
            .unwrap();
        let (_dir, path) = server(ack).await;
        let e = Connection::connect(&path, "T", Duration::from_secs(5), 4096)
            .await
            .unwrap_err();
        assert!(matches!(e, IpcError::AuthRejected(_)), "{e}");
        assert!(e.to_string().contains("SVCUID"), "{e}");
    }

    #[tokio::test]
    async fn a_frame_over_the_limit_is_refused_before_it_is_buffered() {
        let mut big = Frame::new(MessageType::ConnectAck, FLAG_CONNECTION_ACCEPTED, 0);
        big.payload = vec![b'x'; 8000];
        let (_dir, path) = server(big.encode(usize::MAX).unwrap()).await;
        let e = Connection::connect(&path, "T", Duration::from_secs(5), 4096)
            .await
            .unwrap_err();
        assert_eq!(
            e.to_string(),
            "malformed frame from the nucleus: frame of 8071 bytes exceeds the 4096-byte limit"
        );
    }

    #[tokio::test]
    async fn an_accepted_connection_numbers_streams_from_one() {
        let ack = Frame::new(MessageType::ConnectAck, FLAG_CONNECTION_ACCEPTED, 0)
            .encode(4096)
            .unwrap();
        let (_dir, path) = server(ack).await;
        let mut c = Connection::connect(&path, "T", Duration::from_secs(5), 4096)
            .await
            .unwrap();
        assert_eq!(c.last_stream(), 0);
        assert_eq!(
            c.request("UpdateState", &serde_json::json!({"state": "RUNNING"}))
                .await
                .unwrap(),
            1
        );
        assert_eq!(
            c.request("GetConfiguration", &serde_json::json!({}))
                .await
                .unwrap(),
            2
        );
        assert_eq!(c.last_stream(), 2);
    }

    #[test]
    fn operation_errors_are_read_from_the_model_type_or_the_payload() {
        let f = Frame::reply(
            MessageType::ApplicationError,
            FLAG_TERMINATE_STREAM,
            3,
            "application/json",
            Some("aws.greengrass#UnauthorizedError"),
            br#"{"_message":"m1","message":"not authorized"}"#.to_vec(),
        );
        let e = RpcError::from_frame(&f);
        assert_eq!(e.code, "UnauthorizedError");
        assert_eq!(e.message, "not authorized");
        assert!(!e.retryable());
        let f = Frame::reply(
            MessageType::ApplicationError,
            FLAG_TERMINATE_STREAM,
            3,
            "text/plain",
            None,
            b"InternalServerError".to_vec(),
        );
        let e = RpcError::from_frame(&f);
        assert_eq!(
            (e.code.as_str(), e.message.as_str()),
            ("Unmodeled", "InternalServerError")
        );
        assert!(e.retryable());
        let f = Frame::reply(
            MessageType::ApplicationError,
            FLAG_TERMINATE_STREAM,
            3,
            "application/json",
            None,
            br#"{"_errorCode":"ServiceError","_message":"mqtt down"}"#.to_vec(),
        );
        let e = RpcError::from_frame(&f);
        assert_eq!(e.to_string(), "ServiceError: mqtt down");
    }
}
