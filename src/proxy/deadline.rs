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
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Wake;
    use tokio::task::{spawn_local, JoinHandle, LocalSet};
    use tokio::time::sleep;

    /// Starts the ticker for fresh timers.
    fn start() -> (Rc<Timers>, CancellationToken, JoinHandle<()>) {
        let timers = Timers::new();
        let shutdown = CancellationToken::new();
        let ticker = spawn_local(Rc::clone(&timers).run(shutdown.clone()));
        (timers, shutdown, ticker)
    }

    /// Spawns `fut` guarded by `timers.idle` (when `idle`) or `timers.timeout` of `after`.
    fn spawn_guarded<F>(
        timers: &Rc<Timers>,
        idle: bool,
        after: Duration,
        fut: F,
    ) -> JoinHandle<Result<F::Output, Expired>>
    where
        F: Future + 'static,
        F::Output: 'static,
    {
        let timers = Rc::clone(timers);
        spawn_local(async move {
            if idle {
                timers.idle(after, fut).await
            } else {
                timers.timeout(after, fut).await
            }
        })
    }

    /// Awaits a task, failing (instead of hanging) if it does not end within a minute.
    async fn finished<T>(task: JoinHandle<T>) -> T {
        match tokio::time::timeout(Duration::from_secs(60), task).await {
            Ok(joined) => joined.unwrap(),
            Err(_) => panic!("the task did not finish"),
        }
    }

    /// Lets every ready task run without moving paused time.
    async fn settle() {
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    fn taken(timers: &Timers) -> usize {
        let slab = timers.slab.borrow();
        slab.iter().filter(|s| matches!(s, Slot::Taken(_))).count()
    }

    struct CountingWaker(AtomicUsize);

    impl Wake for CountingWaker {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn ready_future_is_ok_without_registering() {
        LocalSet::new()
            .run_until(async {
                let (timers, _shutdown, _ticker) = start();
                settle().await;
                assert!(timers.parked.get());
                let clock = timers.clock.get();

                assert_eq!(timers.timeout(Duration::ZERO, async { 7 }).await, Ok(7));
                assert_eq!(timers.idle(TICK, async { 8 }).await, Ok(8));
                settle().await;

                assert!(timers.slab.borrow().is_empty(), "nothing registered");
                assert!(timers.parked.get(), "the ticker was not woken");
                assert_eq!(timers.clock.get(), clock);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn finishes_in_time_returns_ok_and_frees_its_slot() {
        LocalSet::new()
            .run_until(async {
                let (timers, _shutdown, _ticker) = start();
                let start = Instant::now();
                let out = timers
                    .timeout(Duration::from_secs(1), async {
                        sleep(Duration::from_millis(300)).await;
                        "done"
                    })
                    .await;
                assert_eq!(out, Ok("done"));
                assert_eq!(start.elapsed(), Duration::from_millis(300));
                assert_eq!(taken(&timers), 0);
                assert_eq!(timers.waiting.get(), 0);
                assert_eq!(timers.free.get(), Some(0), "its slot is free for reuse");
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn pending_future_times_out_within_two_ticks() {
        LocalSet::new()
            .run_until(async {
                let (timers, _shutdown, _ticker) = start();
                let afters = [0, 1, 50, 99, 100, 101, 250, 1000, 30_000].map(Duration::from_millis);
                let offsets = [0, 1, 37, 99].map(Duration::from_millis);
                // Alone (the ticker is parked when it registers), and next to a long
                // timeout (the ticker is ticking and the coarse clock may be stale).
                for busy in [false, true] {
                    let background = busy.then(|| {
                        spawn_guarded(
                            &timers,
                            false,
                            Duration::from_secs(3600),
                            std::future::pending::<()>(),
                        )
                    });
                    settle().await;
                    assert_eq!(timers.parked.get(), !busy);
                    for after in afters {
                        for offset in offsets {
                            sleep(offset).await;
                            let start = Instant::now();
                            let out = timers.timeout(after, std::future::pending::<()>()).await;
                            let took = start.elapsed();
                            assert_eq!(out, Err(Expired::Deadline));
                            assert!(
                                took >= after && took <= after + 2 * TICK,
                                "busy={busy} after={after:?} offset={offset:?}: took {took:?}"
                            );
                        }
                    }
                    if let Some(background) = background {
                        background.abort();
                    }
                }
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn stale_clock_never_fires_early() {
        // No ticker task: drive the passes by hand to register while the clock is stale.
        let timers = Timers::new();
        let origin = timers.origin;
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let at = |ms| origin + Duration::from_millis(ms);

        timers.tick(at(0));
        tokio::time::advance(Duration::from_millis(350)).await;
        // The clock still says tick 0; a deadline counted from it would expire at 200 ms.
        let mut late = timers.timeout(Duration::from_millis(100), std::future::pending::<()>());
        assert!(Pin::new(&mut late).poll(&mut cx).is_pending());

        for (ms, expired) in [(360, false), (400, false), (450, false), (500, true)] {
            timers.tick(at(ms));
            let polled = Pin::new(&mut late).poll(&mut cx);
            assert_eq!(polled.is_ready(), expired, "at {ms} ms");
        }
        assert_eq!(taken(&timers), 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn idle_ends_on_shutdown_while_timeout_runs_on() {
        LocalSet::new()
            .run_until(async {
                let (timers, shutdown, ticker) = start();
                let start = Instant::now();
                let spawn = |idle: bool, after: u64, work: Option<u64>| {
                    let timers = Rc::clone(&timers);
                    spawn_local(async move {
                        let fut = async move {
                            match work {
                                Some(ms) => sleep(Duration::from_millis(ms)).await,
                                None => std::future::pending().await,
                            }
                        };
                        let after = Duration::from_millis(after);
                        let out = if idle {
                            timers.idle(after, fut).await
                        } else {
                            timers.timeout(after, fut).await
                        };
                        (out, start.elapsed())
                    })
                };
                let idle = spawn(true, 60_000, None);
                let finishing = spawn(false, 60_000, Some(500));
                let expiring = spawn(false, 1000, None);

                sleep(Duration::from_millis(200)).await;
                shutdown.cancel();

                let (out, at) = finished(idle).await;
                assert_eq!(out, Err(Expired::Shutdown));
                assert_eq!(
                    at,
                    Duration::from_millis(200),
                    "ends as soon as shutdown starts"
                );
                assert!(timers.shutting_down());

                let (out, at) = finished(finishing).await;
                assert_eq!(out, Ok(()));
                assert_eq!(at, Duration::from_millis(500));

                let (out, at) = finished(expiring).await;
                assert_eq!(out, Err(Expired::Deadline));
                assert!(at >= Duration::from_secs(1) && at <= Duration::from_secs(1) + 2 * TICK);

                finished(ticker).await;
                assert!(
                    start.elapsed() - at <= TICK,
                    "the ticker returns once none is left"
                );
                assert!(timers.stopped.get());
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn idle_after_shutdown_ends_immediately() {
        LocalSet::new()
            .run_until(async {
                let (timers, shutdown, ticker) = start();
                // A long timeout keeps the ticker running through the shutdown.
                let long = spawn_guarded(
                    &timers,
                    false,
                    Duration::from_secs(5),
                    sleep(Duration::from_secs(2)),
                );
                settle().await;
                shutdown.cancel();
                settle().await;
                assert!(timers.shutting_down());

                let start = Instant::now();
                let out = timers
                    .idle(Duration::from_secs(60), std::future::pending::<()>())
                    .await;
                assert_eq!(out, Err(Expired::Shutdown));
                assert_eq!(start.elapsed(), Duration::ZERO);
                assert_eq!(taken(&timers), 1, "only the long timeout is registered");
                // The inner future is polled first: a ready output is never discarded.
                assert_eq!(
                    timers.idle(Duration::from_secs(60), async { 1 }).await,
                    Ok(1)
                );

                assert_eq!(finished(long).await, Ok(()));
                finished(ticker).await;
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn dropping_frees_its_slot() {
        let timers = Timers::new();
        let waker = Waker::noop();
        let mut cx = Context::from_waker(waker);
        let mut kept = Vec::new();
        for i in 0..10_000 {
            let mut guarded = if i % 2 == 0 {
                timers.timeout(TICK, std::future::pending::<()>())
            } else {
                timers.idle(TICK, std::future::pending::<()>())
            };
            assert!(Pin::new(&mut guarded).poll(&mut cx).is_pending());
            // Keep up to three alive at a time, so slots are freed out of order.
            kept.push(guarded);
            if kept.len() > 3 {
                drop(kept.swap_remove(i % 3));
            }
        }
        assert!(
            timers.slab.borrow().len() <= 4,
            "{} slots",
            timers.slab.borrow().len()
        );
        assert_eq!(timers.waiting.get(), kept.len());
        drop(kept);
        assert_eq!(taken(&timers), 0);
        assert_eq!(timers.waiting.get(), 0);
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn ticker_parks_when_nothing_is_registered() {
        LocalSet::new()
            .run_until(async {
                let (timers, _shutdown, _ticker) = start();
                settle().await;
                assert!(timers.parked.get());
                // Parked, nothing moves the clock: the ticker did not wake in 10 s.
                let clock = timers.clock.get();
                sleep(Duration::from_secs(10)).await;
                assert_eq!(timers.clock.get(), clock);

                // Something registered: the ticker wakes and ticks every TICK.
                let long = spawn_guarded(
                    &timers,
                    false,
                    Duration::from_secs(1),
                    sleep(Duration::from_secs(2)),
                );
                settle().await;
                assert!(!timers.parked.get());
                assert_eq!(timers.clock.get(), 100, "refreshed when it unparked");
                sleep(Duration::from_millis(550)).await;
                assert_eq!(timers.clock.get(), 105);

                // Once it expired the ticker parks again.
                assert_eq!(finished(long).await, Err(Expired::Deadline));
                settle().await;
                assert!(timers.parked.get());
                let clock = timers.clock.get();
                sleep(Duration::from_secs(10)).await;
                assert_eq!(timers.clock.get(), clock);
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn run_returns_on_shutdown_when_no_timeout_is_left() {
        LocalSet::new()
            .run_until(async {
                let (timers, shutdown, ticker) = start();
                let idle = spawn_guarded(
                    &timers,
                    true,
                    Duration::from_secs(60),
                    std::future::pending::<()>(),
                );
                settle().await;
                let start = Instant::now();
                shutdown.cancel();
                finished(ticker).await;
                assert_eq!(start.elapsed(), Duration::ZERO);
                assert_eq!(finished(idle).await, Err(Expired::Shutdown));
                assert!(timers.stopped.get());
                assert!(
                    timers.ticker.take().is_none(),
                    "the ticker's waker was let go"
                );
            })
            .await;
    }

    #[tokio::test(flavor = "current_thread", start_paused = true)]
    async fn waker_is_cloned_only_when_it_changes() {
        let timers = Timers::new();
        let a = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let b = Arc::new(CountingWaker(AtomicUsize::new(0)));
        let (waker_a, waker_b) = (Waker::from(Arc::clone(&a)), Waker::from(Arc::clone(&b)));
        let mut guarded = timers.timeout(TICK, std::future::pending::<()>());

        for _ in 0..3 {
            let polled = Pin::new(&mut guarded).poll(&mut Context::from_waker(&waker_a));
            assert!(polled.is_pending());
            // Ours, `waker_a`, and the one stored clone.
            assert_eq!(Arc::strong_count(&a), 3);
        }
        let polled = Pin::new(&mut guarded).poll(&mut Context::from_waker(&waker_b));
        assert!(polled.is_pending());
        assert_eq!((Arc::strong_count(&a), Arc::strong_count(&b)), (2, 3));

        // The ticker wakes the stored (latest) waker once the deadline passed.
        timers.tick(timers.origin + Duration::from_millis(50));
        timers.tick(timers.origin + Duration::from_millis(200));
        assert_eq!(b.0.load(Ordering::Relaxed), 1);
        assert_eq!(a.0.load(Ordering::Relaxed), 0);
        let polled = Pin::new(&mut guarded).poll(&mut Context::from_waker(&waker_b));
        assert_eq!(polled, Poll::Ready(Err(Expired::Deadline)));
        drop(guarded);
        assert_eq!(Arc::strong_count(&b), 2);
    }

    #[test]
    fn guarded_is_unpin_when_its_future_is() {
        fn unpin<T: Unpin>() {}
        unpin::<Guarded<std::future::Pending<()>>>();
        unpin::<Guarded<std::future::Ready<u8>>>();
    }
}
