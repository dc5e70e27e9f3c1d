//! Tests of the journaled servers: write-ahead seen from clients and
//! datagram lines, `fsync always`, reboots, relays.

use super::*;
use crate::encode::{Payload, QuoteFields, Sequencer};

fn batch(first: u64, n: usize) -> Batch {
    let mut bytes = vec![0u8; n * 44];
    Sequencer::starting_at(first).encode_batch(
        &vec![(0, Payload::Quote(QuoteFields::default())); n],
        &mut bytes,
    );
    Batch::new(bytes).unwrap()
}

fn dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "tickwire-relay-journal-{tag}-{}",
        std::process::id()
    ));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// A relay's journal written in another boot, not synced and not
/// closed: an origin's would need a new session; a relay's session
/// goes on from its next sequence (its frames are its upstream's),
/// in a segment of its own, and checks clean as one session.
#[test]
fn a_relays_session_goes_on_after_a_reboot() {
    let dir = dir("reboot");
    let settings = JournalSettings::new(&dir);
    let (mut journal, _) = Journal::open_in_boot(&dir, settings.config.clone(), [1; 16]).unwrap();
    journal.start_session(7, 1).unwrap();
    journal.append(&batch(1, 3)).unwrap();
    drop(journal); // killed
    let (journal, recovered) =
        Journal::open_in_boot(&dir, settings.config.clone(), [2; 16]).unwrap();
    assert!(recovered.new_session_required);
    let relay = RelayJournal {
        held: recovered.session.map(|s| Held {
            session_id: s.session_id,
            next: s.next,
            oldest: journal.oldest_of_last(s.session_id).unwrap_or(s.next),
        }),
        journal,
        settings: settings.clone(),
        new_session_required: recovered.new_session_required,
    };
    assert_eq!(
        relay.held(),
        Some(Held {
            session_id: 7,
            next: 4,
            oldest: 1
        })
    );
    let opened = relay.serve(7, 4).unwrap();
    assert_eq!((opened.session_id, opened.next), (7, 4));
    opened.wal.append(&batch(4, 2)).unwrap();
    opened.wal.close();
    let report = crate::journal::check(&dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    let sessions: Vec<_> = report
        .sessions
        .iter()
        .map(|s| (s.session_id, s.first, s.end, s.frames, s.holes))
        .collect();
    assert_eq!(sessions, [(7, 1, 6, 5, 0)], "one session, no hole");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The data frames' sequences in `bytes` (whole frames; a torn last
/// one is not counted).
fn data_sequences(bytes: &[u8]) -> Vec<u64> {
    crate::parse::SliceParser::new(bytes)
        .filter_map(|e| match e {
            crate::parse::Event::Frame(m) if m.msg_type().is_data() => Some(m.sequence()),
            _ => None,
        })
        .collect()
}

/// A journaled mio server on 127.0.0.1 with a datagram line to a
/// receiver of the test's, and a live TCP client logged in: what each
/// has received.
struct Watched {
    server: crate::net::ServerHandle,
    wal: Arc<Wal>,
    tcp: std::net::TcpStream,
    udp: std::net::UdpSocket,
    tcp_bytes: Vec<u8>,
    /// The data sequences of every datagram, as they came.
    udp_data: Vec<u64>,
}

impl Watched {
    fn start(settings: JournalSettings) -> Watched {
        use std::io::Write;
        let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let line = crate::net::DatagramOutputConfig::new(udp.local_addr().unwrap());
        let mut config = crate::net::ServerConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            journal: Some(settings),
            datagrams: Some(line),
            ..crate::net::ServerConfig::default()
        };
        // The loop wakes often by itself (heartbeats, idle Packets): it
        // would take the batches from its queue within the stall if
        // nothing held them.
        config.core.session.heartbeat_interval = Duration::from_millis(20);
        let server = crate::net::Server::bind(config).unwrap().spawn().unwrap();
        let wal = Arc::clone(server.publisher().numbering.wal.as_ref().unwrap());
        let mut tcp = std::net::TcpStream::connect(server.local_addr()).unwrap();
        tcp.set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let mut login = [0u8; 24];
        crate::encode(&Payload::Login, 0, 0, &mut login).unwrap();
        tcp.write_all(&login).unwrap();
        let mut watched = Watched {
            server,
            wal,
            tcp,
            udp,
            tcp_bytes: Vec::new(),
            udp_data: Vec::new(),
        };
        let accepted = |w: &Watched| {
            crate::parse::SliceParser::new(&w.tcp_bytes).any(|e| {
                matches!(
                    e,
                    crate::parse::Event::Frame(crate::Message::LoginAccepted(_))
                )
            })
        };
        watched.read_for(Duration::from_secs(5), accepted);
        assert!(accepted(&watched), "no LoginAccepted");
        watched
    }

    fn tcp_data(&self) -> Vec<u64> {
        data_sequences(&self.tcp_bytes)
    }

    fn nothing(&self) -> bool {
        self.tcp_data().is_empty() && self.udp_data.is_empty()
    }

    fn all(&self, n: usize) -> bool {
        self.tcp_data().len() >= n && self.udp_data.len() >= n
    }

    /// Reads the client and the datagram receiver until `done` or for
    /// `limit` at most (each read waits 10 ms at most).
    fn read_for(&mut self, limit: Duration, done: impl Fn(&Watched) -> bool) {
        use std::io::Read;
        let start = std::time::Instant::now();
        let mut chunk = vec![0u8; 1 << 16];
        while !done(self) && start.elapsed() < limit {
            match self.tcp.read(&mut chunk) {
                Ok(0) => break, // closed: the assertions say what is missing
                Ok(n) => self.tcp_bytes.extend_from_slice(&chunk[..n]),
                Err(_) => {}
            }
            if let Ok(n) = self.udp.recv(&mut chunk) {
                self.udp_data.extend(data_sequences(&chunk[..n]));
            }
        }
    }

    /// Stops the server; the journal's frames, checked.
    fn shutdown(self, dir: &std::path::Path) -> u64 {
        drop((self.tcp, self.udp));
        self.server.shutdown().unwrap();
        let report = crate::journal::check(dir).unwrap();
        assert!(!report.is_damaged(), "{report:?}");
        report.sessions.iter().map(|s| s.frames).sum()
    }
}

/// Lets the journal's writer thread and its syncs go on again whatever
/// happens (a failed assertion must not leave the shutdown, or a
/// publisher, waiting for a stalled disk).
struct Stall {
    wal: Arc<Wal>,
    /// The syncs stalled (else the writer thread).
    sync: bool,
}

impl Stall {
    /// The writer thread stalled (written behind).
    fn writer(wal: &Arc<Wal>) -> Stall {
        wal.pause_writer(true);
        let wal = Arc::clone(wal);
        Stall { wal, sync: false }
    }

    /// Every `fdatasync` stalled (`fsync always`).
    fn sync(wal: &Arc<Wal>) -> Stall {
        wal.sync.shared.pause_sync(true);
        let wal = Arc::clone(wal);
        Stall { wal, sync: true }
    }
}

impl Drop for Stall {
    fn drop(&mut self) {
        if self.sync {
            self.wal.sync.shared.pause_sync(false);
        } else {
            self.wal.pause_writer(false);
        }
    }
}

/// Written behind, the mio server releases a batch to clients and
/// datagram lines only once the journal's thread has written it: with
/// the thread stalled (a disk that does not take the bytes), a live
/// client and a datagram receiver get nothing and the durable end
/// stays put; once it goes on, both get every frame, in order.
#[test]
fn written_behind_a_batch_reaches_no_client_before_the_journal_holds_it() {
    let dir = dir("stalled");
    let mut settings = JournalSettings::new(&dir);
    settings.config.fsync = FsyncMode::Never;
    settings.config.writes = WriteMode::Behind;
    let mut w = Watched::start(settings);
    let publisher = w.server.publisher();
    let wal = Arc::clone(&w.wal);
    let stall = Stall::writer(&wal);
    let msgs = vec![(1, Payload::Quote(QuoteFields::default())); 10];
    publisher.publish(msgs.clone()).unwrap();
    publisher.publish(msgs).unwrap();
    w.read_for(Duration::from_millis(500), |w| !w.nothing());
    assert!(
        w.tcp_data().is_empty(),
        "a frame before the journal held it"
    );
    assert!(
        w.udp_data.is_empty(),
        "a datagram before the journal held its frames"
    );
    assert_eq!(wal.durable_end(), 1);
    drop(stall);
    w.read_for(Duration::from_secs(5), |w| w.all(20));
    assert_eq!(w.tcp_data(), (1..=20).collect::<Vec<_>>());
    assert_eq!(w.udp_data, (1..=20).collect::<Vec<_>>());
    assert_eq!(wal.durable_end(), 21);
    assert_eq!(w.shutdown(&dir), 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fsync always` through the server: with the `fdatasync` stalled (a
/// disk that does not finish the flush), two publishes on other threads
/// are in the journal but do not return, a live client and a datagram
/// receiver get no data frame, and the durable end stays put; once the
/// sync goes on, both publishes return Ok and both receivers get every
/// frame, in order.
#[test]
fn fsync_always_holds_publishers_clients_and_datagrams_until_durable() {
    let dir = dir("always-stalled");
    let mut settings = JournalSettings::new(&dir);
    settings.config.fsync = FsyncMode::Always;
    let mut w = Watched::start(settings);
    let wal = Arc::clone(&w.wal);
    let stall = Stall::sync(&wal);
    let (done, returned) = std::sync::mpsc::channel();
    let threads: Vec<_> = (0..2)
        .map(|_| {
            let (publisher, done) = (w.server.publisher(), done.clone());
            std::thread::spawn(move || {
                let msgs = vec![(1, Payload::Quote(QuoteFields::default())); 10];
                let _ = done.send(publisher.publish(msgs));
            })
        })
        .collect();
    // Both batches appended (numbered 1..=20) before the window starts.
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while wal.next_sequence() != Some(21) && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    assert_eq!(wal.next_sequence(), Some(21), "both batches appended");
    w.read_for(Duration::from_millis(500), |w| !w.nothing());
    assert!(
        returned.try_recv().is_err(),
        "a publish returned before its batch was durable"
    );
    assert!(w.tcp_data().is_empty(), "a frame before it was durable");
    assert!(
        w.udp_data.is_empty(),
        "a datagram before its frames were durable"
    );
    assert_eq!(wal.durable_end(), 1);
    drop(stall);
    for _ in 0..2 {
        let result = returned.recv_timeout(Duration::from_secs(5));
        assert!(matches!(result, Ok(Ok(()))), "{result:?}");
    }
    for t in threads {
        t.join().unwrap();
    }
    w.read_for(Duration::from_secs(5), |w| w.all(20));
    assert_eq!(w.tcp_data(), (1..=20).collect::<Vec<_>>());
    assert_eq!(w.udp_data, (1..=20).collect::<Vec<_>>());
    assert_eq!(wal.durable_end(), 21);
    assert_eq!(w.shutdown(&dir), 20);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Five frames of session `OLD` written in `boot` (`None`: this one)
/// with `fsync`, then dropped unclosed (a kill, or the machine going
/// down).
fn killed_journal(dir: &std::path::Path, fsync: FsyncMode, boot: Option<[u8; 16]>) {
    let config = JournalConfig {
        fsync,
        ..JournalConfig::default()
    };
    let (mut journal, _) = match boot {
        Some(boot) => Journal::open_in_boot(dir, config, boot).unwrap(),
        None => Journal::open(dir, config).unwrap(),
    };
    journal.start_session(OLD, 1).unwrap();
    journal.append(&batch(1, 5)).unwrap();
    // The interval thread's sync covering everything changes nothing:
    // only a clean close (or always) makes the session survive a reboot.
    let sync = journal.sync_handle();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while fsync != FsyncMode::Never && sync.synced_end() < 6 && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    if fsync != FsyncMode::Never {
        assert_eq!(sync.synced_end(), 6, "synced by the interval thread");
    }
    drop(journal);
}

const OLD: u64 = 0x0123_4567_89ab_cdef;

/// The sessions of the journal in `dir`: (id, first, end, frames).
fn sessions(dir: &std::path::Path) -> Vec<(u64, u64, u64, u64)> {
    let report = crate::journal::check(dir).unwrap();
    assert!(!report.is_damaged(), "{report:?}");
    report
        .sessions
        .iter()
        .map(|s| (s.session_id, s.first, s.end, s.frames))
        .collect()
}

/// A server started on a journal whose last session was written in
/// another boot, with `fsync` `never` or `interval`, and not closed
/// (the machine went down): it serves a NEW session from sequence 1
/// (a client resuming the old one gets `NewSession`, then every frame
/// from 1), the old session's frames stay in the journal; configured
/// with the old session id it does not start (a clear error, the
/// journal untouched). The same journal written in this boot: the
/// session continues at 6 (what makes the difference is the reboot).
#[test]
fn a_server_after_a_reboot_starts_a_new_session_unless_always_or_closed() {
    use crate::net::{Client, ClientConfig, Server, ServerConfig};
    use crate::session::ClientEvent;
    for fsync in [
        FsyncMode::Never,
        FsyncMode::Interval(Duration::from_millis(5)),
    ] {
        let dir = dir("server-reboot");
        let mut settings = JournalSettings::new(&dir);
        settings.config.fsync = fsync;
        let config = |session_id: u64| {
            let mut config = ServerConfig {
                listen: "127.0.0.1:0".parse().unwrap(),
                journal: Some(settings.clone()),
                ..ServerConfig::default()
            };
            config.core.session.session_id = session_id;
            config
        };

        // This boot: the session goes on.
        killed_journal(&dir, fsync, None);
        let server = Server::bind(config(0)).unwrap().spawn().unwrap();
        assert_eq!(
            (server.session_id(), server.next_sequence()),
            (OLD, 6),
            "{fsync}: same boot"
        );
        server.shutdown().unwrap();
        let _ = std::fs::remove_dir_all(&dir);

        // Another boot, the old session id configured: an error at
        // start naming why, nothing written.
        killed_journal(&dir, fsync, Some([1; 16]));
        let started = Server::bind(config(OLD));
        assert!(started.is_err(), "{fsync}: started on the old session id");
        let e = started.err().unwrap();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput, "{fsync}: {e}");
        let message = e.to_string();
        assert!(
            message.contains(&format!("session {OLD:#018x} cannot continue"))
                && message.contains("configured session id is that same one"),
            "{fsync}: {message}"
        );
        assert_eq!(sessions(&dir), [(OLD, 1, 6, 5)], "{fsync}: touched");

        // Another boot, any id: a new session from 1.
        let server = Server::bind(config(0)).unwrap().spawn().unwrap();
        let new = server.session_id();
        assert!(new != OLD && new != 0, "{fsync}: session {new:#x}");
        assert_eq!(server.next_sequence(), 1, "{fsync}");
        let mut client_config = ClientConfig::new(server.local_addr());
        client_config.from = 6;
        client_config.resume_session = Some(OLD);
        let mut client = Client::new(client_config).unwrap();
        let (mut new_session, mut data) = (Vec::new(), Vec::new());
        let mut published = false;
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while data.len() < 3 && std::time::Instant::now() < deadline {
            client
                .poll(Some(Duration::from_millis(20)), |event| match event {
                    ClientEvent::NewSession {
                        session_id,
                        sequence,
                    } => new_session.push((session_id, sequence)),
                    ClientEvent::Frame(m) if m.is_data() => data.push(m.sequence()),
                    _ => {}
                })
                .unwrap();
            if !published && !new_session.is_empty() {
                let msgs = vec![(1, Payload::Quote(QuoteFields::default())); 3];
                server.publisher().publish(msgs).unwrap();
                published = true;
            }
        }
        assert_eq!(new_session, [(new, 1)], "{fsync}");
        assert_eq!(data, [1, 2, 3], "{fsync}");
        drop(client);
        server.shutdown().unwrap();
        assert_eq!(
            sessions(&dir),
            [(OLD, 1, 6, 5), (new, 1, 4, 3)],
            "{fsync}: the old session kept"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}

/// Another upstream session: a new journal session from its first
/// sequence; an empty journal: the upstream's session.
#[test]
fn another_upstream_session_starts_a_journal_session() {
    let dir = dir("other");
    let settings = JournalSettings::new(&dir);
    let config = crate::net::ServerConfig {
        journal: Some(settings.clone()),
        ..crate::net::ServerConfig::default()
    };
    let relay = open_relay(&config).unwrap().unwrap();
    assert_eq!(relay.held(), None);
    let opened = relay.serve(7, 10).unwrap();
    assert_eq!((opened.session_id, opened.next), (7, 10));
    opened.wal.append(&batch(10, 2)).unwrap();
    opened.wal.close();
    drop(opened);
    let relay = open_relay(&config).unwrap().unwrap();
    assert_eq!(
        relay.held(),
        Some(Held {
            session_id: 7,
            next: 12,
            oldest: 10
        })
    );
    let opened = relay.serve(8, 1).unwrap();
    assert_eq!((opened.session_id, opened.next), (8, 1));
    opened.wal.close();
    let report = crate::journal::check(&dir).unwrap();
    let ids: Vec<_> = report.sessions.iter().map(|s| s.session_id).collect();
    assert_eq!(ids, [7, 8]);
    let _ = std::fs::remove_dir_all(&dir);
}
