//! tickwire in tokio (`tokio` feature): a `tokio_util` codec, and an async
//! client and server driven by the same sans-IO sessions as the mio ones.
//!
//! ```text
//!  FrameCodec   Decoder: BytesMut ─▶ Item (Frame: Bytes split off, no copy; Gap, Discarded…)
//!               Encoder: (timestamp, Payload) ─▶ numbered by a Sequencer
//!  Client       a Stream of ClientEvent around a ClientSession: connect, Login, backoff,
//!               liveness, resume; deadlines on tokio's clock (tokio::time::pause works)
//!  Server       a task per connection around a ServerSession; Publisher numbers and
//!               encodes a batch once, into one Retention shared by every task (Arc<Batch>)
//!  TLS          (`tls` feature) ServerConfig::tls, ClientConfig::tls: the same loops over
//!               tokio-rustls streams, the handshake within the login and connect timeouts
//! ```
//!
//! Every rule (states, backoff, liveness, login, replay, heartbeats, slow
//! clients) lives in [`session`](crate::session); this module only moves
//! bytes and time, as [`net`](crate::net) does on mio. The two interoperate
//! both ways, byte for byte.
//!
//! The settings and counters are those of the mio drivers, in
//! [`tickwire::net`](crate::net)
//! ([`ServerConfig`](crate::net::ServerConfig),
//! [`ClientConfig`](crate::net::ClientConfig),
//! [`ServerStats`](crate::net::ServerStats)…): the `tokio` feature compiles
//! that shared part of `net` alone, without mio or the mio drivers (those
//! need the `net` feature).
#![forbid(unsafe_code)]
// Without `net`, the docs' links to the mio twins (`net::Server`…) have no
// target.
#![cfg_attr(not(feature = "net"), allow(rustdoc::broken_intra_doc_links))]

mod client;
mod codec;
mod server;

pub use client::{Client, ClientEvent};
pub use codec::{Frame, FrameCodec, Item};
pub use server::{Publisher, RelayFeed, Server, ServerHandle};
