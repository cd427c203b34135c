//! The maximum connection age over real hyper servers on 127.0.0.1, HTTP/1
//! and HTTP/2, under load: 8 callers send requests without pause while the
//! connection is replaced again and again, in fail-fast mode, and not one
//! request fails or reaches the server twice.
mod support;

use std::{
    collections::HashMap,
    convert::Infallible,
    sync::{
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
        Arc, Mutex,
    },
    time::Duration,
};

use http::{Request, Response};
use http_body_util::{BodyExt, Empty, Full};
use hyper::{
    body::{Bytes, Incoming},
    service::service_fn,
};
use hyper_util::{
    rt::{TokioExecutor, TokioIo},
    server::conn::auto,
};
use redial::{
    http::{Http1Connector, Http2Connector},
    ReconnectLayer,
};
use support::net::guard;
use tokio::net::TcpListener;
use tower::{Layer, ServiceExt};

const AGE: Duration = Duration::from_millis(100);
const CALLERS: usize = 8;
/// Replacements to see under load before the callers stop.
const REPLACEMENTS: u64 = 5;

/// What the server saw: connections accepted, and how often each request
/// id reached it.
#[derive(Default)]
struct Seen {
    accepts: AtomicUsize,
    ids: Mutex<HashMap<u64, usize>>,
}

async fn server() -> (String, Arc<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let uri = format!("http://{}", listener.local_addr().unwrap());
    let seen = Arc::new(Seen::default());
    let log = seen.clone();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            log.accepts.fetch_add(1, Ordering::SeqCst);
            let log = log.clone();
            let svc = service_fn(move |req: Request<Incoming>| {
                let id: u64 = req.headers()["x-request-id"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                *log.ids.lock().unwrap().entry(id).or_insert(0) += 1;
                async move { Ok::<_, Infallible>(Response::new(Full::new(Bytes::from("ok")))) }
            });
            tokio::spawn(async move {
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    (uri, seen)
}

/// Each test, once over `Http1Connector` and once over `Http2Connector`,
/// bound to `$conn`.
macro_rules! both_protocols {
    ($conn:ident; $($(#[$doc:meta])* $name:ident $body:block)*) => {
        mod http1 {
            use super::*;
            $($(#[$doc])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let $conn = Http1Connector::new(); $body })*
        }
        mod http2 {
            use super::*;
            $($(#[$doc])* #[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { let $conn = Http2Connector::new(); $body })*
        }
    };
}

both_protocols! {
    connector;

    /// Replaced five times under load in fail-fast mode: no request fails,
    /// none reaches the server twice, no disconnect, and every connection
    /// the server accepted is one the watch counted.
    replaced_under_load_with_no_failed_request {
        let (uri, seen) = server().await;
        let client = ReconnectLayer::new(uri.parse::<http::Uri>().unwrap())
            .max_connection_age(AGE)
            .layer(connector)
            .spawn(64);
        let watch = client.watch();
        guard(watch.connected()).await.unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let next_id = Arc::new(AtomicU64::new(0));
        let mut callers = Vec::new();
        for _ in 0..CALLERS {
            let (client, stop, next_id) = (client.clone(), stop.clone(), next_id.clone());
            callers.push(tokio::spawn(async move {
                let mut failures = Vec::new();
                while !stop.load(Ordering::SeqCst) {
                    let id = next_id.fetch_add(1, Ordering::SeqCst);
                    let req = Request::get("/")
                        .header("x-request-id", id)
                        .body(Empty::<Bytes>::new())
                        .unwrap();
                    match client.clone().oneshot(req).await {
                        Ok(res) => {
                            res.into_body().collect().await.unwrap();
                        }
                        Err(err) => failures.push(format!("{id}: {err:?}")),
                    }
                    if failures.len() >= 10 {
                        // Enough to fail the test with; stop rather than spin.
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                failures
            }));
        }

        let mut states = watch.subscribe();
        let replaced = guard(states.wait_for(|s| s.replaced() >= REPLACEMENTS || s.disconnects() > 0)).await.map(|s| s.clone());
        stop.store(true, Ordering::SeqCst);
        let mut failures = Vec::new();
        for caller in callers {
            failures.extend(guard(caller).await.unwrap());
        }

        let replaced = replaced.unwrap();
        assert_eq!(replaced.disconnects(), 0, "{replaced:?}");
        assert!(failures.is_empty(), "{} failed: {:?}", failures.len(), &failures[..failures.len().min(5)]);
        let sent = next_id.load(Ordering::SeqCst);
        let ids = seen.ids.lock().unwrap().clone();
        assert_eq!(ids.len() as u64, sent, "every request reached the server");
        assert!(ids.values().all(|&n| n == 1), "a request reached the server twice");
        // Closed, so that no replacement is under way while counting.
        client.close();
        guard(watch.disconnected()).await;
        let state = watch.state();
        assert_eq!(state.disconnects(), 1, "only the close: {state:?}");
        assert_eq!(state.connects(), state.replaced() + 1, "{state:?}");
        // A replacement cut short by the close may have been accepted.
        let accepts = seen.accepts.load(Ordering::SeqCst) as u64;
        assert!(
            (state.connects()..=state.connects() + 1).contains(&accepts),
            "{accepts} accepted, {} connects",
            state.connects()
        );
        println!("{}: {sent} requests, {} replacements", module_path!(), state.replaced());
    }
}
