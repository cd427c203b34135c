//! The table of what happened, one row per case, in markdown: what
//! `RELIABILITY.md` shows.

use crate::{
    harness::{Kind, Mode},
    matrix::Row,
    server::Proto,
};

pub fn print_table(rows: &[Row]) {
    println!();
    println!(
        "| fault | proto | client | mode | requests | ok | failed fast | lost in flight, may have reached the server: seen by it | … not seen | \
         lost in flight, never written or idempotent-unanswered | timed out | \
         slowest | attempts in 1 s (schedule) | server accepts | cause during the fault | recovery (schedule's bound) |"
    );
    println!("|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|--:|");
    for row in rows {
        let Row { case, first: s, .. } = row;
        let fault = match s.hole {
            Some(kind) => format!("{} ({kind})", case.fault.name()),
            None => case.fault.name().to_owned(),
        };
        let proto = match case.proto {
            Proto::Http1 => "HTTP/1",
            Proto::Http2 => "HTTP/2",
        };
        let kind = match case.kind {
            Kind::Buffer => "`Buffer<Reconnect>`",
            Kind::Shared => "`Shared`",
        };
        let mode = match case.mode {
            Mode::FailFast => "fail fast",
            Mode::WaitForReady => "wait for ready",
        };
        let accepts = if case.fault.accepted() {
            s.accepts.to_string()
        } else {
            format!("{} (after heal)", s.accepts)
        };
        println!(
            // A request past its deadline + 1 s fails the case: "timed out"
            // is 0 in every row printed.
            "| {fault} | {proto} | {kind} | {mode} | {} | {} | {} | {} | {} | {} | 0 | {} ms | {} ({}–{}) | {accepts} | {} | {} ms (≤ {}) |",
            s.requests,
            s.ok,
            s.failed_fast,
            s.lost - s.lost_unseen,
            s.lost_unseen,
            s.handed_back,
            s.slowest.as_millis(),
            s.attempts,
            s.bounds.0,
            s.bounds.1,
            s.cause.name(),
            s.recovery.as_millis(),
            s.recovery_bound.as_millis(),
        );
    }
    for row in rows {
        println!(
            "{}: round 2: {} requests, {} ok, {} attempts, recovery {} ms; \
             live heap Δ round 1 {} B, round 2 {} B",
            row.case,
            row.second.requests,
            row.second.ok,
            row.second.attempts,
            row.second.recovery.as_millis(),
            row.warmup,
            row.growth
        );
    }
}
