//! The endpoint sources of `redial::discover`: a fixed list, whole sets
//! through a channel, and DNS (a scripted resolver on a paused clock, and
//! tokio's resolver for `localhost`).

#[cfg(feature = "dns")]
use std::{
    collections::VecDeque,
    io,
    net::SocketAddr,
    sync::{Arc, Mutex},
    time::Duration,
};

use futures_util::{FutureExt, StreamExt};
use redial::discover;
#[cfg(feature = "dns")]
use tokio::time::Instant;
use tower::discover::Change;

/// A change as text, `+key` or `-key`.
fn show<K: std::fmt::Display, V>(change: Change<K, V>) -> String {
    match change {
        Change::Insert(key, _) => format!("+{key}"),
        Change::Remove(key) => format!("-{key}"),
    }
}

/// The changes ready now, without waiting.
fn ready_now<S, K, V>(stream: &mut S) -> Vec<String>
where
    S: futures_util::Stream<Item = Result<Change<K, V>, std::convert::Infallible>> + Unpin,
    K: std::fmt::Display,
{
    let mut out = Vec::new();
    while let Some(Some(change)) = stream.next().now_or_never() {
        out.push(show(change.unwrap()));
    }
    out
}

// ===== list and channel =====

/// A list inserts each endpoint once, in order, duplicates dropped, then
/// ends.
#[tokio::test]
async fn list_inserts_each_endpoint_once_then_ends() {
    let mut list = discover::list(["a", "b", "a", "c"]);
    assert_eq!(ready_now(&mut list), ["+a", "+b", "+c"]);
    assert!(list.next().await.is_none(), "ended");
}

/// A channel yields the first set, then only the differences of each new
/// set (removals first), nothing for a set that did not change, and ends
/// when the sender is dropped.
#[tokio::test]
async fn channel_yields_the_differences_between_sets() {
    let (tx, mut changes) = discover::channel(["a", "b"]);
    assert_eq!(ready_now(&mut changes), ["+a", "+b"]);

    tx.send_replace(vec!["b", "c", "d"]);
    assert_eq!(ready_now(&mut changes), ["-a", "+c", "+d"]);

    tx.send_replace(vec!["d", "c", "b"]);
    assert!(
        ready_now(&mut changes).is_empty(),
        "the same set, reordered"
    );

    drop(tx);
    assert!(changes.next().await.is_none(), "ended with the sender");
}

/// Sets sent faster than they are read coalesce: only the latest counts.
#[tokio::test]
async fn channel_coalesces_sets_sent_before_they_are_read() {
    let (tx, mut changes) = discover::channel(["a"]);
    assert_eq!(ready_now(&mut changes), ["+a"]);
    tx.send_replace(vec!["b"]);
    tx.send_replace(vec!["a", "c"]);
    assert_eq!(ready_now(&mut changes), ["+c"]);
}

/// A waiting consumer is woken by a new set.
#[tokio::test]
async fn channel_wakes_a_waiting_consumer() {
    let (tx, mut changes) = discover::channel(Vec::<&str>::new());
    let waiter = tokio::spawn(async move { show(changes.next().await.unwrap().unwrap()) });
    tokio::task::yield_now().await;
    tx.send_replace(vec!["a"]);
    assert_eq!(waiter.await.unwrap(), "+a");
}

// ===== dns =====

#[cfg(feature = "dns")]
mod dns {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 80))
    }

    /// A resolver that answers from a script, one answer per lookup (the last
    /// answer repeats), and logs when each lookup came.
    #[derive(Clone, Default)]
    struct Script {
        answers: Arc<Mutex<VecDeque<io::Result<Vec<SocketAddr>>>>>,
        lookups: Arc<Mutex<Vec<Instant>>>,
    }

    impl Script {
        fn new(answers: impl IntoIterator<Item = io::Result<Vec<SocketAddr>>>) -> Self {
            let script = Self::default();
            script.answers.lock().unwrap().extend(answers);
            script
        }

        fn source(&self, every: Duration) -> discover::Dns {
            let script = self.clone();
            discover::dns("service.test", 80, every).with_resolver(move |host, port| {
                assert_eq!((host, port), ("service.test", 80));
                script.lookups.lock().unwrap().push(Instant::now());
                let mut answers = script.answers.lock().unwrap();
                let answer = match answers.len() {
                    0 => Ok(Vec::new()),
                    1 => clone(answers.front().unwrap()),
                    _ => answers.pop_front().unwrap(),
                };
                std::future::ready(answer)
            })
        }

        fn lookups(&self) -> Vec<Duration> {
            let lookups = self.lookups.lock().unwrap();
            lookups.iter().map(|at| *at - lookups[0]).collect()
        }
    }

    fn clone(answer: &io::Result<Vec<SocketAddr>>) -> io::Result<Vec<SocketAddr>> {
        match answer {
            Ok(addrs) => Ok(addrs.clone()),
            Err(err) => Err(io::Error::new(err.kind(), err.to_string())),
        }
    }

    /// Lets the source run, on a paused clock, for `ms`; returns what it
    /// yielded.
    async fn run_for(source: &mut discover::Dns, ms: u64) -> Vec<String> {
        let mut out = Vec::new();
        let until = Instant::now() + Duration::from_millis(ms);
        while let Ok(Some(change)) = tokio::time::timeout_at(until, source.next()).await {
            out.push(show(change.unwrap()));
        }
        out
    }

    /// Resolved at the first poll and every interval after; an address that
    /// appears is inserted, one that vanished removed.
    #[tokio::test(start_paused = true)]
    async fn dns_resolves_at_start_and_every_interval() {
        let script = Script::new([
            Ok(vec![addr(1), addr(2)]),
            Ok(vec![addr(1), addr(2)]),
            Ok(vec![addr(2), addr(3)]),
        ]);
        let mut source = script.source(Duration::from_secs(30));
        assert_eq!(
            run_for(&mut source, 1).await,
            ["+10.0.0.1:80", "+10.0.0.2:80"]
        );
        assert!(run_for(&mut source, 30_000).await.is_empty(), "no change");
        assert_eq!(
            run_for(&mut source, 30_000).await,
            ["-10.0.0.1:80", "+10.0.0.3:80"]
        );
        assert_eq!(
            script.lookups(),
            [0, 30, 60].map(Duration::from_secs),
            "at start, then every 30 s"
        );
        assert_eq!(source.addresses(), [addr(2), addr(3)]);
    }

    /// A failed lookup, or one that answers no address, keeps the endpoints.
    #[tokio::test(start_paused = true)]
    async fn dns_keeps_the_endpoints_when_a_lookup_fails_or_is_empty() {
        let script = Script::new([
            Ok(vec![addr(1)]),
            Err(io::Error::other("SERVFAIL")),
            Ok(vec![]),
            Ok(vec![addr(1)]),
        ]);
        let mut source = script.source(Duration::from_secs(10));
        assert_eq!(run_for(&mut source, 1).await, ["+10.0.0.1:80"]);
        assert!(run_for(&mut source, 30_000).await.is_empty());
        assert_eq!(script.lookups().len(), 4);
        assert_eq!(source.addresses(), [addr(1)]);
    }

    /// A refresh looks the name up at once, but no sooner than a second after
    /// the last lookup started; several asks make one lookup.
    #[tokio::test(start_paused = true)]
    async fn dns_refresh_looks_up_at_once_at_most_once_a_second() {
        let script = Script::new([Ok(vec![addr(1)]), Ok(vec![addr(2)])]);
        let mut source = script.source(Duration::from_secs(30));
        let refresh = source.refresher();
        let start = Instant::now();
        assert_eq!(run_for(&mut source, 1).await, ["+10.0.0.1:80"]);

        refresh.refresh();
        refresh.refresh();
        assert_eq!(
            run_for(&mut source, 2_000).await,
            ["-10.0.0.1:80", "+10.0.0.2:80"]
        );
        let lookups = script.lookups();
        assert_eq!(lookups, [Duration::ZERO, Duration::from_secs(1)]);

        // Asked long after that lookup: at once.
        tokio::time::advance(Duration::from_secs(5)).await;
        let asked = start.elapsed();
        refresh.refresh();
        run_for(&mut source, 1).await;
        assert_eq!(script.lookups()[2], asked);
    }

    /// tokio's resolver finds `localhost`.
    #[tokio::test]
    async fn dns_resolves_localhost_with_tokios_resolver() {
        let mut source = discover::dns("localhost", 8080, Duration::from_secs(60));
        let first = tokio::time::timeout(Duration::from_secs(10), source.next())
            .await
            .expect("resolved")
            .unwrap()
            .unwrap();
        let Change::Insert(addr, _) = first else {
            panic!("an insert first")
        };
        assert!(addr.ip().is_loopback() && addr.port() == 8080, "{addr}");
    }
}
