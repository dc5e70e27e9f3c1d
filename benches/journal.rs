//! The journal (issue 24), every figure against its baseline in the same run:
//!
//! - append: publishing batches of 1, 64 and 4,096 frames (encode, check,
//!   push into the in-memory `Retention`) with and without
//!   `Journal::append` in `FsyncMode::Never`: the ratio, and what one
//!   append costs;
//! - always: `FsyncMode::Always` with group commit, 1 and 8 publishing
//!   threads (each waits for its batch to be durable, not under the publish
//!   lock): frames/s, latency, batches per `fdatasync`, against the disk's
//!   own `fdatasync` rate measured first;
//! - replay: the same frames to one loopback TCP receiver from memory (the
//!   retention's batches, `write`), from disk with `sendfile`
//!   (`JournalReader::next_range` + `send_range`), with a `pread` + `write`
//!   loop of the same segments, and with the checked `JournalReader::read`
//!   path (`pread`, every CRC, `write`); GB/s and the sender's CPU per GB;
//! - replay-server: a login from 1 replayed by the real mio server to one
//!   loopback client: from disk (a journal, a small retention: the
//!   verified regions go with `sendfile`), from memory (no journal, a
//!   retention holding everything), and a `pread` + `write` loop of the
//!   same segment files (no server); GB/s, and the CPU per GB of the
//!   server's event loop thread (of the bench thread for the loop);
//!   `TICKWIRE_BENCH_REPLAY_MB` (default 512);
//! - recovery: `Journal::open` of a large journal, cold (its pages dropped
//!   from the cache with `posix_fadvise`) and warm, with a torn tail, and
//!   the full check of the same journal (what recovery does not read);
//! - server: the mio server publishing batches of 1, 64 and 4,096 frames
//!   (`Publisher::publish`, one publishing thread, as fast as it goes,
//!   until the event loop has taken them all) with `ServerConfig::journal`
//!   in `FsyncMode::Never` (on Linux: the segment written in place, the
//!   publisher encoding into it, zeros written ahead by a thread), and
//!   written behind (`WriteMode::Behind`), against the same server without
//!   a journal; and the floors of a write-ahead
//!   journal: a bare `pwrite` of the batch, a `memcpy` of it into memory
//!   already writable, putting its pages into the page cache (zeros with
//!   `pwrite`, or `MADV_POPULATE_WRITE`), and numbering and encoding it in
//!   place into a segment mapped shared and populated writable ahead by a
//!   second thread (`MADV_POPULATE_WRITE`) against encoding it into a
//!   `Vec` (what the publisher without a journal does).
//!
//! - sustained (by name only: `-- =sustained`, several minutes): each case
//!   publishes `TICKWIRE_BENCH_SUSTAINED_GB` GB (default 3: past the
//!   kernel's dirty background threshold on the reference VM, so the
//!   journal is written back while it publishes), each after a `sync` and
//!   `TICKWIRE_BENCH_SUSTAINED_SETTLE` seconds (default 5): the server
//!   without a journal, with it (in place, `WriteMode::Direct` and `WriteMode::Behind`), and
//!   the floor of any journal that puts those bytes through the page
//!   cache (no journal, a second thread writing the same bytes beside it);
//!   and the disk's own sustained write rate, in frames/s;
//!   `TICKWIRE_BENCH_SUSTAINED_BATCHES` (default `64,4096`),
//!   `TICKWIRE_BENCH_SUSTAINED_ROUNDS` (default 3),
//!   `TICKWIRE_BENCH_SUSTAINED_CASES` (default `0,1,2,3,4`: 4 is `WriteMode::Behind`).
//!
//! `cargo bench --bench journal --features cli [-- append|always|replay|recovery|server|=sustained]`
//! (`TICKWIRE_BENCH_SERVER_SCALE=8`: the `server` section 8 times longer)
//! (a word runs every section whose name contains it: `server` runs
//! `replay-server` too; `=server` runs that section alone)
//!
//! Journals go to `TICKWIRE_BENCH_DIR` (default `target/journal-bench`)
//! and are deleted at the end of each case; the recovery journal is
//! `TICKWIRE_BENCH_RECOVERY_GB` GB (default 4: mind `df -h`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::indexing_slicing,
    clippy::panic,
    clippy::cast_possible_truncation,
    clippy::cast_precision_loss,
    clippy::cast_sign_loss
)]

use std::fs::{self, File};
use std::hint::black_box;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
#[cfg(target_os = "linux")]
use std::num::NonZeroU64;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;
use tickwire::journal::{
    check, send_range, FsyncMode, Journal, JournalConfig, JournalReader, WriteMode,
};
use tickwire::session::{Batch, Retention};
use tickwire::synth::Feed;
use tickwire::{Payload, Sequencer};

const ROUNDS: usize = 3;

/// Set: the process is the recovery section's writing child (the journal
/// directory), not the benchmark.
const RECOVERY_CHILD: &str = "TICKWIRE_BENCH_RECOVERY_CHILD";

/// The recovery section's child: a mio server publishing
/// `TICKWIRE_BENCH_RECOVERY_GB` GB into its journal, then an exit that
/// closes nothing (no destructor runs: the journal is left as a SIGKILL
/// leaves it, its segment's prepared zero tail included).
fn recovery_child(dir: &Path) -> ! {
    use tickwire::net::{JournalSettings, ServerConfig};
    let gb: u64 = std::env::var("TICKWIRE_BENCH_RECOVERY_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let mut journal = JournalSettings::new(dir);
    journal.config = never();
    let server = tickwire::net::Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        journal: Some(journal),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    let publisher = server.publisher();
    let msgs = messages(4096);
    let bytes: u64 = msgs.iter().map(|(_, p)| p.frame_len() as u64).sum();
    let mut total = 0u64;
    while total < gb * 1_000_000_000 {
        publisher.publish(msgs.clone()).unwrap();
        total += bytes;
    }
    // Everything appended (publish returns after its append): gone now.
    std::process::exit(0)
}

fn main() {
    if let Some(dir) = std::env::var_os(RECOVERY_CHILD) {
        recovery_child(Path::new(&dir));
    }
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // Every section whose name contains a word runs (`replay`: both replay
    // sections); `=name` runs that section alone (`=server`).
    let run = |name: &str| {
        args.is_empty()
            || args.iter().any(|a| match a.strip_prefix('=') {
                Some(exact) => exact == name,
                None => name.contains(a.as_str()),
            })
    };
    let base = std::env::var_os("TICKWIRE_BENCH_DIR").map_or_else(
        || PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/journal-bench"),
        PathBuf::from,
    );
    fs::create_dir_all(&base).unwrap();
    println!(
        "journal benchmark in {} (CRC-32C backend {})",
        base.display(),
        tickwire::checksum::backend()
    );
    // `always` first: the gigabytes `append` leaves to the kernel's
    // writeback would slow every fdatasync after it.
    if run("always") {
        always(&base);
    }
    if run("append") {
        append(&base);
    }
    if run("replay") {
        replay(&base);
    }
    if run("replay-server") {
        replay_server(&base);
    }
    if run("recovery") {
        recovery(&base);
    }
    if run("server") {
        if cfg!(target_os = "linux") {
            server(&base);
        } else {
            println!("\n## server: Linux only (its floors use MADV_POPULATE_WRITE)");
        }
    }
    // Not in a run of every section (minutes of disk writes): by name.
    if args
        .iter()
        .any(|a| a.trim_start_matches('=') == "sustained")
    {
        if cfg!(target_os = "linux") {
            sustained(&base);
        } else {
            println!("\n## sustained: Linux only (it reads /proc)");
        }
    }
}

/// The mio server publishing with and without its journal (`Never`).
fn server(base: &Path) {
    use tickwire::net::{JournalSettings, ServerConfig};
    // A warm-up server first: the first servers of a process take their
    // retention's memory fresh from the kernel (about 12 K page faults for
    // its 1 M frames, half the publish rate at batch 64); after one, every
    // case below reuses the allocator's memory, so the ratios compare the
    // cases, not which of them happened to grow the heap.
    {
        let (server, _) = server_with_tid(ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        });
        let (msgs, frames) = (messages(64), 2u64 << 20);
        let publisher = server.publisher();
        for _ in 0..frames / 64 {
            publisher.publish(msgs.clone()).unwrap();
        }
        while server.stats().frames_published < frames {
            thread::sleep(Duration::from_micros(200));
        }
        server.shutdown().unwrap();
    }
    println!("\n## server: Publisher::publish into the mio server, FsyncMode::Never (best of {ROUNDS} rounds)");
    println!(
        "{:>6} {:>22} {:>22} {:>7} {:>16}",
        "batch", "no journal frames/s", "journal frames/s", "ratio", "publish (journal)"
    );
    // `TICKWIRE_BENCH_SERVER_SCALE=N`: N times the frames (a sustained
    // run: 8 makes 0.7 GB at 64 and 1.4 GB at 4,096 per case).
    let scale: usize = std::env::var("TICKWIRE_BENCH_SERVER_SCALE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1)
        .max(1);
    for size in [1usize, 64, 4096] {
        let frames_total: usize = scale
            * match size {
                1 => 1 << 18,
                64 => 2 << 20,
                _ => 4 << 20,
            };
        let batches = frames_total / size;
        let msgs = messages(size);
        // 0, 1: no journal, journal; 2: the pwrite floor; 3, 4: no
        // journal, journal with `--loop-writes` (the publisher never writes
        // to clients itself: see below); 5: no journal, a populating thread
        // beside (see there); 6: journal written behind
        // (`WriteMode::Behind`).
        let mut best = [Duration::MAX; 7];
        // Every round (see `Round`).
        let mut rounds: [Vec<Round>; 7] = Default::default();
        let batch_bytes = encode(&mut Sequencer::new(), &msgs).bytes().len();
        // The floors of a journal that copies and of one encoded in place
        // (see `memcpy_floor`, `encode_floor`): 0 memcpy, 1 encode into a
        // Vec.
        let mut floor = [Duration::MAX; 2];
        // Putting the bytes' pages into the page cache (see `prepare_floor`).
        let mut prepare = (Duration::MAX, Duration::MAX);
        // Per `PLACES`: best time, the populating thread's CPU, the
        // encoder's page faults and CPU of that round.
        let mut places = [(Duration::MAX, Duration::ZERO, 0, Duration::ZERO); PLACES.len()];
        for round in 0..ROUNDS {
            best[2] = best[2].min(pwrite_floor(base, &msgs, batches));
            let (zeros, populate) = prepare_floor(base, batch_bytes * batches);
            prepare = (prepare.0.min(zeros), prepare.1.min(populate));
            floor[0] = floor[0].min(memcpy_floor(&msgs, batches));
            // Twice per round, the order turned each time, so none always
            // runs on another's leftovers (the machine is shared: more
            // samples of the cheap floors).
            for pass in 0..2 {
                floor[1] = floor[1].min(encode_floor(None, &msgs, batches).0);
                for k in 0..PLACES.len() {
                    let j = (k + 2 * round + pass) % PLACES.len();
                    let r = encode_floor(Some((base, PLACES[j].1)), &msgs, batches);
                    if r.0 < places[j].0 {
                        places[j] = r;
                    }
                }
            }
            for (i, with_journal, loop_writes) in [
                (0, false, false),
                (1, true, false),
                (3, false, true),
                (4, true, true),
                (5, false, false),
                (6, true, false),
            ] {
                let dir = Dir::new(base, "server");
                // 5: no journal, with a thread populating a mapped segment
                // ahead of the bytes published, as an in-place journal's
                // would (what it costs the publisher and the event loop on
                // this machine's cores).
                let populating = (i == 5).then(|| {
                    let len = msgs.len() * tickwire::wire::MAX_DATA_FRAME_LEN * batches;
                    let map = mapped_segment(&dir.0.join("map"), len, PLACES[2].1);
                    map.populate(0, ahead().min(len));
                    let p = Populater::spawn(&map, ahead());
                    (map, p)
                });
                let mut config = ServerConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    ..ServerConfig::default()
                };
                config.mio.publisher_writes = !loop_writes;
                if with_journal {
                    let mut journal = JournalSettings::new(&dir.0);
                    journal.config = never();
                    if i == 6 {
                        journal.config.writes = WriteMode::Behind;
                    }
                    config.journal = Some(journal);
                }
                let (server, tid) = server_with_tid(config);
                let publisher = server.publisher();
                let (faults, stall) = (minor_faults(), cpu_stall());
                let (sleeps, loop_cpu) = (task_sleeps(tid), task_cpu(tid));
                let t = Instant::now();
                for b in 1..=batches {
                    publisher.publish(msgs.clone()).unwrap();
                    if let Some((_, p)) = &populating {
                        p.written(b * batch_bytes);
                    }
                }
                while server.stats().frames_published < frames_total as u64 {
                    thread::sleep(Duration::from_micros(200));
                }
                let d = t.elapsed();
                rounds[i].push(Round {
                    time: d,
                    faults: minor_faults() - faults,
                    stall: cpu_stall() - stall,
                    loop_sleeps: task_sleeps(tid) - sleeps,
                    loop_cpu: Duration::from_nanos(task_cpu(tid) - loop_cpu),
                });
                best[i] = best[i].min(d);
                server.shutdown().unwrap();
                if let Some((_, p)) = populating {
                    p.finish();
                }
            }
        }
        let rate = |d: Duration| frames_total as f64 / d.as_secs_f64();
        let each = |i: usize| {
            rounds[i]
                .iter()
                .map(|r| {
                    format!(
                        "{:.2} µs/{:.1}/{:.0}%/{:.2}/{:.2} µs",
                        r.time.as_secs_f64() / batches as f64 * 1e6,
                        r.faults as f64 / batches as f64,
                        r.stall.as_secs_f64() / r.time.as_secs_f64() * 100.0,
                        r.loop_sleeps as f64 / batches as f64,
                        r.loop_cpu.as_secs_f64() / batches as f64 * 1e6,
                    )
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        // Synchronous write-ahead on the publishing thread: the publish
        // without a journal and the pwrite, one after the other.
        let bound = 1.0 / (1.0 / rate(best[0]) + 1.0 / rate(best[2]));
        println!(
            "{size:>6} {:>22} {:>22} {:>6.2}× {:>13.2} µs",
            human(rate(best[0])),
            human(rate(best[1])),
            rate(best[1]) / rate(best[0]),
            best[1].as_secs_f64() / batches as f64 * 1e6,
        );
        println!(
            "{:>6} floor: bare pwrite of the same batch bytes {} frames/s ({:.2} µs/batch); \
             bound 1/(1/no journal + 1/pwrite) {} frames/s = {:.2}× no journal; \
             journal server {:.2}× the bound",
            "",
            human(rate(best[2])),
            best[2].as_secs_f64() / batches as f64 * 1e6,
            human(bound),
            bound / rate(best[0]),
            rate(best[1]) / bound,
        );
        println!(
            "{:>6} --loop-writes: no journal {} frames/s, journal {} frames/s ({:.2}× no journal, \
             {:.2}× the default no journal, {:.2}× the bound)",
            "",
            human(rate(best[3])),
            human(rate(best[4])),
            rate(best[4]) / rate(best[3]),
            rate(best[4]) / rate(best[0]),
            rate(best[4]) / bound,
        );
        println!(
            "{:>6} WriteMode::Behind: {} frames/s = {:.2}× no journal ({:.2} µs/batch)",
            "",
            human(rate(best[6])),
            rate(best[6]) / rate(best[0]),
            best[6].as_secs_f64() / batches as f64 * 1e6,
        );
        println!(
            "{:>6} every round (per batch: time/the publisher's page faults/[time some task \
             waited for a CPU]/the event loop's sleeps/its CPU): no journal [{}], \
             journal [{}], no journal + populating [{}], written behind [{}]",
            "",
            each(0),
            each(1),
            each(5),
            each(6),
        );
        // A journal that copies the batch once into memory already writable
        // (the cheapest copying journal), on the publishing thread.
        let per = |d: Duration| d.as_secs_f64() / batches as f64;
        let memcpy_bound = 1.0 / (1.0 / rate(best[0]) + 1.0 / rate(floor[0]));
        println!(
            "{:>6} floor: memcpy into pre-faulted memory {:.3} µs/batch; \
             bound 1/(1/no journal + 1/memcpy) {} frames/s = {:.2}× no journal",
            "",
            per(floor[0]) * 1e6,
            human(memcpy_bound),
            memcpy_bound / rate(best[0]),
        );
        println!(
            "{:>6} floor: the batch's pages into the page cache, on one thread: zeros written \
             with pwrite {:.3} µs/batch (what the journal's preparing thread does), \
             MADV_POPULATE_WRITE on a fallocated mapping {:.3} µs/batch",
            "",
            per(prepare.0) * 1e6,
            per(prepare.1) * 1e6,
        );
        // Encoded in place: the publish without a journal with its encoding
        // into a Vec replaced by the encoding into the mapped segment.
        println!(
            "{:>6} floor: encode into a Vec {:.3} µs/batch (what the publisher does without a \
             journal); in place into a mapped segment (no journal − Vec + in place = the bound):",
            "",
            per(floor[1]) * 1e6,
        );
        // The populating thread's cost to the server, and the encoding
        // alone in place of the Vec's.
        let before = places[PLACES.len() - 1].0;
        let in_place = per(best[5]) - per(floor[1]) + per(before);
        println!(
            "{:>6} no journal + a thread populating (fallocated, MADV_HUGEPAGE) {} MiB ahead of \
             the published bytes: {} frames/s ({:.2}× no journal); − Vec + encoding alone \
             {} frames/s = {:.2}× no journal",
            "",
            ahead() >> 20,
            human(rate(best[5])),
            rate(best[5]) / rate(best[0]),
            human(size as f64 / in_place),
            per(best[0]) / in_place,
        );
        for ((name, _), (map, cpu, faults, on_cpu)) in PLACES.iter().zip(places) {
            let in_place = per(best[0]) - per(floor[1]) + per(map);
            println!(
                "{:>8} {name:<44} {:>8.3} µs/batch {:.2}× the Vec's speed, populating {:>7.3} µs \
                 CPU/batch, {faults:>4} faults, on CPU {:>3.0}%; bound {:.2}× no journal",
                "",
                per(map) * 1e6,
                floor[1].as_secs_f64() / map.as_secs_f64(),
                per(cpu) * 1e6,
                on_cpu.as_secs_f64() / map.as_secs_f64() * 100.0,
                per(best[0]) / in_place,
            );
        }
    }
}

/// Sustained publishing (`FsyncMode::Never`): each case publishes
/// `TICKWIRE_BENCH_SUSTAINED_GB` GB of frames (default 3: past this
/// machine's dirty background threshold, so the kernel writes back while
/// the case runs), every case after a `sync` (none starts with another's
/// dirty pages): the mio server without a journal, with its journal, and
/// the floor of any journal that puts the bytes through the page cache:
/// the server without a journal while a second thread writes the same
/// bytes, batch by batch as they are published, into a file of the same
/// file system (`pwrite` of up to 1 MiB at a time: the cheapest way in;
/// the kernel then writes them back as it does the journal's). And the
/// disk's own sustained rate (`pwrite` + `fdatasync` of 1 GiB), in
/// frames/s: what no journal can outrun once dirty memory is full.
///
/// Every case starts from the same memory (a `sync`, then a settling
/// pause): the reference VM's host takes back the guest's free pages
/// (free page reporting), so a case run right after another freed its
/// gigabytes of page cache touches cheaper memory than one run after a
/// case that freed none; in a fixed order that favoured one case by up
/// to half its time.
fn sustained(base: &Path) {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use tickwire::net::{JournalSettings, ServerConfig};
    let gb: f64 = std::env::var("TICKWIRE_BENCH_SUSTAINED_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(3.0);
    let sizes: Vec<usize> = std::env::var("TICKWIRE_BENCH_SUSTAINED_BATCHES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![64, 4096]);
    // `TICKWIRE_BENCH_SUSTAINED_CASES=1`: the journal alone (0 no journal,
    // 1 journal, 2 the floor), for a profiler.
    let cases: Vec<usize> = std::env::var("TICKWIRE_BENCH_SUSTAINED_CASES")
        .ok()
        .map(|v| v.split(',').filter_map(|s| s.trim().parse().ok()).collect())
        .unwrap_or_else(|| vec![0, 1, 2, 3, 4]);
    let settle = Duration::from_secs_f64(
        std::env::var("TICKWIRE_BENCH_SUSTAINED_SETTLE")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(5.0),
    );
    let rounds: usize = std::env::var("TICKWIRE_BENCH_SUSTAINED_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(ROUNDS);
    let disk = disk_write_rate(base, 1 << 30);
    println!(
        "\n## sustained: {gb} GB per case, FsyncMode::Never, each case after a sync \
         (best of {rounds} rounds; the disk absorbs {:.2} GB/s: pwrite + fdatasync of 1 GiB)",
        disk / 1e9
    );
    println!(
        "{:>6} {:>14} {:>14} {:>7} {:>22} {:>8} {:>13} {:>8} {:>12} {:>7} {:>7}",
        "batch",
        "no journal/s",
        "journal/s",
        "ratio",
        "floor (writer beside)",
        "floor×",
        "journal÷floor",
        "behind×",
        "behind÷floor",
        "direct×",
        "disk×"
    );
    const NAMES: [&str; 5] = [
        "no journal",
        "journal (in place)",
        "no journal + writer beside",
        "journal, WriteMode::Direct (pwrite)",
        "journal, WriteMode::Behind",
    ];
    for size in sizes {
        let msgs = messages(size);
        let bytes = encode(&mut Sequencer::new(), &msgs).bytes().to_vec();
        let batches = ((gb * 1e9) as usize / bytes.len()).max(1);
        let frames_total = (batches * size) as u64;
        let mut best = [Duration::MAX; 5];
        let mut each: [Vec<String>; 5] = Default::default();
        for round in 0..rounds {
            for k in 0..5 {
                let i = (k + round) % 5;
                if !cases.contains(&i) {
                    continue;
                }
                let dir = Dir::new(base, "sustained");
                fs::create_dir_all(&dir.0).unwrap();
                rustix::fs::sync();
                // Every case from the same memory: on a VM whose host takes
                // back the guest's free memory (free page reporting, after
                // about 2 s), the pages a case before just freed would be
                // cheaper to touch than the ones the host took back.
                thread::sleep(settle);
                let mut config = ServerConfig {
                    listen: "127.0.0.1:0".parse().unwrap(),
                    ..ServerConfig::default()
                };
                if let Some(writes) = match i {
                    1 => Some(WriteMode::InPlace),
                    3 => Some(WriteMode::Direct),
                    4 => Some(WriteMode::Behind),
                    _ => None,
                } {
                    let mut journal = JournalSettings::new(&dir.0);
                    journal.config = never();
                    journal.config.writes = writes;
                    config.journal = Some(journal);
                }
                // The writer beside (case 2): `pwrite`s of the batch's
                // bytes up to the batches published so far.
                let published = Arc::new(AtomicUsize::new(0));
                // Up to 1 MiB of batches in one `pwrite` (the fewest
                // system calls).
                let beside = (i == 2).then(|| {
                    let published = Arc::clone(&published);
                    let per_write = ((1 << 20) / bytes.len()).max(1);
                    let chunk = bytes.repeat(per_write);
                    let len = bytes.len();
                    let f = File::create_new(dir.0.join("beside.twr")).unwrap();
                    thread::spawn(move || {
                        let mut done = 0usize;
                        while done < batches {
                            let upto = published.load(Ordering::Acquire);
                            if done == upto {
                                thread::sleep(Duration::from_micros(20));
                                continue;
                            }
                            while done < upto {
                                let n = (upto - done).min(per_write);
                                f.write_all_at(&chunk[..n * len], (done * len) as u64)
                                    .unwrap();
                                done += n;
                            }
                        }
                    })
                });
                let sampling = Arc::new(AtomicBool::new(true));
                let sampler = {
                    let sampling = Arc::clone(&sampling);
                    thread::spawn(move || {
                        let mut peak = 0u64;
                        while sampling.load(Ordering::Relaxed) {
                            peak = peak.max(meminfo_kb("Dirty:") + meminfo_kb("Writeback:"));
                            thread::sleep(Duration::from_millis(50));
                        }
                        peak
                    })
                };
                let (server, _) = server_with_tid(config);
                let publisher = server.publisher();
                let (faults, stall, busy) = (minor_faults(), cpu_stall(), machine_busy());
                let (written, shootdowns) = (vmstat("nr_written"), interrupts("TLB:"));
                let t = Instant::now();
                for b in 1..=batches {
                    publisher.publish(msgs.clone()).unwrap();
                    published.store(b, Ordering::Release);
                }
                while server.stats().frames_published < frames_total {
                    thread::sleep(Duration::from_micros(200));
                }
                if let Some(w) = beside {
                    w.join().unwrap();
                }
                let d = t.elapsed();
                sampling.store(false, Ordering::Relaxed);
                let peak = sampler.join().unwrap();
                let per = batches as f64;
                each[i].push(format!(
                    "{:.2} µs/{:.1}/{:.0}%/{:.2} µs/{:.1}/{:.1}/{:.1}",
                    d.as_secs_f64() / per * 1e6,
                    (minor_faults() - faults) as f64 / per,
                    (cpu_stall() - stall).as_secs_f64() / d.as_secs_f64() * 100.0,
                    (machine_busy() - busy).as_secs_f64() / per * 1e6,
                    (vmstat("nr_written") - written) as f64 * 4096.0 / 1e9,
                    peak as f64 / 1e6,
                    (interrupts("TLB:") - shootdowns) as f64 / per,
                ));
                best[i] = best[i].min(d);
                server.shutdown().unwrap();
            }
        }
        // NaN for a case not run (`TICKWIRE_BENCH_SUSTAINED_CASES`).
        let rate = |d: Duration| {
            if d == Duration::MAX {
                f64::NAN
            } else {
                frames_total as f64 / d.as_secs_f64()
            }
        };
        let disk_frames = disk / (bytes.len() as f64 / size as f64);
        println!(
            "{size:>6} {:>14} {:>14} {:>6.2}× {:>22} {:>7.2}× {:>12.2}× {:>7.2}× {:>11.2}× {:>6.2}× {:>6.2}×",
            human(rate(best[0])),
            human(rate(best[1])),
            rate(best[1]) / rate(best[0]),
            human(rate(best[2])),
            rate(best[2]) / rate(best[0]),
            rate(best[1]) / rate(best[2]),
            rate(best[4]) / rate(best[0]),
            rate(best[4]) / rate(best[2]),
            rate(best[3]) / rate(best[0]),
            disk_frames / rate(best[0]),
        );
        println!(
            "{:>6} every round (per batch: time/the publisher's page faults/[time some task \
             waited for a CPU]/CPU of the whole machine; GB written back during the case/\
             peak GB dirty or under writeback/TLB shootdown interrupts):",
            ""
        );
        for (name, rounds) in NAMES.iter().zip(&each) {
            println!("{:>8} {name}: [{}]", "", rounds.join(", "));
        }
    }
}

/// The disk's sustained write rate, bytes/s: `len` bytes written with
/// `pwrite` (1 MiB each) and made durable with one `fdatasync`.
fn disk_write_rate(base: &Path, len: usize) -> f64 {
    let path = base.join("disk-rate-probe");
    let file = File::create(&path).unwrap();
    let block = vec![0x5au8; 1 << 20];
    rustix::fs::sync();
    let t = Instant::now();
    for i in 0..len / block.len() {
        file.write_all_at(&block, (i * block.len()) as u64).unwrap();
    }
    file.sync_data().unwrap();
    let rate = len as f64 / t.elapsed().as_secs_f64();
    drop(file);
    let _ = fs::remove_file(&path);
    rate
}

/// A field of `/proc/meminfo`, kB.
fn meminfo_kb(field: &str) -> u64 {
    fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0)
}

/// The interrupts of one row of `/proc/interrupts` (`TLB:`: TLB
/// shootdowns), every CPU.
fn interrupts(row: &str) -> u64 {
    fs::read_to_string("/proc/interrupts")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.trim_start().strip_prefix(row))
        .map(|rest| {
            rest.split_whitespace()
                .map_while(|v| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0)
}

/// A counter of `/proc/vmstat`.
fn vmstat(field: &str) -> u64 {
    fs::read_to_string("/proc/vmstat")
        .unwrap_or_default()
        .lines()
        .find_map(|l| {
            l.strip_prefix(field)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0)
}

/// CPU time the whole machine spent not idle (every CPU: user, nice,
/// system, irq, softirq, steal), from `/proc/stat`.
fn machine_busy() -> Duration {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: u64 = stat
        .lines()
        .find(|l| l.starts_with("cpu "))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .enumerate()
                // user nice system idle iowait irq softirq steal
                .filter(|(k, _)| matches!(k, 0 | 1 | 2 | 5 | 6 | 7))
                .filter_map(|(_, v)| v.parse::<u64>().ok())
                .sum()
        })
        .unwrap_or(0);
    // USER_HZ is 100 on Linux.
    Duration::from_millis(ticks * 10)
}

/// A journal that copies, at its cheapest: `batches` `memcpy`s of one
/// encoded batch of `msgs` one after the other into anonymous memory
/// written before (no page fault, no syscall while timed).
fn memcpy_floor(msgs: &[(u64, Payload)], batches: usize) -> Duration {
    let bytes = encode(&mut Sequencer::new(), msgs).bytes().to_vec();
    // Not zero: `vec![0; n]` would get untouched pages from calloc.
    let mut to = vec![0x5au8; bytes.len() * batches];
    let t = Instant::now();
    for chunk in to.chunks_exact_mut(bytes.len()) {
        chunk.copy_from_slice(black_box(&bytes));
    }
    let d = t.elapsed();
    black_box(&to);
    d
}

/// How many frames the server retains by default (`--retain`): the floors
/// hold as many batches alive, as the server's retention would.
const RETAINED_FRAMES: usize = 1 << 20;

/// How a mapped segment is prepared and populated (`encode_floor`).
#[derive(Clone, Copy)]
struct Place {
    /// `fallocate` the file first (blocks allocated, unwritten extents),
    /// else only `ftruncate` (sparse).
    fallocate: bool,
    /// `MADV_HUGEPAGE` on the mapping: large folios where the file system
    /// has them (fewer, larger pages to populate).
    hugepage: bool,
    /// Who populates the pages writable.
    ahead: Ahead,
}

#[derive(Clone, Copy, PartialEq)]
enum Ahead {
    /// A second thread, up to `TICKWIRE_BENCH_AHEAD` MiB (default 16)
    /// ahead of the encoder (those before the clock starts, as when a
    /// segment is created).
    Thread,
    /// The encoder, before each chunk it reaches (populating on the
    /// publishing thread).
    Encoder,
    /// All before the clock starts: the encoding alone.
    Before,
}

/// The mapped segments `server` measures encoding into.
const PLACES: [(&str, Place); 5] = [
    (
        "sparse, populating thread",
        Place {
            fallocate: false,
            hugepage: false,
            ahead: Ahead::Thread,
        },
    ),
    (
        "fallocated, populating thread",
        Place {
            fallocate: true,
            hugepage: false,
            ahead: Ahead::Thread,
        },
    ),
    (
        "fallocated, MADV_HUGEPAGE, populating thread",
        Place {
            fallocate: true,
            hugepage: true,
            ahead: Ahead::Thread,
        },
    ),
    (
        "sparse, populated by the encoder",
        Place {
            fallocate: false,
            hugepage: false,
            ahead: Ahead::Encoder,
        },
    ),
    (
        "sparse, populated before (encoding alone)",
        Place {
            fallocate: false,
            hugepage: false,
            ahead: Ahead::Before,
        },
    ),
];

/// What the publisher does to a batch without a journal, against doing the
/// same into a journal segment mapped in memory: number and encode `msgs`
/// `batches` times (`Sequencer::encode_batch`) into a `Vec` of the largest
/// size (`into: None`, as `Publisher::publish` does), or into the next
/// bytes of a segment file in the directory `into` names, mapped shared
/// and populated writable (`MADV_POPULATE_WRITE`) as its `Place` says
/// (`TICKWIRE_BENCH_RECYCLE` set: the file's pages written and synced
/// before, as a recycled segment's still cached would be). Each encoded
/// batch is wrapped in an `Arc` (holding its Vec, or the mapping and its
/// range) and kept in a ring as long as the default retention would keep
/// it. Returns the time and, in place, the populating thread's CPU time,
/// the encoding thread's minor page faults (populating counts its own)
/// and its CPU time while timed (less than the time: it was preempted).
fn encode_floor(
    into: Option<(&Path, Place)>,
    msgs: &[(u64, Payload)],
    batches: usize,
) -> (Duration, Duration, u64, Duration) {
    use std::collections::VecDeque;
    use tickwire::wire::MAX_DATA_FRAME_LEN;
    const CHUNK: usize = 1 << 20;
    let most = msgs.len() * MAX_DATA_FRAME_LEN;
    let keep = (RETAINED_FRAMES / msgs.len()).max(1);
    let mut seq = Sequencer::new();
    let Some((base, place)) = into else {
        let mut ring = VecDeque::with_capacity(keep);
        let t = Instant::now();
        for _ in 0..batches {
            let first = seq.next_sequence();
            let mut bytes = vec![0u8; most];
            let done = seq.encode_batch(msgs, &mut bytes);
            bytes.truncate(done.bytes);
            if ring.len() == keep {
                ring.pop_front();
            }
            ring.push_back(Arc::new((first, done.frames, bytes)));
        }
        let d = t.elapsed();
        black_box(&ring);
        return (d, Duration::ZERO, 0, Duration::ZERO);
    };
    let len = most * batches;
    let ahead = match place.ahead {
        Ahead::Thread => ahead(),
        Ahead::Encoder => 0,
        Ahead::Before => len,
    };
    let dir = Dir::new(base, "server-map");
    let map = mapped_segment(&dir.0, len, place);
    map.populate(0, ahead.min(len));
    let mut populated = ahead.min(len);
    let populater = (place.ahead == Ahead::Thread).then(|| Populater::spawn(&map, ahead));
    let mut ring = VecDeque::with_capacity(keep);
    let mut at = 0;
    let (faults, cpu) = (minor_faults(), thread_cpu());
    let t = Instant::now();
    for _ in 0..batches {
        let first = seq.next_sequence();
        while populater.is_none() && populated < at + most {
            let n = CHUNK.min(len - populated);
            map.populate(populated, n);
            populated += n;
        }
        let done = seq.encode_batch(msgs, map.slice_mut(at, most));
        if ring.len() == keep {
            ring.pop_front();
        }
        ring.push_back(Arc::new((
            Arc::clone(&map),
            first,
            done.frames,
            at,
            done.bytes,
        )));
        at += done.bytes;
        if let Some(p) = &populater {
            p.written(at);
        }
    }
    let d = t.elapsed();
    let (faults, cpu) = (minor_faults() - faults, thread_cpu() - cpu);
    black_box(&ring);
    let populating = populater.map_or(Duration::ZERO, Populater::finish);
    (d, populating, faults, Duration::from_nanos(cpu))
}

/// How far ahead a populating thread keeps the pages writable:
/// `TICKWIRE_BENCH_AHEAD` MiB, default 16.
fn ahead() -> usize {
    std::env::var("TICKWIRE_BENCH_AHEAD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16usize)
        << 20
}

/// A new segment file of `len` bytes in `dir`, prepared as `place` says,
/// mapped shared (nothing populated yet).
fn mapped_segment(dir: &Path, len: usize, place: Place) -> Arc<map::Shared> {
    fs::create_dir_all(dir).unwrap();
    let file = File::create_new(dir.join("map.twr")).unwrap();
    file.set_len(len as u64).unwrap();
    if std::env::var_os("TICKWIRE_BENCH_RECYCLE").is_some() {
        // A recycled segment: its pages in the page cache, clean (written
        // back), not mapped (no allocation or zeroing left to populating).
        map::Shared::new(&file, len).populate(0, len);
        file.sync_data().unwrap();
    }
    if place.fallocate {
        // Blocks allocated (unwritten extents) before populating.
        rustix::fs::fallocate(&file, rustix::fs::FallocateFlags::empty(), 0, len as u64).unwrap();
    }
    let map = Arc::new(map::Shared::new(&file, len));
    if place.hugepage {
        map.hugepage();
    }
    map
}

/// Putting `len` new bytes of a segment into the page cache, on one thread,
/// 1 MiB at a time: zeros written with `pwrite` (what the journal's
/// preparing thread does ahead of the publisher), and
/// `MADV_POPULATE_WRITE` on a fallocated mapping with `MADV_HUGEPAGE` (the
/// design it replaced, measured three times dearer per page on the
/// reference VM).
fn prepare_floor(base: &Path, len: usize) -> (Duration, Duration) {
    const STEP: usize = 1 << 20;
    let dir = Dir::new(base, "prepare");
    fs::create_dir_all(&dir.0).unwrap();
    let zeros = vec![0u8; STEP];
    let file = File::create_new(dir.0.join("zeros.twr")).unwrap();
    let t = Instant::now();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(STEP);
        file.write_all_at(&zeros[..n], at as u64).unwrap();
        at += n;
    }
    let pwrite = t.elapsed();
    let place = Place {
        fallocate: true,
        hugepage: true,
        ahead: Ahead::Thread,
    };
    let map = mapped_segment(&dir.0.join("populate"), len, place);
    let t = Instant::now();
    let mut at = 0;
    while at < len {
        let n = (len - at).min(STEP);
        map.populate(at, n);
        at += n;
    }
    (pwrite, t.elapsed())
}

/// A thread keeping a mapping populated writable (`MADV_POPULATE_WRITE`,
/// 1 MiB at a time) up to `ahead` bytes past what its writer has written
/// (the first `ahead` bytes are the caller's to populate).
struct Populater {
    written: Arc<std::sync::atomic::AtomicUsize>,
    thread: thread::JoinHandle<Duration>,
}

impl Populater {
    fn spawn(map: &Arc<map::Shared>, ahead: usize) -> Populater {
        use std::sync::atomic::{AtomicUsize, Ordering};
        const CHUNK: usize = 1 << 20;
        let written = Arc::new(AtomicUsize::new(0));
        let (map, w) = (Arc::clone(map), Arc::clone(&written));
        let thread = thread::spawn(move || {
            let cpu = thread_cpu();
            let len = map.len();
            let mut done = ahead.min(len);
            loop {
                let w = w.load(Ordering::Relaxed);
                if w == usize::MAX || done == len {
                    break; // the writer is done, or the file populated
                }
                if done < w + ahead {
                    let n = CHUNK.min(len - done);
                    map.populate(done, n);
                    done += n;
                } else {
                    thread::sleep(Duration::from_micros(50));
                }
            }
            Duration::from_nanos(thread_cpu() - cpu)
        });
        Populater { written, thread }
    }

    /// The writer has written `at` bytes.
    fn written(&self, at: usize) {
        self.written.store(at, std::sync::atomic::Ordering::Relaxed);
    }

    /// Stops the thread; its CPU time.
    fn finish(self) -> Duration {
        self.written(usize::MAX);
        self.thread.join().unwrap()
    }
}

/// One round of a server case in `server`.
struct Round {
    time: Duration,
    /// The publishing thread's minor page faults.
    faults: u64,
    /// How long some task of the machine waited for a CPU (any process:
    /// the machine is shared).
    stall: Duration,
    /// How many times the event loop's thread went to sleep.
    loop_sleeps: u64,
    /// The event loop thread's CPU time.
    loop_cpu: Duration,
}

/// Voluntary context switches (sleeps) of thread `tid` of this process.
fn task_sleeps(tid: u64) -> u64 {
    fs::read_to_string(format!("/proc/self/task/{tid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
                .and_then(|v| v.trim().parse().ok())
        })
        .unwrap_or(0)
}

/// How long, in all, some task of the machine has waited for a CPU
/// (`/proc/pressure/cpu`, "some"; zero where there is none).
fn cpu_stall() -> Duration {
    let psi = fs::read_to_string("/proc/pressure/cpu").unwrap_or_default();
    let micros = psi
        .lines()
        .find(|l| l.starts_with("some"))
        .and_then(|l| l.split_whitespace().find_map(|f| f.strip_prefix("total=")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    Duration::from_micros(micros)
}

/// Minor page faults of the calling thread so far (`/proc/thread-self/stat`).
fn minor_faults() -> u64 {
    let stat = fs::read_to_string("/proc/thread-self/stat").unwrap_or_default();
    // After the command's ")": state, ppid, pgrp, session, tty_nr, tpgid,
    // flags, minflt.
    stat.rsplit_once(')')
        .and_then(|(_, rest)| rest.split_whitespace().nth(7))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// A file mapped shared, for `encode_floor` (a bench: not the journal).
#[allow(unsafe_code)]
mod map {
    #![deny(unsafe_op_in_unsafe_fn)]
    use std::fs::File;
    use std::ptr::{self, NonNull};

    #[cfg(target_os = "linux")]
    use rustix::mm::{madvise, Advice};
    use rustix::mm::{mmap, munmap, MapFlags, ProtFlags};

    /// `len` bytes of a file mapped shared, read and write. Its users write
    /// each byte range from one thread only (`slice_mut`), while another
    /// may `populate` any range (which does not change the bytes).
    pub(super) struct Shared {
        ptr: NonNull<u8>,
        len: usize,
    }

    // SAFETY: the mapping is plain memory shared by the process's threads;
    // `Shared` hands out no reference but through `slice_mut`, whose
    // callers keep their ranges apart (see there).
    unsafe impl Send for Shared {}
    // SAFETY: as for `Send`; `populate` only calls `madvise`, which the
    // kernel performs without changing the mapping's contents.
    unsafe impl Sync for Shared {}

    impl Shared {
        /// Maps the first `len` bytes of `file` (at least `len` bytes long,
        /// opened for reading and writing).
        pub(super) fn new(file: &File, len: usize) -> Shared {
            // SAFETY: a new mapping at an address the kernel chooses: it
            // overlaps nothing of ours. The file is the bench's own, in its
            // own directory, sized `len` before; nothing truncates it while
            // it is mapped (a truncation would make accesses raise SIGBUS,
            // not undefined behavior in this process's memory).
            let p = unsafe {
                mmap(
                    ptr::null_mut(),
                    len,
                    ProtFlags::READ | ProtFlags::WRITE,
                    MapFlags::SHARED,
                    file,
                    0,
                )
            }
            .unwrap();
            Shared {
                ptr: NonNull::new(p.cast()).unwrap(),
                len,
            }
        }

        /// Faults `len` bytes from `at` in, writable (blocks reserved:
        /// a full disk fails here, not as a SIGBUS in a later write).
        pub(super) fn populate(&self, at: usize, len: usize) {
            assert!(at <= self.len && len <= self.len - at);
            #[cfg(target_os = "linux")]
            // SAFETY: the range is inside the mapping (checked above);
            // MADV_POPULATE_WRITE only faults pages in as a write would,
            // without changing a byte, so it may run while another thread
            // writes the same pages.
            unsafe {
                madvise(
                    self.ptr.as_ptr().add(at).cast(),
                    len,
                    Advice::LinuxPopulateWrite,
                )
            }
            .unwrap();
            #[cfg(not(target_os = "linux"))]
            unreachable!("MADV_POPULATE_WRITE: the server section runs on Linux only");
        }

        pub(super) fn len(&self) -> usize {
            self.len
        }

        /// Asks for large folios (`MADV_HUGEPAGE`): fewer, larger pages
        /// to populate, where the file system supports them.
        pub(super) fn hugepage(&self) {
            #[cfg(target_os = "linux")]
            // SAFETY: the whole mapping; MADV_HUGEPAGE changes how the
            // kernel backs it, not its contents.
            unsafe { madvise(self.ptr.as_ptr().cast(), self.len, Advice::LinuxHugepage) }.unwrap();
            #[cfg(not(target_os = "linux"))]
            unreachable!("MADV_HUGEPAGE: the server section runs on Linux only");
        }

        /// The `len` bytes from `at`. The caller (one thread, the encoder)
        /// never asks for a range it still holds or that a batch kept in
        /// its ring covers: each call's range starts after the last one's
        /// bytes in use.
        #[allow(clippy::mut_from_ref)]
        pub(super) fn slice_mut(&self, at: usize, len: usize) -> &mut [u8] {
            assert!(at <= self.len && len <= self.len - at);
            // SAFETY: inside the mapping (checked above), which lives as
            // long as `self`; mapped read-write and initialized (file
            // bytes); no other reference to the range exists (see above,
            // and `populate` does not make one).
            unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr().add(at), len) }
        }
    }

    impl Drop for Shared {
        fn drop(&mut self) {
            // SAFETY: the mapping `new` made, unmapped once; no slice of it
            // outlives `self` (they borrow it).
            let _ = unsafe { munmap(self.ptr.as_ptr().cast(), self.len) };
        }
    }
}

/// The floor of a journaled publish: `batches` `pwrite`s of one encoded
/// batch of `msgs` (the same bytes a publish of them appends), extending a
/// new file in the journal's directory as the journal's segment does.
fn pwrite_floor(base: &Path, msgs: &[(u64, Payload)], batches: usize) -> Duration {
    let dir = Dir::new(base, "server-pwrite");
    fs::create_dir_all(&dir.0).unwrap();
    let bytes = encode(&mut Sequencer::new(), msgs).bytes().to_vec();
    let f = File::create_new(dir.0.join("floor.twr")).unwrap();
    let t = Instant::now();
    let mut at = 0u64;
    for _ in 0..batches {
        f.write_all_at(black_box(&bytes), at).unwrap();
        at += bytes.len() as u64;
    }
    t.elapsed()
}

/// A directory removed on drop.
struct Dir(PathBuf);

impl Dir {
    fn new(base: &Path, name: &str) -> Dir {
        let p = base.join(name);
        let _ = fs::remove_dir_all(&p);
        Dir(p)
    }
}

impl Drop for Dir {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// `size` data messages of the synthetic mix.
fn messages(size: usize) -> Vec<(u64, Payload)> {
    let mut feed = Feed::new(9, 500);
    let mut b = Vec::with_capacity(size);
    while b.len() < size {
        let p = feed.next_payload();
        if p.msg_type().is_data() {
            b.push((1_700_000_000_000_000_000 + b.len() as u64, p));
        }
    }
    b
}

/// What a publisher does with a batch: number and encode it, check it into
/// a `Batch`.
fn encode(seq: &mut Sequencer, msgs: &[(u64, Payload)]) -> Arc<Batch> {
    let mut bytes = vec![0u8; msgs.len() * 44];
    let done = seq.encode_batch(msgs, &mut bytes);
    bytes.truncate(done.bytes);
    Arc::new(Batch::new(bytes).unwrap())
}

fn never() -> JournalConfig {
    JournalConfig {
        fsync: FsyncMode::Never,
        ..JournalConfig::default()
    }
}

fn append(base: &Path) {
    println!("\n## append, FsyncMode::Never (best of {ROUNDS} rounds)");
    println!(
        "{:>6} {:>22} {:>26} {:>7} {:>14} {:>10}",
        "batch",
        "retention frames/s",
        "journal+retention frames/s",
        "ratio",
        "append/batch",
        "append GB/s"
    );
    let mut pipelined = Vec::new();
    for size in [1usize, 64, 4096] {
        let frames_total: usize = match size {
            1 => 1 << 20,
            64 => 4 << 20,
            _ => 8 << 20,
        };
        let batches = frames_total / size;
        let msgs = messages(size);
        let mut best = [Duration::MAX; 2];
        let mut bytes = 0u64;
        for _ in 0..ROUNDS {
            for (i, with_journal) in [false, true].into_iter().enumerate() {
                let dir = Dir::new(base, "append");
                let mut journal = with_journal.then(|| {
                    let (mut j, _) = Journal::open(&dir.0, never()).unwrap();
                    j.start_session(1, 1).unwrap();
                    j
                });
                let mut retention = Retention::new(1 << 20);
                let mut seq = Sequencer::new();
                bytes = 0;
                let t = Instant::now();
                for _ in 0..batches {
                    let batch = encode(&mut seq, &msgs);
                    bytes += batch.bytes().len() as u64;
                    if let Some(j) = journal.as_mut() {
                        j.append(&batch).unwrap();
                    }
                    retention.push(batch);
                }
                let elapsed = t.elapsed();
                black_box(&retention);
                best[i] = best[i].min(elapsed);
            }
        }
        // The same, the write on another thread than the encoding (what a
        // server does when publishers encode on their threads and the
        // journal is written by another): a bounded channel of batches.
        let mut piped = [Duration::MAX; 2];
        for _ in 0..ROUNDS {
            for (i, with_journal) in [false, true].into_iter().enumerate() {
                let dir = Dir::new(base, "append");
                let mut journal = with_journal.then(|| {
                    let (mut j, _) = Journal::open(&dir.0, never()).unwrap();
                    j.start_session(1, 1).unwrap();
                    j
                });
                let (tx, rx) = std::sync::mpsc::sync_channel::<Arc<Batch>>(64);
                let t = Instant::now();
                let sink = thread::spawn(move || {
                    let mut retention = Retention::new(1 << 20);
                    for batch in rx {
                        if let Some(j) = journal.as_mut() {
                            j.append(&batch).unwrap();
                        }
                        retention.push(batch);
                    }
                    black_box(&retention);
                });
                let mut seq = Sequencer::new();
                for _ in 0..batches {
                    tx.send(encode(&mut seq, &msgs)).unwrap();
                }
                drop(tx);
                sink.join().unwrap();
                piped[i] = piped[i].min(t.elapsed());
            }
        }
        let rate = |d: Duration| frames_total as f64 / d.as_secs_f64();
        pipelined.push((size, rate(piped[0]), rate(piped[1])));
        let per_append = (best[1].saturating_sub(best[0])).as_secs_f64() / batches as f64;
        println!(
            "{size:>6} {:>22} {:>26} {:>6.2}× {:>11.2} µs {:>10.2}",
            human(rate(best[0])),
            human(rate(best[1])),
            rate(best[1]) / rate(best[0]),
            per_append * 1e6,
            bytes as f64 / batches as f64 / per_append.max(1e-12) / 1e9,
        );
    }
    println!("pipelined: one thread encodes, another appends and pushes (channel of 64 batches)");
    println!(
        "{:>6} {:>22} {:>26} {:>7}",
        "batch", "retention frames/s", "journal+retention frames/s", "ratio"
    );
    for (size, base_rate, j_rate) in pipelined {
        println!(
            "{size:>6} {:>22} {:>26} {:>6.2}×",
            human(base_rate),
            human(j_rate),
            j_rate / base_rate
        );
    }
}

/// The disk's own `fdatasync` rate: `size` bytes appended, then synced,
/// for `seconds`.
fn fdatasync_rate(base: &Path, size: usize, seconds: f64) -> (f64, Histogram<u64>) {
    let path = base.join("fdatasync-probe");
    let file = File::create(&path).unwrap();
    let block = vec![0x5au8; size];
    let mut h = Histogram::new_with_bounds(100, 10_000_000_000, 3).unwrap();
    let started = Instant::now();
    let mut n = 0u64;
    while started.elapsed() < Duration::from_secs_f64(seconds) {
        let t = Instant::now();
        file.write_all_at(&block, n * size as u64).unwrap();
        file.sync_data().unwrap();
        h.record(t.elapsed().as_nanos() as u64).unwrap();
        n += 1;
    }
    let rate = n as f64 / started.elapsed().as_secs_f64();
    drop(file);
    let _ = fs::remove_file(&path);
    (rate, h)
}

fn always(base: &Path) {
    println!(
        "\n## FsyncMode::Always, group commit (2 s per case; before each, the disk's own \
         fdatasync rate for 1 s: one thread appending the same batch bytes, each synced)"
    );
    println!(
        "{:>6} {:>8} {:>12} {:>10} {:>14} {:>12} {:>10} {:>13} {:>10} {:>10} {:>10}",
        "batch",
        "threads",
        "disk sync/s",
        "disk p50",
        "frames/s",
        "batches/s",
        "syncs/s",
        "batches/sync",
        "p50",
        "p99",
        "max"
    );
    for size in [1usize, 64, 4096] {
        for threads in [1usize, 8] {
            let (disk, disk_h) = fdatasync_rate(
                base,
                messages(size).iter().map(|(_, p)| p.frame_len()).sum(),
                1.0,
            );
            let dir = Dir::new(base, "always");
            let config = JournalConfig {
                fsync: FsyncMode::Always,
                ..JournalConfig::default()
            };
            let (mut j, _) = Journal::open(&dir.0, config).unwrap();
            j.start_session(1, 1).unwrap();
            let sync = j.sync_handle();
            let syncs0 = sync.syncs();
            let journal = Arc::new(Mutex::new(j));
            let msgs = Arc::new(messages(size));
            let started = Instant::now();
            let workers: Vec<_> = (0..threads)
                .map(|_| {
                    let (journal, sync, msgs) =
                        (Arc::clone(&journal), sync.clone(), Arc::clone(&msgs));
                    thread::spawn(move || {
                        let mut h =
                            Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).unwrap();
                        let mut batches = 0u64;
                        while started.elapsed() < Duration::from_secs(2) {
                            let t = Instant::now();
                            let ticket = {
                                let mut j = journal.lock().unwrap();
                                let mut seq = Sequencer::starting_at(j.next_sequence());
                                let batch = encode(&mut seq, &msgs);
                                j.append(&batch).unwrap()
                            };
                            sync.wait(ticket).unwrap();
                            h.record(t.elapsed().as_nanos() as u64).unwrap();
                            batches += 1;
                        }
                        (batches, h)
                    })
                })
                .collect();
            let mut total = 0u64;
            let mut h = Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).unwrap();
            for w in workers {
                let (b, wh) = w.join().unwrap();
                total += b;
                h.add(wh).unwrap();
            }
            let secs = started.elapsed().as_secs_f64();
            let syncs = sync.syncs() - syncs0;
            println!(
                "{size:>6} {threads:>8} {disk:>12.0} {:>10} {:>14} {:>12.0} {:>10.0} {:>13.1} {:>10} {:>10} {:>10}",
                micros(disk_h.value_at_quantile(0.5)),
                human(total as f64 * size as f64 / secs),
                total as f64 / secs,
                syncs as f64 / secs,
                total as f64 / syncs.max(1) as f64,
                micros(h.value_at_quantile(0.5)),
                micros(h.value_at_quantile(0.99)),
                micros(h.max()),
            );
            drop(dir);
            always_server(base, size, threads);
        }
    }
}

/// The same through the mio server (`serve --fsync always`): `threads`
/// publishers, each `Publisher::publish` returning once its batch is
/// durable (the latency measured), a live client reading every frame
/// (released only once durable).
fn always_server(base: &Path, size: usize, threads: usize) {
    use tickwire::net::{JournalSettings, ServerConfig};
    let dir = Dir::new(base, "always-server");
    let mut journal = JournalSettings::new(&dir.0);
    journal.config.fsync = FsyncMode::Always;
    let server = tickwire::net::Server::bind(ServerConfig {
        listen: "127.0.0.1:0".parse().unwrap(),
        journal: Some(journal),
        ..ServerConfig::default()
    })
    .unwrap()
    .spawn()
    .unwrap();
    // A live client that discards what it reads (its login first).
    let mut client = TcpStream::connect(server.local_addr()).unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 0, 0, &mut login).unwrap(); // live
    client.write_all(&login).unwrap();
    let reader = thread::spawn(move || {
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0u64;
        while let Ok(k) = client.read(&mut buf) {
            if k == 0 {
                break;
            }
            got += k as u64;
        }
        got
    });
    thread::sleep(Duration::from_millis(100));
    let (disk, _) = fdatasync_rate(
        base,
        messages(size).iter().map(|(_, p)| p.frame_len()).sum(),
        1.0,
    );
    let msgs = Arc::new(messages(size));
    let started = Instant::now();
    let workers: Vec<_> = (0..threads)
        .map(|_| {
            let (publisher, msgs) = (server.publisher(), Arc::clone(&msgs));
            thread::spawn(move || {
                let mut h = Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).unwrap();
                let mut batches = 0u64;
                while started.elapsed() < Duration::from_secs(2) {
                    let t = Instant::now();
                    publisher.publish(msgs.to_vec()).unwrap();
                    h.record(t.elapsed().as_nanos() as u64).unwrap();
                    batches += 1;
                }
                (batches, h)
            })
        })
        .collect();
    let mut total = 0u64;
    let mut h = Histogram::<u64>::new_with_bounds(100, 10_000_000_000, 3).unwrap();
    for w in workers {
        let (b, wh) = w.join().unwrap();
        total += b;
        h.add(wh).unwrap();
    }
    let secs = started.elapsed().as_secs_f64();
    let stats = server.stats();
    server.shutdown().unwrap();
    let read = reader.join().unwrap();
    assert!(read > 0, "the live client received nothing");
    println!(
        "{:>6} {:>8} {disk:>12.0} {:>10} {:>14} {:>12.0} {:>10} {:>13} {:>10} {:>10} {:>10}  \
         (the mio server, publish returns once durable; {} frames published)",
        "server",
        threads,
        "",
        human(total as f64 * size as f64 / secs),
        total as f64 / secs,
        "",
        "",
        micros(h.value_at_quantile(0.5)),
        micros(h.value_at_quantile(0.99)),
        micros(h.max()),
        stats.frames_published,
    );
}

/// CPU time of the calling thread, in nanoseconds (`/proc/thread-self/schedstat`).
fn thread_cpu() -> u64 {
    fs::read_to_string("/proc/thread-self/schedstat")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A loopback connection and a receiver thread counting bytes to EOF:
/// reading them into a buffer (`copy`), or discarding them in the kernel
/// (`MSG_TRUNC`: the receiver costs next to nothing, so the sender's path
/// is what is measured).
fn receiver(copy: bool) -> (TcpStream, thread::JoinHandle<u64>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let out = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (mut peer, _) = listener.accept().unwrap();
    let t = thread::spawn(move || {
        let mut n = 0u64;
        if copy {
            let mut buf = vec![0u8; 1 << 20];
            loop {
                match peer.read(&mut buf) {
                    Ok(0) => return n,
                    Ok(k) => n += k as u64,
                    Err(e) => panic!("{e}"),
                }
            }
        }
        let peer = socket2::Socket::from(peer);
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 1 << 20];
        loop {
            match peer.recv_with_flags(&mut buf, libc::MSG_TRUNC) {
                Ok(0) => return n,
                Ok(k) => n += k as u64,
                Err(e) => panic!("{e}"),
            }
        }
    });
    (out, t)
}

/// One replay path: its name and what sends the journal's bytes.
type Sender<'a> = (&'static str, Box<dyn FnMut(&mut TcpStream) -> u64 + 'a>);

/// Runs every path `ROUNDS` times, interleaved (the machine is shared):
/// the best GB/s of each, and the sender thread's CPU seconds per GB then.
fn replay_cases(senders: &mut [Sender<'_>], copy: bool) -> Vec<(f64, f64)> {
    let mut best = vec![(0.0f64, 0.0f64); senders.len()];
    for _ in 0..ROUNDS {
        for (i, (_, send)) in senders.iter_mut().enumerate() {
            let (mut out, rx) = receiver(copy);
            let (t, cpu) = (Instant::now(), thread_cpu());
            let sent = send(&mut out);
            let cpu = (thread_cpu() - cpu) as f64 / 1e9;
            drop(out);
            let got = rx.join().unwrap();
            let secs = t.elapsed().as_secs_f64();
            assert_eq!(sent, got);
            let gbps = got as f64 / secs / 1e9;
            if gbps > best[i].0 {
                best[i] = (gbps, cpu / (got as f64 / 1e9));
            }
        }
    }
    best
}

fn replay(base: &Path) {
    const BYTES: u64 = 1 << 30;
    const CHUNK: usize = 1 << 20;
    println!("\n## replay of 1 GiB to one loopback TCP receiver (best of {ROUNDS}, interleaved)");
    let dir = Dir::new(base, "replay");
    let (mut j, _) = Journal::open(&dir.0, never()).unwrap();
    j.start_session(1, 1).unwrap();
    let mut retention = Retention::new(usize::MAX);
    let msgs = messages(4096);
    let mut seq = Sequencer::new();
    let mut total = 0u64;
    while total < BYTES {
        let b = encode(&mut seq, &msgs);
        total += b.bytes().len() as u64;
        j.append(&b).unwrap();
        retention.push(b);
    }
    let limit = j.durable_end();
    // Closed: the segment's size is its content (no zeros written ahead).
    j.close().unwrap();
    let segments: Vec<PathBuf> = {
        let mut v: Vec<PathBuf> = fs::read_dir(&dir.0)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|e| e == "twr"))
            .collect();
        v.sort();
        v
    };
    let retention = &retention;
    let jdir = &dir.0;
    let segments = &segments;
    let mut senders: Vec<Sender<'_>> = vec![
        (
            "memory (retention batches, write)",
            Box::new(move |out: &mut TcpStream| {
                let (mut next, mut sent) = (1u64, 0u64);
                while let Some(s) = retention.segment_from(next, CHUNK) {
                    out.write_all(s.bytes()).unwrap();
                    sent += s.bytes().len() as u64;
                    next = s.end();
                }
                sent
            }),
        ),
        (
            "disk, sendfile (next_range + send_range)",
            Box::new(move |out: &mut TcpStream| {
                let mut r = JournalReader::open(jdir, 1).unwrap();
                let mut sent = 0u64;
                while let Some(range) = r.next_range(limit, CHUNK).unwrap() {
                    let mut done = 0;
                    while done < range.len {
                        done += send_range(
                            &range.file,
                            range.offset + done as u64,
                            range.len - done,
                            out,
                        )
                        .unwrap();
                    }
                    sent += range.len as u64;
                }
                sent
            }),
        ),
        (
            "disk, pread + write",
            Box::new(move |out: &mut TcpStream| {
                let mut buf = vec![0u8; CHUNK];
                let mut sent = 0u64;
                for s in segments {
                    let f = File::open(s).unwrap();
                    let mut at = 0u64;
                    loop {
                        let n = f.read_at(&mut buf, at).unwrap();
                        if n == 0 {
                            break;
                        }
                        out.write_all(&buf[..n]).unwrap();
                        at += n as u64;
                        sent += n as u64;
                    }
                }
                sent
            }),
        ),
        (
            "disk, checked read (JournalReader::read) + write",
            Box::new(move |out: &mut TcpStream| {
                let mut r = JournalReader::open(jdir, 1).unwrap();
                let mut buf = Vec::new();
                let mut sent = 0u64;
                while r.read(limit, CHUNK, &mut buf).unwrap().is_some() {
                    out.write_all(&buf).unwrap();
                    sent += buf.len() as u64;
                }
                sent
            }),
        ),
    ];
    for copy in [false, true] {
        println!(
            "receiver {}:",
            if copy {
                "reading into a buffer (the receiver's copy bounds every path)"
            } else {
                "discarding in the kernel (MSG_TRUNC: the sender's path is measured)"
            }
        );
        let r = replay_cases(&mut senders, copy);
        println!(
            "{:>50} {:>8} {:>16} {:>10}",
            "path", "GB/s", "sender CPU s/GB", "vs memory"
        );
        for ((name, _), (gbps, cpu)) in senders.iter().zip(&r) {
            println!("{name:>50} {gbps:>8.2} {cpu:>16.3} {:>9.2}×", gbps / r[0].0);
        }
        println!(
            "sendfile: {:.2}× memory (target ≥ 0.8), {:.2}× pread + write (target ≥ 1.5); \
             CPU per GB {:.2}× of pread + write",
            r[1].0 / r[0].0,
            r[1].0 / r[2].0,
            r[1].1 / r[2].1
        );
    }
}

/// The thread ids of this process now.
fn task_ids() -> Vec<u64> {
    fs::read_dir("/proc/self/task")
        .map(|d| {
            d.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

/// CPU time of thread `tid` of this process, in nanoseconds.
fn task_cpu(tid: u64) -> u64 {
    fs::read_to_string(format!("/proc/self/task/{tid}/schedstat"))
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|v| v.parse().ok()))
        .unwrap_or(0)
}

/// A mio server started with `config`, and the thread id of its event loop.
fn server_with_tid(config: tickwire::net::ServerConfig) -> (tickwire::net::ServerHandle, u64) {
    let before = task_ids();
    let server = tickwire::net::Server::bind(config)
        .unwrap()
        .spawn()
        .unwrap();
    // The thread names itself once it runs.
    for _ in 0..1000 {
        let tid = task_ids().into_iter().find(|t| {
            !before.contains(t)
                && fs::read_to_string(format!("/proc/self/task/{t}/comm"))
                    .is_ok_and(|c| c.trim() == "tickwire-server")
        });
        if let Some(tid) = tid {
            return (server, tid);
        }
        thread::sleep(Duration::from_millis(1));
    }
    panic!("the event loop's thread not found");
}

/// Logs in from 1 on `addr` and receives `bytes` (then closes): reading
/// them into a buffer (`copy`) or discarding them in the kernel
/// (`MSG_TRUNC`); the receiving thread's CPU seconds.
fn login_and_receive(addr: std::net::SocketAddr, bytes: u64, copy: bool) -> f64 {
    let mut socket = TcpStream::connect(addr).unwrap();
    let mut login = [0u8; 24];
    tickwire::encode(&Payload::Login, 1, 0, &mut login).unwrap();
    socket.write_all(&login).unwrap();
    let cpu = thread_cpu();
    let mut n = 0u64;
    if copy {
        let mut buf = vec![0u8; 1 << 20];
        while n < bytes {
            match socket.read(&mut buf) {
                Ok(0) => panic!("closed after {n} of {bytes} bytes"),
                Ok(k) => n += k as u64,
                Err(e) => panic!("{e}"),
            }
        }
    } else {
        let socket = socket2::Socket::from(socket);
        let mut buf = vec![std::mem::MaybeUninit::<u8>::uninit(); 1 << 20];
        while n < bytes {
            let want = buf.len().min((bytes - n) as usize);
            match socket.recv_with_flags(&mut buf[..want], libc::MSG_TRUNC) {
                Ok(0) => panic!("closed after {n} of {bytes} bytes"),
                Ok(k) => n += k as u64,
                Err(e) => panic!("{e}"),
            }
        }
    }
    (thread_cpu() - cpu) as f64 / 1e9
}

/// A login from 1 replayed by the real mio server, from disk (sendfile)
/// and from memory, against a `pread` + `write` loop of the same segments:
/// rounds alternate, the best GB/s of each with the CPU per GB of the
/// thread that sent (the server's event loop; the bench thread for the
/// loop).
fn replay_server(base: &Path) {
    use tickwire::net::{JournalSettings, ServerConfig};
    const CHUNK: usize = 1 << 20;
    let mb: u64 = std::env::var("TICKWIRE_BENCH_REPLAY_MB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(512);
    println!(
        "\n## replay-server: a login from 1 replayed by the mio server, {mb} MiB, one loopback \
         client (best of {ROUNDS}, interleaved)"
    );
    let dir = Dir::new(base, "replay-server");
    let config = |journal: bool| {
        let mut config = ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            ..ServerConfig::default()
        };
        config.core.session.heartbeat_interval = Duration::from_secs(60);
        if journal {
            let mut settings = JournalSettings::new(&dir.0);
            settings.config = JournalConfig {
                segment_bytes: 64 << 20,
                ..never()
            };
            config.journal = Some(settings);
            config.core.retain = 10_000; // ~0.4 MiB: the rest from disk
        } else {
            config.core.retain = usize::MAX / 2; // everything in memory
        }
        config
    };
    let (disk, disk_tid) = server_with_tid(config(true));
    let (memory, memory_tid) = server_with_tid(config(false));
    let msgs = messages(4096);
    let mut data = 0u64;
    let mut seq = Sequencer::new();
    while data < mb << 20 {
        disk.publisher().publish(msgs.clone()).unwrap();
        memory.publisher().publish(msgs.clone()).unwrap();
        data += encode(&mut seq, &msgs).bytes().len() as u64;
    }
    let frames = seq.next_sequence() - 1;
    while disk.stats().frames_published < frames || memory.stats().frames_published < frames {
        thread::sleep(Duration::from_millis(1));
    }
    let bytes = 32 + data; // LoginAccepted, then every frame
                           // Each segment and its content (the one being written ends in zeros,
                           // written ahead: not the journal's bytes).
    let segments: Vec<(PathBuf, u64)> = check(&dir.0)
        .unwrap()
        .sessions
        .iter()
        .flat_map(|s| s.segments.iter().map(|g| (g.path.clone(), g.bytes)))
        .collect();
    let on_disk: u64 = segments.iter().map(|s| s.1).sum();
    assert_eq!(on_disk, data, "the journal holds the frames, nothing else");
    // One replay through the server, timed: (GB/s, CPU s/GB of `tid`).
    let via = |addr, tid: u64, copy: bool| {
        let (t, cpu) = (Instant::now(), task_cpu(tid));
        login_and_receive(addr, bytes, copy);
        let secs = t.elapsed().as_secs_f64();
        let cpu = (task_cpu(tid) - cpu) as f64 / 1e9;
        (bytes as f64 / secs / 1e9, cpu / (bytes as f64 / 1e9))
    };
    // The first replay from disk checks every frame (and verifies the
    // regions for sendfile): the checked path's figure.
    let sf_before = disk.stats().file_bytes_sent;
    let (first, first_cpu) = via(disk.local_addr(), disk_tid, false);
    println!(
        "first replay from disk (checked read, verifying): {first:.2} GB/s, server CPU {first_cpu:.3} s/GB, \
         {} bytes with sendfile",
        disk.stats().file_bytes_sent - sf_before
    );
    // A sender without a server: after the receiver's Login, `send` writes
    // the rest (its bytes counted); (GB/s, the sending thread's CPU s/GB).
    let without_server = |copy: bool, send: Box<dyn FnOnce(&mut TcpStream) -> u64 + Send>| {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let rx = thread::spawn(move || {
            // The same receiver, its Login read and ignored.
            let mut login = [0u8; 24];
            let (mut peer, _) = listener.accept().unwrap();
            peer.read_exact(&mut login).unwrap();
            peer.write_all(&[0u8; 32]).unwrap(); // its "LoginAccepted"
            let cpu = thread_cpu();
            let sent = 32 + send(&mut peer);
            ((thread_cpu() - cpu) as f64 / 1e9, sent)
        });
        let t = Instant::now();
        login_and_receive(addr, bytes, copy);
        let secs = t.elapsed().as_secs_f64();
        let (cpu, sent) = rx.join().unwrap();
        assert_eq!(sent, bytes);
        (bytes as f64 / secs / 1e9, cpu / (bytes as f64 / 1e9))
    };
    let pread_write = |copy: bool| {
        let segments = segments.clone();
        without_server(
            copy,
            Box::new(move |peer: &mut TcpStream| {
                let mut buf = vec![0u8; CHUNK];
                let mut sent = 0u64;
                for (s, len) in &segments {
                    let f = File::open(s).unwrap();
                    let mut at = 0u64;
                    loop {
                        let want = (len - at).min(CHUNK as u64) as usize;
                        let n = f.read_at(&mut buf[..want], at).unwrap();
                        if n == 0 {
                            break;
                        }
                        peer.write_all(&buf[..n]).unwrap();
                        at += n as u64;
                        sent += n as u64;
                    }
                }
                sent
            }),
        )
    };
    // The client's ceiling: one buffer written again and again (no file,
    // no server, no copy on the sending side): no path can go faster to
    // this client.
    let ceiling = |copy: bool| {
        without_server(
            copy,
            Box::new(move |peer: &mut TcpStream| {
                let buf = vec![0xA5u8; CHUNK];
                let (mut sent, rest) = (0u64, bytes - 32);
                while sent < rest {
                    let n = (rest - sent).min(CHUNK as u64) as usize;
                    peer.write_all(&buf[..n]).unwrap();
                    sent += n as u64;
                }
                sent
            }),
        )
    };
    let names = [
        "disk: mio server, sendfile",
        "memory: mio server, retention",
        "disk: pread + write loop, no server",
        "ceiling: one buffer written, no file",
    ];
    for copy in [false, true] {
        println!(
            "client {}:",
            if copy {
                "reading into a buffer"
            } else {
                "discarding in the kernel (MSG_TRUNC)"
            }
        );
        let mut best = [(0.0f64, 0.0f64); 4];
        let sf_before = disk.stats().file_bytes_sent;
        for _ in 0..ROUNDS {
            let r = [
                via(disk.local_addr(), disk_tid, copy),
                via(memory.local_addr(), memory_tid, copy),
                pread_write(copy),
                ceiling(copy),
            ];
            for (b, r) in best.iter_mut().zip(r) {
                if r.0 > b.0 {
                    *b = r;
                }
            }
        }
        let sendfile = disk.stats().file_bytes_sent - sf_before;
        println!(
            "{:>40} {:>8} {:>14} {:>10}",
            "path", "GB/s", "CPU s/GB", "vs memory"
        );
        for (name, (gbps, cpu)) in names.iter().zip(&best) {
            println!(
                "{name:>40} {gbps:>8.2} {cpu:>14.3} {:>9.2}×",
                gbps / best[1].0
            );
        }
        println!(
            "sendfile replay: {:.2}× memory (target ≥ 0.8), {:.2}× pread + write (target ≥ 1.5); \
             CPU per GB {:.2}× memory's, {:.2}× the loop's; {:.1}% of the disk replays' bytes \
             with sendfile",
            best[0].0 / best[1].0,
            best[0].0 / best[2].0,
            best[0].1 / best[1].1,
            best[0].1 / best[2].1,
            sendfile as f64 / (ROUNDS as f64 * bytes as f64) * 100.0
        );
        println!(
            "the client's ceiling: {:.2}× pread + write (no path can beat it); sendfile at {:.2} \
             of the ceiling",
            best[3].0 / best[2].0,
            best[0].0 / best[3].0,
        );
    }
    disk.shutdown().unwrap();
    memory.shutdown().unwrap();
}

/// Drops a file's pages from the page cache (after a sync: only clean pages
/// go). Linux only: elsewhere the "cold" figures are warm ones.
#[cfg(target_os = "linux")]
fn drop_cache(path: &Path) {
    let f = File::open(path).unwrap();
    f.sync_all().unwrap();
    rustix::fs::fadvise(&f, 0, None::<NonZeroU64>, rustix::fs::Advice::DontNeed).unwrap();
}

#[cfg(not(target_os = "linux"))]
fn drop_cache(path: &Path) {
    File::open(path).unwrap().sync_all().unwrap();
}

fn recovery(base: &Path) {
    let gb: u64 = std::env::var("TICKWIRE_BENCH_RECOVERY_GB")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    println!(
        "\n## recovery of a {gb} GB journal (1 GiB segments, an index entry every 64 KiB) \
         written by a mio server (`--fsync never`, written in place) in a child process that \
         exits without closing anything, as a killed `serve` does"
    );
    let dir = Dir::new(base, "recovery");
    let t = Instant::now();
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .env(RECOVERY_CHILD, &dir.0)
        .env("TICKWIRE_BENCH_RECOVERY_GB", gb.to_string())
        .status()
        .unwrap();
    assert!(status.success(), "the writing child failed: {status}");
    let files: Vec<PathBuf> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    let bytes: u64 = files.iter().map(|p| fs::metadata(p).unwrap().len()).sum();
    println!(
        "written {:.2} GB in {:.1} s ({} files; the child published, exited, then every file \
         was synced and its pages dropped)",
        bytes as f64 / 1e9,
        t.elapsed().as_secs_f64(),
        files.len()
    );
    let cold = |files: &[PathBuf]| {
        for f in files {
            drop_cache(f);
        }
    };
    let open = || {
        let t = Instant::now();
        let (j, rec) = Journal::open(&dir.0, never()).unwrap();
        let e = t.elapsed();
        drop(j);
        (e, rec)
    };
    cold(&files);
    let (cold_open, rec) = open();
    let (warm_open, _) = open();
    println!(
        "Journal::open after the kill, cold cache: {:.1} ms (cut {} bytes: {}); then warm: \
         {:.2} ms (next sequence {})",
        cold_open.as_secs_f64() * 1e3,
        rec.truncated.as_ref().map_or(0, |t| t.bytes),
        rec.truncated
            .as_ref()
            .map_or_else(|| "nothing".to_string(), |t| format!("{t:?}")),
        warm_open.as_secs_f64() * 1e3,
        rec.session.unwrap().next
    );
    // A torn tail: half a frame at the end of the last segment.
    let last = {
        let mut v: Vec<&PathBuf> = files
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "twr"))
            .collect();
        v.sort();
        (*v.last().unwrap()).clone()
    };
    let mut f = fs::OpenOptions::new().append(true).open(&last).unwrap();
    f.write_all(&[0xa5, 0x01, 0x10, 0x2c, 0, 0, 0]).unwrap();
    drop(f);
    let files: Vec<PathBuf> = fs::read_dir(&dir.0)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    cold(&files);
    let (torn_open, rec) = open();
    println!(
        "Journal::open with a torn tail, cold: {:.1} ms, cut {} bytes",
        torn_open.as_secs_f64() * 1e3,
        rec.truncated.map_or(0, |t| t.bytes)
    );
    cold(&files);
    let t = Instant::now();
    let report = check(&dir.0).unwrap();
    let full = t.elapsed();
    assert!(!report.is_damaged());
    println!(
        "for comparison, check (reads and parses every byte), cold: {:.1} s, {:.2} GB/s: \
         recovery is {:.0}× faster",
        full.as_secs_f64(),
        bytes as f64 / full.as_secs_f64() / 1e9,
        full.as_secs_f64() / cold_open.as_secs_f64()
    );
}

fn human(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2} M", rate / 1e6)
    } else if rate >= 1e3 {
        format!("{:.1} k", rate / 1e3)
    } else {
        format!("{rate:.0}")
    }
}

fn micros(ns: u64) -> String {
    format!("{:.1} µs", ns as f64 / 1e3)
}
