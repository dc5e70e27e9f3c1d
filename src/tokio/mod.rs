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
//! ```
//!
//! Every rule (states, backoff, liveness, login, replay, heartbeats, slow
//! clients) lives in [`session`](crate::session); this module only moves
//! bytes and time, as [`net`](crate::net) does on mio. The two interoperate
//! both ways, byte for byte.
#![forbid(unsafe_code)]

mod client;
mod codec;
mod server;

pub use client::{Client, ClientEvent};
pub use codec::{Frame, FrameCodec, Item};
pub use server::{Publisher, RelayFeed, Server, ServerHandle};
