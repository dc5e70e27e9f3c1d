//! How a connection's replay reads the cold source (the journal): file
//! ranges for a driver that sends them itself, reads run by the driver
//! outside its lock ([`ColdFetch`]).

use super::super::server::ColdFetch;
use super::super::Time;
use super::{open_conn, ConnId, ServerCore};

impl ServerCore {
    /// Whether the driver sends file ranges itself on `id` (`sendfile`):
    /// say so right after [`accept`](Self::accept), for a connection whose
    /// bytes go to the socket as they are (no TLS). Its replays from the
    /// cold source are then queued as verified ranges of the source's
    /// files, which [`Transmit::file`](super::Transmit::file) hands out;
    /// every other connection gets checked bytes (see
    /// [`ServerSession::set_file_ranges`](crate::session::ServerSession::set_file_ranges)). The setting moves with a
    /// [`detach`](Self::detach)ed connection.
    ///
    /// ```
    /// # use core::time::Duration;
    /// use std::sync::Arc;
    /// use tickwire::session::{cold::VecCold, Batch, CoreConfig, ServerCore, Time};
    /// use tickwire::{encode::QuoteFields, Payload, Sequencer};
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut config = CoreConfig::new(7);
    /// config.retain = 10;
    /// let mut core = ServerCore::new(config, t);
    /// let mut bytes = vec![0u8; 100 * 44];
    /// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 100], &mut bytes);
    /// core.publish(Arc::new(Batch::new(bytes.clone())?), t); // the retention keeps 91..=100
    /// core.set_cold(Some(Arc::new(VecCold::new(bytes).with_ranges()))); // the "journal"
    /// let id = core.accept("127.0.0.1:9".parse().unwrap(), t);
    /// core.set_file_ranges(id, true);
    /// let mut login = [0u8; 24];
    /// tickwire::encode(&Payload::Login, 1, 0, &mut login)?;
    /// core.handle_input(id, &login, t);
    /// let n = core.poll_transmit(id, t).map(|tx| tx.slices().map(<[u8]>::len).sum()).unwrap();
    /// core.transmitted(id, n, t); // LoginAccepted
    /// let tx = core.poll_transmit(id, t).unwrap();
    /// let front = tx.file().expect("frames 1..=90 as a file range");
    /// assert_eq!((front.offset, front.len), (0, 90 * 44));
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_file_ranges(&mut self, id: ConnId, on: bool) {
        if let Some(conn) = open_conn(&mut self.conns, id) {
            conn.session.set_file_ranges(on);
        }
    }

    /// Whether the driver reads the cold source itself for `id`, outside
    /// the lock it keeps the core under (see
    /// [`ServerSession::set_cold_by_driver`](crate::session::ServerSession::set_cold_by_driver)): say so right after
    /// [`accept`](Self::accept). Then a replay older than the retention
    /// waits until the driver takes its read
    /// ([`take_cold_read`](Self::take_cold_read)), runs it
    /// ([`ColdFetch::read`](ColdFetch::read), no lock
    /// held) and hands it back ([`finish_cold_read`](Self::finish_cold_read)):
    /// the file reads and checksum checks of a replay never hold up the
    /// other connections or a publisher.
    ///
    /// ```
    /// # use core::time::Duration;
    /// use std::sync::Arc;
    /// use tickwire::session::{cold::VecCold, Batch, CoreConfig, ServerCore, Time};
    /// use tickwire::{encode::QuoteFields, Payload, Sequencer};
    /// let t = Time::new(Duration::ZERO, 0);
    /// let mut config = CoreConfig::new(7);
    /// config.retain = 10;
    /// let mut core = ServerCore::new(config, t);
    /// let mut bytes = vec![0u8; 100 * 44];
    /// Sequencer::new().encode_batch(&[(0, Payload::Quote(QuoteFields::default())); 100], &mut bytes);
    /// core.publish(Arc::new(Batch::new(bytes.clone())?), t); // the retention keeps 91..=100
    /// core.set_cold(Some(Arc::new(VecCold::new(bytes)))); // the "journal"
    /// let id = core.accept("127.0.0.1:9".parse().unwrap(), t);
    /// core.set_cold_by_driver(id, true);
    /// let mut login = [0u8; 24];
    /// tickwire::encode(&Payload::Login, 1, 0, &mut login)?;
    /// core.handle_input(id, &login, t);
    /// let n = core.poll_transmit(id, t).map(|tx| tx.slices().map(<[u8]>::len).sum()).unwrap();
    /// core.transmitted(id, n, t); // LoginAccepted
    /// assert!(core.poll_transmit(id, t).is_none()); // 1..=90 wait for the driver's read
    /// let mut fetch = core.take_cold_read(id).expect("a read of 1..=90");
    /// fetch.read(); // with no lock held
    /// core.finish_cold_read(id, fetch, t);
    /// let n: usize = core.poll_transmit(id, t).unwrap().slices().map(<[u8]>::len).sum();
    /// assert_eq!(n, 100 * 44); // 1..=90 from the source, 91..=100 from the retention
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    pub fn set_cold_by_driver(&mut self, id: ConnId, on: bool) {
        if let Some(conn) = open_conn(&mut self.conns, id) {
            conn.session.set_cold_by_driver(on);
        }
    }

    /// The cold read `id`'s replay needs now, to run with no lock held
    /// (see [`set_cold_by_driver`](Self::set_cold_by_driver)); `None` when
    /// it needs none (or one is out).
    pub fn take_cold_read(&mut self, id: ConnId) -> Option<ColdFetch> {
        let retention = &self.retention;
        open_conn(&mut self.conns, id)?
            .session
            .take_cold_read(retention)
    }

    /// A read taken with [`take_cold_read`](Self::take_cold_read) handed
    /// back: its frames queued on `id` (and the retention's after them at
    /// the seam), or the replay closed if the source failed (as
    /// [`poll_transmit`](Self::poll_transmit) would); dropped if `id` is
    /// gone.
    pub fn finish_cold_read(&mut self, id: ConnId, fetch: ColdFetch, time: Time) {
        let retention = &self.retention;
        let Some(conn) = open_conn(&mut self.conns, id) else {
            return;
        };
        conn.session.finish_cold_read(fetch, time, retention);
        // Its events (a retransmission reply's), a close, its deadline,
        // its place in the ready queue: as after any input.
        self.settle(id);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use crate::encode::{encode, Payload, QuoteFields};
    use crate::session::cold::VecCold;
    use crate::session::{Batch, CoreConfig};
    use crate::Sequencer;
    use alloc::sync::Arc;
    use alloc::vec;
    use alloc::vec::Vec;
    use core::time::Duration;

    /// A core whose retention keeps 91..=100 of 100 published frames, all
    /// of them in a cold source, and a connection accepted whose driver
    /// reads the cold source itself.
    fn accepted() -> (ServerCore, ConnId, Time) {
        let t = Time::new(Duration::ZERO, 0);
        let mut config = CoreConfig::new(7);
        config.retain = 10;
        let mut core = ServerCore::new(config, t);
        let mut bytes = vec![0u8; 100 * 44];
        let msgs = [(0, Payload::Quote(QuoteFields::default())); 100];
        Sequencer::new().encode_batch(&msgs, &mut bytes);
        core.publish(Arc::new(Batch::new(bytes.clone()).unwrap()), t);
        core.set_cold(Some(Arc::new(VecCold::new(bytes))));
        let id = core.accept("127.0.0.1:9".parse().unwrap(), t);
        core.set_cold_by_driver(id, true);
        (core, id, t)
    }

    /// [`accepted`], logged in from 1; its LoginAccepted written.
    fn replaying() -> (ServerCore, ConnId, Time) {
        let (mut core, id, t) = accepted();
        let mut login = [0u8; 24];
        encode(&Payload::Login, 1, 0, &mut login).unwrap();
        core.handle_input(id, &login, t);
        let n = core
            .poll_transmit(id, t)
            .map(|tx| tx.slices().map(<[u8]>::len).sum())
            .unwrap();
        core.transmitted(id, n, t);
        (core, id, t)
    }

    /// One read out at a time; a read handed back after its connection
    /// closed is dropped; one handed back unread is taken again.
    #[test]
    fn a_cold_read_out_of_the_core_is_one_at_a_time_and_safe_to_hand_back_late() {
        let (mut core, id, t) = replaying();
        let fetch = core.take_cold_read(id).unwrap();
        assert_eq!(fetch.next(), 1);
        assert!(core.take_cold_read(id).is_none(), "one out at a time");
        assert!(
            core.poll_transmit(id, t).is_none(),
            "nothing until it is back"
        );
        core.finish_cold_read(id, fetch, t); // unread
        let mut fetch = core.take_cold_read(id).expect("taken again");
        fetch.read();
        core.handle_eof(id, t); // the client hung up meanwhile
        core.finish_cold_read(id, fetch, t);
        assert!(core.poll_transmit(id, t).is_none());
        assert!(core.take_cold_read(id).is_none());
    }

    /// Without the driver's reads, nothing changes: the refill reads the
    /// source itself.
    #[test]
    fn a_refill_reads_the_source_itself_unless_the_driver_does() {
        let (mut core, id, t) = replaying();
        core.set_cold_by_driver(id, false);
        assert!(core.take_cold_read(id).is_none());
        let n: usize = core
            .poll_transmit(id, t)
            .unwrap()
            .slices()
            .map(<[u8]>::len)
            .sum();
        assert_eq!(n, 100 * 44);
    }
    /// A retransmission request older than the retention, on a connection
    /// whose driver reads the cold source: nothing until the driver's read
    /// comes back, then the whole reply (LoginAccepted, the frames from the
    /// source and the retention, the Heartbeat after them), in order.
    #[test]
    fn a_retransmission_reply_waits_for_the_drivers_read() {
        let (mut core, id, t) = accepted();
        let mut request = [0u8; 40];
        let n = encode(
            &Payload::Retransmit {
                session_id: 7,
                count: 20,
            },
            85,
            0,
            &mut request,
        )
        .unwrap();
        core.handle_input(id, &request[..n], t);
        assert!(core.poll_transmit(id, t).is_none(), "waits for the read");
        let mut fetch = core.take_cold_read(id).expect("the reply's cold part");
        assert!(core.take_cold_read(id).is_none(), "one out at a time");
        fetch.read();
        core.finish_cold_read(id, fetch, t);
        let mut wire = Vec::new();
        while let Some(tx) = core.poll_transmit(id, t) {
            let n = tx.len();
            tx.slices().for_each(|s| wire.extend_from_slice(s));
            core.transmitted(id, n, t);
        }
        let frames: Vec<(crate::wire::MsgType, u64)> = crate::parse::SliceParser::new(&wire)
            .filter_map(|e| match e {
                crate::parse::Event::Frame(m) => Some((m.msg_type(), m.sequence())),
                _ => None,
            })
            .collect();
        let mut want = vec![(crate::wire::MsgType::LoginAccepted, 85)];
        want.extend((85..=100).map(|s| (crate::wire::MsgType::Quote, s)));
        want.push((crate::wire::MsgType::Heartbeat, 101));
        assert_eq!(frames, want);
        assert!(core.take_cold_read(id).is_none());
    }
}
