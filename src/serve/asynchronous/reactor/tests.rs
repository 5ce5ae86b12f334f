//! The reactor's tests.

use super::*;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Wake;

/// A waker that counts its wakes.
struct Counter(AtomicUsize);

impl Wake for Counter {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.0.fetch_add(1, Ordering::Relaxed);
    }
}

fn counter() -> (Arc<Counter>, Waker) {
    let counter = Arc::new(Counter(AtomicUsize::new(0)));
    let waker = Waker::from(counter.clone());
    (counter, waker)
}

/// A readiness wakes a waiting task once; with nobody waiting, it
/// reports so.
#[test]
fn a_waiter_is_woken_once_per_wait() {
    let waiter = Waiter::default();
    let (count, waker) = counter();
    assert!(!waiter.wake(), "nobody waits yet");
    waiter.wait(&waker);
    assert!(waiter.wake());
    assert!(!waiter.wake(), "woken already, not waiting again");
    assert_eq!(count.0.load(Ordering::Relaxed), 1);
}

/// A client just accepted is read at once, before any readiness is
/// reported: its first message needs no wait. A socket registered
/// the plain way waits for the poller first.
#[test]
fn an_accepted_client_is_read_before_any_readiness() {
    let reactor = Reactor::new(Backend::default()).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
    client.write_all(b"hi").unwrap();
    let (waker, plain_waker) = (counter().1, counter().1);
    for (accepted, waker) in [(true, waker), (false, plain_waker)] {
        let (server_side, _) = listener.accept().unwrap();
        server_side.set_nonblocking(true).unwrap();
        let stream = match accepted {
            true => Async::accepted(server_side, &reactor).unwrap(),
            false => Async::new(server_side, &reactor).unwrap(),
        };
        let mut recv = std::pin::pin!(stream.recv());
        let poll = recv.as_mut().poll(&mut Context::from_waker(&waker));
        match (accepted, poll) {
            (true, Poll::Ready(Ok(data))) => assert_eq!(&*data, b"hi"),
            (false, Poll::Pending) => {}
            (accepted, poll) => panic!("accepted: {accepted}, {poll:?}"),
        }
        // The second round: a new client with its message sent.
        client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        client.write_all(b"hi").unwrap();
    }
}

/// A task waiting again is not woken twice: its waker is recorded
/// once; another task's waker replaces it.
#[test]
fn a_waiter_holds_one_waker() {
    let waiter = Waiter::default();
    let (first, waker) = counter();
    waiter.wait(&waker);
    waiter.wait(&waker);
    assert_eq!(
        Arc::strong_count(&first),
        3,
        "ours, the Waker, one in the waiter"
    );
    let (second, other) = counter();
    waiter.wait(&other);
    assert_eq!(Arc::strong_count(&first), 2);
    assert!(waiter.wake());
    assert!(!waiter.wake());
    assert_eq!(first.0.load(Ordering::Relaxed), 0);
    assert_eq!(second.0.load(Ordering::Relaxed), 1);
}

/// A registration is what every idle connection holds in the reactor:
/// its flags share one byte, so it stays at 40 bytes with the descriptor,
/// and the descriptor leaves a value free, so that the table's entry (an
/// enum: vacant or not) stays at 40 too; the socket its task holds is the
/// descriptor, its key and the reactor.
#[test]
fn a_registration_stays_small() {
    let source = std::mem::size_of::<super::Source>();
    assert!(source <= 40, "{source}");
    let entry = std::mem::size_of::<Option<super::Source>>();
    assert!(entry <= 40, "{entry}");
    let socket = std::mem::size_of::<super::Async<std::net::TcpStream>>();
    assert!(socket <= 16, "{socket}");
}
