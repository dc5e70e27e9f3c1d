//! The system calls `std` and `mio` do not offer: the number of bytes still
//! in a socket's kernel send queue (`TIOCOUTQ` on Linux, `SO_NWRITE` on
//! macOS, `FIONWRITE` on FreeBSD), and on Linux `sendmmsg`/`recvmmsg` (many
//! datagrams in one call) and `SO_RCVBUFFORCE`. The only `unsafe` code of
//! the networking layer. The receiving calls serve the mio
//! `DatagramClient` only (`net` feature); the rest, both servers.

/// Bytes in the kernel send queue of the socket `fd` (sent but not yet
/// acknowledged, or not yet sent), where the platform can say.
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn unsent_bytes(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: TIOCOUTQ (SIOCOUTQ) reads the socket's send-queue length into
    // the `c_int` the third argument points to, which lives for the call;
    // `fd` is a borrowed, open descriptor, so the ioctl cannot act on a
    // closed or reused one. Errors are reported through the return value.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCOUTQ, &mut queued) };
    if result == 0 {
        usize::try_from(queued).ok()
    } else {
        None
    }
}

/// Bytes in the kernel send queue of the socket `fd` (macOS and the other
/// Apple systems: the `SO_NWRITE` socket option, the send buffer's byte
/// count, which for TCP holds bytes until they are acknowledged, as Linux's
/// `TIOCOUTQ` does).
#[cfg(target_vendor = "apple")]
#[allow(unsafe_code)]
pub(crate) fn unsent_bytes(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    let mut len = libc::socklen_t::try_from(size_of::<libc::c_int>()).ok()?;
    // SAFETY: getsockopt(SOL_SOCKET, SO_NWRITE) writes at most `len` bytes
    // (the size of one `c_int`) into `queued` and the option's length into
    // `len`, both alive and exclusively borrowed for the call; `fd` is a
    // borrowed, open descriptor. Errors are reported through the return
    // value.
    let result = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NWRITE,
            std::ptr::from_mut(&mut queued).cast(),
            &mut len,
        )
    };
    if result == 0 {
        usize::try_from(queued).ok()
    } else {
        None
    }
}

/// Bytes in the kernel send queue of the socket `fd` (FreeBSD: the
/// `FIONWRITE` ioctl, the send buffer's byte count: bytes not yet sent or
/// not yet acknowledged, as Linux's `TIOCOUTQ`).
#[cfg(target_os = "freebsd")]
#[allow(unsafe_code)]
pub(crate) fn unsent_bytes(fd: std::os::fd::BorrowedFd<'_>) -> Option<usize> {
    use std::os::fd::AsRawFd;
    let mut queued: libc::c_int = 0;
    // SAFETY: FIONWRITE writes the send buffer's byte count into the `c_int`
    // the third argument points to, which lives for the call; `fd` is a
    // borrowed, open descriptor, so the ioctl cannot act on a closed or
    // reused one. Errors are reported through the return value.
    let result = unsafe { libc::ioctl(fd.as_raw_fd(), libc::FIONWRITE, &mut queued) };
    if result == 0 {
        usize::try_from(queued).ok()
    } else {
        None
    }
}

/// Other platforms: unknown; callers use their user-space queue alone.
#[cfg(not(any(target_os = "linux", target_vendor = "apple", target_os = "freebsd")))]
pub(crate) fn unsent_bytes<T>(_fd: T) -> Option<usize> {
    None
}

/// The most datagrams one [`send_datagrams`] call hands the kernel.
#[cfg(target_os = "linux")]
pub(crate) const SEND_BATCH: usize = 64;

/// Sends each `(datagram, destination)` of `messages` (at most
/// [`SEND_BATCH`]) on the UDP socket `fd` with one `sendmmsg` system call;
/// returns how many the kernel took, in order (fewer than asked: the next
/// one failed, and a plain `send_to` of it tells why).
#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
pub(crate) fn send_datagrams(
    fd: std::os::fd::BorrowedFd<'_>,
    messages: &[(&[u8], &socket2::SockAddr)],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    let count = messages.len().min(SEND_BATCH);
    // SAFETY: iovec and mmsghdr are plain C structs of integers and
    // pointers, for which all-zero bytes are a valid value (null pointers,
    // zero lengths).
    let mut iov: [libc::iovec; SEND_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdr: [libc::mmsghdr; SEND_BATCH] = unsafe { std::mem::zeroed() };
    for ((slot, h), (bytes, addr)) in iov.iter_mut().zip(hdr.iter_mut()).zip(messages) {
        slot.iov_base = bytes.as_ptr().cast_mut().cast();
        slot.iov_len = bytes.len();
        h.msg_hdr.msg_name = addr.as_ptr().cast_mut().cast();
        h.msg_hdr.msg_namelen = addr.len();
        h.msg_hdr.msg_iov = std::ptr::from_mut(slot);
        h.msg_hdr.msg_iovlen = 1;
    }
    let vlen = libc::c_uint::try_from(count).unwrap_or(0);
    // SAFETY: `hdr` holds `count` ≤ SEND_BATCH initialized headers, each
    // pointing at one iovec of `iov` and at one destination address, and
    // each iovec at one datagram of `messages`: all of them borrowed for
    // this call, which only reads them (and writes `msg_len` into `hdr`,
    // ours and mutable). `fd` is a borrowed, open descriptor. The kernel
    // reports failure through the return value and errno.
    let sent = unsafe { libc::sendmmsg(fd.as_raw_fd(), hdr.as_mut_ptr(), vlen, 0) };
    if sent < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(usize::try_from(sent).unwrap_or(0))
    }
}

/// The most datagrams one [`recv_datagrams`] call takes from the kernel.
#[cfg(feature = "net")]
pub(crate) const RECV_BATCH: usize = 32;

/// Receives up to [`RECV_BATCH`] datagrams from the UDP socket `fd` with one
/// `recvmmsg` system call, without waiting: datagram `i` lands in the `i`-th
/// `slot`-byte chunk of `buf`, and `lens[i]` is its length (`slot + 1` or
/// more when it was longer than the chunk, i.e. truncated). Returns how many
/// arrived (`WouldBlock` when none).
#[cfg(all(target_os = "linux", feature = "net"))]
#[allow(unsafe_code)]
pub(crate) fn recv_datagrams(
    fd: std::os::fd::BorrowedFd<'_>,
    buf: &mut [u8],
    slot: usize,
    lens: &mut [usize; RECV_BATCH],
) -> std::io::Result<usize> {
    use std::os::fd::AsRawFd;
    // SAFETY: iovec and mmsghdr are plain C structs of integers and
    // pointers, for which all-zero bytes are a valid value.
    let mut iov: [libc::iovec; RECV_BATCH] = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    let mut hdr: [libc::mmsghdr; RECV_BATCH] = unsafe { std::mem::zeroed() };
    let mut count = 0;
    for ((slot_iov, h), chunk) in iov
        .iter_mut()
        .zip(hdr.iter_mut())
        .zip(buf.chunks_exact_mut(slot.max(1)))
    {
        slot_iov.iov_base = chunk.as_mut_ptr().cast();
        slot_iov.iov_len = chunk.len();
        h.msg_hdr.msg_iov = std::ptr::from_mut(slot_iov);
        h.msg_hdr.msg_iovlen = 1;
        count += 1;
    }
    let vlen = libc::c_uint::try_from(count).unwrap_or(0);
    // SAFETY: `hdr` holds `count` ≤ RECV_BATCH initialized headers without
    // names or control buffers, each pointing at one iovec of `iov`, and
    // each iovec at a distinct `slot`-byte chunk of `buf`: all borrowed
    // mutably for this call, so the kernel's writes (datagram bytes into
    // the chunks, `msg_len` and `msg_flags` into `hdr`) alias nothing else.
    // MSG_DONTWAIT: no wait, whatever the descriptor's mode; no timeout
    // pointer. `fd` is a borrowed, open descriptor. Failure is reported
    // through the return value and errno.
    let got = unsafe {
        libc::recvmmsg(
            fd.as_raw_fd(),
            hdr.as_mut_ptr(),
            vlen,
            libc::MSG_DONTWAIT,
            std::ptr::null_mut(),
        )
    };
    if got < 0 {
        return Err(std::io::Error::last_os_error());
    }
    let got = usize::try_from(got).unwrap_or(0).min(count);
    for (len, h) in lens.iter_mut().zip(&hdr).take(got) {
        let n = usize::try_from(h.msg_len).unwrap_or(usize::MAX);
        *len = if h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0 {
            n.max(slot.saturating_add(1))
        } else {
            n
        };
    }
    Ok(got)
}

/// Sets the receive buffer of socket `fd` to `size` bytes past the
/// `net.core.rmem_max` cap (`SO_RCVBUFFORCE`; needs `CAP_NET_ADMIN`, e.g.
/// root). Fails with the kernel's error otherwise.
#[cfg(all(target_os = "linux", feature = "net"))]
#[allow(unsafe_code)]
pub(crate) fn force_recv_buffer(
    fd: std::os::fd::BorrowedFd<'_>,
    size: usize,
) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let value = libc::c_int::try_from(size).unwrap_or(libc::c_int::MAX);
    let len = libc::socklen_t::try_from(size_of::<libc::c_int>()).unwrap_or(4);
    // SAFETY: SO_RCVBUFFORCE reads one `c_int` from the pointer given, which
    // points at `value`, alive for the call, with `len` its size; `fd` is a
    // borrowed, open descriptor. Errors come back through the return value.
    let result = unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUFFORCE,
            std::ptr::from_ref(&value).cast(),
            len,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}
