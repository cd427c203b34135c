//! Callers: each sends a request with a fresh id, waits for it (reading the
//! whole body), records how it ended, and goes again a few milliseconds
//! later, until told to stop.
//!
//! Each request is bounded by the case's deadline plus one second; one that
//! has not resolved by then counts as timed out, which every case asserts
//! never happens.

use std::{
    future::Future,
    sync::{
        atomic::{AtomicU64, Ordering},
        Arc,
    },
    time::Duration,
};

use http::{Request, StatusCode};
use http_body_util::BodyExt;
use redial::{
    error::{Resend, Unavailable},
    ConnectionWatch,
};
use tokio::{
    sync::watch,
    task::JoinHandle,
    time::{timeout, Instant},
};
use tower::{BoxError, Service, ServiceExt};

use crate::{
    client::{Body, Client},
    server::{Book, FAULT, ID, PART_1, RESET_REQUEST},
    support::errors::find,
};

/// The hang guard on top of a request's deadline.
pub const GRACE: Duration = Duration::from_secs(1);

/// How one request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    /// `Unavailable`: refused by redial without being sent.
    FailedFast,
    /// The inner service's error (hyper's): the connection failed under it,
    /// and may have delivered it.
    Errored,
    /// `Resend`: the connection handed it back (never written, or
    /// idempotent and unanswered) and it was not sent again.
    HandedBack,
    /// Not resolved by its deadline + [`GRACE`].
    TimedOut,
}

/// A typed outcome for an error, or the error when it is of no type a
/// client of redial should expect.
pub fn classify(err: &BoxError) -> Result<Outcome, String> {
    if err.is::<Unavailable>() {
        Ok(Outcome::FailedFast)
    } else if find::<Resend<Request<Body>>>(&**err).is_some() {
        // Before hyper's error, which is its source.
        Ok(Outcome::HandedBack)
    } else if find::<hyper::Error>(&**err).is_some() {
        Ok(Outcome::Errored)
    } else {
        Err(format!("{err:?}"))
    }
}

/// What the requests of one phase came to.
#[derive(Clone, Copy, Debug, Default)]
pub struct Counts {
    pub ok: u64,
    pub failed_fast: u64,
    pub errored: u64,
    /// Of `errored`, those the server never saw: a request the connection
    /// never wrote, or that the server dropped unread. GETs among them
    /// would have been sent again; these requests are POSTs, which are
    /// not, unless never written. Counted from the server's final log
    /// ([`Tally::settle`]): an HTTP/2 server runs each request's handler
    /// in a task of its own, which may book the request after the client
    /// saw its connection die.
    pub errored_unseen: u64,
    /// Handed back by the connection and not sent again.
    pub handed_back: u64,
    pub timed_out: u64,
    pub slowest: Duration,
}

impl Counts {
    pub fn requests(&self) -> u64 {
        self.ok + self.failed_fast + self.errored + self.handed_back + self.timed_out
    }

    fn add(&mut self, outcome: Outcome, took: Duration) {
        match outcome {
            Outcome::Ok => self.ok += 1,
            Outcome::FailedFast => self.failed_fast += 1,
            Outcome::Errored => self.errored += 1,
            Outcome::HandedBack => self.handed_back += 1,
            Outcome::TimedOut => self.timed_out += 1,
        }
        self.slowest = self.slowest.max(took);
    }

    pub fn merge(&mut self, other: &Counts) {
        self.ok += other.ok;
        self.failed_fast += other.failed_fast;
        self.errored += other.errored;
        self.errored_unseen += other.errored_unseen;
        self.handed_back += other.handed_back;
        self.timed_out += other.timed_out;
        self.slowest = self.slowest.max(other.slowest);
    }
}

/// What all callers saw, by phase tag.
#[derive(Debug, Default)]
pub struct Tally {
    pub by_tag: Vec<Counts>,
    /// Ids of the requests that failed fast: none may reach the server.
    pub failed_fast_ids: Vec<u64>,
    /// Ids of the requests that failed in flight, with their phase tag, and
    /// of those handed back.
    errored_ids: Vec<(usize, u64)>,
    handed_back_ids: Vec<u64>,
    /// Errors of no expected type, and Ok responses the server never saw
    /// or with the wrong body: each a bug.
    pub wrong: Vec<String>,
    /// Requests started, to compare with those that resolved.
    pub started: u64,
}

impl Tally {
    pub fn total(&self) -> Counts {
        let mut total = Counts::default();
        for counts in &self.by_tag {
            total.merge(counts);
        }
        total
    }

    fn add(&mut self, tag: usize, outcome: Outcome, took: Duration) {
        if self.by_tag.len() <= tag {
            self.by_tag.resize(tag + 1, Counts::default());
        }
        self.by_tag[tag].add(outcome, took);
    }

    /// Counts the errored requests the server never saw, from its log once
    /// nothing more can reach it; and the requests handed back that it
    /// saw, which it must not have (a `Resend` is never written).
    pub fn settle(&mut self, book: &Book) -> u64 {
        for &(tag, id) in &self.errored_ids {
            if !book.seen(id) {
                self.by_tag[tag].errored_unseen += 1;
            }
        }
        let handed_back = self.handed_back_ids.iter().filter(|&&id| book.seen(id));
        handed_back.count() as u64
    }

    fn merge(&mut self, other: Tally) {
        for (tag, counts) in other.by_tag.iter().enumerate() {
            if self.by_tag.len() <= tag {
                self.by_tag.resize(tag + 1, Counts::default());
            }
            self.by_tag[tag].merge(counts);
        }
        self.failed_fast_ids.extend(other.failed_fast_ids);
        self.errored_ids.extend(other.errored_ids);
        self.handed_back_ids.extend(other.handed_back_ids);
        self.wrong.extend(other.wrong);
        self.started += other.started;
    }
}

#[derive(Clone, Copy, Debug)]
pub struct LoadConfig {
    pub callers: usize,
    /// The pause between a caller's requests.
    pub pace: Duration,
    /// The longest a request may take, from the case's configuration.
    pub deadline: Duration,
}

/// Callers running against one client.
pub struct Load {
    ids: Arc<AtomicU64>,
    gauge: Arc<Gauge>,
    stop: watch::Sender<bool>,
    /// The latest send time of a request that came back Ok.
    latest_ok: watch::Sender<Option<Instant>>,
    callers: Vec<JoinHandle<Tally>>,
}

impl Load {
    /// Starts `config.callers` callers on clones of `client`; `tag` says,
    /// when each request ends, which phase it belongs to.
    pub fn start(
        client: &Client,
        book: &Arc<Book>,
        config: LoadConfig,
        tag: &watch::Sender<usize>,
    ) -> Self {
        let ids = Arc::new(AtomicU64::new(0));
        let gauge = Arc::new(Gauge::default());
        let stop = watch::Sender::new(false);
        let latest_ok = watch::Sender::new(None);
        let callers = (0..config.callers)
            .map(|_| {
                tokio::spawn(caller(Caller {
                    svc: client.clone(),
                    book: book.clone(),
                    config,
                    ids: ids.clone(),
                    gauge: gauge.clone(),
                    stop: stop.subscribe(),
                    tag: tag.subscribe(),
                    latest_ok: latest_ok.clone(),
                }))
            })
            .collect();
        Self {
            ids,
            gauge,
            stop,
            latest_ok,
            callers,
        }
    }

    /// Runs `inject`, a fault that costs the client its connection, and
    /// bounds the requests that loss can fail: those in flight when it
    /// began, and those started before the watch counted the disconnect
    /// (until then a request may still be sent into the dead connection).
    /// Each caller has one request at a time, so no caller can fail twice
    /// but by starting again before the client noticed.
    pub async fn exposed_to<F: Future>(
        &self,
        watch: &ConnectionWatch,
        inject: F,
    ) -> (F::Output, Exposure) {
        let mut rx = watch.subscribe();
        let before = rx.borrow_and_update().disconnects();
        let started = self.gauge.started.load(Ordering::SeqCst);
        let in_flight = self.gauge.in_flight.load(Ordering::SeqCst);
        let began = Instant::now();
        let noticed = async {
            let seen = guarded(
                Duration::from_secs(20),
                rx.wait_for(|s| s.disconnects() > before),
            );
            seen.await
                .expect("the client never noticed the loss")
                .unwrap();
            let after = self.gauge.started.load(Ordering::SeqCst) - started;
            (after, began.elapsed())
        };
        let (out, (after, lag)) = tokio::join!(inject, noticed);
        let exposure = Exposure {
            in_flight,
            started: after,
            lag,
        };
        (out, exposure)
    }

    /// A fresh request id, for requests the case sends itself.
    pub fn next_id(&self) -> u64 {
        self.ids.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until a request sent at or after `since` comes back Ok;
    /// returns how long after `since` that was.
    pub async fn recovered(&self, since: Instant) -> Duration {
        let _ = self
            .latest_ok
            .subscribe()
            .wait_for(|latest| latest.is_some_and(|at| at >= since))
            .await;
        since.elapsed()
    }

    /// Stops the callers and returns what they saw; their clones of the
    /// client are dropped.
    pub async fn stop(self) -> Tally {
        self.stop.send_replace(true);
        let mut tally = Tally::default();
        for caller in self.callers {
            tally.merge(caller.await.unwrap());
        }
        tally
    }
}

/// Requests started, and those not yet resolved, over all callers.
#[derive(Debug, Default)]
struct Gauge {
    started: AtomicU64,
    in_flight: AtomicU64,
}

/// The requests one connection loss can fail, from [`Load::exposed_to`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Exposure {
    /// In flight when the fault began.
    pub in_flight: u64,
    /// Started after that, before the client noticed the loss.
    pub started: u64,
    /// From the fault's beginning to the watch counting the disconnect.
    pub lag: Duration,
}

impl Exposure {
    /// The most requests the loss can fail.
    pub fn bound(&self) -> u64 {
        self.in_flight + self.started
    }

    pub fn merge(&mut self, other: &Exposure) {
        self.in_flight += other.in_flight;
        self.started += other.started;
        self.lag = self.lag.max(other.lag);
    }
}

struct Caller {
    svc: Client,
    book: Arc<Book>,
    config: LoadConfig,
    ids: Arc<AtomicU64>,
    gauge: Arc<Gauge>,
    stop: watch::Receiver<bool>,
    tag: watch::Receiver<usize>,
    latest_ok: watch::Sender<Option<Instant>>,
}

async fn caller(mut c: Caller) -> Tally {
    let mut tally = Tally::default();
    while !*c.stop.borrow() {
        let id = c.ids.fetch_add(1, Ordering::Relaxed);
        let sent = Instant::now();
        tally.started += 1;
        // In flight before started, and read in the other order in
        // `exposed_to`: a caller between the two is counted at least once.
        c.gauge.in_flight.fetch_add(1, Ordering::SeqCst);
        c.gauge.started.fetch_add(1, Ordering::SeqCst);
        let result = timeout(c.config.deadline + GRACE, get(&mut c.svc, id)).await;
        c.gauge.in_flight.fetch_sub(1, Ordering::SeqCst);
        let outcome = match result {
            Ok(Ok(body)) if body == format!("ok {id}") && c.book.seen(id) => Outcome::Ok,
            Ok(Ok(body)) => {
                tally.wrong.push(format!(
                    "request {id}: body {body:?}, seen {}",
                    c.book.seen(id)
                ));
                Outcome::Ok
            }
            Ok(Err(err)) => classify(&err).unwrap_or_else(|wrong| {
                tally.wrong.push(format!("request {id}: {wrong}"));
                Outcome::Errored
            }),
            Err(_) => Outcome::TimedOut,
        };
        match outcome {
            Outcome::Ok => {
                c.latest_ok.send_if_modified(|latest| {
                    let newer = latest.is_none_or(|at| at < sent);
                    if newer {
                        *latest = Some(sent);
                    }
                    newer
                });
            }
            Outcome::FailedFast => tally.failed_fast_ids.push(id),
            Outcome::HandedBack => tally.handed_back_ids.push(id),
            _ => {}
        }
        // The phase it ended in: where a fault ends requests.
        let tag = *c.tag.borrow();
        if outcome == Outcome::Errored {
            tally.errored_ids.push((tag, id));
        }
        tally.add(tag, outcome, sent.elapsed());
        tokio::select! {
            () = tokio::time::sleep(c.config.pace) => {}
            _ = c.stop.changed() => {}
        }
    }
    tally
}

fn request(id: u64, fault: Option<&str>) -> Request<Body> {
    let mut req = Request::post("/work").header(ID, id);
    if let Some(fault) = fault {
        req = req.header(FAULT, fault);
    }
    req.body(Body::from("payload")).unwrap()
}

/// A request and its whole body.
async fn get(svc: &mut Client, id: u64) -> Result<String, BoxError> {
    let res = svc.ready().await?.call(request(id, None)).await?;
    let body = res.into_body().collect().await?.to_bytes();
    Ok(String::from_utf8_lossy(&body).into_owned())
}

/// Sends a request that makes the server reset its connection (`fault` is
/// [`RESET_REQUEST`] or `RESET_STREAM`) and checks that it fails as it
/// should: with hyper's error for the response, or, mid-stream, after the
/// status and the first chunk, with hyper's error for the body.
pub async fn trigger(svc: &mut Client, book: &Book, id: u64, fault: &str) -> Result<(), String> {
    let sending = async {
        let res = match svc.ready().await?.call(request(id, Some(fault))).await {
            Ok(res) => res,
            Err(err) if fault == RESET_REQUEST => return Ok(Some(err)),
            Err(err) => return Err(format!("failed before the response head: {err:?}").into()),
        };
        if fault == RESET_REQUEST {
            return Err(BoxError::from("answered"));
        }
        if res.status() != StatusCode::OK {
            return Err(format!("status {}", res.status()).into());
        }
        let mut body = res.into_body();
        let first = body.frame().await.ok_or("no first chunk")??;
        if first.data_ref().map(|d| &d[..]) != Some(PART_1) {
            return Err(format!("first frame {first:?}").into());
        }
        book.release_stream();
        Ok(body.collect().await.err().map(BoxError::from))
    };
    match guarded(Duration::from_secs(10), sending).await {
        Err(hang) => Err(format!("{fault}: {hang}")),
        Ok(Err(err)) => Err(format!("{fault}: {err:?}")),
        Ok(Ok(None)) => Err(format!("{fault}: the request did not fail")),
        Ok(Ok(Some(err))) if classify(&err) == Ok(Outcome::Errored) => Ok(()),
        Ok(Ok(Some(err))) => Err(format!("{fault}: not the inner error: {err:?}")),
    }
}

/// `fut`, or an error once `limit` has passed.
pub async fn guarded<F: Future>(limit: Duration, fut: F) -> Result<F::Output, String> {
    timeout(limit, fut)
        .await
        .map_err(|_| format!("not resolved within {limit:?}"))
}
