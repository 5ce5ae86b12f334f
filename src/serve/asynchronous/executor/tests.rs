//! The executor's tests.

use super::*;
use crate::serve::asynchronous::reactor::{Async, sleep};
use std::cell::Cell;
use std::io::Write;
use std::net::{TcpListener, TcpStream};
use std::task::Waker;
use std::time::Duration;

fn executor<'a>() -> (Rc<Reactor>, Executor<'a>) {
    let reactor = Reactor::new(crate::poller::Backend::default()).unwrap();
    let executor = Executor::new(reactor.clone());
    (reactor, executor)
}

/// Spawned tasks run to completion and leave the table.
#[test]
fn tasks_run_to_completion() {
    // Declared before the executor, so that it outlives the tasks.
    let done = Cell::new(0);
    let (_reactor, executor) = executor();
    for _ in 0..3 {
        executor.spawn(async {
            yield_now().await;
            done.set(done.get() + 1);
        });
    }
    executor
        .block_on(async {
            while done.get() < 3 {
                yield_now().await;
            }
        })
        .unwrap();
    assert_eq!(done.get(), 3);
    assert_eq!(executor.tasks(), 0);
}

/// A task spawned from inside a task runs too.
#[test]
fn a_task_spawned_from_a_task_runs() {
    let inner_ran = Cell::new(false);
    let (_reactor, executor) = executor();
    let spawner = executor.spawner();
    let inner_ran = &inner_ran;
    let inner_spawner = spawner.clone();
    spawner.spawn(async move {
        inner_spawner.spawn(async move { inner_ran.set(true) });
    });
    executor
        .block_on(async {
            while !inner_ran.get() {
                yield_now().await;
            }
        })
        .unwrap();
    assert!(inner_ran.get());
}

/// A pending task is polled again when, and only when, it is woken, and
/// a wake from another thread interrupts the executor's wait.
#[test]
fn a_woken_task_is_polled_exactly_when_woken() {
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::spawn(move || {
        let (_reactor, executor) = executor();
        let polls = Cell::new(0);
        let (waker_tx, waker_rx) = std::sync::mpsc::channel::<Waker>();
        let woken = Arc::new(AtomicBool::new(false));
        let flag = woken.clone();
        let waker_thread = std::thread::spawn(move || {
            let waker = waker_rx.recv().unwrap();
            // Wake only after the executor had every chance to poll
            // spuriously; it must not have.
            std::thread::sleep(Duration::from_millis(100));
            flag.store(true, Ordering::SeqCst);
            waker.wake();
        });
        executor
            .block_on(poll_fn(|cx| {
                polls.set(polls.get() + 1);
                if polls.get() == 1 {
                    waker_tx.send(cx.waker().clone()).unwrap();
                }
                if woken.load(Ordering::SeqCst) {
                    Poll::Ready(())
                } else {
                    Poll::Pending
                }
            }))
            .unwrap();
        waker_thread.join().unwrap();
        tx.send(polls.get()).unwrap();
    });
    let polls = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("the executor woke up");
    thread.join().unwrap();
    assert_eq!(polls, 2, "polled once at first and once when woken");
}

/// A wake that comes after its task has ended is harmless, and does not
/// keep the next task given the same id from running.
#[test]
fn a_stale_wake_does_not_stop_the_next_task_with_its_id() {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let ran = Cell::new(false);
        let (_reactor, executor) = executor();
        // Wakes itself and ends in the same poll: its id is queued
        // with no task behind it.
        executor.spawn(poll_fn(|cx| {
            cx.waker().wake_by_ref();
            Poll::Ready(())
        }));
        executor.block_on(yield_now()).unwrap();
        executor.block_on(yield_now()).unwrap();
        assert_eq!(executor.tasks(), 0);
        executor.spawn(async { ran.set(true) });
        executor
            .block_on(async {
                while !ran.get() {
                    yield_now().await;
                }
            })
            .unwrap();
        tx.send(()).unwrap();
    });
    rx.recv_timeout(Duration::from_secs(20))
        .expect("the task given the stale id ran");
}

/// A connection's task ends when the peer closes, and its socket leaves
/// the reactor.
#[test]
fn a_dropped_connection_task_is_cleaned_up() {
    let (reactor, executor) = executor();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    server_side.set_nonblocking(true).unwrap();
    let stream = Async::new(server_side, &reactor).unwrap();
    let got = Rc::new(Cell::new(None));
    let result = got.clone();
    executor.spawn(async move {
        let mut total = 0;
        while let Ok(data) = stream.recv().await {
            if data.is_empty() {
                break;
            }
            total += data.len();
        }
        result.set(Some(total));
    });
    assert_eq!(reactor.sources(), 1);
    client.write_all(b"bye").unwrap();
    drop(client);
    executor
        .block_on(async {
            while got.get().is_none() {
                sleep(&reactor, Duration::from_millis(1)).await;
            }
        })
        .unwrap();
    assert_eq!(got.get(), Some(3));
    assert_eq!(executor.tasks(), 0);
    assert_eq!(reactor.sources(), 0);
}

/// A task whose socket is always ready yields once its budget is
/// spent: with a budget of 2, ten operations take five polls after the
/// one that waits for the first readiness (without a budget: one).
#[test]
fn a_spent_budget_makes_a_task_yield() {
    let polls = Rc::new(Cell::new(0));
    let done = Rc::new(Cell::new(false));
    let (reactor, executor) = executor();
    reactor.set_budget(2);
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    let (server_side, _) = listener.accept().unwrap();
    server_side.set_nonblocking(true).unwrap();
    client.write_all(b"x").unwrap();
    let stream = Async::new(server_side, &reactor).unwrap();
    let (counted, finished) = (polls.clone(), done.clone());
    executor.spawn(async move {
        let operations = async {
            for _ in 0..10 {
                stream.readable().await.unwrap();
            }
        };
        let mut operations = pin!(operations);
        poll_fn(|cx| {
            counted.set(counted.get() + 1);
            operations.as_mut().poll(cx)
        })
        .await;
        finished.set(true);
    });
    executor
        .block_on(async {
            while !done.get() {
                yield_now().await;
            }
        })
        .unwrap();
    assert_eq!(polls.get(), 6);
}

/// Timers fire in the order of their deadlines, not of their creation.
#[test]
fn timers_fire_in_order() {
    let order = RefCell::new(Vec::new());
    let (reactor, executor) = executor();
    for ms in [30, 10, 20] {
        let (reactor, order) = (reactor.clone(), &order);
        executor.spawn(async move {
            sleep(&reactor, Duration::from_millis(ms)).await;
            order.borrow_mut().push(ms);
        });
    }
    executor
        .block_on(sleep(&reactor, Duration::from_millis(40)))
        .unwrap();
    // Even on a stalled machine every timer is due by now, and due
    // timers are woken earliest first.
    while order.borrow().len() < 3 {
        executor.block_on(yield_now()).unwrap();
    }
    assert_eq!(*order.borrow(), [10, 20, 30]);
}
