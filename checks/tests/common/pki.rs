//! Certificates made at test time (rcgen), written as PEM files a server loads, and rustls clients
//! that trust them.
#![allow(dead_code)] // each test crate uses a different subset

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, date_time_ymd,
};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use rustls::{ClientConfig, ClientConnection, RootCertStore, StreamOwned};

/// How long a client waits for any one read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A certificate authority in a temporary directory, and the files it issued.
pub struct Pki {
    pub dir: tempfile::TempDir,
    ca: CertifiedIssuer<'static, KeyPair>,
    /// The CA certificate (PEM).
    pub ca_pem: PathBuf,
}

/// A certificate and its key, as files and as DER.
#[derive(Clone)]
pub struct Issued {
    pub chain: PathBuf,
    pub key: PathBuf,
    pub der: CertificateDer<'static>,
    key_der: Vec<u8>,
}

impl Issued {
    pub fn chain_str(&self) -> &str {
        self.chain.to_str().unwrap()
    }
    pub fn key_str(&self) -> &str {
        self.key.to_str().unwrap()
    }
}

impl Pki {
    pub fn new() -> Pki {
        let dir = tempfile::tempdir().unwrap();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params
            .distinguished_name
            .push(DnType::CommonName, "socketserver test CA");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap();
        let ca_pem = dir.path().join("ca.pem");
        std::fs::write(&ca_pem, ca.pem()).unwrap();
        Pki { dir, ca, ca_pem }
    }

    /// A server certificate for `names`, written as `<stem>.pem` and `<stem>.key`.
    pub fn server(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue(stem, names, ExtendedKeyUsagePurpose::ServerAuth, false)
    }

    /// A server certificate for `names` that expired in 2001.
    pub fn expired_server(&self, stem: &str, names: &[&str]) -> Issued {
        self.issue(stem, names, ExtendedKeyUsagePurpose::ServerAuth, true)
    }

    /// A client certificate, for mutual TLS.
    pub fn client(&self, stem: &str) -> Issued {
        self.issue(stem, &[], ExtendedKeyUsagePurpose::ClientAuth, false)
    }

    fn issue(
        &self,
        stem: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        expired: bool,
    ) -> Issued {
        let mut params =
            CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>())
                .unwrap();
        params.distinguished_name.push(DnType::CommonName, stem);
        params.extended_key_usages = vec![usage];
        if expired {
            params.not_before = date_time_ymd(2000, 1, 1);
            params.not_after = date_time_ymd(2001, 1, 1);
        }
        let key = KeyPair::generate().unwrap();
        let cert = params.signed_by(&key, &self.ca).unwrap();
        let chain = self.dir.path().join(format!("{stem}.pem"));
        let key_path = self.dir.path().join(format!("{stem}.key"));
        std::fs::write(&chain, cert.pem()).unwrap();
        std::fs::write(&key_path, key.serialize_pem()).unwrap();
        Issued {
            chain,
            key: key_path,
            der: cert.der().clone(),
            key_der: key.serialize_der(),
        }
    }

    /// A rustls client configuration trusting this CA, offering `alpn`, presenting `identity`.
    pub fn client_config(&self, alpn: &[&str], identity: Option<&Issued>) -> Arc<ClientConfig> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca.der().clone()).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots);
        let mut config = match identity {
            None => builder.with_no_client_auth(),
            Some(id) => builder
                .with_client_auth_cert(
                    vec![id.der.clone()],
                    PrivateKeyDer::try_from(id.key_der.clone()).unwrap(),
                )
                .unwrap(),
        };
        config.alpn_protocols = alpn.iter().map(|p| p.as_bytes().to_vec()).collect();
        Arc::new(config)
    }
}

/// A TLS client connection over TCP.
pub type Client = StreamOwned<ClientConnection, TcpStream>;

/// Connects to `addr` asking for `name` by SNI and completes the handshake.
pub fn connect(
    addr: std::net::SocketAddr,
    name: &str,
    config: Arc<ClientConfig>,
) -> std::io::Result<Client> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(IO_TIMEOUT))?;
    sock.set_write_timeout(Some(IO_TIMEOUT))?;
    let server = ServerName::try_from(name.to_string()).map_err(std::io::Error::other)?;
    let conn = ClientConnection::new(config, server).map_err(std::io::Error::other)?;
    let mut client = StreamOwned::new(conn, sock);
    while client.conn.is_handshaking() {
        client.conn.complete_io(&mut client.sock)?;
    }
    Ok(client)
}

/// Sends `line` and reads one line back.
pub fn round_trip(client: &mut Client, line: &str) -> std::io::Result<String> {
    client.write_all(line.as_bytes())?;
    client.flush()?;
    let mut back = Vec::new();
    let mut byte = [0u8; 1];
    while !back.ends_with(b"\n") {
        match client.read(&mut byte)? {
            0 => break,
            _ => back.push(byte[0]),
        }
    }
    Ok(String::from_utf8_lossy(&back).into_owned())
}

/// The leaf certificate the server presented.
pub fn server_cert(client: &Client) -> CertificateDer<'static> {
    client.conn.peer_certificates().unwrap()[0]
        .clone()
        .into_owned()
}
