//! Faults in the middle of requests, a restart under load, and a soak of
//! every fault, over real hyper servers on 127.0.0.1.
//!
//! Each case runs the plain `Reconnect` under `tower::buffer::Buffer` or the
//! shared handle (`Reconnect::spawn`), failing fast or waiting for
//! readiness, and checks, besides what its name promises:
//!
//! - every request resolves (Ok, `Unavailable`, or hyper's error), none
//!   later than its deadline + 1 s, and none reaches the server twice (each
//!   carries a unique id the server books); one that failed fast never
//!   reached it, nor one handed back, one answered Ok did, and the server
//!   saw no request beyond those answered or failed in flight;
//! - requests fail in flight only by a lost connection: per fault, no more
//!   than were exposed to it (in flight when it began, or sent before the
//!   watch counted the disconnect);
//! - connect attempts (logged by the connector) follow the backoff
//!   schedule: none while connected, each retry of an outage no sooner than
//!   the schedule's shortest delay after the one before, and in fail-fast
//!   mode far fewer than the requests;
//! - the watch's counters match what the server saw (accepts, closes);
//! - after closing: the watch shows `Closed`, no task is left on the
//!   runtime, no socket on the server's port in `/proc/self/fd`, and a
//!   second, warm round leaves no more live heap than the first. The
//!   socket census panics if it cannot read `/proc`, and a self-test checks
//!   that it sees open sockets.
//!
//! Real sockets need the real clock: waits are on events (the watch, the
//! server's books); sleeps only give a connection its age, a fault its
//! length, or a caller its pace. Every case runs on a multi-thread runtime
//! of its own, two workers, whose threads charge their allocations to the
//! case (see `GLOBAL`).
//!
//! `cargo test --all-features --test soak -- --nocapture` prints each case's
//! markdown table row (and a header before the first). The soak runs for
//! 60 s with `REDIAL_LONG_TESTS=1` (CI sets it), and otherwise for two
//! cycles, about 25 s; the other cases, about 50 s in all, run beside it on
//! the harness's second thread, so the binary takes about a minute with the
//! variable and 40 s without.

mod cases;
mod census;
mod client;
mod io;
mod load;
mod server;
mod soak;
#[path = "../support/mod.rs"]
mod support;

use std::{io::Write, time::Duration};

use cases::{reset_mid_request, reset_mid_stream, restart_round, two_rounds, Case};
use client::{Kind, Mode};
use server::Proto;
use support::alloc::{Counting, SlotLive};

/// Live heap bytes per case, charged to the *slot* of the thread that
/// allocates. Every case runs on a runtime of its own whose threads
/// (workers, blocking pool and the thread calling `block_on`) enter the
/// case's slot, so cases running in parallel on other threads do not count
/// each other's memory, and memory a task allocates on one worker and
/// frees on another is still charged to the same case.
#[global_allocator]
static GLOBAL: Counting<SlotLive> = Counting::new();

/// Every fault, cycled for about 60 s against all four clients at once, 64
/// callers each: every request resolves in time, none twice on the wire,
/// attempts follow the schedule, and nothing is left behind. Only with
/// `REDIAL_LONG_TESTS=1`; otherwise it says it was skipped, and the next
/// test soaks for two cycles instead. (Both names sort before the other
/// cases', so the harness starts the soak first and runs them beside it.)
#[test]
fn every_fault_cycled_for_60_s_under_64_callers_per_client() {
    if long_tests() {
        soak::soak(Duration::from_secs(60));
    } else {
        skipped(
            "every_fault_cycled_for_60_s_under_64_callers_per_client",
            "the 60 s soak",
        );
    }
}

/// The same soak, for two cycles (the warm-up and one more, whose leftover
/// heap is compared with the warm-up's): what a plain `cargo test` runs.
/// With `REDIAL_LONG_TESTS=1`, the 60 s soak runs these cycles and more, so
/// this one does nothing.
#[test]
fn every_fault_cycled_twice_under_64_callers_per_client() {
    if !long_tests() {
        soak::soak(Duration::ZERO);
    }
}

/// Whether to run the long suites in full: `REDIAL_LONG_TESTS=1`.
fn long_tests() -> bool {
    std::env::var_os("REDIAL_LONG_TESTS").is_some_and(|value| value == "1")
}

/// Says, past the harness's capture of a passing test's output, that `test`
/// did not run, and how to run it.
fn skipped(test: &str, what: &str) {
    let _ = writeln!(
        std::io::stderr(),
        "\n!! SKIPPED {test}: {what} runs only with REDIAL_LONG_TESTS=1, as in\n\
         !!     REDIAL_LONG_TESTS=1 cargo test --all-features --test soak\n"
    );
}

/// A module per fault, in it a module per protocol, in it a test per
/// client and mode, each running `$round` twice on the `Case`.
macro_rules! cases {
    ($module:ident, $fault:expr, $round:ident, $doc:literal, [$($proto_module:ident: $proto:ident),*]) => {
        mod $module {
            $(
                mod $proto_module {
                    use crate::*;

                    fn run(kind: Kind, mode: Mode) {
                        let case = Case { fault: $fault, kind, mode, proto: Proto::$proto };
                        two_rounds(case, || $round(case));
                    }

                    #[doc = concat!($doc, " (Buffer<Reconnect>, failing fast)")]
                    #[test]
                    fn buffer_fail_fast() {
                        run(Kind::Buffer, Mode::FailFast);
                    }

                    #[doc = concat!($doc, " (Buffer<Reconnect>, waiting for readiness)")]
                    #[test]
                    fn buffer_wait_for_ready() {
                        run(Kind::Buffer, Mode::WaitForReady);
                    }

                    #[doc = concat!($doc, " (shared handle, failing fast)")]
                    #[test]
                    fn shared_fail_fast() {
                        run(Kind::Shared, Mode::FailFast);
                    }

                    #[doc = concat!($doc, " (shared handle, waiting for readiness)")]
                    #[test]
                    fn shared_wait_for_ready() {
                        run(Kind::Shared, Mode::WaitForReady);
                    }
                }
            )*
        }
    };
}

cases!(
    reset_mid_request,
    "reset mid-request",
    reset_mid_request,
    "A reset after the server read a request fails that request (and at most those in flight) with hyper's error, fails none fast, and the next requests succeed on a new connection",
    [http1: Http1, http2: Http2]
);

cases!(
    reset_mid_stream,
    "reset mid-stream",
    reset_mid_stream,
    "A reset after the status and a first chunk fails that response's body with hyper's error, fails no request fast, and the next requests succeed on a new connection",
    [http1: Http1, http2: Http2]
);

cases!(
    restart_under_load,
    "down 3 s, restart",
    restart_round,
    "64 callers through a 3 s server outage: in-flight requests fail with hyper's error, the rest fail fast or wait as the mode says, attempts follow the schedule, and the client is back within the longest delay",
    [http2: Http2]
);
