//! DnsResolver against the machine's own resolver (loopback names and literals only).

mod support;

use std::cell::{Cell, RefCell};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use kdnet::network::dns::{
    AddressFamily, DnsResolver, LookupResult, MAX_HOST_NAME_LEN, MAX_RESOLVER_THREADS,
};
use kdnet::network::{SocketError, TimeoutPhase};
use kdnet::{EventLoop, LoopError};
use support::{SAFETY_TIMEOUT, lookup_and_wait, wait_until};

/// A name only the system resolver answers, without the network: getaddrinfo reads it as
/// 127.0.0.1 (inet_aton's shorthand: hex, two parts), the resolver's own literal parser does not.
/// `localhost` no longer reaches the system (RFC 6761), so the tests of the pool, the cache and
/// the timeouts use this.
const SYSTEM_NAME: &str = "0x7f.1";
/// The same name in other letters.
const SYSTEM_NAME_UPPER: &str = "0X7F.1";

/// Collects a lookup's result.
fn slot() -> (
    Rc<RefCell<Option<LookupResult>>>,
    impl FnOnce(LookupResult) + 'static,
) {
    let result = Rc::new(RefCell::new(None));
    let sink = Rc::clone(&result);
    (result, move |r| *sink.borrow_mut() = Some(r))
}

#[test]
fn localhost_resolves_to_loopback_addresses() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let addresses = lookup_and_wait(&mut event_loop, &resolver, "localhost", AddressFamily::Any)
        .expect("localhost resolves");
    assert!(!addresses.is_empty());
    assert!(addresses.iter().all(IpAddr::is_loopback), "{addresses:?}");
    let mut unique = addresses.clone();
    unique.dedup();
    assert_eq!(
        unique.len(),
        addresses.len(),
        "no duplicates: {addresses:?}"
    );
    // Answered without the system resolver (RFC 6761 §6.3).
    assert_eq!(resolver.pool_lookups(), 0);
    assert_eq!(resolver.pending_lookups(), 0);
}

/// RFC 6761 §6.3: `localhost` and every name under it are loopback, answered without asking the
/// system (whose /etc/hosts here maps `localhost` to 127.0.0.1 only), in RFC 6724's order, on a
/// later turn, filtered by family like any answer.
#[test]
fn localhost_and_names_under_it_are_loopback_without_asking_the_system() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    for host in ["localhost", "LocalHost.", "app.localhost", "a.b.LOCALHOST."] {
        let (result, callback) = slot();
        resolver.lookup(host, callback);
        assert!(result.borrow().is_none(), "{host}: answered synchronously");
        wait_until(&mut event_loop, || result.borrow().is_some());
        assert_eq!(result.take().unwrap().unwrap(), vec![v6, v4], "{host}");
        let only_v4 = lookup_and_wait(&mut event_loop, &resolver, host, AddressFamily::IPv4);
        assert_eq!(only_v4.unwrap(), vec![v4], "{host}");
        let only_v6 = lookup_and_wait(&mut event_loop, &resolver, host, AddressFamily::IPv6);
        assert_eq!(only_v6.unwrap(), vec![v6], "{host}");
    }
    // Not localhost: a name that merely contains it still goes to the system.
    let (result, callback) = slot();
    resolver.lookup("localhost.invalid", callback);
    assert_eq!(resolver.pool_lookups(), 1);
    resolver.cancel_lookups();
    assert!(result.borrow().is_none());
}

#[test]
fn family_filter_applies_to_names() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let v4 = lookup_and_wait(&mut event_loop, &resolver, "localhost", AddressFamily::IPv4)
        .expect("localhost has an IPv4 address");
    assert!(v4.iter().all(IpAddr::is_ipv4), "{v4:?}");
    // The IPv6 answer depends on /etc/hosts; whatever it is, it holds only IPv6 addresses.
    match lookup_and_wait(&mut event_loop, &resolver, "localhost", AddressFamily::IPv6) {
        Ok(v6) => assert!(v6.iter().all(IpAddr::is_ipv6), "{v6:?}"),
        Err(SocketError::Lookup { reason, .. }) => assert!(reason.starts_with("no addresses")),
        Err(other) => panic!("unexpected {other:?}"),
    }
}

#[test]
fn ip_literals_answer_on_a_later_turn_without_the_pool() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let cases = [
        ("127.0.0.1", IpAddr::V4(Ipv4Addr::LOCALHOST)),
        ("::1", IpAddr::V6(Ipv6Addr::LOCALHOST)),
        ("[::1]", IpAddr::V6(Ipv6Addr::LOCALHOST)),
    ];
    for (host, expected) in cases {
        let (result, callback) = slot();
        resolver.lookup(host, callback);
        assert!(result.borrow().is_none(), "{host}: answered synchronously");
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        assert_eq!(result.take().unwrap().unwrap(), vec![expected], "{host}");
    }
    assert_eq!(resolver.pool_lookups(), 0);
}

#[test]
fn literal_of_the_wrong_family_fails() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    match lookup_and_wait(&mut event_loop, &resolver, "127.0.0.1", AddressFamily::IPv6) {
        Err(SocketError::Lookup { host, reason }) => {
            assert_eq!(host, "127.0.0.1");
            assert_eq!(reason, "no addresses (IPv6 requested)");
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn unknown_name_fails_with_the_resolver_message() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_timeout(SAFETY_TIMEOUT);
    match lookup_and_wait(
        &mut event_loop,
        &resolver,
        "no-such-host.invalid",
        AddressFamily::Any,
    ) {
        Err(err @ SocketError::Lookup { .. }) => {
            let SocketError::Lookup { host, reason } = &err else {
                unreachable!()
            };
            assert_eq!(host, "no-such-host.invalid");
            assert!(!reason.is_empty());
            assert!(err.is_retryable());
            assert!(
                err.to_string()
                    .starts_with("name lookup for \"no-such-host.invalid\" failed: "),
                "{err}"
            );
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn malformed_hosts_fail_without_the_pool() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let too_long = "a".repeat(MAX_HOST_NAME_LEN + 1);
    for host in ["", "[example.com]", "[127.0.0.1]", too_long.as_str()] {
        match lookup_and_wait(&mut event_loop, &resolver, host, AddressFamily::Any) {
            Err(SocketError::InvalidAddress(_)) => {}
            other => panic!("{host:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(resolver.pool_lookups(), 0);
}

#[test]
fn cancelled_lookup_never_calls_back() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let id = resolver.lookup(SYSTEM_NAME, move |_| c.set(true));
    assert!(resolver.cancel(id));
    assert!(!resolver.cancel(id), "second cancel finds nothing");
    assert_eq!(
        Rc::strong_count(&called),
        1,
        "the callback was dropped at once"
    );
    // A lookup started afterwards completes; by then the cancelled one has had time to finish.
    let later = lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any);
    assert!(later.is_ok());
    for _ in 0..10 {
        event_loop
            .process_events(Some(Duration::from_millis(5)))
            .unwrap();
    }
    assert!(!called.get());
    assert_eq!(resolver.pending_lookups(), 0);
}

#[test]
fn cancelled_literal_never_calls_back() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let called = Rc::new(Cell::new(false));
    let c = called.clone();
    let id = resolver.lookup("127.0.0.1", move |_| c.set(true));
    assert!(resolver.cancel(id));
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert!(!called.get());
}

#[test]
fn cancel_lookups_cancels_everything() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let calls = Rc::new(Cell::new(0));
    let mut ids = Vec::new();
    for host in ["localhost", "127.0.0.1", "::1", ""] {
        let c = calls.clone();
        ids.push(resolver.lookup(host, move |_| c.set(c.get() + 1)));
    }
    assert_eq!(resolver.pending_lookups(), 4);
    resolver.cancel_lookups();
    assert_eq!(resolver.pending_lookups(), 0);
    assert!(ids.into_iter().all(|id| !resolver.cancel(id)));
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        event_loop
            .process_events(Some(Duration::from_millis(10)))
            .unwrap();
    }
    assert_eq!(calls.get(), 0);
}

#[test]
fn lookup_that_cannot_finish_in_time_times_out() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    for timeout in [Duration::ZERO, Duration::from_nanos(1)] {
        resolver.set_timeout(timeout);
        let result = lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any);
        match result {
            Err(SocketError::Timeout(TimeoutPhase::Resolve)) => {}
            other => panic!("{timeout:?}: expected a resolve timeout, got {other:?}"),
        }
        // The abandoned pool task still ends (a lookup made before then would join it, so the
        // next one waits for that, for a task of its own).
        let deadline = Instant::now() + Duration::from_secs(10);
        while resolver.pool_tasks_in_flight() > 0 {
            assert!(
                Instant::now() < deadline,
                "the abandoned pool task never ended"
            );
            event_loop
                .process_events(Some(Duration::from_millis(10)))
                .unwrap();
        }
    }
    // Each timed-out lookup went to the pool: a zero timeout does not skip the lookup.
    assert_eq!(resolver.pool_lookups(), 2);
    // A timed-out lookup is over: its late answer must not call back a second time.
    let deadline = Instant::now() + Duration::from_millis(200);
    while Instant::now() < deadline {
        event_loop
            .process_events(Some(Duration::from_millis(10)))
            .unwrap();
    }
    assert_eq!(resolver.pending_lookups(), 0);
}

#[test]
fn timeout_does_not_apply_to_literals() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_timeout(Duration::ZERO);
    let result = lookup_and_wait(&mut event_loop, &resolver, "::1", AddressFamily::Any);
    assert_eq!(result.unwrap(), vec![IpAddr::V6(Ipv6Addr::LOCALHOST)]);
}

#[test]
fn repeated_lookup_is_answered_from_the_cache() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let first =
        lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    assert_eq!(resolver.pool_lookups(), 1);

    let (result, callback) = slot();
    resolver.lookup(SYSTEM_NAME_UPPER, callback);
    assert!(result.borrow().is_none(), "cache hits are not synchronous");
    event_loop.process_events(Some(Duration::ZERO)).unwrap();
    assert_eq!(result.take().unwrap().unwrap(), first);
    assert_eq!(resolver.pool_lookups(), 1, "answered without the pool");

    resolver.clear_cache();
    lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    assert_eq!(resolver.pool_lookups(), 2, "cleared cache goes to the pool");
}

#[test]
fn zero_ttl_disables_the_cache() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    for expected in 1..=3 {
        lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
        assert_eq!(resolver.pool_lookups(), expected);
    }
}

#[test]
fn expired_cache_entries_are_not_used() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::from_millis(30));
    lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    std::thread::sleep(Duration::from_millis(40));
    lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    assert_eq!(resolver.pool_lookups(), 2);
}

/// Lookups of one name made while it is being resolved share one pool task (one getaddrinfo):
/// N connections opened at once to one host do not take the pool's threads N times over.
#[test]
fn concurrent_lookups_of_one_name_share_one_pool_task() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    let answers: Rc<RefCell<Vec<LookupResult>>> = Rc::default();
    let peak_threads = Rc::new(Cell::new(0));
    for i in 0..16 {
        let a = answers.clone();
        // Case differs, the name does not.
        let host = if i % 2 == 0 {
            SYSTEM_NAME
        } else {
            SYSTEM_NAME_UPPER
        };
        resolver.lookup(host, move |r| a.borrow_mut().push(r));
    }
    wait_until(&mut event_loop, || {
        peak_threads.set(peak_threads.get().max(DnsResolver::pool_threads()));
        answers.borrow().len() == 16
    });
    assert!(peak_threads.get() <= MAX_RESOLVER_THREADS);
    assert_eq!(resolver.pool_lookups(), 1);
    let answers = answers.borrow();
    let first = answers[0].as_ref().unwrap();
    assert!(answers.iter().all(|a| a.as_ref().ok() == Some(first)));
}

/// Waiters of a shared task leave it independently: cancelling some (the one that started the
/// task included) still answers the rest; when all left, a lookup joining before the task ran is
/// answered all the same; a lookup after `clear_cache` does not join a task started before it.
#[test]
fn waiters_of_a_shared_lookup_come_and_go_independently() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    let (first, callback) = slot();
    let starter = resolver.lookup(SYSTEM_NAME, callback);
    let (second, callback) = slot();
    resolver.lookup(SYSTEM_NAME, callback);
    assert!(resolver.cancel(starter));
    wait_until(&mut event_loop, || second.borrow().is_some());
    assert!(second.take().unwrap().is_ok());
    assert!(
        first.borrow().is_none(),
        "a cancelled lookup is never answered"
    );
    assert_eq!(resolver.pool_lookups(), 1);

    let (gone, callback) = slot();
    let only = resolver.lookup(SYSTEM_NAME, callback);
    assert!(resolver.cancel(only));
    let (late, callback) = slot();
    resolver.lookup(SYSTEM_NAME, callback);
    wait_until(&mut event_loop, || late.borrow().is_some());
    assert!(late.take().unwrap().is_ok());
    assert!(gone.borrow().is_none());

    let before = resolver.pool_lookups();
    let (a, callback) = slot();
    resolver.lookup(SYSTEM_NAME, callback);
    resolver.clear_cache();
    let (b, callback) = slot();
    resolver.lookup(SYSTEM_NAME, callback);
    wait_until(&mut event_loop, || {
        a.borrow().is_some() && b.borrow().is_some()
    });
    assert_eq!(
        resolver.pool_lookups() - before,
        2,
        "the clear started a task of its own"
    );
    assert_eq!(resolver.pending_lookups(), 0);
}

#[test]
fn callbacks_may_start_new_lookups() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let second: Rc<RefCell<Option<LookupResult>>> = Rc::new(RefCell::new(None));
    let sink = second.clone();
    let r = resolver.clone();
    resolver.lookup("127.0.0.1", move |first| {
        assert!(first.is_ok());
        r.lookup("localhost", move |result| *sink.borrow_mut() = Some(result));
    });
    wait_until(&mut event_loop, || second.borrow().is_some());
    assert!(second.take().unwrap().is_ok());
}

#[test]
fn one_resolver_per_loop() {
    assert!(matches!(
        DnsResolver::instance(),
        Err(LoopError::NoEventLoop)
    ));
    let event_loop = EventLoop::new().unwrap();
    let a = DnsResolver::instance().unwrap();
    let b = DnsResolver::instance().unwrap();
    assert!(Rc::ptr_eq(&a, &b));

    // A lookup still pending when the loop goes is dropped with the old resolver.
    let dropped = Rc::new(());
    let held = dropped.clone();
    a.lookup("localhost", move |_| drop(held));
    drop(event_loop);
    let _new_loop = EventLoop::new().unwrap();
    let c = DnsResolver::instance().unwrap();
    assert!(!Rc::ptr_eq(&a, &c), "a new loop gets a new resolver");
    drop(a);
    drop(b);
    assert_eq!(Rc::strong_count(&dropped), 1, "old callbacks were released");
}

/// A host that ends in a number but is no IPv4 address (`192.168.1.256`, `1.2.3.4.5`, `08.0.0.1`,
/// `4294967296`, `127.0.0.1.0x100`) is what URLs refuse as an invalid IPv4 address (WHATWG; curl
/// and rustls refuse it too): it fails with `InvalidAddress` saying so, from the loop, rather
/// than going to getaddrinfo, which sends such a typo to the network's DNS servers and answers
/// "Name or service not known" much later.
#[test]
fn a_host_ending_in_a_number_that_is_no_ipv4_address_fails_without_the_pool() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    for host in [
        "192.168.1.256",
        "1.2.3.4.5",
        "08.0.0.1",
        "4294967296",
        "127.0.0.1.0x100",
        "example.1",
    ] {
        let (result, callback) = slot();
        resolver.lookup(host, callback);
        wait_until(&mut event_loop, || result.borrow().is_some());
        match result.take().unwrap() {
            Err(SocketError::InvalidAddress(why)) => {
                assert!(why.contains("IPv4"), "{host:?}: {why}")
            }
            other => panic!("{host:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        resolver.pool_lookups(),
        0,
        "an invalid IPv4 address reached the resolver"
    );
    // Valid IPv4 in URL forms still resolve (to 127.0.0.1).
    let answer = lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any);
    assert_eq!(answer.unwrap(), vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]);
}

/// Names no resolver can answer (a label over 63 bytes, an empty label, a port or path glued on,
/// whitespace or control characters, an IPv6 zone id) fail with `InvalidAddress` from the loop,
/// without a getaddrinfo call that may send the name to the network's DNS servers.
#[test]
fn names_no_resolver_can_answer_fail_without_the_pool() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let long_label = format!("{}.example", "a".repeat(64));
    let hosts = [
        long_label.as_str(),
        "a..example",
        ".example",
        "localhost..",
        "localhost:8080",
        "localhost/path",
        "user@localhost",
        " localhost",
        "local\thost",
        "localhost\n",
        "fe80::1%lo",
        "::1%1",
        "1::2::3",
    ];
    for host in hosts {
        let (result, callback) = slot();
        resolver.lookup(host, callback);
        assert!(
            result.borrow().is_none(),
            "{host:?}: answered synchronously"
        );
        wait_until(&mut event_loop, || result.borrow().is_some());
        match result.take().unwrap() {
            Err(err @ SocketError::InvalidAddress(_)) => assert!(!err.is_retryable()),
            other => panic!("{host:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(
        resolver.pool_lookups(),
        0,
        "a malformed name reached the resolver"
    );
    // Still handed to the resolver: a 63-byte label, underscores (container names), a trailing
    // dot. Cancelled at once: only the route matters here.
    let label63 = format!("{}.invalid", "a".repeat(63));
    for host in [label63.as_str(), "my_service.invalid", "name.invalid."] {
        resolver.lookup(host, |_| {});
    }
    assert_eq!(resolver.pool_lookups(), 3, "a valid name was refused");
    resolver.cancel_lookups();
}

/// `clear_cache` while a lookup is in flight: that lookup's answer (read before the clear, e.g.
/// from an /etc/hosts since edited) is delivered, but not cached for the lookups after the clear.
#[test]
fn an_answer_in_flight_when_the_cache_is_cleared_is_not_cached() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let (result, callback) = slot();
    resolver.lookup(SYSTEM_NAME, callback);
    resolver.clear_cache();
    wait_until(&mut event_loop, || result.borrow().is_some());
    assert!(result.take().unwrap().is_ok());
    assert_eq!(resolver.pool_lookups(), 1);

    lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    assert_eq!(
        resolver.pool_lookups(),
        2,
        "answered from a cache entry made after clear_cache"
    );
    // That answer is cached as usual.
    lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    assert_eq!(resolver.pool_lookups(), 2);
}

/// `name.` (absolute: no search domains, and /etc/hosts entries do not match it with glibc) and
/// `name` (relative) can resolve differently, so the cache must not answer one with the other's
/// addresses: whether `localhost.` resolves must not depend on what was looked up before.
#[test]
fn a_trailing_dot_name_is_not_answered_from_the_relative_names_cache_entry() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_timeout(SAFETY_TIMEOUT);
    let fresh = lookup_and_wait(&mut event_loop, &resolver, "0x7f.1.", AddressFamily::Any);
    resolver.clear_cache();
    lookup_and_wait(&mut event_loop, &resolver, SYSTEM_NAME, AddressFamily::Any).unwrap();
    let after = lookup_and_wait(&mut event_loop, &resolver, "0x7f.1.", AddressFamily::Any);
    assert_eq!(
        resolver.pool_lookups(),
        3,
        "0x7f.1. was answered with 0x7f.1's cache entry"
    );
    assert_eq!(fresh.is_ok(), after.is_ok(), "{fresh:?} then {after:?}");
}

/// The refusal names the actual problem (a zone id, a stray bracket, a port, a NUL), not just
/// the first forbidden character.
#[test]
fn malformed_hosts_are_refused_with_the_specific_reason() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    for (host, reason) in [
        ("", "empty host name"),
        (".", "empty host name"),
        ("fe80::1%lo", "IPv6 zone ids are not supported"),
        ("[fe80::1%25lo]", "IPv6 zone ids are not supported"),
        (
            "localhost]",
            "brackets are only allowed around an IPv6 address",
        ),
        (
            "[localhost",
            "brackets are only allowed around an IPv6 address",
        ),
        ("local\0host", "host name contains a NUL byte"),
        ("localhost:8080", "a port goes in its own argument"),
        ("a..example", "empty label"),
    ] {
        match lookup_and_wait(&mut event_loop, &resolver, host, AddressFamily::Any) {
            Err(err @ SocketError::InvalidAddress(_)) => {
                let message = err.to_string();
                assert!(message.contains(reason), "{host:?}: {message}");
            }
            other => panic!("{host:?}: unexpected {other:?}"),
        }
    }
    assert_eq!(resolver.pool_lookups(), 0);
}

/// Internationalized names are looked up in their IDNA form, as Qt (`QUrl::toAce`) does:
/// `ｌｏｃａｌｈｏｓｔ` (full-width letters) is `localhost`, and full-width digits and dots an IPv4
/// literal; none of them reaches the system resolver in Unicode. A name IDNA refuses fails with
/// `InvalidAddress`.
#[test]
fn internationalized_names_are_looked_up_in_their_ascii_form() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let result = lookup_and_wait(
        &mut event_loop,
        &resolver,
        "ｌｏｃａｌｈｏｓｔ",
        AddressFamily::Any,
    );
    assert_eq!(result.unwrap(), vec![v6, v4]);
    let result = lookup_and_wait(
        &mut event_loop,
        &resolver,
        "１２７．０．０．１",
        AddressFamily::Any,
    );
    assert_eq!(result.unwrap(), vec![v4]);
    let result = lookup_and_wait(
        &mut event_loop,
        &resolver,
        "bü cher.example",
        AddressFamily::Any,
    );
    assert!(
        matches!(result, Err(SocketError::InvalidAddress(_))),
        "{result:?}"
    );
    assert_eq!(resolver.pool_lookups(), 0);
}

/// A lookup made from a callback (inside a turn, before its timer stage) with a timeout that
/// ran out at once is answered on a later turn, as every answer is: its `Timeout` came in the
/// same turn, from the timer stage, although `lookup` promises a later turn.
#[test]
fn a_lookup_timing_out_at_once_from_a_callback_is_answered_on_a_later_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    for timeout in [Duration::ZERO, Duration::from_nanos(1)] {
        resolver.set_timeout(timeout);
        let turn = Rc::new(Cell::new(0u32));
        let turns: Rc<RefCell<Option<(u32, u32)>>> = Rc::default();
        let (r, t, sink) = (resolver.clone(), turn.clone(), turns.clone());
        resolver.lookup("127.0.0.1", move |_| {
            let started = t.get();
            let t = t.clone();
            r.lookup(SYSTEM_NAME, move |result| {
                assert!(
                    matches!(result, Err(SocketError::Timeout(TimeoutPhase::Resolve))),
                    "{result:?}"
                );
                *sink.borrow_mut() = Some((started, t.get()));
            });
        });
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        while turns.borrow().is_none() {
            assert!(Instant::now() < deadline, "never answered");
            turn.set(turn.get() + 1);
            event_loop
                .process_events(Some(Duration::from_millis(5)))
                .unwrap();
        }
        let (started, answered) = turns.take().unwrap();
        assert!(
            answered > started,
            "{timeout:?}: started in turn {started}, answered in the same turn"
        );
    }
}

/// A lookup made from a callback that joins the pool task of its name, whose answer came in
/// before that turn began, is answered on a later turn: it was answered with the others in the
/// same turn, though `lookup` promises a later one.
#[test]
fn a_lookup_joining_a_task_whose_answer_is_in_is_answered_on_a_later_turn() {
    let mut event_loop = EventLoop::new().unwrap();
    let resolver = DnsResolver::instance().unwrap();
    resolver.set_cache_ttl(Duration::ZERO);
    resolver.set_timeout(SAFETY_TIMEOUT);
    // The answer must be in before the turn: retried if the pool was slower than the pause.
    for _attempt in 0..20 {
        let turn = Rc::new(Cell::new(0u32));
        let first: Rc<Cell<Option<u32>>> = Rc::default();
        let joined: Rc<RefCell<Option<(u32, u32)>>> = Rc::default();
        let (t, f) = (turn.clone(), first.clone());
        resolver.lookup(SYSTEM_NAME, move |result| {
            assert!(result.is_ok(), "{result:?}");
            f.set(Some(t.get()));
        });
        let (r, t, sink) = (resolver.clone(), turn.clone(), joined.clone());
        resolver.lookup("127.0.0.1", move |_| {
            let started = t.get();
            let t = t.clone();
            r.lookup(SYSTEM_NAME, move |result| {
                assert!(result.is_ok(), "{result:?}");
                *sink.borrow_mut() = Some((started, t.get()));
            });
        });
        // Lets the pool answer the first lookup before the loop turns.
        std::thread::sleep(Duration::from_millis(100));
        let deadline = Instant::now() + SAFETY_TIMEOUT;
        while joined.borrow().is_none() {
            assert!(Instant::now() < deadline, "never answered");
            turn.set(turn.get() + 1);
            event_loop
                .process_events(Some(Duration::from_millis(5)))
                .unwrap();
        }
        let (started, answered) = joined.take().unwrap();
        assert!(
            answered > started,
            "started in turn {started}, answered in the same turn"
        );
        if first.get() == Some(started) {
            // The case this test is about: the task's answer came in the turn of the join.
            return;
        }
        while resolver.pending_lookups() > 0 {
            event_loop
                .process_events(Some(Duration::from_millis(5)))
                .unwrap();
        }
    }
    panic!("the pool never answered within the pause");
}
