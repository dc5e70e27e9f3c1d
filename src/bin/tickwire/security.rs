//! Who may read the feed, on the command line (protocol sections 11 and
//! 12): `serve`/`relay --auth FILE --tls-cert FILE --tls-key FILE
//! [--tls-client-ca FILE]`, and for the clients (`subscribe`, `record`, a
//! relay's upstream) `--key-id ID [--secret-file FILE] [--allow-plain-auth]
//! --tls --ca FILE [--server-name NAME] [--client-cert FILE --client-key
//! FILE]`. A secret never comes from the command line: a file private to
//! its owner, or `TICKWIRE_SECRET`.
//!
//! The settings are read once at start (files checked, errors before any
//! connection) and kept for the command's whole run.

use std::io;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use tickwire::net::{ClientConfig, DatagramClientConfig, ServerConfig};
use tickwire::session::auth::{load_secret, ClientKey, Credentials};
use tickwire::tls::{TlsClient, TlsClientFiles, TlsServerFiles};
use tickwire::wire::KeyId;

/// `serve` and `relay`: what the listening side requires.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct ServerArgs {
    /// Require authenticated logins (protocol section 11): the credentials
    /// file, one `KEY_ID:SHA256[:subscribe,retransmit]` per line (`tickwire
    /// keygen` prints them); refused if others can read it.
    #[arg(long, value_name = "FILE")]
    auth: Option<PathBuf>,
    /// Serve inside TLS (protocol section 12): the certificate chain (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Require client certificates issued by these CAs (PEM): mutual TLS.
    #[arg(long, value_name = "FILE", requires = "tls_cert")]
    tls_client_ca: Option<PathBuf>,
}

/// `subscribe`, `record`, a relay's upstream: what the connecting side
/// presents.
#[derive(clap::Args, Clone, Debug, Default)]
pub(crate) struct ClientArgs {
    /// Authenticate (protocol section 11) with this key id; the secret comes
    /// from --secret-file, else from the environment variable
    /// TICKWIRE_SECRET (never from the command line).
    #[arg(long, value_name = "ID", value_parser = crate::keygen::key_id)]
    key_id: Option<KeyId>,
    /// The key's secret: 64 hex digits, in a file only its owner can read.
    #[arg(long, value_name = "FILE", requires = "key_id")]
    secret_file: Option<PathBuf>,
    /// Send credentials over plain TCP to an address that is not loopback
    /// (the secret is a bearer token anyone on the path could reuse).
    #[arg(long, requires = "key_id")]
    allow_plain_auth: bool,
    /// Connect inside TLS (protocol section 12), to every server given;
    /// never plain.
    #[arg(long, requires = "ca")]
    tls: bool,
    /// The CA certificates (PEM) the server's certificate must chain to.
    #[arg(long, value_name = "FILE", requires = "tls")]
    ca: Option<PathBuf>,
    /// The name the server's certificate must carry (default: the host
    /// dialled).
    #[arg(long, value_name = "NAME", requires = "tls")]
    server_name: Option<String>,
    /// A client certificate (PEM), for a server that requires one.
    #[arg(long, value_name = "FILE", requires_all = ["tls", "client_key"])]
    client_cert: Option<PathBuf>,
    /// The client certificate's private key (PEM).
    #[arg(long, value_name = "FILE", requires = "client_cert")]
    client_key: Option<PathBuf>,
}

/// What was loaded from the arguments.
#[derive(Debug, Default)]
pub(crate) struct Security {
    auth: Option<Arc<Credentials>>,
    server_tls: Option<Arc<rustls::ServerConfig>>,
    key: Option<ClientKey>,
    allow_plain_auth: bool,
    client_tls: Option<TlsClient>,
}

static SECURITY: OnceLock<Security> = OnceLock::new();

fn invalid(what: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, what.to_string())
}

/// Loads and checks the files the arguments name; once, at start.
pub(crate) fn load(server: Option<&ServerArgs>, client: Option<&ClientArgs>) -> io::Result<()> {
    let mut s = Security::default();
    if let Some(args) = server {
        if let Some(path) = &args.auth {
            let credentials = Credentials::load(path).map_err(invalid)?;
            crate::logging::info!("{} keys from {}", credentials.len(), path.display());
            s.auth = Some(Arc::new(credentials));
        }
        if let (Some(cert), Some(key)) = (&args.tls_cert, &args.tls_key) {
            let mut files = TlsServerFiles::new(cert, key);
            files.client_ca.clone_from(&args.tls_client_ca);
            s.server_tls = Some(files.load().map_err(invalid)?);
        }
    }
    if let Some(args) = client {
        if let Some(key_id) = args.key_id {
            let secret = load_secret(args.secret_file.as_deref()).map_err(invalid)?;
            s.key = Some(ClientKey { key_id, secret });
        }
        s.allow_plain_auth = args.allow_plain_auth;
        if let (true, Some(ca)) = (args.tls, &args.ca) {
            let mut files = TlsClientFiles::new(ca);
            files.server_name.clone_from(&args.server_name);
            if let (Some(cert), Some(key)) = (&args.client_cert, &args.client_key) {
                files.client_cert = Some((cert.clone(), key.clone()));
            }
            s.client_tls = Some(files.load().map_err(invalid)?);
        }
    }
    let _ = SECURITY.set(s);
    Ok(())
}

fn get() -> &'static Security {
    SECURITY.get_or_init(Security::default)
}

/// Applies the listening side's settings.
pub(crate) fn server(config: &mut ServerConfig) {
    let s = get();
    if let Some(auth) = &s.auth {
        config.auth = Some(Arc::clone(auth) as Arc<dyn tickwire::session::auth::Verifier>);
    }
    config.tls.clone_from(&s.server_tls);
}

/// Applies the connecting side's settings.
pub(crate) fn client(config: &mut ClientConfig) {
    let s = get();
    config.credentials = s.key;
    config.allow_plain_auth = s.allow_plain_auth;
    config.tls.clone_from(&s.client_tls);
}

/// The datagram clients' retransmission connection: credentials (TLS for
/// it is not offered by the datagram client).
pub(crate) fn datagram_client(config: &mut DatagramClientConfig) -> io::Result<()> {
    let s = get();
    if s.client_tls.is_some() {
        return Err(invalid(
            "--tls: the datagram client's retransmission connection is plain TCP; \
             give its server a loopback or trusted address instead",
        ));
    }
    if s.key.is_some()
        && !s.allow_plain_auth
        && config.retransmit.is_some_and(|a| !a.ip().is_loopback())
    {
        return Err(invalid(
            "credentials would cross the network in clear to the retransmission server: \
             use a loopback address, or --allow-plain-auth",
        ));
    }
    config.retransmit_credentials = s.key;
    Ok(())
}
