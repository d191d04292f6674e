//! The event-stream frame codec of the Greengrass nucleus IPC: encoding, incremental decoding
//! with both CRCs checked, and the size limits.
//!
//! Wire layout (all integers big-endian):
//!
//! ```text
//! total_len:u32 | headers_len:u32 | prelude_crc:u32 | headers | payload | message_crc:u32
//! ```
//!
//! `prelude_crc` covers bytes 0..8, `message_crc` everything before it. A header is
//! `name_len:u8 | name | type:u8 | value`, with ten value types (see [`HeaderValue`]).
//!
//! The decoder never trusts `total_len` to allocate: it checks the prelude (length bounds and
//! CRC) as soon as 12 bytes are there, refuses frames above its limit before buffering them,
//! and only grows its buffer with bytes actually received. Every error names what is wrong and
//! where (byte offset within the frame).

use std::fmt;

/// Bytes before the headers: total length, headers length, prelude CRC.
pub const PRELUDE_LEN: usize = 12;
/// The smallest frame: prelude and message CRC, no headers, no payload.
pub const MIN_FRAME_LEN: usize = 16;
/// Largest frame accepted from a peer by default. The Java nucleus allows 24 MiB, nucleus lite
/// 10 000 bytes; nothing the agent receives comes near 1 MiB.
pub const DEFAULT_MAX_FRAME_LEN: usize = 1024 * 1024;
/// Largest string or byte-buffer header value (every implementation caps at `i16::MAX`).
pub const MAX_HEADER_VALUE_LEN: usize = i16::MAX as usize;

/// `:message-type`
pub const MESSAGE_TYPE: &str = ":message-type";
/// `:message-flags`
pub const MESSAGE_FLAGS: &str = ":message-flags";
/// `:stream-id`
pub const STREAM_ID: &str = ":stream-id";
/// `:version`, on CONNECT only.
pub const VERSION: &str = ":version";
/// `:content-type`
pub const CONTENT_TYPE: &str = ":content-type";
/// `service-model-type`: the shape name of the payload.
pub const SERVICE_MODEL_TYPE: &str = "service-model-type";
/// `operation`: on the first frame of a stream.
pub const OPERATION: &str = "operation";

/// The only protocol version the nucleus accepts.
pub const PROTOCOL_VERSION: &str = "0.1.0";
/// `:content-type` of application frames.
pub const JSON: &str = "application/json";

/// `:message-flags` bit of an accepted CONNECT_ACK.
pub const FLAG_CONNECTION_ACCEPTED: i32 = 0x1;
/// `:message-flags` bit that ends a stream.
pub const FLAG_TERMINATE_STREAM: i32 = 0x2;

/// `:message-type` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MessageType {
    /// An operation's request, response or event (stream > 0).
    ApplicationMessage,
    /// An operation's error (stream > 0).
    ApplicationError,
    /// Keep-alive (stream 0).
    Ping,
    /// Answer to a ping (stream 0).
    PingResponse,
    /// Client handshake (stream 0).
    Connect,
    /// Server handshake answer (stream 0).
    ConnectAck,
    /// The peer broke the protocol; the connection closes (stream 0).
    ProtocolError,
    /// The peer failed internally; the connection closes (stream 0).
    InternalError,
}

impl MessageType {
    /// The wire value.
    pub const fn code(self) -> i32 {
        match self {
            MessageType::ApplicationMessage => 0,
            MessageType::ApplicationError => 1,
            MessageType::Ping => 2,
            MessageType::PingResponse => 3,
            MessageType::Connect => 4,
            MessageType::ConnectAck => 5,
            MessageType::ProtocolError => 6,
            MessageType::InternalError => 7,
        }
    }

    /// The type of a wire value, `None` when unknown.
    pub const fn from_code(code: i32) -> Option<MessageType> {
        Some(match code {
            0 => MessageType::ApplicationMessage,
            1 => MessageType::ApplicationError,
            2 => MessageType::Ping,
            3 => MessageType::PingResponse,
            4 => MessageType::Connect,
            5 => MessageType::ConnectAck,
            6 => MessageType::ProtocolError,
            7 => MessageType::InternalError,
            _ => return None,
        })
    }
}

/// A header value: the ten event-stream types (Greengrass itself uses int32 and string).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HeaderValue {
    /// Types 0 (true) and 1 (false).
    Bool(bool),
    /// Type 2.
    Byte(i8),
    /// Type 3.
    Int16(i16),
    /// Type 4.
    Int32(i32),
    /// Type 5.
    Int64(i64),
    /// Type 6, at most [`MAX_HEADER_VALUE_LEN`] bytes.
    ByteBuf(Vec<u8>),
    /// Type 7, UTF-8, at most [`MAX_HEADER_VALUE_LEN`] bytes.
    String(String),
    /// Type 8, ms since the epoch.
    Timestamp(i64),
    /// Type 9.
    Uuid([u8; 16]),
}

impl HeaderValue {
    fn type_code(&self) -> u8 {
        match self {
            HeaderValue::Bool(true) => 0,
            HeaderValue::Bool(false) => 1,
            HeaderValue::Byte(_) => 2,
            HeaderValue::Int16(_) => 3,
            HeaderValue::Int32(_) => 4,
            HeaderValue::Int64(_) => 5,
            HeaderValue::ByteBuf(_) => 6,
            HeaderValue::String(_) => 7,
            HeaderValue::Timestamp(_) => 8,
            HeaderValue::Uuid(_) => 9,
        }
    }

    /// The type's name, for error messages.
    pub fn type_name(&self) -> &'static str {
        match self {
            HeaderValue::Bool(_) => "bool",
            HeaderValue::Byte(_) => "byte",
            HeaderValue::Int16(_) => "int16",
            HeaderValue::Int32(_) => "int32",
            HeaderValue::Int64(_) => "int64",
            HeaderValue::ByteBuf(_) => "byte_buf",
            HeaderValue::String(_) => "string",
            HeaderValue::Timestamp(_) => "timestamp",
            HeaderValue::Uuid(_) => "uuid",
        }
    }

    fn encoded_len(&self) -> usize {
        1 + match self {
            HeaderValue::Bool(_) => 0,
            HeaderValue::Byte(_) => 1,
            HeaderValue::Int16(_) => 2,
            HeaderValue::Int32(_) => 4,
            HeaderValue::Int64(_) | HeaderValue::Timestamp(_) => 8,
            HeaderValue::ByteBuf(b) => 2 + b.len(),
            HeaderValue::String(s) => 2 + s.len(),
            HeaderValue::Uuid(_) => 16,
        }
    }
}

/// One header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Header {
    /// Its name, 1..=255 bytes.
    pub name: String,
    /// Its value.
    pub value: HeaderValue,
}

impl Header {
    /// A header.
    pub fn new(name: impl Into<String>, value: HeaderValue) -> Header {
        Header {
            name: name.into(),
            value,
        }
    }
}

/// Why a frame cannot be decoded or encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FrameError {
    /// `total_len` is above the receiver's (or the encoder's) limit.
    #[error("frame of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// `total_len`
        len: usize,
        /// The limit.
        max: usize,
    },
    /// `total_len` is below the 16-byte minimum.
    #[error("frame length {0} (bytes 0..4) is below the 16-byte minimum")]
    TooShort(u32),
    /// `headers_len` does not fit the frame.
    #[error("headers length {headers_len} (bytes 4..8) does not fit a frame of {total_len} bytes")]
    HeadersLen {
        /// `total_len`
        total_len: u32,
        /// `headers_len`
        headers_len: u32,
    },
    /// The prelude CRC (bytes 8..12) does not match bytes 0..8.
    #[error("prelude CRC mismatch at bytes 8..12: frame says {stated:#010x}, bytes 0..8 give {computed:#010x}")]
    PreludeCrc {
        /// As written in the frame.
        stated: u32,
        /// As computed.
        computed: u32,
    },
    /// The message CRC (last 4 bytes) does not match the frame.
    #[error("message CRC mismatch at bytes {offset}..{}: frame says {stated:#010x}, computed {computed:#010x}", offset + 4)]
    MessageCrc {
        /// Offset of the CRC.
        offset: usize,
        /// As written in the frame.
        stated: u32,
        /// As computed.
        computed: u32,
    },
    /// A header cannot be decoded.
    #[error("header at byte {offset}: {what}")]
    Header {
        /// Offset of the header within the frame.
        offset: usize,
        /// What is wrong.
        what: String,
    },
    /// A header cannot be encoded.
    #[error("header {name:?}: {what}")]
    Encode {
        /// The header.
        name: String,
        /// What is wrong.
        what: String,
    },
    /// A required header is absent.
    #[error("header {0} is missing")]
    MissingHeader(&'static str),
    /// A required header has the wrong type.
    #[error("header {name} is a {found}, expected {expected}")]
    HeaderType {
        /// The header.
        name: &'static str,
        /// Its type.
        found: &'static str,
        /// The type it must have.
        expected: &'static str,
    },
    /// `:message-type` is not one of 0..=7.
    #[error("unknown message type {0}")]
    UnknownMessageType(i32),
}

/// One frame: headers in wire order and the payload.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Frame {
    /// Headers, in the order they are (or were) on the wire. Order carries no meaning.
    pub headers: Vec<Header>,
    /// The payload (JSON for Greengrass application frames).
    pub payload: Vec<u8>,
}

impl fmt::Debug for Frame {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The CONNECT payload carries the component's token: never print payloads whole.
        f.debug_struct("Frame")
            .field("headers", &self.headers)
            .field("payload_len", &self.payload.len())
            .finish()
    }
}

fn crc32(bytes: &[u8]) -> u32 {
    crc32fast::hash(bytes)
}

fn be_u32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

impl Frame {
    /// A frame with the three standard headers in the order the official clients write them.
    pub fn new(message_type: MessageType, flags: i32, stream_id: i32) -> Frame {
        Frame {
            headers: vec![
                Header::new(MESSAGE_TYPE, HeaderValue::Int32(message_type.code())),
                Header::new(MESSAGE_FLAGS, HeaderValue::Int32(flags)),
                Header::new(STREAM_ID, HeaderValue::Int32(stream_id)),
            ],
            payload: Vec::new(),
        }
    }

    /// CONNECT carrying `{"authToken": token}`.
    pub fn connect(auth_token: &str) -> Frame {
        let mut f = Frame::new(MessageType::Connect, 0, 0);
        f.headers.insert(
            0,
            Header::new(VERSION, HeaderValue::String(PROTOCOL_VERSION.into())),
        );
        f.payload = serde_json::to_vec(&serde_json::json!({ "authToken": auth_token }))
            .expect("a JSON object always serializes");
        f
    }

    /// The first frame of an operation stream: `operation` `aws.greengrass#<op>`, the payload
    /// shape `aws.greengrass#<op>Request`, headers in the official client's order.
    pub fn request(stream_id: i32, operation: &str, payload: Vec<u8>) -> Frame {
        Frame {
            headers: vec![
                Header::new(CONTENT_TYPE, HeaderValue::String(JSON.into())),
                Header::new(
                    SERVICE_MODEL_TYPE,
                    HeaderValue::String(format!("aws.greengrass#{operation}Request")),
                ),
                Header::new(
                    MESSAGE_TYPE,
                    HeaderValue::Int32(MessageType::ApplicationMessage.code()),
                ),
                Header::new(MESSAGE_FLAGS, HeaderValue::Int32(0)),
                Header::new(STREAM_ID, HeaderValue::Int32(stream_id)),
                Header::new(
                    OPERATION,
                    HeaderValue::String(format!("aws.greengrass#{operation}")),
                ),
            ],
            payload,
        }
    }

    /// A server frame on an operation stream: the standard headers, then `:content-type` and
    /// `service-model-type` (the nucleus's order).
    pub fn reply(
        message_type: MessageType,
        flags: i32,
        stream_id: i32,
        content_type: &str,
        model_type: Option<&str>,
        payload: Vec<u8>,
    ) -> Frame {
        let mut f = Frame::new(message_type, flags, stream_id);
        f.headers.push(Header::new(
            CONTENT_TYPE,
            HeaderValue::String(content_type.into()),
        ));
        if let Some(m) = model_type {
            f.headers.push(Header::new(
                SERVICE_MODEL_TYPE,
                HeaderValue::String(m.into()),
            ));
        }
        f.payload = payload;
        f
    }

    /// The value of a header, names compared ASCII case-insensitively (as the C runtime does).
    pub fn header(&self, name: &str) -> Option<&HeaderValue> {
        self.headers
            .iter()
            .find(|h| h.name.eq_ignore_ascii_case(name))
            .map(|h| &h.value)
    }

    /// A string header, `None` when absent or of another type.
    pub fn string(&self, name: &str) -> Option<&str> {
        match self.header(name)? {
            HeaderValue::String(s) => Some(s),
            _ => None,
        }
    }

    /// A required int32 header.
    pub fn int32(&self, name: &'static str) -> Result<i32, FrameError> {
        match self.header(name) {
            None => Err(FrameError::MissingHeader(name)),
            Some(HeaderValue::Int32(v)) => Ok(*v),
            Some(other) => Err(FrameError::HeaderType {
                name,
                found: other.type_name(),
                expected: "int32",
            }),
        }
    }

    /// `:message-type`, required.
    pub fn message_type(&self) -> Result<MessageType, FrameError> {
        let code = self.int32(MESSAGE_TYPE)?;
        MessageType::from_code(code).ok_or(FrameError::UnknownMessageType(code))
    }

    /// `:message-flags`, required.
    pub fn flags(&self) -> Result<i32, FrameError> {
        self.int32(MESSAGE_FLAGS)
    }

    /// `:stream-id`, required.
    pub fn stream_id(&self) -> Result<i32, FrameError> {
        self.int32(STREAM_ID)
    }

    /// Length of the encoded frame.
    pub fn encoded_len(&self) -> usize {
        MIN_FRAME_LEN + self.headers_len() + self.payload.len()
    }

    fn headers_len(&self) -> usize {
        self.headers
            .iter()
            .map(|h| 1 + h.name.len() + h.value.encoded_len())
            .sum()
    }

    /// Encodes the frame, refusing header names and values over their limits and frames over
    /// `max_len`.
    pub fn encode(&self, max_len: usize) -> Result<Vec<u8>, FrameError> {
        for h in &self.headers {
            if h.name.is_empty() || h.name.len() > 255 {
                return Err(FrameError::Encode {
                    name: h.name.clone(),
                    what: format!("name of {} bytes is not 1..=255", h.name.len()),
                });
            }
            let vlen = match &h.value {
                HeaderValue::ByteBuf(b) => b.len(),
                HeaderValue::String(s) => s.len(),
                _ => 0,
            };
            if vlen > MAX_HEADER_VALUE_LEN {
                return Err(FrameError::Encode {
                    name: h.name.clone(),
                    what: format!("value of {vlen} bytes exceeds {MAX_HEADER_VALUE_LEN}"),
                });
            }
        }
        let total = self.encoded_len();
        if total > max_len || u32::try_from(total).is_err() {
            return Err(FrameError::TooLarge {
                len: total,
                max: max_len,
            });
        }
        let headers_len = self.headers_len();
        let mut out = Vec::with_capacity(total);
        out.extend_from_slice(&(total as u32).to_be_bytes());
        out.extend_from_slice(&(headers_len as u32).to_be_bytes());
        let prelude_crc = crc32(&out[..8]);
        out.extend_from_slice(&prelude_crc.to_be_bytes());
        for h in &self.headers {
            out.push(h.name.len() as u8);
            out.extend_from_slice(h.name.as_bytes());
            out.push(h.value.type_code());
            match &h.value {
                HeaderValue::Bool(_) => {}
                HeaderValue::Byte(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int16(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int32(v) => out.extend_from_slice(&v.to_be_bytes()),
                HeaderValue::Int64(v) | HeaderValue::Timestamp(v) => {
                    out.extend_from_slice(&v.to_be_bytes())
                }
                HeaderValue::ByteBuf(b) => {
                    out.extend_from_slice(&(b.len() as u16).to_be_bytes());
                    out.extend_from_slice(b);
                }
                HeaderValue::String(s) => {
                    out.extend_from_slice(&(s.len() as u16).to_be_bytes());
                    out.extend_from_slice(s.as_bytes());
                }
                HeaderValue::Uuid(u) => out.extend_from_slice(u),
            }
        }
        out.extend_from_slice(&self.payload);
        let crc = crc32(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        debug_assert_eq!(out.len(), total);
        Ok(out)
    }
}

/// Checks a prelude (12 bytes) and returns `total_len`.
fn check_prelude(p: &[u8], max_len: usize) -> Result<usize, FrameError> {
    let total_len = be_u32(&p[0..4]);
    let headers_len = be_u32(&p[4..8]);
    let stated = be_u32(&p[8..12]);
    let computed = crc32(&p[0..8]);
    if stated != computed {
        return Err(FrameError::PreludeCrc { stated, computed });
    }
    if (total_len as usize) < MIN_FRAME_LEN {
        return Err(FrameError::TooShort(total_len));
    }
    if total_len as usize > max_len {
        return Err(FrameError::TooLarge {
            len: total_len as usize,
            max: max_len,
        });
    }
    if headers_len > total_len - MIN_FRAME_LEN as u32 || headers_len == 1 {
        return Err(FrameError::HeadersLen {
            total_len,
            headers_len,
        });
    }
    Ok(total_len as usize)
}

/// Decodes one whole frame (`bytes` is exactly one frame).
pub fn decode_frame(bytes: &[u8], max_len: usize) -> Result<Frame, FrameError> {
    if bytes.len() < PRELUDE_LEN {
        return Err(FrameError::TooShort(bytes.len() as u32));
    }
    let total = check_prelude(&bytes[..PRELUDE_LEN], max_len)?;
    if bytes.len() != total {
        return Err(FrameError::Header {
            offset: 0,
            what: format!("frame says {total} bytes, {} bytes were given", bytes.len()),
        });
    }
    let crc_at = total - 4;
    let stated = be_u32(&bytes[crc_at..]);
    let computed = crc32(&bytes[..crc_at]);
    if stated != computed {
        return Err(FrameError::MessageCrc {
            offset: crc_at,
            stated,
            computed,
        });
    }
    let headers_len = be_u32(&bytes[4..8]) as usize;
    let headers = decode_headers(&bytes[PRELUDE_LEN..PRELUDE_LEN + headers_len])?;
    Ok(Frame {
        headers,
        payload: bytes[PRELUDE_LEN + headers_len..crc_at].to_vec(),
    })
}

fn decode_headers(block: &[u8]) -> Result<Vec<Header>, FrameError> {
    let mut headers = Vec::new();
    let mut pos = 0usize;
    while pos < block.len() {
        let start = pos;
        let offset = PRELUDE_LEN + start;
        let err = |what: String| FrameError::Header { offset, what };
        let take = |pos: &mut usize, n: usize, what: &str| -> Result<&[u8], FrameError> {
            if block.len() - *pos < n {
                return Err(FrameError::Header {
                    offset,
                    what: format!(
                        "{what} needs {n} bytes, {} left in the headers block",
                        block.len() - *pos
                    ),
                });
            }
            let s = &block[*pos..*pos + n];
            *pos += n;
            Ok(s)
        };
        let name_len = take(&mut pos, 1, "name length")?[0] as usize;
        if name_len == 0 {
            return Err(err("empty header name".into()));
        }
        let name = std::str::from_utf8(take(&mut pos, name_len, "name")?)
            .map_err(|_| err("header name is not UTF-8".into()))?
            .to_owned();
        let ty = take(&mut pos, 1, "value type")?[0];
        let value = match ty {
            0 => HeaderValue::Bool(true),
            1 => HeaderValue::Bool(false),
            2 => HeaderValue::Byte(take(&mut pos, 1, "byte value")?[0] as i8),
            3 => {
                let b = take(&mut pos, 2, "int16 value")?;
                HeaderValue::Int16(i16::from_be_bytes([b[0], b[1]]))
            }
            4 => HeaderValue::Int32(be_u32(take(&mut pos, 4, "int32 value")?) as i32),
            5 | 8 => {
                let b = take(&mut pos, 8, "int64 value")?;
                let v = i64::from_be_bytes(b.try_into().expect("8 bytes"));
                if ty == 5 {
                    HeaderValue::Int64(v)
                } else {
                    HeaderValue::Timestamp(v)
                }
            }
            6 | 7 => {
                let b = take(&mut pos, 2, "value length")?;
                let len = u16::from_be_bytes([b[0], b[1]]) as usize;
                if len > MAX_HEADER_VALUE_LEN {
                    return Err(err(format!(
                        "header {name:?}: value of {len} bytes exceeds {MAX_HEADER_VALUE_LEN}"
                    )));
                }
                let v = take(&mut pos, len, "value")?;
                if ty == 6 {
                    HeaderValue::ByteBuf(v.to_vec())
                } else {
                    HeaderValue::String(
                        std::str::from_utf8(v)
                            .map_err(|_| err(format!("header {name:?}: string is not UTF-8")))?
                            .to_owned(),
                    )
                }
            }
            9 => HeaderValue::Uuid(take(&mut pos, 16, "uuid value")?.try_into().expect("16")),
            other => return Err(err(format!("header {name:?}: unknown value type {other}"))),
        };
        headers.push(Header { name, value });
    }
    Ok(headers)
}

/// Incremental decoder: feed it bytes as they arrive, take whole frames out.
///
/// After an error the stream is out of sync and the connection must be closed.
#[derive(Debug)]
pub struct Decoder {
    buf: Vec<u8>,
    max_len: usize,
}

impl Decoder {
    /// A decoder refusing frames above `max_len` bytes.
    pub fn new(max_len: usize) -> Decoder {
        Decoder {
            buf: Vec::new(),
            max_len: max_len.max(MIN_FRAME_LEN),
        }
    }

    /// Adds received bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
    }

    /// Bytes buffered and not yet part of a returned frame.
    pub fn buffered(&self) -> usize {
        self.buf.len()
    }

    /// The next whole frame, `Ok(None)` when more bytes are needed.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, FrameError> {
        if self.buf.len() < PRELUDE_LEN {
            return Ok(None);
        }
        let total = check_prelude(&self.buf[..PRELUDE_LEN], self.max_len)?;
        if self.buf.len() < total {
            return Ok(None);
        }
        let frame = decode_frame(&self.buf[..total], self.max_len)?;
        self.buf.drain(..total);
        if self.buf.is_empty() && self.buf.capacity() > 64 * 1024 {
            // Do not keep a large frame's buffer for the life of the connection.
            self.buf = Vec::new();
        }
        Ok(Some(frame))
    }
}

#[cfg(test)]
#[path = "frame_tests.rs"]
mod tests;
