//! [`DnsResolver`]: host-name lookups off the loop thread, answers on it (KDNetwork `DnsResolver`).
//!
//! ```text
//!  lookup(host, cb) on the loop thread ── cb stays here, in a table keyed by LookupId
//!    ├─ IP literal ("127.0.0.1", "::1", "[::1]") ──┐
//!    ├─ localhost, *.localhost: [::1, 127.0.0.1] ───┤
//!    ├─ cached (positive answers, 60 s, 256 names) ─┴─ post ─► cb on a later turn
//!    ├─ the name is being resolved already ─► waits for that task's answer
//!    └─ otherwise ─► worker pool (process-wide, ≤ 4 threads, started on demand)
//!                     getaddrinfo via std's ToSocketAddrs
//!                     LoopHandle::post(name + addresses) ─► loop thread ─► every waiting cb
//!       timeout timer (10 s) ─► cb(Timeout(Resolve)); the late answer is only cached
//! ```
//!
//! One name is resolved by one task at a time: lookups made while it runs wait for its answer,
//! each with its own timeout, so connections opened together to one host cost one getaddrinfo,
//! and retries of a slow name do not take the pool's other threads.
//!
//! Callbacks never cross threads: only the lookup id and the plain result do. A callback always
//! runs on a later loop turn, never inside [`DnsResolver::lookup`], so the caller's state is
//! consistent when it runs. Each lookup ends in exactly one call of its callback, unless it is
//! cancelled (then it never runs).
//!
//! Fixes over KDNetwork: lookups time out (T8: c-ares timeouts were never processed), single
//! lookups can be cancelled, IP literals never reach the resolver, `localhost` and the names
//! under it are loopback whatever /etc/hosts says (RFC 6761 §6.3, as curl and browsers), and the order of addresses is
//! the system resolver's (RFC 6724, as configured in `/etc/gai.conf`), not "IPv4 first".
//!
//! The pool is shared by every loop of the process, so one slow name server cannot start more
//! than [`MAX_RESOLVER_THREADS`] threads however many loops there are; a thread that had nothing
//! to do for 30 s leaves. getaddrinfo cannot be interrupted: a task whose lookups all timed
//! out or were cancelled keeps its thread until the system resolver gives up, but one still
//! queued by then never calls it (while another lookup of the name waits, the task runs). Hosts with an IPv6 zone id (`fe80::1%eth0`) fail with
//! [`SocketError::InvalidAddress`], since answers are [`IpAddr`]s, which cannot carry one.

mod cache;
mod in_flight;
mod names;
mod pool;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use self::cache::AddressCache;
use self::in_flight::{InFlight, TaskKey};
use self::names::cache_key;
pub(crate) use self::names::{
    ascii_host, check_host_name, ends_in_a_number, is_localhost, numeric_ipv4,
};
use self::pool::WorkerPool;
use super::{SocketError, TimeoutPhase};
use crate::foundation::{LoopCore, LoopError, LoopHandle, TimerKey};

/// How long a lookup may take before its callback gets
/// [`SocketError::Timeout`]`(`[`TimeoutPhase::Resolve`]`)`: 10 s.
pub const DEFAULT_LOOKUP_TIMEOUT: Duration = Duration::from_secs(10);

/// How long a successful answer is reused: 60 s (as curl's DNS cache).
pub const DEFAULT_CACHE_TTL: Duration = Duration::from_secs(60);

/// Names the cache of one resolver holds at most: 256. When it is full, expired answers are
/// dropped first, then the one closest to expiry.
pub const MAX_CACHED_NAMES: usize = 256;

/// Threads the process-wide resolver pool runs at most: 4. More lookups wait in a queue.
pub const MAX_RESOLVER_THREADS: usize = 4;

/// Longest host name accepted, in bytes, not counting one trailing dot: 253 (RFC 1035).
/// Longer names fail with [`SocketError::InvalidAddress`] without reaching the resolver.
pub const MAX_HOST_NAME_LEN: usize = 253;

/// What `localhost` and the names under it resolve to, in RFC 6724's order (`::1` first).
const LOCALHOST_ADDRESSES: [IpAddr; 2] = [
    IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
    IpAddr::V4(std::net::Ipv4Addr::LOCALHOST),
];

/// A pool thread with nothing to do for this long leaves.
const IDLE_THREAD_EXIT: Duration = Duration::from_secs(30);

static POOL: WorkerPool = WorkerPool::new("kdnet-dns", MAX_RESOLVER_THREADS, IDLE_THREAD_EXIT);

/// Orders lookups joining a pool task against the task sending its answer: a lookup that
/// joined after the answer was sent may have been made in the turn that delivers it (from a
/// slot, after the answer was taken from the other thread's queue), and is answered on the next
/// turn instead, since no callback runs in the turn of its `lookup` call.
static ANSWER_SEQUENCE: AtomicU64 = AtomicU64::new(1);

/// Tells the answers of one resolver from those of a replaced one (the loop was re-created).
static NEXT_RESOLVER_SERIAL: AtomicU64 = AtomicU64::new(1);

thread_local! {
    static INSTANCE: RefCell<Option<Rc<DnsResolver>>> = const { RefCell::new(None) };
}

/// Which addresses a lookup should return (KDNetwork `DnsResolver::AddressFamily`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum AddressFamily {
    /// IPv4 and IPv6, in the system resolver's order.
    #[default]
    Any,
    /// IPv4 only.
    IPv4,
    /// IPv6 only.
    IPv6,
}

/// Identifies one lookup, for [`DnsResolver::cancel`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LookupId(u64);

/// The answer a lookup callback receives.
pub type LookupResult = Result<Vec<IpAddr>, SocketError>;

type LookupCallback = Box<dyn FnOnce(LookupResult)>;

/// Resolves host names without blocking the event loop (KDNetwork `DnsResolver`).
///
/// One resolver per loop thread: [`instance`](Self::instance). Callbacks run on the loop thread,
/// always on a later turn than the [`lookup`](Self::lookup) call.
///
/// ```
/// use kdnet::EventLoop;
/// use kdnet::network::dns::DnsResolver;
///
/// let mut event_loop = EventLoop::new().unwrap();
/// let handle = event_loop.handle();
/// let resolver = DnsResolver::instance().unwrap();
/// resolver.lookup("127.0.0.1", move |result| {
///     assert_eq!(result.unwrap(), vec!["127.0.0.1".parse::<std::net::IpAddr>().unwrap()]);
///     handle.quit();
/// });
/// assert_eq!(event_loop.run(), 0);
/// ```
pub struct DnsResolver {
    core: Weak<LoopCore>,
    handle: LoopHandle,
    serial: u64,
    self_weak: Weak<DnsResolver>,
    timeout: Cell<Duration>,
    pool_lookups: Cell<u64>,
    /// Bumped by `clear_cache`: answers of lookups started before are not cached.
    cache_epoch: Cell<u64>,
    next_id: Cell<u64>,
    pending: RefCell<HashMap<u64, PendingLookup>>,
    /// Pool tasks in flight, each with the lookups waiting for it (one task per name).
    in_flight: RefCell<InFlight>,
    cache: RefCell<AddressCache>,
}

struct PendingLookup {
    host: String,
    family: AddressFamily,
    callback: LookupCallback,
    /// Only lookups that went to the pool have a timer, a deadline and a task they wait for.
    timer: Option<TimerKey>,
    deadline: Option<Instant>,
    task: Option<TaskKey>,
    /// [`ANSWER_SEQUENCE`] when it went to the pool (0 for the others).
    joined: u64,
}

/// What the pool sends back: addresses in resolver order (deduplicated), or its message.
type PoolAnswer = Result<Vec<IpAddr>, String>;

/// How a lookup is answered.
enum Route {
    Now(LookupResult),
    Pool,
}

impl DnsResolver {
    /// The resolver of the calling thread's event loop (created on first use).
    ///
    /// Fails with [`LoopError::NoEventLoop`] without a loop. If the thread's loop was dropped and
    /// a new one created, the old resolver (and its unfinished lookups) is dropped and a new one
    /// returned.
    pub fn instance() -> Result<Rc<DnsResolver>, LoopError> {
        let core = LoopCore::current()?;
        // try_with: during thread teardown (a socket dropped late) this is "no loop", not a panic.
        INSTANCE
            .try_with(|slot| {
                let mut slot = slot.borrow_mut();
                if let Some(existing) = slot.as_ref() {
                    if Weak::ptr_eq(&existing.core, &Rc::downgrade(&core)) {
                        return Ok(Rc::clone(existing));
                    }
                }
                let resolver = DnsResolver::for_loop(&core);
                let replaced = slot.replace(Rc::clone(&resolver));
                drop(slot);
                // Dropped without the slot borrowed: its callbacks' captures may call `instance()`.
                drop(replaced);
                Ok(resolver)
            })
            .unwrap_or(Err(LoopError::NoEventLoop))
    }

    /// Looks up `host` (a name or an IP literal, IPv6 optionally in brackets) and calls
    /// `callback` with its addresses on a later loop turn. An internationalized name
    /// (`bücher.example`) is looked up in its IDNA form (`xn--bcher-kva.example`), as Qt does.
    ///
    /// `localhost`, `localhost.` and names under it (`app.localhost`, any case) are answered
    /// with `[::1, 127.0.0.1]` (the order RFC 6724 gives them) without asking the system, as
    /// RFC 6761 §6.3 asks: an /etc/hosts or a name server mapping them elsewhere is ignored.
    ///
    /// Errors: [`SocketError::Lookup`] with the resolver's message (reason `"no addresses"` when
    /// it found none), [`SocketError::Timeout`]`(`[`TimeoutPhase::Resolve`]`)`, or
    /// [`SocketError::InvalidAddress`] for an empty, too long or malformed host (a label over 63
    /// bytes or empty, a character no URL host may hold such as a space, `:`, `/` or `%`, an IPv6
    /// zone id, a host ending in a number that is no IPv4 address such as `192.168.1.256`, as
    /// URLs refuse it); those never reach the system resolver. IPv4 in the forms URLs accept
    /// (`127.1`, `0x7f.1`, `010.0.0.1` = 8.0.0.1, octal) are read by getaddrinfo as URLs read
    /// them (`inet_aton`). If the loop
    /// this resolver belongs to is gone, the callback is dropped without running.
    pub fn lookup(&self, host: &str, callback: impl FnOnce(LookupResult) + 'static) -> LookupId {
        self.lookup_family(host, AddressFamily::Any, callback)
    }

    /// Like [`lookup`](Self::lookup), keeping only addresses of `family` (reason
    /// `"no addresses (IPv6 requested)"` when none is left). Asked for IPv4, an IPv4-mapped
    /// IPv6 address (`::ffff:127.0.0.1`) is answered as its IPv4 address.
    ///
    /// ```
    /// use kdnet::EventLoop;
    /// use kdnet::network::dns::{AddressFamily, DnsResolver};
    ///
    /// let mut event_loop = EventLoop::new().unwrap();
    /// let handle = event_loop.handle();
    /// DnsResolver::instance().unwrap().lookup_family("[::1]", AddressFamily::IPv4, move |result| {
    ///     assert!(result.is_err()); // ::1 is not an IPv4 address
    ///     handle.quit();
    /// });
    /// event_loop.run();
    /// ```
    pub fn lookup_family(
        &self,
        host: &str,
        family: AddressFamily,
        callback: impl FnOnce(LookupResult) + 'static,
    ) -> LookupId {
        let id = self.next_id.get();
        self.next_id.set(id.wrapping_add(1));
        let Some(core) = self.core.upgrade() else {
            log::warn!("DNS lookup of {host:?} dropped: the event loop is gone");
            return LookupId(id);
        };
        let mut pending = PendingLookup {
            host: host.to_owned(),
            family,
            callback: Box::new(callback),
            timer: None,
            deadline: None,
            task: None,
            joined: 0,
        };
        // An internationalized name is resolved in its IDNA form.
        let ascii = ascii_host(host);
        let (host, route) = match &ascii {
            Ok(ascii) => (&**ascii, self.route(ascii)),
            Err(e) => (host, Route::Now(Err(e.clone()))),
        };
        match route {
            Route::Now(result) => {
                self.pending.borrow_mut().insert(id, pending);
                let resolver = self.self_weak.clone();
                core.post(Box::new(move || {
                    if let Some(resolver) = resolver.upgrade() {
                        resolver.finish(id, result);
                    }
                }));
            }
            Route::Pool => {
                let key: TaskKey = (cache_key(host), self.cache_epoch.get());
                pending.task = Some(key.clone());
                pending.joined = ANSWER_SEQUENCE.fetch_add(1, Ordering::SeqCst);
                let timeout = self.timeout.get();
                // A timeout too large for Instant arithmetic means "no timeout".
                pending.deadline = Instant::now().checked_add(timeout);
                if pending.deadline.is_some() {
                    let resolver = self.self_weak.clone();
                    pending.timer = Some(core.call_after(timeout, move || {
                        if let Some(resolver) = resolver.upgrade() {
                            resolver.timer_fired(id);
                        }
                    }));
                }
                self.pending.borrow_mut().insert(id, pending);
                let new_task = self.in_flight.borrow_mut().join(key.clone(), id);
                if let Some(nobody_waits) = new_task {
                    self.start_pool_lookup(&core, key, host, nobody_waits);
                }
            }
        }
        LookupId(id)
    }

    /// Cancels one lookup: its callback will not run. Returns `false` if it already finished
    /// (or was cancelled).
    pub fn cancel(&self, id: LookupId) -> bool {
        let removed = self.pending.borrow_mut().remove(&id.0);
        match removed {
            Some(lookup) => {
                self.discard(id.0, lookup);
                true
            }
            None => false,
        }
    }

    /// Cancels every unfinished lookup of this resolver (KDNetwork `cancelLookups`).
    pub fn cancel_lookups(&self) {
        let all: Vec<(u64, PendingLookup)> = self.pending.borrow_mut().drain().collect();
        for (id, lookup) in all {
            self.discard(id, lookup);
        }
    }

    /// Sets the timeout of lookups started from now on ([`DEFAULT_LOOKUP_TIMEOUT`] by default).
    /// `Duration::MAX` waits as long as the system resolver does. Answers from literals,
    /// `localhost` and the cache never time out.
    pub fn set_timeout(&self, timeout: Duration) {
        self.timeout.set(timeout);
    }

    /// The timeout of new lookups.
    pub fn timeout(&self) -> Duration {
        self.timeout.get()
    }

    /// Sets how long answers are reused ([`DEFAULT_CACHE_TTL`] by default), counted from when
    /// each came, for the answers already cached too (a TTL lowered after a DNS change stops
    /// older answers at once); zero disables the cache and empties it.
    pub fn set_cache_ttl(&self, ttl: Duration) {
        self.cache.borrow_mut().set_ttl(ttl);
    }

    /// Forgets every cached answer. Answers of lookups still in flight are delivered but not
    /// cached: they may have been read before whatever change the clearing is for.
    pub fn clear_cache(&self) {
        self.cache_epoch.set(self.cache_epoch.get().wrapping_add(1));
        self.cache.borrow_mut().clear();
    }

    /// Lookups started and not yet finished or cancelled.
    pub fn pending_lookups(&self) -> usize {
        self.pending.borrow().len()
    }

    /// Pool tasks this resolver started (literals, `localhost`, cache hits and lookups that
    /// joined a task in flight for their name do not count).
    #[doc(hidden)]
    pub fn pool_lookups(&self) -> u64 {
        self.pool_lookups.get()
    }

    /// Names whose pool task is under way (a lookup of one of them joins that task instead of
    /// starting one; an abandoned task stays until its answer comes).
    #[doc(hidden)]
    pub fn pool_tasks_in_flight(&self) -> usize {
        self.in_flight.borrow().len()
    }

    /// Threads the process-wide resolver pool runs right now.
    #[doc(hidden)]
    pub fn pool_threads() -> usize {
        POOL.thread_count()
    }

    fn for_loop(core: &Rc<LoopCore>) -> Rc<DnsResolver> {
        Rc::new_cyclic(|self_weak| DnsResolver {
            core: Rc::downgrade(core),
            handle: core.handle(),
            serial: NEXT_RESOLVER_SERIAL.fetch_add(1, Ordering::Relaxed),
            self_weak: self_weak.clone(),
            timeout: Cell::new(DEFAULT_LOOKUP_TIMEOUT),
            pool_lookups: Cell::new(0),
            cache_epoch: Cell::new(0),
            next_id: Cell::new(1),
            pending: RefCell::new(HashMap::new()),
            in_flight: RefCell::new(InFlight::default()),
            cache: RefCell::new(AddressCache::new(DEFAULT_CACHE_TTL, MAX_CACHED_NAMES)),
        })
    }

    fn route(&self, host: &str) -> Route {
        if let Some(ip) = resolve_literal(host) {
            return Route::Now(Ok(vec![ip]));
        }
        if let Err(e) = check_host_name(host) {
            return Route::Now(Err(e));
        }
        if is_localhost(host) {
            return Route::Now(Ok(LOCALHOST_ADDRESSES.to_vec()));
        }
        let mut cache = self.cache.borrow_mut();
        if cache.is_enabled() {
            if let Some(addresses) = cache.get(&cache_key(host), Instant::now()) {
                return Route::Now(Ok(addresses));
            }
        }
        Route::Pool
    }

    /// Starts the pool task of `key`; `nobody_waits` tells it to skip getaddrinfo.
    fn start_pool_lookup(
        &self,
        core: &LoopCore,
        key: TaskKey,
        host: &str,
        nobody_waits: Arc<AtomicBool>,
    ) {
        self.pool_lookups.set(self.pool_lookups.get() + 1);
        let host = host.to_owned();
        let handle = self.handle.clone();
        let serial = self.serial;
        let task_key = key.clone();
        let task = Box::new(move || {
            // Everyone waiting left while this was queued: say so rather than resolve.
            let answer = (!nobody_waits.load(Ordering::Acquire)).then(|| resolve_blocking(&host));
            // Fails only when the loop is gone, and then nobody is waiting.
            let sent = ANSWER_SEQUENCE.fetch_add(1, Ordering::SeqCst);
            let _ = handle.post(move || deliver_pool_answer(serial, task_key, answer, sent));
        });
        if let Err(e) = POOL.submit(task) {
            // The task never runs: the lookups waiting for it fail (on a later turn).
            let waiters = self.in_flight.borrow_mut().finish(&key);
            let reason = format!("could not start a resolver thread: {e}");
            let resolver = self.self_weak.clone();
            core.post(Box::new(move || {
                if let Some(resolver) = resolver.upgrade() {
                    for id in waiters {
                        let host = resolver.pending_host(id);
                        let reason = reason.clone();
                        resolver.finish(id, Err(SocketError::Lookup { host, reason }));
                    }
                }
            }));
        }
    }

    fn pending_host(&self, id: u64) -> String {
        self.pending
            .borrow()
            .get(&id)
            .map(|l| l.host.clone())
            .unwrap_or_default()
    }

    /// The pool task of `key` ended: cache its answer (unless the cache was cleared since it
    /// started), then answer every lookup waiting for it. `None`: it skipped getaddrinfo because
    /// nobody waited; lookups that joined since then start it again.
    fn pool_answered(&self, key: TaskKey, answer: Option<PoolAnswer>, sent: u64) {
        let waiters = self.in_flight.borrow_mut().finish(&key);
        let Some(answer) = answer else {
            return self.restart(key, waiters);
        };
        let now = Instant::now();
        if let (Ok(addresses), true) = (&answer, key.1 == self.cache_epoch.get()) {
            self.cache
                .borrow_mut()
                .insert(key.0, addresses.clone(), now);
        }
        for id in waiters {
            // Each callback may have cancelled the lookups after it.
            let Some((deadline, joined)) = self
                .pending
                .borrow()
                .get(&id)
                .map(|l| (l.deadline, l.joined))
            else {
                continue;
            };
            // Past the deadline the answer counts as late even if the timer has not fired yet
            // (both can become due in the same turn), so a short timeout is reliably a timeout.
            let result = if deadline.is_some_and(|deadline| now >= deadline) {
                Err(SocketError::Timeout(TimeoutPhase::Resolve))
            } else {
                answer.clone().map_err(|reason| SocketError::Lookup {
                    host: self.pending_host(id),
                    reason,
                })
            };
            if joined > sent {
                // Perhaps made in this turn: answered on the next (see ANSWER_SEQUENCE).
                if let Some(core) = self.core.upgrade() {
                    let resolver = self.self_weak.clone();
                    core.post(Box::new(move || {
                        if let Some(resolver) = resolver.upgrade() {
                            resolver.finish(id, result);
                        }
                    }));
                }
                continue;
            }
            self.finish(id, result);
        }
    }

    /// Starts the task of `key` again for `waiters` (it skipped, but they joined meanwhile).
    fn restart(&self, key: TaskKey, waiters: Vec<u64>) {
        let Some(core) = self.core.upgrade() else {
            return;
        };
        for id in waiters {
            if !self.pending.borrow().contains_key(&id) {
                continue;
            }
            let new_task = self.in_flight.borrow_mut().join(key.clone(), id);
            if let Some(nobody_waits) = new_task {
                // The name as the user gave it: resolved in its IDNA form, as at first.
                let host = self.pending_host(id);
                let ascii = ascii_host(&host).map_or(host.clone(), |h| h.into_owned());
                self.start_pool_lookup(&core, key.clone(), &ascii, nobody_waits);
            }
        }
    }

    /// The timeout timer of lookup `id` fired (and removed itself). The lookup ends on the next
    /// turn: one made from a slot earlier in this turn, with a timeout that ran out at once,
    /// would otherwise be answered in the turn of its `lookup` call.
    fn timer_fired(&self, id: u64) {
        match self.pending.borrow_mut().get_mut(&id) {
            Some(lookup) => lookup.timer = None,
            None => return,
        }
        let (Some(core), resolver) = (self.core.upgrade(), self.self_weak.clone()) else {
            return;
        };
        core.post(Box::new(move || {
            if let Some(resolver) = resolver.upgrade() {
                resolver.expire(id);
            }
        }));
    }

    fn expire(&self, id: u64) {
        let Some(lookup) = self.pending.borrow_mut().remove(&id) else {
            return;
        };
        if let Some(task) = &lookup.task {
            self.in_flight.borrow_mut().leave(task, id);
        }
        log::debug!("DNS lookup of {:?} timed out", lookup.host);
        (lookup.callback)(Err(SocketError::Timeout(TimeoutPhase::Resolve)));
    }

    /// Ends lookup `id` with `result` (filtered by its family) unless it was cancelled.
    fn finish(&self, id: u64, result: LookupResult) {
        let Some(lookup) = self.pending.borrow_mut().remove(&id) else {
            return;
        };
        if let (Some(timer), Some(core)) = (lookup.timer, self.core.upgrade()) {
            core.timer_remove(timer);
        }
        let result =
            result.and_then(|addresses| keep_family(&lookup.host, lookup.family, addresses));
        (lookup.callback)(result);
    }

    /// Forgets a lookup without calling it. Must be called without `pending` borrowed: dropping
    /// the callback drops its captures.
    fn discard(&self, id: u64, lookup: PendingLookup) {
        if let Some(task) = &lookup.task {
            self.in_flight.borrow_mut().leave(task, id);
        }
        if let (Some(timer), Some(core)) = (lookup.timer, self.core.upgrade()) {
            core.timer_remove(timer);
        }
        drop(lookup);
    }
}

impl Drop for DnsResolver {
    fn drop(&mut self) {
        let all: Vec<(u64, PendingLookup)> = self.pending.get_mut().drain().collect();
        for (id, lookup) in all {
            self.discard(id, lookup);
        }
    }
}

impl fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DnsResolver")
            .field("pending", &self.pending.borrow().len())
            .field("in_flight", &self.in_flight.borrow().len())
            .field("cached", &self.cache.borrow().len())
            .field("timeout", &self.timeout.get())
            .finish()
    }
}

/// Parses `host` as an IP address literal: `127.0.0.1`, `::1`, or `[::1]` (brackets only around
/// IPv6, as in URLs). Returns `None` for anything else, names included.
///
/// ```
/// use kdnet::network::dns::resolve_literal;
/// use std::net::{IpAddr, Ipv6Addr};
///
/// assert_eq!(resolve_literal("[::1]"), Some(IpAddr::V6(Ipv6Addr::LOCALHOST)));
/// assert_eq!(resolve_literal("localhost"), None);
/// assert_eq!(resolve_literal("[127.0.0.1]"), None);
/// ```
pub fn resolve_literal(host: &str) -> Option<IpAddr> {
    match host.strip_prefix('[').and_then(|h| h.strip_suffix(']')) {
        Some(inner) => inner.parse().ok().filter(IpAddr::is_ipv6),
        None => host.parse().ok(),
    }
}

/// Runs on the loop thread: hands a pool answer to the resolver that asked, if it still exists.
fn deliver_pool_answer(serial: u64, key: TaskKey, answer: Option<PoolAnswer>, sent: u64) {
    let resolver = INSTANCE.with(|slot| {
        slot.borrow()
            .as_ref()
            .filter(|r| r.serial == serial)
            .cloned()
    });
    if let Some(resolver) = resolver {
        resolver.pool_answered(key, answer, sent);
    }
}

/// The blocking part, on a pool thread.
fn resolve_blocking(host: &str) -> PoolAnswer {
    let found = (host, 0u16).to_socket_addrs().map_err(|e| e.to_string())?;
    Ok(unique_ips(found))
}

/// The addresses in their order, each once (getaddrinfo may list an address per socket type).
fn unique_ips(found: impl Iterator<Item = SocketAddr>) -> Vec<IpAddr> {
    let mut addresses: Vec<IpAddr> = Vec::new();
    for address in found {
        if !addresses.contains(&address.ip()) {
            addresses.push(address.ip());
        }
    }
    addresses
}

fn keep_family(host: &str, family: AddressFamily, addresses: Vec<IpAddr>) -> LookupResult {
    let (addresses, reason) = match family {
        AddressFamily::Any => (addresses, "no addresses"),
        AddressFamily::IPv4 => {
            // An IPv4-mapped IPv6 address is its IPv4 address (once).
            let mut v4: Vec<IpAddr> = Vec::with_capacity(addresses.len());
            for address in addresses {
                let address = match address {
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(mapped) => IpAddr::V4(mapped),
                        None => continue,
                    },
                    ipv4 => ipv4,
                };
                if !v4.contains(&address) {
                    v4.push(address);
                }
            }
            (v4, "no addresses (IPv4 requested)")
        }
        AddressFamily::IPv6 => (
            addresses.into_iter().filter(IpAddr::is_ipv6).collect(),
            "no addresses (IPv6 requested)",
        ),
    };
    if addresses.is_empty() {
        return Err(SocketError::Lookup {
            host: host.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(addresses)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, Ipv6Addr};

    #[test]
    fn literals_parse_with_and_without_brackets() {
        assert_eq!(
            resolve_literal("127.0.0.1"),
            Some(IpAddr::V4(Ipv4Addr::LOCALHOST))
        );
        assert_eq!(
            resolve_literal("::1"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(
            resolve_literal("[::1]"),
            Some(IpAddr::V6(Ipv6Addr::LOCALHOST))
        );
        assert_eq!(resolve_literal("[127.0.0.1]"), None);
        assert_eq!(resolve_literal("[::1"), None);
        assert_eq!(resolve_literal("localhost"), None);
        assert_eq!(resolve_literal(""), None);
    }

    #[test]
    fn family_filter_keeps_order_and_reports_empty() {
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
        assert_eq!(
            keep_family("h", AddressFamily::Any, vec![v6, v4]).unwrap(),
            vec![v6, v4]
        );
        assert_eq!(
            keep_family("h", AddressFamily::IPv4, vec![v6, v4]).unwrap(),
            vec![v4]
        );
        match keep_family("h", AddressFamily::IPv6, vec![v4]) {
            Err(SocketError::Lookup { host, reason }) => {
                assert_eq!(host, "h");
                assert_eq!(reason, "no addresses (IPv6 requested)");
            }
            other => panic!("unexpected {other:?}"),
        }
        match keep_family("h", AddressFamily::Any, vec![]) {
            Err(SocketError::Lookup { reason, .. }) => assert_eq!(reason, "no addresses"),
            other => panic!("unexpected {other:?}"),
        }
    }

    /// An IPv4-mapped IPv6 address (`::ffff:127.0.0.1`) is an IPv4 address written as IPv6:
    /// asked for IPv4 it is answered as that IPv4 address (as Go's `LookupIP("ip4", …)`), not
    /// refused with "no addresses (IPv4 requested)".
    #[test]
    fn a_mapped_address_asked_for_as_ipv4_is_its_ipv4_address() {
        let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
        let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
        assert_eq!(
            keep_family("h", AddressFamily::IPv4, vec![mapped]).unwrap(),
            vec![v4]
        );
        // Once, when the answer also has it as IPv4.
        assert_eq!(
            keep_family("h", AddressFamily::IPv4, vec![mapped, v4]).unwrap(),
            vec![v4]
        );
        assert_eq!(
            keep_family("h", AddressFamily::Any, vec![mapped]).unwrap(),
            vec![mapped]
        );
        assert_eq!(
            keep_family("h", AddressFamily::IPv6, vec![mapped]).unwrap(),
            vec![mapped]
        );
    }

    #[test]
    fn answers_keep_resolver_order_without_duplicates() {
        let a: SocketAddr = "[::1]:0".parse().unwrap();
        let b: SocketAddr = "127.0.0.1:0".parse().unwrap();
        let b_other_port: SocketAddr = "127.0.0.1:80".parse().unwrap();
        assert_eq!(
            unique_ips([a, b, a, b_other_port].into_iter()),
            vec![a.ip(), b.ip()]
        );
        assert_eq!(
            resolve_blocking("127.0.0.1").unwrap(),
            vec![IpAddr::V4(Ipv4Addr::LOCALHOST)]
        );
    }
}
