//! `redial::grpc` over TLS: `tls_config` dials an `https://` endpoint with
//! ALPN `h2` and the host as server name, and is refused on an `http://` one.
#![cfg(all(feature = "grpc", feature = "tls"))]

mod support;

use std::time::Duration;

use redial::{grpc::Endpoint, http::SchemeMismatch, Backoff};
use support::{
    errors::find,
    server::Proto,
    tls::{Behaviour, Handshake, TestCa, TlsServer},
};

/// `connect` resolves over TLS: the server saw SNI `localhost` and ALPN `h2`.
#[tokio::test]
async fn tls_config_connects_an_https_endpoint_with_alpn_h2() {
    support::trace_init();
    let ca = TestCa::new().unwrap();
    let server = TlsServer::start(&ca, Behaviour::Serve(Proto::Http2), &[b"h2"]);
    let channel = Endpoint::from(server.uri("localhost"))
        .connect_timeout(Duration::from_secs(5))
        .tls_config(ca.client_config().unwrap())
        .unwrap()
        .connect()
        .await
        .unwrap();
    assert!(channel.watch().is_connected());
    let expected = Handshake {
        sni: Some("localhost".into()),
        alpn: Some("h2".into()),
    };
    assert_eq!(server.handshakes(), [expected]);
    channel.close();
}

/// `tls_config` on an `http://` endpoint is a settings error, not a connect.
#[test]
fn tls_config_on_an_http_endpoint_is_refused() {
    let ca = TestCa::new().unwrap();
    let err = Endpoint::from_static("http://127.0.0.1:1")
        .tls_config(ca.client_config().unwrap())
        .unwrap_err();
    assert!(!err.is_connect());
    assert_eq!(err.to_string(), "tls_config needs an https:// endpoint");
}

/// An `https://` endpoint without `tls_config` fails to connect at once,
/// saying TLS is missing.
#[tokio::test]
async fn an_https_endpoint_without_tls_config_fails_to_connect() {
    let err = Endpoint::from_static("https://127.0.0.1:1")
        .backoff(Backoff::constant(Duration::from_secs(60)))
        .connect()
        .await
        .unwrap_err();
    assert!(err.is_connect(), "{err}");
    let mismatch = find::<SchemeMismatch>(&err).expect("SchemeMismatch in the chain");
    assert_eq!(
        mismatch.to_string(),
        "https target needs tls configured on the connector"
    );
}
