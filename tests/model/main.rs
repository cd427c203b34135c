//! Model-based tests: random sequences of dial results, timeouts, resets,
//! `mark_disconnected`, `reset_backoff`, clock jumps, readiness polls, calls
//! and cancellations, checked after every step against a small reference
//! model of the crate's documented states, timing and readiness
//! (`reference.rs`), for the plain `Reconnect` (`reconnect.rs`, half of its
//! cases on an exponential schedule with jitter) and the
//! shared handle (`shared.rs`, with the model of its worker and queue in
//! `worker.rs`); and the bugs they found, shrunk to plain tests
//! (`regressions.rs`).
//!
//! Each case runs on its own paused current-thread runtime. The case count
//! is proptest's (256 unless `PROPTEST_CASES` says otherwise).

#[path = "../support/mod.rs"]
mod support;

mod check;
mod reconnect;
mod reference;
mod regressions;
mod shared;
mod worker;
