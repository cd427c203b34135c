//! One case of the matrix: a fault, a protocol, a client (the plain
//! `Reconnect` under `Buffer`, or the shared handle) and a mode (fail fast,
//! or wait for ready), run twice on a thread and runtime of its own, with
//! every invariant checked in each round; and the table of what happened.
//!
//! A round: the fault is injected, the client is built and callers send
//! requests for `FAULT_WINDOW`; the fault is healed, and the callers go on
//! until the first answer and `STEADY` more; then the client is closed and
//! the server stopped, and nothing may be left.

use std::{fmt, net::SocketAddr, time::Duration};

use http::Uri;
use redial::{ConnectionWatch, Phase};
use tokio::{
    net::{TcpListener, TcpSocket},
    time::{sleep, sleep_until, Instant},
};

use crate::{
    harness::{
        client, longest_gap, max_attempts, min_attempts, Callers, Cause, Kind, Mode,
        CONNECT_TIMEOUT, GRACE, PACE, RECOVERY_BOUND, REQUEST_SLACK,
    },
    invariants::{check_attempts, check_cause, check_end, check_requests, Schedule},
    netns::BlackHole,
    resources::{guard, lock, open_fds, runtime, sockets_at},
    server::{Behaviour, FaultServer, Proto},
    support::{
        alloc::ThreadLive,
        net::{alive_tasks, settle},
    },
    table::print_table,
};

/// How long the fault lasts before it is healed.
const FAULT_WINDOW: Duration = Duration::from_secs(1);
/// How long the callers go on after the first answer.
const STEADY: Duration = Duration::from_millis(200);
const CALLERS: usize = 4;
/// The slow peer's greeting before the heal (over the connect timeout) and
/// after it (well under).
pub const SLOW_HANDSHAKE: Duration = Duration::from_millis(400);
pub const FAST_HANDSHAKE: Duration = Duration::from_millis(50);
/// What the live heap may grow by over the warm second round of a case.
/// Nothing is expected (every run so far: 0 B); the slack allows for a
/// buffer in tokio or hyper doubling its capacity once more.
const HEAP_SLACK: isize = 1024;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Fault {
    /// Nothing listens on the port.
    Refused,
    /// SYNs vanish.
    BlackHole,
    /// Accepts TCP, never sends a byte.
    Mute,
    /// Accepts and closes at once.
    Flap,
    /// Greets after `SLOW_HANDSHAKE`, then, healed, after `FAST_HANDSHAKE`.
    Slow,
}

impl Fault {
    pub fn name(self) -> &'static str {
        match self {
            Self::Refused => "refused",
            Self::BlackHole => "black hole",
            Self::Mute => "mute (no preface)",
            Self::Flap => "accept + close",
            Self::Slow => "slow handshake",
        }
    }

    /// How long a failed attempt may last, for the lower bound on attempts.
    pub fn attempt_len(self) -> Duration {
        match self {
            Self::Refused | Self::Flap => Duration::ZERO,
            Self::BlackHole | Self::Mute | Self::Slow => CONNECT_TIMEOUT,
        }
    }

    /// Whether each failed attempt reaches the server.
    pub fn accepted(self) -> bool {
        matches!(self, Self::Mute | Self::Flap | Self::Slow)
    }

    /// What every attempt during the fault fails with, by downcast.
    pub fn cause(self, proto: Proto) -> Cause {
        match (self, proto) {
            (Self::Refused, _) => Cause::Refused,
            (Self::BlackHole | Self::Mute | Self::Slow, _) => Cause::Timeout,
            // HTTP/1 has no greeting: the connection is up until the close
            // is read. HTTP/2 waits for the preface, which never comes.
            (Self::Flap, Proto::Http1) => Cause::Lost,
            (Self::Flap, Proto::Http2) => Cause::ClosedEarly,
        }
    }

    /// How long the first attempt after the heal takes to connect, beyond
    /// a round trip.
    pub fn healed_attempt(self) -> Duration {
        match self {
            Self::Slow => FAST_HANDSHAKE,
            _ => Duration::ZERO,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Case {
    pub fault: Fault,
    pub proto: Proto,
    pub kind: Kind,
    pub mode: Mode,
}

impl Case {
    /// The fault with every client and mode, over each of `protos`.
    pub fn all(fault: Fault, protos: &[Proto]) -> Vec<Self> {
        let mut cases = Vec::new();
        for &proto in protos {
            for kind in [Kind::Buffer, Kind::Shared] {
                for mode in [Mode::FailFast, Mode::WaitForReady] {
                    cases.push(Self {
                        fault,
                        proto,
                        kind,
                        mode,
                    });
                }
            }
        }
        cases
    }
}

impl fmt::Display for Case {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {:?} {:?} {:?}",
            self.fault.name(),
            self.proto,
            self.kind,
            self.mode
        )
    }
}

/// What one round saw. Numbers only, so keeping it costs no heap.
#[derive(Clone, Copy, Debug)]
pub struct Summary {
    pub requests: usize,
    pub ok: usize,
    pub failed_fast: usize,
    pub lost: usize,
    /// Of `lost`, those the server never saw.
    pub lost_unseen: usize,
    /// Handed back, never written or idempotent-unanswered, and not sent
    /// again.
    pub handed_back: usize,
    /// The longest a request took to resolve.
    pub slowest: Duration,
    /// Attempts during the fault window, as the dialler logged them, and
    /// the schedule's bounds on them.
    pub attempts: u32,
    pub bounds: (u32, u32),
    pub accepts: usize,
    pub cause: Cause,
    /// From the heal to the first answer, and the schedule's bound on it.
    pub recovery: Duration,
    pub recovery_bound: Duration,
    pub hole: Option<&'static str>,
}

pub struct Row {
    pub case: Case,
    pub first: Summary,
    pub second: Summary,
    /// Live heap growth over the first round and over the second.
    pub warmup: isize,
    pub growth: isize,
}

// ===== running cases =====

/// Runs every case at once, each on its own thread and runtime, prints the
/// table and fails if any case failed or a file descriptor was left open.
pub fn run(cases: Vec<Case>) {
    let _lock = lock();
    crate::support::trace_init();
    // tokio's signal driver keeps a process-wide socket pair from the first
    // runtime on: make it before counting.
    drop(runtime());
    let fds = open_fds();
    let threads: Vec<_> = cases
        .into_iter()
        .map(|case| {
            let thread = std::thread::Builder::new()
                .name(case.to_string())
                .spawn(move || run_case(case))
                .unwrap();
            (case, thread)
        })
        .collect();
    let mut rows = Vec::new();
    let mut failed = Vec::new();
    for (case, thread) in threads {
        match thread.join() {
            Ok(row) => rows.push(row),
            Err(_) => failed.push(case.to_string()),
        }
    }
    print_table(&rows);
    assert!(failed.is_empty(), "failed (see their panics): {failed:?}");
    // Every socket, runtime and child process of the cases is gone.
    assert_eq!(open_fds(), fds, "file descriptors left open");
}

fn run_case(case: Case) -> Row {
    let rt = runtime();
    let start = ThreadLive::live();
    let first = rt.block_on(round(case));
    let warm = ThreadLive::live();
    let second = rt.block_on(round(case));
    let growth = ThreadLive::live() - warm;
    assert!(
        growth <= HEAP_SLACK,
        "{case}: the live heap grew by {growth} bytes over the warm round"
    );
    Row {
        case,
        first,
        second,
        warmup: warm - start,
        growth,
    }
}

/// The fault's side: the port, the black hole or the server.
struct Target {
    case: Case,
    addr: SocketAddr,
    /// Refused: bound, not listening, so the port stays ours.
    refusing: Option<TcpSocket>,
    hole: Option<BlackHole>,
    server: Option<FaultServer>,
}

impl Target {
    async fn start(case: Case) -> Self {
        let mut target = Self {
            case,
            addr: ([127, 0, 0, 1], 0).into(),
            refusing: None,
            hole: None,
            server: None,
        };
        let initial = match case.fault {
            Fault::Refused => {
                // A SYN to a port that is bound but not listening is
                // answered with RST, as for a port nobody bound; keeping it
                // bound means nobody else can take it before the heal.
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(target.addr).unwrap();
                target.addr = socket.local_addr().unwrap();
                target.refusing = Some(socket);
                return target;
            }
            Fault::BlackHole => {
                let hole = BlackHole::new().await;
                target.addr = hole.addr();
                target.hole = Some(hole);
                return target;
            }
            Fault::Mute => Behaviour::Mute,
            Fault::Flap => Behaviour::Flap,
            Fault::Slow => Behaviour::Slow(SLOW_HANDSHAKE),
        };
        let listener = TcpListener::bind(target.addr).await.unwrap();
        target.addr = listener.local_addr().unwrap();
        target.server = Some(FaultServer::start(
            listener,
            case.proto,
            initial,
            Vec::new(),
        ));
        target
    }

    fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    fn heal(&mut self) {
        let proto = self.case.proto;
        match self.case.fault {
            Fault::Refused => {
                let listener = self.refusing.take().unwrap().listen(64).unwrap();
                let server = FaultServer::start(listener, proto, Behaviour::Serve, Vec::new());
                self.server = Some(server);
            }
            Fault::BlackHole => {
                let (listener, ignore) = self.hole.as_mut().unwrap().heal();
                let server = FaultServer::start(listener, proto, Behaviour::Serve, ignore);
                self.server = Some(server);
            }
            Fault::Mute | Fault::Flap => self.server().set(Behaviour::Serve),
            Fault::Slow => self.server().set(Behaviour::Slow(FAST_HANDSHAKE)),
        }
    }

    fn server(&self) -> &FaultServer {
        self.server.as_ref().expect("a server")
    }

    fn accepts(&self) -> Vec<Instant> {
        self.server
            .as_ref()
            .map(FaultServer::accepts)
            .unwrap_or_default()
    }
}

async fn round(case: Case) -> Summary {
    let tasks = alive_tasks();
    let mut target = Target::start(case).await;
    let addr = target.addr;
    let start = Instant::now();
    let heal_at = start + FAULT_WINDOW;
    let (client, watch, close, dials) = client(target.uri(), case.proto, case.kind, case.mode);
    let mut callers = Callers::start(CALLERS, &client, case.mode, heal_at);
    let causes = tokio::spawn(causes_until(watch.clone(), heal_at));

    sleep_until(heal_at).await;
    // Read together, with no await between: nothing dials in between.
    let at_heal = watch.state();
    let dials_at_heal = dials.log();
    let window = Instant::now() - start;
    let accepts_at_heal = target.accepts();
    target.heal();
    let healed = Instant::now();
    let Some(recovered) = callers.first_ok(healed + RECOVERY_BOUND + GRACE).await else {
        panic!("{case}: no answer within {RECOVERY_BOUND:?} + {GRACE:?} of the heal");
    };
    sleep(STEADY).await;
    let records = callers.stop().await;
    let end = watch.state();
    // The one live connection; every abandoned attempt's socket is closed.
    guard("one connection open", target.server().until_open(1)).await;

    let bounds = (
        min_attempts(FAULT_WINDOW, case.fault.attempt_len()),
        max_attempts(window),
    );
    check_attempts(case, &at_heal, bounds, &dials_at_heal, &accepts_at_heal);
    let schedule = Schedule::of(case, start, &dials_at_heal, healed);
    let tally = check_requests(case, &records, &target.server().seen(), &schedule);
    if case.mode == Mode::FailFast {
        // Many requests, few attempts: requests do not dial.
        let attempts = dials_at_heal.len();
        assert!(
            tally.requests >= 5 * attempts,
            "{case}: {tally:?} for {attempts} attempts"
        );
    }
    // The first answer: once connected, at once for waiting callers, and
    // within a pause for callers failing fast.
    let recovery = recovered.saturating_duration_since(healed);
    let pause = match case.mode {
        Mode::FailFast => PACE,
        Mode::WaitForReady => Duration::ZERO,
    };
    let recovery_bound =
        schedule.connected_by.saturating_duration_since(healed) + pause + REQUEST_SLACK;
    assert!(
        recovery <= recovery_bound,
        "{case}: the first answer came {recovery:?} after the heal; the schedule allows \
         {recovery_bound:?} (the attempt after {} at the heal due within {:?}, {:?} to connect, \
         + {pause:?} + {REQUEST_SLACK:?})",
        dials_at_heal.len(),
        longest_gap(dials_at_heal.len(), case.fault.attempt_len()),
        case.fault.healed_attempt(),
    );
    let accepts = target.accepts().len();
    check_end(case, &end, accepts, dials.log().len());
    let cause = check_cause(case, &causes.await.unwrap(), &at_heal);

    // Close (a `Buffer` by dropping its last clone), and nothing may be
    // left: task, socket, server connection.
    if let Some(close) = close {
        close();
    }
    drop(client);
    let mut rx = watch.subscribe();
    guard(
        "watch shows Closed",
        rx.wait_for(|s| s.phase() == Phase::Closed),
    )
    .await
    .unwrap();
    guard(
        "server sees every socket closed",
        target.server().until_open(0),
    )
    .await;
    target.server.as_mut().unwrap().stop().await;
    let hole = target.hole.as_ref().map(BlackHole::kind);
    drop(target);
    settle("tasks end", GRACE, alive_tasks, |&n| n == tasks).await;
    settle(
        "sockets close",
        GRACE,
        || sockets_at(addr),
        |s| s.is_empty(),
    )
    .await;

    Summary {
        requests: tally.requests,
        ok: tally.ok,
        failed_fast: tally.failed_fast,
        lost: tally.lost,
        lost_unseen: tally.lost_unseen,
        handed_back: tally.handed_back,
        slowest: tally.slowest,
        attempts: dials_at_heal.len() as u32,
        bounds,
        accepts,
        cause,
        recovery,
        recovery_bound,
        hole,
    }
}

/// The cause of every state the watch publishes until `heal_at`, by
/// downcast.
async fn causes_until(watch: ConnectionWatch, heal_at: Instant) -> Vec<Cause> {
    let mut rx = watch.subscribe();
    let mut causes = Vec::new();
    loop {
        if let Some(err) = rx.borrow_and_update().last_error() {
            causes.push(Cause::of(err));
        }
        tokio::select! {
            changed = rx.changed() => if changed.is_err() { return causes },
            () = sleep_until(heal_at) => return causes,
        }
    }
}
