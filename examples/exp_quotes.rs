//! experiment
use std::hint::black_box;
use std::time::Instant;
use tickwire::parse::{Event, SliceParser};
use tickwire::{Payload, Sequencer, encode::QuoteFields};
fn main() {
    let mut buf = vec![0u8; 64 << 20];
    let mut seq = Sequencer::new();
    let mut n = 0;
    while n + 44 <= buf.len() {
        n += seq.encode(&Payload::Quote(QuoteFields::default()), 1, &mut buf[n..]).unwrap();
    }
    for _ in 0..5 {
        let t = Instant::now();
        let mut frames = 0u64;
        for e in SliceParser::new(&buf[..n]) { if let Event::Frame(_) = e { frames += 1; } }
        let dt = t.elapsed().as_secs_f64();
        println!("quotes only: {:.1} M/s", black_box(frames) as f64 / dt / 1e6);
    }
}
