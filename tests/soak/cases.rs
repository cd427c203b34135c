//! The targeted cases: a reset in the middle of a request or of a streaming
//! response, and a server restart under load; each run twice on a runtime
//! of its own, so that the second, warm round can be compared with the
//! first.

use std::{
    future::Future,
    sync::{Arc, Once},
    time::Duration,
};

use tokio::{sync::watch, time::Instant};

use crate::{
    census,
    client::{Kind, Mode, Under, CONNECT_TIMEOUT, LOG_SLACK, MAX_DELAY},
    load::{guarded, trigger, Counts, Exposure, Load, LoadConfig, Tally},
    server::{Book, Proto, Server, RESET_REQUEST, RESET_STREAM},
    support::{
        alloc::SlotLive,
        net::{alive_tasks, settle},
    },
};

/// A connection this old has outlived the first retry delay (100 ms): it
/// is healthy, and losing it restarts the schedule. Its age counts from
/// before the watch shows it, so any margin will do.
pub const PROVEN: Duration = Duration::from_millis(150);
/// Resets per round.
const RESETS: u64 = 2;
const RESET_CALLERS: usize = 8;
const RESTART_CALLERS: usize = 64;
/// How long the restarted server stays down.
pub const DOWN: Duration = Duration::from_secs(3);
/// Live heap the second round may leave above the first, for capacity the
/// runtime keeps after a busier moment: less than a leaked connection, or a
/// leaked byte per request of a round (a few hundred to a few hundred
/// thousand), would leave.
pub const HEAP_SLACK: isize = 8 * 1024;
/// Only a hang guard for the case's own waits.
pub const HANG: Duration = Duration::from_secs(20);

/// Fails the case instead of hanging.
pub async fn guard<F: Future>(fut: F) -> F::Output {
    guarded(HANG, fut).await.expect("the case hung")
}

/// One case: what it does to which client.
#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub fault: &'static str,
    pub kind: Kind,
    pub mode: Mode,
    pub proto: Proto,
}

/// What one round came to; no heap, so that holding it does not count as
/// growth.
#[derive(Clone, Copy, Debug, Default)]
pub struct Report {
    pub counts: Counts,
    pub faults: u64,
    pub dials: u64,
    pub accepts: u64,
    pub connects: u64,
    pub disconnects: u64,
    pub recover: Duration,
}

impl Report {
    fn merge(&mut self, other: &Report) {
        self.counts.merge(&other.counts);
        self.faults += other.faults;
        self.dials += other.dials;
        self.accepts += other.accepts;
        self.connects += other.connects;
        self.disconnects += other.disconnects;
        self.recover = self.recover.max(other.recover);
    }
}

/// A multi-thread runtime (two workers, as on the CI machine) whose
/// threads charge their allocations to `slot`.
pub fn runtime(slot: usize) -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .on_thread_start(move || SlotLive::enter(slot))
        .build()
        .expect("tokio runtime")
}

/// Runs `round` twice; after each, waits until every task it spawned has
/// ended, then reads the live heap. The second round must leave no more
/// than the first (plus [`HEAP_SLACK`]). Prints the case's table row.
pub fn two_rounds<F, Fut>(case: Case, round: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Report>,
{
    crate::support::trace_init();
    let slot = SlotLive::new_slot();
    let rt = runtime(slot);
    SlotLive::enter(slot);
    let (report, growth, wall) = rt.block_on(async {
        let started = Instant::now();
        let tasks = alive_tasks();
        let mut report = round().await;
        settle("tasks", HANG, alive_tasks, |&n| n <= tasks).await;
        let first = SlotLive::live(slot);
        report.merge(&round().await);
        settle("tasks", HANG, alive_tasks, |&n| n <= tasks).await;
        let second = SlotLive::live(slot);
        (report, second - first, started.elapsed())
    });
    SlotLive::enter(0);
    print_row(&case, &report, true, growth, wall);
    assert!(
        growth <= HEAP_SLACK,
        "{case:?}: the second round left {growth} more live bytes than the first"
    );
}

const HEADER: &str = "| fault | client | mode | proto | requests | ok | failed fast | errored, may have reached the server: seen by it | … not seen | never written or idempotent-unanswered | timed out | faults injected | connect attempts | accepts | connects / disconnects | time to recover (max) | slowest request | heap growth, 2nd round | wall |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|";

/// Prints a markdown table row for `report` (the header before the
/// first). Counters the server and the watch keep for a whole run are left
/// out (`–`) when `report` is one phase of a run.
pub fn print_row(case: &Case, r: &Report, whole_run: bool, growth: isize, wall: Duration) {
    static HEADER_ONCE: Once = Once::new();
    let c = &r.counts;
    let (accepts, connects) = if whole_run {
        (
            r.accepts.to_string(),
            format!("{} / {}", r.connects, r.disconnects),
        )
    } else {
        ("–".to_owned(), "–".to_owned())
    };
    let row = format!(
        "| {} | {:?} | {:?} | {:?} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {accepts} | {connects} | {} ms | {} ms | {growth} B | {:.1} s |",
        case.fault,
        case.kind,
        case.mode,
        case.proto,
        c.requests(),
        c.ok,
        c.failed_fast,
        c.errored - c.errored_unseen,
        c.errored_unseen,
        c.handed_back,
        c.timed_out,
        r.faults,
        r.dials,
        r.recover.as_millis(),
        c.slowest.as_millis(),
        wall.as_secs_f64(),
    );
    HEADER_ONCE.call_once(|| println!("{HEADER}"));
    println!("{row}");
}

/// The invariants every case checks on what its callers saw: none
/// unresolved by the hang guard, none of an unexpected type, none twice on
/// the wire, none that failed fast on the wire, none failed fast while
/// waiting for readiness, and every request the server saw accounted for.
/// `triggers` is how many requests the case sent itself, each seen.
pub fn check_requests(case: &Case, tally: &mut Tally, book: &Book, triggers: u64) -> Counts {
    let handed_back_seen = tally.settle(book);
    assert_eq!(
        handed_back_seen, 0,
        "{case:?}: requests handed back as never written reached the server"
    );
    let total = tally.total();
    assert_eq!(total.timed_out, 0, "{case:?}: requests hung: {total:?}");
    assert!(
        tally.wrong.is_empty(),
        "{case:?}: {:?}",
        &tally.wrong[..tally.wrong.len().min(10)]
    );
    assert_eq!(
        book.duplicates(),
        0,
        "{case:?}: a request reached the server twice"
    );
    let sent = tally
        .failed_fast_ids
        .iter()
        .filter(|&&id| book.seen(id))
        .count();
    assert_eq!(sent, 0, "{case:?}: requests that failed fast were sent");
    if case.mode == Mode::WaitForReady {
        assert_eq!(
            total.failed_fast, 0,
            "{case:?}: failed fast while waiting for ready"
        );
    }
    // The server's count against the callers': it saw nothing a caller
    // does not know may have been delivered.
    let delivered = total.ok + (total.errored - total.errored_unseen) + triggers;
    assert_eq!(
        book.requests(),
        delivered,
        "{case:?}: the server saw {} requests; the callers account for {delivered}: {total:?}",
        book.requests()
    );
    total
}

/// Requests fail with the inner error (or are handed back) only when a
/// connection is lost under them: no more than were exposed to the losses
/// (in flight when each began, or sent before the client noticed it).
pub fn check_errors(case: &Case, what: &str, counts: &Counts, exposure: &Exposure) {
    let errors = counts.errored + counts.handed_back;
    assert!(
        errors <= exposure.bound(),
        "{case:?}: {what}: {errors} requests failed in flight, {} were exposed: {exposure:?}",
        exposure.bound()
    );
}

/// Closes the client and stops the server, then checks what is left: the
/// watch `Closed` with every connection counted lost, every accepted
/// connection closed, and no socket on the port.
pub async fn close_and_check(case: &Case, under: Under, mut server: Server) {
    let book = server.book().clone();
    let watch = guard(under.close()).await;
    let state = watch.state();
    assert_eq!(state.disconnects(), state.connects(), "{case:?}: {state:?}");
    guard(book.until_open(0)).await;
    assert_eq!(book.closes(), book.accepts(), "{case:?}");
    server.stop().await;
    let port = server.port();
    settle("sockets", HANG, || census::sockets_on(port), |&n| n == 0).await;
}

/// A healthy connection: up, serving, and older than [`PROVEN`].
pub async fn healthy(under: &Under, book: &Book) {
    guard(under.watch.connected()).await.unwrap();
    guard(book.until_requests(book.requests() + 20)).await;
    tokio::time::sleep(PROVEN).await;
    assert!(under.watch.is_connected(), "{:?}", under.watch);
}

// ===== reset mid-request, mid-stream =====

/// Eight callers on a healthy connection; twice, one request makes the
/// server reset the connection (after reading it, or mid-response). That
/// request fails with hyper's error; others in flight on the connection may
/// too; the client reconnects at once (the connection was healthy), so no
/// request fails fast, and the next ones succeed on a new connection.
pub async fn reset_round(case: Case, fault: &str) -> Report {
    let server = Server::start(case.proto);
    let book: Arc<Book> = server.book().clone();
    let under = Under::build(case.kind, case.mode, case.proto, server.uri());
    let config = LoadConfig {
        callers: RESET_CALLERS,
        pace: Duration::from_millis(2),
        // The immediate reconnect, at most the connect timeout, and slack.
        deadline: CONNECT_TIMEOUT + Duration::from_secs(1),
    };
    let tag = watch::Sender::new(0);
    let load = Load::start(&under.svc, &book, config, &tag);
    let mut svc = under.svc.clone();
    let mut recover = Duration::ZERO;
    let mut exposure = Exposure::default();
    for n in 0..RESETS {
        healthy(&under, &book).await;
        let id = load.next_id();
        let sent = trigger(&mut svc, &book, id, fault);
        let (sent, exposed) = load.exposed_to(&under.watch, sent).await;
        if let Err(err) = sent {
            panic!("{case:?}: reset {n}: {err}");
        }
        exposure.merge(&exposed);
        recover = recover.max(guard(load.recovered(Instant::now())).await);
        assert_eq!(book.accepts(), n + 2, "{case:?}: not on a new connection");
    }
    drop(svc);
    let mut tally = load.stop().await;

    let total = check_requests(&case, &mut tally, &book, RESETS);
    assert_eq!(
        total.failed_fast, 0,
        "{case:?}: losing a healthy connection failed requests fast"
    );
    let state = under.watch.state();
    // The server books a close once its connection's task has ended, which
    // on a busy machine can be after the client saw the reset, reconnected
    // and was answered.
    settle(
        "server closes",
        HANG,
        || book.closes(),
        |&n| n >= state.disconnects(),
    )
    .await;
    check_errors(&case, "the resets", &total, &exposure);
    assert_eq!(book.resets(), RESETS, "{case:?}");
    assert_eq!(state.connects(), RESETS + 1, "{case:?}: {state:?}");
    assert_eq!(state.connects(), book.accepts(), "{case:?}: {state:?}");
    assert_eq!(state.disconnects(), book.closes(), "{case:?}: {state:?}");
    assert_eq!(
        under.dials.count(),
        book.accepts(),
        "{case:?}: a dial was not accepted"
    );
    if let Err(err) = under.dials.check_schedule(state.connects()) {
        panic!("{case:?}: {err}");
    }
    let report = Report {
        counts: total,
        faults: RESETS,
        dials: under.dials.count(),
        accepts: book.accepts(),
        connects: state.connects(),
        disconnects: state.disconnects(),
        recover,
    };
    close_and_check(&case, under, server).await;
    report
}

/// [`reset_round`] with the reset after the server read the request.
pub async fn reset_mid_request(case: Case) -> Report {
    reset_round(case, RESET_REQUEST).await
}

/// [`reset_round`] with the reset after the status and a first chunk.
pub async fn reset_mid_stream(case: Case) -> Report {
    reset_round(case, RESET_STREAM).await
}

// ===== restart under load =====

/// How many attempts the schedule allows in `window` of one outage: the
/// first at once, each next no sooner than the shortest delay after the
/// one before.
pub fn attempts_allowed(window: Duration) -> u64 {
    let (mut attempts, mut at) = (1, Duration::ZERO);
    loop {
        at += crate::client::min_delay_after(attempts as u32);
        if at > window {
            return attempts;
        }
        attempts += 1;
    }
}

/// 64 callers, one request every 5 ms each, on a healthy HTTP/2
/// connection; the server stops (closing it) for [`DOWN`], then listens
/// again on the same port. Requests in flight fail with hyper's error; while
/// down, requests fail fast or wait, as the mode says, and attempts follow
/// the schedule, not the requests; the client is back within the longest
/// delay of the restart.
pub async fn restart_round(case: Case) -> Report {
    let mut server = Server::start(case.proto);
    let book = server.book().clone();
    let under = Under::build(case.kind, case.mode, case.proto, server.uri());
    let config = LoadConfig {
        callers: RESTART_CALLERS,
        pace: Duration::from_millis(5),
        // Waiting out the outage, the longest delay and an attempt.
        deadline: DOWN + MAX_DELAY + CONNECT_TIMEOUT + Duration::from_secs(1),
    };
    let tag = watch::Sender::new(0);
    let load = Load::start(&under.svc, &book, config, &tag);
    healthy(&under, &book).await;

    tag.send_replace(1);
    let stopped = Instant::now();
    let ((), exposure) = load.exposed_to(&under.watch, server.stop()).await;
    tokio::time::sleep(DOWN).await;
    server.restart();
    tag.send_replace(2);
    let up = Instant::now();
    let recover = guard(load.recovered(up)).await;
    let back = Instant::now();
    healthy(&under, &book).await;
    let mut tally = load.stop().await;

    let total = check_requests(&case, &mut tally, &book, 0);
    let down = tally.by_tag.get(1).copied().unwrap_or_default();
    assert!(
        recover <= MAX_DELAY + CONNECT_TIMEOUT + Duration::from_secs(1),
        "{case:?}: back {recover:?} after the restart"
    );
    let state = under.watch.state();
    check_errors(&case, "the restart", &total, &exposure);
    assert_eq!(
        (state.connects(), book.accepts()),
        (2, 2),
        "{case:?}: {state:?}"
    );
    assert_eq!(
        (state.disconnects(), book.closes()),
        (1, 1),
        "{case:?}: {state:?}"
    );
    let dials = under.dials.count();
    if let Err(err) = under.dials.check_schedule(state.connects()) {
        panic!("{case:?}: {err}");
    }
    let in_outage = under.dials.since(stopped);
    let allowed = attempts_allowed(back - stopped + LOG_SLACK);
    assert!(
        in_outage <= allowed,
        "{case:?}: {in_outage} attempts in an outage of {:?}; the schedule allows {allowed}",
        back - stopped
    );
    assert!(
        dials > book.accepts(),
        "{case:?}: no refused attempt while down"
    );
    if case.mode == Mode::FailFast {
        assert!(
            down.failed_fast >= 10 * dials,
            "{case:?}: {dials} attempts for {} requests failed fast",
            down.failed_fast
        );
    }
    let report = Report {
        counts: total,
        faults: 1,
        dials,
        accepts: book.accepts(),
        connects: state.connects(),
        disconnects: state.disconnects(),
        recover,
    };
    close_and_check(&case, under, server).await;
    report
}
