//! TLS for the local servers of the TLS example, the README's TLS snippet
//! and `tests/tls.rs`: a certificate authority made at run time with rcgen,
//! a server certificate it signs for `localhost` and `127.0.0.1`, and the
//! rustls settings of both ends.
//!
//! Each includes it with `#[path = "…/common/tls.rs"] mod tls;`. It lives in
//! a subfolder without a `main.rs`, so cargo does not build it as an example
//! of its own.

use std::sync::{
    atomic::{AtomicUsize, Ordering},
    Arc,
};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};
use rustls::{
    crypto::ring,
    pki_types::{CertificateDer, PrivatePkcs8KeyDer},
    ClientConfig, RootCertStore, ServerConfig,
};
use tower::BoxError;

/// A certificate authority of its own, and a server certificate from it.
pub(crate) struct TestCa {
    ca: CertificateDer<'static>,
    server_cert: CertificateDer<'static>,
    server_key: PrivatePkcs8KeyDer<'static>,
}

impl TestCa {
    /// A new CA, and a server certificate it signs for `localhost` and
    /// `127.0.0.1`.
    pub(crate) fn new() -> Result<Self, BoxError> {
        // Each CA has a name of its own: a client that trusts another test
        // CA then finds no issuer for this one's certificates (with the same
        // name it would find one, and fail on the signature instead).
        static MADE: AtomicUsize = AtomicUsize::new(0);
        let name = format!("redial test CA {}", MADE.fetch_add(1, Ordering::Relaxed));
        let mut params = CertificateParams::new(Vec::<String>::new())?;
        params.distinguished_name.push(DnType::CommonName, name);
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca_key = KeyPair::generate()?;
        let ca = params.self_signed(&ca_key)?;
        let issuer = Issuer::new(params, ca_key);

        let mut params = CertificateParams::new(["localhost".into(), "127.0.0.1".into()])?;
        params
            .distinguished_name
            .push(DnType::CommonName, "localhost");
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_key = KeyPair::generate()?;
        let server_cert = params.signed_by(&server_key, &issuer)?;
        Ok(Self {
            ca: ca.der().clone(),
            server_cert: server_cert.der().clone(),
            server_key: PrivatePkcs8KeyDer::from(server_key.serialize_der()),
        })
    }

    /// The CA's own certificate, for a client to trust.
    pub(crate) fn ca_cert(&self) -> CertificateDer<'static> {
        self.ca.clone()
    }

    /// A client's settings that trust this CA and no other, without ALPN:
    /// the connector fills it in.
    pub(crate) fn client_config(&self) -> Result<ClientConfig, BoxError> {
        let mut roots = RootCertStore::empty();
        roots.add(self.ca_cert())?;
        Ok(
            ClientConfig::builder_with_provider(Arc::new(ring::default_provider()))
                .with_safe_default_protocol_versions()?
                .with_root_certificates(roots)
                .with_no_client_auth(),
        )
    }

    /// The server's settings: this CA's server certificate, and `alpn`, the
    /// protocols it accepts, in its order of preference.
    pub(crate) fn server_config(&self, alpn: &[&[u8]]) -> Result<Arc<ServerConfig>, BoxError> {
        let mut config = ServerConfig::builder_with_provider(Arc::new(ring::default_provider()))
            .with_safe_default_protocol_versions()?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.server_cert.clone()],
                self.server_key.clone_key().into(),
            )?;
        config.alpn_protocols = alpn.iter().map(|protocol| protocol.to_vec()).collect();
        Ok(Arc::new(config))
    }
}
