//! The soak: four lanes (`Buffer<Reconnect>` and the shared handle, each
//! failing fast and waiting for readiness), each a client over HTTP/2 with
//! 64 callers and a server of its own, cycle through every fault a server
//! on 127.0.0.1 can inject, for a given time in all (60 s with
//! `REDIAL_LONG_TESTS=1`): a first round of one cycle to warm up, then the
//! long one, at least a cycle, whose leftover heap is compared with the
//! first's.

use std::{sync::Arc, time::Duration};

use tokio::{sync::watch, time::Instant};

use crate::{
    cases::{
        check_errors, check_requests, close_and_check, guard, healthy, print_row, runtime, Case,
        Report, DOWN, HEAP_SLACK, PROVEN,
    },
    client::{Kind, Mode, Under, CONNECT_TIMEOUT, MAX_DELAY},
    load::{trigger, Counts, Exposure, Load, LoadConfig},
    server::{Accepting, Book, Proto, Server, RESET_REQUEST, RESET_STREAM},
    support::{
        alloc::SlotLive,
        net::{alive_tasks, settle},
    },
};

const CALLERS: usize = 64;
const PACE: Duration = Duration::from_millis(10);
const FLAPPING: Duration = Duration::from_secs(2);
const SILENCE: Duration = Duration::from_millis(1500);

/// The faults, in cycle order; the index is the phase tag.
const FAULTS: [&str; 7] = [
    "serve",
    "reset mid-request",
    "reset mid-stream",
    "crash (all reset)",
    "accept and close (flapping)",
    "accept, never answer",
    "down 3 s, restart",
];
const LANES: [(Kind, Mode); 4] = [
    (Kind::Buffer, Mode::FailFast),
    (Kind::Buffer, Mode::WaitForReady),
    (Kind::Shared, Mode::FailFast),
    (Kind::Shared, Mode::WaitForReady),
];

/// What one fault came to in one lane.
#[derive(Clone, Copy, Debug, Default)]
struct Phase {
    counts: Counts,
    times: u64,
    dials: u64,
    recover: Duration,
    /// The requests its losses exposed: the bound on those it failed.
    exposure: Exposure,
}

/// Live heap the 60 s round may leave above its one-cycle warm-up: twice
/// the cases' [`HEAP_SLACK`], as its four clients under 64 callers each
/// grow the runtime's capacity in steps (a fresh CI machine once measured
/// 8,480 bytes); a byte leaked per request, or per connection over the
/// round's thousands of reconnects, would still leave far more.
const SOAK_HEAP_SLACK: isize = 2 * HEAP_SLACK;

/// What one lane came to: by fault, and overall.
#[derive(Clone, Copy, Debug, Default)]
struct LaneReport {
    phases: [Phase; FAULTS.len()],
    total: Report,
}

/// Both rounds, for about `total` in all, or two cycles if that is longer.
pub fn soak(total: Duration) {
    crate::support::trace_init();
    let slot = SlotLive::new_slot();
    let rt = runtime(slot);
    SlotLive::enter(slot);
    let started = Instant::now();
    let (reports, growth, warm) = rt.block_on(async {
        let tasks = alive_tasks();
        // The warm-up round: one cycle.
        round(Instant::now()).await;
        let warm = started.elapsed();
        settle("tasks", Duration::from_secs(20), alive_tasks, |&n| {
            n <= tasks
        })
        .await;
        let first = SlotLive::live(slot);
        let reports = round(started + total).await;
        settle("tasks", Duration::from_secs(20), alive_tasks, |&n| {
            n <= tasks
        })
        .await;
        (reports, SlotLive::live(slot) - first, warm)
    });
    SlotLive::enter(0);
    let wall = started.elapsed();
    for ((kind, mode), lane) in LANES.iter().zip(&reports) {
        let case = |fault| Case {
            fault,
            kind: *kind,
            mode: *mode,
            proto: Proto::Http2,
        };
        for (fault, phase) in FAULTS.iter().zip(&lane.phases) {
            let report = Report {
                counts: phase.counts,
                faults: phase.times,
                dials: phase.dials,
                recover: phase.recover,
                ..Report::default()
            };
            print_row(&case(fault), &report, false, growth, wall);
        }
        print_row(&case("soak, all faults"), &lane.total, true, growth, wall);
    }
    assert!(
        growth <= SOAK_HEAP_SLACK,
        "the long round left {growth} more live bytes than the warm-up"
    );
    // A lane starts a cycle only if it can end by `total`, judging by its
    // longest so far, and runs one at least (about as long as the warm-up):
    // only a much slower last cycle runs over.
    let bound = total.max(2 * warm) + Duration::from_secs(30);
    assert!(
        wall < bound,
        "the soak took {wall:?}, over {bound:?} (warm-up: {warm:?})"
    );
}

/// Every lane at once, each cycling until `end` (at least one cycle). The
/// reports are on the stack, not the heap, so that keeping them is no
/// growth.
async fn round(end: Instant) -> [LaneReport; LANES.len()] {
    let lanes = LANES.map(|(kind, mode)| {
        let case = Case {
            fault: "soak",
            kind,
            mode,
            proto: Proto::Http2,
        };
        tokio::spawn(lane(case, end))
    });
    let mut reports = [LaneReport::default(); LANES.len()];
    for (report, lane) in reports.iter_mut().zip(lanes) {
        *report = lane.await.unwrap();
    }
    reports
}

/// Drives one lane's fault cycle, and books each phase in its report.
struct Driver<'a> {
    server: &'a mut Server,
    under: &'a Under,
    load: &'a Load,
    tag: &'a watch::Sender<usize>,
    report: &'a mut LaneReport,
}

impl Driver<'_> {
    fn book(&self) -> Arc<Book> {
        self.server.book().clone()
    }

    /// A healthy connection first, so that each fault starts from one.
    async fn begin(&mut self, fault: usize) -> Instant {
        healthy(self.under, &self.book()).await;
        self.tag.send_replace(fault);
        self.report.phases[fault].times += 1;
        Instant::now()
    }

    /// The fault (which began at `began`) ended at `fixed`: books how long
    /// until a request sent after that came back Ok, waits for a healthy
    /// connection, and books the phase's dials.
    async fn recovered(&mut self, fault: usize, began: Instant, fixed: Instant) {
        let recover = guard(self.load.recovered(fixed)).await;
        // The next attempt is due within the longest delay, or at once when
        // an attempt in flight overran its slot (the connect timeout).
        assert!(
            recover <= MAX_DELAY + CONNECT_TIMEOUT + Duration::from_secs(2),
            "{}: back {recover:?} after it ended",
            FAULTS[fault]
        );
        let phase = &mut self.report.phases[fault];
        phase.recover = phase.recover.max(recover);
        healthy(self.under, &self.book()).await;
        self.end(fault, began);
    }

    fn end(&mut self, fault: usize, began: Instant) {
        let dials = self.under.dials.between(began, Instant::now());
        self.report.phases[fault].dials += dials;
        self.tag.send_replace(0);
    }

    async fn cycle(&mut self) {
        let began = self.begin(0).await;
        tokio::time::sleep(PROVEN).await;
        self.end(0, began);

        for (fault, kind) in [(1, RESET_REQUEST), (2, RESET_STREAM)] {
            let began = self.begin(fault).await;
            let mut svc = self.under.svc.clone();
            let id = self.load.next_id();
            let book = self.book();
            let sent = trigger(&mut svc, &book, id, kind);
            let (sent, exposed) = self.load.exposed_to(&self.under.watch, sent).await;
            if let Err(err) = sent {
                panic!("{}: {err}", FAULTS[fault]);
            }
            self.report.phases[fault].exposure.merge(&exposed);
            drop(svc);
            self.recovered(fault, began, Instant::now()).await;
        }

        let began = self.begin(3).await;
        let crash = self.server.crash();
        let ((), exposed) = self.load.exposed_to(&self.under.watch, crash).await;
        self.report.phases[3].exposure.merge(&exposed);
        self.server.restart();
        self.recovered(3, began, Instant::now()).await;

        for (fault, accepting, lasting) in [
            (4, Accepting::Flap, FLAPPING),
            (5, Accepting::Silent, SILENCE),
        ] {
            let began = self.begin(fault).await;
            self.server.set_accepting(accepting);
            let stop = self.server.stop();
            let ((), exposed) = self.load.exposed_to(&self.under.watch, stop).await;
            self.report.phases[fault].exposure.merge(&exposed);
            self.server.restart();
            tokio::time::sleep(lasting).await;
            self.server.set_accepting(Accepting::Serve);
            self.recovered(fault, began, Instant::now()).await;
        }

        let began = self.begin(6).await;
        let stop = self.server.stop();
        let ((), exposed) = self.load.exposed_to(&self.under.watch, stop).await;
        self.report.phases[6].exposure.merge(&exposed);
        tokio::time::sleep(DOWN).await;
        self.server.restart();
        self.recovered(6, began, Instant::now()).await;
    }
}

/// One lane: a server, a client, 64 callers, and the fault cycle until
/// `end`; then the checks every case makes.
async fn lane(case: Case, end: Instant) -> LaneReport {
    let mut server = Server::start(case.proto);
    let book = server.book().clone();
    let under = Under::build(case.kind, case.mode, case.proto, server.uri());
    let config = LoadConfig {
        callers: CALLERS,
        pace: PACE,
        deadline: DOWN + MAX_DELAY + CONNECT_TIMEOUT + Duration::from_secs(1),
    };
    let tag = watch::Sender::new(0);
    let load = Load::start(&under.svc, &book, config, &tag);
    let mut report = LaneReport::default();
    let mut driver = Driver {
        server: &mut server,
        under: &under,
        load: &load,
        tag: &tag,
        report: &mut report,
    };
    // Another cycle only if it ends in time, judging by the longest so far.
    let mut longest = Duration::ZERO;
    loop {
        let began = Instant::now();
        driver.cycle().await;
        longest = longest.max(began.elapsed());
        if Instant::now() + longest > end {
            break;
        }
    }
    healthy(&under, &book).await;
    let mut tally = load.stop().await;

    // One trigger request per reset.
    let triggers = report.phases[1].times + report.phases[2].times;
    let total = check_requests(&case, &mut tally, &book, triggers);
    for (fault, counts) in tally.by_tag.iter().enumerate() {
        report.phases[fault].counts = *counts;
    }
    let serve = report.phases[0].counts;
    assert_eq!(
        (serve.failed_fast, serve.errored, serve.handed_back),
        (0, 0, 0),
        "{case:?}: requests failed with no fault"
    );
    for fault in [1, 2] {
        let ff = report.phases[fault].counts.failed_fast;
        assert_eq!(
            ff, 0,
            "{case:?}: {}: losing a healthy connection failed requests fast",
            FAULTS[fault]
        );
    }
    let dials = under.dials.count();
    if case.mode == Mode::FailFast {
        assert!(
            total.failed_fast >= 10 * dials,
            "{case:?}: {dials} attempts for {} requests failed fast",
            total.failed_fast
        );
    }
    let state = under.watch.state();
    let mut exposure = Exposure::default();
    for (fault, phase) in FAULTS.iter().zip(&report.phases).skip(1) {
        println!(
            "{case:?}: {fault}: {} failed in flight, {:?}",
            phase.counts.errored + phase.counts.handed_back,
            phase.exposure
        );
        check_errors(&case, fault, &phase.counts, &phase.exposure);
        exposure.merge(&phase.exposure);
    }
    check_errors(&case, "all faults", &total, &exposure);
    println!(
        "{case:?}: {} requests failed in flight, {} exposed to {} losses ({} in flight at a fault, {} sent before the client noticed; noticed within {:?})",
        total.errored + total.handed_back,
        exposure.bound(),
        state.disconnects(),
        exposure.in_flight,
        exposure.started,
        exposure.lag,
    );
    assert!(state.connects() <= book.accepts(), "{case:?}: {state:?}");
    assert!(book.accepts() <= dials, "{case:?}: {state:?}");
    if let Err(err) = under.dials.check_schedule(state.connects()) {
        panic!("{case:?}: {err}");
    }
    report.total = Report {
        counts: total,
        faults: report.phases[1..].iter().map(|p| p.times).sum(),
        dials,
        accepts: book.accepts(),
        connects: state.connects(),
        disconnects: state.disconnects(),
        recover: report
            .phases
            .iter()
            .map(|p| p.recover)
            .max()
            .unwrap_or_default(),
    };
    close_and_check(&case, under, server).await;
    report
}
