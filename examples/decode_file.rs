//! Decode a recording (from `tickwire gen` or `tickwire record`) and count
//! what is in it, straight out of the file buffer.
//!
//! ```sh
//! cargo run --release --features cli -- gen --count 100000 --corrupt 0.01 -o feed.twr
//! cargo run --release --example decode_file -- feed.twr
//! ```
use std::fs::File;

use tickwire::io::FrameReader;
use tickwire::parse::Event;
use tickwire::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let path = std::env::args()
        .nth(1)
        .ok_or("usage: decode_file RECORDING")?;
    let mut reader = FrameReader::new(File::open(&path)?);
    let (mut quotes, mut trades, mut notional) = (0u64, 0u64, 0i128);
    while let Some(event) = reader.next_event()? {
        match event {
            Event::Frame(Message::Quote(_)) => quotes += 1,
            Event::Frame(Message::Trade(t)) => {
                trades += 1;
                notional += i128::from(t.price()) * i128::from(t.size());
            }
            Event::Gap(gap) => println!("gap: {}..={} missing", gap.first, gap.last),
            Event::Discarded(d) => println!("discarded {} bytes ({})", d.bytes, d.reason),
            _ => {}
        }
    }
    let stats = reader.stats();
    println!(
        "{path}: {quotes} quotes, {trades} trades (notional {:.2}), {} frames, {} bytes discarded",
        notional as f64 / 1e4,
        stats.frames(),
        stats.discarded_bytes
    );
    Ok(())
}
