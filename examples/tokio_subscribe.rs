//! Subscribe from a tokio service: the async client as a `Stream` of owned
//! events, resuming from a sequence, with every gap and state change
//! reported; stops after 10 s (or Ctrl-C kills it).
//!
//! ```sh
//! cargo run --release --features cli -- serve &
//! cargo run --release --features tokio --example tokio_subscribe -- 1
//! ```
use std::time::Duration;

use futures_util::StreamExt;
use tickwire::net::ClientConfig;
use tickwire::tokio::{Client, ClientEvent};
use tickwire::Message;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let from = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0);
    let mut config = ClientConfig::new("127.0.0.1:7878");
    config.from = from;
    let mut client = Client::new(config);
    let mut quotes = 0u64;
    let stop = tokio::time::sleep(Duration::from_secs(10));
    tokio::pin!(stop);
    loop {
        // `next()` is cancel-safe: losing the race to the timer loses nothing.
        let event = tokio::select! {
            () = &mut stop => break,
            event = client.next() => event,
        };
        let Some(event) = event else { break };
        match event {
            ClientEvent::Frame(frame) => {
                // Owned and cheap to clone: hand `frame` to another task as it is.
                if let Message::Quote(q) = frame.message() {
                    quotes += 1;
                    if quotes.is_multiple_of(100_000) {
                        println!(
                            "{quotes} quotes, last #{} {} / {}",
                            q.sequence(),
                            q.bid_price(),
                            q.ask_price()
                        );
                    }
                }
            }
            ClientEvent::Gap(gap) => {
                eprintln!("gap {}..={} ({} lost)", gap.first, gap.last, gap.len())
            }
            ClientEvent::State { from, to } => eprintln!("{from:?} -> {to:?}"),
            ClientEvent::Lost(why) => eprintln!("lost: {why}"),
            ClientEvent::GaveUp { attempts, last } => eprintln!("gave up after {attempts}: {last}"),
            _ => {}
        }
    }
    let stats = client.stats();
    println!(
        "{quotes} quotes; {} gaps, {} connects",
        stats.gaps, stats.connects
    );
    Ok(())
}
