//! `serde` for the owned types (`--features serde`): every type round-trips
//! through JSON unchanged, and the JSON says what a reader expects.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tickwire::encode::{QuoteFields, TradeFields};
use tickwire::net::{ClientConfig, LoopOptions, ServerConfig, ServerStats};
use tickwire::parse::{Discard, DiscardReason, ParseStats};
use tickwire::policy::Backoff;
use tickwire::sequence::Gap;
use tickwire::session::{ClientState, CloseReason, IoFailure, Lost, SlowPolicy};
use tickwire::Payload;

/// JSON, then back, then JSON again: the same text both times.
fn round_trip<T: Serialize + DeserializeOwned>(value: &T) -> String {
    let json = serde_json::to_string(value).unwrap();
    let back: T = serde_json::from_str(&json).unwrap();
    assert_eq!(serde_json::to_string(&back).unwrap(), json);
    json
}

#[test]
fn payloads_round_trip_with_their_field_names() {
    let payloads = [
        Payload::Heartbeat,
        Payload::Login,
        Payload::LoginAccepted { session_id: 7 },
        Payload::EndOfSession,
        Payload::Quote(QuoteFields {
            instrument_id: 1,
            bid_price: -2,
            ask_price: 3,
            bid_size: 4,
            ask_size: 5,
        }),
        Payload::Trade(TradeFields {
            instrument_id: 9,
            price: 10,
            size: 11,
            side: 2,
            flags: 1,
        }),
    ];
    for p in payloads {
        let json = round_trip(&p);
        let back: Payload = serde_json::from_str(&json).unwrap();
        assert_eq!(back, p);
    }
    assert_eq!(
        round_trip(&Payload::LoginAccepted { session_id: 7 }),
        r#"{"LoginAccepted":{"session_id":7}}"#
    );
    assert!(round_trip(&payloads[4]).contains(r#""bid_price":-2"#));
}

#[test]
fn rejected_round_trips_and_auth_serializes_without_its_secret() {
    use tickwire::wire::{KeyId, RejectReason, Secret};
    for code in [1u8, 2, 3, 0, 200] {
        let p = Payload::Rejected {
            reason: RejectReason::from_code(code),
        };
        let json = round_trip(&p);
        assert_eq!(json, format!(r#"{{"Rejected":{{"reason":{code}}}}}"#));
        assert_eq!(serde_json::from_str::<Payload>(&json).unwrap(), p);
    }
    let auth = Payload::auth(&KeyId::new("ab").unwrap(), Secret::new([0xEE; 32]));
    let json = serde_json::to_string(&auth).unwrap();
    assert_eq!(
        json,
        r#"{"Auth":{"key_id":[97,98,0,0,0,0,0,0,0,0,0,0,0,0,0,0]}}"#
    );
    // What was not written cannot be read back: no made-up secret.
    assert!(serde_json::from_str::<Payload>(&json).is_err());
    // A secret given explicitly (as 32 numbers) is read.
    let given = r#"{"Auth":{"key_id":[97,98,0,0,0,0,0,0,0,0,0,0,0,0,0,0],"secret":[238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238,238]}}"#;
    assert_eq!(serde_json::from_str::<Payload>(given).unwrap(), auth);
}

#[test]
fn events_and_counters_round_trip() {
    let gap = Gap { first: 3, last: 9 };
    assert_eq!(round_trip(&gap), r#"{"first":3,"last":9}"#);
    let discard = Discard {
        bytes: 5,
        reason: DiscardReason::BadChecksum,
    };
    let back: Discard = serde_json::from_str(&round_trip(&discard)).unwrap();
    assert_eq!(back, discard);
    round_trip(&ParseStats::default());
    let mut stats = ServerStats::default();
    stats.frames_published = 42;
    assert!(round_trip(&stats).contains(r#""frames_published":42"#));
    for reason in CloseReason::ALL {
        let back: CloseReason = serde_json::from_str(&round_trip(&reason)).unwrap();
        assert_eq!(back, reason);
    }
    for lost in [
        Lost::Closed,
        Lost::Error(IoFailure::Other),
        Lost::EndOfSession,
        Lost::Resync,
    ] {
        let back: Lost = serde_json::from_str(&round_trip(&lost)).unwrap();
        assert_eq!(back, lost);
    }
    let back: ClientState = serde_json::from_str(&round_trip(&ClientState::LoggedIn)).unwrap();
    assert_eq!(back, ClientState::LoggedIn);
}

#[test]
fn configs_round_trip_and_can_be_written_by_hand() {
    let mut server = ServerConfig {
        mio: LoopOptions {
            threads: 2,
            ..LoopOptions::default()
        },
        ..ServerConfig::default()
    };
    server.core.session.slow_policy = SlowPolicy::Disconnect;
    server.core.session.heartbeat_interval = Duration::from_millis(250);
    let json = round_trip(&server);
    let back: ServerConfig = serde_json::from_str(&json).unwrap();
    assert_eq!(back.mio.threads, 2);
    assert_eq!(back.core, server.core);
    assert_eq!(back.listen, server.listen);
    // The core's rules nest as the types do; the mio loops' settings may
    // be left out (a config written for the tokio server reads as is).
    assert!(
        json.contains(r#""core":{"session":{"session_id":0,"#),
        "{json}"
    );
    let mut tree: serde_json::Value = serde_json::from_str(&json).unwrap();
    tree.as_object_mut().unwrap().remove("mio");
    let back: ServerConfig = serde_json::from_value(tree).unwrap();
    assert_eq!(back.mio, LoopOptions::default());
    let client = ClientConfig::new("127.0.0.1:9");
    let json = round_trip(&client);
    // A server address reads as it did when it was a `SocketAddr`; a host
    // name is a string the same way.
    assert!(json.contains(r#""server":"127.0.0.1:9""#), "{json}");
    let named = ClientConfig::with_servers(&["localhost:9", "127.0.0.1:10"]).unwrap();
    let back: ClientConfig = serde_json::from_str(&round_trip(&named)).unwrap();
    assert_eq!(back.server, named.server);
    assert_eq!(back.fallbacks, named.fallbacks);
    let backoff = Backoff::new(Duration::from_millis(5), Duration::from_secs(1));
    let back: Backoff = serde_json::from_str(&round_trip(&backoff)).unwrap();
    assert_eq!(back, backoff);
}
