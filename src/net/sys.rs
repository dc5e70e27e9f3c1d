//! The one system call `std` and `mio` do not offer: the number of bytes
//! still in a socket's kernel send queue. The only `unsafe` code of the
//! networking layer.

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

/// Other platforms: unknown; callers use their user-space queue alone.
#[cfg(not(target_os = "linux"))]
pub(crate) fn unsent_bytes<T>(_fd: T) -> Option<usize> {
    None
}
