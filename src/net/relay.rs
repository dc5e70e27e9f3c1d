//! Relays (protocol section 10): [`RelayFeed`], the server's input for
//! frames that were numbered elsewhere, and [`Relay`], a client of an
//! upstream server (or a fail-over list of them) that serves what it
//! receives again through the reference [`Server`].
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use super::client::Client;
use super::client_config::{ClientConfig, ClientStats};
use super::datagram::{DatagramClient, DatagramClientConfig, DatagramClientStats};
use super::feed::{Numbering, RelayControl, ToLoop};
use super::journaled::{open_relay, Held, RelayJournal};
use super::publish::PublishError;
use super::server::{Server, ServerHandle};
use super::server_config::ServerConfig;
use super::stats::{ServerStats, Shared};
use crate::session::datagram::DatagramEvent;
use crate::session::{Batch, ClientEvent, ClientState};
use crate::Message;

mod catch_up;

/// A relay's upstream frames are handed to its server in batches of at
/// most this many bytes (and at least once per poll of the upstream).
const RELAY_BATCH: usize = 256 << 10;
/// How long one poll of the upstream client waits at most.
const UPSTREAM_POLL: Duration = Duration::from_millis(20);

/// The input of a relay's server: data frames that already carry their
/// sequences, timestamps and checksums (they are sent byte for byte), the
/// holes between them, the session they belong to, and whether their source
/// is alive. Get one from [`Server::relay_feed`] or
/// [`ServerHandle::relay_feed`]; do not also publish with a
/// [`Publisher`](super::Publisher) (its numbering would clash). Clone it
/// freely; everything sent through it reaches the event loop in order.
///
/// On a server with a journal that continued its session, subscribe
/// upstream from [`ServerHandle::next_sequence`] in
/// [`ServerHandle::session_id`]'s session
/// ([`ClientConfig::resume_session`]), as [`Relay`] does: frames the
/// journal holds already are dropped here rather than journaled twice.
///
/// What the server does with it (protocol section 10):
/// - [`publish`](Self::publish): the frames are retained and sent, byte for
///   byte, to live clients and datagram lines. A batch that starts after the
///   last one leaves a hole: replays, retransmissions and live clients see
///   it as the same gap (the server never renumbers).
/// - [`advance`](Self::advance): a range that will never come (upstream said
///   so): Heartbeats carry the new next sequence.
/// - [`new_session`](Self::new_session): EndOfSession to every TCP client
///   (and a final datagram), their connections closed, the retention
///   emptied; new logins and datagrams get the new session id.
/// - [`set_upstream_alive`](Self::set_upstream_alive)`(false)`: no idle
///   Heartbeats and no Packet-only datagrams until it is alive again, so the
///   clients' liveness (section 4.6) reflects the source.
///
/// ```
/// use tickwire::io::FrameReader;
/// use tickwire::net::{Server, ServerConfig};
/// use tickwire::parse::Event;
/// use tickwire::session::{Batch, CoreConfig};
/// use tickwire::{encode::QuoteFields, Message, Payload, Sequencer};
/// use std::io::Write;
///
/// // Frames 5 and 6, numbered upstream.
/// let mut seq = Sequencer::starting_at(5);
/// let mut bytes = vec![0u8; 2 * 44];
/// let done = seq.encode_batch(&[(7, Payload::Quote(QuoteFields::default())); 2], &mut bytes);
/// bytes.truncate(done.bytes);
/// let upstream = bytes.clone();
///
/// let config = ServerConfig {
///     listen: "127.0.0.1:0".parse()?,
///     core: CoreConfig::new(0xfeed),
///     ..ServerConfig::default()
/// };
/// let server = Server::bind(config)?.spawn()?;
/// let feed = server.relay_feed();
/// feed.advance(5)?; // 1..=4 are gone upstream
/// feed.publish(Batch::new(bytes)?)?;
/// for _ in 0..500 {
///     if server.stats().frames_published == 2 { break }
///     std::thread::sleep(std::time::Duration::from_millis(2));
/// }
///
/// let mut socket = std::net::TcpStream::connect(server.local_addr())?;
/// let mut login = [0u8; 24];
/// tickwire::encode(&Payload::Login, 1, 0, &mut login)?;
/// socket.write_all(&login)?;
/// let mut reader = FrameReader::new(socket);
/// let mut got = Vec::new();
/// while got.len() < 88 {
///     match reader.next_event()? {
///         Some(Event::Frame(Message::LoginAccepted(la))) => assert_eq!(la.sequence(), 5),
///         Some(Event::Frame(m)) if m.msg_type().is_data() => got.extend_from_slice(m.as_bytes()),
///         Some(_) => {}
///         None => break,
///     }
/// }
/// assert_eq!(got, upstream); // byte for byte, the upstream's sequences and timestamps
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug)]
pub struct RelayFeed {
    numbering: Arc<Numbering>,
    shared: Arc<Shared>,
}

impl RelayFeed {
    pub(super) fn new(numbering: Arc<Numbering>, shared: Arc<Shared>) -> RelayFeed {
        RelayFeed { numbering, shared }
    }

    fn send(&self, message: ToLoop) -> Result<(), PublishError> {
        self.numbering
            .tx
            .send(message)
            .map_err(|_| PublishError::Closed)?;
        let _ = self.numbering.waker.wake();
        Ok(())
    }

    /// Queues data frames numbered upstream (consecutive within the batch),
    /// blocking while the server's queue is full. A batch starting after the
    /// end of the previous one leaves a hole; one starting before it starts
    /// a new sequence space (use [`new_session`](Self::new_session) for that).
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server has stopped.
    pub fn publish(&self, batch: Batch) -> Result<(), PublishError> {
        let n = &self.numbering;
        // With a journal: appended first (frames it holds already are not
        // appended or served twice: a `Relay` asks its upstream from the
        // journal's next sequence, but a feed driven by hand may not).
        let (batch, ticket) = match &n.wal {
            Some(wal) => {
                let Some(batch) = super::not_journaled(batch, wal.next_sequence()) else {
                    return Ok(());
                };
                let ticket = wal.append(&batch)?;
                (batch, wal.always().then_some((wal, ticket)))
            }
            None => (batch, None),
        };
        let batch = Arc::new(batch);
        // The datagrams leave from here, as a Publisher's do, and before the
        // loop can take the batch: once the server counts a batch as
        // published, its datagrams are out (with `fsync always`, the loop
        // sends them once the batch is durable).
        n.send_datagrams(&batch);
        n.batch_queued();
        if n.tx.send(ToLoop::Batch(Arc::clone(&batch))).is_err() {
            n.batch_gone();
            return Err(PublishError::Closed);
        }
        match ticket {
            Some((wal, ticket)) => {
                let durable = wal.wait(ticket);
                let _ = n.waker.wake();
                durable
            }
            None => {
                n.wake_for_batch();
                Ok(())
            }
        }
    }

    /// The next data sequence is `next` (if higher than now): the frames
    /// before it that were not published never will be.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server has stopped.
    pub fn advance(&self, next: u64) -> Result<(), PublishError> {
        self.send(ToLoop::Relay(RelayControl::Advance(next)))?;
        if let Some(mut output) = self.numbering.direct_datagrams() {
            output.advance(next);
        }
        Ok(())
    }

    /// The upstream session changed to `session_id`, whose next data
    /// sequence is `next`: every TCP client gets EndOfSession and is closed
    /// (they log in again and see the new session), the retention is
    /// emptied, and datagrams carry the new session id.
    ///
    /// # Errors
    /// [`PublishError::Closed`] once the server has stopped.
    pub fn new_session(&self, session_id: u64, next: u64) -> Result<(), PublishError> {
        if let Some(wal) = &self.numbering.wal {
            wal.start_session(session_id, next)?;
        }
        self.shared.session_id.store(session_id, Ordering::SeqCst);
        self.send(ToLoop::Relay(RelayControl::Session { session_id, next }))?;
        // After the old session's datagrams, before the new one's.
        if let Some(mut output) = self.numbering.direct_datagrams() {
            let now = output.now();
            output.new_session(now, session_id, next);
        }
        Ok(())
    }

    /// Whether the upstream is alive: while it is not, the server sends no
    /// idle Heartbeats and no Packet-only datagrams (section 10.3). Alive
    /// initially.
    pub fn set_upstream_alive(&self, alive: bool) {
        let was_down = self.shared.upstream_down.swap(!alive, Ordering::SeqCst);
        if was_down == alive {
            let _ = self.numbering.waker.wake();
        }
    }
}

/// Relay settings.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// The upstream: a server of the session (origin or relay) and, in
    /// [`fallbacks`](ClientConfig::fallbacks), more of them for fail-over.
    /// [`from`](ClientConfig::from) is 1 by default: the relay asks for
    /// everything its upstream retains, so it can replay it. A relay
    /// restarted on a journal that holds a session asks from the journal's
    /// next sequence in that session instead ([`Relay`]).
    pub upstream: ClientConfig,
    /// The server it serves downstream with (listen address, retention,
    /// datagram lines…). Its session id (`core.session.session_id`) is
    /// ignored: a relay serves its upstream's.
    pub server: ServerConfig,
    /// How long [`Relay::start`] waits for the first upstream login, or
    /// the first datagram (10 s).
    pub start_timeout: Duration,
    /// Take the upstream from a datagram feed instead of a TCP login (see
    /// [`RelayConfig::from_datagrams`]); `None` by default.
    pub datagram_upstream: Option<DatagramClientConfig>,
}

impl RelayConfig {
    /// A relay of `upstream` (in fail-over order) serving on `listen`.
    /// `None` when `upstream` is empty.
    ///
    /// ```
    /// let up = ["127.0.0.1:7878".parse()?];
    /// let config = tickwire::net::RelayConfig::new(&up, "127.0.0.1:7879".parse()?).ok_or("empty")?;
    /// assert_eq!(config.upstream.from, 1);
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn new(upstream: &[SocketAddr], listen: SocketAddr) -> Option<RelayConfig> {
        let mut upstream = ClientConfig::with_servers(upstream)?;
        upstream.from = 1;
        Some(RelayConfig {
            upstream,
            server: ServerConfig {
                listen,
                ..ServerConfig::default()
            },
            start_timeout: Duration::from_secs(10),
            datagram_upstream: None,
        })
    }

    /// A relay of a datagram feed (protocol section 8: one or two lines,
    /// multicast or unicast, with retransmission from
    /// [`retransmit`](DatagramClientConfig::retransmit)) serving on
    /// `listen`. The relay is alive while datagrams arrive (the publisher
    /// sends a Packet-only one each idle heartbeat interval): silent for
    /// three of [`heartbeat_interval`](DatagramClientConfig::heartbeat_interval),
    /// it stops its own Heartbeats. It starts at the first datagram's
    /// sequence, unless the receiver's
    /// [`start`](crate::session::datagram::DatagramConfig::start) says
    /// otherwise (then it recovers the range before by retransmission: size
    /// the receiver's window for it). Restarted on its journal
    /// ([`ServerConfig::journal`](super::ServerConfig::journal)), it
    /// resumes the journal's session at the journal's next sequence
    /// instead (see [`Relay`]): an outage within half the receiver's
    /// [`window`](crate::session::datagram::DatagramConfig::window) is
    /// recovered by retransmission; a longer one is caught up over TCP
    /// first (a login to the retransmission server from the journal's next
    /// sequence, in its session, until within a quarter window of the
    /// datagrams' live edge), then the datagrams take over. Without a
    /// retransmission server, what the window cannot hold reaches the
    /// clients as a gap (reported, never silent).
    ///
    /// ```
    /// use tickwire::net::{DatagramClientConfig, RelayConfig};
    /// let mut feed = DatagramClientConfig::new("127.0.0.1:0".parse()?);
    /// feed.retransmit = Some("127.0.0.1:7878".parse()?);
    /// let config = RelayConfig::from_datagrams(feed, "127.0.0.1:7879".parse()?);
    /// assert!(config.datagram_upstream.is_some());
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    #[must_use]
    pub fn from_datagrams(feed: DatagramClientConfig, listen: SocketAddr) -> RelayConfig {
        let mut upstream = ClientConfig::new(feed.retransmit.unwrap_or(feed.line_a));
        upstream.from = 1;
        RelayConfig {
            upstream,
            server: {
                let mut server = ServerConfig {
                    listen,
                    ..ServerConfig::default()
                };
                server.core.session.heartbeat_interval = feed.heartbeat_interval;
                server
            },
            start_timeout: Duration::from_secs(10),
            datagram_upstream: Some(feed),
        }
    }
}

/// Why a relay did not start or stopped.
#[derive(Debug)]
#[non_exhaustive]
pub enum RelayError {
    /// No upstream accepted a login within the start timeout.
    NoUpstream,
    /// The upstream client gave up (its retries are exhausted).
    GaveUp(String),
    /// Binding the server, or polling, failed.
    Io(io::Error),
}

impl fmt::Display for RelayError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RelayError::NoUpstream => f.write_str("no upstream accepted a login in time"),
            RelayError::GaveUp(why) => write!(f, "upstream: {why}"),
            RelayError::Io(e) => write!(f, "relay: {e}"),
        }
    }
}

impl std::error::Error for RelayError {}

impl From<io::Error> for RelayError {
    fn from(e: io::Error) -> RelayError {
        RelayError::Io(e)
    }
}

/// What the upstream said, in order, for the server.
#[derive(Debug)]
enum Op {
    /// Consecutive data frames, already checked by the upstream parser or
    /// datagram receiver (not checked again).
    Frames {
        first: u64,
        frames: u64,
        bytes: Vec<u8>,
    },
    Advance(u64),
    Session {
        session_id: u64,
        next: u64,
    },
    Alive(bool),
}

/// Turns the upstream client's events into the server's input.
#[derive(Debug, Default)]
struct Pump {
    ops: Vec<Op>,
    /// Consecutive data frames not yet handed over.
    run: Vec<u8>,
    /// The run's first sequence and its number of frames.
    run_first: u64,
    run_frames: u64,
    session: Option<u64>,
    /// The first login's sequence (the relay's first data sequence).
    first: u64,
    /// Between the first login and the first frame after it.
    at_start: bool,
    /// The range before the upstream's oldest retained frame at the first
    /// login (reported by the client as a gap): not a loss of the relay's.
    before_start: u64,
    gave_up: Option<String>,
    /// Logins the upstream accepted.
    logins: u64,
    /// The sequence after what was handed over last (data, holes,
    /// sessions).
    flushed_next: u64,
}

impl Pump {
    /// Polls the upstream client into this pump until `done` says so, at
    /// most `timeout` (then `NoUpstream`), or until the client gives up.
    fn wait_for(
        &mut self,
        client: &mut Client,
        timeout: Duration,
        done: impl Fn(&Pump) -> bool,
    ) -> Result<(), RelayError> {
        let deadline = Instant::now() + timeout;
        while !done(self) {
            if let Some(why) = self.gave_up.take() {
                return Err(RelayError::GaveUp(why));
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RelayError::NoUpstream);
            }
            client.poll(Some(left.min(UPSTREAM_POLL)), |e| self.on_event(e))?;
        }
        Ok(())
    }

    /// A pump that goes on with session `session_id` at `next` (a relay
    /// restarted on its journal): the upstream's login in that session
    /// continues it, another session is a new one.
    fn resuming(session_id: u64, next: u64) -> Pump {
        Pump {
            session: Some(session_id),
            first: next,
            flushed_next: next,
            ..Pump::default()
        }
    }

    fn end_run(&mut self) {
        if !self.run.is_empty() {
            self.ops.push(Op::Frames {
                first: self.run_first,
                frames: self.run_frames,
                bytes: std::mem::take(&mut self.run),
            });
            self.run_frames = 0;
        }
    }

    /// A checked data frame: appended to the run if it continues it (and
    /// the run is not full), else it starts a new one.
    fn push_frame(&mut self, sequence: u64, bytes: &[u8]) {
        let next = self.run_first.saturating_add(self.run_frames);
        if self.run.len() >= RELAY_BATCH || (!self.run.is_empty() && sequence != next) {
            self.end_run();
        }
        if self.run.is_empty() {
            self.run_first = sequence;
        }
        self.run.extend_from_slice(bytes);
        self.run_frames += 1;
    }

    fn on_event(&mut self, event: ClientEvent<'_>) {
        match event {
            ClientEvent::LoggedIn {
                session_id,
                sequence,
            } => {
                self.end_run();
                match self.session {
                    None => {
                        self.first = sequence;
                        self.at_start = true;
                    }
                    Some(old) if old != session_id => self.ops.push(Op::Session {
                        session_id,
                        next: sequence,
                    }),
                    // Same session: a login answered from later than asked
                    // is a range gone upstream (a lower one changes nothing).
                    Some(_) => self.ops.push(Op::Advance(sequence)),
                }
                self.session = Some(session_id);
                self.logins += 1;
                self.ops.push(Op::Alive(true));
            }
            ClientEvent::Gap(gap) if self.at_start && gap.last.saturating_add(1) == self.first => {
                // The upstream no longer had the start of its session when
                // the relay logged in (section 4.2): where the relay starts,
                // as the upstream's own subscribers would, not a gap of it.
                self.at_start = false;
                self.before_start = gap.len();
            }
            ClientEvent::Frame(m) if m.msg_type().is_data() => {
                self.at_start = false;
                self.push_frame(m.sequence(), m.as_bytes());
            }
            ClientEvent::Frame(Message::Heartbeat(h)) => {
                self.at_start = false;
                self.end_run();
                self.ops.push(Op::Advance(h.sequence()));
            }
            ClientEvent::State {
                from: ClientState::LoggedIn,
                ..
            } => {
                self.end_run();
                self.ops.push(Op::Alive(false));
            }
            ClientEvent::GaveUp { attempts, last } => {
                self.gave_up = Some(format!("gave up after {attempts} attempts; last: {last}"));
            }
            _ => {}
        }
    }

    /// The upstream client's counters without the range before the
    /// relay's start.
    fn upstream_stats(&self, mut stats: ClientStats) -> ClientStats {
        if self.before_start > 0 {
            stats.gaps = stats.gaps.saturating_sub(1);
            stats.missing = stats.missing.saturating_sub(self.before_start);
        }
        stats
    }

    fn flush(&mut self, feed: &RelayFeed) -> Result<(), RelayError> {
        self.end_run();
        for op in self.ops.drain(..) {
            let sent = match op {
                Op::Frames {
                    first,
                    frames,
                    bytes,
                } => {
                    self.flushed_next = first.saturating_add(frames);
                    feed.publish(Batch::encoded(first, frames, bytes))
                }
                Op::Advance(next) => {
                    self.flushed_next = self.flushed_next.max(next);
                    feed.advance(next)
                }
                Op::Session { session_id, next } => {
                    self.flushed_next = next;
                    feed.new_session(session_id, next)
                }
                Op::Alive(alive) => {
                    feed.set_upstream_alive(alive);
                    Ok(())
                }
            };
            sent.map_err(|e| RelayError::Io(io::Error::other(e.to_string())))?;
        }
        Ok(())
    }
}

/// Turns a datagram client's events into the server's input.
#[derive(Debug)]
struct DatagramPump {
    pump: Pump,
    /// Datagrams received on both lines at the last check.
    heard: u64,
    last_heard: Instant,
    alive: bool,
    silence: Duration,
}

impl DatagramPump {
    fn new(silence: Duration) -> DatagramPump {
        DatagramPump {
            pump: Pump::default(),
            heard: 0,
            last_heard: Instant::now(),
            alive: false,
            silence,
        }
    }

    fn on_event(&mut self, client: &DatagramClient, event: DatagramEvent) {
        let pump = &mut self.pump;
        match event {
            DatagramEvent::Frame(copy) => {
                if pump.session.is_none() {
                    pump.session = client.receiver().session();
                    pump.first = copy.sequence();
                }
                pump.push_frame(copy.sequence(), copy.as_bytes());
            }
            DatagramEvent::Gap(gap) => {
                // The same gap for the relay's clients: never renumbered.
                pump.end_run();
                pump.ops.push(Op::Advance(gap.last.saturating_add(1)));
            }
            DatagramEvent::NewSession {
                session_id,
                sequence,
            } => {
                pump.end_run();
                if pump.session.is_some() {
                    pump.ops.push(Op::Session {
                        session_id,
                        next: sequence,
                    });
                } else {
                    pump.first = sequence;
                }
                pump.session = Some(session_id);
            }
            DatagramEvent::EndOfSession { sequence } => {
                pump.end_run();
                pump.ops.push(Op::Advance(sequence));
            }
            _ => {}
        }
    }

    /// After each poll: alive while datagrams arrive.
    fn check_liveness(&mut self, client: &DatagramClient) {
        let [a, b] = client.stats().receiver.datagrams;
        let heard = a.saturating_add(b);
        let now = Instant::now();
        if heard != self.heard {
            self.heard = heard;
            self.last_heard = now;
        }
        // Nothing heard yet (a relay resuming from its journal): not alive.
        let alive = self.heard > 0 && now.saturating_duration_since(self.last_heard) < self.silence;
        if alive != self.alive && self.pump.session.is_some() {
            self.alive = alive;
            self.pump.end_run();
            self.pump.ops.push(Op::Alive(alive));
        }
    }
}

/// A relay (protocol section 10): subscribes to an upstream server of a
/// session over TCP (with fail-over over a list of them) and serves it again
/// through the reference [`Server`], TCP and optionally datagrams.
///
/// - Data frames go out byte-identical to the ones received (sequence,
///   timestamp, body, checksum), under the upstream's session id; its own
///   control frames (LoginAccepted, Heartbeat, Packet, EndOfSession) carry
///   its own clock's timestamps.
/// - It never renumbers: a range it could not get upstream reaches its
///   clients as the same gap, and its Heartbeats carry the next sequence the
///   upstream announced.
/// - Heartbeats and Packet-only datagrams go out only while it is logged in
///   upstream.
/// - When the upstream session changes, its TCP clients get EndOfSession and
///   are closed; they log in again and see the new session id.
/// - Relays chain: a relay's upstream can be another relay.
///
/// It starts once an upstream accepted its login (it needs the session id
/// before it can answer a login), asking for everything the upstream
/// retains ([`RelayConfig::upstream`]'s `from` is 1), so its clients can
/// replay what the upstream's can (as far as its own
/// [`retain`](crate::session::CoreConfig::retain) holds: size it like the upstream's).
/// When the upstream no longer has the start of the session, the relay
/// starts at the upstream's oldest frame
/// ([`start_sequence`](Relay::start_sequence)); the range before is not a
/// gap of the relay's and is not counted in
/// [`upstream_stats`](Relay::upstream_stats) (its clients asking for it
/// get the same gap as the upstream's would). It takes its upstream over
/// TCP, or from a datagram feed ([`RelayConfig::from_datagrams`]).
///
/// **With a journal** ([`ServerConfig::journal`](super::ServerConfig::journal)),
/// a relay started again on it resumes: it serves the journal's session at
/// once (its clients reconnect and resume from the journal, with no
/// `NewSession`), and logs in upstream from the journal's last sequence +
/// 1, in that session ([`ClientConfig::resume_session`]): nothing the
/// journal holds is fetched again. The upstream's answer in the same
/// session continues it (a later first sequence is a gap the upstream no
/// longer has, forwarded as such: section 10.2); another session (the
/// origin restarted without a journal, or ended its session) starts a new
/// session in the journal and downstream, as any session change does. The
/// journal's session goes on even after a reboot took an unsynced tail
/// with it: the relay's frames are its upstream's, so it fetches that tail
/// again rather than renumbering. [`start_sequence`](Relay::start_sequence)
/// is then the journal's oldest sequence. A relay of a datagram feed
/// resumes likewise: its receiver starts in the journal's session at the
/// journal's next sequence
/// ([`DatagramConfig::resume_session`](crate::session::datagram::DatagramConfig::resume_session)),
/// so a datagram of that session continues it, the range between the
/// journal's end and the first datagram received is recovered through
/// the retransmission connection (or, without one, reaches the clients as
/// a gap, section 10.2), and a datagram of another session starts a new
/// journal session and reaches the clients as a session change.
///
/// ```
/// use tickwire::net::{Client, ClientConfig, Relay, RelayConfig, Server, ServerConfig};
/// use tickwire::session::ClientEvent;
/// use tickwire::{encode::QuoteFields, Payload};
/// use std::ops::ControlFlow;
///
/// let origin = Server::bind(ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() })?.spawn()?;
/// origin.publisher().publish(vec![(1, Payload::Quote(QuoteFields::default())); 3])?;
/// let relay = Relay::start(RelayConfig::new(&[origin.local_addr()], "127.0.0.1:0".parse()?).ok_or("empty")?)?;
/// assert_eq!(relay.session_id(), origin.session_id());
///
/// let mut config = ClientConfig::new(relay.local_addr());
/// config.from = 1;
/// let mut client = Client::new(config)?;
/// let mut got = 0;
/// client.run(|event| {
///     if let ClientEvent::Frame(m) = event {
///         if m.msg_type().is_data() {
///             got += 1;
///         }
///     }
///     if got == 3 { ControlFlow::Break(()) } else { ControlFlow::Continue(()) }
/// })?;
/// relay.shutdown()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug)]
pub struct Relay {
    server: Option<ServerHandle>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<Result<(), RelayError>>>,
    upstream: Arc<Mutex<ClientStats>>,
    /// The datagram client's counters, for a datagram upstream.
    datagrams: Option<Arc<Mutex<DatagramClientStats>>>,
    start: u64,
}

impl Relay {
    /// Connects upstream, waits (at most
    /// [`start_timeout`](RelayConfig::start_timeout)) for a login, starts
    /// the server with the upstream's session id, and relays on a thread.
    /// On a journal that holds a session, the server starts first, on
    /// that session, and the login asks for the journal's next sequence
    /// (see [`Relay`]).
    ///
    /// # Errors
    /// [`RelayError::NoUpstream`] if no upstream accepted a login in time,
    /// [`RelayError::GaveUp`] if the client's retries ran out first,
    /// [`RelayError::Io`] if the server could not bind or its journal
    /// could not be opened.
    pub fn start(config: RelayConfig) -> Result<Relay, RelayError> {
        if let Some(feed) = config.datagram_upstream.clone() {
            return Relay::start_datagrams(config, feed);
        }
        // A journal is opened (and recovered) first: what it holds says
        // where to log in upstream.
        let journal = open_relay(&config.server)?;
        if let Some(journal) = journal {
            if let Some(held) = journal.held() {
                return Relay::resume(config, journal, held);
            }
            return Relay::start_fresh(config, Some(journal));
        }
        Relay::start_fresh(config, None)
    }

    /// The first start (no journal, or an empty one): the upstream's
    /// session and first sequence are known once it accepted the login.
    fn start_fresh(
        config: RelayConfig,
        journal: Option<RelayJournal>,
    ) -> Result<Relay, RelayError> {
        let mut client = Client::new(config.upstream.clone())?;
        let mut pump = Pump::default();
        pump.wait_for(&mut client, config.start_timeout, |p| p.session.is_some())?;
        let session_id = pump.session.unwrap_or_default();
        let start = pump.first;
        let opened = journal.map(|j| j.serve(session_id, start)).transpose()?;
        let server = Server::bind_with(serving(config.server, session_id), opened)?.spawn()?;
        let feed = server.relay_feed();
        feed.advance(pump.first)
            .map_err(|e| RelayError::Io(io::Error::other(e.to_string())))?;
        pump.flush(&feed)?;
        Relay::running(server, feed, client, pump, start)
    }

    /// A restart on a journal holding `held`: the server serves the held
    /// session at once (its clients resume from the journal), and the
    /// upstream is asked from the journal's next sequence, in that session.
    /// The upstream's login in the same session goes on with no new
    /// session downstream (a later first sequence: the range before is a
    /// gap the upstream no longer has, forwarded as such); another session
    /// is a new one, in the journal and downstream.
    fn resume(config: RelayConfig, journal: RelayJournal, held: Held) -> Result<Relay, RelayError> {
        log::info!(
            "relay: the journal holds session {:#018x} up to {}: asking upstream from {}",
            held.session_id,
            held.next.saturating_sub(1),
            held.next
        );
        let opened = journal.serve(held.session_id, held.next)?;
        let server =
            Server::bind_with(serving(config.server, held.session_id), Some(opened))?.spawn()?;
        let feed = server.relay_feed();
        // No Heartbeats downstream until the upstream is back.
        feed.set_upstream_alive(false);
        let mut upstream = config.upstream.clone();
        upstream.from = held.next;
        upstream.resume_session = Some(held.session_id);
        let mut client = Client::new(upstream)?;
        let mut pump = Pump::resuming(held.session_id, held.next);
        pump.wait_for(&mut client, config.start_timeout, |p| p.logins > 0)?;
        pump.flush(&feed)?;
        Relay::running(server, feed, client, pump, held.oldest)
    }

    /// Relays on a thread from now on.
    fn running(
        server: ServerHandle,
        feed: RelayFeed,
        mut client: Client,
        mut pump: Pump,
        start: u64,
    ) -> Result<Relay, RelayError> {
        let session_id = server.session_id();
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Mutex::new(pump.upstream_stats(client.stats())));
        let thread = {
            let (stop, upstream) = (Arc::clone(&stop), Arc::clone(&upstream));
            std::thread::Builder::new()
                .name("tickwire-relay".into())
                .spawn(move || {
                    let result = relay_loop(&mut client, &mut pump, &feed, &stop, &upstream);
                    client.disconnect(|_| {});
                    feed.set_upstream_alive(false);
                    result
                })?
        };
        log::info!(
            "relaying session {session_id:#018x} on {}",
            server.local_addr()
        );
        Ok(Relay {
            server: Some(server),
            stop,
            thread: Some(thread),
            upstream,
            datagrams: None,
            start,
        })
    }

    /// A relay of a datagram feed. With a journal holding a session, its
    /// receiver resumes that session at the journal's next sequence
    /// ([`DatagramConfig::resume_session`](crate::session::datagram::DatagramConfig::resume_session)),
    /// and the server serves the journal's session at once.
    fn start_datagrams(
        config: RelayConfig,
        mut feed: DatagramClientConfig,
    ) -> Result<Relay, RelayError> {
        let journal = open_relay(&config.server)?;
        let held = journal.as_ref().and_then(RelayJournal::held);
        let silence = feed.heartbeat_interval.saturating_mul(3);
        let new_client = |feed: DatagramClientConfig| {
            DatagramClient::new(feed).map_err(|e| RelayError::Io(io::Error::other(e.to_string())))
        };
        let mut events = Vec::new();
        let (mut client, server, feed, pump, start) = match (journal, held) {
            (Some(journal), Some(held)) => {
                // Served at once, from the journal; no Heartbeats until a
                // datagram arrives.
                let opened = journal.serve(held.session_id, held.next)?;
                let server =
                    Server::bind_with(serving(config.server, held.session_id), Some(opened))?
                        .spawn()?;
                let relay_feed = server.relay_feed();
                relay_feed.set_upstream_alive(false);
                // An outage longer than the receiver's window: over TCP
                // first, up to near the datagrams' live edge.
                let (session_id, next) =
                    catch_up::catch_up(&feed, &held, &relay_feed, config.start_timeout)?;
                log::info!(
                    "relay: the journal holds session {:#018x} up to {}: the datagram receiver resumes \
                     session {session_id:#018x} at {next}",
                    held.session_id,
                    held.next.saturating_sub(1),
                );
                feed.receiver.start = Some(next);
                feed.receiver.resume_session = Some(session_id);
                let mut client = new_client(feed)?;
                let feed = relay_feed;
                let mut pump = DatagramPump::new(silence);
                pump.pump = Pump::resuming(session_id, next);
                let deadline = Instant::now() + config.start_timeout;
                while pump.heard == 0 {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RelayError::NoUpstream);
                    }
                    client.poll(Some(left.min(UPSTREAM_POLL)), |e| events.push(e))?;
                    for event in events.drain(..) {
                        pump.on_event(&client, event);
                    }
                    pump.check_liveness(&client);
                }
                pump.pump.flush(&feed)?;
                (client, server, feed, pump, held.oldest)
            }
            (journal, _) => {
                let mut client = new_client(feed)?;
                let mut pump = DatagramPump::new(silence);
                let deadline = Instant::now() + config.start_timeout;
                while pump.pump.session.is_none() {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        return Err(RelayError::NoUpstream);
                    }
                    client.poll(Some(left.min(UPSTREAM_POLL)), |e| events.push(e))?;
                    for event in events.drain(..) {
                        pump.on_event(&client, event);
                    }
                    // An idle feed (Packet-only datagrams) names its
                    // session and next sequence too.
                    if pump.pump.session.is_none() {
                        if let Some(session) = client.receiver().session() {
                            pump.pump.session = Some(session);
                            pump.pump.first = client.receiver().expected();
                        }
                    }
                }
                pump.check_liveness(&client);
                let session_id = pump.pump.session.unwrap_or_default();
                let start = pump.pump.first;
                let opened = journal.map(|j| j.serve(session_id, start)).transpose()?;
                let server =
                    Server::bind_with(serving(config.server, session_id), opened)?.spawn()?;
                let feed = server.relay_feed();
                feed.advance(start)
                    .map_err(|e| RelayError::Io(io::Error::other(e.to_string())))?;
                pump.pump.flush(&feed)?;
                (client, server, feed, pump, start)
            }
        };
        let stats = Arc::new(Mutex::new(client.stats()));
        let mut pump = pump;
        let session_id = server.session_id();
        let stop = Arc::new(AtomicBool::new(false));
        let upstream = Arc::new(Mutex::new(ClientStats::default()));
        let thread = {
            let (stop, stats) = (Arc::clone(&stop), Arc::clone(&stats));
            std::thread::Builder::new()
                .name("tickwire-relay".into())
                .spawn(move || {
                    let mut result = Ok(());
                    while !stop.load(Ordering::SeqCst) {
                        if let Err(e) = client.poll(Some(UPSTREAM_POLL), |e| events.push(e)) {
                            result = Err(RelayError::Io(e));
                            break;
                        }
                        for event in events.drain(..) {
                            pump.on_event(&client, event);
                        }
                        pump.check_liveness(&client);
                        if let Ok(mut stats) = stats.lock() {
                            *stats = client.stats();
                        }
                        if let Err(e) = pump.pump.flush(&feed) {
                            result = Err(e);
                            break;
                        }
                    }
                    feed.set_upstream_alive(false);
                    result
                })?
        };
        log::info!(
            "relaying session {session_id:#018x} from datagrams on {}",
            server.local_addr()
        );
        Ok(Relay {
            server: Some(server),
            stop,
            thread: Some(thread),
            upstream,
            datagrams: Some(stats),
            start,
        })
    }

    /// The first data sequence the relay has: its upstream's oldest
    /// retained one when it logged in (1 while the upstream still had the
    /// whole session), or the first datagram's. Its clients can replay
    /// from here on, as far as its retention holds.
    pub fn start_sequence(&self) -> u64 {
        self.start
    }

    /// The address the relay's server listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.server.as_ref().map_or_else(
            || SocketAddr::from(([0, 0, 0, 0], 0)),
            ServerHandle::local_addr,
        )
    }

    /// The session id it serves now (its upstream's).
    pub fn session_id(&self) -> u64 {
        self.server.as_ref().map_or(0, ServerHandle::session_id)
    }

    /// The server's counters.
    pub fn stats(&self) -> ServerStats {
        self.server
            .as_ref()
            .map_or_else(ServerStats::default, ServerHandle::stats)
    }

    /// The upstream client's counters (updated after each poll; zero for
    /// a datagram upstream). The range the upstream no longer had when the
    /// relay first logged in (before [`start_sequence`](Relay::start_sequence))
    /// is not counted as a gap or as missing.
    pub fn upstream_stats(&self) -> ClientStats {
        self.upstream.lock().map(|s| *s).unwrap_or_default()
    }

    /// The datagram client's counters, for a relay of a datagram feed
    /// ([`RelayConfig::from_datagrams`]; updated after each poll): among
    /// them, the frames it recovered by retransmission
    /// (`receiver.recovered`) and the sequences it reported as gaps
    /// (`receiver.unrecoverable`). `None` for a TCP upstream.
    ///
    /// ```
    /// use tickwire::net::{Relay, RelayConfig, Server, ServerConfig};
    /// let origin = Server::bind(ServerConfig { listen: "127.0.0.1:0".parse()?, ..ServerConfig::default() })?.spawn()?;
    /// let relay = Relay::start(RelayConfig::new(&[origin.local_addr()], "127.0.0.1:0".parse()?).ok_or("empty")?)?;
    /// assert!(relay.datagram_stats().is_none()); // a TCP upstream
    /// relay.shutdown()?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn datagram_stats(&self) -> Option<DatagramClientStats> {
        let stats = self.datagrams.as_ref()?;
        stats.lock().ok().map(|s| *s)
    }

    /// Whether the relaying thread is still running (it ends when the
    /// upstream client gives up).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|t| !t.is_finished())
    }

    /// Stops relaying and shuts the server down gracefully (EndOfSession to
    /// its clients).
    ///
    /// # Errors
    /// The relaying thread's error (its upstream gave up, or its server
    /// failed), or the server's I/O error.
    pub fn shutdown(mut self) -> Result<ServerStats, RelayError> {
        self.stop_and_join()
    }

    fn stop_and_join(&mut self) -> Result<ServerStats, RelayError> {
        self.stop.store(true, Ordering::SeqCst);
        let relayed = match self.thread.take() {
            Some(thread) => thread
                .join()
                .unwrap_or_else(|_| Err(RelayError::Io(io::Error::other("relay thread panicked")))),
            None => Ok(()),
        };
        let stats = match self.server.take() {
            Some(server) => server.shutdown()?,
            None => ServerStats::default(),
        };
        relayed.map(|()| stats)
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.stop_and_join();
    }
}

fn relay_loop(
    client: &mut Client,
    pump: &mut Pump,
    feed: &RelayFeed,
    stop: &AtomicBool,
    upstream: &Mutex<ClientStats>,
) -> Result<(), RelayError> {
    while !stop.load(Ordering::SeqCst) {
        client.poll(Some(UPSTREAM_POLL), |e| pump.on_event(e))?;
        pump.flush(feed)?;
        if let Ok(mut stats) = upstream.lock() {
            *stats = pump.upstream_stats(client.stats());
        }
        if let Some(why) = pump.gave_up.take() {
            return Err(RelayError::GaveUp(why));
        }
    }
    Ok(())
}

impl ServerHandle {
    /// The input of a relay: already-encoded frames with their own
    /// sequences, holes, session changes (see [`RelayFeed`]).
    pub fn relay_feed(&self) -> RelayFeed {
        let (numbering, shared) = self.feed_parts();
        RelayFeed::new(numbering, shared)
    }
}

impl Server {
    /// The input of a relay (see [`RelayFeed`]); do not also publish with
    /// a [`Publisher`](super::Publisher): the two numberings would clash.
    pub fn relay_feed(&self) -> RelayFeed {
        let (numbering, shared) = self.feed_parts();
        RelayFeed::new(numbering, shared)
    }
}

/// `server`, serving the upstream's session `session_id`.
fn serving(mut server: ServerConfig, session_id: u64) -> ServerConfig {
    server.core.session.session_id = session_id;
    server
}
