//! Credentials in a target never reach the logs or a `Debug`: an outage of a
//! target with userinfo is logged, printed and failed fast without the secret.
#![cfg(feature = "http")]

mod support;

use http::{Request, Uri};
use http_body_util::Empty;
use hyper::body::Bytes;
use redial::{http::Http1Connector, Phase, ReconnectLayer};
use support::logs::Captured;
use tower::{Layer, ServiceExt};

/// A refused target `http://user:se;cr,et@127.0.0.1:port` (userinfo may hold
/// punctuation): every log line of the outage (all levels, all crates),
/// every `Debug` and the fail-fast error chain name the peer but never show
/// the password or any part of it.
#[tokio::test]
async fn an_outage_of_a_target_with_userinfo_logs_no_secret() {
    let (captured, _guard) = Captured::start();

    // A port with nothing listening: every attempt is refused.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let uri: Uri = format!("http://user:se;cr,et@127.0.0.1:{port}/")
        .parse()
        .unwrap();
    let layer = ReconnectLayer::new(uri).name_from_target();
    let client = layer.layer(Http1Connector::<Empty<Bytes>>::new()).spawn(8);
    let watch = client.watch();

    let mut rx = watch.subscribe();
    rx.wait_for(|s| s.phase() == Phase::Disconnected)
        .await
        .unwrap();
    let err = client
        .clone()
        .oneshot(Request::get("/").body(Empty::new()).unwrap())
        .await
        .unwrap_err();

    let mut printed = String::new();
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&*err);
    while let Some(e) = source {
        printed += &format!("{e} / {e:?}\n");
        source = e.source();
    }
    printed += &format!("{layer:?}\n{client:?}\n{watch:?}\n{:?}\n", watch.state());
    client.close();
    watch.disconnected().await;

    let logs = captured.text();
    assert!(
        logs.contains("connect attempt failed"),
        "the outage was logged: {logs}"
    );
    assert!(
        logs.contains(&format!("http://***@127.0.0.1:{port}")),
        "the logs name the peer: {logs}"
    );
    assert!(
        printed.contains(&format!("http://***@127.0.0.1:{port}")),
        "{printed}"
    );
    for text in [&logs, &printed] {
        for part in ["se;cr", "cr,et", "user:"] {
            assert!(!text.contains(part), "a secret leaked ({part}):\n{text}");
        }
    }
}
