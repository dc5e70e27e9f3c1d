//! Arbitrary bytes: the parser never panics, every byte is either in a
//! delivered frame or in a reported discard, and single-frame decoding agrees.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tickwire::parse::{Event, SliceParser};
use tickwire::Message;

fuzz_target!(|data: &[u8]| {
    let mut accounted = 0u64;
    let mut parser = SliceParser::new(data);
    for event in parser.by_ref() {
        match event {
            Event::Frame(m) | Event::Duplicate(m) => {
                accounted += m.len() as u64;
                // A delivered frame decodes on its own to the same frame.
                let (again, rest) = Message::decode(m.as_bytes()).expect("delivered frame decodes");
                assert!(rest.is_empty());
                assert_eq!(again, m);
            }
            Event::Discarded(d) => {
                assert!(d.bytes > 0);
                accounted += d.bytes;
            }
            _ => {}
        }
    }
    assert_eq!(accounted, data.len() as u64);
    let stats = parser.stats();
    assert_eq!(stats.frame_bytes + stats.discarded_bytes, data.len() as u64);
    let _ = Message::decode(data);
});
