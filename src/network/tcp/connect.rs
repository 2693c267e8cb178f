//! Happy Eyeballs (RFC 8305) connection racing for [`TcpSocket`](super::TcpSocket).
//!
//! Addresses are interleaved by family, starting with the family of the first address (the
//! system resolver sorts by RFC 6724 and `/etc/gai.conf`, so a host set to prefer IPv4 is not
//! made to wait on a broken IPv6 route first; RFC 8305 §4). The first attempt starts at
//! once; each further one starts when the previous one failed or after [`CONNECTION_ATTEMPT_DELAY`]
//! without an answer. The first attempt to connect wins and the others are closed.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::rc::{Rc, Weak};
use std::time::Duration;

use mio::Interest;
use mio::net::TcpStream;

use crate::foundation::{LoopCore, Readiness, ReadyHandler, SourceKey};
use crate::network::error::{SocketError, SocketOperation};

/// RFC 8305's recommended delay between connection attempts.
pub const CONNECTION_ATTEMPT_DELAY: Duration = Duration::from_millis(250);

/// Orders addresses for racing: alternate families, starting with the first address's, each
/// family in the given order.
pub(crate) fn interleave(addrs: &[SocketAddr]) -> VecDeque<SocketAddr> {
    let first_is_v6 = addrs.first().is_some_and(SocketAddr::is_ipv6);
    let mut preferred = addrs.iter().filter(|a| a.is_ipv6() == first_is_v6);
    let mut other = addrs.iter().filter(|a| a.is_ipv6() != first_is_v6);
    let mut out = VecDeque::with_capacity(addrs.len());
    loop {
        match (preferred.next(), other.next()) {
            (None, None) => break,
            (a, b) => out.extend(a.into_iter().chain(b).copied()),
        }
    }
    out
}

/// An attempt's I/O error with the address it happened at, for the error a failed connect
/// reports (a host name may stand for several addresses).
#[derive(Debug)]
struct ConnectFailure {
    addr: SocketAddr,
    tried: usize,
    error: std::sync::Arc<std::io::Error>,
}

impl std::fmt::Display for ConnectFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.tried > 1 {
            write!(
                f,
                "all {} addresses failed, the last {}: {}",
                self.tried, self.addr, self.error
            )
        } else {
            write!(f, "{}: {}", self.addr, self.error)
        }
    }
}

impl std::error::Error for ConnectFailure {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(&*self.error)
    }
}

/// Told when an attempt's descriptor is ready.
pub(crate) trait AttemptOwner {
    fn attempt_ready(&self, id: u64, readiness: Readiness);
}

struct AttemptHandler {
    owner: Weak<dyn AttemptOwner>,
    id: u64,
}

impl ReadyHandler for AttemptHandler {
    fn on_ready(&self, readiness: Readiness) {
        if let Some(owner) = self.owner.upgrade() {
            owner.attempt_ready(self.id, readiness);
        }
    }
}

struct Attempt {
    id: u64,
    addr: SocketAddr,
    stream: TcpStream,
    key: SourceKey,
    _handler: Rc<AttemptHandler>,
}

/// What an attempt's readiness meant.
pub(crate) enum AttemptOutcome {
    /// Still connecting (spurious wake-up).
    Pending,
    /// This attempt connected; the others were closed.
    Connected(TcpStream, SocketAddr),
    /// This attempt failed; start the next one if any (see [`ConnectRace::start_next`]).
    Failed,
}

/// The in-flight attempts of one connect.
pub(crate) struct ConnectRace {
    queue: VecDeque<SocketAddr>,
    attempts: Vec<Attempt>,
    next_id: u64,
    /// Boxed: kept by every connecting socket, set only when an attempt fails.
    last_error: Option<Box<SocketError>>,
    /// Where the last failure happened, and how many addresses have been tried.
    last_failed: Option<SocketAddr>,
    tried: usize,
}

impl ConnectRace {
    pub(crate) fn new(addrs: &[SocketAddr]) -> Self {
        ConnectRace {
            queue: interleave(addrs),
            attempts: Vec::new(),
            next_id: 1,
            last_error: None,
            last_failed: None,
            tried: 0,
        }
    }

    pub(crate) fn has_queued(&self) -> bool {
        !self.queue.is_empty()
    }

    pub(crate) fn in_flight(&self) -> usize {
        self.attempts.len()
    }

    /// Starts attempts until one is in flight or the queue is empty (addresses that fail
    /// synchronously, e.g. unreachable networks, are skipped at once).
    pub(crate) fn start_next(&mut self, core: &LoopCore, owner: &Weak<dyn AttemptOwner>) {
        while let Some(addr) = self.pop_queued() {
            match self.open(core, owner, addr) {
                Ok(attempt) => {
                    log::debug!("connecting to {addr}");
                    // Exact growth: most connects make one attempt, and a first `push` would
                    // reserve four (every connecting socket would carry three unused slots).
                    self.attempts.reserve_exact(1);
                    self.attempts.push(attempt);
                    return;
                }
                Err(e) => {
                    log::debug!("connect to {addr} failed at once: {e}");
                    self.last_error = Some(Box::new(e));
                    self.last_failed = Some(addr);
                }
            }
        }
    }

    /// The next address to try; the queue's block is freed with its last address (usually the
    /// only one), rather than kept by the socket until it connects.
    fn pop_queued(&mut self) -> Option<SocketAddr> {
        let addr = self.queue.pop_front();
        self.tried += usize::from(addr.is_some());
        if self.queue.is_empty() {
            self.queue = VecDeque::new();
        }
        addr
    }

    fn open(
        &mut self,
        core: &LoopCore,
        owner: &Weak<dyn AttemptOwner>,
        addr: SocketAddr,
    ) -> Result<Attempt, SocketError> {
        let mut stream =
            TcpStream::connect(addr).map_err(|e| SocketError::io(SocketOperation::Connect, e))?;
        let id = self.next_id;
        self.next_id += 1;
        let handler = Rc::new(AttemptHandler {
            owner: owner.clone(),
            id,
        });
        let weak: Weak<dyn ReadyHandler> = Rc::downgrade(&handler) as Weak<dyn ReadyHandler>;
        let key = core
            .register(&mut stream, Interest::READABLE | Interest::WRITABLE, weak)
            .map_err(|e| SocketError::io(SocketOperation::Configure, e))?;
        Ok(Attempt {
            id,
            addr,
            stream,
            key,
            _handler: handler,
        })
    }

    pub(crate) fn on_ready(&mut self, core: &LoopCore, id: u64, r: Readiness) -> AttemptOutcome {
        let Some(pos) = self.attempts.iter().position(|a| a.id == id) else {
            return AttemptOutcome::Pending;
        };
        let attempt = &self.attempts[pos];
        let failure = match attempt.stream.take_error() {
            Ok(Some(e)) => Some(e),
            Err(e) => Some(e),
            Ok(None) if r.error => Some(std::io::Error::other("connection failed")),
            Ok(None) => None,
        };
        if let Some(e) = failure {
            let mut attempt = self.attempts.swap_remove(pos);
            core.deregister(&mut attempt.stream, attempt.key);
            log::debug!("connect to {} failed: {e}", attempt.addr);
            self.last_error = Some(Box::new(SocketError::io(SocketOperation::Connect, e)));
            self.last_failed = Some(attempt.addr);
            return AttemptOutcome::Failed;
        }
        if !(r.writable || r.read_closed || r.write_closed) {
            return AttemptOutcome::Pending;
        }
        match attempt.stream.peer_addr() {
            Ok(_) => {
                let mut winner = self.attempts.swap_remove(pos);
                core.deregister(&mut winner.stream, winner.key);
                self.close_all(core);
                AttemptOutcome::Connected(winner.stream, winner.addr)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotConnected => AttemptOutcome::Pending,
            Err(e) => {
                let mut attempt = self.attempts.swap_remove(pos);
                core.deregister(&mut attempt.stream, attempt.key);
                self.last_error = Some(Box::new(SocketError::io(SocketOperation::Connect, e)));
                self.last_failed = Some(attempt.addr);
                AttemptOutcome::Failed
            }
        }
    }

    /// The error to report when every address failed: the last failure, its message naming the
    /// address (and how many were tried when there were several); the I/O error kind is kept.
    pub(crate) fn final_error(&mut self) -> SocketError {
        let Some(error) = self.last_error.take() else {
            return SocketError::InvalidAddress("no address to connect to".to_string());
        };
        match (*error, self.last_failed) {
            (SocketError::Io { operation, source }, Some(addr)) => {
                let kind = source.kind();
                let failure = ConnectFailure {
                    addr,
                    tried: self.tried,
                    error: source,
                };
                SocketError::io(operation, std::io::Error::new(kind, failure))
            }
            (error, _) => error,
        }
    }
    pub(crate) fn close_all(&mut self, core: &LoopCore) {
        for mut attempt in self.attempts.drain(..) {
            core.deregister(&mut attempt.stream, attempt.key);
        }
        self.queue.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order(addrs: &[&str]) -> Vec<String> {
        let addrs: Vec<SocketAddr> = addrs.iter().map(|s| s.parse().unwrap()).collect();
        interleave(&addrs).iter().map(|a| a.to_string()).collect()
    }

    #[test]
    fn interleaves_families_starting_with_the_resolvers_first() {
        assert_eq!(
            order(&["[::1]:1", "1.1.1.1:1", "2.2.2.2:1", "[::2]:1", "3.3.3.3:1"]),
            ["[::1]:1", "1.1.1.1:1", "[::2]:1", "2.2.2.2:1", "3.3.3.3:1"]
        );
        // A resolver told to prefer IPv4 (gai.conf) lists it first: IPv4 is tried first.
        assert_eq!(
            order(&["1.1.1.1:1", "2.2.2.2:1", "[::1]:1", "[::2]:1", "3.3.3.3:1"]),
            ["1.1.1.1:1", "[::1]:1", "2.2.2.2:1", "[::2]:1", "3.3.3.3:1"]
        );
        assert_eq!(order(&["[::1]:1"]), ["[::1]:1"]);
        assert!(order(&[]).is_empty());
    }
}
