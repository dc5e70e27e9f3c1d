//! TLS for the TCP connections of sections 4 and 9 (protocol section 12):
//! the byte stream inside is exactly the plain one. [`rustls`] with the
//! `ring` provider: TLS 1.3 (1.2 only when both ends are configured for
//! it), ALPN `tickwire/1` offered and required on both ends, no 0-RTT early
//! data, the server's certificate checked against configured roots and the
//! name dialled, client certificates (mutual TLS) when the server asks.
//!
//! ```text
//!  PEM files ──TlsServerFiles::load──▶ Arc<rustls::ServerConfig> ──▶ ServerConfig::tls (mio, tokio)
//!  PEM files ──TlsClientFiles::load──▶ TlsClient { config, server_name } ──▶ ClientConfig::tls
//! ```
//!
//! Why `ring`: it builds in seconds with `cc` alone, where aws-lc-rs
//! (rustls's default provider) is a large C build (minutes on a 2-core
//! machine, for every profile CI builds) that some targets build only with
//! cmake and NASM. The cost, to be weighed again when it matters to a
//! user: no post-quantum key exchange (rustls 0.23.48 deprecates the `ring`
//! provider for that reason; a feed's confidentiality is short-lived, so
//! "harvest now, decrypt later" weighs less here than for most traffic),
//! no FIPS mode, and `cargo check` for macOS needs the macOS SDK headers.
//!
//! ```
//! use tickwire::tls::{TlsServerFiles, TlsClientFiles};
//! let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/data/tls");
//! let server = TlsServerFiles::new(format!("{dir}/server.pem"), format!("{dir}/server.key")).load()?;
//! assert_eq!(server.alpn_protocols, [b"tickwire/1".to_vec()]);
//! let client = TlsClientFiles::new(format!("{dir}/ca.pem")).load()?;
//! assert_eq!(client.config.alpn_protocols, [b"tickwire/1".to_vec()]);
//! # Ok::<(), tickwire::tls::TlsError>(())
//! ```
#![forbid(unsafe_code)]

use std::borrow::ToOwned as _;
use std::fmt;
use std::path::{Path, PathBuf};
use std::string::{String, ToString as _};
use std::sync::Arc;
use std::vec;
use std::vec::Vec;

use rustls::pki_types::pem::PemObject as _;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig, SupportedProtocolVersion};

/// The one ALPN protocol id both ends offer (protocol section 12).
pub const ALPN: &[u8] = b"tickwire/1";

/// The rustls this module is built on, for configurations of your own.
pub use rustls;

/// Why TLS could not be set up, or a handshake's outcome is refused.
#[derive(Debug)]
#[non_exhaustive]
pub enum TlsError {
    /// A PEM file could not be read or holds nothing usable.
    File {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// rustls refused the configuration (a key that does not match its
    /// certificate, an empty root store…).
    Config(rustls::Error),
    /// The handshake ended without the ALPN protocol `tickwire/1` (the peer
    /// is not a tickwire TLS endpoint, or an old one).
    NoAlpn,
    /// A server name that is neither a DNS name nor an IP address.
    ServerName(String),
}

impl fmt::Display for TlsError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TlsError::File { path, what } => write!(f, "{}: {what}", path.display()),
            TlsError::Config(e) => write!(f, "TLS configuration: {e}"),
            TlsError::NoAlpn => f.write_str(
                "the TLS peer did not agree on the ALPN protocol tickwire/1 (not a tickwire endpoint)",
            ),
            TlsError::ServerName(name) => write!(f, "`{name}` is not a valid TLS server name"),
        }
    }
}

impl std::error::Error for TlsError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            TlsError::Config(e) => Some(e),
            _ => None,
        }
    }
}

impl From<rustls::Error> for TlsError {
    fn from(e: rustls::Error) -> TlsError {
        TlsError::Config(e)
    }
}

static TLS13_ONLY: [&SupportedProtocolVersion; 1] = [&rustls::version::TLS13];
static TLS13_AND_12: [&SupportedProtocolVersion; 2] =
    [&rustls::version::TLS13, &rustls::version::TLS12];

fn versions(tls12: bool) -> &'static [&'static SupportedProtocolVersion] {
    if tls12 {
        &TLS13_AND_12
    } else {
        &TLS13_ONLY
    }
}

/// The `ring` provider. rustls 0.23.48 deprecates it for lacking
/// post-quantum key exchange (X25519MLKEM768 needs aws-lc-rs): the choice
/// is written in the [module docs](self).
#[allow(deprecated)]
fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

fn file_error(path: &Path, what: impl fmt::Display) -> TlsError {
    TlsError::File {
        path: path.to_owned(),
        what: what.to_string(),
    }
}

/// The certificates of a PEM file, in order (a chain: leaf first).
///
/// # Errors
/// [`TlsError::File`] when it cannot be read or holds none.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| file_error(path, e))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| file_error(path, e))?;
    if certs.is_empty() {
        return Err(file_error(path, "no certificate in it"));
    }
    Ok(certs)
}

/// The private key of a PEM file (PKCS #8, SEC1 or PKCS #1). The error
/// never holds the key.
///
/// # Errors
/// [`TlsError::File`].
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| file_error(path, e))
}

/// Roots from a PEM file of CA certificates.
///
/// # Errors
/// [`TlsError::File`] when it cannot be read, holds none, or one is not a
/// CA certificate rustls can use.
pub fn load_roots(path: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(path)? {
        roots.add(cert).map_err(|e| file_error(path, e))?;
    }
    Ok(roots)
}

/// A server's TLS files: its certificate chain and key, and optionally the
/// CAs whose client certificates it requires (mutual TLS).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsServerFiles {
    /// PEM certificate chain, leaf first.
    pub cert_chain: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
    /// PEM CA certificates: when set, every client must present a
    /// certificate they issued.
    pub client_ca: Option<PathBuf>,
    /// Also accept TLS 1.2 (false: 1.3 only).
    pub tls12: bool,
}

impl TlsServerFiles {
    /// TLS 1.3 with `cert_chain` and `key`, no client certificates.
    #[must_use]
    pub fn new(cert_chain: impl Into<PathBuf>, key: impl Into<PathBuf>) -> TlsServerFiles {
        TlsServerFiles {
            cert_chain: cert_chain.into(),
            key: key.into(),
            client_ca: None,
            tls12: false,
        }
    }

    /// The rustls configuration: ALPN `tickwire/1`, no early data.
    ///
    /// # Errors
    /// [`TlsError`]: a file, or a key that does not match the certificate.
    pub fn load(&self) -> Result<Arc<ServerConfig>, TlsError> {
        let provider = provider();
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_protocol_versions(versions(self.tls12))?;
        let builder = match &self.client_ca {
            Some(path) => {
                let verifier = WebPkiClientVerifier::builder_with_provider(
                    Arc::new(load_roots(path)?),
                    provider,
                )
                .build()
                .map_err(|e| file_error(path, e))?;
                builder.with_client_cert_verifier(verifier)
            }
            None => builder.with_no_client_auth(),
        };
        let mut config =
            builder.with_single_cert(load_certs(&self.cert_chain)?, load_key(&self.key)?)?;
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.max_early_data_size = 0;
        Ok(Arc::new(config))
    }
}

/// A client's TLS settings, ready to connect: the rustls configuration
/// and the name to verify the server's certificate against (`None`: the
/// host of the address dialled).
#[derive(Clone, Debug)]
pub struct TlsClient {
    /// The rustls configuration (ALPN `tickwire/1`, no early data).
    pub config: Arc<ClientConfig>,
    /// The name the server's certificate must carry; `None`: the host
    /// name, or the IP address, the client connects to.
    pub server_name: Option<String>,
}

impl TlsClient {
    /// The name to verify for a connection to `host` (a host name or an IP
    /// address, as dialled).
    ///
    /// # Errors
    /// [`TlsError::ServerName`].
    pub fn server_name_for(&self, host: &str) -> Result<ServerName<'static>, TlsError> {
        let name = self.server_name.as_deref().unwrap_or(host);
        let name = name
            .strip_prefix('[')
            .and_then(|n| n.strip_suffix(']'))
            .unwrap_or(name);
        ServerName::try_from(name.to_owned()).map_err(|_| TlsError::ServerName(name.to_owned()))
    }
}

/// A client's TLS files: the roots to verify the server against, and
/// optionally a client certificate and key (for a server that requires
/// them).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TlsClientFiles {
    /// PEM CA certificates the server's certificate must chain to.
    pub ca: PathBuf,
    /// PEM client certificate chain and key (mutual TLS).
    pub client_cert: Option<(PathBuf, PathBuf)>,
    /// The name to verify (`None`: the host dialled).
    pub server_name: Option<String>,
    /// Also accept TLS 1.2 (false: 1.3 only).
    pub tls12: bool,
}

impl TlsClientFiles {
    /// TLS 1.3, roots from `ca`, no client certificate.
    #[must_use]
    pub fn new(ca: impl Into<PathBuf>) -> TlsClientFiles {
        TlsClientFiles {
            ca: ca.into(),
            client_cert: None,
            server_name: None,
            tls12: false,
        }
    }

    /// The settings to connect with.
    ///
    /// # Errors
    /// [`TlsError`].
    pub fn load(&self) -> Result<TlsClient, TlsError> {
        let builder = ClientConfig::builder_with_provider(provider())
            .with_protocol_versions(versions(self.tls12))?
            .with_root_certificates(load_roots(&self.ca)?);
        let mut config = match &self.client_cert {
            Some((chain, key)) => {
                builder.with_client_auth_cert(load_certs(chain)?, load_key(key)?)?
            }
            None => builder.with_no_client_auth(),
        };
        config.alpn_protocols = vec![ALPN.to_vec()];
        config.enable_early_data = false;
        Ok(TlsClient {
            config: Arc::new(config),
            server_name: self.server_name.clone(),
        })
    }
}

/// After a handshake: the peer agreed on `tickwire/1` (both ends abort
/// without it, protocol section 12; rustls lets a peer that offers no ALPN
/// at all through, so this is checked once the handshake is done).
///
/// # Errors
/// [`TlsError::NoAlpn`].
pub fn check_alpn(state: &rustls::CommonState) -> Result<(), TlsError> {
    if state.alpn_protocol() == Some(ALPN) {
        Ok(())
    } else {
        Err(TlsError::NoAlpn)
    }
}
