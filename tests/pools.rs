//! A pool per discovered endpoint (`PoolLayer::discover`) under tower's
//! balancer, on a paused clock: endpoints joining and leaving, one watch
//! over all, a dead endpoint skipped, draining a removed one, and the hook
//! for "none is up".
mod support;

use std::{
    collections::HashSet,
    convert::Infallible,
    future::Future,
    pin::Pin,
    sync::{
        atomic::{AtomicUsize, Ordering},
        Arc, Mutex,
    },
    task::{Context, Poll},
    time::Duration,
};

use futures_util::StreamExt;
use redial::{discover, error::Closed, Backoff, Phase, ReconnectLayer};
use tower::{balance::p2c::Balance, discover::Change, BoxError, Service, ServiceExt};

/// A network of named endpoints, each up or down; every dial and every
/// answered request is logged by endpoint.
#[derive(Clone, Default)]
struct Net {
    down: Arc<Mutex<HashSet<&'static str>>>,
    /// Endpoints whose dials take this long (others connect at once).
    slow: Arc<Mutex<Option<(&'static str, Duration)>>>,
    dials: Arc<Mutex<Vec<&'static str>>>,
    answered: Arc<Mutex<Vec<&'static str>>>,
    /// While set, connections are busy (`poll_ready` pends): requests
    /// stay queued. The wakers of the connections waiting.
    busy: Arc<Mutex<(bool, Vec<std::task::Waker>)>>,
}

impl Net {
    fn set_down(&self, endpoint: &'static str, down: bool) {
        let mut set = self.down.lock().unwrap();
        if down {
            set.insert(endpoint);
        } else {
            set.remove(endpoint);
        }
    }

    fn set_busy(&self, busy: bool) {
        let mut state = self.busy.lock().unwrap();
        state.0 = busy;
        if !busy {
            state.1.drain(..).for_each(std::task::Waker::wake);
        }
    }

    fn dials_to(&self, endpoint: &str) -> usize {
        self.dials
            .lock()
            .unwrap()
            .iter()
            .filter(|e| **e == endpoint)
            .count()
    }

    fn answered_by(&self, endpoint: &str) -> usize {
        self.answered
            .lock()
            .unwrap()
            .iter()
            .filter(|e| **e == endpoint)
            .count()
    }
}

#[derive(Debug)]
struct Refused;

impl std::fmt::Display for Refused {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection refused")
    }
}

impl std::error::Error for Refused {}

type BoxFut<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl Service<&'static str> for Net {
    type Response = Conn;
    type Error = BoxError;
    type Future = BoxFut<Conn>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, endpoint: &'static str) -> Self::Future {
        self.dials.lock().unwrap().push(endpoint);
        let down = self.down.lock().unwrap().contains(endpoint);
        let delay = match *self.slow.lock().unwrap() {
            Some((slow, delay)) if slow == endpoint => Some(delay),
            _ => None,
        };
        let net = self.clone();
        Box::pin(async move {
            if let Some(delay) = delay {
                tokio::time::sleep(delay).await;
            }
            if down {
                return Err(Box::new(Refused) as BoxError);
            }
            Ok(Conn { endpoint, net })
        })
    }
}

/// A connection to one endpoint: answers with the endpoint's name.
struct Conn {
    endpoint: &'static str,
    net: Net,
}

impl Service<u32> for Conn {
    type Response = &'static str;
    type Error = Infallible;
    type Future = std::future::Ready<Result<&'static str, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        let mut busy = self.net.busy.lock().unwrap();
        if busy.0 {
            busy.1.push(cx.waker().clone());
            return Poll::Pending;
        }
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, _: u32) -> Self::Future {
        self.net.answered.lock().unwrap().push(self.endpoint);
        std::future::ready(Ok(self.endpoint))
    }
}

fn layer() -> ReconnectLayer<()> {
    ReconnectLayer::new(()).backoff(Backoff::default().jitter(0.0))
}

/// Lets the connections' tasks run until they have nothing left to do.
async fn settle() {
    for _ in 0..20 {
        tokio::task::yield_now().await;
    }
}

/// Sends `n` requests through the balancer one at a time; the replies.
async fn send<S>(balanced: &mut S, n: u32) -> Vec<Result<&'static str, BoxError>>
where
    S: Service<u32, Response = &'static str, Error = BoxError>,
{
    let mut replies = Vec::new();
    for i in 0..n {
        let reply = match balanced.ready().await {
            Ok(svc) => svc.call(i).await,
            Err(err) => Err(err),
        };
        replies.push(reply);
    }
    replies
}

/// Each endpoint gets its own pool of the layer's size; the balancer
/// spreads requests over them; the one watch is `Connecting` before any
/// endpoint is known and `Connected` once one is, with the counters summed.
#[tokio::test(start_paused = true)]
async fn each_endpoint_gets_a_pool_and_one_watch_shows_them_all() {
    let net = Net::default();
    let (_registry, endpoints) = discover::channel(["a", "b"]);
    let pools = layer().pool(2).discover(endpoints, net.clone());
    let watch = pools.watch();
    let listing = pools.endpoints();
    assert_eq!(watch.phase(), Phase::Connecting, "no endpoint read yet");
    assert!(listing.keys().is_empty());

    let mut balanced = Balance::new(pools);
    let replies = send(&mut balanced, 40).await;
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    assert_eq!(listing.keys(), ["a", "b"]);
    assert_eq!((net.dials_to("a"), net.dials_to("b")), (2, 2));
    assert!(net.answered_by("a") > 0 && net.answered_by("b") > 0);
    assert_eq!(watch.phase(), Phase::Connected);
    assert_eq!(watch.state().connects(), 4, "two pools of two");
    for (_, endpoint) in listing.list() {
        assert_eq!(endpoint.phase(), Phase::Connected);
        assert_eq!(endpoint.state().connects(), 2);
    }
}

/// An endpoint the registry drops leaves the listing and the watch, its
/// pool closes, and the counters keep what it counted; one added later is
/// connected and takes requests.
#[tokio::test(start_paused = true)]
async fn endpoints_come_and_go_with_the_registry() {
    let net = Net::default();
    let (registry, endpoints) = discover::channel(["a", "b"]);
    let pools = layer().pool(2).discover(endpoints, net.clone());
    let watch = pools.watch();
    let listing = pools.endpoints();
    let mut balanced = Balance::new(pools);
    send(&mut balanced, 4).await;
    let b = listing.list().remove(1).1;
    assert_eq!(watch.state().connects(), 4);

    registry.send_replace(vec!["a", "c"]);
    let replies = send(&mut balanced, 40).await;
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    assert_eq!(listing.keys(), ["a", "c"]);
    assert_eq!(
        b.disconnected().await.phase(),
        Phase::Closed,
        "the removed pool closed"
    );
    let b_answered = net.answered_by("b");
    assert!(net.answered_by("c") > 0, "the new endpoint takes requests");
    send(&mut balanced, 20).await;
    assert_eq!(net.answered_by("b"), b_answered, "none to the removed one");
    assert_eq!(watch.state().connects(), 6, "b's connects still counted");
    assert_eq!(watch.state().disconnects(), 2, "b's two connections closed");
    assert_eq!(watch.phase(), Phase::Connected);
}

/// An endpoint that cannot be reached is skipped: every request goes to
/// the live one and none fails, and the watch shows `Connected`.
#[tokio::test(start_paused = true)]
async fn a_dead_endpoint_is_skipped_and_no_request_fails() {
    let net = Net::default();
    net.set_down("b", true);
    let (_registry, endpoints) = discover::channel(["a", "b"]);
    let pools = layer().pool(2).discover(endpoints, net.clone());
    let watch = pools.watch();
    let listing = pools.endpoints();
    let mut balanced = Balance::new(pools);

    let replies = send(&mut balanced, 30).await;
    assert!(replies.iter().all(Result::is_ok), "{replies:?}");
    assert_eq!(net.answered_by("a"), 30);
    assert_eq!(watch.phase(), Phase::Connected);
    let phases: Vec<_> = listing.list().iter().map(|(_, w)| w.phase()).collect();
    assert_eq!(phases, [Phase::Connected, Phase::Disconnected]);

    // Back up: it reconnects on its own schedule and takes its share.
    net.set_down("b", false);
    let b = listing.list().remove(1).1;
    b.connected().await.unwrap();
    send(&mut balanced, 40).await;
    assert!(net.answered_by("b") > 0);
}

/// With every endpoint down the watch is `Disconnected` with the newest
/// cause, and the hook for "none is up" runs (a DNS source's refresh) at
/// each failure; not while one endpoint is up, however often the other
/// fails.
#[tokio::test(start_paused = true)]
async fn the_none_up_hook_runs_only_when_no_endpoint_is_up() {
    let net = Net::default();
    net.set_down("a", true);
    net.set_down("b", true);
    let calls = Arc::new(AtomicUsize::new(0));
    let (_registry, endpoints) = discover::channel(["a", "b"]);
    let hook = calls.clone();
    let pools = layer()
        .pool(1)
        .discover(endpoints, net.clone())
        .when_none_up(move || {
            hook.fetch_add(1, Ordering::Relaxed);
        });
    let watch = pools.watch();
    let listing = pools.endpoints();
    let mut balanced = Balance::new(pools);
    // The balancer reads its source as it is polled; nothing is ready.
    futures_util::future::poll_fn(|cx| {
        assert!(balanced.poll_ready(cx).is_pending());
        Poll::Ready(())
    })
    .await;
    settle().await;
    assert_eq!(watch.phase(), Phase::Disconnected);
    let state = watch.state();
    let cause = state.last_error().expect("a cause");
    assert!(support::errors::find::<Refused>(cause).is_some(), "{cause}");
    let first = calls.load(Ordering::Relaxed);
    assert!(first >= 1, "the hook ran when the last endpoint failed");

    // Each later failure with none up asks again.
    tokio::time::sleep(Duration::from_secs(3)).await;
    settle().await;
    let during = calls.load(Ordering::Relaxed);
    assert!(during > first, "{during} calls after {first}");

    // One up: b's failures no longer call it.
    net.set_down("a", false);
    listing.list()[0].1.connected().await.unwrap();
    let up = calls.load(Ordering::Relaxed);
    let b_dials = net.dials_to("b");
    tokio::time::sleep(Duration::from_secs(30)).await;
    settle().await;
    assert!(net.dials_to("b") > b_dials, "b kept failing");
    assert_eq!(calls.load(Ordering::Relaxed), up);
    assert_eq!(watch.phase(), Phase::Connected);
}

/// A request queued on an endpoint's pool (its connection busy) when the
/// registry removed the endpoint is still sent and answered once the
/// connection can take it, after the balancer dropped the pool; then the
/// pool closes.
#[tokio::test(start_paused = true)]
async fn a_removed_endpoint_sends_what_it_had_queued() {
    let net = Net::default();
    let (registry, endpoints) = discover::channel(["a"]);
    let mut pools = layer().pool(1).discover(endpoints, net.clone());
    let Some(Ok(Change::Insert("a", mut pool))) = pools.next().await else {
        panic!("an insert first");
    };
    let watch = pool.watch();
    watch.connected().await.unwrap();
    net.set_busy(true);
    futures_util::future::poll_fn(|cx| pool.poll_ready(cx))
        .await
        .unwrap();
    let mut reply = tokio::spawn(pool.call(1));
    settle().await;
    assert!(
        futures_util::FutureExt::now_or_never(&mut reply).is_none(),
        "queued"
    );
    assert_eq!(net.answered_by("a"), 0);

    registry.send_replace(Vec::new());
    let Some(Ok(Change::Remove("a"))) = pools.next().await else {
        panic!("then the removal");
    };
    drop(pool); // as the balancer does
    settle().await;
    assert_eq!(
        watch.phase(),
        Phase::Connected,
        "it still has a request to send"
    );
    net.set_busy(false);
    assert_eq!(reply.await.unwrap().unwrap(), "a");
    assert_eq!(watch.disconnected().await.phase(), Phase::Closed);
    assert_eq!(pools.watch().phase(), Phase::Connecting, "none left");
    assert_eq!(
        pools.watch().state().disconnects(),
        1,
        "its close is counted"
    );
}

/// An endpoint the source still names is never given up on, whatever the
/// layer's `max_attempts`: the balancer would drop it for good. Down for
/// longer than those attempts, it is back in service once it is up.
#[tokio::test(start_paused = true)]
async fn an_endpoint_is_never_given_up_on() {
    let net = Net::default();
    net.set_down("b", true);
    let (_registry, endpoints) = discover::channel(["a", "b"]);
    let pools = layer()
        .max_attempts(1)
        .pool(1)
        .discover(endpoints, net.clone());
    let listing = pools.endpoints();
    let mut balanced = Balance::new(pools);
    send(&mut balanced, 4).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    send(&mut balanced, 4).await;
    assert!(net.dials_to("b") > 2, "{} dials", net.dials_to("b"));
    net.set_down("b", false);
    let b = listing.list().remove(1).1;
    b.connected().await.unwrap();
    send(&mut balanced, 40).await;
    assert!(net.answered_by("b") > 0, "b is back in the balancer");
}

/// The watch is `Closed` once the balancer (and so the source) is dropped,
/// and once a source that ended has no endpoint.
#[tokio::test(start_paused = true)]
async fn the_watch_closes_with_the_balancer_or_an_empty_ended_source() {
    let net = Net::default();
    let pools = layer()
        .pool(2)
        .discover(discover::list(["a", "b"]), net.clone());
    let watch = pools.watch();
    let mut balanced = Balance::new(pools);
    send(&mut balanced, 2).await;
    let mut states = watch.subscribe();
    drop(balanced);
    states.wait_for(|state| state.is_closed()).await.unwrap();
    let seen = watch.state();
    assert_eq!(seen.disconnects(), 4);
    let _: Closed = watch.connected().await.unwrap_err();

    let mut empty = layer()
        .pool(2)
        .discover(discover::list(Vec::<&'static str>::new()), net);
    assert_eq!(empty.watch().phase(), Phase::Connecting);
    assert!(empty.next().await.is_none());
    assert_eq!(empty.watch().phase(), Phase::Closed);
}

/// With DNS, the hook asks for a lookup as soon as no endpoint is up: a
/// name whose only address went dead is looked up again within a second,
/// not at the next scheduled lookup, and the new address takes the traffic.
#[cfg(feature = "dns")]
#[tokio::test(start_paused = true)]
async fn dns_looks_again_at_once_when_no_endpoint_is_up() {
    use std::net::SocketAddr;

    let net = Net::default();
    net.set_down("a", true);
    let (dead, live): (SocketAddr, SocketAddr) =
        (([10, 0, 0, 1], 80).into(), ([10, 0, 0, 2], 80).into());
    let lookups = Arc::new(Mutex::new(Vec::new()));
    let log = lookups.clone();
    let dns = discover::dns("api.test", 80, Duration::from_secs(30)).with_resolver(move |_, _| {
        let mut log = log.lock().unwrap();
        log.push(tokio::time::Instant::now());
        let answer = if log.len() == 1 {
            vec![dead]
        } else {
            vec![live]
        };
        async move { Ok::<_, std::io::Error>(answer) }
    });
    let refresher = dns.refresher();
    let connector = net
        .clone()
        .map_request(move |addr: SocketAddr| if addr == dead { "a" } else { "b" });
    let pools = layer()
        .pool(1)
        .discover(dns, connector)
        .when_none_up(move || refresher.refresh());
    let watch = pools.watch();
    let start = tokio::time::Instant::now();
    let mut balanced = Balance::new(pools);

    let reply = balanced.ready().await.unwrap().call(1).await.unwrap();
    assert_eq!(reply, "b");
    let lookups = lookups.lock().unwrap().clone();
    assert_eq!(lookups.len(), 2, "{lookups:?}");
    assert!(
        lookups[1] - start <= Duration::from_secs(1),
        "the second lookup came {:?} after the first, not at once",
        lookups[1] - start
    );
    assert_eq!(watch.phase(), Phase::Connected);
}
