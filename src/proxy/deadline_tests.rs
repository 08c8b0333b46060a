//! Tests of [`super`].

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
