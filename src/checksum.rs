//! CRC-32C (Castagnoli), the frame checksum.
//!
//! Parameters (protocol section 1): reflected polynomial `0x82F63B78`, initial
//! value `0xFFFFFFFF`, final xor `0xFFFFFFFF`; the check value of the ASCII
//! bytes `"123456789"` is `0xE3069283`.
//!
//! Two implementations, tested against the check value and against each other:
//!
//! * **hardware**: the SSE4.2 `crc32` instruction on x86-64, or the ARMv8
//!   `crc32c*` instructions on aarch64, 8 bytes per instruction. All `unsafe`
//!   code of the crate lives in the private `hw` module below. With `std` the
//!   CPU is probed once at run time (the standard library caches the answer);
//!   without `std` the hardware path is used when the target enables the
//!   instructions at compile time (`-C target-feature=+sse4.2` or `+crc`, or
//!   `-C target-cpu=native`).
//! * **portable**: the slice-by-16 table implementation of the [`crc`] crate,
//!   used on every other CPU.
//!
//! Why not a CRC crate for the hot path? Frames are 20–40 bytes of checksummed
//! data; the general-purpose crates spend more on dispatch and alignment
//! handling than on the five `crc32` instructions a Quote needs. The
//! `decode` benchmark (`cargo bench --bench decode --features cli`) shows
//! the difference.
//!
//! ```
//! use tickwire::checksum::crc32c;
//! assert_eq!(crc32c(b"123456789"), 0xE306_9283);
//! ```

/// The CRC-32C of `data`, with the fastest implementation this CPU supports.
///
/// ```
/// assert_eq!(tickwire::checksum::crc32c(b""), 0);
/// assert_eq!(tickwire::checksum::crc32c(b"123456789"), 0xE306_9283);
/// ```
#[inline]
#[must_use]
pub fn crc32c(data: &[u8]) -> u32 {
    if let Some(crc) = crc32c_hardware(data) {
        return crc;
    }
    crc32c_portable(data)
}

/// The CRC-32C of `data` computed in software (slice-by-16 tables).
///
/// ```
/// assert_eq!(tickwire::checksum::crc32c_portable(b"123456789"), 0xE306_9283);
/// ```
#[inline]
#[must_use]
pub fn crc32c_portable(data: &[u8]) -> u32 {
    const CASTAGNOLI: crc::Crc<u32, crc::Table<16>> =
        crc::Crc::<u32, crc::Table<16>>::new(&crc::CRC_32_ISCSI);
    CASTAGNOLI.checksum(data)
}

/// The CRC-32C of `data` computed by the CPU's CRC instruction, or `None`
/// when this CPU (or this build, without `std`) cannot use one.
///
/// ```
/// use tickwire::checksum::{crc32c_hardware, crc32c_portable};
/// if let Some(crc) = crc32c_hardware(b"123456789") {
///     assert_eq!(crc, crc32c_portable(b"123456789"));
/// }
/// ```
#[inline]
#[must_use]
pub fn crc32c_hardware(data: &[u8]) -> Option<u32> {
    hw::crc32c(data)
}

/// Which implementation [`crc32c`] uses on this machine.
///
/// ```
/// let backend = tickwire::checksum::backend();
/// println!("CRC-32C backend: {backend}");
/// ```
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Backend {
    /// The x86-64 SSE4.2 `crc32` instruction.
    Sse42,
    /// The ARMv8 `crc32c` instructions.
    Armv8Crc,
    /// The slice-by-16 software tables.
    Portable,
}

impl core::fmt::Display for Backend {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(match self {
            Backend::Sse42 => "sse4.2",
            Backend::Armv8Crc => "armv8-crc",
            Backend::Portable => "portable",
        })
    }
}

/// The implementation [`crc32c`] selects on this machine.
#[must_use]
pub fn backend() -> Backend {
    if hw::available() {
        hw::NAME
    } else {
        Backend::Portable
    }
}

/// A CRC-32C implementation, chosen once and passed down hot paths so that
/// they can be compiled for it (see [`Kernel`]).
pub(crate) trait Crc32c: Copy {
    /// The CRC-32C of `data`.
    fn checksum(self, data: &[u8]) -> u32;

    /// The CRC-32C of `words` laid out little-endian (at most 18 words: a
    /// frame of [`MAX_FRAME_LEN`](crate::wire::MAX_FRAME_LEN) bytes).
    /// Encoders build frames as words in registers; this checksums them
    /// without a round trip through memory.
    #[inline(always)]
    fn checksum_words(self, words: &[u32]) -> u32 {
        let mut bytes = [0u8; crate::wire::MAX_FRAME_LEN];
        for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&word.to_le_bytes());
        }
        self.checksum(bytes.get(..words.len() * 4).unwrap_or_default())
    }
}

/// Picks the implementation on every call (for one-off uses).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Dynamic;

impl Crc32c for Dynamic {
    #[inline]
    fn checksum(self, data: &[u8]) -> u32 {
        crc32c(data)
    }
}

/// The software tables.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Portable;

impl Crc32c for Portable {
    #[inline(always)]
    fn checksum(self, data: &[u8]) -> u32 {
        crc32c_portable(data)
    }
}

/// A piece of hot code generic over the CRC implementation. [`Accel::run`]
/// compiles it once per implementation; with the CRC instructions the whole
/// kernel is compiled with them enabled, so the CRC is inlined into it.
pub(crate) trait Kernel {
    /// What the kernel returns.
    type Output;
    /// Runs the kernel with `crc`.
    fn run<C: Crc32c>(self, crc: C) -> Self::Output;
}

/// The CRC acceleration available on this CPU, detected once.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Accel(Option<hw::Hw>);

impl Accel {
    /// Probes the CPU (cheap after the first call: the answer is cached).
    pub(crate) fn detect() -> Accel {
        Accel(hw::Hw::detect())
    }

    /// The portable CRC whatever this CPU has (benchmarks, differential tests).
    pub(crate) const fn portable() -> Accel {
        Accel(None)
    }

    /// Runs `kernel` with the fastest CRC-32C this CPU has.
    ///
    /// Both arms are calls, so that a caller running a small kernel per
    /// event (the pull-style parsers) stays small enough to be inlined.
    #[inline(always)]
    pub(crate) fn run<K: Kernel>(self, kernel: K) -> K::Output {
        match self.0 {
            Some(hw) => hw.run(kernel),
            None => run_portable(kernel),
        }
    }
}

/// `kernel` with the portable CRC, compiled once per kernel.
#[inline(never)]
fn run_portable<K: Kernel>(kernel: K) -> K::Output {
    kernel.run(Portable)
}

/// The only module of the crate allowed to use `unsafe`: CPU intrinsics.
///
/// One implementation for both instruction sets: the x86-64 SSE4.2 `crc32`
/// instruction and the ARMv8 `crc32c*` instructions compute the same
/// reflected CRC-32C register update, 8, 4 or 1 byte at a time.
#[allow(unsafe_code)]
mod hw {
    use super::{Crc32c, Kernel};

    /// Whether the CRC instructions may run on this CPU.
    #[inline]
    pub(super) fn available() -> bool {
        #[cfg(all(target_arch = "x86_64", target_feature = "sse4.2"))]
        {
            true
        }
        #[cfg(all(
            target_arch = "x86_64",
            not(target_feature = "sse4.2"),
            feature = "std"
        ))]
        {
            std::is_x86_feature_detected!("sse4.2")
        }
        #[cfg(all(target_arch = "aarch64", target_feature = "crc"))]
        {
            true
        }
        #[cfg(all(target_arch = "aarch64", not(target_feature = "crc"), feature = "std"))]
        {
            std::arch::is_aarch64_feature_detected!("crc")
        }
        #[cfg(not(any(
            all(
                target_arch = "x86_64",
                any(target_feature = "sse4.2", feature = "std")
            ),
            all(target_arch = "aarch64", any(target_feature = "crc", feature = "std")),
        )))]
        {
            false
        }
    }

    /// The name of the instruction set, for [`super::Backend`].
    pub(super) const NAME: super::Backend = if cfg!(target_arch = "aarch64") {
        super::Backend::Armv8Crc
    } else {
        super::Backend::Sse42
    };

    #[inline]
    pub(super) fn crc32c(data: &[u8]) -> Option<u32> {
        Hw::detect().map(|hw| hw.checksum(data))
    }

    /// Proof that this CPU has the CRC instructions: the only way to get one
    /// is [`Hw::detect`], which checks. Every `unsafe` block below relies on
    /// holding one.
    #[derive(Clone, Copy, Debug)]
    pub(crate) struct Hw {
        _proof: (),
    }

    impl Hw {
        /// `Some` exactly when the CRC instructions are available.
        #[inline]
        pub(crate) fn detect() -> Option<Hw> {
            available().then_some(Hw { _proof: () })
        }

        /// Runs `kernel` compiled with the CRC instructions enabled.
        #[inline(always)]
        pub(crate) fn run<K: Kernel>(self, kernel: K) -> K::Output {
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            {
                // SAFETY: `run_hw` only requires the CRC instructions, which
                // `self` proves (see `Hw::detect`).
                unsafe { run_hw(self, kernel) }
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            {
                kernel.run(super::Portable)
            }
        }
    }

    /// # Safety
    /// The CPU must support SSE4.2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    unsafe fn run_hw<K: Kernel>(hw: Hw, kernel: K) -> K::Output {
        kernel.run(hw)
    }

    /// # Safety
    /// The CPU must support the ARMv8 CRC extension.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "crc")]
    unsafe fn run_hw<K: Kernel>(hw: Hw, kernel: K) -> K::Output {
        kernel.run(hw)
    }

    impl Crc32c for Hw {
        #[inline(always)]
        fn checksum(self, data: &[u8]) -> u32 {
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            {
                // SAFETY: `self` proves the CPU has the CRC instructions.
                unsafe { checksum(data) }
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            {
                super::crc32c_portable(data)
            }
        }

        #[inline(always)]
        fn checksum_words(self, words: &[u32]) -> u32 {
            #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
            {
                let mut pairs = words.chunks_exact(2);
                let mut crc = u32::MAX;
                for pair in &mut pairs {
                    if let [lo, hi] = *pair {
                        let word = u64::from(lo) | (u64::from(hi) << 32);
                        // SAFETY: `self` proves the CPU has the CRC instructions.
                        crc = unsafe { step8(crc, word) };
                    }
                }
                if let [last] = *pairs.remainder() {
                    // SAFETY: `self` proves the CPU has the CRC instructions.
                    crc = unsafe { step4(crc, last) };
                }
                !crc
            }
            #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
            {
                let mut bytes = [0u8; crate::wire::MAX_FRAME_LEN];
                for (chunk, word) in bytes.chunks_exact_mut(4).zip(words) {
                    chunk.copy_from_slice(&word.to_le_bytes());
                }
                super::crc32c_portable(bytes.get(..words.len() * 4).unwrap_or_default())
            }
        }
    }

    /// CRC-32C of `data`, 8 bytes per instruction.
    ///
    /// # Safety
    /// The CPU must have the CRC instructions.
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    #[cfg_attr(target_arch = "x86_64", target_feature(enable = "sse4.2"))]
    #[cfg_attr(target_arch = "aarch64", target_feature(enable = "crc"))]
    #[inline]
    unsafe fn checksum(data: &[u8]) -> u32 {
        let mut chunks = data.chunks_exact(8);
        let mut crc = u32::MAX;
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            // SAFETY: the CRC instructions are enabled for this function (its caller's contract).
            crc = unsafe { step8(crc, u64::from_le_bytes(word)) };
        }
        let mut rest = chunks.remainder();
        if let Some((word, tail)) = rest.split_first_chunk::<4>() {
            // SAFETY: as above.
            crc = unsafe { step4(crc, u32::from_le_bytes(*word)) };
            rest = tail;
        }
        for &byte in rest {
            // SAFETY: as above.
            crc = unsafe { step1(crc, byte) };
        }
        !crc
    }

    /// Eight bytes into the CRC register.
    ///
    /// # Safety
    /// The CPU must support SSE4.2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    #[inline]
    unsafe fn step8(crc: u32, word: u64) -> u32 {
        // SAFETY: SSE4.2 is enabled for this function (its caller's contract).
        #[allow(unused_unsafe)]
        let crc = unsafe { core::arch::x86_64::_mm_crc32_u64(u64::from(crc), word) };
        // The instruction zero-extends its 32-bit result.
        #[allow(clippy::cast_possible_truncation)]
        let crc = crc as u32;
        crc
    }

    /// Four bytes into the CRC register.
    ///
    /// # Safety
    /// The CPU must support SSE4.2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    #[inline]
    unsafe fn step4(crc: u32, word: u32) -> u32 {
        // SAFETY: SSE4.2 is enabled for this function (its caller's contract).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_mm_crc32_u32(crc, word)
        }
    }

    /// One byte into the CRC register.
    ///
    /// # Safety
    /// The CPU must support SSE4.2.
    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "sse4.2")]
    #[inline]
    unsafe fn step1(crc: u32, byte: u8) -> u32 {
        // SAFETY: SSE4.2 is enabled for this function (its caller's contract).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::x86_64::_mm_crc32_u8(crc, byte)
        }
    }

    /// Eight bytes into the CRC register.
    ///
    /// # Safety
    /// The CPU must support the ARMv8 CRC extension.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "crc")]
    #[inline]
    unsafe fn step8(crc: u32, word: u64) -> u32 {
        // SAFETY: the CRC extension is enabled for this function (its caller's contract).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::aarch64::__crc32cd(crc, word)
        }
    }

    /// Four bytes into the CRC register.
    ///
    /// # Safety
    /// The CPU must support the ARMv8 CRC extension.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "crc")]
    #[inline]
    unsafe fn step4(crc: u32, word: u32) -> u32 {
        // SAFETY: the CRC extension is enabled for this function (its caller's contract).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::aarch64::__crc32cw(crc, word)
        }
    }

    /// One byte into the CRC register.
    ///
    /// # Safety
    /// The CPU must support the ARMv8 CRC extension.
    #[cfg(target_arch = "aarch64")]
    #[target_feature(enable = "crc")]
    #[inline]
    unsafe fn step1(crc: u32, byte: u8) -> u32 {
        // SAFETY: the CRC extension is enabled for this function (its caller's contract).
        #[allow(unused_unsafe)]
        unsafe {
            core::arch::aarch64::__crc32cb(crc, byte)
        }
    }
}

#[cfg(test)]
#[allow(clippy::cast_possible_truncation)]
mod tests {
    use super::*;

    #[test]
    fn check_value() {
        assert_eq!(crc32c_portable(b"123456789"), 0xE306_9283);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
        if let Some(crc) = crc32c_hardware(b"123456789") {
            assert_eq!(crc, 0xE306_9283);
        }
    }

    #[test]
    fn backend_matches_hardware_availability() {
        let hardware = crc32c_hardware(b"").is_some();
        assert_eq!(backend() != Backend::Portable, hardware);
        std::println!("CRC-32C backend: {}", backend());
    }

    #[test]
    fn word_checksums_match_byte_checksums() {
        // Up to the longest frame's (the Auth frame: 72 bytes, 18 words).
        let words: [u32; 18] = core::array::from_fn(|i| 0x9E37_79B9u32.wrapping_mul(i as u32 + 1));
        let mut bytes = [0u8; 72];
        for (chunk, w) in bytes.chunks_exact_mut(4).zip(words) {
            chunk.copy_from_slice(&w.to_le_bytes());
        }
        for n in 0..=18 {
            let want = crc32c_portable(&bytes[..n * 4]);
            assert_eq!(Portable.checksum_words(&words[..n]), want, "{n} words");
            if let Some(hw) = hw::Hw::detect() {
                assert_eq!(hw.checksum_words(&words[..n]), want, "{n} words");
            }
        }
    }

    #[test]
    fn hardware_matches_portable_at_every_length() {
        let mut data = [0u8; 300];
        let mut x: u32 = 0x1234_5678;
        for byte in data.iter_mut() {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            *byte = x.to_le_bytes()[0];
        }
        for start in 0..9 {
            for end in start..data.len() {
                let slice = &data[start..end];
                let portable = crc32c_portable(slice);
                assert_eq!(crc32c(slice), portable, "len {}", slice.len());
                if let Some(hw) = crc32c_hardware(slice) {
                    assert_eq!(hw, portable, "len {}", slice.len());
                }
            }
        }
    }
}
