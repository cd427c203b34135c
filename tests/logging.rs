//! Logging: one warning per outage, routine transitions at debug, fields on every event.
mod support;

use std::sync::{Arc, Mutex};

use redial::{Backoff, ReconnectLayer};
use support::{advance_ms, poll_ready, Dial, Make};
use tokio_test::assert_ready_ok;
use tower::Layer;
use tracing::{field::Field, Level, Subscriber};
use tracing_subscriber::{layer::Context, prelude::*};

/// One recorded event: level, message, field names.
type Event = (Level, String, Vec<String>);

#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Event>>>);

impl Events {
    /// Records redial's events at debug and above on this thread until the
    /// guard goes.
    fn capture() -> (Self, tracing::subscriber::DefaultGuard) {
        let events = Self::default();
        let guard = tracing_subscriber::registry()
            .with(
                events
                    .clone()
                    .with_filter(tracing_subscriber::filter::LevelFilter::DEBUG),
            )
            .set_default();
        (events, guard)
    }

    /// The connects logged so far: level and message.
    fn connects(&self) -> Vec<(Level, String)> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(_, msg, _)| msg == "connected" || msg == "reconnected")
            .map(|(level, msg, _)| (*level, msg.clone()))
            .collect()
    }

    fn at(&self, level: Level) -> Vec<(String, Vec<String>)> {
        let events = self.0.lock().unwrap();
        events
            .iter()
            .filter(|(l, ..)| *l == level)
            .map(|(_, msg, fields)| (msg.clone(), fields.clone()))
            .collect()
    }
}

struct Fields<'a>(&'a mut String, &'a mut Vec<String>);

impl tracing::field::Visit for Fields<'_> {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            *self.0 = format!("{value:?}");
        } else {
            self.1.push(field.name().to_string());
        }
    }
}

impl<S: Subscriber> tracing_subscriber::Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if !event.metadata().target().starts_with("redial") {
            return;
        }
        let (mut msg, mut fields) = (String::new(), Vec::new());
        event.record(&mut Fields(&mut msg, &mut fields));
        self.0
            .lock()
            .unwrap()
            .push((*event.metadata().level(), msg, fields));
    }
}

/// Ten failed attempts in one outage log one warning; the recovery logs one info; the rest is debug.
#[tokio::test(start_paused = true)]
async fn one_warning_per_outage() {
    let (events, _guard) = Events::capture();

    let make = Make::new();
    make.push((0..10).map(|_| Dial::Fail("connection refused")));
    let mut svc = ReconnectLayer::new("db:5432")
        .name("db")
        .backoff(Backoff::constant(std::time::Duration::from_secs(1)))
        .layer(make.clone());
    for _ in 0..10 {
        assert_ready_ok!(poll_ready(&mut svc));
        advance_ms(1000).await;
    }
    assert_ready_ok!(poll_ready(&mut svc));
    assert!(svc.watch().is_connected());
    assert_eq!(make.dials(), 11);

    let warns = events.at(Level::WARN);
    assert_eq!(warns.len(), 1, "{warns:?}");
    let (_, fields) = &warns[0];
    for field in ["name", "attempt", "retry_in", "cause"] {
        assert!(
            fields.iter().any(|f| f == field),
            "{field} missing: {fields:?}"
        );
    }
    assert_eq!(events.at(Level::INFO).len(), 1, "one 'reconnected'");
    // 11 attempts started, 9 later failures, at debug.
    assert_eq!(events.at(Level::DEBUG).len(), 11 + 9);
    // Every event, at every level, names the connection and its attempt.
    for level in [Level::DEBUG, Level::INFO, Level::WARN] {
        for (msg, fields) in events.at(level) {
            for field in ["name", "attempt"] {
                assert!(
                    fields.iter().any(|f| f == field),
                    "{level} {msg:?}: {field} missing: {fields:?}"
                );
            }
        }
    }

    // A proven connection lost is news (info), failing to replace it a new
    // outage: one more warning however many attempts fail.
    advance_ms(5000).await;
    make.conn().kill();
    make.otherwise(Dial::Fail("connection refused"));
    for _ in 0..5 {
        let _ = poll_ready(&mut svc);
        advance_ms(1000).await;
    }
    assert_eq!(events.at(Level::WARN).len(), 2);
    let infos = events.at(Level::INFO);
    assert_eq!(infos.len(), 2, "{infos:?}");
    assert_eq!(infos[1].0, "connection lost; reconnecting");
}

/// A connect is logged by what it means: the first one and the one after
/// an idle close are routine (debug, "connected"); one after a loss is news
/// (info, "reconnected").
#[tokio::test(start_paused = true)]
async fn connects_are_logged_by_what_they_mean() {
    let (events, _guard) = Events::capture();
    let make = Make::new();
    let mut svc = ReconnectLayer::new("db:5432")
        .name("db")
        .backoff(Backoff::constant(std::time::Duration::from_secs(1)))
        .idle_timeout(std::time::Duration::from_secs(10))
        .layer(make.clone());
    let routine = (Level::DEBUG, "connected".to_string());
    let news = (Level::INFO, "reconnected".to_string());

    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(events.connects(), std::slice::from_ref(&routine));

    // Closed for idleness, then dialled again by the next poll.
    advance_ms(10_000).await;
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(svc.watch().state().idle_closes(), 1);
    assert_eq!(events.connects(), [routine.clone(), routine.clone()]);

    // Lost after proving itself: the reconnect is news.
    advance_ms(5_000).await;
    make.conn().kill();
    assert_ready_ok!(poll_ready(&mut svc));
    assert_eq!(svc.watch().state().disconnects(), 1);
    assert_eq!(events.connects(), [routine.clone(), routine, news]);
}

/// Each connection of a pool logs under the layer's name and its number, so logs tell the connections apart.
#[tokio::test(start_paused = true)]
async fn pool_connections_log_under_their_own_names() {
    let (logs, _guard) = support::logs::Captured::start();
    let make = Make::new();
    let pool: redial::Pool<u32, _> = ReconnectLayer::new("peer")
        .name("orders")
        .pool(2)
        .layer(make.clone());
    for watch in pool.connections() {
        watch.connected().await.unwrap();
    }
    make.otherwise(Dial::Fail("refused"));
    make.conns()[1].kill();
    pool.connections()[1].disconnected().await;
    let text = logs.text();
    assert!(text.contains("name=\"orders/0\""), "{text}");
    assert!(text.contains("name=\"orders/1\""), "{text}");
    let failed: Vec<_> = text
        .lines()
        .filter(|line| line.contains("connect attempt failed"))
        .collect();
    assert_eq!(failed.len(), 1, "{text}");
    assert!(failed[0].contains("orders/1"), "{text}");
}
