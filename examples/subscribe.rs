//! Subscribe with resume: replay from a sequence, survive disconnects, and
//! report every gap, duplicate and state change.
//!
//! ```sh
//! cargo run --release --features cli -- serve &
//! cargo run --release --features net --example subscribe -- 1
//! ```
use std::ops::ControlFlow;
use tickwire::net::{Client, ClientConfig};
use tickwire::session::ClientEvent;
use tickwire::Message;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let from = std::env::args()
        .nth(1)
        .map(|s| s.parse())
        .transpose()?
        .unwrap_or(0);
    let mut config = ClientConfig::new("127.0.0.1:7878");
    config.from = from;
    let mut client = Client::new(config)?;
    let mut quotes = 0u64;
    client.run(|event| {
        match event {
            ClientEvent::Frame(Message::Quote(q)) => {
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
            ClientEvent::State { from, to } => println!("{from:?} -> {to:?}"),
            ClientEvent::LoggedIn {
                session_id,
                sequence,
            } => {
                println!("logged in to session {session_id:#x} from {sequence}");
            }
            ClientEvent::Gap(gap) => println!("gap {}..={}", gap.first, gap.last),
            ClientEvent::Lost(why) => println!("lost: {why}"),
            ClientEvent::Retrying { attempt, delay } => println!("retry {attempt} in {delay:?}"),
            _ => {}
        }
        ControlFlow::Continue(())
    })?;
    Ok(())
}
