//! # tickwire
//!
//! A zero-copy binary protocol for streaming market data.
//!
//! The wire format is specified in `PROTOCOL.md`, at the root of the
//! repository and of the published package (version 1, revision 2); this
//! crate follows it to the byte, and its tests include every test vector in
//! it.
//!
//! The core of this crate is `no_std`, allocation-free and sans-IO: it owns no
//! socket and reads no clock. It is made of
//!
//! * [`wire`]: the packed frame layouts (one [`zerocopy`] struct per message
//!   type), zero-copy typed views ([`Message`]) and single-frame decoding;
//! * [`encode`](mod@encode): writing frames into a caller's `&mut [u8]`, and a
//!   [`Sequencer`] that numbers them as the protocol says;
//! * [`checksum`]: CRC-32C, hardware accelerated where the CPU allows;
//! * [`sequence`]: the [`SequenceTracker`] (gaps,
//!   duplicates, new sessions, the idle-gap rule);
//! * [`parse`]: the resynchronizing stream [`Parser`] that
//!   survives any damage and reports every discarded byte;
//! * [`policy`]: reconnect backoff and heartbeat liveness, pure functions of `now`;
//! * `session` (with `alloc`): the protocol's connection rules as state
//!   machines that take `now` (`ServerSession`, `ClientSession`, `Retention`);
//! * [`json`]: the JSON-lines rendering of frames and events.
//!
//! With the `std` feature, `tickwire::io` adapts the parser and the encoder to
//! any blocking `Read`/`Write` (a file, a pipe, a socket); the `net` feature
//! adds `tickwire::net`: mio connections, the reference server and client;
//! the `journal` feature adds `tickwire::journal`: every published batch on
//! disk in wire format, for restarts in the same session and replay from
//! disk (its files: `PROTOCOL.md`, appendix A).
//!
//! ```text
//!  socket ──read──▶ Parser::spare() ─commit(n)─▶ Parser::next_event()
//!                                                   │
//!                     ┌─────────────────────────────┼──────────────┐
//!                     ▼                             ▼              ▼
//!              Event::Frame(Message)        Event::Gap(Gap)  Event::Discarded
//! ```
//!
//! ## Decoding a buffer
//!
//! ```
//! use tickwire::{Message, parse::{Event, Parser}};
//!
//! // A Quote frame, straight from the protocol's test vectors.
//! let bytes: [u8; 44] = [
//!     0xa5, 0x01, 0x10, 0x2c, 0x07, 0, 0, 0, 0, 0, 0, 0, 0x15, 0xcd, 0x85, 0x3d, 0xfe, 0x9c,
//!     0x97, 0x17, 0x2a, 0, 0, 0, 0x44, 0xd6, 0x12, 0, 0xa8, 0xd6, 0x12, 0, 0x64, 0, 0, 0,
//!     0xc8, 0, 0, 0, 0xc0, 0x49, 0x8b, 0xa2,
//! ];
//! let mut storage = [0u8; 256];
//! let mut parser = Parser::new(&mut storage[..])?;
//! let spare = parser.spare();
//! spare[..bytes.len()].copy_from_slice(&bytes);
//! parser.commit(bytes.len())?;
//! match parser.next_event() {
//!     Some(Event::Frame(Message::Quote(q))) => {
//!         assert_eq!(q.sequence(), 7);
//!         assert_eq!(q.bid_price(), 1_234_500);
//!     }
//!     other => panic!("unexpected {other:?}"),
//! }
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
//!
//! ## The net layer (`net` feature)
//!
//! `tickwire::net` is a thin `std` loop over the core above, on `mio`
//! (epoll, kqueue): bytes are read straight into a `Parser`'s buffer and
//! frames written with `encode`.
//!
//! ```text
//!  publisher threads ──Publisher::publish(batch)──▶ Server (one mio event loop)
//!      numbered and CRC'd off the loop               │ retention ring: replay on login
//!                                                    │ broadcast, heartbeats, slow clients
//!                                                    ▼
//!  Client::poll ◀── LoginAccepted, replay, live data, Heartbeats, EndOfSession
//!      │ reconnect with Backoff, log in with the next needed sequence
//!      ▼
//!  ClientEvent: Frame, Gap, Duplicate, NewSession, State, Lost, Retrying, GaveUp
//! ```
//!
//! * `net::Server` / `net::ServerHandle` / `net::Publisher`: the reference
//!   server. `Server::bind(ServerConfig)` then `spawn()` runs its event loop
//!   on a thread (`ServerConfig` holds the core's rules, `core: CoreConfig`,
//!   and with `net` the event loops' own settings, `mio: LoopOptions`);
//!   publishers number and encode batches on their own threads;
//!   the event loop moves bytes and time for a `session::ServerCore`, which
//!   logs clients in, replays from its retention ring, broadcasts, sends
//!   heartbeats, skips or disconnects slow clients (`SlowPolicy`), and on
//!   `shutdown()` sends EndOfSession to everyone. `tokio::Server` is the
//!   same core on tokio.
//! * `net::Client`: the reference client, a state machine
//!   (`ClientState`: disconnected, connecting, connected, reconnecting)
//!   driven by `poll(timeout, on_event)` or the blocking `run`. It
//!   reconnects with `policy::Backoff`, logs in with the next sequence it
//!   needs so that nothing is lost or repeated across reconnects, reports
//!   unrecoverable ranges as exact gaps, and treats three silent heartbeat
//!   intervals as a dead connection (`policy::Liveness`).
//! * `net::Connection`: one non-blocking, edge-triggered mio connection with
//!   a parser and a bounded outbound queue, for programs of your own (the
//!   reference server and client keep their state in their sessions).
//! * `io::FrameReader` / `io::FrameWriter` (`std` feature, no mio):
//!   blocking adapters over any `Read` / `Write` (files,
//!   `std::net::TcpStream`).
//! * `net::classify`: what an I/O error means for a connection (wait, retry,
//!   peer gone, fatal).
//!
//! With the `tokio` feature and without `net`, `tickwire::net` holds only
//! what the tokio drivers share with these (the configs, the stats,
//! `ServerAddr`, `PublishError`, `classify`, `unix_nanos`): no mio.
//!
//! The `tickwire` tool (`cli` feature) is built on these: `serve` on the
//! server, `subscribe` and `record` on the client.
//!
//! ## Stability: which types may grow
//!
//! One rule for `#[non_exhaustive]`: what you fill in is plain data, and
//! what the crate hands back may grow. Configurations (`ServerConfig`,
//! `ClientConfig`, `CoreConfig`, `ServerSessionConfig`,
//! `ClientSessionConfig`, `DatagramConfig`, `RelayConfig`…) are exhaustive:
//! build them with struct update syntax from their `default()` or `new(..)`.
//! Counters, events, errors, phases, reasons and the settings enums you
//! match on are `#[non_exhaustive]`: a new variant or field is not a
//! breaking change.
//!
//! ## Features
//!
//! | feature     | default | what it adds |
//! |-------------|---------|--------------|
//! | `std`       | yes     | run-time CPU detection for CRC-32C; `io`: `FrameReader`/`FrameWriter` over any `Read`/`Write`; implies `alloc` |
//! | `alloc`     | via std | owned parser buffers (`Parser::owned`, `Parser::with_capacity`); `session`: the protocol rules as sans-IO state machines |
//! | `synth`     | no      | `synth`: the seeded synthetic feed generator and damager |
//! | `arbitrary` | no      | `arbitrary::Arbitrary` for [`Payload`] |
//! | `net`       | no      | `net`: mio connections, the reference server and client; implies `std` |
//! | `tokio`     | no      | `tokio`: a `tokio_util` codec (`FrameCodec`, owned `Frame`s over `bytes::Bytes`), the async `Client` and `Server` over the same sessions; with it `net` holds what both drivers share (configs, stats, `ServerAddr`…); no mio, the mio drivers need `net` |
//! | `journal`   | no      | `journal`: segments of plain frames with a sparse index, group commit (`fdatasync`), recovery of a torn tail, replay with `sendfile`; implies `std` |
//! | `tls`       | no      | `tls`: TLS settings for the servers and clients (rustls on ring, ALPN `tickwire/1`, mutual TLS); implies `std` |
//! | `cli`       | no      | the `tickwire` binary (`gen`, `dump`, `export`, `journal`, `keygen`, `serve`, `subscribe`, `record`, `relay`, `demo`, `bench`); implies `std`, `synth`, `net`, `journal` |
//! | `parquet`   | no      | `tickwire export --format parquet` (the `parquet` crate, without arrow); implies `cli` |
//!
//! Minimum supported Rust version: 1.94 (see `docs/operating.md`).
#![no_std]
#![cfg_attr(docsrs, feature(doc_cfg))]
#![deny(missing_docs)]
#![deny(unsafe_code)]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod checksum;
pub mod encode;
#[cfg(feature = "std")]
#[cfg_attr(docsrs, doc(cfg(feature = "std")))]
pub mod io;
#[cfg(feature = "journal")]
#[cfg_attr(docsrs, doc(cfg(feature = "journal")))]
pub mod journal;
pub mod json;
#[cfg(any(feature = "net", feature = "tokio"))]
#[cfg_attr(docsrs, doc(cfg(any(feature = "net", feature = "tokio"))))]
pub mod net;
pub mod parse;
pub mod policy;
pub mod sequence;
#[cfg(feature = "alloc")]
#[cfg_attr(docsrs, doc(cfg(feature = "alloc")))]
pub mod session;
#[cfg(feature = "synth")]
#[cfg_attr(docsrs, doc(cfg(feature = "synth")))]
pub mod synth;
#[cfg(feature = "tls")]
#[cfg_attr(docsrs, doc(cfg(feature = "tls")))]
pub mod tls;
#[cfg(feature = "tokio")]
#[cfg_attr(docsrs, doc(cfg(feature = "tokio")))]
pub mod tokio;
pub mod wire;

pub use encode::{encode, EncodeError, Payload, Sequencer};

/// The README's examples, run as doctests (with the `net` feature) so that they never go stale.
#[cfg(all(doctest, feature = "net"))]
#[doc = include_str!("../README.md")]
struct ReadmeDoctests;

/// The Rust snippets of `docs/`, run as doctests as the README's are.
#[cfg(all(doctest, feature = "net"))]
#[doc = include_str!("../docs/sessions-and-drivers.md")]
struct SessionsAndDriversDoctests;

/// The same, for another page of `docs/`.
#[cfg(all(doctest, feature = "net"))]
#[doc = include_str!("../docs/datagrams-and-relays.md")]
struct DatagramsAndRelaysDoctests;

/// The same, for another page of `docs/`.
#[cfg(all(doctest, feature = "net"))]
#[doc = include_str!("../docs/operating.md")]
struct OperatingDoctests;

/// The same, for another page of `docs/`.
#[cfg(all(doctest, feature = "net"))]
#[doc = include_str!("../docs/performance.md")]
struct PerformanceDoctests;
pub use parse::{Event, Parser};
pub use sequence::SequenceTracker;
pub use wire::{DecodeError, Message, MsgType};
