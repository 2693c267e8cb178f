//! A model-based test of `DnsResolver`: generated scripts of lookups (`lookup` and
//! `lookup_family` for any, IPv4 or IPv6 addresses) of names that resolve without a network (IP
//! literals, `localhost` and names under it, hosts no resolver can answer, IPv4 in the forms
//! URLs accept, which only getaddrinfo reads, and the names /etc/hosts holds), cancels of single
//! lookups (pending, answered or cancelled already) and of all, timeout changes (zero, 1 ns,
//! 2 ms, the default 10 s, none), cache TTL changes (zero, 1 ms, 60 s) and cache clears, made from outside
//! the loop and from lookup callbacks, with loop turns of 0, 2 or 20 ms between them and waits
//! until everything is answered.
//!
//! The test runs the real resolver, logs every call and every callback in order, and replays the
//! log through a plain reference model of the documented behaviour (module docs of
//! `kdnet::network::dns`, the docs of `DnsResolver`, PORTING.md). What the model says:
//! - a callback runs at most once, never inside `lookup`, and on a later turn than the lookup;
//!   a cancelled lookup's callback never runs, and `cancel` returns whether the lookup was still
//!   pending; every lookup not cancelled is answered (within the timeout, or when none: soon);
//!   `pending_lookups()` counts the lookups started and neither answered nor cancelled;
//! - literals, `localhost` names, malformed hosts and answers the cache holds for certain come
//!   in the very next turn, whatever the timeout; a literal answers itself, `localhost` names
//!   `[::1, 127.0.0.1]`, a malformed host `InvalidAddress`, a name what getaddrinfo says; each
//!   filtered by family (an IPv4-mapped address counts as IPv4; none left: `Lookup` with
//!   "no addresses (IPv4 requested)" and the host as given);
//! - a name the cache cannot answer goes to the pool: a zero or 1 ns timeout ends it with
//!   `Timeout(Resolve)`; 10 s or none with the answer; 2 ms with either;
//! - an answer of the pool is cached (unless the cache was cleared since its lookup began, or
//!   the TTL is zero), for 60 s or the TTL set later; lookups of a name made while it is resolved
//!   share one pool task (`pool_lookups()` counts the tasks; a task nobody waits for any more may
//!   be started again for a lookup that joins it too late); `pool_tasks_in_flight()` lies
//!   between the tasks certainly and possibly running, and is zero once all has been answered;
//!   the pool never runs more than `MAX_RESOLVER_THREADS` threads.
//!
//! Meanwhile another thread's loop resolves names through the same process-wide pool, checking
//! that each answer reaches the resolver that asked.
//!
//! Where the timing decides (a 2 ms timeout, a task that may or may not have ended, an entry
//! with a 1 ms TTL), the model keeps every allowed outcome.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::rc::Rc;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::dns::{
    AddressFamily, DEFAULT_LOOKUP_TIMEOUT, DnsResolver, LookupId, LookupResult,
    MAX_RESOLVER_THREADS,
};
use kdnet::network::{SocketError, TimeoutPhase};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const DEFAULT_CASES: u32 = 120;
const TIMEOUTS: [Duration; 5] = [
    Duration::ZERO,
    Duration::from_nanos(1),
    Duration::from_millis(2),
    DEFAULT_LOOKUP_TIMEOUT,
    Duration::MAX,
];
const TTLS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(1),
    Duration::from_secs(60),
];
const WAITS: [Duration; 3] = [
    Duration::ZERO,
    Duration::from_millis(2),
    Duration::from_millis(20),
];
const FAMILIES: [AddressFamily; 3] = [AddressFamily::Any, AddressFamily::IPv4, AddressFamily::IPv6];

/// Hosts answered without the pool, and what they answer (before the family filter).
fn immediate_hosts() -> Vec<(&'static str, Result<Vec<IpAddr>, ()>)> {
    let v4 = IpAddr::V4(Ipv4Addr::LOCALHOST);
    let v6 = IpAddr::V6(Ipv6Addr::LOCALHOST);
    let mapped = IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped());
    vec![
        ("127.0.0.1", Ok(vec![v4])),
        ("::1", Ok(vec![v6])),
        ("[::1]", Ok(vec![v6])),
        ("::ffff:127.0.0.1", Ok(vec![mapped])),
        ("localhost", Ok(vec![v6, v4])),
        ("LocalHost.", Ok(vec![v6, v4])),
        ("app.localhost", Ok(vec![v6, v4])),
        ("ｌｏｃａｌｈｏｓｔ", Ok(vec![v6, v4])),
        ("", Err(())),
        ("a..b", Err(())),
        ("192.168.1.256", Err(())),
        ("fe80::1%lo", Err(())),
        ("[127.0.0.1]", Err(())),
    ]
}

/// Hosts only the pool answers (getaddrinfo, without the network): IPv4 in URL forms, and the
/// names /etc/hosts holds. With the cache key (lower case) and the system's answer.
fn pool_hosts() -> &'static Vec<(String, String, Vec<IpAddr>)> {
    static HOSTS: OnceLock<Vec<(String, String, Vec<IpAddr>)>> = OnceLock::new();
    HOSTS.get_or_init(|| {
        let mut names: Vec<String> = ["0x7f.1", "0X7F.1", "127.1", "2130706433"]
            .into_iter()
            .map(String::from)
            .collect();
        // Names of /etc/hosts (not localhost ones, which never reach the system), and one in
        // upper case.
        if let Ok(hosts) = std::fs::read_to_string("/etc/hosts") {
            let mut from_file: Vec<String> = hosts
                .lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(|l| {
                    l.split_whitespace()
                        .skip(1)
                        .map(String::from)
                        .collect::<Vec<_>>()
                })
                .filter(|n| {
                    !n.to_ascii_lowercase().contains("localhost")
                        && n.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
                        && !n.chars().all(|c| c.is_ascii_digit())
                })
                .collect();
            from_file.sort();
            from_file.dedup();
            from_file.truncate(2);
            if let Some(first) = from_file.first() {
                let upper = first.to_ascii_uppercase();
                from_file.push(upper);
            }
            names.extend(from_file);
        }
        names
            .into_iter()
            .filter_map(|name| {
                let found = (name.as_str(), 0u16).to_socket_addrs().ok()?;
                let mut ips: Vec<IpAddr> = Vec::new();
                for a in found.map(|a: SocketAddr| a.ip()) {
                    if !ips.contains(&a) {
                        ips.push(a);
                    }
                }
                (!ips.is_empty()).then(|| (name.clone(), name.to_ascii_lowercase(), ips))
            })
            .collect()
    })
}

// ---- scripts ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug)]
enum Host {
    Immediate(usize),
    Pool(usize),
}

#[derive(Clone, Debug)]
enum Act {
    /// A lookup; its callback does `.2` when it runs.
    Lookup(Host, usize, Vec<Act>),
    /// Cancels the lookup started `.0`th (in the order of starting), if there is one.
    Cancel(usize),
    CancelAll,
    SetTimeout(usize),
    SetTtl(usize),
    ClearCache,
}

#[derive(Clone, Debug)]
enum Step {
    Act(Act),
    Turn(usize),
    /// Turns until nothing is pending or in flight.
    Settle,
}

fn host() -> impl Strategy<Value = Host> {
    let pool = pool_hosts().len().max(1);
    prop_oneof![
        2 => (0..immediate_hosts().len()).prop_map(Host::Immediate),
        3 => (0..pool).prop_map(Host::Pool),
    ]
}

fn simple_act() -> impl Strategy<Value = Act> {
    prop_oneof![
        6 => (host(), 0..FAMILIES.len()).prop_map(|(h, f)| Act::Lookup(h, f, Vec::new())),
        3 => (0..12usize).prop_map(Act::Cancel),
        1 => Just(Act::CancelAll),
        2 => (0..TIMEOUTS.len()).prop_map(Act::SetTimeout),
        1 => (0..TTLS.len()).prop_map(Act::SetTtl),
        1 => Just(Act::ClearCache),
    ]
}

fn act() -> impl Strategy<Value = Act> {
    prop_oneof![
        3 => simple_act(),
        2 => (host(), 0..FAMILIES.len(), prop::collection::vec(simple_act(), 1..3))
            .prop_map(|(h, f, then)| Act::Lookup(h, f, then)),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        8 => act().prop_map(Step::Act),
        4 => (0..WAITS.len()).prop_map(Step::Turn),
        1 => Just(Step::Settle),
    ]
}

fn script() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(step(), 4..36).prop_map(|mut steps| {
        steps.push(Step::Settle);
        steps
    })
}

// ---- the log ----------------------------------------------------------------------------------

#[derive(Debug)]
enum Ev {
    /// Lookup `.0` (index in starting order) of `host` started.
    Started(usize, Host, usize),
    Answered(usize, LookupResult, bool),
    Cancelled(usize, bool),
    CancelAll,
    SetTimeout(usize),
    SetTtl(usize),
    ClearCache,
    TurnStart,
    TurnEnd,
    Counters {
        pending: usize,
        pool_lookups: u64,
        tasks: usize,
        threads: usize,
    },
    Settled,
}

struct Ctx {
    resolver: Rc<DnsResolver>,
    ids: RefCell<Vec<LookupId>>,
    log: RefCell<Vec<Ev>>,
    in_lookup: Cell<bool>,
}

fn host_name(host: Host) -> String {
    match host {
        Host::Immediate(i) => immediate_hosts()[i].0.to_owned(),
        Host::Pool(i) => pool_hosts()[i].0.clone(),
    }
}

fn act_real(ctx: &Rc<Ctx>, act: &Act) {
    match act {
        Act::Lookup(host, family, then) => {
            let index = ctx.ids.borrow().len();
            // Started first: the log keeps the order of what the model must see.
            ctx.log
                .borrow_mut()
                .push(Ev::Started(index, *host, *family));
            let c = ctx.clone();
            let then = then.clone();
            ctx.in_lookup.set(true);
            let id =
                ctx.resolver
                    .lookup_family(&host_name(*host), FAMILIES[*family], move |result| {
                        let inside = c.in_lookup.get();
                        c.log.borrow_mut().push(Ev::Answered(index, result, inside));
                        for act in &then {
                            act_real(&c, act);
                        }
                    });
            ctx.in_lookup.set(false);
            ctx.ids.borrow_mut().push(id);
        }
        Act::Cancel(k) => {
            let id = ctx.ids.borrow().get(*k).copied();
            if let Some(id) = id {
                let cancelled = ctx.resolver.cancel(id);
                ctx.log.borrow_mut().push(Ev::Cancelled(*k, cancelled));
            }
        }
        Act::CancelAll => {
            ctx.log.borrow_mut().push(Ev::CancelAll);
            ctx.resolver.cancel_lookups();
        }
        Act::SetTimeout(t) => {
            ctx.resolver.set_timeout(TIMEOUTS[*t]);
            ctx.log.borrow_mut().push(Ev::SetTimeout(*t));
        }
        Act::SetTtl(t) => {
            ctx.resolver.set_cache_ttl(TTLS[*t]);
            ctx.log.borrow_mut().push(Ev::SetTtl(*t));
        }
        Act::ClearCache => {
            ctx.resolver.clear_cache();
            ctx.log.borrow_mut().push(Ev::ClearCache);
        }
    }
}

fn counters(ctx: &Ctx) {
    let ev = Ev::Counters {
        pending: ctx.resolver.pending_lookups(),
        pool_lookups: ctx.resolver.pool_lookups(),
        tasks: ctx.resolver.pool_tasks_in_flight(),
        threads: DnsResolver::pool_threads(),
    };
    ctx.log.borrow_mut().push(ev);
}

// ---- the model -----------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Tri {
    No,
    Maybe,
    Yes,
}

#[derive(Clone, Debug, PartialEq)]
enum State {
    Pending,
    Answered,
    Cancelled,
}

#[derive(Debug)]
struct MLookup {
    host: Host,
    family: AddressFamily,
    state: State,
    /// The turn it was started in (0: before the first).
    turn: u64,
    /// Answered in exactly the next turn (literals, localhost, malformed, certain cache hits).
    immediate: bool,
    /// The pool task (cache key, epoch) it waits for: certainly (`Yes`) or perhaps, and the
    /// generation of the key when it started.
    task: Option<((String, u64), Tri)>,
    generation: u64,
    /// It certainly started its task: it is answered first, right after the answer is cached
    /// (a lookup that joined may be answered a turn later, when the TTL may have changed).
    starter: bool,
    timeout: Duration,
    /// Whether it may have been answered from the cache (so an `Ok` is allowed whatever the
    /// timeout).
    maybe_cached: bool,
}

#[derive(Default)]
struct Model {
    lookups: Vec<MLookup>,
    /// Turns begun.
    turn: u64,
    in_turn: bool,
    timeout: usize,
    ttl: usize,
    epoch: u64,
    cache: HashMap<String, Tri>,
    tasks: HashMap<(String, u64), Tri>,
    /// Bumped when a lookup may have started a new task of that key: an answer ends the task
    /// only if no lookup may have started another since.
    generations: HashMap<(String, u64), u64>,
    pool_lo: u64,
    pool_hi: u64,
}

fn keep_family(host: &str, family: AddressFamily, addresses: &[IpAddr]) -> LookupResult {
    let (kept, reason): (Vec<IpAddr>, &str) = match family {
        AddressFamily::Any => (addresses.to_vec(), "no addresses"),
        AddressFamily::IPv4 => {
            let mut v4 = Vec::new();
            for a in addresses {
                let a = match a {
                    IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                        Some(m) => IpAddr::V4(m),
                        None => continue,
                    },
                    v4 => *v4,
                };
                if !v4.contains(&a) {
                    v4.push(a);
                }
            }
            (v4, "no addresses (IPv4 requested)")
        }
        AddressFamily::IPv6 => (
            addresses.iter().copied().filter(IpAddr::is_ipv6).collect(),
            "no addresses (IPv6 requested)",
        ),
    };
    if kept.is_empty() {
        return Err(SocketError::Lookup {
            host: host.to_owned(),
            reason: reason.to_owned(),
        });
    }
    Ok(kept)
}

fn same(a: &LookupResult, b: &LookupResult) -> bool {
    match (a, b) {
        (Ok(a), Ok(b)) => a == b,
        (
            Err(SocketError::Lookup {
                host: h1,
                reason: r1,
            }),
            Err(SocketError::Lookup {
                host: h2,
                reason: r2,
            }),
        ) => h1 == h2 && r1 == r2,
        (Err(SocketError::InvalidAddress(_)), Err(SocketError::InvalidAddress(_))) => true,
        (
            Err(SocketError::Timeout(TimeoutPhase::Resolve)),
            Err(SocketError::Timeout(TimeoutPhase::Resolve)),
        ) => true,
        _ => false,
    }
}

static CASES: AtomicU64 = AtomicU64::new(0);
const STAT_NAMES: [&str; 8] = [
    "lookups",
    "immediate answers",
    "pool answers",
    "timeouts",
    "cancels that found a lookup",
    "cancels that found none",
    "lookups from callbacks",
    "settles",
];
static STATS: [AtomicU64; 8] = [const { AtomicU64::new(0) }; 8];

fn stat(i: usize) {
    STATS[i].fetch_add(1, Ordering::Relaxed);
}

impl Model {
    fn ttl_long(&self) -> bool {
        self.ttl == 2
    }

    fn pending(&self) -> usize {
        self.lookups
            .iter()
            .filter(|l| l.state == State::Pending)
            .count()
    }

    fn start(&mut self, index: usize, host: Host, family: usize) -> Result<(), String> {
        if index != self.lookups.len() {
            return Err(format!("lookup {index} logged out of order"));
        }
        stat(0);
        if self.in_turn {
            stat(6);
        }
        let timeout = TIMEOUTS[self.timeout];
        let mut lookup = MLookup {
            host,
            family: FAMILIES[family],
            state: State::Pending,
            turn: self.turn,
            immediate: false,
            task: None,
            timeout,
            maybe_cached: false,
            generation: 0,
            starter: false,
        };
        if let Host::Pool(i) = host {
            let key = pool_hosts()[i].1.clone();
            let task_key = (key.clone(), self.epoch);
            let task = *self.tasks.get(&task_key).unwrap_or(&Tri::No);
            if task != Tri::Yes {
                *self.generations.entry(task_key.clone()).or_default() += 1;
            }
            lookup.generation = *self.generations.get(&task_key).unwrap_or(&0);
            let cached = match (self.ttl, self.cache.get(&key)) {
                (0, _) => Tri::No,
                // A task nobody waits for any more may have ended unseen, its answer cached.
                (_, None | Some(Tri::No)) if task == Tri::Maybe => Tri::Maybe,
                (_, state) => *state.unwrap_or(&Tri::No),
            };
            match cached {
                Tri::Yes => lookup.immediate = true,
                Tri::No => {
                    // A task nobody waited for may have ended: then a new one starts, or (its
                    // answer already sent) the lookup is answered on the next turn without one.
                    let now = match task {
                        Tri::No => {
                            self.pool_lo += 1;
                            self.pool_hi += 1;
                            lookup.starter = true;
                            Tri::Yes
                        }
                        Tri::Maybe => {
                            self.pool_hi += 1;
                            Tri::Maybe
                        }
                        // Joined: the task's answer may be on its way already, and then the
                        // task ends with this lookup answered on the turn after.
                        Tri::Yes => Tri::Maybe,
                    };
                    self.tasks.insert(task_key.clone(), now);
                    lookup.task = Some((task_key, Tri::Yes));
                }
                Tri::Maybe => {
                    lookup.maybe_cached = true;
                    if task != Tri::Yes {
                        self.pool_hi += 1;
                        self.tasks.insert(task_key.clone(), Tri::Maybe);
                    }
                    lookup.task = Some((task_key, Tri::Maybe));
                }
            }
        } else {
            lookup.immediate = true;
        }
        self.lookups.push(lookup);
        Ok(())
    }

    /// Lookup `index` no longer waits for its task: a task only it certainly waited for may
    /// end unseen.
    fn leave(&mut self, index: usize) {
        let Some((key, _)) = self.lookups[index].task.clone() else {
            return;
        };
        let others = self.lookups.iter().enumerate().any(|(i, l)| {
            i != index
                && l.state == State::Pending
                && l.task
                    .as_ref()
                    .is_some_and(|(k, t)| *k == key && *t == Tri::Yes)
        });
        if !others && self.tasks.get(&key) == Some(&Tri::Yes) {
            self.tasks.insert(key, Tri::Maybe);
        }
    }

    fn answered(
        &mut self,
        index: usize,
        result: &LookupResult,
        inside: bool,
    ) -> Result<(), String> {
        let turn = self.turn;
        let Some(l) = self.lookups.get(index) else {
            return Err(format!("lookup {index} answered before it started"));
        };
        if inside {
            return Err(format!("lookup {index} answered inside lookup()"));
        }
        if l.state != State::Pending {
            return Err(format!("lookup {index} answered when {:?}", l.state));
        }
        if !self.in_turn || turn <= l.turn {
            return Err(format!(
                "lookup {index} ({}) started in turn {} answered in turn {turn} (not a later one)",
                host_name(l.host),
                l.turn
            ));
        }
        let name = host_name(l.host);
        let family = l.family;
        let expected_ok = match l.host {
            Host::Immediate(i) => match &immediate_hosts()[i].1 {
                Ok(ips) => keep_family(&name, family, ips),
                Err(()) => Err(SocketError::InvalidAddress(String::new())),
            },
            Host::Pool(i) => keep_family(&name, family, &pool_hosts()[i].2),
        };
        let timeout = Err(SocketError::Timeout(TimeoutPhase::Resolve));
        let mut allowed = Vec::new();
        if l.immediate {
            if turn != l.turn + 1 {
                return Err(format!(
                    "lookup {index} ({name}) answered in turn {turn}, not in the turn after its start ({})",
                    l.turn
                ));
            }
            allowed.push(expected_ok.clone());
        } else {
            if l.maybe_cached {
                allowed.push(expected_ok.clone());
            }
            if l.timeout <= Duration::from_nanos(1) {
                allowed.push(timeout.clone());
            } else if l.timeout >= DEFAULT_LOOKUP_TIMEOUT {
                allowed.push(expected_ok.clone());
            } else {
                allowed.push(expected_ok.clone());
                allowed.push(timeout.clone());
            }
        }
        if !allowed.iter().any(|a| same(a, result)) {
            return Err(format!(
                "lookup {index} of {name:?} ({family:?}, timeout {:?}, cache {}) answered {result:?}, allowed {allowed:?}",
                l.timeout,
                if l.immediate {
                    "certain or no pool"
                } else if l.maybe_cached {
                    "maybe"
                } else {
                    "no"
                }
            ));
        }
        if l.immediate {
            stat(1);
        } else if same(result, &timeout) {
            stat(3);
        } else {
            stat(2);
        }
        let task = l.task.clone();
        let generation = l.generation;
        let starter = l.starter;
        let timed_out = same(result, &timeout);
        self.lookups[index].state = State::Answered;
        if let Some((key, certainty)) = task {
            if timed_out {
                // From its timer (the task runs on), or from the task's answer coming late (the
                // task ended; lookups that joined it since are answered on the next turn).
                if self.tasks.get(&key) == Some(&Tri::Yes) {
                    self.tasks.insert(key, Tri::Maybe);
                }
            } else {
                // The task ended (or the cache answered): what it found is cached unless the
                // cache was cleared since the lookup began.
                let latest = self.generations.get(&key) == Some(&generation);
                if certainty == Tri::Yes && latest {
                    self.tasks.insert(key.clone(), Tri::No);
                } else if self.tasks.get(&key) == Some(&Tri::Yes) {
                    self.tasks.insert(key.clone(), Tri::Maybe);
                }
                if key.1 == self.epoch && self.ttl != 0 {
                    let long = self.ttl_long();
                    let state = self.cache.entry(key.0).or_insert(Tri::No);
                    if starter && long {
                        *state = Tri::Yes;
                    } else if starter || *state == Tri::No {
                        *state = Tri::Maybe;
                    }
                }
            }
        }
        Ok(())
    }

    fn replay(&mut self, ev: &Ev) -> Result<(), String> {
        match ev {
            Ev::Started(i, host, family) => self.start(*i, *host, *family)?,
            Ev::Answered(i, result, inside) => self.answered(*i, result, *inside)?,
            Ev::Cancelled(i, cancelled) => {
                let l = &self.lookups[*i];
                let expected = l.state == State::Pending;
                if *cancelled != expected {
                    return Err(format!(
                        "cancel of lookup {i} ({:?}) returned {cancelled}",
                        l.state
                    ));
                }
                if expected {
                    stat(4);
                    self.lookups[*i].state = State::Cancelled;
                    self.leave(*i);
                } else {
                    stat(5);
                }
            }
            Ev::CancelAll => {
                for i in 0..self.lookups.len() {
                    if self.lookups[i].state == State::Pending {
                        self.lookups[i].state = State::Cancelled;
                        self.leave(i);
                    }
                }
            }
            Ev::SetTimeout(t) => self.timeout = *t,
            Ev::SetTtl(t) => {
                self.ttl = *t;
                for state in self.cache.values_mut() {
                    if *t == 0 {
                        *state = Tri::No;
                    } else if *t == 1 && *state == Tri::Yes {
                        *state = Tri::Maybe;
                    }
                }
            }
            Ev::ClearCache => {
                self.epoch += 1;
                self.cache.clear();
            }
            Ev::TurnStart => {
                self.turn += 1;
                self.in_turn = true;
            }
            Ev::TurnEnd => {
                self.in_turn = false;
                // Immediate answers come in the turn after their start.
                for (i, l) in self.lookups.iter().enumerate() {
                    if l.state == State::Pending && l.immediate && l.turn < self.turn {
                        return Err(format!(
                            "lookup {i} ({}) started in turn {} not answered in turn {}",
                            host_name(l.host),
                            l.turn,
                            self.turn
                        ));
                    }
                }
            }
            Ev::Counters {
                pending,
                pool_lookups,
                tasks,
                threads,
            } => {
                if *pending != self.pending() {
                    return Err(format!(
                        "pending_lookups() = {pending}, the model has {}",
                        self.pending()
                    ));
                }
                if *pool_lookups < self.pool_lo || *pool_lookups > self.pool_hi {
                    return Err(format!(
                        "pool_lookups() = {pool_lookups}, the model allows {}..={}",
                        self.pool_lo, self.pool_hi
                    ));
                }
                let yes = self.tasks.values().filter(|t| **t == Tri::Yes).count();
                let maybe = self.tasks.values().filter(|t| **t == Tri::Maybe).count();
                if *tasks < yes || *tasks > yes + maybe {
                    return Err(format!(
                        "pool_tasks_in_flight() = {tasks}, the model allows {yes}..={}: {:?}",
                        yes + maybe,
                        self.tasks
                    ));
                }
                if *threads > MAX_RESOLVER_THREADS {
                    return Err(format!("{threads} pool threads"));
                }
            }
            Ev::Settled => {
                stat(7);
                // Nothing pending, no task in flight (the counters were read as such): tasks
                // that ended unseen may have cached their answers.
                for ((key, epoch), task) in std::mem::take(&mut self.tasks) {
                    if task == Tri::Maybe && epoch == self.epoch && self.ttl != 0 {
                        let state = self.cache.entry(key).or_insert(Tri::No);
                        if *state == Tri::No {
                            *state = Tri::Maybe;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

// ---- the run ------------------------------------------------------------------------------------

fn run_case(steps: &[Step]) -> Result<(), TestCaseError> {
    let mut event_loop = EventLoop::new().unwrap();
    let ctx = Rc::new(Ctx {
        resolver: DnsResolver::instance().unwrap(),
        ids: RefCell::default(),
        log: RefCell::default(),
        in_lookup: Cell::new(false),
    });
    let mut model = Model {
        timeout: TIMEOUTS
            .iter()
            .position(|t| *t == ctx.resolver.timeout())
            .expect("the default timeout is 10 s"),
        ttl: 2,
        ..Model::default()
    };
    let mut replayed = 0;
    for (n, step) in steps.iter().enumerate() {
        match step {
            Step::Act(act) => act_real(&ctx, act),
            Step::Turn(w) => {
                ctx.log.borrow_mut().push(Ev::TurnStart);
                event_loop.process_events(Some(WAITS[*w])).unwrap();
                ctx.log.borrow_mut().push(Ev::TurnEnd);
            }
            Step::Settle => {
                let deadline = Instant::now() + support::SAFETY_TIMEOUT;
                loop {
                    let done = ctx.resolver.pending_lookups() == 0
                        && ctx.resolver.pool_tasks_in_flight() == 0;
                    if done {
                        break;
                    }
                    if Instant::now() > deadline {
                        return Err(TestCaseError::fail(format!(
                            "step {n}: not settled in {:?}: {} pending, {} tasks",
                            support::SAFETY_TIMEOUT,
                            ctx.resolver.pending_lookups(),
                            ctx.resolver.pool_tasks_in_flight()
                        )));
                    }
                    ctx.log.borrow_mut().push(Ev::TurnStart);
                    event_loop
                        .process_events(Some(Duration::from_millis(5)))
                        .unwrap();
                    ctx.log.borrow_mut().push(Ev::TurnEnd);
                    counters(&ctx);
                }
                counters(&ctx);
                ctx.log.borrow_mut().push(Ev::Settled);
            }
        }
        counters(&ctx);
        let log = ctx.log.borrow();
        for (k, ev) in log.iter().enumerate().skip(replayed) {
            model.replay(ev).map_err(|e| {
                let recent: Vec<String> = log[k.saturating_sub(40)..=k]
                    .iter()
                    .map(|e| format!("{e:?}"))
                    .collect();
                TestCaseError::fail(format!(
                    "step {n} {step:?}: {e}\nlog:\n{}",
                    recent.join("\n")
                ))
            })?;
        }
        replayed = log.len();
    }
    // Everything not cancelled was answered (the last step settled).
    for (i, l) in model.lookups.iter().enumerate() {
        prop_assert!(
            l.state != State::Pending,
            "lookup {} of {:?} never answered",
            i,
            host_name(l.host)
        );
    }
    CASES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// Another thread's loop resolving pool names (uncached, some cancelled) all along: the pool is
/// shared by every loop of the process, and each answer goes to the resolver that asked.
fn neighbour(stop: std::sync::Arc<std::sync::atomic::AtomicBool>) -> std::thread::JoinHandle<u64> {
    std::thread::spawn(move || {
        let mut event_loop = EventLoop::new().unwrap();
        let resolver = DnsResolver::instance().unwrap();
        resolver.set_cache_ttl(Duration::ZERO);
        let answered = Rc::new(Cell::new(0u64));
        let mut n = 0usize;
        while !stop.load(Ordering::Relaxed) {
            let hosts = pool_hosts();
            let (name, _, ips) = &hosts[n % hosts.len()];
            let (expected, a) = (ips.clone(), answered.clone());
            let id = resolver.lookup(name, move |result| {
                assert_eq!(
                    result.unwrap(),
                    expected,
                    "the neighbour got another's answer"
                );
                a.set(a.get() + 1);
            });
            if n % 5 == 0 {
                resolver.cancel(id);
            }
            n += 1;
            event_loop
                .process_events(Some(Duration::from_millis(1)))
                .unwrap();
            // Pacing (about a lookup a millisecond), not a wait for anything.
            std::thread::sleep(Duration::from_millis(1));
            assert!(DnsResolver::pool_threads() <= MAX_RESOLVER_THREADS);
        }
        answered.get()
    })
}

#[test]
fn dns_resolver_matches_the_model() {
    assert!(
        !pool_hosts().is_empty(),
        "getaddrinfo reads no IPv4 URL form"
    );
    eprintln!(
        "pool hosts: {:?}",
        pool_hosts().iter().map(|h| &h.0).collect::<Vec<_>>()
    );
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let neighbour = neighbour(stop.clone());
    let mut runner = TestRunner::new(support::model::config(DEFAULT_CASES));
    let started = Instant::now();
    let result = runner.run(&script(), |steps| run_case(&steps));
    stop.store(true, Ordering::Relaxed);
    let answered = neighbour.join().expect("the neighbour loop failed");
    eprintln!("  neighbour answers: {answered}");
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
