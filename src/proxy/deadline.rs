//! Coarse, per-worker deadlines. A `tokio::time::timeout` per request costs a timer-wheel
//! registration, a clock read and a driver lock; a proxy worker (one current-thread runtime
//! and `LocalSet`) instead shares one [`Timers`]: a single ticker task wakes every
//! [`TICK`] while anything is waiting, and a guarded future costs nothing unless it is
//! pending, then one slot in a slab (no allocation in steady state). Deadlines are coarse:
//! never early, at most about two ticks late.

use pin_project_lite::pin_project;
use std::cell::{Cell, RefCell};
use std::fmt;
use std::future::{poll_fn, Future};
use std::mem;
use std::pin::{pin, Pin};
use std::rc::Rc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::time::{Instant, Sleep};
use tokio_util::sync::CancellationToken;

/// Granularity of the coarse clock.
pub const TICK: Duration = Duration::from_millis(100);

const TICK_NANOS: u128 = TICK.as_nanos();

/// Why a guarded future ended early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expired {
    /// Its deadline passed.
    Deadline,
    /// The worker is shutting down (only [`Timers::idle`] futures end this way).
    Shutdown,
}

impl fmt::Display for Expired {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Expired::Deadline => "deadline passed",
            Expired::Shutdown => "shutting down",
        })
    }
}

impl std::error::Error for Expired {}

/// One registered (pending) guarded future.
struct Entry {
    /// The task to wake when the entry expires; taken when it does.
    waker: Option<Waker>,
    /// The requested duration, turned into `deadline` by the ticker's next pass.
    after: Duration,
    /// Expiry in coarse ticks since `Timers::origin`; `None` until the ticker has seen it.
    deadline: Option<u64>,
    /// Registered by [`Timers::idle`]: ends on shutdown too.
    idle: bool,
    /// Set (and the task woken) by the ticker; the next poll returns it as the error.
    expired: Option<Expired>,
}

enum Slot {
    Free { next: Option<usize> },
    Taken(Entry),
}

/// The deadlines of one worker thread: a coarse clock and a slab of waiting futures,
/// driven by [`Timers::run`]. Single-threaded (`Rc`, `Cell`, `RefCell`); no locks, no atomics.
pub struct Timers {
    origin: Instant,
    /// Whole ticks from `origin` to the ticker's last pass.
    clock: Cell<u64>,
    slab: RefCell<Vec<Slot>>,
    /// Head of the free list threaded through `Slot::Free`.
    free: Cell<Option<usize>>,
    /// Registered entries the ticker still has to watch (taken, not yet expired).
    waiting: Cell<usize>,
    shutting_down: Cell<bool>,
    /// The ticker has returned (or was dropped): nothing enforces deadlines any more.
    stopped: Cell<bool>,
    /// The ticker sleeps without a timer until a registration wakes `ticker`.
    parked: Cell<bool>,
    ticker: Cell<Option<Waker>>,
    /// The ticker's reusable buffer of wakers to wake once the slab is no longer borrowed.
    to_wake: Cell<Vec<Waker>>,
}

impl Timers {
    /// Timers whose clock starts now. Spawn [`Timers::run`] once to drive them.
    #[must_use]
    pub fn new() -> Rc<Timers> {
        Rc::new(Timers {
            origin: Instant::now(),
            clock: Cell::new(0),
            slab: RefCell::new(Vec::new()),
            free: Cell::new(None),
            waiting: Cell::new(0),
            shutting_down: Cell::new(false),
            stopped: Cell::new(false),
            parked: Cell::new(false),
            ticker: Cell::new(None),
            to_wake: Cell::new(Vec::new()),
        })
    }

    /// The ticker: run it once per worker with `tokio::task::spawn_local(timers.clone().run(shutdown))`.
    ///
    /// While any guarded future is registered it wakes every [`TICK`] (on the tick grid),
    /// advances the coarse clock from `tokio::time::Instant::now()` and wakes the futures
    /// whose deadline passed. With nothing registered it parks on a stored `Waker`, with no
    /// timer, so an idle worker does not wake up at all; the next registration wakes it.
    ///
    /// When `shutdown` is cancelled it marks the timers as shutting down and ends every
    /// registered [`idle`](Timers::idle) future with [`Expired::Shutdown`], keeps ticking
    /// for the [`timeout`](Timers::timeout) futures until none is left waiting, then
    /// returns. Deadlines are enforced only while this runs: a future first polled pending
    /// after it has returned is not bounded (the server's shutdown grace period is).
    pub async fn run(self: Rc<Self>, shutdown: CancellationToken) {
        let _stopped = StopOnDrop(&self);
        let mut cancelled = pin!(shutdown.cancelled());
        // Armed (reset to the next tick) only while something is waiting.
        let mut sleep = pin!(tokio::time::sleep_until(self.origin));
        let mut armed = false;
        poll_fn(|cx| self.poll_ticker(cx, cancelled.as_mut(), sleep.as_mut(), &mut armed)).await;
    }

    /// `fut`, or `Err(Expired::Deadline)` once `after` has passed since its first pending
    /// poll: never earlier than `after`, at most about `2 * TICK` later. Shutdown does not
    /// end it. The inner future is polled first, so a ready output is never discarded.
    pub fn timeout<F: Future>(self: &Rc<Self>, after: Duration, fut: F) -> Guarded<F> {
        self.guard(after, false, fut)
    }

    /// Like [`timeout`](Timers::timeout), but also ends with `Err(Expired::Shutdown)` as
    /// soon as shutdown starts (at its first pending poll if it already has). For waits on
    /// idle keep-alive connections.
    pub fn idle<F: Future>(self: &Rc<Self>, after: Duration, fut: F) -> Guarded<F> {
        self.guard(after, true, fut)
    }

    /// Whether the ticker has seen the shutdown token cancelled.
    pub fn shutting_down(&self) -> bool {
        self.shutting_down.get()
    }

    fn guard<F: Future>(self: &Rc<Self>, after: Duration, idle: bool, fut: F) -> Guarded<F> {
        Guarded {
            fut,
            timers: Rc::clone(self),
            after,
            idle,
            slot: None,
        }
    }

    fn poll_ticker(
        &self,
        cx: &mut Context<'_>,
        mut cancelled: Pin<&mut impl Future<Output = ()>>,
        mut sleep: Pin<&mut Sleep>,
        armed: &mut bool,
    ) -> Poll<()> {
        loop {
            if !self.shutting_down.get() && cancelled.as_mut().poll(cx).is_ready() {
                self.begin_shutdown();
            }
            if self.waiting.get() == 0 {
                if self.shutting_down.get() {
                    return Poll::Ready(());
                }
                self.park(cx.waker());
                *armed = false;
                return Poll::Pending;
            }
            if *armed {
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                *armed = false;
            }
            // First pass after a registration unparked us, or the tick's sleep elapsed.
            let now = Instant::now();
            self.tick(now);
            let next = tick_start(self.clock.get().saturating_add(1));
            sleep
                .as_mut()
                .reset(self.origin.checked_add(next).unwrap_or(now + TICK));
            *armed = true;
        }
    }

    fn park(&self, waker: &Waker) {
        match self.ticker.take() {
            Some(stored) if stored.will_wake(waker) => self.ticker.set(Some(stored)),
            _ => self.ticker.set(Some(waker.clone())),
        }
        self.parked.set(true);
    }

    /// One pass: advance the clock, schedule new entries, wake the expired ones.
    fn tick(&self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.origin);
        let clock = ticks_floor(elapsed.as_nanos());
        self.clock.set(clock);
        let mut to_wake = self.to_wake.take();
        {
            let mut slab = self.slab.borrow_mut();
            for slot in slab.iter_mut() {
                let Slot::Taken(entry) = slot else { continue };
                if entry.expired.is_some() {
                    continue;
                }
                // An entry registered since the last pass was registered at or before
                // `now`; counting `after` from `now` makes it never early, whatever the
                // (possibly stale) coarse clock said when it registered.
                let deadline = *entry.deadline.get_or_insert_with(|| {
                    ticks_ceil(elapsed.as_nanos().saturating_add(entry.after.as_nanos()))
                });
                if deadline <= clock {
                    entry.expired = Some(Expired::Deadline);
                    self.waiting.set(self.waiting.get() - 1);
                    to_wake.extend(entry.waker.take());
                }
            }
        }
        self.wake_all(to_wake);
    }

    fn begin_shutdown(&self) {
        self.shutting_down.set(true);
        let mut to_wake = self.to_wake.take();
        {
            let mut slab = self.slab.borrow_mut();
            for slot in slab.iter_mut() {
                if let Slot::Taken(entry) = slot {
                    if entry.idle && entry.expired.is_none() {
                        entry.expired = Some(Expired::Shutdown);
                        self.waiting.set(self.waiting.get() - 1);
                        to_wake.extend(entry.waker.take());
                    }
                }
            }
        }
        self.wake_all(to_wake);
    }

    /// Wakes (and so drops) every waker in `to_wake` with no borrow held, then puts the
    /// emptied buffer back for reuse.
    fn wake_all(&self, mut to_wake: Vec<Waker>) {
        for waker in to_wake.drain(..) {
            waker.wake();
        }
        self.to_wake.set(to_wake);
    }

    /// Registers a pending guarded future; returns its slot.
    fn register(&self, after: Duration, idle: bool, waker: &Waker) -> usize {
        let entry = Slot::Taken(Entry {
            waker: Some(waker.clone()),
            after,
            deadline: None,
            idle,
            expired: None,
        });
        let index = {
            let mut slab = self.slab.borrow_mut();
            let reuse = self.free.get().and_then(|i| match slab.get(i) {
                Some(Slot::Free { next }) => Some((i, *next)),
                _ => None,
            });
            if let Some((i, next)) = reuse {
                self.free.set(next);
                slab[i] = entry;
                i
            } else {
                slab.push(entry);
                slab.len() - 1
            }
        };
        self.waiting.set(self.waiting.get() + 1);
        if self.parked.replace(false) {
            if let Some(ticker) = self.ticker.take() {
                ticker.wake_by_ref();
                self.ticker.set(Some(ticker));
            }
        }
        index
    }

    /// A later pending poll: why the entry expired, if it did; otherwise keeps its waker
    /// current (cloning only when the task's waker changed).
    fn poll_slot(&self, index: usize, waker: &Waker) -> Option<Expired> {
        {
            let slab = self.slab.borrow();
            match slab.get(index) {
                Some(Slot::Taken(entry)) => {
                    if entry.expired.is_some() {
                        return entry.expired;
                    }
                    if entry.waker.as_ref().is_some_and(|w| w.will_wake(waker)) {
                        return None;
                    }
                }
                _ => return None,
            }
        }
        let mut waker = Some(waker.clone());
        if let Some(Slot::Taken(entry)) = self.slab.borrow_mut().get_mut(index) {
            mem::swap(&mut entry.waker, &mut waker);
        }
        drop(waker); // the replaced one, outside the borrow
        None
    }

    /// Frees a slot (completion, expiry or drop). O(1).
    fn release(&self, index: usize) {
        let old = {
            let mut slab = self.slab.borrow_mut();
            let Some(slot) = slab.get_mut(index) else {
                return;
            };
            if !matches!(slot, Slot::Taken(_)) {
                return;
            }
            let old = mem::replace(
                slot,
                Slot::Free {
                    next: self.free.get(),
                },
            );
            self.free.set(Some(index));
            old
        };
        if let Slot::Taken(entry) = &old {
            if entry.expired.is_none() {
                self.waiting.set(self.waiting.get() - 1);
            }
        }
        drop(old); // its waker, outside the borrow
    }
}

/// Marks the timers stopped when the ticker returns or is dropped, and lets go of its waker.
struct StopOnDrop<'a>(&'a Timers);

impl Drop for StopOnDrop<'_> {
    fn drop(&mut self) {
        self.0.stopped.set(true);
        self.0.parked.set(false);
        drop(self.0.ticker.take());
    }
}

fn ticks_floor(nanos: u128) -> u64 {
    u64::try_from(nanos / TICK_NANOS).unwrap_or(u64::MAX)
}

fn ticks_ceil(nanos: u128) -> u64 {
    u64::try_from(nanos.div_ceil(TICK_NANOS)).unwrap_or(u64::MAX)
}

/// Offset of tick `ticks` from the origin.
fn tick_start(ticks: u64) -> Duration {
    let nanos = u128::from(ticks).saturating_mul(TICK_NANOS);
    Duration::from_nanos(u64::try_from(nanos).unwrap_or(u64::MAX))
}

pin_project! {
    /// A future bounded by [`Timers::timeout`] or [`Timers::idle`]; its output is
    /// `Result<F::Output, Expired>`. Costs nothing until the inner future is pending; then
    /// holds one slot of its [`Timers`] until it completes or is dropped. `Unpin` when `F` is.
    pub struct Guarded<F> {
        #[pin]
        fut: F,
        timers: Rc<Timers>,
        after: Duration,
        idle: bool,
        slot: Option<usize>,
    }

    impl<F> PinnedDrop for Guarded<F> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(slot) = this.slot.take() {
                this.timers.release(slot);
            }
        }
    }
}

impl<F: Future> Future for Guarded<F> {
    type Output = Result<F::Output, Expired>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        if let Poll::Ready(out) = this.fut.poll(cx) {
            if let Some(slot) = this.slot.take() {
                this.timers.release(slot);
            }
            return Poll::Ready(Ok(out));
        }
        let timers = &**this.timers;
        match *this.slot {
            Some(slot) => match timers.poll_slot(slot, cx.waker()) {
                None => Poll::Pending,
                Some(why) => {
                    *this.slot = None;
                    timers.release(slot);
                    Poll::Ready(Err(why))
                }
            },
            None if *this.idle && timers.shutting_down.get() => Poll::Ready(Err(Expired::Shutdown)),
            None if timers.stopped.get() => Poll::Pending,
            None => {
                *this.slot = Some(timers.register(*this.after, *this.idle, cx.waker()));
                Poll::Pending
            }
        }
    }
}

#[cfg(test)]
#[path = "deadline_tests.rs"]
mod tests;
