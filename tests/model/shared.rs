//! The shared handle against the model. Its worker drives the `Reconnect`
//! whenever something is due, so after every step (and a settle) the model
//! polls once and serves the queue; the bounded queue, the slots clones
//! reserve and the requests callers abandon are modelled too.

use std::task::Poll;

use proptest::prelude::*;
use redial::{
    future::ResponseFuture,
    shared::{self, Shared},
};
use tokio::time::Instant;
use tokio_test::task::{self, Spawn};
use tower::{BoxError, Layer, Service};

use crate::{
    check::{self, same, Jump, Step},
    reference::{Answer, Cfg, DialKind, MAKE_NOT_READY},
    support::{Conn, Make},
    worker::{Outcome, Req, Reserve, Worker},
};

type Response = ResponseFuture<<Conn as Service<u32>>::Future>;
type Handle = Shared<u32, Response>;

#[derive(Clone, Debug)]
enum Op {
    Script(DialKind),
    FailMakeReady,
    Advance(Jump),
    Kill,
    Busy(bool),
    ResetBackoff,
    /// A fresh clone asks for a slot and, given one, sends a request at
    /// once; otherwise it gives up waiting (its `ready()` is cancelled).
    Request(u32),
    /// A fresh clone polls `poll_ready` once and joins the pool.
    Reserve,
    /// Polls a pooled clone's `poll_ready` again.
    PollClone(usize),
    /// A pooled clone calls, whether or not it holds a slot.
    CallClone(usize, u32),
    /// Drops a pooled clone: a waiting `ready()` cancelled, or a reserved
    /// slot given back.
    DropClone(usize),
    /// Polls a response future once.
    PollRequest(usize),
    /// Drops a response future, wherever its request is.
    DropRequest(usize),
    /// `close()` on the handle; the case goes on against a closed handle.
    Close,
    /// Drops every handle; the case ends.
    DropHandles,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => check::dial().prop_map(Op::Script),
        1 => Just(Op::FailMakeReady),
        6 => check::jump().prop_map(Op::Advance),
        2 => Just(Op::Kill),
        3 => prop::bool::weighted(0.6).prop_map(Op::Busy),
        1 => Just(Op::ResetBackoff),
        8 => prop_oneof![1 => Just(0u32), 4 => 1..100u32].prop_map(Op::Request),
        2 => Just(Op::Reserve),
        2 => any::<usize>().prop_map(Op::PollClone),
        2 => (any::<usize>(), 0..100u32).prop_map(|(i, n)| Op::CallClone(i, n)),
        2 => any::<usize>().prop_map(Op::DropClone),
        5 => any::<usize>().prop_map(Op::PollRequest),
        3 => any::<usize>().prop_map(Op::DropRequest),
        1 => Just(Op::Close),
        1 => Just(Op::DropHandles),
    ]
}

/// How the handle is made and how the case ends.
#[derive(Clone, Debug)]
struct Setup {
    cfg: Cfg,
    eager: bool,
    bound: usize,
    /// End by dropping every handle rather than by `close()`.
    drop_at_end: bool,
}

fn setup() -> impl Strategy<Value = Setup> {
    (check::cfg(), any::<bool>(), 1..=3usize, any::<bool>()).prop_map(
        |(cfg, eager, bound, drop_at_end)| Setup {
            cfg,
            eager,
            bound,
            drop_at_end,
        },
    )
}

proptest! {
    #![proptest_config(check::config())]

    /// Every step of a random run of a shared handle (watch, dials, queue slots, answers, wake-ups) matches the model: cancelled requests never reach the connection, later ones are served, and close or drop ends the worker.
    #[test]
    fn shared_follows_the_model(setup in setup(), ops in prop::collection::vec(op(), 1..64)) {
        let result = check::runtime().block_on(run(setup, ops));
        prop_assert!(result.is_ok(), "{}", result.unwrap_err());
    }
}

// ===== the run =====

struct Pooled {
    id: usize,
    handle: Handle,
    /// The task whose waker its `poll_ready` registers.
    task: Spawn<()>,
}

struct Request {
    id: usize,
    fut: Spawn<shared::ResponseFuture<u32, Response>>,
    /// Polled and pending: it must be woken when it has an outcome.
    waiting: bool,
}

struct Case {
    w: Worker,
    make: Make,
    t0: Instant,
    shared: Option<Handle>,
    pool: Vec<Pooled>,
    reqs: Vec<Request>,
    next_id: usize,
}

async fn run(setup: Setup, ops: Vec<Op>) -> Step {
    let make = Make::new();
    let reconnect = check::layer(&setup.cfg).layer(make.clone());
    let shared: Handle = match setup.eager {
        true => reconnect.spawn(setup.bound),
        false => reconnect.spawn_lazy(setup.bound),
    };
    let watch = shared.watch();
    let mut case = Case {
        w: Worker::new(setup.cfg.clone(), setup.eager, setup.bound),
        make,
        t0: Instant::now(),
        shared: Some(shared),
        pool: Vec::new(),
        reqs: Vec::new(),
        next_id: 0,
    };
    case.settle().await;
    case.check(&watch)
        .map_err(|e| format!("at the start: {e}"))?;
    for (i, op) in ops.iter().enumerate() {
        if let Op::DropHandles = op {
            break;
        }
        case.step(op)
            .await
            .map_err(|e| format!("step {i} ({op:?}): {e}"))?;
        case.settle().await;
        case.check(&watch)
            .map_err(|e| format!("after step {i} ({op:?}): {e}"))?;
    }
    case.recover(&watch)
        .await
        .map_err(|e| format!("recovering: {e}"))?;

    // The end: close or drop, then nothing is left.
    case.poll_all()?;
    let shared = case.shared.take().expect("the handle");
    if setup.drop_at_end {
        drop(shared);
    } else {
        shared.close();
        case.shared = Some(shared);
    }
    case.w.close(None);
    case.settle().await;
    case.check(&watch).map_err(|e| format!("closed: {e}"))?;
    let alive = tokio::runtime::Handle::current()
        .metrics()
        .num_alive_tasks();
    same!("tasks alive after closing", alive, 0);
    if let Some(shared) = &case.shared {
        let mut late = shared.clone();
        let got = crate::support::poll_ready(&mut late);
        let Poll::Ready(Err(err)) = got else {
            return Err(format!("poll_ready after close: {got:?}"));
        };
        check::closed(&err, case.w.reason.flatten(), case.w.m.cfg.timeout)?;
    }
    case.poll_all()?;
    match case.reqs.is_empty() {
        true => Ok(()),
        false => Err("a response pends after close".into()),
    }
}

impl Case {
    /// Lets the worker run, then the model's worker.
    async fn settle(&mut self) {
        for _ in 0..8 {
            tokio::task::yield_now().await;
        }
        self.w.step();
    }

    fn id(&mut self) -> usize {
        self.next_id += 1;
        self.next_id
    }

    async fn step(&mut self, op: &Op) -> Step {
        match *op {
            Op::Script(kind) => {
                self.make.push([kind.to_dial()]);
                self.w.m.push_dial(kind);
            }
            Op::FailMakeReady => {
                self.make.fail_ready_once(MAKE_NOT_READY);
                self.w.m.fail_make_ready();
            }
            Op::Advance(jump) => {
                // The model's clock runs whether or not its worker does.
                if let Some(by) = jump.ms(&self.w.m) {
                    check::advance(&mut self.w.m, by).await;
                }
            }
            Op::Kill => {
                if self.w.m.kill_newest() {
                    self.make.conn().kill();
                }
            }
            Op::Busy(busy) => {
                if self.w.m.set_busy_newest(busy) {
                    self.make.conn().set_busy(busy);
                }
            }
            Op::ResetBackoff => {
                self.shared().reset_backoff();
                if self.w.reason.is_none() {
                    self.w.m.reset_backoff();
                }
            }
            Op::Request(n) => self.request(n)?,
            Op::Reserve => {
                let id = self.id();
                let handle = self.shared().clone();
                self.pool.push(Pooled {
                    id,
                    handle,
                    task: task::spawn(()),
                });
                self.poll_clone(self.pool.len() - 1)?;
            }
            Op::PollClone(i) => {
                if !self.pool.is_empty() {
                    self.poll_clone(i % self.pool.len())?;
                }
            }
            Op::CallClone(i, n) => {
                if !self.pool.is_empty() {
                    let i = i % self.pool.len();
                    let fut = self.pool[i].handle.call(n);
                    self.sent(self.pool[i].id, fut, n);
                }
            }
            Op::DropClone(i) => {
                if !self.pool.is_empty() {
                    let pooled = self.pool.remove(i % self.pool.len());
                    drop(pooled.handle);
                    self.w.drop_clone(pooled.id);
                }
            }
            Op::PollRequest(i) => {
                if !self.reqs.is_empty() {
                    self.poll_request(i % self.reqs.len())?;
                }
            }
            Op::DropRequest(i) => {
                if !self.reqs.is_empty() {
                    let req = self.reqs.remove(i % self.reqs.len());
                    drop(req.fut);
                    self.w.drop_request(req.id);
                }
            }
            Op::Close => {
                self.shared().close();
                self.w.close(None);
            }
            Op::DropHandles => unreachable!("the run ends at a drop"),
        }
        Ok(())
    }

    fn shared(&self) -> &Handle {
        self.shared.as_ref().expect("the handle")
    }

    /// A fresh clone: a request if it gets a slot at once, else dropped.
    fn request(&mut self, n: u32) -> Step {
        let id = self.id();
        let mut handle = self.shared().clone();
        let got = crate::support::poll_ready(&mut handle);
        let want = self.w.poll_clone(id);
        reserve(got, want, self.w.m.cfg.timeout)?;
        if want == Reserve::Ready {
            let fut = handle.call(n);
            self.sent(id, fut, n);
        }
        drop(handle);
        self.w.drop_clone(id);
        Ok(())
    }

    fn poll_clone(&mut self, i: usize) -> Step {
        let Pooled { id, handle, task } = &mut self.pool[i];
        let got = task.enter(|cx, _| handle.poll_ready(cx));
        let want = self.w.poll_clone(*id);
        reserve(got, want, self.w.m.cfg.timeout)
    }

    /// Records the response future of a call by clone `clone`.
    fn sent(&mut self, clone: usize, fut: shared::ResponseFuture<u32, Response>, n: u32) {
        let id = self.id();
        self.w.call_clone(clone, id, n);
        self.reqs.push(Request {
            id,
            fut: task::spawn(fut),
            waiting: false,
        });
    }

    /// Polls every response future once.
    fn poll_all(&mut self) -> Step {
        for i in (0..self.reqs.len()).rev() {
            self.poll_request(i)?;
        }
        Ok(())
    }

    /// Polls response future `i` once: pending while its request is
    /// queued, else its outcome.
    fn poll_request(&mut self, i: usize) -> Step {
        let timeout = self.w.m.cfg.timeout;
        let req = &mut self.reqs[i];
        let got = req.fut.poll();
        let want = self.w.reqs[&req.id];
        match (got, want) {
            (Poll::Pending, Req::Queued(_)) => {
                req.waiting = true;
                return Ok(());
            }
            (Poll::Ready(got), Req::Done(Outcome::Answer(want))) => {
                check::answer(got, want, self.t0, timeout)?;
                // A fatal error wakes the worker, which drops the connection.
                self.w.m.responded(want);
            }
            (Poll::Ready(Err(err)), Req::Done(Outcome::Closed(reason))) => {
                check::closed(&err, reason, timeout)?;
            }
            (got, want) => return Err(format!("response: got {got:?}, model says {want:?}")),
        }
        let req = self.reqs.remove(i);
        self.w.reqs.remove(&req.id);
        Ok(())
    }

    /// The service's state, the slots and the wake-ups match the model.
    fn check(&mut self, watch: &redial::ConnectionWatch) -> Step {
        check::state(&self.w.m, watch, &self.make, self.t0)?;
        if let Some(shared) = &self.shared {
            same!("handle closed", shared.is_closed(), self.w.reason.is_some());
        }
        for id in std::mem::take(&mut self.w.woken) {
            if let Some(pooled) = self.pool.iter().find(|p| p.id == id) {
                if !pooled.task.is_woken() {
                    return Err(format!("waiting clone {id} was not woken"));
                }
            }
        }
        for req in &self.reqs {
            if req.waiting && !matches!(self.w.reqs[&req.id], Req::Queued(_)) && !req.fut.is_woken()
            {
                return Err(format!("request {} was answered but not woken", req.id));
            }
        }
        Ok(())
    }

    /// Frees every slot and drives the clock until the model connects (or
    /// gives up); a request then gets its answer: the handle still serves.
    async fn recover(&mut self, watch: &redial::ConnectionWatch) -> Step {
        for pooled in std::mem::take(&mut self.pool) {
            self.w.drop_clone(pooled.id);
        }
        if self.w.m.set_busy_newest(false) {
            self.make.conn().set_busy(false);
        }
        self.settle().await;
        if !self.w.started && self.w.reason.is_none() {
            self.request(1)?;
            self.settle().await;
        }
        self.check(watch)?;
        for _ in 0..500 {
            if self.w.reason.is_some() {
                return Ok(());
            }
            if self.w.m.is_connected() {
                self.request(7)?;
                self.settle().await;
                self.check(watch)?;
                let last = self.reqs.len() - 1;
                let id = self.reqs[last].id;
                same!(
                    "a request after recovering",
                    self.w.reqs[&id],
                    Req::Done(Outcome::Answer(Answer::Ok(8)))
                );
                return self.poll_request(last);
            }
            let Some(at) = self.w.m.next_event() else {
                return Err("not connected, and nothing due".into());
            };
            let by = at - self.w.m.now;
            check::advance(&mut self.w.m, by).await;
            self.settle().await;
            self.check(watch)?;
        }
        Err("no connection after 500 events".into())
    }
}

fn reserve(got: Poll<Result<(), BoxError>>, want: Reserve, timeout: u64) -> Step {
    match (got, want) {
        (Poll::Ready(Ok(())), Reserve::Ready) | (Poll::Pending, Reserve::Pending) => Ok(()),
        (Poll::Ready(Err(err)), Reserve::Closed(reason)) => check::closed(&err, reason, timeout),
        (got, want) => Err(format!("poll_ready: got {got:?}, model says {want:?}")),
    }
}
