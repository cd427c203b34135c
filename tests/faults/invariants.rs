//! The invariants every round of every case checks, written once.

use std::{collections::HashSet, time::Duration};

use redial::{ConnectionState, Phase};
use tokio::time::Instant;

use crate::{
    harness::{earliest_start, longest_gap, Cause, Mode, Outcome, Record, REQUEST_SLACK, SLACK},
    matrix::{Case, Fault},
    server::Proto,
};

/// How much sooner than its delay a dial may be logged: the retry timer
/// fires up to a millisecond early, and a dial is logged just after its
/// attempt starts, unless the thread is preempted in between.
const LOG_SLACK: Duration = Duration::from_millis(50);

/// When the fault's own schedule says requests resolve.
#[derive(Clone, Copy, Debug)]
pub struct Schedule {
    pub start: Instant,
    /// The first attempt's end: until then requests wait, in either mode;
    /// after it, failing fast means at once.
    pub first_over: Instant,
    /// The latest the client can be connected after the heal: the attempt
    /// after the last one before the heal is due within the longest gap
    /// the schedule allows, and connects within the healed handshake.
    pub connected_by: Instant,
}

impl Schedule {
    /// From the dials before the heal, as the dialler logged them.
    pub fn of(case: Case, start: Instant, dials: &[Instant], healed: Instant) -> Self {
        let (&first, &last) = (dials.first().unwrap(), dials.last().unwrap());
        let next = last + longest_gap(dials.len(), case.fault.attempt_len());
        Self {
            start,
            first_over: first + case.fault.attempt_len(),
            connected_by: next.max(healed) + case.fault.healed_attempt(),
        }
    }

    /// The latest `record` may resolve: once the first attempt is over when
    /// failing fast; once connected when waiting for readiness; plus
    /// [`REQUEST_SLACK`] either way.
    fn deadline(&self, mode: Mode, record: &Record) -> Instant {
        let due = match mode {
            Mode::FailFast => self.first_over,
            Mode::WaitForReady => self.connected_by,
        };
        record.issued.max(due) + REQUEST_SLACK
    }
}

#[derive(Debug, Default)]
pub struct Tally {
    pub requests: usize,
    pub ok: usize,
    pub failed_fast: usize,
    pub lost: usize,
    /// Of `lost`, those the server never saw: never written, or sent to a
    /// connection the server had stopped reading.
    pub lost_unseen: usize,
    /// Handed back by the connection (never written, or idempotent and
    /// unanswered) and not sent again.
    pub handed_back: usize,
    pub slowest: Duration,
}

/// Every request resolved once, by the time the fault's schedule allows,
/// Ok or with a typed error; none reached the server twice; every answer
/// reached it and no fail-fast error did; every fail-fast error carried the
/// fault's cause; none failed fast while waiting for readiness.
pub fn check_requests(
    case: Case,
    records: &[Record],
    seen: &[String],
    schedule: &Schedule,
) -> Tally {
    let mut tally = Tally::default();
    let unique: HashSet<&String> = seen.iter().collect();
    assert_eq!(
        unique.len(),
        seen.len(),
        "{case}: a request reached the server twice"
    );
    for record in records {
        let Record { path, outcome, .. } = record;
        tally.requests += 1;
        tally.slowest = tally.slowest.max(record.resolved - record.issued);
        let deadline = schedule.deadline(case.mode, record);
        assert!(
            record.resolved <= deadline,
            "{case}: {path}, issued {:?} into the round, took {:?}; the schedule allows \
             {:?} (the first attempt over at {:?}, connected by {:?}, + {REQUEST_SLACK:?}): {:?}",
            record.issued - schedule.start,
            record.resolved - record.issued,
            deadline.saturating_duration_since(record.issued),
            schedule.first_over - schedule.start,
            schedule.connected_by - schedule.start,
            record.error,
        );
        match outcome {
            Outcome::Ok => {
                tally.ok += 1;
                assert!(
                    unique.contains(path),
                    "{case}: {path} answered but not seen"
                );
            }
            Outcome::FailedFast => {
                tally.failed_fast += 1;
                assert!(
                    !unique.contains(path),
                    "{case}: {path} failed fast but was sent"
                );
                let expected = case.fault.cause(case.proto);
                assert_eq!(
                    record.cause,
                    Some(expected),
                    "{case}: {path} failed fast with the wrong cause: {:?}",
                    record.error
                );
            }
            Outcome::Lost => {
                tally.lost += 1;
                if !unique.contains(path) {
                    tally.lost_unseen += 1;
                }
            }
            Outcome::HandedBack => tally.handed_back += 1,
            Outcome::Closed | Outcome::Untyped | Outcome::Hung => {
                panic!("{case}: {path}: {outcome:?} {:?}", record.error)
            }
        }
    }
    let answered_or_lost: HashSet<&String> = records
        .iter()
        .filter(|r| matches!(r.outcome, Outcome::Ok | Outcome::Lost | Outcome::HandedBack))
        .map(|r| &r.path)
        .collect();
    assert!(
        unique.iter().all(|path| answered_or_lost.contains(path)),
        "{case}: the server saw a request that was neither answered nor lost"
    );
    if case.mode == Mode::WaitForReady {
        assert_eq!(tally.failed_fast, 0, "{case}: failed fast while waiting");
    }
    tally
}

/// Attempts during the fault, as the dialler logged them, follow the
/// schedule: no more than the shortest delays allow (no loop), no fewer
/// than the longest allow, each no sooner than the shortest delay after
/// the one before and no later than the longest gap (no stall); the watch
/// counted every one of them. Where the server sees attempts, it saw as
/// many, each no sooner than the schedule allows after the first.
pub fn check_attempts(
    case: Case,
    at_heal: &ConnectionState,
    (min, max): (u32, u32),
    dials: &[Instant],
    accepts: &[Instant],
) {
    let dialled = dials.len() as u32;
    assert_eq!(
        at_heal.attempt(),
        dialled,
        "{case}: the watch counted {} attempts, the dialler logged {dialled}",
        at_heal.attempt()
    );
    assert!(
        (min..=max).contains(&dialled),
        "{case}: {dialled} attempts, the schedule allows {min}..={max}"
    );
    for (n, pair) in dials.windows(2).enumerate().map(|(i, p)| (i + 1, p)) {
        let gap = pair[1] - pair[0];
        // One gap is one stall's worth of lateness: the request's slack,
        // not the schedule's.
        let (shortest, longest) = (
            earliest_start(n) - earliest_start(n - 1),
            longest_gap(n, case.fault.attempt_len()) - SLACK + REQUEST_SLACK,
        );
        assert!(
            gap + LOG_SLACK >= shortest && gap <= longest,
            "{case}: attempt {} started {gap:?} after attempt {n}; the schedule allows \
             {shortest:?}..={longest:?}",
            n + 1
        );
    }
    if !case.fault.accepted() {
        return;
    }
    // The attempt running at the heal may not be accepted yet.
    let seen = accepts.len() as u32;
    assert!(
        seen <= dialled && dialled - seen <= 1,
        "{case}: the server saw {seen} attempts, the dialler {dialled}"
    );
    let Some(&first) = accepts.first() else {
        return;
    };
    for (k, &at) in accepts.iter().enumerate().skip(1) {
        let earliest = earliest_start(k);
        let since = at - first;
        assert!(
            since + Duration::from_millis(50) >= earliest,
            "{case}: accept {} came {since:?} after the first, the schedule allows no sooner than {earliest:?}",
            k + 1
        );
    }
}

/// Every cause the watch published during the fault (`causes`, watched
/// until the heal) and its last error at the heal are the fault's cause,
/// by downcast. (The watch may show no error at the heal: a flapping
/// HTTP/1 connection looks up for an instant.)
pub fn check_cause(case: Case, causes: &[Cause], at_heal: &ConnectionState) -> Cause {
    let expected = case.fault.cause(case.proto);
    assert!(
        !causes.is_empty() && causes.iter().all(|&c| c == expected),
        "{case}: the watch published {causes:?} during the fault, the fault gives {expected:?}"
    );
    if let Some(err) = at_heal.last_error() {
        assert_eq!(
            Cause::of(err),
            expected,
            "{case}: the last error at the heal: {err:?}"
        );
    }
    expected
}

/// After recovery: connected, with as many connects as connections that
/// came up (each accept for HTTP/1 against a flapping server, whose
/// handshake needs no answer; else the one), as many attempts as the
/// dialler logged, and as many as the server accepted where it saw them
/// all.
pub fn check_end(case: Case, end: &ConnectionState, accepts: usize, dials: usize) {
    assert_eq!(end.phase(), Phase::Connected, "{case}: {end:?}");
    let connects = match (case.fault, case.proto) {
        (Fault::Flap, Proto::Http1) => accepts as u64,
        _ => 1,
    };
    assert_eq!(
        end.connects(),
        connects,
        "{case}: {end:?}, {accepts} accepts"
    );
    assert_eq!(end.disconnects(), connects - 1, "{case}: {end:?}");
    assert_eq!(
        end.attempt() as usize,
        dials,
        "{case}: the watch counted {} attempts, the dialler logged {dials}",
        end.attempt()
    );
    if case.fault.accepted() {
        assert_eq!(dials, accepts, "{case}: {end:?}");
    } else {
        assert_eq!(accepts, 1, "{case}: a dial while connected? {end:?}");
    }
}
