//! The invariants every round of every case checks, written once.

use std::{collections::HashSet, time::Duration};

use redial::{ConnectionState, Phase};
use tokio::time::Instant;

use crate::{
    harness::{earliest_start, Mode, Outcome, Record},
    matrix::{Case, Fault},
    server::Proto,
};

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

/// Every request resolved once, by its deadline + `GRACE`, Ok or with a
/// typed error; none reached the server twice; every answer reached it and
/// no fail-fast error did; none failed fast while waiting for readiness.
pub fn check_requests(case: Case, records: &[Record], seen: &[String]) -> Tally {
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

/// Attempts during the fault follow the schedule: no more than the
/// shortest delays allow (no loop), no fewer than the longest allow (no
/// stall). Where the server sees them, it saw as many, each no sooner than
/// the schedule allows after the first.
pub fn check_attempts(
    case: Case,
    at_heal: &ConnectionState,
    (min, max): (u32, u32),
    accepts: &[Instant],
) {
    let attempts = at_heal.attempt();
    assert!(
        (min..=max).contains(&attempts),
        "{case}: {attempts} attempts, the schedule allows {min}..={max}"
    );
    if !case.fault.accepted() {
        return;
    }
    let seen = accepts.len() as u32;
    assert!(
        seen.abs_diff(attempts) <= 1,
        "{case}: the server saw {seen} attempts, the watch {attempts}"
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

/// After recovery: connected, with as many connects as connections that
/// came up (each accept for HTTP/1 against a flapping server, whose
/// handshake needs no answer; else the one), and as many attempts as the
/// server accepted where it saw them all.
pub fn check_end(case: Case, end: &ConnectionState, accepts: usize) {
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
    if case.fault.accepted() {
        assert_eq!(end.attempt() as usize, accepts, "{case}: {end:?}");
    } else {
        assert_eq!(accepts, 1, "{case}: a dial while connected? {end:?}");
    }
}
