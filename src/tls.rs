//! TLS with rustls: certificate and key from PEM files, HTTP/2 and
//! HTTP/1.1 offered by ALPN.

use std::io;
use std::path::Path;
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use tokio_rustls::TlsAcceptor;

use crate::config::TlsConfig;

/// A client's TLS settings: the system's roots, and the certificates in
/// `extra_ca` (a PEM file) beside them.
pub fn client_config(extra_ca: Option<&Path>) -> io::Result<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system root rustls cannot read is one fewer root, not a failure.
        let _ = roots.add(cert);
    }
    if let Some(ca) = extra_ca {
        add_pem_roots(&mut roots, ca)?;
    }
    Ok(rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .map_err(io::Error::other)?
    .with_root_certificates(roots)
    .with_no_client_auth())
}

fn add_pem_roots(roots: &mut rustls::RootCertStore, path: &Path) -> io::Result<()> {
    let bad = |why: String| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{}: {why}", path.display()),
        )
    };
    let mut added = 0;
    for cert in CertificateDer::pem_file_iter(path).map_err(|e| bad(e.to_string()))? {
        let cert = cert.map_err(|e| bad(e.to_string()))?;
        roots.add(cert).map_err(|e| bad(e.to_string()))?;
        added += 1;
    }
    if added == 0 {
        return Err(bad("holds no PEM certificate".into()));
    }
    Ok(())
}

/// Builds the acceptor, or says plainly which file is wrong and why.
pub fn acceptor(config: &TlsConfig) -> io::Result<TlsAcceptor> {
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("{what}: {e}"))
    };
    let cert_path = config.cert.display();
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&config.cert)
        .map_err(|e| bad(&format!("cannot read TLS certificate {cert_path}"), &e))?
        .collect::<Result<_, _>>()
        .map_err(|e| bad(&format!("cannot parse TLS certificate {cert_path}"), &e))?;
    if certs.is_empty() {
        return Err(bad(
            &format!("TLS certificate {cert_path}"),
            &"no certificate in the file",
        ));
    }
    warn_if_out_of_date(&config.cert, &certs[0]);
    let key = PrivateKeyDer::from_pem_file(&config.key)
        .map_err(|e| bad(&format!("cannot read TLS key {}", config.key.display()), &e))?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    // Loaded on its own first: a key rustls cannot use at all (an RSA key
    // under 2048 bits, say) must not be reported as a mismatch.
    provider
        .key_provider
        .load_private_key(key.clone_key())
        .map_err(|e| {
            bad(
                &format!(
                    "TLS key {} is too small or of an unsupported kind \
                     (use RSA of 2048 bits or more, ECDSA P-256/P-384 or Ed25519)",
                    config.key.display()
                ),
                &e,
            )
        })?;
    let mut server = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("TLS setup", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| {
            bad(
                &format!(
                    "TLS certificate {cert_path} and key {} do not go together",
                    config.key.display()
                ),
                &e,
            )
        })?;
    server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(TlsAcceptor::from(Arc::new(server)))
}

/// Warns when the certificate is expired or not yet valid. Not an error:
/// the start must not fail while a renewal is on its way, but clients will
/// refuse the certificate until then, and the log should say why.
fn warn_if_out_of_date(path: &Path, leaf: &CertificateDer<'_>) {
    let Ok(cert) = webpki::EndEntityCert::try_from(leaf) else {
        return;
    };
    let now = UnixTime::now();
    // webpki checks a certificate's own dates before it looks for an
    // issuer, so a chain built against no trust anchor fails with the
    // dates when they are wrong, and with UnknownIssuer when they are fine.
    let checked = cert.verify_for_usage(
        &[],
        &[],
        &[],
        now,
        webpki::KeyUsage::server_auth(),
        None,
        None,
    );
    let days = |a: UnixTime, b: UnixTime| a.as_secs().saturating_sub(b.as_secs()) / 86_400;
    match checked {
        Err(webpki::Error::CertExpired { not_after, .. }) => log::warn!(
            "TLS certificate {} expired {} days ago; clients will refuse it",
            path.display(),
            days(now, not_after)
        ),
        Err(webpki::Error::CertNotValidYet { not_before, .. }) => log::warn!(
            "TLS certificate {} is not valid for another {} days; clients will refuse it",
            path.display(),
            days(not_before, now)
        ),
        _ => {}
    }
}
