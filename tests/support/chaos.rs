//! A seeded chaos proxy for fault-injection tests: it forwards loopback TCP connections to an
//! upstream server and, following a deterministic plan drawn per connection, cuts the downstream
//! (server → client) direction after an arbitrary number of bytes, by a TCP reset, a clean close or
//! a silent hang; it may stall between writes and write the first bytes one byte per segment.
//!
//! The plan is the same on every run for a given [`ChaosPlan::seed`]; which request lands on which
//! connection may still depend on timing, so tests assert properties of every outcome, not a
//! fixed list of outcomes.
#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// How a planned cut ends the downstream connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CutKind {
    /// `SO_LINGER` 0 and close with no FIN before it: the client sees a reset (`ECONNRESET`),
    /// never a clean end of stream.
    Reset,
    /// FIN: the client sees a clean end of stream.
    Close,
    /// Stop forwarding but keep the connection open for [`ChaosPlan::hang_for`], then close it
    /// cleanly: only the client's own timeout ends the exchange in time.
    Hang,
}

/// What the proxy does to each connection; each decision is drawn with probability `1 / n` for a
/// field `…_one_in: n` (`0` = never, `1` = always).
#[derive(Debug, Clone)]
pub struct ChaosPlan {
    /// Seeds the xorshift generator the whole plan is drawn from.
    pub seed: u64,
    /// This share of connections runs to the end uncut; the rest are cut.
    pub uncut_one_in: u64,
    /// A cut happens after `1..=max_cut_offset` downstream bytes.
    pub max_cut_offset: u64,
    /// Write the first [`one_byte_prefix`](Self::one_byte_prefix) bytes one byte per `write`.
    pub one_byte_one_in: u64,
    pub one_byte_prefix: u64,
    /// Sleep [`stall`](Self::stall) after each forwarded read whose running total lies inside
    /// [`stall_window`](Self::stall_window).
    pub stall_one_in: u64,
    pub stall: Duration,
    pub stall_window: (u64, u64),
    /// A cut is a reset with this probability, else a clean close (or a hang, below).
    pub reset_one_in: u64,
    /// A cut that is not a reset is a hang with this probability.
    pub hang_one_in: u64,
    /// How long a hung connection is held open.
    pub hang_for: Duration,
}

impl Default for ChaosPlan {
    /// The plan of the SSE chaos test: 7 in 8 connections cut in their first 40 KB, half of the
    /// cuts resets; a quarter of the connections start with 1-byte writes, a fifth stall; no hangs.
    fn default() -> Self {
        ChaosPlan {
            seed: 0x9E37_79B9_7F4A_7C15,
            uncut_one_in: 8,
            max_cut_offset: 40_000,
            one_byte_one_in: 4,
            one_byte_prefix: 2000,
            stall_one_in: 5,
            stall: Duration::from_millis(20),
            stall_window: (1000, 9000),
            reset_one_in: 2,
            hang_one_in: 0,
            hang_for: Duration::from_secs(10),
        }
    }
}

/// The decisions for one connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectionPlan {
    /// Downstream bytes forwarded before the cut; `None` runs to the end.
    pub cut_at: Option<u64>,
    pub cut: CutKind,
    pub one_byte: bool,
    pub stall: bool,
}

/// What the proxy did so far.
#[derive(Debug, Default)]
pub struct ChaosCounters {
    /// Connections accepted and forwarded.
    pub connections: AtomicUsize,
    /// Connections with a planned cut.
    pub planned_cuts: AtomicUsize,
    /// Cuts carried out (the offset was reached), by kind.
    pub resets: AtomicUsize,
    pub closes: AtomicUsize,
    pub hangs: AtomicUsize,
    /// Every connection's plan, in accept order.
    pub plans: Mutex<Vec<ConnectionPlan>>,
}

impl ChaosCounters {
    /// Cuts carried out, of any kind.
    pub fn cuts(&self) -> usize {
        self.resets.load(Ordering::SeqCst)
            + self.closes.load(Ordering::SeqCst)
            + self.hangs.load(Ordering::SeqCst)
    }
}

/// A running chaos proxy (it accepts until the test process ends).
pub struct ChaosProxy {
    /// Where clients connect.
    pub addr: SocketAddr,
    pub counters: Arc<ChaosCounters>,
}

/// Seeded xorshift64.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }

    /// True with probability `1 / one_in` (never for 0).
    fn one_in(&mut self, one_in: u64) -> bool {
        one_in != 0 && self.below(one_in) == 0
    }
}

impl ChaosPlan {
    fn draw(&self, rng: &mut Rng) -> ConnectionPlan {
        let cut_at = if rng.one_in(self.uncut_one_in) {
            None
        } else {
            Some(1 + rng.below(self.max_cut_offset.max(1)))
        };
        let one_byte = rng.one_in(self.one_byte_one_in);
        let stall = rng.one_in(self.stall_one_in);
        let cut = if rng.one_in(self.reset_one_in) {
            CutKind::Reset
        } else if rng.one_in(self.hang_one_in) {
            CutKind::Hang
        } else {
            CutKind::Close
        };
        ConnectionPlan {
            cut_at,
            cut,
            one_byte,
            stall,
        }
    }
}

impl ChaosProxy {
    /// Starts a proxy on 127.0.0.1 in front of `upstream`.
    pub fn start(upstream: SocketAddr, plan: ChaosPlan) -> ChaosProxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let counters = Arc::new(ChaosCounters::default());
        let shared = counters.clone();
        std::thread::spawn(move || {
            let mut rng = Rng(plan.seed | 1);
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect(upstream) else {
                    continue;
                };
                let decided = plan.draw(&mut rng);
                shared.connections.fetch_add(1, Ordering::SeqCst);
                if decided.cut_at.is_some() {
                    shared.planned_cuts.fetch_add(1, Ordering::SeqCst);
                }
                shared.plans.lock().unwrap().push(decided);
                let (plan, counters) = (plan.clone(), shared.clone());
                std::thread::spawn(move || forward(client, server, decided, &plan, &counters));
            }
        });
        ChaosProxy { addr, counters }
    }

    /// `http://` + the proxy's address + `path`.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.addr, path)
    }
}

/// Runs one connection: the request direction untouched on its own thread, the response
/// direction under `decided`.
fn forward(
    mut client: TcpStream,
    mut server: TcpStream,
    decided: ConnectionPlan,
    plan: &ChaosPlan,
    counters: &ChaosCounters,
) {
    let (mut c2, mut s2) = (client.try_clone().unwrap(), server.try_clone().unwrap());
    std::thread::spawn(move || {
        let _ = std::io::copy(&mut c2, &mut s2);
        // Dropping the clones here may be the last close of the client socket (see below).
    });
    let cut_at = decided.cut_at.unwrap_or(u64::MAX);
    let mut sent = 0u64;
    let mut buf = [0u8; 8192];
    let mut reached_cut = false;
    loop {
        let n = match server.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let take = (n as u64).min(cut_at - sent) as usize;
        let piece = &buf[..take];
        let ok = if decided.one_byte && sent < plan.one_byte_prefix {
            piece.iter().all(|b| client.write_all(&[*b]).is_ok())
        } else {
            client.write_all(piece).is_ok()
        };
        sent += take as u64;
        if !ok {
            break;
        }
        if sent >= cut_at {
            reached_cut = true;
            break;
        }
        if decided.stall && sent > plan.stall_window.0 && sent < plan.stall_window.1 {
            std::thread::sleep(plan.stall);
        }
    }
    let _ = server.shutdown(Shutdown::Both);
    match (reached_cut, decided.cut) {
        (true, CutKind::Reset) => {
            counters.resets.fetch_add(1, Ordering::SeqCst);
            // No FIN may precede the reset (a client that saw FIN first reads a clean end of
            // stream): SHUT_RD sends nothing but wakes the request-direction thread, whose clone
            // then closes; with linger 0 the last close sends RST.
            let _ = socket2::SockRef::from(&client).set_linger(Some(Duration::ZERO));
            let _ = client.shutdown(Shutdown::Read);
        }
        (true, CutKind::Hang) => {
            counters.hangs.fetch_add(1, Ordering::SeqCst);
            std::thread::sleep(plan.hang_for);
            let _ = client.shutdown(Shutdown::Both);
        }
        (true, CutKind::Close) => {
            counters.closes.fetch_add(1, Ordering::SeqCst);
            let _ = client.shutdown(Shutdown::Both);
        }
        // The upstream ended (or the client went away): pass the clean end on.
        (false, _) => {
            let _ = client.shutdown(Shutdown::Both);
        }
    }
}
