//! The model of the shared handle around the service's: the worker task,
//! which polls the `Reconnect` whenever something is due and serves the
//! queue in order; the bounded queue, whose slots go to waiting clones
//! first come, first served; and the requests callers abandon.

use std::collections::{HashMap, VecDeque};

use crate::reference::{Answer, Cfg, Last, Model, Ready};

/// Why the handle is closed: `None` by a handle, or the `GaveUp`.
pub type Reason = Option<Last>;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Slot {
    /// Holds no slot and waits for none.
    Idle,
    /// Queued for a slot (its `poll_ready` pended).
    Waiting,
    /// Given a slot while waiting, not yet polled again.
    Assigned,
    /// `poll_ready` said `Ready(Ok)`: the next call sends.
    Reserved,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Answer(Answer),
    Closed(Reason),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Req {
    Queued(u32),
    /// Dropped by its caller before the worker took it.
    Cancelled,
    Done(Outcome),
}

/// What `poll_ready` on a clone answers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reserve {
    Ready,
    Pending,
    Closed(Reason),
}

/// The worker, the queue and the clones' slots.
pub struct Worker {
    /// The service the worker owns.
    pub m: Model,
    /// Whether the worker drives the service (an eager one from the start).
    pub started: bool,
    /// Set by `close()` at once, or by the worker when it gives up.
    pub reason: Option<Reason>,
    /// The worker task has ended.
    ended: bool,
    /// Requests sent and not yet taken by the worker.
    channel: VecDeque<usize>,
    /// The request the lazy worker took to start with.
    current: Option<usize>,
    free: usize,
    waiters: VecDeque<usize>,
    clones: HashMap<usize, Slot>,
    /// Clones told (by a slot or the close) to poll again.
    pub woken: Vec<usize>,
    /// Every request whose caller still holds its response future, and the
    /// abandoned ones still in the queue.
    pub reqs: HashMap<usize, Req>,
}

impl Worker {
    pub fn new(cfg: Cfg, eager: bool, bound: usize) -> Self {
        Self {
            m: Model::new(cfg),
            started: eager,
            reason: None,
            ended: false,
            channel: VecDeque::new(),
            current: None,
            free: bound,
            waiters: VecDeque::new(),
            clones: HashMap::new(),
            woken: Vec::new(),
            reqs: HashMap::new(),
        }
    }

    /// A slot comes back: to the first waiter, or to the pool.
    fn release(&mut self) {
        match self.waiters.pop_front() {
            Some(id) => {
                self.clones.insert(id, Slot::Assigned);
                self.woken.push(id);
            }
            None => self.free += 1,
        }
    }

    pub fn poll_clone(&mut self, id: usize) -> Reserve {
        if let Some(reason) = self.reason {
            return Reserve::Closed(reason);
        }
        let slot = self.clones.entry(id).or_insert(Slot::Idle);
        match *slot {
            Slot::Reserved | Slot::Assigned => {
                *slot = Slot::Reserved;
                Reserve::Ready
            }
            Slot::Waiting => Reserve::Pending,
            Slot::Idle if self.free > 0 => {
                self.free -= 1;
                *slot = Slot::Reserved;
                Reserve::Ready
            }
            Slot::Idle => {
                *slot = Slot::Waiting;
                self.waiters.push_back(id);
                Reserve::Pending
            }
        }
    }

    /// Clone `id` calls with request `req`: queued if it held a slot and
    /// the handle is open, else failed at once.
    pub fn call_clone(&mut self, id: usize, req: usize, n: u32) {
        let slot = self.clones.entry(id).or_insert(Slot::Idle);
        let state = match (*slot, self.reason) {
            (Slot::Reserved, None) => {
                self.channel.push_back(req);
                Req::Queued(n)
            }
            (Slot::Reserved, Some(reason)) => Req::Done(Outcome::Closed(reason)),
            _ => Req::Done(Outcome::Answer(Answer::NotReady)),
        };
        if *slot == Slot::Reserved {
            *slot = Slot::Idle;
        }
        self.reqs.insert(req, state);
    }

    pub fn drop_clone(&mut self, id: usize) {
        match self.clones.remove(&id) {
            Some(Slot::Waiting) => self.waiters.retain(|w| *w != id),
            Some(Slot::Assigned | Slot::Reserved) if self.reason.is_none() => self.release(),
            _ => {}
        }
    }

    pub fn drop_request(&mut self, req: usize) {
        if let Some(Req::Queued(_)) = self.reqs.get(&req) {
            self.reqs.insert(req, Req::Cancelled);
        } else {
            self.reqs.remove(&req);
        }
    }

    /// The handle closes (the worker notices when it runs); the first
    /// reason stays.
    pub fn close(&mut self, reason: Reason) {
        self.reason.get_or_insert(reason);
    }

    /// What the worker does when it runs.
    pub fn step(&mut self) {
        if self.ended {
            return;
        }
        if let Some(reason) = self.reason {
            return self.end(reason);
        }
        if !self.started {
            let Some(req) = self.channel.pop_front() else {
                return;
            };
            self.release();
            self.current = Some(req);
            self.started = true;
        }
        loop {
            match self.m.poll() {
                Ready::Ok => {}
                Ready::Pending => return,
                Ready::GaveUp { attempts, cause } => {
                    self.close(Some(Last::GaveUp { attempts, cause }));
                    return self.end(self.reason.expect("just closed"));
                }
            }
            let req = match self.current.take() {
                Some(req) => req,
                None => match self.channel.pop_front() {
                    Some(req) => {
                        self.release();
                        req
                    }
                    None => return,
                },
            };
            match self.reqs[&req] {
                Req::Cancelled => {
                    self.reqs.remove(&req);
                }
                Req::Queued(n) => {
                    let answer = self.m.call(n);
                    self.reqs.insert(req, Req::Done(Outcome::Answer(answer)));
                }
                Req::Done(_) => unreachable!("a request is taken once"),
            }
        }
    }

    /// The worker closes: queued requests fail, waiters are woken, the
    /// connection goes.
    fn end(&mut self, reason: Reason) {
        self.ended = true;
        for req in self
            .current
            .take()
            .into_iter()
            .chain(self.channel.drain(..))
        {
            match self.reqs[&req] {
                Req::Queued(_) => {
                    self.reqs.insert(req, Req::Done(Outcome::Closed(reason)));
                }
                _ => {
                    self.reqs.remove(&req);
                }
            }
        }
        self.woken.extend(self.waiters.drain(..));
        self.m.drop_service();
    }
}
