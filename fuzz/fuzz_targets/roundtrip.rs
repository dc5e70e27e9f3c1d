//! Encode arbitrary messages back to back, decode the stream: the same
//! messages come back, nothing is discarded. Auth frames: well-formed
//! exactly when their sequence is 0 and their key id checks, and their
//! `Debug` and JSON line never hold the secret's bytes.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::parse::{Event, SliceParser};
use tickwire::{encode, Payload};

fuzz_target!(|messages: Vec<(Payload, u64, u64)>| {
    let mut wire = vec![0u8; messages.len() * tickwire::wire::MAX_FRAME_LEN];
    let mut at = 0;
    for (payload, sequence, timestamp) in &messages {
        at +=
            encode(payload, *sequence, *timestamp, &mut wire[at..]).expect("room for every frame");
    }
    let mut decoded = Vec::new();
    for event in SliceParser::new(&wire[..at]) {
        match event {
            Event::Frame(m) | Event::Duplicate(m) => {
                if let tickwire::Message::Auth(a) = m {
                    let key_id = tickwire::wire::KeyId::from_wire(&a.key_id_bytes());
                    assert_eq!(a.is_well_formed(), a.sequence() == 0 && key_id.is_ok());
                    let secret = a.secret();
                    let hex: String = secret.expose().iter().map(|b| format!("{b:02x}")).collect();
                    let shown = format!("{m:?} {}", tickwire::json::JsonMessage(&m)).to_lowercase();
                    assert!(!shown.contains(&hex), "{shown}");
                    assert!(shown.is_ascii());
                }
                decoded.push((Payload::from(m), m.sequence(), m.timestamp()))
            }
            Event::Discarded(d) => panic!("discarded {d:?} in a clean stream"),
            Event::Gap(_) | Event::NewSession { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(decoded, messages);
});
