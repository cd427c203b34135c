//! Every Rust snippet of README.md, verbatim, with what it needs around it,
//! run against servers on 127.0.0.1 that this example starts itself.
//!
//! `tests/readme.rs` fails if a README snippet is not found here, line for
//! line, and it includes this file as a module: `cargo test` compiles every
//! snippet and runs them all. Without the `http` feature the hyper and tonic
//! snippets are left out, without `tls` the TLS one, and without `grpc` the
//! "Switching from tonic" one. Run it with:
//!
//! ```text
//! cargo run --example readme --all-features
//! ```
//!
//! It prints each thing it checked, and ends in about a second.

#[allow(dead_code)] // the snippets do not stop the server or read what it saw
#[path = "common/line.rs"]
mod line;
#[allow(dead_code)] // the snippet builds its own client settings
#[cfg(feature = "tls")]
#[path = "common/tls.rs"]
mod tls;

// The snippets bring in what they use themselves: only the setup's imports
// are here.
use std::net::SocketAddr;

use line::{LineConn, LineServer};
use redial::{error::Closed, future::ResponseFuture, Phase, Shared};
use tower::{BoxError, Service};

/// What the snippets call `connector`: a make service that dials a line
/// server and counts its dials.
type Connector = line::Dial;

/// The shared handle the line snippets build.
type LineClient = Shared<String, ResponseFuture<<LineConn as Service<String>>::Future>>;

#[tokio::main]
pub async fn main() -> Result<(), BoxError> {
    // Nothing here should take more than a second; a hang is a failure.
    tokio::time::timeout(std::time::Duration::from_secs(30), run())
        .await
        .map_err(|_| "the README snippets did not finish in 30 s")?
}

async fn run() -> Result<(), BoxError> {
    let mut servers = Vec::new();
    for _ in 0..3 {
        servers.push(LineServer::start(([127, 0, 0, 1], 0).into())?);
    }
    let addrs: Vec<_> = servers.iter().map(LineServer::addr).collect();
    let addr = addrs[0];

    let (client, reply) = in_ten_lines(addr, Connector::default(), "hello".into()).await?;
    assert_eq!(reply, "echo: hello");
    checked("quick start: a shared client built in a ServiceBuilder answers");

    watching(client).await?;
    checked("watching: connected() returns, the printer sees the close and ends");

    one_connection_for_many_tasks(addr, Connector::default(), "hi".into()).await?;
    checked("one connection for many tasks: mark_disconnected, reset_backoff, close");

    let connector = Connector::default();
    many_connections(addr, connector.clone(), "hey".into()).await?;
    // Each connection dials at once, unless the close came first.
    assert!((1..=4).contains(&connector.dials()));
    checked("many connections: a pool of four answers, each has a watch, close closes all");

    let connector = Connector::default();
    many_endpoints(addrs.clone(), connector.clone()).await?;
    assert_eq!(connector.dials(), 3);
    checked("many endpoints: a p2c balancer answers, over one connection per endpoint");

    let connector = Connector::default();
    let (first, rest) = addrs.split_at(1);
    endpoints_from_discovery(first.to_vec(), rest.to_vec(), connector.clone()).await?;
    assert!(connector.dials() >= 1);
    checked("many endpoints from discovery: the balancer answers over the registry's endpoints");

    #[cfg(feature = "http")]
    {
        web::hyper().await?;
        web::tonic().await?;
        #[cfg(feature = "grpc")]
        web::grpc().await?;
    }
    #[cfg(not(feature = "http"))]
    println!("skipped the hyper and tonic snippets: run with `--features http`");
    #[cfg(feature = "tls")]
    web::tls().await?;
    #[cfg(not(feature = "tls"))]
    println!("skipped the TLS snippet: run with `--features tls`");
    drop(servers);
    Ok(())
}

fn checked(what: &str) {
    println!("checked: {what}");
}

/// README, "Quick start".
async fn in_ten_lines(
    addr: SocketAddr,
    connector: Connector,
    request: String,
) -> Result<(LineClient, String), BoxError> {
    use redial::{Backoff, ReconnectLayer};
    use std::time::Duration;
    use tower::{ServiceBuilder, ServiceExt};

    let backoff = Backoff::exponential(Duration::from_secs(1), Duration::from_secs(60));
    let client = ServiceBuilder::new()
        .layer(
            ReconnectLayer::new(addr) // the target handed to the connector
                .name("orders") // how logs name it: targets are never logged
                .connect_timeout(Duration::from_secs(5)) // bounds TCP + TLS + handshake
                .backoff(backoff) // jittered delays between attempts
                .shared(1024), // one connection for every clone, dialled at once
        )
        .service(connector); // any MakeService: addr -> connection
    let reply = client.clone().oneshot(request).await?; // fails fast while the peer is down

    Ok((client, reply))
}

/// README, "Watching the connection".
async fn watching(client: LineClient) -> Result<(), BoxError> {
    let watch = client.watch(); // Clone + Send + Sync; outlives the client
    watch.connected().await?; // at once if connected; Err(Closed) once closed, never hangs
    let state = watch.state(); // phase, attempt, last_error, retry_at, connects, disconnects
    println!("{}, next attempt at {:?}", state.phase(), state.retry_at());

    let mut rx = watch.subscribe(); // a tokio::sync::watch::Receiver<ConnectionState>
    let printer = tokio::spawn(async move {
        // `changed` wakes on phase changes only, and fails once the service is gone.
        while rx.changed().await.is_ok() {
            let state = rx.borrow().clone();
            println!("now {}", state.phase());
            if state.is_closed() {
                break; // for good: dropped, closed, or gave up
            }
        }
    });

    assert!(state.is_connected());
    client.close();
    printer.await?;
    assert!(watch.state().is_closed());
    Ok(())
}

/// README, "One connection for many tasks".
async fn one_connection_for_many_tasks(
    addr: SocketAddr,
    connector: Connector,
    request: String,
) -> Result<(), BoxError> {
    use redial::ReconnectLayer;
    use tower::{Layer, ServiceExt};

    let client = ReconnectLayer::new(addr).layer(connector).spawn(1024); // Shared: Clone + Service
    let watch = client.watch(); // it connects at once, before any request
    let reply = client.clone().oneshot(request).await?;
    client.mark_disconnected(); // "this connection is broken": drop it, reconnect
    client.reset_backoff(); // "the peer is back": retry now, from any clone
    client.close(); // for every clone: queued and later calls fail with `Closed`

    assert_eq!(reply, "echo: hi");
    // The task may see the mark before the close: wait for the close itself.
    let mut states = watch.subscribe();
    states.wait_for(|state| state.is_closed()).await?;
    assert_eq!(watch.phase(), Phase::Closed);
    let err = client.oneshot("late".into()).await.unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
    Ok(())
}

/// README, "Many connections to one target".
async fn many_connections(
    addr: SocketAddr,
    connector: Connector,
    request: String,
) -> Result<(), BoxError> {
    use redial::ReconnectLayer;
    use tower::{Layer, ServiceExt};

    let pool = ReconnectLayer::new(addr).pool(4).layer(connector); // Pool: Clone + Service
    let watch = pool.watch(); // one watch over the four: Connected while any is
    let reply = pool.clone().oneshot(request).await?; // to the least loaded connection up
    for connection in pool.connections() {
        println!("{}", connection.phase()); // each connection's own watch
    }
    pool.close(); // every connection, once; so does dropping the last clone

    assert_eq!(reply, "echo: hey");
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    for connection in pool.connections() {
        connection.connected().await.unwrap_err();
    }
    let err = pool.oneshot("late".into()).await.unwrap_err();
    assert!(err.is::<Closed>(), "{err}");
    Ok(())
}

/// README, "Many endpoints".
async fn many_endpoints(addrs: Vec<SocketAddr>, connector: Connector) -> Result<(), BoxError> {
    use redial::ReconnectLayer;
    use tower::balance::p2c::Balance;
    use tower::discover::ServiceList;
    use tower::load::{CompleteOnResponse, PendingRequests};
    use tower::Layer;

    let endpoints = addrs.into_iter().map(|addr| {
        let svc = ReconnectLayer::new(addr)
            .wait_for_ready(true)
            .layer(connector.clone());
        PendingRequests::new(svc, CompleteOnResponse::default())
    });
    let balanced = Balance::new(ServiceList::new(endpoints));

    use tower::ServiceExt;
    let mut balanced = balanced;
    for n in 0..6 {
        let reply = balanced.ready().await?.call(format!("{n}")).await?;
        assert_eq!(reply, format!("echo: {n}"));
    }
    Ok(())
}

/// README, "Many endpoints": endpoints from discovery.
async fn endpoints_from_discovery(
    addrs: Vec<SocketAddr>,
    new_addrs: Vec<SocketAddr>,
    connector: Connector,
) -> Result<(), BoxError> {
    let expected = new_addrs.clone();
    use redial::{discover, ReconnectLayer};
    use tower::balance::p2c::Balance;

    let (registry, endpoints) = discover::channel(addrs); // the set as the registry has it now
    let pools = ReconnectLayer::new(()) // settings only: each endpoint is a target
        .pool(2) // connections per endpoint
        .discover(endpoints, connector);
    let watch = pools.watch(); // Connected while any endpoint is; counters summed
    let listing = pools.endpoints(); // each endpoint with its pool's watch
    let balanced = Balance::new(pools); // p2c over the pools, by requests in flight
    registry.send_replace(new_addrs); // later: the registry's new set; only the difference changes

    use tower::ServiceExt;
    let mut balanced = balanced;
    for n in 0..6 {
        let reply = balanced.ready().await?.call(format!("{n}")).await?;
        assert_eq!(reply, format!("echo: {n}"));
    }
    assert!(watch.is_connected());
    assert_eq!(listing.keys(), expected);
    drop((registry, balanced));
    watch
        .subscribe()
        .wait_for(|state| state.is_closed())
        .await?;
    Ok(())
}

/// README, "hyper".
#[cfg(feature = "http")]
async fn hyper_section(
    addr: SocketAddr,
) -> Result<(hyper::body::Bytes, web::Http1Client), BoxError> {
    use http_body_util::{BodyExt, Empty};
    use hyper::body::Bytes;
    use redial::{http::Http1Connector, ReconnectLayer};
    use tower::{Layer, ServiceExt};

    let uri: http::Uri = format!("http://{addr}").parse()?;
    let client = ReconnectLayer::new(uri)
        .layer(Http1Connector::new())
        .spawn(1024);
    let req = http::Request::get("/hello").body(Empty::<Bytes>::new())?;
    let res = client.clone().oneshot(req).await?;
    let body = res.into_body().collect().await?.to_bytes();

    Ok((body, client))
}

/// README, "TLS".
#[cfg(feature = "tls")]
async fn tls_section(
    port: u16,
    ca_cert: rustls::pki_types::CertificateDer<'static>,
) -> Result<(http::Response<hyper::body::Incoming>, web::Http2Client), BoxError> {
    use http_body_util::Empty;
    use hyper::body::Bytes;
    use redial::http::{Http2Connector, SharedHttp2};
    use redial::ReconnectLayer;
    use rustls::{ClientConfig, RootCertStore};
    use tower::{Layer, ServiceExt};

    let mut roots = RootCertStore::empty();
    roots.add(ca_cert)?; // your CA's certificate (DER)
    let config = ClientConfig::builder()
        .with_root_certificates(roots)
        .with_no_client_auth();
    let uri: http::Uri = format!("https://localhost:{port}").parse()?;
    let client: SharedHttp2<Empty<Bytes>> = ReconnectLayer::new(uri)
        .layer(Http2Connector::new().tls(config)) // ALPN h2, SNI "localhost"
        .spawn(1024);
    let req = http::Request::get("/hello").body(Empty::new())?;
    let res = client.clone().oneshot(req).await?;

    Ok((res, client))
}

/// What the tonic and gRPC snippets hand back: the watch, the health
/// status, and the channel, kept until the checks are done (dropping the
/// last handle closes the connection, which the watch would then show).
#[cfg(feature = "http")]
type Answered = (redial::ConnectionWatch, String, Box<dyn Send>);

/// README, "tonic".
#[cfg(feature = "http")]
async fn tonic_section(addr: SocketAddr) -> Result<Answered, BoxError> {
    use redial::{http::Http2Connector, ReconnectLayer};
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};
    use tower::Layer;

    let uri: http::Uri = format!("http://{addr}").parse()?;
    let channel = ReconnectLayer::new(uri)
        .layer(Http2Connector::new())
        .spawn(1024);
    let mut client = HealthClient::new(channel.clone()); // any generated client
    let watch = channel.watch(); // what Channel cannot tell you
    let reply = client.check(HealthCheckRequest::default()).await?;

    let serving = reply.into_inner().status().as_str_name().into();
    Ok((watch, serving, Box::new(channel)))
}

/// README, "Switching from tonic".
#[cfg(feature = "grpc")]
async fn grpc_section(addr: SocketAddr) -> Result<Answered, BoxError> {
    use redial::grpc::Endpoint; // was: use tonic::transport::Endpoint;
    use std::time::Duration;
    use tonic_health::pb::{health_client::HealthClient, HealthCheckRequest};

    let channel = Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(10))
        .connect()
        .await?;
    let mut client = HealthClient::new(channel.clone()); // any generated client
    let watch = channel.watch(); // what tonic's Channel cannot tell you
    let reply = client.check(HealthCheckRequest::default()).await?;

    let serving = reply.into_inner().status().as_str_name().into();
    Ok((watch, serving, Box::new(channel)))
}

/// The checks around the hyper and tonic snippets, and their servers: a
/// hyper server (HTTP/1 and HTTP/2) and a tonic health server on 127.0.0.1.
#[cfg(feature = "http")]
mod web {
    use std::{convert::Infallible, error::Error, net::SocketAddr};

    use http_body_util::{Empty, Full};
    use hyper::body::Bytes;
    use hyper_util::{
        rt::{TokioExecutor, TokioIo},
        server::conn::auto,
    };
    use redial::error::Unavailable;
    use tokio::net::TcpListener;
    use tonic::{transport::server::TcpIncoming, Code};
    use tower::{BoxError, ServiceExt};

    use super::{checked, hyper_section, tonic_section};

    /// The shared HTTP/1 handle of the hyper snippet.
    pub(super) type Http1Client = redial::http::SharedHttp1<Empty<Bytes>>;

    /// The shared HTTP/2 handle of the TLS snippet.
    #[cfg(feature = "tls")]
    pub(super) type Http2Client = redial::http::SharedHttp2<Empty<Bytes>>;

    pub(super) async fn hyper() -> Result<(), BoxError> {
        let addr = hello_server(None).await?;
        let (body, client) = hyper_section(addr).await?;
        assert_eq!(body, "hello from /hello");
        checked("hyper: an HTTP/1 shared client answers");

        // Two requests at once over the one HTTP/1 connection: the second
        // waits for the first, and neither needs a connection of its own.
        let get = |path| http::Request::get(path).body(Empty::new()).unwrap();
        let (a, b) = tokio::join!(
            client.clone().oneshot(get("/a")),
            client.clone().oneshot(get("/b")),
        );
        assert!(a?.status().is_success() && b?.status().is_success());
        assert_eq!(client.watch().state().connects(), 1);
        checked("hyper: two concurrent HTTP/1 requests, one after the other on one connection");
        Ok(())
    }

    pub(super) async fn tonic() -> Result<(), BoxError> {
        let addr = health_server().await?;
        let (watch, serving, _channel) = tonic_section(addr).await?;
        assert!(watch.is_connected());
        assert_eq!(serving, "SERVING");
        checked("tonic: a generated client over the shared HTTP/2 handle answers");

        // A port nobody listens on: the call fails fast, as a `Status` with
        // code `Unknown` and redial's `Unavailable` in its source chain.
        let refused = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let status = tonic_section(refused)
            .await
            .err()
            .expect("no server, no answer");
        let status = status.downcast::<tonic::Status>()?;
        assert_eq!(status.code(), Code::Unknown, "{status}");
        let mut source = status.source();
        while let Some(err) = source.filter(|err| !err.is::<Unavailable>()) {
            source = err.source();
        }
        assert!(source.is_some(), "no Unavailable in {status:?}");
        checked("tonic: with no server, a call fails fast: Code::Unknown, Unavailable as source");
        Ok(())
    }

    #[cfg(feature = "grpc")]
    pub(super) async fn grpc() -> Result<(), BoxError> {
        let addr = health_server().await?;
        let (watch, serving, _channel) = super::grpc_section(addr).await?;
        assert!(watch.is_connected());
        assert_eq!(serving, "SERVING");
        checked("switching from tonic: redial's Endpoint connects, a generated client answers");

        // A port nobody listens on: `connect` fails, as tonic's does.
        let refused = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
        let err = super::grpc_section(refused)
            .await
            .err()
            .expect("no server, no channel");
        let err = err.downcast::<redial::grpc::Error>()?;
        assert!(err.is_connect(), "{err}");
        checked("switching from tonic: with no server, connect fails");
        Ok(())
    }

    #[cfg(feature = "tls")]
    pub(super) async fn tls() -> Result<(), BoxError> {
        use http_body_util::BodyExt;

        let ca = super::tls::TestCa::new()?;
        let acceptor = tokio_rustls::TlsAcceptor::from(ca.server_config(&[b"h2"])?);
        let addr = hello_server(Some(acceptor)).await?;
        let (res, client) = super::tls_section(addr.port(), ca.ca_cert()).await?;
        assert_eq!(res.version(), http::Version::HTTP_2);
        assert_eq!(
            res.into_body().collect().await?.to_bytes(),
            "hello from /hello"
        );
        assert!(client.watch().is_connected());
        client.close();
        checked("tls: an HTTP/2 shared client over TLS answers, trusting the local CA");
        Ok(())
    }

    /// A hyper server answering `hello from <path>` over HTTP/1 and HTTP/2,
    /// over TLS with `tls`.
    async fn hello_server(tls: Option<Tls>) -> Result<SocketAddr, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let hello = hyper::service::service_fn(|req: http::Request<_>| {
                    let body = Full::<Bytes>::from(format!("hello from {}", req.uri().path()));
                    async move { Ok::<_, Infallible>(http::Response::new(body)) }
                });
                #[allow(clippy::clone_on_copy)] // `Copy` only without the tls feature
                let tls = tls.clone();
                tokio::spawn(async move {
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let _ = match tls {
                        None => builder.serve_connection(TokioIo::new(stream), hello).await,
                        #[cfg(feature = "tls")]
                        Some(acceptor) => match acceptor.accept(stream).await {
                            Ok(stream) => {
                                builder.serve_connection(TokioIo::new(stream), hello).await
                            }
                            Err(_) => return,
                        },
                    };
                });
            }
        });
        Ok(addr)
    }

    #[cfg(feature = "tls")]
    type Tls = tokio_rustls::TlsAcceptor;
    /// Without `tls`, a server has no TLS to offer.
    #[cfg(not(feature = "tls"))]
    type Tls = std::convert::Infallible;

    /// tonic's health service, which answers `SERVING`.
    async fn health_server() -> Result<SocketAddr, BoxError> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (_reporter, health) = tonic_health::server::health_reporter();
        let serving = tonic::transport::Server::builder().serve_with_incoming_shutdown(
            health,
            TcpIncoming::from(listener),
            std::future::pending(),
        );
        tokio::spawn(serving);
        Ok(addr)
    }
}
