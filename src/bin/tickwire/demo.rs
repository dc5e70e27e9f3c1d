//! `tickwire demo`: an in-process server publishing the synthetic feed at
//! the design rate, several subscribing clients (one optionally made to fall
//! behind), live progress, and a summary.

use std::io::{self, IsTerminal, Write};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tickwire::net::{unix_nanos, ClientConfig, ClientSet, Server, ServerConfig};
use tickwire::session::{ClientEvent, CloseReason};

use crate::measure;

/// Live counters of one client, shared with the status line.
#[derive(Default)]
struct Progress {
    frames: AtomicU64,
    bytes: AtomicU64,
    missing: AtomicU64,
    discarded: AtomicU64,
    /// Latency percentiles of the last second, in nanoseconds.
    p50_ns: AtomicU64,
    p99_ns: AtomicU64,
}

struct Outcome {
    received: u64,
    missing: u64,
    gaps: u64,
    discarded: u64,
    reconnects: u64,
    latency: Histogram<u64>,
}

/// One client's measurements while its thread runs.
struct Member {
    slow: bool,
    progress: Arc<Progress>,
    latency: Histogram<u64>,
    /// The last second's latencies (for the status line).
    interval: Histogram<u64>,
    received: u64,
    /// The current run of frames with one publish timestamp (one batch):
    /// (timestamp, latency ns, frames).
    run: (u64, u64, u64),
    /// This poll's counts, shared once per poll: frames, bytes, missing, discarded.
    poll: [u64; 4],
}

/// Runs the clients `slow` describes (one entry each: whether it is the
/// slow one) on this thread, all in one [`ClientSet`], until `stop`.
///
/// Per-frame cost is kept off the clients' path: the publisher stamps a
/// whole batch at once, so a run of frames with one timestamp is one
/// latency, taken with one clock read when its first frame is parsed and
/// recorded once with its count; counters are shared once per poll.
fn run_clients(
    addr: std::net::SocketAddr,
    members: Vec<(bool, Arc<Progress>)>,
    stop: Arc<AtomicBool>,
) -> io::Result<Vec<Outcome>> {
    let mut set = ClientSet::new()?;
    let mut members: Vec<Member> = members
        .into_iter()
        .map(|(slow, progress)| {
            let mut config = ClientConfig::new(addr);
            config.from = 1;
            set.add(config);
            Member {
                slow,
                progress,
                latency: measure::histogram(),
                interval: measure::histogram(),
                received: 0,
                run: (0, 0, 0),
                poll: [0; 4],
            }
        })
        .collect();
    let mut interval_start = Instant::now();
    while !stop.load(Ordering::Relaxed) && !set.all_stopped() {
        set.poll(Some(Duration::from_millis(5)), |id, event| {
            let Some(c) = members.get_mut(id) else {
                return;
            };
            match event {
                ClientEvent::Frame(m) if m.is_data() => {
                    c.received += 1;
                    c.poll[0] += 1;
                    c.poll[1] += m.len() as u64;
                    if m.timestamp() == c.run.0 && c.run.2 > 0 {
                        c.run.2 += 1;
                    } else {
                        record(&mut c.latency, &mut c.interval, c.run);
                        let ns = unix_nanos().saturating_sub(m.timestamp()).max(100);
                        c.run = (m.timestamp(), ns, 1);
                    }
                    if c.slow && c.received.is_multiple_of(100) {
                        // A consumer that cannot keep up: at most ~100K frames/s
                        // (it has a thread of its own, so it delays no other).
                        thread::sleep(Duration::from_millis(1));
                    }
                }
                ClientEvent::Gap(g) => c.poll[2] += g.len(),
                ClientEvent::Discarded(d) => c.poll[3] += d.bytes,
                _ => {}
            }
        })?;
        let second = interval_start.elapsed() >= Duration::from_secs(1);
        for c in &mut members {
            record(&mut c.latency, &mut c.interval, c.run);
            c.run.2 = 0;
            if c.poll != [0; 4] {
                let p = &c.progress;
                p.frames.fetch_add(c.poll[0], Ordering::Relaxed);
                p.bytes.fetch_add(c.poll[1], Ordering::Relaxed);
                p.missing.fetch_add(c.poll[2], Ordering::Relaxed);
                p.discarded.fetch_add(c.poll[3], Ordering::Relaxed);
                c.poll = [0; 4];
            }
            if second {
                let p = &c.progress;
                p.p50_ns
                    .store(c.interval.value_at_quantile(0.5), Ordering::Relaxed);
                p.p99_ns
                    .store(c.interval.value_at_quantile(0.99), Ordering::Relaxed);
                c.interval.reset();
            }
        }
        if second {
            interval_start = Instant::now();
        }
    }
    Ok(members
        .into_iter()
        .enumerate()
        .map(|(id, c)| {
            let stats = set.stats(id).unwrap_or_default();
            Outcome {
                received: c.received,
                missing: stats.missing,
                gaps: stats.gaps,
                discarded: stats.parse.discarded_bytes,
                reconnects: stats.reconnects,
                latency: c.latency,
            }
        })
        .collect())
}

/// A thread running some clients: their outcomes, in the order given.
type ClientThread = thread::JoinHandle<io::Result<Vec<Outcome>>>;

/// The `--json` summary (serde): the run, each client, the server's counters.
#[derive(serde::Serialize)]
struct Summary {
    rate: u64,
    duration_s: f64,
    elapsed_s: f64,
    published: u64,
    published_per_s: f64,
    lossless: bool,
    slow_marks: u64,
    skipped_batches: u64,
    slow_disconnects: u64,
    /// Threads the clients ran on (the slow client's included).
    client_threads: usize,
    clients: Vec<ClientRow>,
    /// The median and worst of the clients not made slow.
    kept_up: Spread,
    server: tickwire::net::ServerStats,
}

/// One client of the summary.
#[derive(serde::Serialize)]
struct ClientRow {
    client: usize,
    slow: bool,
    received: u64,
    received_per_s: f64,
    lost: u64,
    gaps: u64,
    discarded_bytes: u64,
    reconnects: u64,
    latency_us: Latency,
}

/// The median and the worst of the clients that were not made slow, each
/// column on its own (so the worst row may mix clients).
#[derive(serde::Serialize)]
struct Spread {
    /// Clients it is over.
    clients: usize,
    median: Figures,
    worst: Figures,
}

/// One row of [`Spread`].
#[derive(serde::Serialize, Clone, Copy)]
struct Figures {
    received: u64,
    lost: u64,
    gaps: u64,
    discarded_bytes: u64,
    latency_us: Latency,
}

/// The median of `values` (the upper one of an even count); 0 for none.
fn median<T: Copy + PartialOrd + Default>(mut values: Vec<T>) -> T {
    values.sort_by(|a, b| a.partial_cmp(b).unwrap_or(std::cmp::Ordering::Equal));
    values.get(values.len() / 2).copied().unwrap_or_default()
}

/// The median and worst rows of `rows`.
fn spread(rows: &[Figures]) -> Spread {
    let col = |f: fn(&Figures) -> f64| rows.iter().map(f).collect::<Vec<f64>>();
    let ucol = |f: fn(&Figures) -> u64| rows.iter().map(f).collect::<Vec<u64>>();
    let max = |v: Vec<f64>| v.into_iter().fold(0.0, f64::max);
    let umax = |v: Vec<u64>| v.into_iter().max().unwrap_or(0);
    Spread {
        clients: rows.len(),
        median: Figures {
            received: median(ucol(|r| r.received)),
            lost: median(ucol(|r| r.lost)),
            gaps: median(ucol(|r| r.gaps)),
            discarded_bytes: median(ucol(|r| r.discarded_bytes)),
            latency_us: Latency {
                p50: median(col(|r| r.latency_us.p50)),
                p99: median(col(|r| r.latency_us.p99)),
                p999: median(col(|r| r.latency_us.p999)),
                max: median(col(|r| r.latency_us.max)),
            },
        },
        worst: Figures {
            received: rows.iter().map(|r| r.received).min().unwrap_or(0),
            lost: umax(ucol(|r| r.lost)),
            gaps: umax(ucol(|r| r.gaps)),
            discarded_bytes: umax(ucol(|r| r.discarded_bytes)),
            latency_us: Latency {
                p50: max(col(|r| r.latency_us.p50)),
                p99: max(col(|r| r.latency_us.p99)),
                p999: max(col(|r| r.latency_us.p999)),
                max: max(col(|r| r.latency_us.max)),
            },
        },
    }
}

/// Delivery latency percentiles, µs.
#[derive(serde::Serialize, Clone, Copy)]
struct Latency {
    p50: f64,
    p99: f64,
    p999: f64,
    max: f64,
}

/// `value` to `decimals` decimals (non-finite values print as JSON null).
fn round(value: f64, decimals: i32) -> f64 {
    let scale = 10f64.powi(decimals);
    (value * scale).round() / scale
}

/// Records a run of `run.2` frames of one latency `run.1`.
fn record(latency: &mut Histogram<u64>, interval: &mut Histogram<u64>, run: (u64, u64, u64)) {
    if run.2 > 0 {
        let _ = latency.record_n(run.1, run.2);
        let _ = interval.record_n(run.1, run.2);
    }
}

/// The live status line: labelled figures, at most 80 columns for any
/// values (large figures take SI suffixes). Rates are per second over the
/// last second; `lost` and `slow` are totals so far, printed as counts.
pub(crate) fn status_line(
    elapsed_s: f64,
    published_per_s: f64,
    frames_per_s: f64,
    mb_per_s: f64,
    p99_us: f64,
    missing: u64,
    slow_marks: u64,
) -> String {
    let line = format!(
        "{:>6}s pub {:>6}/s recv {:>6}/s {:>6}MB/s p99 {:>6}us lost {} slow {}",
        si(elapsed_s),
        si(published_per_s),
        si(frames_per_s),
        si(mb_per_s),
        si(p99_us),
        count(missing),
        count(slow_marks),
    );
    line.chars().take(80).collect()
}

/// A count in at most 6 characters: `0`, `999`, then as [`si`] (`12.3K`).
pub(crate) fn count(value: u64) -> String {
    if value < 1000 {
        value.to_string()
    } else {
        si(value as f64)
    }
}

/// A non-negative figure in at most 6 characters: `999.9`, `12.3K`, `4.6M`,
/// `7.9G`, `1.0T`… (non-finite or negative values print as `-`).
pub(crate) fn si(value: f64) -> String {
    if !value.is_finite() || value < 0.0 {
        return "-".to_string();
    }
    let mut v = value;
    for suffix in ["", "K", "M", "G", "T", "P", "E", "Z"] {
        if v < 999.95 {
            return format!("{v:.1}{suffix}");
        }
        v /= 1000.0;
    }
    "huge".to_string()
}

/// Whether every client that was not made slow received every frame.
pub(crate) fn lossless(outcomes: &[(bool, u64, u64)], published: u64) -> bool {
    outcomes
        .iter()
        .filter(|(slow, _, _)| !slow)
        .all(|&(_, received, missing)| received == published && missing == 0)
}

pub(crate) fn run(
    rate: u64,
    clients: usize,
    duration: Duration,
    client_threads: usize,
    slow_client: bool,
    json: bool,
) -> io::Result<()> {
    let live = io::stderr().is_terminal() && !json && crate::logging::info_enabled();
    let server = Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().map_err(io::Error::other)?,
        ..ServerConfig::default()
    })?
    .spawn()?;
    let addr = server.local_addr();
    let stop_clients = Arc::new(AtomicBool::new(false));
    let progress: Vec<Arc<Progress>> = (0..clients)
        .map(|_| Arc::new(Progress::default()))
        .collect();
    // The clients, spread round-robin over `client_threads` threads (each
    // a ClientSet); the slow client, whose callback sleeps, on a thread of
    // its own.
    let client_threads = client_threads.clamp(1, clients);
    let slow_index = slow_client.then(|| clients - 1);
    let fast_threads = client_threads
        .min(clients - usize::from(slow_client))
        .max(1);
    let mut groups: Vec<Vec<usize>> = vec![Vec::new(); fast_threads];
    for i in (0..clients).filter(|&i| Some(i) != slow_index) {
        if let Some(group) = groups.get_mut(i % fast_threads) {
            group.push(i);
        }
    }
    groups.extend(slow_index.map(|i| vec![i]));
    groups.retain(|g| !g.is_empty());
    let threads_used = groups.len();
    let handles: Vec<(Vec<usize>, ClientThread)> = groups
        .into_iter()
        .map(|group| {
            let members = group
                .iter()
                .filter_map(|&i| Some((Some(i) == slow_index, Arc::clone(progress.get(i)?))))
                .collect();
            let stop = Arc::clone(&stop_clients);
            (
                group,
                thread::spawn(move || run_clients(addr, members, stop)),
            )
        })
        .collect();
    // Every client logged in before the feed starts: all of them want it from sequence 1.
    let deadline = Instant::now() + Duration::from_secs(5);
    while server.stats().clients < clients as u64 && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(5));
    }
    if !json {
        crate::logging::info!(
            "server on {addr}, {clients} clients on {threads_used} thread{}{}, {rate} msg/s for {} s",
            if threads_used == 1 { "" } else { "s" },
            if slow_client {
                " (the last one slow)"
            } else {
                ""
            },
            duration.as_secs_f64()
        );
    }
    let stop_feed = Arc::new(AtomicBool::new(false));
    let publisher = measure::paced_publisher(&server, rate, 1, Arc::clone(&stop_feed));
    let started = Instant::now();
    let end = crate::deadline(Some(duration));
    let end = end.unwrap_or(started);
    let mut last = (0u64, 0u64, Instant::now(), 0u64);
    while Instant::now() < end {
        thread::sleep(
            Duration::from_millis(200).min(end.saturating_duration_since(Instant::now())),
        );
        if live && last.2.elapsed() >= Duration::from_secs(1) {
            let frames: u64 = progress
                .iter()
                .map(|p| p.frames.load(Ordering::Relaxed))
                .sum();
            let bytes: u64 = progress
                .iter()
                .map(|p| p.bytes.load(Ordering::Relaxed))
                .sum();
            let missing: u64 = progress
                .iter()
                .map(|p| p.missing.load(Ordering::Relaxed))
                .sum();
            let discarded: u64 = progress
                .iter()
                .map(|p| p.discarded.load(Ordering::Relaxed))
                .sum();
            let secs = last.2.elapsed().as_secs_f64();
            let stats = server.stats();
            let p99 = progress
                .iter()
                .map(|p| p.p99_ns.load(Ordering::Relaxed))
                .max()
                .unwrap_or(0);
            let _ = discarded; // in the summary
            eprint!(
                "\r\x1b[2K{}",
                status_line(
                    started.elapsed().as_secs_f64(),
                    (stats.frames_published - last.3) as f64 / secs,
                    (frames - last.0) as f64 / secs,
                    (bytes - last.1) as f64 / secs / 1e6,
                    p99 as f64 / 1e3,
                    missing,
                    stats.slow_marks,
                )
            );
            let _ = io::stderr().flush();
            last = (frames, bytes, Instant::now(), stats.frames_published);
        }
    }
    stop_feed.store(true, Ordering::Relaxed);
    // Rates divide by the time the feed ran, not the time asked for.
    let publish_s = started.elapsed().as_secs_f64();
    let published = publisher
        .join()
        .map_err(|_| io::Error::other("publisher panicked"))?;
    if live {
        eprintln!();
    }
    // Let clients that keep up drain what is in flight (bounded).
    let drain_until = Instant::now() + Duration::from_secs(3);
    while Instant::now() < drain_until
        && progress.iter().enumerate().any(|(i, p)| {
            let slow = slow_client && i + 1 == clients;
            !slow && p.frames.load(Ordering::Relaxed) < published
        })
    {
        thread::sleep(Duration::from_millis(10));
    }
    stop_clients.store(true, Ordering::Relaxed);
    let mut outcomes: Vec<Option<Outcome>> = (0..clients).map(|_| None).collect();
    for (group, handle) in handles {
        let results = handle
            .join()
            .map_err(|_| io::Error::other("client panicked"))??;
        for (i, outcome) in group.into_iter().zip(results) {
            if let Some(slot) = outcomes.get_mut(i) {
                *slot = Some(outcome);
            }
        }
    }
    let outcomes: Vec<Outcome> = outcomes
        .into_iter()
        .collect::<Option<_>>()
        .ok_or_else(|| io::Error::other("a client's outcome is missing"))?;
    let stats = server.shutdown()?;
    let rate_of = |n: u64| {
        if publish_s > 0.0 {
            n as f64 / publish_s
        } else {
            0.0
        }
    };
    let kept_up = lossless(
        &outcomes
            .iter()
            .enumerate()
            .map(|(i, o)| (slow_client && i + 1 == clients, o.received, o.missing))
            .collect::<Vec<_>>(),
        published,
    );

    let us = |h: &Histogram<u64>, q: f64| h.value_at_quantile(q) as f64 / 1e3;
    let figures = |o: &Outcome| Figures {
        received: o.received,
        lost: published.saturating_sub(o.received),
        gaps: o.gaps,
        discarded_bytes: o.discarded,
        latency_us: Latency {
            p50: round(us(&o.latency, 0.5), 1),
            p99: round(us(&o.latency, 0.99), 1),
            p999: round(us(&o.latency, 0.999), 1),
            max: round(o.latency.max() as f64 / 1e3, 1),
        },
    };
    let kept_up_rows: Vec<Figures> = outcomes
        .iter()
        .enumerate()
        .filter(|&(i, _)| !(slow_client && i + 1 == clients))
        .map(|(_, o)| figures(o))
        .collect();
    let kept_up_spread = spread(&kept_up_rows);
    if json {
        let summary = Summary {
            rate,
            duration_s: duration.as_secs_f64(),
            elapsed_s: round(publish_s, 3),
            published,
            published_per_s: round(rate_of(published), 1),
            lossless: kept_up,
            slow_marks: stats.slow_marks,
            skipped_batches: stats.skipped_batches,
            slow_disconnects: stats.closed_for(CloseReason::Slow),
            client_threads: threads_used,
            clients: outcomes
                .iter()
                .enumerate()
                .map(|(i, o)| ClientRow {
                    client: i + 1,
                    slow: slow_client && i + 1 == clients,
                    received: o.received,
                    received_per_s: round(rate_of(o.received), 1),
                    lost: published.saturating_sub(o.received),
                    gaps: o.gaps,
                    discarded_bytes: o.discarded,
                    reconnects: o.reconnects,
                    latency_us: Latency {
                        p50: round(us(&o.latency, 0.5), 1),
                        p99: round(us(&o.latency, 0.99), 1),
                        p999: round(us(&o.latency, 0.999), 1),
                        max: round(o.latency.max() as f64 / 1e3, 1),
                    },
                })
                .collect(),
            kept_up: kept_up_spread,
            server: stats,
        };
        println!(
            "{}",
            serde_json::to_string(&summary).map_err(io::Error::other)?
        );
    } else {
        println!(
            "published {published} frames in {publish_s:.1} s ({:.0} msg/s); slow marks {}, batches skipped for slow clients {}",
            rate_of(published),
            stats.slow_marks,
            stats.skipped_batches
        );
        println!(
            "{:<8} {:<5} {:>10} {:>8} {:>6} {:>10} {:>8} {:>8} {:>9} {:>9}",
            "client",
            "slow",
            "received",
            "lost",
            "gaps",
            "discarded",
            "p50 µs",
            "p99 µs",
            "p99.9 µs",
            "max µs"
        );
        for (i, o) in outcomes.iter().enumerate() {
            println!(
                "{:<8} {:<5} {:>10} {:>8} {:>6} {:>10} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
                i + 1,
                if slow_client && i + 1 == clients {
                    "yes"
                } else {
                    "no"
                },
                o.received,
                published.saturating_sub(o.received),
                o.gaps,
                o.discarded,
                us(&o.latency, 0.5),
                us(&o.latency, 0.99),
                us(&o.latency, 0.999),
                o.latency.max() as f64 / 1e3
            );
        }
        for (label, f) in [
            ("median", &kept_up_spread.median),
            ("worst", &kept_up_spread.worst),
        ] {
            println!(
                "{:<8} {:<5} {:>10} {:>8} {:>6} {:>10} {:>8.1} {:>8.1} {:>9.1} {:>9.1}",
                label,
                "",
                f.received,
                f.lost,
                f.gaps,
                f.discarded_bytes,
                f.latency_us.p50,
                f.latency_us.p99,
                f.latency_us.p999,
                f.latency_us.max
            );
        }
        println!(
            "(median and worst: of the {} clients not made slow, each column on its own)",
            kept_up_spread.clients
        );
        println!(
            "{}",
            if kept_up {
                "every client that kept up received every frame, in order, exactly once"
            } else {
                "WARNING: a client that was not made slow lost frames"
            }
        );
        if slow_client {
            if let Some(o) = outcomes.last() {
                println!(
                    "the slow client was skipped while behind: it saw {} gaps ({} frames missing) and never slowed the others",
                    o.gaps, o.missing
                );
            }
        }
    }
    if kept_up {
        Ok(())
    } else {
        Err(io::Error::other(
            "a client that was not made slow lost frames (see the summary)",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_status_line_fits_80_columns_with_labels() {
        for (published, fps, mbps, p99, missing) in [
            (0, 0.0, 0.0, 0.0, 0),
            (123_456_789, 2.5e6, 87.5, 45.3, 0),
            (u64::MAX, f64::MAX, 1e300, 1e12, u64::MAX),
        ] {
            let line = status_line(1e12, published as f64, fps, mbps, p99, missing, u64::MAX);
            assert!(
                line.chars().count() <= 80,
                "{} columns: {line}",
                line.chars().count()
            );
            for label in ["pub", "recv", "MB/s", "p99", "lost", "slow"] {
                assert!(line.contains(label), "{label} missing: {line}");
            }
        }
        assert_eq!(si(123_456_789.0), "123.5M");
        assert_eq!(si(999.0), "999.0");
        assert_eq!(si(f64::NAN), "-");
        // Counts are counts (issue 23: `lost 0.0`), rates say per second.
        let line = status_line(3.0, 20_000.0, 40_000.0, 1.8, 45.0, 0, 7);
        assert!(line.ends_with("lost 0 slow 7"), "{line}");
        assert!(line.contains("pub  20.0K/s recv  40.0K/s"), "{line}");
        assert_eq!(count(999), "999");
        assert_eq!(count(12_345), "12.3K");
    }

    #[test]
    fn a_loss_by_a_client_that_was_not_slow_fails_the_demo() {
        assert!(lossless(&[(false, 10, 0), (true, 3, 7)], 10));
        assert!(!lossless(&[(false, 10, 0), (false, 9, 1)], 10));
        assert!(!lossless(&[(false, 10, 2)], 10));
    }
}
