//! The plain `Reconnect` against the model, with `ready()` and response
//! futures cancelled at every await point.

use std::{sync::Arc, task::Poll};

use proptest::prelude::*;
use redial::{future::ResponseFuture, Reconnect};
use tokio::time::Instant;
use tokio_test::task::{self, Spawn};
use tower::{BoxError, Layer, Service, ServiceExt};

use crate::{
    check::{self, advance, same, Jump, Step},
    reference::{Answer, Cfg, DialKind, Model, Peek, Ready, MAKE_NOT_READY},
    support::{poll_ready, Conn, Make},
};

type Svc = Reconnect<Make, &'static str>;
type Response = ResponseFuture<<Conn as Service<u32>>::Future>;

#[derive(Clone, Debug)]
enum Op {
    /// What the next dial not yet scripted does.
    Script(DialKind),
    /// The make service's next `poll_ready` fails.
    FailMakeReady,
    Advance(Jump),
    /// One `poll_ready`.
    Poll,
    /// A `ready()` future, polled once, then once after each event, then
    /// dropped whether or not it finished.
    Ready(Vec<Between>),
    /// A call whose response future is awaited, dropped unpolled, or held.
    Call {
        n: u32,
        fate: Fate,
    },
    /// Polls a held response future to completion.
    Complete(usize),
    /// Drops a held response future.
    Abandon(usize),
    /// The newest connection breaks: its `poll_ready` fails.
    Kill,
    /// The newest connection's `poll_ready` pends, or not.
    Busy(bool),
    MarkDisconnected,
    ResetBackoff,
    /// Drops the service; the case ends.
    Drop,
}

/// What happens while a `ready()` future waits.
#[derive(Clone, Copy, Debug)]
enum Between {
    Advance(Jump),
    Kill,
    Unbusy,
}

#[derive(Clone, Copy, Debug)]
enum Fate {
    Await,
    Drop,
    Hold,
}

fn op() -> impl Strategy<Value = Op> {
    let between = prop_oneof![
        6 => check::jump().prop_map(Between::Advance),
        1 => Just(Between::Kill),
        1 => Just(Between::Unbusy),
    ];
    let fate = prop_oneof![
        3 => Just(Fate::Await),
        1 => Just(Fate::Drop),
        1 => Just(Fate::Hold),
    ];
    prop_oneof![
        4 => check::dial().prop_map(Op::Script),
        1 => Just(Op::FailMakeReady),
        6 => check::jump().prop_map(Op::Advance),
        6 => Just(Op::Poll),
        6 => prop::collection::vec(between, 0..5).prop_map(Op::Ready),
        4 => (prop_oneof![Just(0u32), 1..100u32], fate).prop_map(|(n, fate)| Op::Call { n, fate }),
        1 => any::<usize>().prop_map(Op::Complete),
        1 => any::<usize>().prop_map(Op::Abandon),
        2 => Just(Op::Kill),
        2 => prop::bool::weighted(0.6).prop_map(Op::Busy),
        1 => Just(Op::MarkDisconnected),
        1 => Just(Op::ResetBackoff),
        1 => Just(Op::Drop),
    ]
}

proptest! {
    #![proptest_config(check::config())]

    /// Every step of a random run of `Reconnect` (watch, dials, readiness, errors, wake-ups, held connections) matches the model, and a cancelled `ready()` or response never wedges it.
    #[test]
    fn reconnect_follows_the_model(cfg in check::cfg_jittered(), ops in prop::collection::vec(op(), 1..64)) {
        let result = check::runtime().block_on(run(cfg, ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

/// The state of one case.
struct Case {
    model: Model,
    make: Make,
    t0: Instant,
    held: Vec<(Response, Answer)>,
}

async fn run(cfg: Cfg, ops: Vec<Op>) -> Step {
    let make = Make::new();
    let mut svc: Svc = check::layer(&cfg).layer(make.clone());
    let watch = svc.watch();
    let t0 = Instant::now();
    let peek = {
        let watch = watch.clone();
        Peek(Arc::new(move || {
            let state = watch.state();
            (
                state.attempt(),
                state.retry_at().map(|at| check::nanos(at - t0)),
            )
        }))
    };
    let mut case = Case {
        model: Model::new(cfg).with_peek(peek),
        make,
        t0,
        held: Vec::new(),
    };
    for (i, op) in ops.iter().enumerate() {
        if let Op::Drop = op {
            break;
        }
        case.step(&mut svc, op)
            .await
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
        check::state(&case.model, &watch, &case.make, case.t0)
            .map_err(|e| format!("after step {i} ({op:?}): {e}"))?;
    }
    case.recover(&mut svc)
        .await
        .map_err(|e| format!("recovering: {e}"))?;

    drop(svc);
    case.model.drop_service();
    check::state(&case.model, &watch, &case.make, case.t0).map_err(|e| format!("dropped: {e}"))?;
    let mut connected = task::spawn(watch.connected());
    match connected.poll() {
        Poll::Ready(Err(_)) => {}
        other => return Err(format!("connected() after drop: {other:?}")),
    }
    // Held responses still resolve after the service is gone.
    for (fut, want) in case.held.drain(..) {
        let got = task::spawn(fut).poll();
        let Poll::Ready(got) = got else {
            return Err("a held response pends".into());
        };
        check::answer(got, want, case.t0, case.model.cfg.timeout)?;
    }
    Ok(())
}

impl Case {
    async fn step(&mut self, svc: &mut Svc, op: &Op) -> Step {
        let timeout = self.model.cfg.timeout;
        match *op {
            Op::Script(kind) => {
                self.make.push([kind.to_dial()]);
                self.model.push_dial(kind);
            }
            Op::FailMakeReady => {
                self.make.fail_ready_once(MAKE_NOT_READY);
                self.model.fail_make_ready();
            }
            Op::Advance(jump) => {
                if let Some(by) = jump.ms(&self.model) {
                    advance(&mut self.model, by).await;
                }
            }
            Op::Poll => {
                let got = poll_ready(svc);
                check::ready(got, self.model.poll(), timeout)?;
            }
            Op::Ready(ref between) => self.ready(svc, between).await?,
            Op::Call { n, fate } => {
                let fut = svc.call(n);
                let want = self.model.call(n);
                match fate {
                    Fate::Await => self.complete(fut, want)?,
                    Fate::Drop => drop(fut),
                    Fate::Hold => self.held.push((fut, want)),
                }
            }
            Op::Complete(i) => {
                if !self.held.is_empty() {
                    let (fut, want) = self.held.remove(i % self.held.len());
                    self.complete(fut, want)?;
                }
            }
            Op::Abandon(i) => {
                if !self.held.is_empty() {
                    drop(self.held.remove(i % self.held.len()));
                }
            }
            Op::Kill => {
                if self.model.kill_newest() {
                    self.make.conn().kill();
                }
            }
            Op::Busy(busy) => {
                if self.model.set_busy_newest(busy) {
                    self.make.conn().set_busy(busy);
                }
            }
            Op::MarkDisconnected => {
                svc.mark_disconnected();
                self.model.mark_disconnected();
            }
            Op::ResetBackoff => {
                svc.reset_backoff();
                self.model.reset_backoff();
            }
            Op::Drop => unreachable!("the run ends at a drop"),
        }
        Ok(())
    }

    /// Polls a response future, which resolves at once, and tells the model
    /// its caller saw the answer.
    fn complete(&mut self, fut: Response, want: Answer) -> Step {
        let Poll::Ready(got) = task::spawn(fut).poll() else {
            return Err("a response pends".into());
        };
        check::answer(got, want, self.t0, self.model.cfg.timeout)?;
        self.model.responded(want);
        Ok(())
    }

    /// A `ready()` future polled between events and dropped. Checks the
    /// wake-ups too: every one the model expects comes (no lost wake-up),
    /// and the clock wakes it at nothing but the retry time, the deadline or
    /// the dial's end (no busy loop).
    async fn ready(&mut self, svc: &mut Svc, between: &[Between]) -> Step {
        let mut fut = task::spawn(ServiceExt::<u32>::ready(svc));
        let mut pending = self.ready_poll(&mut fut)?;
        for (i, event) in between.iter().enumerate() {
            if !pending {
                break;
            }
            let (wake_at, waits_on) = (self.model.wake_at(), self.model.waits_on_conn());
            let newest = self.model.conns.len().checked_sub(1);
            match *event {
                Between::Advance(jump) => {
                    let Some(by) = jump.ms(&self.model) else {
                        continue;
                    };
                    advance(&mut self.model, by).await;
                    let due = wake_at.is_some_and(|t| t <= self.model.now);
                    same!(
                        format!("woken by the clock at +{by} ms (wait {i})"),
                        fut.is_woken(),
                        due
                    );
                }
                Between::Kill | Between::Unbusy => {
                    if newest.is_none() {
                        continue;
                    }
                    if let Between::Kill = event {
                        self.model.kill_newest();
                        self.make.conn().kill();
                    } else {
                        self.model.set_busy_newest(false);
                        self.make.conn().set_busy(false);
                    }
                    if waits_on.is_some() && waits_on == newest && !fut.is_woken() {
                        return Err(format!("the connection did not wake the caller (wait {i})"));
                    }
                }
            }
            pending = self
                .ready_poll(&mut fut)
                .map_err(|e| format!("wait {i} ({event:?}): {e}"))?;
        }
        Ok(())
    }

    /// Polls a `ready()` future as an executor would: again at once if it
    /// woke itself while pending (re-arming a timer whose time has come
    /// does that), after which it must rest: a wake-up is never a loop.
    /// `true` if it pends.
    fn ready_poll<F, S>(&mut self, fut: &mut Spawn<F>) -> Result<bool, String>
    where
        F: std::future::Future<Output = Result<S, BoxError>>,
    {
        let timeout = self.model.cfg.timeout;
        let got = fut.poll().map_ok(drop);
        let pending = got.is_pending();
        check::ready(got, self.model.poll(), timeout)?;
        if pending && fut.is_woken() {
            let again = fut.poll().map_ok(drop);
            check::ready(again, self.model.poll(), timeout)
                .map_err(|e| format!("re-polled: {e}"))?;
            if fut.is_woken() {
                return Err("woken again by its own poll: a busy loop".into());
            }
        }
        Ok(pending)
    }

    /// Drives a fresh `ready()` to the end the model predicts, advancing to
    /// each event: the service is never wedged. A connected service then
    /// serves a request.
    async fn recover(&mut self, svc: &mut Svc) -> Step {
        let timeout = self.model.cfg.timeout;
        if self.model.set_busy_newest(false) {
            self.make.conn().set_busy(false);
        }
        for _ in 0..500 {
            let mut fut = task::spawn(ServiceExt::<u32>::ready(&mut *svc));
            // The service first: the model may read its watch.
            let got = fut.poll().map_ok(drop);
            let want = self.model.poll();
            check::ready(got, want, timeout)?;
            drop(fut);
            check::state(&self.model, &svc.watch(), &self.make, self.t0)?;
            if matches!(want, Ready::GaveUp { .. }) {
                return Ok(());
            }
            if want == Ready::Ok && self.model.is_connected() {
                let fut = svc.call(7);
                let want = self.model.call(7);
                same!("a request after recovering", want, Answer::Ok(8));
                return self.complete(fut, want);
            }
            let by = match self.model.next_event() {
                Some(t) => t - self.model.now,
                None => return Err(format!("nothing due, and {want:?}")),
            };
            advance(&mut self.model, by).await;
        }
        Err("no connection after 500 events".into())
    }
}
