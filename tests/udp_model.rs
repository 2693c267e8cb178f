//! A model-based test of `UdpSocket`: generated scripts over 127.0.0.1 and ::1 of sockets
//! created with a `ready_read` slot (reading none, one, two or all of the queued datagrams per
//! signal, reading one then closing, reading all then dropping the last handle, reading one and
//! sending it back to a std peer), bound to `127.0.0.1:0`, `[::1]:0`, `[::]:0`, to the port of
//! another live socket (address in use, or not, across families) or to their own previous address
//! after a close; queue limits set (`set_max_pending_datagrams`, `set_max_pending_bytes`, zero
//! included); datagrams of 0 B to the loopback maximum (65,507 B over IPv4, 65,527 B over IPv6)
//! and one byte over it, sent by the sockets under test (auto-binding on their first write), by
//! std sockets on the test thread and by std sockets on threads of their own, to each other, to
//! std peers and to closed ports; loop turns; reads from outside; closes and drops from outside.
//!
//! The test runs the real sockets and a plain reference model of the documented behaviour (module
//! docs of `kdnet::network::udp`, the docs of `UdpSocket`, PORTING.md) in lockstep, and compares
//! after every step. What the model says:
//! - a datagram arrives whole, once, with its sender's address (an IPv4 sender seen through a
//!   dual-stack socket as IPv4), in the order the kernel got it (here: the order of the sends,
//!   which all happen on the test thread or on a thread joined before the next turn);
//! - each turn runs first the repeated `ready_read`s posted by the turn before (if datagrams are
//!   still queued), then drains each socket with datagrams waiting in the kernel: a datagram is
//!   queued if fewer than the datagram limit are queued and (the queue is empty or the bytes fit
//!   the byte limit), else dropped and counted in `dropped_datagram_count`; a drain that queued
//!   any emits `ready_read` once; after an emission whose slots read some but left some, one
//!   repeated `ready_read` is posted for the next turn;
//! - `write_datagram` binds an unbound socket to the unspecified address of the destination's
//!   family, sends within the call (`Ok(len)`), refuses a destination of a family the bound
//!   address cannot reach (`InvalidAddress`), and fails with an `Io` error of `Write` for a
//!   datagram over the family's maximum; a datagram to a closed port is sent (`Ok`), and the
//!   ICMP error the kernel gets back is not reported to an unconnected socket on Linux: nothing
//!   is emitted and receiving goes on;
//! - `bind` on a bound socket is `InvalidState`; on an address a live socket holds (same family
//!   and port with an equal or wildcard address, or a dual-stack `[::]` and any IPv4 address of
//!   that port) it is `Io` of `Bind` with `AddrInUse`; port 0 gets an ephemeral port;
//! - `close` discards the queue and what waits in the kernel, releases the port and keeps the
//!   limits and counters; dropping the last handle (also from its own slot) ends all signals;
//! - `error_occurred` is never emitted here (no receive error happens on loopback).
//!
//! So the kernel never drops a datagram on its own (which the socket could not count), the
//! script never lets more wait in one kernel buffer than half of the default receive buffer
//! (measured cost: twice the payload plus 2,304 bytes per datagram); datagrams over that are
//! left out of the script, by the model and the real run alike.
//!
//! `PROPTEST_CASES` sets the number of scripts (default below, sized for debug `cargo test`).

mod support;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use kdnet::EventLoop;
use kdnet::network::udp::{DEFAULT_MAX_PENDING_BYTES, DEFAULT_MAX_PENDING_DATAGRAMS, UdpSocket};
use kdnet::network::{SocketError, SocketOperation};
use proptest::prelude::*;
use proptest::test_runner::TestRunner;

const DEFAULT_CASES: u32 = 200;
/// Sockets under test.
const NODES: usize = 2;
/// Bytes the script lets wait in one kernel receive buffer (half of Linux's default 212,992).
const KERNEL_BUDGET: usize = 106_000;
/// Datagram sizes: empty, small, around the header the test writes, large, the maxima and one
/// over them.
const SIZES: [usize; 13] = [
    0, 1, 7, 8, 64, 1000, 4000, 9000, 32_000, 65_507, 65_508, 65_527, 65_528,
];
const MAX_V4: usize = 65_507;
const MAX_V6: usize = 65_527;
/// An echoing slot sends back datagrams up to this size (so a turn's echoes fit a peer's buffer).
const ECHO_MAX: usize = 9000;
const LIMITS_DATAGRAMS: [usize; 6] = [0, 1, 2, 3, 5, DEFAULT_MAX_PENDING_DATAGRAMS];
const LIMITS_BYTES: [usize; 6] = [0, 1, 100, 5000, 70_000, DEFAULT_MAX_PENDING_BYTES];

fn cost(len: usize) -> usize {
    2 * len + 2304
}

// ---- scripts ----------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fam {
    V4,
    V6,
    /// `[::]`: IPv6 and IPv4 (mapped).
    Dual,
    /// `[::ffff:127.0.0.1]`: IPv4 through an IPv6 socket.
    Mapped,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Policy {
    ReadNone,
    ReadOne,
    ReadTwo,
    ReadAll,
    ReadOneThenClose,
    ReadAllThenDrop,
    /// Reads one; sends it back if it came from a std peer and is at most `ECHO_MAX` bytes.
    EchoOne,
}

#[derive(Clone, Copy, Debug)]
enum BindTo {
    /// Port 0 on 127.0.0.1, ::1 or ::.
    Any(Fam),
    /// The port of node `.0` (its current or last address), with this family's address.
    PortOfNode(usize, Fam),
    /// The port of std peer `.0` (0: 127.0.0.1, 1: ::1), with this family's address.
    PortOfPeer(usize, Fam),
    /// The node's own last address (after a close).
    OwnLast,
}

#[derive(Clone, Copy, Debug)]
enum Sender {
    Node(usize),
    /// A std socket on the test thread (0: 127.0.0.1, 1: ::1).
    Peer(usize),
    /// A new std socket on a thread of its own, of the destination's family, joined afterwards.
    Thread,
}

#[derive(Clone, Copy, Debug)]
enum Target {
    /// Node `.0`'s address (a dual-stack node: through 127.0.0.1 if `.1`, else ::1).
    Node(usize, bool),
    Peer(usize),
    /// A port nobody holds (IPv6 if `.0`).
    Closed(bool),
    /// Node `.0`'s port at `::ffff:127.0.0.1`.
    Mapped(usize),
}

#[derive(Clone, Debug)]
enum Step {
    Create(usize, Policy),
    Bind(usize, BindTo),
    Limits(usize, usize, usize),
    Send(Sender, Target, Vec<usize>),
    Turns(u8),
    Read(usize, u8),
    Close(usize),
    Drop(usize),
    /// Std sockets on threads of their own send these datagrams to the node at once, while the
    /// loop turns.
    Flood(usize, Vec<Vec<usize>>),
}

fn fam() -> impl Strategy<Value = Fam> {
    prop_oneof![
        3 => Just(Fam::V4),
        3 => Just(Fam::V6),
        3 => Just(Fam::Dual),
        1 => Just(Fam::Mapped),
    ]
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::ReadNone),
        Just(Policy::ReadOne),
        Just(Policy::ReadTwo),
        Just(Policy::ReadAll),
        Just(Policy::ReadOneThenClose),
        Just(Policy::ReadAllThenDrop),
        Just(Policy::EchoOne),
    ]
}

fn size() -> impl Strategy<Value = usize> {
    prop_oneof![
        6 => 0..5usize,
        3 => 5..8usize,
        2 => 8..SIZES.len(),
    ]
}

fn step() -> impl Strategy<Value = Step> {
    let node = 0..NODES;
    prop_oneof![
        2 => (node.clone(), policy()).prop_map(|(n, p)| Step::Create(n, p)),
        4 => (node.clone(), prop_oneof![
            4 => fam().prop_map(BindTo::Any),
            1 => (0..NODES, fam()).prop_map(|(n, f)| BindTo::PortOfNode(n, f)),
            1 => (0..2usize, fam()).prop_map(|(p, f)| BindTo::PortOfPeer(p, f)),
            1 => Just(BindTo::OwnLast),
        ]).prop_map(|(n, b)| Step::Bind(n, b)),
        2 => (node.clone(), 0..LIMITS_DATAGRAMS.len(), 0..LIMITS_BYTES.len())
            .prop_map(|(n, d, b)| Step::Limits(n, d, b)),
        8 => (
            prop_oneof![
                3 => (0..NODES).prop_map(Sender::Node),
                2 => (0..2usize).prop_map(Sender::Peer),
                1 => Just(Sender::Thread),
            ],
            prop_oneof![
                6 => (0..NODES, any::<bool>()).prop_map(|(n, v4)| Target::Node(n, v4)),
                1 => (0..2usize).prop_map(Target::Peer),
                1 => any::<bool>().prop_map(Target::Closed),
                1 => (0..NODES).prop_map(Target::Mapped),
            ],
            prop::collection::vec(size(), 1..8),
        )
            .prop_map(|(s, t, sizes)| Step::Send(s, t, sizes)),
        5 => (1..4u8).prop_map(Step::Turns),
        3 => (node.clone(), 1..4u8).prop_map(|(n, k)| Step::Read(n, k)),
        1 => node.clone().prop_map(Step::Close),
        1 => node.clone().prop_map(Step::Drop),
        2 => (
            node,
            prop::collection::vec(prop::collection::vec(0..8usize, 1..12), 1..4)
        )
            .prop_map(|(n, threads)| Step::Flood(n, threads)),
    ]
}

#[derive(Clone, Debug)]
struct Script {
    policies: Vec<Policy>,
    steps: Vec<Step>,
}

fn first_binds() -> impl Strategy<Value = Vec<Step>> {
    prop::collection::vec(prop::option::weighted(0.8, fam()), NODES).prop_map(|fams| {
        fams.into_iter()
            .enumerate()
            .filter_map(|(i, f)| f.map(|f| Step::Bind(i, BindTo::Any(f))))
            .collect()
    })
}

fn script() -> impl Strategy<Value = Script> {
    (
        prop::collection::vec(policy(), NODES),
        first_binds(),
        prop::collection::vec(step(), 4..40),
    )
        .prop_map(|(policies, mut steps, rest)| {
            steps.extend(rest);
            steps.push(Step::Turns(3));
            Script { policies, steps }
        })
}

// ---- what both sides log ------------------------------------------------------------------------

type Datagram = (Vec<u8>, SocketAddr);

/// One `ready_read` emission as its slot saw it.
#[derive(Clone, Debug, PartialEq)]
struct Emission {
    node: usize,
    /// Datagrams queued when the slot began.
    pending: usize,
    read: Vec<Datagram>,
    /// What sending the echo returned (`Ok(len)`), if the slot echoed.
    echo: Option<Result<usize, String>>,
}

/// A send's outcome, as compared: `Ok(len)`, or the error's kind.
#[derive(Clone, Debug, PartialEq)]
enum Sent {
    Ok(usize),
    InvalidAddress,
    TooLong,
    /// Left out of the script (kernel budget, no address, std socket of the other family).
    Skipped,
}

// ---- the model -----------------------------------------------------------------------------

#[derive(Clone, Debug)]
struct MNode {
    alive: bool,
    incarnation: u32,
    policy: Policy,
    bound: Option<SocketAddr>,
    last: Option<SocketAddr>,
    queue: VecDeque<Datagram>,
    kernel: Vec<Datagram>,
    max_d: usize,
    max_b: usize,
    dropped: u64,
    reannounce: bool,
}

impl MNode {
    fn new(policy: Policy) -> MNode {
        MNode {
            alive: true,
            incarnation: 0,
            policy,
            bound: None,
            last: None,
            queue: VecDeque::new(),
            kernel: Vec::new(),
            max_d: DEFAULT_MAX_PENDING_DATAGRAMS,
            max_b: DEFAULT_MAX_PENDING_BYTES,
            dropped: 0,
            reannounce: false,
        }
    }

    fn pending_bytes(&self) -> usize {
        self.queue.iter().map(|(d, _)| d.len()).sum()
    }
}

struct Model {
    nodes: Vec<MNode>,
    peers: [SocketAddr; 2],
    /// What waits in each std peer's kernel buffer.
    peer_kernel: [Vec<Datagram>; 2],
    /// Repeated `ready_read`s posted for the next turn: (node, incarnation).
    posts: Vec<(usize, u32)>,
    /// A node being flooded: the model leaves it to the run for now.
    flooded: Option<usize>,
}

fn loopback(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::LOCALHOST)
    } else {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    }
}

fn unspecified(v6: bool) -> IpAddr {
    if v6 {
        IpAddr::V6(Ipv6Addr::UNSPECIFIED)
    } else {
        IpAddr::V4(Ipv4Addr::UNSPECIFIED)
    }
}

fn fam_ip(fam: Fam) -> IpAddr {
    match fam {
        Fam::V4 => loopback(false),
        Fam::V6 => loopback(true),
        Fam::Dual => unspecified(true),
        Fam::Mapped => IpAddr::V6(Ipv4Addr::LOCALHOST.to_ipv6_mapped()),
    }
}

/// An IPv4-mapped address as the IPv4 address it holds.
fn plain(address: SocketAddr) -> SocketAddr {
    match address.ip() {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), address.port()),
            None => address,
        },
        IpAddr::V4(_) => address,
    }
}

/// Whether a socket bound to `a` keeps `b` from binding (no `SO_REUSEADDR`).
fn conflicts(a: SocketAddr, b: SocketAddr) -> bool {
    let (a, b) = (plain(a), plain(b));
    if a.port() != b.port() {
        return false;
    }
    let dual = |x: SocketAddr| x.is_ipv6() && x.ip().is_unspecified();
    if a.is_ipv4() == b.is_ipv4() {
        a.ip() == b.ip() || a.ip().is_unspecified() || b.ip().is_unspecified()
    } else {
        dual(a) || dual(b)
    }
}

/// Whether a socket bound to `bound` receives a datagram to `dest`.
fn receives(bound: SocketAddr, dest: SocketAddr) -> bool {
    let (bound, dest) = (plain(bound), plain(dest));
    if bound.port() != dest.port() {
        return false;
    }
    match (bound.ip(), dest.ip()) {
        (b, d) if b == d => true,
        (IpAddr::V4(b), IpAddr::V4(_)) => b.is_unspecified(),
        (IpAddr::V6(b), _) => b.is_unspecified(),
        _ => false,
    }
}

enum Owner {
    Node(usize),
    Peer(usize),
}

impl Model {
    fn live_addresses(&self) -> Vec<SocketAddr> {
        let mut all: Vec<SocketAddr> = self.nodes.iter().filter_map(|n| n.bound).collect();
        all.extend(self.peers);
        all
    }

    fn route(&self, dest: SocketAddr) -> Option<Owner> {
        for (i, n) in self.nodes.iter().enumerate() {
            if n.bound.is_some_and(|b| receives(b, dest)) {
                return Some(Owner::Node(i));
            }
        }
        for (j, p) in self.peers.iter().enumerate() {
            if receives(*p, dest) {
                return Some(Owner::Peer(j));
            }
        }
        None
    }

    /// Whether a datagram of `len` bytes to `dest` may be sent without overflowing its
    /// receiver's kernel buffer.
    fn fits_kernel(&self, dest: SocketAddr, len: usize) -> bool {
        let Some(waiting) = self.waiting(dest) else {
            return true;
        };
        waiting.is_empty()
            || waiting.iter().map(|(d, _)| cost(d.len())).sum::<usize>() + cost(len)
                <= KERNEL_BUDGET
    }

    /// What waits in the kernel buffer of the socket that receives datagrams to `dest`.
    fn waiting(&self, dest: SocketAddr) -> Option<&Vec<Datagram>> {
        match self.route(dest) {
            Some(Owner::Node(i)) => Some(&self.nodes[i].kernel),
            Some(Owner::Peer(j)) => Some(&self.peer_kernel[j]),
            None => None,
        }
    }

    fn deliver(&mut self, dest: SocketAddr, datagram: Datagram) {
        match self.route(dest) {
            Some(Owner::Node(i)) => self.nodes[i].kernel.push(datagram),
            Some(Owner::Peer(j)) => self.peer_kernel[j].push(datagram),
            None => {}
        }
    }

    fn close(&mut self, i: usize) {
        let n = &mut self.nodes[i];
        if n.bound.is_some() {
            n.last = n.bound.take();
        }
        n.queue.clear();
        n.kernel.clear();
    }

    fn drop_node(&mut self, i: usize) {
        self.close(i);
        let n = &mut self.nodes[i];
        n.alive = false;
        n.reannounce = false;
    }

    /// One loop turn; the emissions in order (per node: the real order across nodes may differ).
    fn turn(&mut self) -> Vec<Emission> {
        let mut emitted = Vec::new();
        for (i, incarnation) in std::mem::take(&mut self.posts) {
            let n = &mut self.nodes[i];
            if !n.alive || n.incarnation != incarnation || self.flooded == Some(i) {
                continue;
            }
            n.reannounce = false;
            if !n.queue.is_empty() {
                stat(4, 1);
                self.announce(i, &mut emitted);
            }
        }
        for i in 0..NODES {
            let n = &mut self.nodes[i];
            if !n.alive || n.bound.is_none() || n.kernel.is_empty() || self.flooded == Some(i) {
                continue;
            }
            let mut queued = 0;
            for (data, from) in std::mem::take(&mut n.kernel) {
                let bytes = n.pending_bytes();
                let fits = n.queue.is_empty() || bytes + data.len() <= n.max_b;
                if n.queue.len() < n.max_d && fits {
                    n.queue.push_back((data, from));
                    queued += 1;
                    stat(1, 1);
                } else {
                    n.dropped += 1;
                    stat(2, 1);
                }
            }
            if queued > 0 {
                self.announce(i, &mut emitted);
            }
        }
        emitted
    }

    fn announce(&mut self, i: usize, emitted: &mut Vec<Emission>) {
        let peers = self.peers;
        let n = &mut self.nodes[i];
        let pending = n.queue.len();
        let take = match n.policy {
            Policy::ReadNone => 0,
            Policy::ReadOne | Policy::ReadOneThenClose | Policy::EchoOne => 1,
            Policy::ReadTwo => 2,
            Policy::ReadAll | Policy::ReadAllThenDrop => usize::MAX,
        };
        let read: Vec<Datagram> = (0..take).map_while(|_| n.queue.pop_front()).collect();
        let mut echo = None;
        if n.policy == Policy::EchoOne {
            if let Some((data, from)) = read.first() {
                if peers.contains(from) && data.len() <= ECHO_MAX {
                    let local = n.bound.expect("a node that received is bound");
                    let source = SocketAddr::new(loopback(from.is_ipv6()), local.port());
                    echo = Some(Ok(data.len()));
                    let datagram = (data.clone(), source);
                    self.deliver(*from, datagram);
                }
            }
        }
        match self.nodes[i].policy {
            Policy::ReadOneThenClose => self.close(i),
            Policy::ReadAllThenDrop => self.drop_node(i),
            _ => {}
        }
        let n = &mut self.nodes[i];
        if n.alive && !read.is_empty() && !n.queue.is_empty() && !n.reannounce {
            n.reannounce = true;
            self.posts.push((i, n.incarnation));
        }
        emitted.push(Emission {
            node: i,
            pending,
            read,
            echo,
        });
    }
}

// ---- the real run ---------------------------------------------------------------------------

type Holder = Rc<RefCell<Option<Rc<UdpSocket>>>>;

struct Real {
    holders: Vec<Holder>,
    peers: [std::net::UdpSocket; 2],
    log: Rc<RefCell<Vec<Emission>>>,
    errors: Rc<RefCell<Vec<String>>>,
}

impl Real {
    fn node(&self, i: usize) -> Option<Rc<UdpSocket>> {
        self.holders[i].borrow().clone()
    }
}

fn make_node(real: &mut Real, i: usize, policy: Policy) {
    let socket = UdpSocket::new().unwrap();
    let holder: Holder = Rc::new(RefCell::new(Some(socket.clone())));
    let weak = Rc::downgrade(&socket);
    let (log, h) = (real.log.clone(), holder.clone());
    let peers = [
        real.peers[0].local_addr().unwrap(),
        real.peers[1].local_addr().unwrap(),
    ];
    socket
        .ready_read
        .connect(move |_| {
            let socket = weak.upgrade().expect("a signal of a live socket");
            let pending = socket.pending_datagram_count();
            let take = match policy {
                Policy::ReadNone => 0,
                Policy::ReadOne | Policy::ReadOneThenClose | Policy::EchoOne => 1,
                Policy::ReadTwo => 2,
                Policy::ReadAll | Policy::ReadAllThenDrop => usize::MAX,
            };
            let read: Vec<Datagram> = (0..take).map_while(|_| socket.read_datagram()).collect();
            let mut echo = None;
            if policy == Policy::EchoOne {
                if let Some((data, from)) = read.first() {
                    if peers.contains(from) && data.len() <= ECHO_MAX {
                        echo = Some(
                            socket
                                .write_datagram(data, from.ip(), from.port())
                                .map_err(|e| e.to_string()),
                        );
                    }
                }
            }
            match policy {
                Policy::ReadOneThenClose => socket.close(),
                Policy::ReadAllThenDrop => drop(h.borrow_mut().take()),
                _ => {}
            }
            log.borrow_mut().push(Emission {
                node: i,
                pending,
                read,
                echo,
            });
        })
        .release();
    let errors = real.errors.clone();
    socket
        .error_occurred
        .connect(move |e| errors.borrow_mut().push(format!("node {i}: {e}")))
        .release();
    real.holders[i] = holder;
}

fn sent_of(result: &Result<usize, SocketError>) -> Result<Sent, String> {
    match result {
        Ok(n) => Ok(Sent::Ok(*n)),
        Err(SocketError::InvalidAddress(_)) => Ok(Sent::InvalidAddress),
        Err(
            e @ SocketError::Io {
                operation: SocketOperation::Write,
                ..
            },
        ) if e.to_string().contains("too long") => Ok(Sent::TooLong),
        Err(e) => Err(format!("unexpected send error {e:?}")),
    }
}

fn std_sent(result: std::io::Result<usize>) -> Result<Sent, String> {
    match result {
        Ok(n) => Ok(Sent::Ok(n)),
        Err(e) if e.to_string().contains("too long") => Ok(Sent::TooLong),
        Err(e) => Err(format!("unexpected std send error {e:?}")),
    }
}

/// Payload `len` bytes long: sender tag, sequence number, then a pattern of both.
fn payload(tag: u8, seq: u32, len: usize) -> Vec<u8> {
    let mut head = vec![tag];
    head.extend(seq.to_le_bytes());
    head.extend(support::pattern(
        len.saturating_sub(head.len()),
        u64::from(seq) << 8 | u64::from(tag),
    ));
    head.truncate(len);
    head
}

// ---- lockstep ---------------------------------------------------------------------------------

static CASES: AtomicU64 = AtomicU64::new(0);
const STAT_NAMES: [&str; 10] = [
    "datagrams sent",
    "datagrams queued",
    "datagrams dropped by a limit",
    "emissions",
    "repeated emissions",
    "binds in use",
    "sends refused",
    "sends to closed ports",
    "echoes",
    "datagrams from threads at once",
];
static STATS: [AtomicU64; 10] = [const { AtomicU64::new(0) }; 10];

fn stat(i: usize, n: u64) {
    STATS[i].fetch_add(n, Ordering::Relaxed);
}

struct Run {
    model: Model,
    real: Real,
    seq: u32,
    /// Addresses of ports nobody holds (a std socket bound and closed at the start).
    closed: [SocketAddr; 2],
    /// Emissions of the flooded node.
    flood_log: Vec<Emission>,
}

fn fail(what: String) -> TestCaseError {
    TestCaseError::fail(what)
}

impl Run {
    fn compare_nodes(&self, ctx: &str) -> Result<(), TestCaseError> {
        for (i, m) in self.model.nodes.iter().enumerate() {
            if self.model.flooded == Some(i) {
                continue;
            }
            let real = self.real.node(i);
            prop_assert_eq!(real.is_some(), m.alive, "{}: node {} alive", ctx, i);
            let Some(s) = real else { continue };
            prop_assert_eq!(s.is_bound(), m.bound.is_some(), "{}: node {} bound", ctx, i);
            prop_assert_eq!(s.local_address(), m.bound, "{}: node {} address", ctx, i);
            prop_assert_eq!(
                s.pending_datagram_count(),
                m.queue.len(),
                "{}: node {} pending",
                ctx,
                i
            );
            prop_assert_eq!(
                s.pending_datagram_bytes(),
                m.pending_bytes(),
                "{}: node {} pending bytes",
                ctx,
                i
            );
            prop_assert_eq!(s.has_pending_datagrams(), !m.queue.is_empty());
            prop_assert_eq!(
                s.dropped_datagram_count(),
                m.dropped,
                "{}: node {} dropped",
                ctx,
                i
            );
            prop_assert_eq!(s.max_pending_datagrams(), m.max_d);
            prop_assert_eq!(s.max_pending_bytes(), m.max_b);
        }
        let errors = self.real.errors.borrow();
        prop_assert!(errors.is_empty(), "{}: error_occurred: {:?}", ctx, errors);
        Ok(())
    }

    /// Reads what waits at the std peers and compares it with the model, per sender.
    fn compare_peers(&mut self, ctx: &str) -> Result<(), TestCaseError> {
        let mut buffer = vec![0u8; 70_000];
        for j in 0..2 {
            let mut got: Vec<Datagram> = Vec::new();
            while let Ok((n, from)) = self.real.peers[j].recv_from(&mut buffer) {
                got.push((buffer[..n].to_vec(), from));
            }
            let mut expected = std::mem::take(&mut self.model.peer_kernel[j]);
            // Echoes of different nodes in one turn come in the order the loop dispatched them.
            got.sort_by_key(|(_, from)| *from);
            expected.sort_by_key(|(_, from)| *from);
            if got != expected {
                return Err(fail(format!(
                    "{ctx}: peer {j} received {:?}, expected {:?}",
                    summary(&got),
                    summary(&expected)
                )));
            }
        }
        Ok(())
    }

    fn turn(&mut self, event_loop: &mut EventLoop, ctx: &str) -> Result<(), TestCaseError> {
        let expected = self.model.turn();
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
        let mut got = std::mem::take(&mut *self.real.log.borrow_mut());
        if let Some(f) = self.model.flooded {
            let (flood, rest): (Vec<Emission>, Vec<Emission>) =
                got.into_iter().partition(|e| e.node == f);
            // Its echoes reach the peers: expected there as the slot saw them sent.
            let port = self.model.nodes[f].bound.map(|b| b.port());
            for e in &flood {
                if let (Some(Ok(len)), Some((data, from)), Some(port)) =
                    (&e.echo, e.read.first(), port)
                {
                    prop_assert_eq!(*len, data.len(), "{}: echo of node {}", ctx, f);
                    let source = SocketAddr::new(loopback(from.is_ipv6()), port);
                    self.model.deliver(*from, (data.clone(), source));
                }
            }
            self.flood_log.extend(flood);
            got = rest;
        }
        // Nodes are dispatched in the order the poll reported them: compare per node.
        for i in 0..NODES {
            let e: Vec<&Emission> = expected.iter().filter(|e| e.node == i).collect();
            let g: Vec<&Emission> = got.iter().filter(|e| e.node == i).collect();
            if e != g {
                return Err(fail(format!(
                    "{ctx}: node {i} emitted {:?}, expected {:?}",
                    emissions(&g),
                    emissions(&e)
                )));
            }
        }
        stat(3, got.len() as u64);
        stat(8, got.iter().filter(|e| e.echo.is_some()).count() as u64);
        self.compare_peers(ctx)?;
        self.compare_nodes(ctx)
    }

    fn bind(&mut self, i: usize, to: BindTo) -> Result<(), TestCaseError> {
        let Some(socket) = self.real.node(i) else {
            return Ok(());
        };
        let address = match to {
            BindTo::Any(f) => SocketAddr::new(fam_ip(f), 0),
            BindTo::PortOfNode(k, f) => {
                let n = &self.model.nodes[k];
                match n.bound.or(n.last) {
                    Some(a) => SocketAddr::new(fam_ip(f), a.port()),
                    None => SocketAddr::new(fam_ip(f), 0),
                }
            }
            BindTo::PortOfPeer(p, f) => SocketAddr::new(fam_ip(f), self.model.peers[p].port()),
            BindTo::OwnLast => self.model.nodes[i]
                .last
                .unwrap_or(SocketAddr::new(fam_ip(Fam::V4), 0)),
        };
        let m = &self.model.nodes[i];
        let result = socket.bind(address);
        if m.bound.is_some() {
            prop_assert!(
                matches!(result, Err(SocketError::InvalidState(_))),
                "bind of a bound node: {:?}",
                result
            );
            return Ok(());
        }
        let in_use = address.port() != 0
            && self
                .model
                .live_addresses()
                .iter()
                .any(|a| conflicts(*a, address));
        if in_use {
            stat(5, 1);
            match &result {
                Err(
                    e @ SocketError::Io {
                        operation: SocketOperation::Bind,
                        ..
                    },
                ) if e.io_kind() == Some(std::io::ErrorKind::AddrInUse) => {}
                other => {
                    return Err(fail(format!(
                        "bind to {address} (in use by {:?}): {other:?}",
                        self.model.live_addresses()
                    )));
                }
            }
            prop_assert!(!socket.is_bound());
            return Ok(());
        }
        if let Err(e) = result {
            return Err(fail(format!(
                "bind to {address} (free; live: {:?}): {e:?}",
                self.model.live_addresses()
            )));
        }
        let local = socket.local_address().expect("bound");
        prop_assert_eq!(local.ip(), address.ip());
        if address.port() != 0 {
            prop_assert_eq!(local.port(), address.port());
        } else {
            prop_assert!(local.port() != 0);
        }
        let n = &mut self.model.nodes[i];
        n.bound = Some(local);
        Ok(())
    }

    fn send(&mut self, from: Sender, to: Target, sizes: &[usize]) -> Result<(), TestCaseError> {
        let dest = match to {
            Target::Node(k, via_v4) => {
                let n = &self.model.nodes[k];
                match n.bound.or(n.last) {
                    None => return Ok(()),
                    Some(a) => {
                        let v6 = match a.ip() {
                            IpAddr::V4(_) => false,
                            IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => false,
                            IpAddr::V6(ip) if ip.is_unspecified() => !via_v4,
                            IpAddr::V6(_) => true,
                        };
                        SocketAddr::new(loopback(v6), a.port())
                    }
                }
            }
            Target::Peer(p) => self.model.peers[p],
            Target::Closed(v6) => self.closed[usize::from(v6)],
            Target::Mapped(k) => {
                let n = &self.model.nodes[k];
                match n.bound.or(n.last) {
                    None => return Ok(()),
                    Some(a) => SocketAddr::new(fam_ip(Fam::Mapped), a.port()),
                }
            }
        };
        // Where it goes: a mapped destination is its IPv4 address.
        let to = plain(dest);
        if self.model.route(to).is_none() {
            stat(7, 1);
        }
        let max = if to.is_ipv4() { MAX_V4 } else { MAX_V6 };
        let lens: Vec<usize> = sizes.iter().map(|s| SIZES[*s]).collect();
        match from {
            Sender::Node(i) => {
                let Some(socket) = self.real.node(i) else {
                    return Ok(());
                };
                for len in lens {
                    self.seq += 1;
                    let data = payload(i as u8, self.seq, len);
                    let m = &self.model.nodes[i];
                    let local = m.bound;
                    // A socket bound to a mapped address reaches IPv4 only, one bound to `::`
                    // both families.
                    let expected = match local.map(plain) {
                        Some(l) if l.is_ipv4() && to.is_ipv6() => Sent::InvalidAddress,
                        Some(l) if l.is_ipv6() && !l.ip().is_unspecified() && to.is_ipv4() => {
                            Sent::InvalidAddress
                        }
                        _ if len > max => Sent::TooLong,
                        _ if !self.model.fits_kernel(to, len) => Sent::Skipped,
                        _ => Sent::Ok(len),
                    };
                    if expected == Sent::Skipped {
                        continue;
                    }
                    let result = socket.write_datagram(&data, dest.ip(), dest.port());
                    let got = sent_of(&result).map_err(fail)?;
                    prop_assert_eq!(&got, &expected, "node {} to {} of {} bytes", i, dest, len);
                    if local.is_none() {
                        // Bound by the write, to the unspecified address of the family.
                        let bound = socket.local_address();
                        prop_assert!(
                            bound.is_some_and(
                                |b| b.ip() == unspecified(dest.is_ipv6()) && b.port() != 0
                            ),
                            "auto-bound to {:?}",
                            bound
                        );
                        self.model.nodes[i].bound = bound;
                    }
                    if expected == Sent::Ok(len) {
                        stat(0, 1);
                        let port = self.model.nodes[i].bound.unwrap().port();
                        let source = SocketAddr::new(loopback(to.is_ipv6()), port);
                        self.model.deliver(to, (data, source));
                    } else {
                        stat(6, 1);
                    }
                }
            }
            Sender::Peer(p) => {
                let source = self.model.peers[p];
                // A std socket bound to ::1 cannot reach IPv4, mapped or not.
                if source.is_ipv6() != to.is_ipv6() || dest != to {
                    return Ok(());
                }
                for len in lens {
                    self.seq += 1;
                    let data = payload(10 + p as u8, self.seq, len);
                    let expected = if len > max {
                        Sent::TooLong
                    } else if !self.model.fits_kernel(dest, len) {
                        continue;
                    } else {
                        Sent::Ok(len)
                    };
                    let got = std_sent(self.real.peers[p].send_to(&data, dest)).map_err(fail)?;
                    prop_assert_eq!(&got, &expected, "peer {} to {} of {} bytes", p, dest, len);
                    if got == Sent::Ok(len) {
                        stat(0, 1);
                        self.model.deliver(dest, (data, source));
                    }
                }
            }
            Sender::Thread => {
                // The model decides what fits first: the thread's port is not known yet, and the
                // payloads do not depend on it.
                let mut plan = Vec::new();
                let mut staged: Vec<(usize, Vec<u8>)> = Vec::new();
                for len in lens {
                    self.seq += 1;
                    let data = payload(20, self.seq, len);
                    if len > max {
                        plan.push((data, Sent::TooLong));
                        continue;
                    }
                    // Count the ones planned before this in the budget.
                    let before: usize = staged.iter().map(|(l, _)| cost(*l)).sum();
                    if let Some(waiting) = self.model.waiting(to) {
                        let waiting_cost: usize = waiting.iter().map(|(d, _)| cost(d.len())).sum();
                        let empty = waiting.is_empty() && staged.is_empty();
                        if !empty && waiting_cost + before + cost(len) > KERNEL_BUDGET {
                            continue;
                        }
                    }
                    staged.push((len, data.clone()));
                    plan.push((data, Sent::Ok(len)));
                }
                // To a mapped address from `::` (the only IPv6 socket that reaches IPv4).
                let bind = if dest != to {
                    SocketAddr::new(unspecified(true), 0)
                } else {
                    SocketAddr::new(loopback(dest.is_ipv6()), 0)
                };
                let datagrams: Vec<Vec<u8>> = plan.iter().map(|(d, _)| d.clone()).collect();
                let (source, results) = std::thread::spawn(move || {
                    let socket = std::net::UdpSocket::bind(bind).unwrap();
                    let results: Vec<Result<Sent, String>> = datagrams
                        .iter()
                        .map(|d| std_sent(socket.send_to(d, dest)))
                        .collect();
                    let port = socket.local_addr().unwrap().port();
                    (SocketAddr::new(loopback(to.is_ipv6()), port), results)
                })
                .join()
                .unwrap();
                for ((data, expected), got) in plan.into_iter().zip(results) {
                    let got = got.map_err(fail)?;
                    prop_assert_eq!(&got, &expected, "thread to {}", dest);
                    if let Sent::Ok(_) = got {
                        stat(0, 1);
                        self.model.deliver(to, (data, source));
                    }
                }
            }
        }
        self.compare_peers("after sending")?;
        self.compare_nodes("after sending")
    }

    /// Threads send to node `i` at once while the loop turns. The other nodes go on under the
    /// model; node `i`'s queue is read out afterwards and checked against what was queued
    /// before and sent: in the kernel's order, each thread's datagrams in its order, none twice,
    /// every datagram sent queued or counted as dropped, the limits held at every emission.
    fn flood(
        &mut self,
        event_loop: &mut EventLoop,
        i: usize,
        threads: &[Vec<usize>],
    ) -> Result<(), TestCaseError> {
        let Some(socket) = self.real.node(i) else {
            return Ok(());
        };
        let m = &self.model.nodes[i];
        // A node that closes or drops itself would leave later datagrams to a closed port.
        let Some(local) = m.bound else { return Ok(()) };
        if matches!(m.policy, Policy::ReadOneThenClose | Policy::ReadAllThenDrop) {
            return Ok(());
        }
        let (max_d, max_b) = (m.max_d, m.max_b);
        let before: Vec<Datagram> = m.queue.iter().cloned().collect();
        let waiting: Vec<Datagram> = m.kernel.clone();
        let dropped_before = m.dropped;
        let mut budget: usize = waiting.iter().map(|(d, _)| cost(d.len())).sum();
        let mut plans: Vec<(SocketAddr, Vec<Vec<u8>>)> = Vec::new();
        for (t, sizes) in threads.iter().enumerate() {
            let v6 = match local.ip() {
                IpAddr::V4(_) => false,
                IpAddr::V6(ip) if ip.to_ipv4_mapped().is_some() => false,
                IpAddr::V6(ip) if ip.is_unspecified() => t % 2 == 1,
                IpAddr::V6(_) => true,
            };
            let dest = SocketAddr::new(loopback(v6), local.port());
            let mut datagrams = Vec::new();
            for size in sizes {
                let len = SIZES[*size];
                if budget > 0 && budget + cost(len) > KERNEL_BUDGET {
                    continue;
                }
                budget += cost(len);
                self.seq += 1;
                datagrams.push(payload(30 + t as u8, self.seq, len));
            }
            plans.push((dest, datagrams));
        }
        self.model.flooded = Some(i);
        let start = std::sync::Arc::new(std::sync::Barrier::new(plans.len()));
        let senders: Vec<_> = plans
            .iter()
            .cloned()
            .map(|(dest, datagrams)| {
                let start = start.clone();
                std::thread::spawn(move || {
                    let socket =
                        std::net::UdpSocket::bind(SocketAddr::new(loopback(dest.is_ipv6()), 0))
                            .unwrap();
                    let port = socket.local_addr().unwrap().port();
                    start.wait();
                    for d in &datagrams {
                        assert_eq!(socket.send_to(d, dest).unwrap(), d.len());
                    }
                    SocketAddr::new(loopback(dest.is_ipv6()), port)
                })
            })
            .collect();
        let mut emitted: Vec<Emission> = Vec::new();
        let mut turns = 0;
        loop {
            let done = senders.iter().all(|s| s.is_finished());
            self.turn(event_loop, "flood")?;
            turns += 1;
            emitted.extend(std::mem::take(&mut self.flood_log));
            if done {
                break;
            }
            prop_assert!(turns < 100_000, "the threads never finished");
        }
        let sources: Vec<SocketAddr> = senders.into_iter().map(|s| s.join().unwrap()).collect();
        // All is in the kernel now (loopback delivers within the send): one more turn drains it.
        self.turn(event_loop, "flood")?;
        emitted.extend(std::mem::take(&mut self.flood_log));
        self.model.flooded = None;
        // What the slots read, then what is left: the queue before, then the arrivals.
        let mut consumed: Vec<Datagram> = Vec::new();
        for e in &emitted {
            prop_assert!(
                e.pending >= 1 && e.pending <= max_d.max(before.len()).max(1),
                "flood: emission with {} queued (limit {})",
                e.pending,
                max_d
            );
            consumed.extend(e.read.iter().cloned());
        }
        while let Some(d) = socket.read_datagram() {
            consumed.push(d);
        }
        let ctx = || format!("flood of node {i} (limits {max_d}, {max_b})");
        prop_assert!(
            consumed.len() >= before.len() && consumed[..before.len()] == before[..],
            "{}: the datagrams queued before came first",
            ctx()
        );
        let arrived = &consumed[before.len()..];
        // The kernel's order: what waited before the flood first, then each thread in order.
        let mut streams: Vec<VecDeque<Datagram>> = vec![waiting.iter().cloned().collect()];
        for ((_, datagrams), source) in plans.iter().zip(&sources) {
            streams.push(datagrams.iter().map(|d| (d.clone(), *source)).collect());
        }
        let total: usize = streams.iter().map(VecDeque::len).sum();
        for d in arrived {
            // Each arrival is the next of its sender's that was not dropped.
            let mut found = false;
            for (k, stream) in streams.iter_mut().enumerate() {
                if k == 0 && stream.is_empty() {
                    continue;
                }
                if let Some(pos) = stream.iter().position(|x| x == d) {
                    // Skipped ones were dropped; what waited before precedes every thread's.
                    stream.drain(..=pos);
                    found = true;
                    break;
                }
            }
            prop_assert!(
                found,
                "{}: {:?} arrived out of order, twice or from nowhere",
                ctx(),
                summary(std::slice::from_ref(d))
            );
        }
        let dropped = socket.dropped_datagram_count() - dropped_before;
        prop_assert_eq!(
            arrived.len() as u64 + dropped,
            total as u64,
            "{}: every datagram queued or counted as dropped",
            ctx()
        );
        let fits_all = before.len() + total <= max_d
            && before
                .iter()
                .chain(&waiting)
                .map(|(d, _)| d.len())
                .sum::<usize>()
                + plans
                    .iter()
                    .flat_map(|(_, ds)| ds.iter().map(Vec::len))
                    .sum::<usize>()
                <= max_b;
        if fits_all {
            prop_assert_eq!(dropped, 0, "{}: dropped with room for all", ctx());
        }
        stat(9, total as u64);
        let n = &mut self.model.nodes[i];
        n.queue.clear();
        n.kernel.clear();
        n.dropped = socket.dropped_datagram_count();
        n.reannounce = false;
        // A repeated ready_read posted for the read-out queue finds it empty: no emission.
        self.model.posts.retain(|(k, _)| *k != i);
        self.compare_nodes("after the flood")
    }

    fn step(&mut self, event_loop: &mut EventLoop, step: &Step) -> Result<(), TestCaseError> {
        match *step {
            Step::Create(i, policy) => {
                // The old incarnation (if any) goes first.
                let old = self.real.holders[i].borrow_mut().take();
                drop(old);
                self.model.drop_node(i);
                make_node(&mut self.real, i, policy);
                let n = &mut self.model.nodes[i];
                let incarnation = n.incarnation + 1;
                let last = n.last;
                *n = MNode::new(policy);
                n.incarnation = incarnation;
                n.last = last;
            }
            Step::Bind(i, to) => self.bind(i, to)?,
            Step::Limits(i, d, b) => {
                if let Some(s) = self.real.node(i) {
                    s.set_max_pending_datagrams(LIMITS_DATAGRAMS[d]);
                    s.set_max_pending_bytes(LIMITS_BYTES[b]);
                    let n = &mut self.model.nodes[i];
                    n.max_d = LIMITS_DATAGRAMS[d];
                    n.max_b = LIMITS_BYTES[b];
                }
            }
            Step::Send(from, to, ref sizes) => self.send(from, to, sizes)?,
            Step::Turns(k) => {
                for t in 0..k {
                    self.turn(event_loop, &format!("turn {t}"))?;
                }
            }
            Step::Read(i, k) => {
                if let Some(s) = self.real.node(i) {
                    for _ in 0..k {
                        let got = s.read_datagram();
                        let expected = self.model.nodes[i].queue.pop_front();
                        if got != expected {
                            return Err(fail(format!(
                                "node {i} read {:?}, expected {:?}",
                                got.map(|d| summary(&[d])),
                                expected.map(|d| summary(&[d]))
                            )));
                        }
                    }
                }
            }
            Step::Close(i) => {
                if let Some(s) = self.real.node(i) {
                    s.close();
                    self.model.close(i);
                }
            }
            Step::Flood(i, ref threads) => self.flood(event_loop, i, threads)?,
            Step::Drop(i) => {
                let old = self.real.holders[i].borrow_mut().take();
                drop(old);
                self.model.drop_node(i);
            }
        }
        self.compare_nodes("after the step")
    }
}

fn summary(datagrams: &[Datagram]) -> Vec<String> {
    datagrams
        .iter()
        .map(|(d, from)| {
            let seq = d
                .get(1..5)
                .map(|s| u32::from_le_bytes(s.try_into().unwrap()));
            format!("{} B seq {:?} from {from}", d.len(), seq)
        })
        .collect()
}

fn emissions(list: &[&Emission]) -> Vec<String> {
    list.iter()
        .map(|e| {
            format!(
                "pending {} read {:?} echo {:?}",
                e.pending,
                summary(&e.read),
                e.echo
            )
        })
        .collect()
}

fn run_case(event_loop: &mut EventLoop, script: &Script) -> Result<(), TestCaseError> {
    let peers = [
        std::net::UdpSocket::bind("127.0.0.1:0").unwrap(),
        std::net::UdpSocket::bind("[::1]:0").unwrap(),
    ];
    for p in &peers {
        p.set_nonblocking(true).unwrap();
    }
    let closed = [
        std::net::UdpSocket::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap(),
        std::net::UdpSocket::bind("[::1]:0")
            .unwrap()
            .local_addr()
            .unwrap(),
    ];
    let peer_addresses = [
        peers[0].local_addr().unwrap(),
        peers[1].local_addr().unwrap(),
    ];
    let mut run = Run {
        model: Model {
            nodes: script.policies.iter().map(|p| MNode::new(*p)).collect(),
            peers: peer_addresses,
            peer_kernel: [Vec::new(), Vec::new()],
            posts: Vec::new(),
            flooded: None,
        },
        real: Real {
            holders: (0..NODES).map(|_| Rc::new(RefCell::new(None))).collect(),
            peers,
            log: Rc::default(),
            errors: Rc::default(),
        },
        seq: 0,
        closed,
        flood_log: Vec::new(),
    };
    for (i, policy) in script.policies.iter().enumerate() {
        make_node(&mut run.real, i, *policy);
    }
    let before = event_loop.registered_sources();
    for (n, step) in script.steps.iter().enumerate() {
        run.step(event_loop, step)
            .map_err(|e| fail(format!("step {n} {step:?}: {e}")))?;
    }
    // Each bound node is registered; dropping every node unregisters it, and nothing is emitted
    // afterwards.
    let bound = run
        .model
        .nodes
        .iter()
        .filter(|n| n.alive && n.bound.is_some())
        .count();
    prop_assert_eq!(event_loop.registered_sources(), before + bound);
    for h in &run.real.holders {
        let old = h.borrow_mut().take();
        drop(old);
    }
    prop_assert_eq!(event_loop.registered_sources(), before);
    for _ in 0..2 {
        event_loop.process_events(Some(Duration::ZERO)).unwrap();
    }
    prop_assert!(run.real.log.borrow().is_empty(), "emitted after the drop");
    CASES.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

#[test]
fn udp_sockets_match_the_model() {
    if std::net::UdpSocket::bind("[::1]:0").is_err() {
        eprintln!("skipped: no IPv6 loopback on this machine");
        return;
    }
    let event_loop = RefCell::new(EventLoop::new().unwrap());
    let mut runner = TestRunner::new(support::model::config(DEFAULT_CASES));
    let started = Instant::now();
    let result = runner.run(&script(), |script| {
        run_case(&mut event_loop.borrow_mut(), &script)
    });
    support::model::finish_counted(started, &CASES, STAT_NAMES, &STATS, result);
}
