//! Publish a synthetic feed from a thread of your own through the reference
//! server, printing its counters every second.
//!
//! ```sh
//! cargo run --release --features net,synth --example publish
//! # then, in another terminal:
//! cargo run --release --features cli -- subscribe --json | head
//! ```
use std::time::{Duration, Instant};

use tickwire::net::{unix_nanos, Server, ServerConfig};
use tickwire::synth::Feed;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let server = Server::bind(ServerConfig::default())?.spawn()?; // 127.0.0.1:7878
    println!("publishing on {} for 30 s", server.local_addr());
    let publisher = server.publisher();
    let mut feed = Feed::new(1, 100);
    let started = Instant::now();
    let mut next_report = started + Duration::from_secs(1);
    while started.elapsed() < Duration::from_secs(30) {
        // 1,000 messages every millisecond: 1M msg/s at most.
        let now = unix_nanos();
        let batch = (0..1000)
            .map(|_| feed.next_payload())
            .filter(|p| p.msg_type().is_data())
            .map(|p| (now, p))
            .collect();
        publisher.publish(batch)?; // blocks if the server falls behind
        std::thread::sleep(Duration::from_millis(1));
        if Instant::now() >= next_report {
            let s = server.stats();
            println!(
                "{} clients, {} published, {} sent",
                s.clients, s.frames_published, s.frames_sent
            );
            next_report += Duration::from_secs(1);
        }
    }
    let stats = server.shutdown()?; // EndOfSession to every client
    println!("done: {stats:?}");
    Ok(())
}
