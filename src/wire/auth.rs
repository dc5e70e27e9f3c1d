//! The values carried by the Auth and Rejected frames (protocol section 11):
//! [`KeyId`], [`Secret`] and [`RejectReason`].
#![forbid(unsafe_code)]

use core::fmt;

/// Length of the `key_id` field of an Auth frame, in bytes.
pub const KEY_ID_LEN: usize = 16;
/// Length of the `secret` field of an Auth frame, in bytes.
pub const SECRET_LEN: usize = 32;

/// Whether `byte` may appear in a key id: `A–Z a–z 0–9 - _ .`.
///
/// ```
/// use tickwire::wire::is_key_id_byte;
/// assert!(is_key_id_byte(b'a') && is_key_id_byte(b'-') && is_key_id_byte(b'.'));
/// assert!(!is_key_id_byte(b' ') && !is_key_id_byte(0) && !is_key_id_byte(b':'));
/// ```
#[inline]
#[must_use]
pub const fn is_key_id_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'_' | b'.')
}

/// The name of a key: 1 to 16 characters from `A–Z a–z 0–9 - _ .`
/// (protocol section 11). On the wire it is padded on the right with 0x00
/// to 16 bytes.
///
/// A `KeyId` is always valid: every way to make one checks. It is not
/// secret, and prints as itself.
///
/// ```
/// use tickwire::wire::KeyId;
/// let id = KeyId::new("alice")?;
/// assert_eq!(id.as_str(), "alice");
/// assert_eq!(&id.to_wire()[..6], b"alice\0");
/// assert_eq!(KeyId::from_wire(&id.to_wire())?, id);
/// assert!(KeyId::new("").is_err());
/// assert!(KeyId::new("seventeen-chars-x").is_err());
/// assert!(KeyId::new("bob smith").is_err());
/// # Ok::<(), tickwire::wire::KeyIdError>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId {
    /// The characters, then 0x00 padding.
    bytes: [u8; KEY_ID_LEN],
    /// How many characters (1–16).
    len: u8,
}

/// Why bytes or a string are not a valid [`KeyId`].
///
/// ```
/// use tickwire::wire::{KeyId, KeyIdError};
/// assert_eq!(KeyId::new(""), Err(KeyIdError::Empty));
/// assert_eq!(KeyId::new("a:b"), Err(KeyIdError::BadCharacter { at: 1, byte: b':' }));
/// assert_eq!(KeyId::new("abcdefghijklmnopq"), Err(KeyIdError::TooLong { len: 17 }));
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum KeyIdError {
    /// No characters (the wire field starts with 0x00).
    Empty,
    /// More than 16 characters.
    TooLong {
        /// The length given.
        len: usize,
    },
    /// A byte outside `A–Z a–z 0–9 - _ .` (on the wire: a byte other than
    /// 0x00 after the padding started, or any other disallowed byte).
    BadCharacter {
        /// Its position.
        at: usize,
        /// The byte.
        byte: u8,
    },
}

impl fmt::Display for KeyIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            KeyIdError::Empty => f.write_str("empty key id: it needs 1 to 16 characters"),
            KeyIdError::TooLong { len } => {
                write!(f, "key id of {len} characters: at most 16 are allowed")
            }
            KeyIdError::BadCharacter { at, byte } => write!(
                f,
                "key id byte {byte:#04x} at position {at} is not allowed \
                 (only A-Z a-z 0-9 - _ . are)"
            ),
        }
    }
}

impl core::error::Error for KeyIdError {}

impl KeyId {
    /// Checks `id`: 1 to 16 characters from `A–Z a–z 0–9 - _ .`.
    ///
    /// # Errors
    /// [`KeyIdError`] saying what is wrong.
    ///
    /// ```
    /// assert_eq!(tickwire::wire::KeyId::new("feed-reader_2.v1")?.len(), 16);
    /// # Ok::<(), tickwire::wire::KeyIdError>(())
    /// ```
    pub fn new(id: &str) -> Result<KeyId, KeyIdError> {
        let raw = id.as_bytes();
        if raw.is_empty() {
            return Err(KeyIdError::Empty);
        }
        if raw.len() > KEY_ID_LEN {
            return Err(KeyIdError::TooLong { len: raw.len() });
        }
        let mut bytes = [0u8; KEY_ID_LEN];
        for (at, (dst, &byte)) in bytes.iter_mut().zip(raw).enumerate() {
            if !is_key_id_byte(byte) {
                return Err(KeyIdError::BadCharacter { at, byte });
            }
            *dst = byte;
        }
        let len = u8::try_from(raw.len()).map_err(|_| KeyIdError::TooLong { len: raw.len() })?;
        Ok(KeyId { bytes, len })
    }

    /// Reads the `key_id` field of an Auth frame: valid when it holds 1 to
    /// 16 allowed characters followed only by 0x00 (the key id part of
    /// "well-formed", protocol section 11).
    ///
    /// # Errors
    /// [`KeyIdError::Empty`] if the first byte is 0x00;
    /// [`KeyIdError::BadCharacter`] for a disallowed byte, or a non-zero
    /// byte after the first 0x00.
    ///
    /// ```
    /// use tickwire::wire::{KeyId, KeyIdError};
    /// let mut field = *b"alice\0\0\0\0\0\0\0\0\0\0\0";
    /// assert_eq!(KeyId::from_wire(&field)?.as_str(), "alice");
    /// field[7] = b'x'; // a character after the padding began
    /// assert_eq!(KeyId::from_wire(&field), Err(KeyIdError::BadCharacter { at: 7, byte: b'x' }));
    /// # Ok::<(), KeyIdError>(())
    /// ```
    pub fn from_wire(field: &[u8; KEY_ID_LEN]) -> Result<KeyId, KeyIdError> {
        let len = field.iter().position(|&b| b == 0).unwrap_or(KEY_ID_LEN);
        if len == 0 {
            return Err(KeyIdError::Empty);
        }
        for (at, &byte) in field.iter().enumerate() {
            let ok = if at < len {
                is_key_id_byte(byte)
            } else {
                byte == 0
            };
            if !ok {
                return Err(KeyIdError::BadCharacter { at, byte });
            }
        }
        let len = u8::try_from(len).map_err(|_| KeyIdError::TooLong { len })?;
        Ok(KeyId { bytes: *field, len })
    }

    /// The key id as text.
    ///
    /// ```
    /// assert_eq!(tickwire::wire::KeyId::new("a.b")?.as_str(), "a.b");
    /// # Ok::<(), tickwire::wire::KeyIdError>(())
    /// ```
    #[must_use]
    pub fn as_str(&self) -> &str {
        let chars = self.bytes.get(..usize::from(self.len)).unwrap_or_default();
        // Every byte was checked to be ASCII when the value was made.
        core::str::from_utf8(chars).unwrap_or_default()
    }

    /// The number of characters (1–16).
    ///
    /// ```
    /// assert_eq!(tickwire::wire::KeyId::new("bob")?.len(), 3);
    /// # Ok::<(), tickwire::wire::KeyIdError>(())
    /// ```
    #[must_use]
    #[allow(clippy::len_without_is_empty)] // a key id is never empty
    pub fn len(&self) -> usize {
        usize::from(self.len)
    }

    /// The 16-byte `key_id` field: the characters, padded with 0x00.
    ///
    /// ```
    /// let field = tickwire::wire::KeyId::new("bob")?.to_wire();
    /// assert_eq!(field, *b"bob\0\0\0\0\0\0\0\0\0\0\0\0\0");
    /// # Ok::<(), tickwire::wire::KeyIdError>(())
    /// ```
    #[must_use]
    pub const fn to_wire(&self) -> [u8; KEY_ID_LEN] {
        self.bytes
    }
}

impl core::str::FromStr for KeyId {
    type Err = KeyIdError;

    /// As [`KeyId::new`].
    fn from_str(s: &str) -> Result<KeyId, KeyIdError> {
        KeyId::new(s)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("KeyId").field(&self.as_str()).finish()
    }
}

/// Writes the `key_id` field as protocol section 7 prints it: the bytes
/// before the first 0x00, each byte outside `A–Z a–z 0–9 - _ .` written as
/// `\u00xx` (so the result is always a safe JSON string body).
///
/// ```
/// use tickwire::wire::KeyIdField;
/// assert_eq!(KeyIdField(b"alice\0\0\0\0\0\0\0\0\0\0\0").to_string(), "alice");
/// assert_eq!(KeyIdField(b"a\"b\x01\xff\0zzzzzzzzzz").to_string(), r"a\u0022b\u0001\u00ff");
/// ```
#[derive(Clone, Copy, Debug)]
pub struct KeyIdField<'a>(pub &'a [u8; KEY_ID_LEN]);

impl fmt::Display for KeyIdField<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for &byte in self.0.iter().take_while(|&&b| b != 0) {
            if is_key_id_byte(byte) {
                write!(f, "{}", char::from(byte))?;
            } else {
                write!(f, "\\u{byte:04x}")?;
            }
        }
        Ok(())
    }
}

/// The 32-byte secret of an Auth frame: a bearer token, handled so that it
/// is never printed.
///
/// `Debug` writes `Secret(<redacted>)`; there is no `Display` and no
/// `Serialize`; equality compares every byte whatever the first difference
/// (no early exit). Read the bytes with [`expose`](Secret::expose) where
/// they are really needed (to encode, to hash).
///
/// ```
/// use tickwire::wire::Secret;
/// let secret = Secret::new([7; 32]);
/// assert_eq!(format!("{secret:?}"), "Secret(<redacted>)");
/// assert_eq!(secret.expose(), &[7; 32]);
/// ```
#[derive(Clone, Copy, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Deserialize))]
pub struct Secret([u8; SECRET_LEN]);

impl Secret {
    /// Wraps secret bytes.
    ///
    /// ```
    /// let s = tickwire::wire::Secret::new([0; 32]);
    /// # let _ = s;
    /// ```
    #[must_use]
    pub const fn new(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }

    /// The secret bytes. Do not print them.
    ///
    /// ```
    /// assert_eq!(tickwire::wire::Secret::new([1; 32]).expose()[0], 1);
    /// ```
    #[must_use]
    pub const fn expose(&self) -> &[u8; SECRET_LEN] {
        &self.0
    }
}

impl PartialEq for Secret {
    /// Compares all 32 bytes without stopping at the first difference.
    /// (Servers checking credentials compare hashes in constant time with
    /// a dedicated library; this is for tests and bookkeeping.)
    fn eq(&self, other: &Secret) -> bool {
        self.0
            .iter()
            .zip(other.0.iter())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0
    }
}

impl core::hash::Hash for Secret {
    fn hash<H: core::hash::Hasher>(&self, state: &mut H) {
        self.0.hash(state);
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(<redacted>)")
    }
}

impl From<[u8; SECRET_LEN]> for Secret {
    fn from(bytes: [u8; SECRET_LEN]) -> Secret {
        Secret(bytes)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for Secret {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<Secret> {
        Ok(Secret(u.arbitrary()?))
    }

    fn size_hint(depth: usize) -> (usize, Option<usize>) {
        <[u8; SECRET_LEN] as arbitrary::Arbitrary>::size_hint(depth)
    }
}

/// Why a server refused a connection: the `reason` of a Rejected frame
/// (protocol section 11).
///
/// Codes other than 1, 2 and 3 are kept as [`RejectReason::Other`] so that
/// they print and re-encode as they came; they mean what 2 means (see
/// [`effective`](RejectReason::effective)).
///
/// ```
/// use tickwire::wire::RejectReason;
/// assert_eq!(RejectReason::from_code(2), RejectReason::NotAuthorized);
/// assert_eq!(RejectReason::from_code(9), RejectReason::Other(9));
/// assert_eq!(RejectReason::Other(9).code(), 9);
/// assert_eq!(RejectReason::Other(9).effective(), RejectReason::NotAuthorized);
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "serde", derive(serde::Serialize, serde::Deserialize))]
#[cfg_attr(feature = "serde", serde(from = "u8", into = "u8"))]
pub enum RejectReason {
    /// 1: the connection's first frame was not an Auth.
    AuthenticationRequired,
    /// 2: unknown key id, wrong secret, or an Auth that is not well-formed
    /// (the server does not say which).
    NotAuthorized,
    /// 3: valid credentials that may not open this kind of connection
    /// (subscription or retransmission) on this server.
    NotPermitted,
    /// Any other code (never 1, 2 or 3: [`from_code`](RejectReason::from_code)
    /// maps those to their variants); read as [`NotAuthorized`](RejectReason::NotAuthorized).
    Other(u8),
}

impl RejectReason {
    /// The reason with wire code `code`.
    ///
    /// ```
    /// assert_eq!(tickwire::wire::RejectReason::from_code(1),
    ///            tickwire::wire::RejectReason::AuthenticationRequired);
    /// ```
    #[must_use]
    pub const fn from_code(code: u8) -> RejectReason {
        match code {
            1 => RejectReason::AuthenticationRequired,
            2 => RejectReason::NotAuthorized,
            3 => RejectReason::NotPermitted,
            other => RejectReason::Other(other),
        }
    }

    /// The wire code.
    ///
    /// ```
    /// assert_eq!(tickwire::wire::RejectReason::NotPermitted.code(), 3);
    /// ```
    #[must_use]
    pub const fn code(self) -> u8 {
        match self {
            RejectReason::AuthenticationRequired => 1,
            RejectReason::NotAuthorized => 2,
            RejectReason::NotPermitted => 3,
            RejectReason::Other(code) => code,
        }
    }

    /// What the reason means to a client: [`Other`](RejectReason::Other)
    /// codes are read as [`NotAuthorized`](RejectReason::NotAuthorized).
    ///
    /// ```
    /// use tickwire::wire::RejectReason;
    /// assert_eq!(RejectReason::Other(0).effective(), RejectReason::NotAuthorized);
    /// assert_eq!(RejectReason::NotPermitted.effective(), RejectReason::NotPermitted);
    /// ```
    #[must_use]
    pub const fn effective(self) -> RejectReason {
        match self {
            RejectReason::Other(_) => RejectReason::NotAuthorized,
            known => known,
        }
    }

    /// A stable `snake_case` name: `authentication_required`,
    /// `not_authorized`, `not_permitted`, or `other` for any other code.
    ///
    /// ```
    /// assert_eq!(tickwire::wire::RejectReason::NotAuthorized.name(), "not_authorized");
    /// ```
    #[must_use]
    pub const fn name(self) -> &'static str {
        match self {
            RejectReason::AuthenticationRequired => "authentication_required",
            RejectReason::NotAuthorized => "not_authorized",
            RejectReason::NotPermitted => "not_permitted",
            RejectReason::Other(_) => "other",
        }
    }
}

impl From<u8> for RejectReason {
    fn from(code: u8) -> RejectReason {
        RejectReason::from_code(code)
    }
}

impl From<RejectReason> for u8 {
    fn from(reason: RejectReason) -> u8 {
        reason.code()
    }
}

impl fmt::Display for RejectReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match *self {
            RejectReason::AuthenticationRequired => f.write_str("authentication required"),
            RejectReason::NotAuthorized => f.write_str("not authorized"),
            RejectReason::NotPermitted => f.write_str("not permitted"),
            RejectReason::Other(code) => {
                write!(f, "reason {code} (read as not authorized)")
            }
        }
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for RejectReason {
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<RejectReason> {
        Ok(RejectReason::from_code(u.arbitrary()?))
    }

    fn size_hint(depth: usize) -> (usize, Option<usize>) {
        <u8 as arbitrary::Arbitrary>::size_hint(depth)
    }
}

#[cfg(feature = "arbitrary")]
impl<'a> arbitrary::Arbitrary<'a> for KeyId {
    /// Only valid key ids: 1–16 allowed characters.
    fn arbitrary(u: &mut arbitrary::Unstructured<'a>) -> arbitrary::Result<KeyId> {
        const ALLOWED: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_.";
        let len = u.int_in_range(1..=KEY_ID_LEN)?;
        let mut bytes = [0u8; KEY_ID_LEN];
        for b in bytes.iter_mut().take(len) {
            *b = *u.choose(ALLOWED)?;
        }
        KeyId::from_wire(&bytes).map_err(|_| arbitrary::Error::IncorrectFormat)
    }
}
