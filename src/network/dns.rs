//! TEMPORARY stand-in for the DnsResolver (being written separately); same API subset.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, ToSocketAddrs};
use std::rc::Rc;

use crate::foundation::{LoopCore, LoopError};
use crate::network::error::SocketError;

type Callback = Box<dyn FnOnce(Result<Vec<IpAddr>, SocketError>)>;

/// Identifies a pending lookup.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LookupId(u64);

/// Resolves host names off the loop thread.
pub struct DnsResolver {
    pending: RefCell<HashMap<u64, Callback>>,
    next: std::cell::Cell<u64>,
}

impl std::fmt::Debug for DnsResolver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("DnsResolver")
    }
}

thread_local! {
    static INSTANCE: RefCell<Option<Rc<DnsResolver>>> = const { RefCell::new(None) };
}

impl DnsResolver {
    /// The resolver of the current thread's loop.
    pub fn instance() -> Result<Rc<DnsResolver>, LoopError> {
        LoopCore::current()?;
        Ok(INSTANCE.with(|i| {
            i.borrow_mut()
                .get_or_insert_with(|| {
                    Rc::new(DnsResolver {
                        pending: RefCell::new(HashMap::new()),
                        next: std::cell::Cell::new(1),
                    })
                })
                .clone()
        }))
    }

    /// Looks up `host`.
    pub fn lookup(
        &self,
        host: &str,
        callback: impl FnOnce(Result<Vec<IpAddr>, SocketError>) + 'static,
    ) -> LookupId {
        let id = self.next.get();
        self.next.set(id + 1);
        self.pending.borrow_mut().insert(id, Box::new(callback));
        let handle = LoopCore::current().map(|c| c.handle());
        let host = host.to_string();
        std::thread::spawn(move || {
            let result = (host.as_str(), 0)
                .to_socket_addrs()
                .map(|it| it.map(|a| a.ip()).collect::<Vec<_>>())
                .map_err(|e| SocketError::Lookup {
                    host: host.clone(),
                    reason: e.to_string(),
                });
            if let Ok(handle) = handle {
                let _ = handle.post(move || {
                    if let Ok(r) = DnsResolver::instance() {
                        let cb = r.pending.borrow_mut().remove(&id);
                        if let Some(cb) = cb {
                            cb(result);
                        }
                    }
                });
            }
        });
        LookupId(id)
    }

    /// Cancels a lookup.
    pub fn cancel(&self, id: LookupId) -> bool {
        self.pending.borrow_mut().remove(&id.0).is_some()
    }
}

/// An IP literal (brackets allowed).
pub fn resolve_literal(host: &str) -> Option<IpAddr> {
    host.trim_start_matches('[')
        .trim_end_matches(']')
        .parse()
        .ok()
}
