//! Who may read the feed (protocol section 11): the server's [`Verifier`],
//! the built-in one over a credentials file ([`Credentials`]), and the
//! per-address lock-out after failed attempts ([`LockOut`]).
//!
//! ```text
//!  accept ─▶ locked out? ─yes─▶ closed at once (nothing read or written)
//!              │ no
//!              ▼
//!  first bytes ≠ a5 01 07 48 ─▶ Rejected 1 (authentication required)
//!  72 bytes: Auth ─▶ well-formed? ─▶ Verifier::authenticate(key id, secret, peer)
//!                        │ no               │ None: Rejected 2, a failure counted for the address
//!                        ▼                  ▼ Some(identity)
//!                  Rejected 2      Login / Retransmit read ─▶ Verifier::authorize(identity, request)
//!                                                  │ false: Rejected 3    │ true: section 4 or 9 as usual
//! ```
//!
//! After a Rejected the connection only drains: the server shuts down its
//! sending side, discards what the client sends (at most 1 s or 4 KiB) and
//! closes; nothing read after the rejected frame is acted on. The
//! [`ServerCore`](super::ServerCore) runs all of it; a driver only shuts
//! down the sending side when
//! [`poll_write_shutdown`](super::ServerCore::poll_write_shutdown) says so.
//!
//! The built-in verifier stores SHA-256 of each secret (the secrets are
//! random 32-byte keys, so a fast hash is right and no password KDF is
//! needed) and compares in constant time with `subtle`; an unknown key id
//! costs the same hashing and comparing, against a stand-in hash, as a wrong
//! secret.
//!
//! ```
//! use std::net::{IpAddr, Ipv4Addr};
//! use tickwire::session::auth::{Credentials, Request, Verifier};
//! use tickwire::wire::{KeyId, Secret};
//!
//! let secret = Secret::new([7; 32]);
//! let line = Credentials::line(&KeyId::new("alice")?, &secret, None);
//! let credentials = Credentials::parse(&format!("# the desk\n{line}\n"))?;
//!
//! let peer = IpAddr::V4(Ipv4Addr::LOCALHOST);
//! let alice = credentials.authenticate(&KeyId::new("alice")?, &secret, peer).ok_or("refused")?;
//! assert!(credentials.authorize(&alice, Request::Subscribe));
//! assert!(credentials.authenticate(&KeyId::new("alice")?, &Secret::new([8; 32]), peer).is_none());
//! assert!(credentials.authenticate(&KeyId::new("mallory")?, &secret, peer).is_none());
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]

use alloc::collections::BTreeMap;
use alloc::string::String;
use alloc::vec::Vec;
use core::fmt;
use core::net::IpAddr;
use core::time::Duration;

use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::wire::{KeyId, KeyIdError, Secret};

/// What a connection asks for once it is authenticated.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Request {
    /// A Login: a subscription (section 4).
    Subscribe,
    /// A Retransmit: a retransmission connection (section 9).
    Retransmit,
}

/// What a key may open: subscriptions, retransmission connections, or both.
///
/// ```
/// use tickwire::session::auth::{Permissions, Request};
/// assert!(Permissions::ALL.allows(Request::Retransmit));
/// assert!(!Permissions::SUBSCRIBE.allows(Request::Retransmit));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct Permissions {
    /// May log in (section 4).
    pub subscribe: bool,
    /// May open retransmission connections (section 9).
    pub retransmit: bool,
}

impl Permissions {
    /// Both.
    pub const ALL: Permissions = Permissions {
        subscribe: true,
        retransmit: true,
    };
    /// Subscriptions only.
    pub const SUBSCRIBE: Permissions = Permissions {
        subscribe: true,
        retransmit: false,
    };
    /// Retransmission connections only.
    pub const RETRANSMIT: Permissions = Permissions {
        subscribe: false,
        retransmit: true,
    };

    /// Whether `request` is allowed.
    ///
    /// ```
    /// use tickwire::session::auth::{Permissions, Request};
    /// assert!(Permissions::RETRANSMIT.allows(Request::Retransmit));
    /// ```
    #[must_use]
    pub fn allows(self, request: Request) -> bool {
        match request {
            Request::Subscribe => self.subscribe,
            Request::Retransmit => self.retransmit,
        }
    }
}

/// Who a connection authenticated as: its key id and what it may open.
///
/// ```
/// use tickwire::session::auth::{Identity, Permissions};
/// let who = Identity { key_id: tickwire::wire::KeyId::new("desk-1")?, permissions: Permissions::ALL };
/// assert_eq!(format!("{who}"), "desk-1");
/// # Ok::<(), tickwire::wire::KeyIdError>(())
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Identity {
    /// The key id it presented.
    pub key_id: KeyId,
    /// What it may open.
    pub permissions: Permissions,
}

impl fmt::Display for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.key_id.as_str())
    }
}

/// The server's check of credentials, in two steps (protocol section 11):
/// [`authenticate`](Verifier::authenticate) when the Auth is read (an
/// identity, or reason 2 at once), [`authorize`](Verifier::authorize) once
/// the Login or Retransmit that follows is read (allowed, or reason 3).
///
/// Called on the server's event loop: it must answer at once (no I/O).
/// Implementations must not log or keep the secret.
///
/// ```
/// use std::net::IpAddr;
/// use tickwire::session::auth::{Identity, Permissions, Request, Verifier};
/// use tickwire::wire::{KeyId, Secret};
///
/// /// Everyone from 10.0.0.0/8 may subscribe, whatever their secret.
/// #[derive(Debug)]
/// struct Internal;
/// impl Verifier for Internal {
///     fn authenticate(&self, key_id: &KeyId, _: &Secret, peer: IpAddr) -> Option<Identity> {
///         matches!(peer, IpAddr::V4(v4) if v4.octets()[0] == 10)
///             .then_some(Identity { key_id: *key_id, permissions: Permissions::SUBSCRIBE })
///     }
/// }
/// let who = Internal.authenticate(&KeyId::new("x")?, &Secret::new([0; 32]), "10.1.2.3".parse()?);
/// assert!(who.is_some_and(|w| !Internal.authorize(&w, Request::Retransmit)));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub trait Verifier: Send + Sync + fmt::Debug {
    /// The identity of `key_id` if `secret` is its secret (and `peer` may
    /// use it), `None` otherwise (reason 2: the server does not say why).
    fn authenticate(&self, key_id: &KeyId, secret: &Secret, peer: IpAddr) -> Option<Identity>;

    /// Whether `identity` may open what it asks for (`false`: reason 3).
    /// By default, what its [`Permissions`] say.
    fn authorize(&self, identity: &Identity, request: Request) -> bool {
        identity.permissions.allows(request)
    }
}

/// A client's credentials: the key id and its secret (protocol section
/// 11). `Debug` shows the key id only.
///
/// ```
/// use tickwire::session::auth::ClientKey;
/// use tickwire::wire::{KeyId, Secret};
/// let key = ClientKey { key_id: KeyId::new("desk-1")?, secret: Secret::new([0xab; 32]) };
/// let shown = format!("{key:?}");
/// assert!(shown.contains("desk-1") && !shown.contains("171") && !shown.contains("ab"));
/// # Ok::<(), tickwire::wire::KeyIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ClientKey {
    /// The key id.
    pub key_id: KeyId,
    /// The secret.
    pub secret: Secret,
}

impl fmt::Debug for ClientKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClientKey")
            .field("key_id", &self.key_id)
            .finish_non_exhaustive()
    }
}

/// SHA-256 of a secret: what the credentials file holds.
///
/// ```
/// use tickwire::session::auth::secret_hash;
/// let hash = secret_hash(&tickwire::wire::Secret::new([0; 32]));
/// assert_eq!(hash[..4], [0x66, 0x68, 0x7a, 0xad]); // SHA-256 of 32 zero bytes
/// ```
#[must_use]
pub fn secret_hash(secret: &Secret) -> [u8; 32] {
    Sha256::digest(secret.expose()).into()
}

/// The built-in [`Verifier`]: keys from a credentials file, one per line,
/// `KEY_ID:SHA256[:PERM,...]`: the key id, a colon, 64 hex digits (either
/// case) of SHA-256 of the 32 secret bytes, and optionally a colon and a
/// comma-separated list of `subscribe`, `retransmit` (no list: both). Blank
/// lines and lines whose first non-blank character is `#` are comments;
/// CRLF endings are accepted; a duplicate key id is an error.
///
/// Only hashes are held; `Debug` prints the key ids, never a hash.
///
/// ```
/// use tickwire::session::auth::{Credentials, CredentialsError, Permissions};
/// let hash = "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";
/// let c = Credentials::parse(&format!("feed-1:{hash}:subscribe\r\n"))?;
/// assert_eq!(c.len(), 1);
/// let dup = Credentials::parse(&format!("a:{hash}\na:{hash}\n"));
/// assert!(matches!(dup, Err(CredentialsError { line: 2, .. })));
/// # Ok::<(), CredentialsError>(())
/// ```
#[derive(Clone, Default)]
pub struct Credentials {
    keys: BTreeMap<KeyId, ([u8; 32], Permissions)>,
}

/// Why a credentials file was refused: the line (1-based) and what is
/// wrong with it. Never holds the line's content.
///
/// ```
/// let e = tickwire::session::auth::Credentials::parse("alice:00\n").unwrap_err();
/// assert_eq!(e.to_string(), "credentials line 1: the hash is not 64 hex digits");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct CredentialsError {
    /// The line, from 1.
    pub line: usize,
    /// What is wrong.
    pub kind: CredentialsErrorKind,
}

/// What is wrong with a credentials line.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum CredentialsErrorKind {
    /// Not `KEY_ID:SHA256[:PERM,...]`.
    Format,
    /// The key id is not 1–16 of `A–Z a–z 0–9 - _ .`.
    KeyId(KeyIdError),
    /// The hash is not 64 hex digits.
    Hash,
    /// A permission other than `subscribe` or `retransmit`, or an empty list.
    Permission,
    /// The key id was on an earlier line.
    Duplicate,
}

impl fmt::Display for CredentialsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "credentials line {}: ", self.line)?;
        match self.kind {
            CredentialsErrorKind::Format => f.write_str("expected KEY_ID:SHA256[:PERM,...]"),
            CredentialsErrorKind::KeyId(e) => write!(f, "the key id: {e}"),
            CredentialsErrorKind::Hash => f.write_str("the hash is not 64 hex digits"),
            CredentialsErrorKind::Permission => {
                f.write_str("permissions are a list of subscribe, retransmit")
            }
            CredentialsErrorKind::Duplicate => f.write_str("a duplicate key id"),
        }
    }
}

impl core::error::Error for CredentialsError {}

/// The hash an unknown key id is compared against (never equal to SHA-256
/// of anything a client can send, in practice).
const STAND_IN: [u8; 32] = [0x5a; 32];

impl Credentials {
    /// Reads a credentials file's text (see [`Credentials`] for the format).
    ///
    /// # Errors
    /// [`CredentialsError`] for the first line that is wrong.
    pub fn parse(text: &str) -> Result<Credentials, CredentialsError> {
        let mut keys = BTreeMap::new();
        for (n, raw) in text.split('\n').enumerate() {
            let line = n + 1;
            let err = |kind| CredentialsError { line, kind };
            let entry = raw.strip_suffix('\r').unwrap_or(raw).trim();
            if entry.is_empty() || entry.starts_with('#') {
                continue;
            }
            let mut parts = entry.split(':');
            let (Some(id), Some(hash)) = (parts.next(), parts.next()) else {
                return Err(err(CredentialsErrorKind::Format));
            };
            let perms = parts.next();
            if parts.next().is_some() {
                return Err(err(CredentialsErrorKind::Format));
            }
            let key_id = KeyId::new(id).map_err(|e| err(CredentialsErrorKind::KeyId(e)))?;
            let hash = parse_hex32(hash).ok_or(err(CredentialsErrorKind::Hash))?;
            let permissions = match perms {
                None => Permissions::ALL,
                Some(list) => {
                    parse_permissions(list).ok_or(err(CredentialsErrorKind::Permission))?
                }
            };
            if keys.insert(key_id, (hash, permissions)).is_some() {
                return Err(err(CredentialsErrorKind::Duplicate));
            }
        }
        Ok(Credentials { keys })
    }

    /// The credentials-file line for `key_id` and `secret` (what `tickwire
    /// keygen` prints), with `permissions` (`None`: both, no list).
    ///
    /// ```
    /// use tickwire::session::auth::{Credentials, Permissions};
    /// use tickwire::wire::{KeyId, Secret};
    /// let line = Credentials::line(&KeyId::new("a")?, &Secret::new([0; 32]), Some(Permissions::SUBSCRIBE));
    /// assert_eq!(line, "a:66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925:subscribe");
    /// # Ok::<(), tickwire::wire::KeyIdError>(())
    /// ```
    #[must_use]
    pub fn line(key_id: &KeyId, secret: &Secret, permissions: Option<Permissions>) -> String {
        use core::fmt::Write as _;
        let mut line = String::new();
        line.push_str(key_id.as_str());
        line.push(':');
        for byte in secret_hash(secret) {
            let _ = write!(line, "{byte:02x}");
        }
        if let Some(p) = permissions {
            let names: Vec<&str> = [(p.subscribe, "subscribe"), (p.retransmit, "retransmit")]
                .into_iter()
                .filter_map(|(on, name)| on.then_some(name))
                .collect();
            line.push(':');
            line.push_str(&names.join(","));
        }
        line
    }

    /// How many keys.
    #[must_use]
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether there are none (every Auth is then refused).
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_list().entries(self.keys.keys()).finish()
    }
}

impl Verifier for Credentials {
    fn authenticate(&self, key_id: &KeyId, secret: &Secret, _peer: IpAddr) -> Option<Identity> {
        // The same work for an unknown key id as for a wrong secret.
        let (known, (hash, permissions)) = match self.keys.get(key_id) {
            Some(entry) => (true, *entry),
            None => (false, (STAND_IN, Permissions::ALL)),
        };
        let equal: bool = secret_hash(secret).ct_eq(&hash).into();
        (equal && known).then_some(Identity {
            key_id: *key_id,
            permissions,
        })
    }
}

fn parse_hex32(text: &str) -> Option<[u8; 32]> {
    let bytes = text.as_bytes();
    if bytes.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (place, pair) in out.iter_mut().zip(bytes.chunks_exact(2)) {
        let [hi, lo] = pair else { return None };
        *place = (hex_digit(*hi)? << 4) | hex_digit(*lo)?;
    }
    Some(out)
}

fn hex_digit(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn parse_permissions(list: &str) -> Option<Permissions> {
    let mut p = Permissions {
        subscribe: false,
        retransmit: false,
    };
    for name in list.split(',') {
        match name.trim() {
            "subscribe" => p.subscribe = true,
            "retransmit" => p.retransmit = true,
            _ => return None,
        }
    }
    Some(p)
}

/// The lock-out rule (protocol section 11: failed authentications counted
/// per peer address, per /64 for IPv6).
///
/// ```
/// let rule = tickwire::session::auth::LockOutConfig::default();
/// assert_eq!((rule.max_failures, rule.window.as_secs()), (10, 60));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
pub struct LockOutConfig {
    /// Failed authentications (reason 2) from one address within
    /// [`window`](Self::window) after which that address's new
    /// connections are closed, without reading or writing, until the
    /// window ends (10; 0 turns the rule off).
    pub max_failures: u32,
    /// The window, from an address's first failure (60 s).
    pub window: Duration,
    /// Addresses tracked at most (4,096): beyond, the oldest window is
    /// forgotten (a memory bound under a flood from many addresses).
    pub max_addresses: usize,
}

impl LockOutConfig {
    /// 10 failures in 60 s, 4,096 addresses tracked.
    pub const DEFAULT: LockOutConfig = LockOutConfig {
        max_failures: 10,
        window: Duration::from_secs(60),
        max_addresses: 4096,
    };
}

impl Default for LockOutConfig {
    fn default() -> LockOutConfig {
        LockOutConfig::DEFAULT
    }
}

/// The address a failure counts against: an IPv4 address, or an IPv6
/// address's /64 (an IPv4-mapped IPv6 address counts as its IPv4 one).
///
/// ```
/// use tickwire::session::auth::lockout_key;
/// let a = lockout_key("2001:db8::1".parse()?);
/// let b = lockout_key("2001:db8::ffff:1".parse()?);
/// assert_eq!(a, b); // same /64
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[must_use]
pub fn lockout_key(peer: IpAddr) -> IpAddr {
    match peer {
        IpAddr::V4(_) => peer,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut s = v6.segments();
                s[4..].fill(0);
                IpAddr::V6(s.into())
            }
        },
    }
}

/// Failed authentications per address (see [`LockOutConfig`]), in the
/// caller's time (no clock).
///
/// ```
/// use core::time::Duration;
/// use tickwire::session::auth::{LockOut, LockOutConfig};
/// let rule = LockOutConfig { max_failures: 2, window: Duration::from_secs(60), max_addresses: 8 };
/// let mut lock = LockOut::new(rule);
/// let peer = "192.0.2.1".parse()?;
/// let t = Duration::from_secs(1);
/// lock.failed(peer, t);
/// assert!(!lock.is_locked(peer, t));
/// lock.failed(peer, t);
/// assert!(lock.is_locked(peer, t));
/// assert!(!lock.is_locked("192.0.2.2".parse()?, t)); // others are not
/// assert!(!lock.is_locked(peer, t + Duration::from_secs(60))); // the window ended
/// # Ok::<(), std::net::AddrParseError>(())
/// ```
#[derive(Clone, Debug)]
pub struct LockOut {
    config: LockOutConfig,
    /// Address → (failures, start of its window).
    failures: BTreeMap<IpAddr, (u32, Duration)>,
    locked_out: u64,
}

impl LockOut {
    /// No failures yet.
    #[must_use]
    pub fn new(config: LockOutConfig) -> LockOut {
        LockOut {
            config,
            failures: BTreeMap::new(),
            locked_out: 0,
        }
    }

    /// A failed authentication from `peer` at `now`.
    pub fn failed(&mut self, peer: IpAddr, now: Duration) {
        if self.config.max_failures == 0 {
            return;
        }
        let window = self.config.window;
        let key = lockout_key(peer);
        let entry = self.failures.entry(key).or_insert((0, now));
        if now.saturating_sub(entry.1) >= window {
            *entry = (0, now);
        }
        entry.0 = entry.0.saturating_add(1);
        if self.failures.len() > self.config.max_addresses.max(1) {
            self.failures
                .retain(|_, (_, since)| now.saturating_sub(*since) < window);
            while self.failures.len() > self.config.max_addresses.max(1) {
                let oldest = self
                    .failures
                    .iter()
                    .min_by_key(|(_, (_, since))| *since)
                    .map(|(k, _)| *k);
                match oldest {
                    Some(k) if k != key => {
                        self.failures.remove(&k);
                    }
                    _ => break,
                }
            }
        }
    }

    /// Whether `peer`'s new connections are closed at `now`.
    #[must_use]
    pub fn is_locked(&self, peer: IpAddr, now: Duration) -> bool {
        self.config.max_failures > 0
            && self
                .failures
                .get(&lockout_key(peer))
                .is_some_and(|&(n, since)| {
                    n >= self.config.max_failures && now.saturating_sub(since) < self.config.window
                })
    }

    /// Counts a connection closed because its address was locked out.
    pub fn count_refused(&mut self) {
        self.locked_out += 1;
    }

    /// Connections closed because their address was locked out, ever.
    #[must_use]
    pub fn refused(&self) -> u64 {
        self.locked_out
    }

    /// Addresses tracked now.
    #[must_use]
    pub fn tracked(&self) -> usize {
        self.failures.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_either_case_and_bad_lines() {
        let lower = "66687aadf862bd776c8fc18b8e9f8e20089714856ee233b3902a591d0d5f2925";
        let upper = lower.to_ascii_uppercase();
        let c = Credentials::parse(&alloc::format!(
            "  # c\n\na:{lower}\r\nb:{upper}:retransmit,subscribe\n"
        ))
        .unwrap();
        assert_eq!(c.len(), 2);
        let zero = Secret::new([0; 32]);
        let peer = IpAddr::V4(core::net::Ipv4Addr::LOCALHOST);
        assert!(c
            .authenticate(&KeyId::new("b").unwrap(), &zero, peer)
            .is_some());
        for (text, kind) in [
            ("a", CredentialsErrorKind::Format),
            ("a:b:c:d", CredentialsErrorKind::Format),
            ("a:zz", CredentialsErrorKind::Hash),
            (
                "bad id:00",
                CredentialsErrorKind::KeyId(KeyIdError::BadCharacter { at: 3, byte: b' ' }),
            ),
        ] {
            assert_eq!(Credentials::parse(text).unwrap_err().kind, kind, "{text}");
        }
        let e = Credentials::parse(&alloc::format!("a:{lower}:read")).unwrap_err();
        assert_eq!(e.kind, CredentialsErrorKind::Permission);
        assert!(!alloc::format!("{e}").contains(lower));
    }

    #[test]
    fn lockout_is_bounded_and_per_64() {
        let rule = LockOutConfig {
            max_failures: 1,
            window: Duration::from_secs(10),
            max_addresses: 3,
        };
        let mut lock = LockOut::new(rule);
        for i in 0..10u8 {
            lock.failed(
                IpAddr::V4([10, 0, 0, i].into()),
                Duration::from_secs(u64::from(i)),
            );
            assert!(lock.tracked() <= 3);
        }
        assert!(lock.is_locked(IpAddr::V4([10, 0, 0, 9].into()), Duration::from_secs(9)));
        let v6: IpAddr = "2001:db8:0:1::7".parse().unwrap();
        lock.failed(v6, Duration::from_secs(9));
        assert!(lock.is_locked(
            "2001:db8:0:1:ffff::1".parse().unwrap(),
            Duration::from_secs(9)
        ));
        assert!(!lock.is_locked("2001:db8:0:2::7".parse().unwrap(), Duration::from_secs(9)));
    }
}

/// Secrets parsed from text: exactly 64 hex digits (either case), with
/// surrounding blanks and one trailing newline allowed. The error never
/// holds the text.
///
/// ```
/// use tickwire::session::auth::parse_secret;
/// let hex = "00".repeat(31) + "ff\n";
/// assert_eq!(parse_secret(&hex)?.expose()[31], 0xff);
/// assert!(parse_secret("not hex").is_err());
/// # Ok::<(), tickwire::session::auth::SecretError>(())
/// ```
///
/// # Errors
/// [`SecretError::Format`].
pub fn parse_secret(text: &str) -> Result<Secret, SecretError> {
    parse_hex32(text.trim())
        .map(Secret::new)
        .ok_or(SecretError::Format)
}

/// Why a secret could not be had. Its messages never echo a secret or a
/// file's content.
#[derive(Debug)]
#[non_exhaustive]
pub enum SecretError {
    /// Not 64 hex digits.
    Format,
    /// The file can be read by others than its owner (`mode & 077`).
    #[cfg(feature = "std")]
    Exposed {
        /// The file.
        path: std::path::PathBuf,
        /// Its mode.
        mode: u32,
    },
    /// The file could not be read, created or written.
    #[cfg(feature = "std")]
    Io {
        /// The file.
        path: std::path::PathBuf,
        /// Why.
        error: std::io::Error,
    },
    /// Neither a secret file nor `TICKWIRE_SECRET` was given.
    Missing,
}

impl fmt::Display for SecretError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SecretError::Format => f.write_str("a secret is 64 hex digits (32 bytes)"),
            #[cfg(feature = "std")]
            SecretError::Exposed { path, mode } => write!(
                f,
                "{}: mode {mode:o} lets others read it (chmod 600)",
                path.display()
            ),
            #[cfg(feature = "std")]
            SecretError::Io { path, error } => write!(f, "{}: {error}", path.display()),
            SecretError::Missing => {
                f.write_str("no secret: give a secret file or set TICKWIRE_SECRET")
            }
        }
    }
}

impl core::error::Error for SecretError {}

/// The environment variable a client's secret may come from.
pub const SECRET_ENV: &str = "TICKWIRE_SECRET";

#[cfg(feature = "std")]
mod files {
    use std::borrow::ToOwned as _;
    use std::fs;
    use std::io::Write as _;
    use std::path::Path;
    use std::string::String;

    use super::{parse_secret, Credentials, SecretError, SECRET_ENV};
    use crate::wire::Secret;

    /// Reads a file that holds secrets or their hashes, refusing it (on
    /// Unix) when others can read it.
    fn read_private(path: &Path) -> Result<String, SecretError> {
        let io = |error| SecretError::Io {
            path: path.to_owned(),
            error,
        };
        let file = fs::File::open(path).map_err(io)?;
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = file.metadata().map_err(io)?.permissions().mode();
            if mode & 0o077 != 0 {
                return Err(SecretError::Exposed {
                    path: path.to_owned(),
                    mode: mode & 0o7777,
                });
            }
        }
        let mut text = String::new();
        // (An I/O error's text never holds the file's bytes.)
        std::io::Read::read_to_string(&mut &file, &mut text).map_err(io)?;
        Ok(text)
    }

    /// Why a credentials file could not be loaded.
    #[derive(Debug)]
    #[non_exhaustive]
    pub enum CredentialsFileError {
        /// Not readable, or readable by others.
        File(SecretError),
        /// A line is wrong.
        Line(super::CredentialsError),
    }

    impl core::fmt::Display for CredentialsFileError {
        fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
            match self {
                CredentialsFileError::File(e) => e.fmt(f),
                CredentialsFileError::Line(e) => e.fmt(f),
            }
        }
    }

    impl std::error::Error for CredentialsFileError {}

    impl Credentials {
        /// Loads a credentials file (see [`Credentials`] for the format),
        /// refused when others than its owner can read it.
        ///
        /// ```no_run
        /// let credentials = tickwire::session::auth::Credentials::load("/etc/tickwire/keys".as_ref())?;
        /// # Ok::<(), tickwire::session::auth::CredentialsFileError>(())
        /// ```
        ///
        /// # Errors
        /// [`CredentialsFileError`].
        pub fn load(path: &Path) -> Result<Credentials, CredentialsFileError> {
            let text = read_private(path).map_err(CredentialsFileError::File)?;
            Credentials::parse(&text).map_err(CredentialsFileError::Line)
        }
    }

    /// A client's secret: from `path` (64 hex digits, the file private to
    /// its owner) if given, else from the environment variable
    /// [`SECRET_ENV`] (`TICKWIRE_SECRET`). Never from a command line.
    ///
    /// ```
    /// use tickwire::session::auth::{load_secret, write_secret_file, SecretError};
    /// use tickwire::wire::Secret;
    /// let dir = std::env::temp_dir().join(format!("tickwire-doc-{}", std::process::id()));
    /// std::fs::create_dir_all(&dir)?;
    /// let path = dir.join("secret");
    /// # let _ = std::fs::remove_file(&path);
    /// write_secret_file(&path, &Secret::new([7; 32]))?;
    /// assert_eq!(load_secret(Some(&path))?, Secret::new([7; 32]));
    /// assert!(matches!(write_secret_file(&path, &Secret::new([8; 32])), Err(SecretError::Io { .. })));
    /// # std::fs::remove_dir_all(&dir)?;
    /// # Ok::<(), Box<dyn std::error::Error>>(())
    /// ```
    ///
    /// # Errors
    /// [`SecretError`]: unreadable, readable by others, not 64 hex digits,
    /// or neither given.
    pub fn load_secret(path: Option<&Path>) -> Result<Secret, SecretError> {
        match path {
            Some(path) => parse_secret(&read_private(path)?),
            None => match std::env::var(SECRET_ENV) {
                Ok(text) => parse_secret(&text),
                Err(_) => Err(SecretError::Missing),
            },
        }
    }

    /// Creates `path` (it must not exist: `O_EXCL`) with mode 0600 and
    /// writes `secret` into it as 64 hex digits and a newline.
    ///
    /// # Errors
    /// [`SecretError::Io`], also when the file exists.
    pub fn write_secret_file(path: &Path, secret: &Secret) -> Result<(), SecretError> {
        let io = |error| SecretError::Io {
            path: path.to_owned(),
            error,
        };
        let mut options = fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt as _;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(io)?;
        let mut text = String::with_capacity(65);
        for byte in secret.expose() {
            use core::fmt::Write as _;
            let _ = write!(text, "{byte:02x}");
        }
        text.push('\n');
        file.write_all(text.as_bytes()).map_err(io)?;
        file.sync_all().map_err(io)
    }
}

#[cfg(feature = "std")]
pub use files::{load_secret, write_secret_file, CredentialsFileError};
