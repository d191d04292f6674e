use proptest::prelude::*;

use super::*;
use crate::transport::greengrass::golden;

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn decode(s: &str) -> Frame {
    decode_frame(&hex(s), DEFAULT_MAX_FRAME_LEN).unwrap()
}

fn names(f: &Frame) -> Vec<&str> {
    f.headers.iter().map(|h| h.name.as_str()).collect()
}

fn json(f: &Frame) -> serde_json::Value {
    serde_json::from_slice(&f.payload).unwrap()
}

#[test]
fn golden_connect_decodes_field_by_field_and_reencodes_identically() {
    let bytes = hex(golden::CONNECT);
    assert_eq!(bytes.len(), 121);
    assert_eq!(&bytes[0..4], &121u32.to_be_bytes());
    assert_eq!(&bytes[4..8], &72u32.to_be_bytes());
    let f = decode(golden::CONNECT);
    assert_eq!(names(&f), [VERSION, MESSAGE_TYPE, MESSAGE_FLAGS, STREAM_ID]);
    assert_eq!(f.string(VERSION), Some("0.1.0"));
    assert_eq!(f.message_type().unwrap(), MessageType::Connect);
    assert_eq!(f.flags().unwrap(), 0);
    assert_eq!(f.stream_id().unwrap(), 0);
    assert_eq!(
        json(&f),
        serde_json::json!({"authToken": "TESTTOKEN0123456"})
    );
    assert_eq!(f.encode(DEFAULT_MAX_FRAME_LEN).unwrap(), bytes);
    // Our own CONNECT has the same headers; only the JSON separators differ (Python writes ": ").
    let ours = Frame::connect("TESTTOKEN0123456");
    assert_eq!(ours.headers, f.headers);
    assert_eq!(json(&ours), json(&f));
}

#[test]
fn golden_connect_ack_decodes_field_by_field() {
    let f = decode(golden::CONNECT_ACK);
    assert_eq!(names(&f), [MESSAGE_TYPE, MESSAGE_FLAGS, STREAM_ID]);
    assert_eq!(f.message_type().unwrap(), MessageType::ConnectAck);
    assert_eq!(f.flags().unwrap(), FLAG_CONNECTION_ACCEPTED);
    assert_eq!(f.stream_id().unwrap(), 0);
    assert!(f.payload.is_empty());
    let ours = Frame::new(MessageType::ConnectAck, FLAG_CONNECTION_ACCEPTED, 0);
    assert_eq!(
        ours.encode(DEFAULT_MAX_FRAME_LEN).unwrap(),
        hex(golden::CONNECT_ACK)
    );
}

#[test]
fn golden_publish_request_decodes_field_by_field_and_our_request_matches_its_headers() {
    let bytes = hex(golden::PUBLISH_REQUEST);
    assert_eq!(bytes.len(), 303);
    let f = decode(golden::PUBLISH_REQUEST);
    assert_eq!(
        names(&f),
        [
            CONTENT_TYPE,
            SERVICE_MODEL_TYPE,
            MESSAGE_TYPE,
            MESSAGE_FLAGS,
            STREAM_ID,
            OPERATION
        ]
    );
    assert_eq!(f.string(CONTENT_TYPE), Some("application/json"));
    assert_eq!(
        f.string(SERVICE_MODEL_TYPE),
        Some("aws.greengrass#PublishToIoTCoreRequest")
    );
    assert_eq!(f.message_type().unwrap(), MessageType::ApplicationMessage);
    assert_eq!(f.flags().unwrap(), 0);
    assert_eq!(f.stream_id().unwrap(), 1);
    assert_eq!(f.string(OPERATION), Some("aws.greengrass#PublishToIoTCore"));
    let body = json(&f);
    assert_eq!(body["topicName"], "$aws/things/gw-01/defender/metrics/json");
    assert_eq!(body["qos"], "0");
    assert_eq!(body["payload"], "eyJhIjoxfQ==");
    assert_eq!(f.encode(DEFAULT_MAX_FRAME_LEN).unwrap(), bytes);
    // Same headers in the same order, same payload bytes: byte-identical frame.
    let ours = Frame::request(1, "PublishToIoTCore", f.payload.clone());
    assert_eq!(ours.encode(DEFAULT_MAX_FRAME_LEN).unwrap(), bytes);
}

#[test]
fn golden_publish_response_decodes_field_by_field() {
    let f = decode(golden::PUBLISH_RESPONSE);
    assert_eq!(
        names(&f),
        [
            MESSAGE_TYPE,
            MESSAGE_FLAGS,
            STREAM_ID,
            CONTENT_TYPE,
            SERVICE_MODEL_TYPE
        ]
    );
    assert_eq!(f.message_type().unwrap(), MessageType::ApplicationMessage);
    assert_eq!(f.flags().unwrap(), FLAG_TERMINATE_STREAM);
    assert_eq!(f.stream_id().unwrap(), 1);
    assert_eq!(f.string(CONTENT_TYPE), Some(JSON));
    assert_eq!(
        f.string(SERVICE_MODEL_TYPE),
        Some("aws.greengrass#PublishToIoTCoreResponse")
    );
    assert_eq!(f.payload, b"{}");
    let ours = Frame::reply(
        MessageType::ApplicationMessage,
        FLAG_TERMINATE_STREAM,
        1,
        JSON,
        Some("aws.greengrass#PublishToIoTCoreResponse"),
        b"{}".to_vec(),
    );
    assert_eq!(
        ours.encode(DEFAULT_MAX_FRAME_LEN).unwrap(),
        hex(golden::PUBLISH_RESPONSE)
    );
}

#[test]
fn golden_configuration_frames_decode_field_by_field() {
    let req = decode(golden::SUBSCRIBE_CONFIG_REQUEST);
    assert_eq!(req.stream_id().unwrap(), 3);
    assert_eq!(req.flags().unwrap(), 0);
    assert_eq!(
        req.string(OPERATION),
        Some("aws.greengrass#SubscribeToConfigurationUpdate")
    );
    assert_eq!(
        req.string(SERVICE_MODEL_TYPE),
        Some("aws.greengrass#SubscribeToConfigurationUpdateRequest")
    );
    assert_eq!(
        json(&req),
        serde_json::json!({"keyPath": ["SampleIntervalSeconds"]})
    );
    let ours = Frame::request(3, "SubscribeToConfigurationUpdate", req.payload.clone());
    assert_eq!(
        ours.encode(DEFAULT_MAX_FRAME_LEN).unwrap(),
        hex(golden::SUBSCRIBE_CONFIG_REQUEST)
    );

    let ev = decode(golden::CONFIG_UPDATE_EVENT);
    assert_eq!(ev.message_type().unwrap(), MessageType::ApplicationMessage);
    assert_eq!(ev.flags().unwrap(), 0);
    assert_eq!(ev.stream_id().unwrap(), 3);
    assert_eq!(
        ev.string(SERVICE_MODEL_TYPE),
        Some("aws.greengrass#ConfigurationUpdateEvents")
    );
    let body = json(&ev);
    assert_eq!(
        body["configurationUpdateEvent"]["keyPath"],
        serde_json::json!(["SampleIntervalSeconds"])
    );
    assert_eq!(
        body["configurationUpdateEvent"]["componentName"],
        "com.example.EdgeAgent"
    );

    let term = decode(golden::TERMINATE_STREAM_3);
    assert_eq!(names(&term), [MESSAGE_TYPE, MESSAGE_FLAGS, STREAM_ID]);
    assert_eq!(
        term.message_type().unwrap(),
        MessageType::ApplicationMessage
    );
    assert_eq!(term.flags().unwrap(), FLAG_TERMINATE_STREAM);
    assert_eq!(term.stream_id().unwrap(), 3);
    assert!(term.payload.is_empty());
    assert_eq!(
        Frame::new(MessageType::ApplicationMessage, FLAG_TERMINATE_STREAM, 3)
            .encode(DEFAULT_MAX_FRAME_LEN)
            .unwrap(),
        hex(golden::TERMINATE_STREAM_3)
    );
}

#[test]
fn a_session_of_golden_frames_decodes_from_one_buffer_split_anywhere() {
    let all: Vec<u8> = [
        golden::CONNECT,
        golden::CONNECT_ACK,
        golden::PUBLISH_REQUEST,
        golden::PUBLISH_RESPONSE,
        golden::SUBSCRIBE_CONFIG_REQUEST,
        golden::CONFIG_UPDATE_EVENT,
        golden::TERMINATE_STREAM_3,
    ]
    .iter()
    .flat_map(|h| hex(h))
    .collect();
    for chunk in [1, 3, 7, 12, 100, all.len()] {
        let mut d = Decoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut frames = Vec::new();
        for c in all.chunks(chunk) {
            d.push(c);
            while let Some(f) = d.next_frame().unwrap() {
                frames.push(f);
            }
        }
        assert_eq!(frames.len(), 7, "chunk size {chunk}");
        assert_eq!(d.buffered(), 0);
        assert_eq!(frames[5].stream_id().unwrap(), 3);
    }
}

#[test]
fn corrupted_crcs_are_reported_with_their_offsets() {
    let mut b = hex(golden::PUBLISH_RESPONSE);
    b[20] ^= 1;
    let e = decode_frame(&b, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert!(
        matches!(e, FrameError::MessageCrc { offset: 163, .. }),
        "{e}"
    );
    assert!(e.to_string().contains("bytes 163..167"), "{e}");
    let mut b = hex(golden::PUBLISH_RESPONSE);
    b[9] ^= 1;
    let e = decode_frame(&b, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert!(matches!(e, FrameError::PreludeCrc { .. }), "{e}");
}

fn with_prelude(total: u32, headers: u32) -> Vec<u8> {
    let mut p = Vec::new();
    p.extend_from_slice(&total.to_be_bytes());
    p.extend_from_slice(&headers.to_be_bytes());
    let crc = crc32fast::hash(&p);
    p.extend_from_slice(&crc.to_be_bytes());
    p
}

#[test]
fn oversized_frames_are_refused_from_the_prelude_alone() {
    let mut d = Decoder::new(10_000);
    d.push(&with_prelude(10_001, 0));
    assert_eq!(
        d.next_frame().unwrap_err(),
        FrameError::TooLarge {
            len: 10_001,
            max: 10_000
        }
    );
    let mut d = Decoder::new(10_000);
    d.push(&with_prelude(15, 0));
    assert_eq!(d.next_frame().unwrap_err(), FrameError::TooShort(15));
    let mut d = Decoder::new(10_000);
    d.push(&with_prelude(100, 85));
    assert!(matches!(
        d.next_frame().unwrap_err(),
        FrameError::HeadersLen { .. }
    ));
    let big = Frame {
        headers: vec![],
        payload: vec![0; 20_000],
    };
    assert!(matches!(
        big.encode(10_000).unwrap_err(),
        FrameError::TooLarge { len: 20_016, .. }
    ));
}

#[test]
fn bad_headers_are_reported_with_their_offset() {
    let mut f = Frame::new(MessageType::Ping, 0, 0);
    f.headers.push(Header::new("x", HeaderValue::Int32(7)));
    let mut b = f.encode(DEFAULT_MAX_FRAME_LEN).unwrap();
    // The fourth header starts after the three standard ones: 12 + 19 + 20 + 16.
    let at = 12 + 19 + 20 + 16;
    assert_eq!(b[at], 1);
    b[at + 2] = 42; // value type
    let n = b.len();
    let crc = crc32fast::hash(&b[..n - 4]);
    b[n - 4..].copy_from_slice(&crc.to_be_bytes());
    let e = decode_frame(&b, DEFAULT_MAX_FRAME_LEN).unwrap_err();
    assert_eq!(
        e,
        FrameError::Header {
            offset: at,
            what: "header \"x\": unknown value type 42".into()
        }
    );
    assert!(e.to_string().starts_with("header at byte 67:"), "{e}");
}

#[test]
fn every_header_type_round_trips() {
    let mut f = Frame::new(MessageType::ApplicationMessage, 0, 5);
    for (i, v) in [
        HeaderValue::Bool(true),
        HeaderValue::Bool(false),
        HeaderValue::Byte(-3),
        HeaderValue::Int16(-300),
        HeaderValue::Int32(i32::MIN),
        HeaderValue::Int64(i64::MAX),
        HeaderValue::ByteBuf(vec![0, 1, 255]),
        HeaderValue::String("é".into()),
        HeaderValue::Timestamp(1_700_000_000_000),
        HeaderValue::Uuid([7; 16]),
    ]
    .into_iter()
    .enumerate()
    {
        f.headers.push(Header::new(format!("h{i}"), v));
    }
    f.payload = b"payload".to_vec();
    let b = f.encode(DEFAULT_MAX_FRAME_LEN).unwrap();
    assert_eq!(decode_frame(&b, DEFAULT_MAX_FRAME_LEN).unwrap(), f);
}

#[test]
fn required_headers_are_checked_by_name_and_type() {
    let f = Frame {
        headers: vec![Header::new(
            ":Message-Type",
            HeaderValue::String("0".into()),
        )],
        payload: vec![],
    };
    assert_eq!(
        f.message_type().unwrap_err(),
        FrameError::HeaderType {
            name: MESSAGE_TYPE,
            found: "string",
            expected: "int32"
        }
    );
    assert_eq!(
        f.stream_id().unwrap_err(),
        FrameError::MissingHeader(STREAM_ID)
    );
    let f = Frame::new(MessageType::Ping, 0, 0);
    let mut g = f.clone();
    g.headers[0].value = HeaderValue::Int32(99);
    assert_eq!(
        g.message_type().unwrap_err(),
        FrameError::UnknownMessageType(99)
    );
}

fn arb_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        any::<bool>().prop_map(HeaderValue::Bool),
        any::<i8>().prop_map(HeaderValue::Byte),
        any::<i16>().prop_map(HeaderValue::Int16),
        any::<i32>().prop_map(HeaderValue::Int32),
        any::<i64>().prop_map(HeaderValue::Int64),
        proptest::collection::vec(any::<u8>(), 0..64).prop_map(HeaderValue::ByteBuf),
        ".{0,40}".prop_map(HeaderValue::String),
        any::<i64>().prop_map(HeaderValue::Timestamp),
        any::<[u8; 16]>().prop_map(HeaderValue::Uuid),
    ]
}

fn arb_frame() -> impl Strategy<Value = Frame> {
    (
        proptest::collection::vec(("[a-z:-]{1,20}", arb_value()), 0..8),
        proptest::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(hs, payload)| Frame {
            headers: hs.into_iter().map(|(n, v)| Header::new(n, v)).collect(),
            payload,
        })
}

proptest! {
    #[test]
    fn frames_round_trip_through_the_incremental_decoder(
        frames in proptest::collection::vec(arb_frame(), 1..5),
        chunk in 1usize..64,
    ) {
        let mut wire = Vec::new();
        for f in &frames {
            wire.extend(f.encode(DEFAULT_MAX_FRAME_LEN).unwrap());
        }
        let mut d = Decoder::new(DEFAULT_MAX_FRAME_LEN);
        let mut out = Vec::new();
        for c in wire.chunks(chunk) {
            d.push(c);
            while let Some(f) = d.next_frame().unwrap() {
                out.push(f);
            }
        }
        prop_assert_eq!(out, frames);
    }

    #[test]
    fn arbitrary_bytes_never_panic_the_decoder(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let mut d = Decoder::new(4096);
        d.push(&bytes);
        while let Ok(Some(_)) = d.next_frame() {}
        let _ = decode_frame(&bytes, 4096);
    }

    #[test]
    fn any_flipped_bit_is_detected(f in arb_frame(), pos in any::<prop::sample::Index>(), bit in 0u8..8) {
        let mut b = f.encode(DEFAULT_MAX_FRAME_LEN).unwrap();
        let i = pos.index(b.len());
        b[i] ^= 1 << bit;
        prop_assert!(decode_frame(&b, DEFAULT_MAX_FRAME_LEN).is_err());
    }
}

#[test]
fn the_fuzz_entry_point_runs_over_a_golden_session_and_its_corruptions() {
    let mut all: Vec<u8> = [
        golden::CONNECT,
        golden::PUBLISH_REQUEST,
        golden::CONFIG_UPDATE_EVENT,
    ]
    .iter()
    .flat_map(|h| hex(h))
    .collect();
    crate::fuzzing::ipc_frame(&all);
    for i in (0..all.len()).step_by(13) {
        all[i] = all[i].wrapping_add(1);
        crate::fuzzing::ipc_frame(&all);
    }
}
