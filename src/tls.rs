//! TLS for stream servers, on [rustls](https://docs.rs/rustls) (the `tls` feature): certificates from
//! PEM files, several certificates chosen by SNI, ALPN, mutual TLS, and reload without restart.
//!
//! [`Tls`] is the configuration a server serves with ([`Server::tls`](crate::Server::tls)); it is a
//! cloneable handle, so the same one can be kept to [`reload`](Tls::reload) the certificates later —
//! from a certbot hook, or on `SIGHUP` through [`signals::reload_tls_on_sighup`](crate::signals::reload_tls_on_sighup).
//! A reload re-reads every file and swaps in a new configuration for new connections; connections
//! already open keep the one they were accepted with, and a file that cannot be read or parsed leaves
//! the old configuration in use.
//!
//! The handshake runs on the connection's own worker (its thread, child or pre-forked worker), within
//! a deadline ([`TlsBuilder::handshake_timeout`], 10 s by default), so a silent or trickling client
//! holds only its own worker, and only that long. The handler then reads and writes plain bytes, as
//! over TCP, and learns what was negotiated from [`StreamRequest::tls`](crate::StreamRequest::tls).
//! When the handler returns, the server sends `close_notify`; a peer that closes without one is
//! reported as a truncated close, not taken for the end of its data.
//!
//! ```no_run
//! use socketserver::tls::Tls;
//! use socketserver::{signals, StreamRequest, ThreadingTcpServer};
//!
//! let tls = Tls::builder()
//!     .cert("/etc/ssl/example.pem", "/etc/ssl/example.key")
//!     .alpn(["http/1.1"])
//!     .build()?;
//! signals::reload_tls_on_sighup(&tls)?; // after a certificate renewal: kill -HUP <pid>
//! let mut server = ThreadingTcpServer::bind("0.0.0.0:8443", |req: &mut StreamRequest| {
//!     let name = req.tls().and_then(|t| t.server_name()).unwrap_or("-").to_owned();
//!     std::io::Write::write_all(&mut req.wfile, name.as_bytes())?;
//!     Ok(())
//! })?
//! .tls(tls);
//! server.serve_forever()?;
//! # Ok::<(), std::io::Error>(())
//! ```

use std::collections::HashMap;
use std::fmt;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::RwLock;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::{ClientHello, ResolvesServerCert, WebPkiClientVerifier};
use rustls::sign::CertifiedKey;
use rustls::{RootCertStore, ServerConfig};

/// The default [`TlsBuilder::handshake_timeout`].
pub const DEFAULT_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Whether a client must present a certificate signed by the client CA ([`TlsBuilder::client_ca`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientAuth {
    /// A client without a valid certificate is refused during the handshake.
    Required,
    /// A client may present none; one it presents must be valid. The handler tells the two apart
    /// with [`TlsInfo::peer_certificates`].
    Optional,
}

/// What a [`Tls`] is built from: file paths and options, kept so that a reload reads the same files.
#[derive(Debug, Clone, Default)]
pub struct TlsBuilder {
    default: Option<(PathBuf, PathBuf)>,
    by_name: Vec<(String, PathBuf, PathBuf)>,
    alpn: Vec<Vec<u8>>,
    client_ca: Option<(PathBuf, ClientAuth)>,
    handshake_timeout: Option<Duration>,
}

impl TlsBuilder {
    /// The certificate chain (PEM, leaf first) and private key (PEM: PKCS#8, PKCS#1 or SEC1) served to
    /// every client whose SNI name has no certificate of its own ([`sni_cert`](Self::sni_cert)), and
    /// to clients that send no name.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = socketserver::tls::Tls::builder().cert("chain.pem", "key.pem");
    /// assert!(builder.build().is_err()); // the files are read by build(): these do not exist
    /// ```
    pub fn cert(mut self, chain: impl AsRef<Path>, key: impl AsRef<Path>) -> Self {
        self.default = Some((chain.as_ref().into(), key.as_ref().into()));
        self
    }

    /// A certificate chain and key for clients that ask for `name` by SNI (a DNS name, matched
    /// without regard to case). With several, one server serves several names.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = socketserver::tls::Tls::builder()
    ///     .sni_cert("a.example", "a.pem", "a.key")
    ///     .sni_cert("b.example", "b.pem", "b.key");
    /// # drop(builder);
    /// ```
    pub fn sni_cert(
        mut self,
        name: impl Into<String>,
        chain: impl AsRef<Path>,
        key: impl AsRef<Path>,
    ) -> Self {
        self.by_name.push((
            name.into().to_ascii_lowercase(),
            chain.as_ref().into(),
            key.as_ref().into(),
        ));
        self
    }

    /// The ALPN protocols offered, most preferred first (`"h2"`, `"http/1.1"`). A client that offers
    /// ALPN but none of these is refused, as RFC 7301 asks; one that offers none is served.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = socketserver::tls::Tls::builder().alpn(["h2", "http/1.1"]);
    /// # drop(builder);
    /// ```
    pub fn alpn<P: AsRef<[u8]>>(mut self, protocols: impl IntoIterator<Item = P>) -> Self {
        self.alpn = protocols.into_iter().map(|p| p.as_ref().to_vec()).collect();
        self
    }

    /// Mutual TLS: clients present a certificate signed by one of the CA certificates in `ca` (PEM),
    /// [`Required`](ClientAuth::Required) or [`Optional`](ClientAuth::Optional).
    ///
    /// # Examples
    ///
    /// ```
    /// use socketserver::tls::{ClientAuth, Tls};
    /// let builder = Tls::builder().client_ca("clients-ca.pem", ClientAuth::Required);
    /// # drop(builder);
    /// ```
    pub fn client_ca(mut self, ca: impl AsRef<Path>, auth: ClientAuth) -> Self {
        self.client_ca = Some((ca.as_ref().into(), auth));
        self
    }

    /// How long a client has to complete its handshake ([`DEFAULT_HANDSHAKE_TIMEOUT`] by default);
    /// one that takes longer is closed and reported.
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = socketserver::tls::Tls::builder()
    ///     .handshake_timeout(std::time::Duration::from_secs(3));
    /// # drop(builder);
    /// ```
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.handshake_timeout = Some(timeout);
        self
    }

    /// Reads the files and builds the configuration.
    ///
    /// # Errors
    /// `InvalidInput` when no certificate was given; a file that cannot be read (naming it); a file
    /// with no certificate or key in it, a key that does not fit its certificate, or a CA file with no
    /// usable certificate (`InvalidData`, naming the file).
    ///
    /// # Examples
    ///
    /// ```
    /// let err = socketserver::tls::Tls::builder().build().unwrap_err();
    /// assert_eq!(err.kind(), std::io::ErrorKind::InvalidInput);
    /// ```
    pub fn build(self) -> io::Result<Tls> {
        let config = self.load()?;
        Ok(Tls {
            inner: Arc::new(Inner {
                current: RwLock::new(config),
                handshake_timeout: self.handshake_timeout.unwrap_or(DEFAULT_HANDSHAKE_TIMEOUT),
                spec: self,
            }),
        })
    }

    /// The rustls configuration the files describe now.
    fn load(&self) -> io::Result<Arc<ServerConfig>> {
        if self.default.is_none() && self.by_name.is_empty() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TLS needs a certificate: TlsBuilder::cert or TlsBuilder::sni_cert",
            ));
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let certified = |chain: &Path, key: &Path| certified_key(&provider, chain, key);
        let resolver = Certs {
            default: self
                .default
                .as_ref()
                .map(|(chain, key)| certified(chain, key))
                .transpose()?,
            by_name: self
                .by_name
                .iter()
                .map(|(name, chain, key)| Ok((name.clone(), certified(chain, key)?)))
                .collect::<io::Result<_>>()?,
        };
        let builder = ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .map_err(|e| invalid("the TLS protocol versions", e))?;
        let builder = match &self.client_ca {
            None => builder.with_no_client_auth(),
            Some((path, auth)) => {
                let mut roots = RootCertStore::empty();
                for cert in read_certs(path)? {
                    roots.add(cert).map_err(|e| invalid(path.display(), e))?;
                }
                let verifier =
                    WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider.clone());
                let verifier = match auth {
                    ClientAuth::Required => verifier,
                    ClientAuth::Optional => verifier.allow_unauthenticated(),
                };
                builder.with_client_cert_verifier(
                    verifier.build().map_err(|e| invalid(path.display(), e))?,
                )
            }
        };
        let mut config = builder.with_cert_resolver(Arc::new(resolver));
        config.alpn_protocols = self.alpn.clone();
        Ok(Arc::new(config))
    }
}

/// A server's TLS configuration: a cloneable handle that [`reload`](Self::reload)s in place.
///
/// # Examples
///
/// See [the module](self); building one needs certificate files:
///
/// ```
/// use socketserver::tls::Tls;
/// let err = Tls::builder().cert("/nonexistent.pem", "/nonexistent.key").build().unwrap_err();
/// assert!(err.to_string().contains("/nonexistent.pem"), "{err}");
/// ```
#[derive(Clone)]
pub struct Tls {
    inner: Arc<Inner>,
}

struct Inner {
    spec: TlsBuilder,
    current: RwLock<Arc<ServerConfig>>,
    handshake_timeout: Duration,
}

impl fmt::Debug for Tls {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Tls")
            .field("spec", &self.inner.spec)
            .finish_non_exhaustive()
    }
}

impl Tls {
    /// A builder: name the certificate files and options, then [`build`](TlsBuilder::build).
    ///
    /// # Examples
    ///
    /// ```
    /// let builder = socketserver::tls::Tls::builder().cert("chain.pem", "key.pem");
    /// # drop(builder);
    /// ```
    pub fn builder() -> TlsBuilder {
        TlsBuilder::default()
    }

    /// Re-reads every file and serves new connections with what they hold now; connections already
    /// open keep their certificates. On error nothing changes: the old configuration stays in use.
    ///
    /// # Errors
    /// As [`TlsBuilder::build`].
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let tls = socketserver::tls::Tls::builder().cert("a.pem", "a.key").build()?;
    /// if let Err(e) = tls.reload() {
    ///     eprintln!("still serving the old certificates: {e}");
    /// }
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn reload(&self) -> io::Result<()> {
        let config = self.inner.spec.load()?;
        *self.inner.current.write() = config;
        Ok(())
    }

    /// How long a client has to complete its handshake.
    ///
    /// # Examples
    ///
    /// ```no_run
    /// # let tls = socketserver::tls::Tls::builder().cert("a.pem", "a.key").build()?;
    /// assert_eq!(tls.handshake_timeout(), socketserver::tls::DEFAULT_HANDSHAKE_TIMEOUT);
    /// # Ok::<(), std::io::Error>(())
    /// ```
    pub fn handshake_timeout(&self) -> Duration {
        self.inner.handshake_timeout
    }

    /// The configuration a connection accepted now is served with.
    pub(crate) fn current(&self) -> Arc<ServerConfig> {
        self.inner.current.read().clone()
    }
}

/// What a connection's TLS handshake settled, as its handler sees it
/// ([`StreamRequest::tls`](crate::StreamRequest::tls)).
///
/// # Examples
///
/// ```
/// use socketserver::StreamRequest;
/// // A handler that serves plain and TLS connections alike, and says which it got.
/// let handler = |req: &mut StreamRequest| -> anyhow::Result<()> {
///     let how = match req.tls() {
///         Some(tls) => format!("{} {}", tls.version(), tls.cipher_suite()),
///         None => "plain".to_string(),
///     };
///     std::io::Write::write_all(&mut req.wfile, how.as_bytes())?;
///     Ok(())
/// };
/// # let _ = handler;
/// ```
#[derive(Debug, Clone)]
pub struct TlsInfo {
    pub(crate) server_name: Option<String>,
    pub(crate) alpn: Option<Vec<u8>>,
    pub(crate) version: String,
    pub(crate) cipher_suite: String,
    pub(crate) peer_certificates: Vec<Vec<u8>>,
}

impl TlsInfo {
    /// The name the client asked for by SNI, if it sent one.
    pub fn server_name(&self) -> Option<&str> {
        self.server_name.as_deref()
    }

    /// The ALPN protocol agreed on (`b"h2"`), if the client offered ALPN.
    pub fn alpn_protocol(&self) -> Option<&[u8]> {
        self.alpn.as_deref()
    }

    /// The protocol version: `"TLSv1.3"` or `"TLSv1.2"`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// The cipher suite, as IANA names it (`"TLS13_AES_256_GCM_SHA384"`).
    pub fn cipher_suite(&self) -> &str {
        &self.cipher_suite
    }

    /// The client's certificate chain (DER, leaf first) under mutual TLS; empty when the client
    /// presented none.
    pub fn peer_certificates(&self) -> &[Vec<u8>] {
        &self.peer_certificates
    }
}

/// Picks the certificate for a client's SNI name, else the default one.
#[derive(Debug)]
struct Certs {
    default: Option<Arc<CertifiedKey>>,
    by_name: HashMap<String, Arc<CertifiedKey>>,
}

impl ResolvesServerCert for Certs {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        hello
            .server_name()
            .and_then(|name| self.by_name.get(&name.to_ascii_lowercase()))
            .or(self.default.as_ref())
            .cloned()
    }
}

fn invalid(what: impl fmt::Display, e: impl fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("{what}: {e}"))
}

fn read_certs(path: &Path) -> io::Result<Vec<CertificateDer<'static>>> {
    let pem = std::fs::read(path).map_err(|e| crate::sys::context(e, path.display()))?;
    let certs = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| invalid(path.display(), e))?;
    if certs.is_empty() {
        return Err(invalid(path.display(), "no PEM certificate in it"));
    }
    Ok(certs)
}

fn certified_key(
    provider: &CryptoProvider,
    chain: &Path,
    key: &Path,
) -> io::Result<Arc<CertifiedKey>> {
    let certs = read_certs(chain)?;
    let pem = std::fs::read(key).map_err(|e| crate::sys::context(e, key.display()))?;
    let der = PrivateKeyDer::from_pem_slice(&pem).map_err(|e| invalid(key.display(), e))?;
    let signing = provider
        .key_provider
        .load_private_key(der)
        .map_err(|e| invalid(key.display(), e))?;
    let certified = CertifiedKey::new(certs, signing);
    certified
        .keys_match()
        .map_err(|e| invalid(format!("{} and {}", chain.display(), key.display()), e))?;
    Ok(Arc::new(certified))
}
