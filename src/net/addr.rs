//! See [`ServerAddr`].
#![forbid(unsafe_code)]

use std::prelude::rust_2021::*;

use std::fmt;
use std::io;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::str::FromStr;

/// Where a client connects: a socket address, or a host name and port that
/// is resolved again at every connection attempt (so a client follows a
/// DNS name that moved).
///
/// [`ClientConfig::new`](super::ClientConfig::new) and
/// [`ClientConfig::with_servers`](super::ClientConfig::with_servers) take
/// anything that converts into one: a [`SocketAddr`] (as before), a
/// `"host:port"` string (`&str` or `String`), or a `(host, port)` pair.
/// A string that is an IP address and port becomes a
/// [`Socket`](ServerAddr::Socket) at once; anything else is kept as a
/// [`Name`](ServerAddr::Name) and checked when it is resolved: a name that
/// does not resolve (or lacks its `:port`) fails that connection attempt
/// with [`IoFailure::Unresolved`](crate::session::IoFailure::Unresolved),
/// and the client retries by its backoff like any failed connect.
///
/// The mio clients resolve with the system resolver on their polling
/// thread (a blocking `getaddrinfo`, as `std::net::TcpStream::connect`
/// does); give a [`SocketAddr`] where that wait matters. The tokio client
/// resolves without blocking its runtime. Every address a name resolves to
/// is tried in turn within one attempt (`localhost` may be `::1` and
/// `127.0.0.1`).
///
/// ```
/// use std::net::SocketAddr;
/// use tickwire::net::ServerAddr;
///
/// let ip: ServerAddr = "127.0.0.1:7878".into();
/// assert_eq!(ip, ServerAddr::Socket("127.0.0.1:7878".parse()?));
/// let name: ServerAddr = "localhost:7878".into();
/// assert_eq!(name, ServerAddr::Name("localhost:7878".into()));
/// assert!(name.resolve()?.iter().all(|a| a.ip().is_loopback() && a.port() == 7878));
/// let from_pair = ServerAddr::from(("localhost", 7878));
/// assert_eq!(from_pair, name);
/// assert_eq!(name.to_string(), "localhost:7878");
/// assert!(ServerAddr::from("no-such-host.invalid:7878").resolve().is_err());
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ServerAddr {
    /// An address used as it is.
    Socket(SocketAddr),
    /// `host:port`, resolved at each connection attempt.
    Name(String),
}

impl ServerAddr {
    /// The addresses to try now, in order: the socket address itself, or
    /// what the name resolves to at this moment (a blocking lookup).
    ///
    /// # Errors
    /// The name did not resolve, resolved to nothing, or has no port.
    pub fn resolve(&self) -> io::Result<Vec<SocketAddr>> {
        match self {
            ServerAddr::Socket(addr) => Ok(vec![*addr]),
            ServerAddr::Name(name) => {
                let addrs: Vec<SocketAddr> = name.as_str().to_socket_addrs()?.collect();
                if addrs.is_empty() {
                    Err(io::Error::new(
                        io::ErrorKind::NotFound,
                        format!("{name} resolved to no address"),
                    ))
                } else {
                    Ok(addrs)
                }
            }
        }
    }

    /// The socket address, if this is one (not a name).
    #[must_use]
    pub fn as_socket(&self) -> Option<SocketAddr> {
        match self {
            ServerAddr::Socket(addr) => Some(*addr),
            ServerAddr::Name(_) => None,
        }
    }
}

impl fmt::Display for ServerAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ServerAddr::Socket(addr) => addr.fmt(f),
            ServerAddr::Name(name) => f.write_str(name),
        }
    }
}

impl From<SocketAddr> for ServerAddr {
    fn from(addr: SocketAddr) -> ServerAddr {
        ServerAddr::Socket(addr)
    }
}

impl From<&SocketAddr> for ServerAddr {
    fn from(addr: &SocketAddr) -> ServerAddr {
        ServerAddr::Socket(*addr)
    }
}

impl From<(IpAddr, u16)> for ServerAddr {
    fn from(addr: (IpAddr, u16)) -> ServerAddr {
        ServerAddr::Socket(addr.into())
    }
}

impl From<&str> for ServerAddr {
    fn from(name: &str) -> ServerAddr {
        name.parse::<SocketAddr>()
            .map_or_else(|_| ServerAddr::Name(name.to_owned()), ServerAddr::Socket)
    }
}

impl From<String> for ServerAddr {
    fn from(name: String) -> ServerAddr {
        match name.parse::<SocketAddr>() {
            Ok(addr) => ServerAddr::Socket(addr),
            Err(_) => ServerAddr::Name(name),
        }
    }
}

impl From<&String> for ServerAddr {
    fn from(name: &String) -> ServerAddr {
        ServerAddr::from(name.as_str())
    }
}

impl From<(&str, u16)> for ServerAddr {
    fn from((host, port): (&str, u16)) -> ServerAddr {
        match host.parse::<IpAddr>() {
            Ok(ip) => ServerAddr::Socket(SocketAddr::new(ip, port)),
            Err(_) => ServerAddr::Name(format!("{host}:{port}")),
        }
    }
}

impl From<&ServerAddr> for ServerAddr {
    fn from(addr: &ServerAddr) -> ServerAddr {
        addr.clone()
    }
}

impl FromStr for ServerAddr {
    type Err = core::convert::Infallible;

    /// Never fails: a string that is not a socket address is a name (checked
    /// when it is resolved).
    fn from_str(s: &str) -> Result<ServerAddr, Self::Err> {
        Ok(ServerAddr::from(s))
    }
}

impl PartialEq<SocketAddr> for ServerAddr {
    fn eq(&self, other: &SocketAddr) -> bool {
        self.as_socket() == Some(*other)
    }
}

/// As a string (`"127.0.0.1:7878"`, `"localhost:7878"`): the form a
/// [`SocketAddr`] had in configuration files, so they still read.
#[cfg(feature = "serde")]
impl serde::Serialize for ServerAddr {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

#[cfg(feature = "serde")]
impl<'de> serde::Deserialize<'de> for ServerAddr {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<ServerAddr, D::Error> {
        let s = String::deserialize(deserializer)?;
        Ok(ServerAddr::from(s))
    }
}
