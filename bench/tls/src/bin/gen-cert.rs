//! Writes a throw-away certificate authority and a server certificate for the TLS benchmarks.
//!
//! `gen-cert --out DIR` writes `DIR/ca.pem` (the CA certificate, for the load generator's `--ca`),
//! `DIR/cert.pem` (the server's certificate, signed by the CA; a chain of one, as a server sends it
//! when its CA is a root the client trusts) and `DIR/key.pem` (the server's
//! private key, PKCS#8). Keys are ECDSA P-256 (the TLS 1.3 default of most servers); the server
//! certificate names `localhost`, `127.0.0.1` and `::1`.

use std::path::PathBuf;
use std::process::ExitCode;

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};

const USAGE: &str = "usage: gen-cert --out DIR";

fn main() -> ExitCode {
    let mut out = None;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        match flag.as_str() {
            "--out" => out = args.next().map(PathBuf::from),
            _ => {
                eprintln!("gen-cert: unknown argument {flag:?}\n{USAGE}");
                return ExitCode::from(2);
            }
        }
    }
    let Some(out) = out else {
        eprintln!("gen-cert: --out is required\n{USAGE}");
        return ExitCode::from(2);
    };
    match generate(&out) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("gen-cert: {e}");
            ExitCode::from(1)
        }
    }
}

fn generate(out: &std::path::Path) -> Result<(), Box<dyn std::error::Error>> {
    std::fs::create_dir_all(out)?;

    let ca_key = KeyPair::generate()?;
    let mut ca = CertificateParams::new(Vec::<String>::new())?;
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca.distinguished_name
        .push(DnType::CommonName, "socketserver bench CA");
    ca.key_usages = vec![
        KeyUsagePurpose::DigitalSignature,
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
    ];
    let ca_cert = ca.self_signed(&ca_key)?;
    let issuer = Issuer::new(ca, ca_key);

    let key = KeyPair::generate()?;
    let mut leaf = CertificateParams::new(vec![
        "localhost".to_string(),
        "127.0.0.1".to_string(),
        "::1".to_string(),
    ])?;
    leaf.distinguished_name.push(DnType::CommonName, "localhost");
    leaf.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    leaf.use_authority_key_identifier_extension = true;
    let cert = leaf.signed_by(&key, &issuer)?;

    std::fs::write(out.join("ca.pem"), ca_cert.pem())?;
    std::fs::write(out.join("cert.pem"), cert.pem())?;
    std::fs::write(out.join("key.pem"), key.serialize_pem())?;
    println!(
        "wrote {0}/ca.pem, {0}/cert.pem, {0}/key.pem",
        out.display()
    );
    Ok(())
}
