//! Encode arbitrary messages back to back, decode the stream: the same
//! messages come back, nothing is discarded.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::parse::{Event, SliceParser};
use tickwire::{encode, Payload};

fuzz_target!(|messages: Vec<(Payload, u64, u64)>| {
    let mut wire = vec![0u8; messages.len() * 44];
    let mut at = 0;
    for (payload, sequence, timestamp) in &messages {
        at +=
            encode(payload, *sequence, *timestamp, &mut wire[at..]).expect("room for every frame");
    }
    let mut decoded = Vec::new();
    for event in SliceParser::new(&wire[..at]) {
        match event {
            Event::Frame(m) | Event::Duplicate(m) => {
                decoded.push((Payload::from(m), m.sequence(), m.timestamp()))
            }
            Event::Discarded(d) => panic!("discarded {d:?} in a clean stream"),
            Event::Gap(_) | Event::NewSession { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(decoded, messages);
});
