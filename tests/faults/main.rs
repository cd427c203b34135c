//! The connect-side fault matrix over real sockets: refused, black hole,
//! mute, flapping and slow servers, each against the plain `Reconnect` under
//! `tower::buffer::Buffer` and the shared handle (`Reconnect::spawn`), in
//! fail-fast and wait-for-ready modes, over redial's hyper connectors; every
//! case checks the same invariants (`invariants.rs`, `resources.rs`), twice.
//!
//! `cargo test --all-features --test faults -- --nocapture` prints a
//! markdown table of what happened per case (RELIABILITY.md shows one).
//!
//! Every test holds one lock (`resources::lock`), so they run one at a time
//! and the process-wide counts (open file descriptors) of one are its own;
//! the cases of a fault run at once, each on a thread and runtime of its
//! own, so its tasks and heap are its own too.
//!
//! The black hole is a private network namespace (root and iproute2
//! needed); where one cannot be made the tests say so loudly and fall back
//! to a full accept backlog, or fail if `REDIAL_REQUIRE_NETNS=1`.
//! `REDIAL_BLACK_HOLE=backlog` picks the fallback on purpose.
//!
//! Real sockets need the real clock: the bounds are counts, and times
//! derived from each fault's schedule (the connect timeout, the backoff's
//! jittered delays, the heal) plus `harness::SLACK` per scheduled event
//! for a loaded machine. A request unresolved a second past its bound is
//! abandoned as hung.

mod connect;
mod harness;
mod invariants;
mod matrix;
mod netns;
mod resources;
mod server;
#[path = "../support/mod.rs"]
mod support;
mod table;

use support::alloc::{Counting, ThreadLive};

/// Live heap bytes per thread: each case of the matrix runs on a thread of
/// its own (a current-thread runtime), so its count is not disturbed by the
/// others.
#[global_allocator]
static GLOBAL: Counting<ThreadLive> = Counting::new();
