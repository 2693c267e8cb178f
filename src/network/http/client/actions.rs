//! The deferred action list: work found while the client's state is borrowed (user callbacks,
//! signals, socket closes) and run once the borrow is released.

use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use bytes::Bytes;

use super::state::{Delivery, Fate, FinishGuard, StreamFn};
use super::{HttpClient, RequestId, SseTarget, StreamEvent};
use crate::network::http::{HttpError, HttpResponse};
use crate::network::sse::SseBatch;
use crate::network::tcp::TcpSocket;

/// Work found under the borrow and done after it (user code, socket closes).
pub(super) enum Action {
    /// With the guard that unregisters a still-cancellable request if the action is dropped.
    Finish(
        u64,
        Delivery,
        Result<HttpResponse, HttpError>,
        Option<FinishGuard>,
    ),
    StreamHead(u64, StreamFn, HttpResponse),
    StreamData(u64, StreamFn, Bytes),
    SseHead(u64, Weak<dyn SseTarget>, HttpResponse),
    SseEvents(u64, Weak<dyn SseTarget>, SseBatch),
    Progress(u64, u64, Option<u64>),
    /// The end of a request body's upload progress (see `HttpClient::settle_upload`).
    Upload(u64, u64),
    Close(Rc<TcpSocket>),
    ResponseReceived(HttpResponse),
    Failed(u64, HttpError),
}

impl Action {
    /// The request whose user code this action runs (its callbacks, its SSE owner, its
    /// progress): such actions of one request are delivered one at a time, in order.
    fn request(&self) -> Option<u64> {
        match self {
            Action::Finish(id, ..)
            | Action::StreamHead(id, ..)
            | Action::StreamData(id, ..)
            | Action::SseHead(id, ..)
            | Action::SseEvents(id, ..)
            | Action::Progress(id, ..)
            | Action::Upload(id, ..) => Some(*id),
            Action::Close(_) | Action::ResponseReceived(_) | Action::Failed(..) => None,
        }
    }
}

/// The requests whose user code is running (further up the stack), each with what arrived for
/// it meanwhile (from a nested loop run by that code): delivered after that code returns — and
/// after the request's later actions in the list that ran it, which were read first — so a
/// request's events never overtake one another and a streaming callback is never re-entered.
#[derive(Default)]
pub(super) struct Delivering {
    queues: Vec<DeliveryQueue>,
    /// How many action lists are being run, nested ones included: the innermost one's depth.
    lists: u32,
}

impl Delivering {
    /// Whether user code of request `id` is running.
    pub(super) fn contains(&self, id: u64) -> bool {
        self.queues.iter().any(|q| q.id == id)
    }

    /// The connections held back for the running user code (see [`DeliveryQueue::held`]).
    pub(super) fn held_mut(&mut self) -> impl Iterator<Item = &mut Option<(u64, Rc<TcpSocket>)>> {
        self.queues.iter_mut().map(|q| &mut q.held)
    }
}

/// What waits for one request's running user code.
pub(super) struct DeliveryQueue {
    id: u64,
    /// The depth of the action list that runs this request's actions (see
    /// [`Delivering::lists`]): actions of inner lists (nested loops) wait.
    list: u32,
    waiting: VecDeque<Action>,
    /// The request's connection (id and socket), held back from reading while something waits
    /// (see [`HttpClient::hold_conn`]); released when the queue is delivered.
    held: Option<(u64, Rc<TcpSocket>)>,
}

/// Ends a request's turn in [`Delivering`], also when its user code panics.
struct DeliveryTurn<'a> {
    client: &'a HttpClient,
    id: u64,
}

impl Drop for DeliveryTurn<'_> {
    fn drop(&mut self) {
        let ended = {
            let mut delivering = self.client.delivering.borrow_mut();
            let at = delivering.queues.iter().position(|q| q.id == self.id);
            at.map(|at| delivering.queues.swap_remove(at))
        };
        self.client.end_queue(ended);
    }
}

/// One action list being run (see [`HttpClient::run_action_list`]); at its end, turns it kept
/// open for actions it then did not run (its client was dropped, or user code panicked) end.
struct ActionList<'a> {
    client: &'a HttpClient,
    depth: u32,
}

impl<'a> ActionList<'a> {
    fn enter(client: &'a HttpClient) -> Self {
        let mut delivering = client.delivering.borrow_mut();
        delivering.lists += 1;
        let depth = delivering.lists;
        ActionList { client, depth }
    }
}

impl Drop for ActionList<'_> {
    fn drop(&mut self) {
        loop {
            let left = {
                let mut delivering = self.client.delivering.borrow_mut();
                let at = delivering.queues.iter().position(|q| q.list == self.depth);
                let left = at.map(|at| delivering.queues.swap_remove(at));
                if left.is_none() {
                    delivering.lists -= 1;
                }
                left
            };
            if left.is_none() {
                return;
            }
            self.client.end_queue(left);
        }
    }
}

impl HttpClient {
    // ---- delivering --------------------------------------------------------------------------

    /// Runs `actions` from the loop (on its next turn); when that loop has been dropped they run
    /// at once instead: nothing would ever run them, and a callback dropped uncalled would leave
    /// its caller waiting for ever.
    pub(super) fn post_actions(&self, actions: Vec<Action>) {
        if actions.is_empty() {
            return;
        }
        if self.core.is_closed() {
            // The caller's handle is not a delivery's (see `dropped_by_user`).
            let _caller = self.self_weak.upgrade();
            return self.run_actions(actions);
        }
        let weak = self.self_weak.clone();
        self.core.post(Box::new(move || {
            if let Some(client) = weak.upgrade() {
                client.run_actions(actions);
            }
        }));
    }

    /// Runs collected work with no borrow held.
    pub(super) fn run_actions(&self, mut actions: Vec<Action>) {
        self.run_action_list(&mut actions);
    }

    /// Keeps an SSE batch (emptied) for the next delivery, unless a burst made it large.
    pub(super) fn recycle_batch(&self, mut batch: SseBatch) {
        if batch.clear() {
            self.spare_batch.set(batch);
        }
    }

    /// Runs and empties `actions` (keeping its capacity). Once user code dropped the last
    /// handle of the client, only socket closes run: the rest (callbacks, signals) is dropped
    /// without being called, as the client's drop promises.
    pub(super) fn run_action_list(&self, actions: &mut Vec<Action>) {
        let list = ActionList::enter(self);
        let mut rest = actions.drain(..);
        while let Some(action) = rest.next() {
            match action {
                Action::Close(socket) => socket.abort(),
                _ if self.dropped_by_user() => {}
                action => match action.request() {
                    Some(id) => {
                        // The request's later actions in this list were read before anything a
                        // nested loop run by this one's user code reads: they go first.
                        let more = rest.as_slice().iter().any(|a| a.request() == Some(id));
                        self.deliver(id, action, list.depth, more);
                    }
                    None => self.run_action(action),
                },
            }
        }
        drop(rest);
        drop(list);
    }

    /// Ends a request's turn in [`Delivering`]: its connection reads again. Anything still
    /// queued (only when its client was dropped, or after a panic) is dropped uncalled, outside
    /// the borrow.
    fn end_queue(&self, ended: Option<DeliveryQueue>) {
        if let Some((conn, socket)) = ended.as_ref().and_then(|q| q.held.as_ref()) {
            self.unhold_conn(*conn, socket);
        }
        drop(ended);
    }

    /// Whether user code dropped the last handle of the client while it delivers: only the
    /// delivery's own (upgraded) handle is left. Every delivery runs on such a handle (the
    /// socket sinks, timers and posted work upgrade a weak one; `abandon` takes one besides its
    /// caller's), so a count of one means nobody outside holds the client any more.
    #[inline(always)]
    pub(super) fn dropped_by_user(&self) -> bool {
        self.self_weak.strong_count() <= 1
    }

    /// Runs an action of request `id` from the action list at depth `list`, unless user code of
    /// that request is running further up the stack (a nested loop in its callback or slot), or
    /// an outer list has more of its actions: then the action waits for that code to return, and
    /// is run after it, in order. With `more` (the list has more actions of the request), the
    /// request's turn stays open for them: what arrives meanwhile waits behind them.
    fn deliver(&self, id: u64, action: Action, list: u32, more: bool) {
        let mut delivering = self.delivering.borrow_mut();
        match delivering.queues.iter_mut().find(|q| q.id == id) {
            Some(queue) if queue.list != list => {
                queue.waiting.push_back(action);
                let hold = queue.held.is_none();
                drop(delivering);
                if hold {
                    self.hold_connection(id);
                }
                return;
            }
            // This list's turn, kept open for this action.
            Some(_) => {}
            None => delivering.queues.push(DeliveryQueue {
                id,
                list,
                waiting: VecDeque::new(),
                held: None,
            }),
        }
        drop(delivering);
        let turn = DeliveryTurn { client: self, id };
        self.run_action(action);
        if more && !self.dropped_by_user() {
            // Ended by the list's last action of the request (or by the list, see `ActionList`).
            std::mem::forget(turn);
            return;
        }
        // What waited is dropped with the turn, uncalled, once the client was dropped.
        while !self.dropped_by_user() {
            let next = self
                .delivering
                .borrow_mut()
                .queues
                .iter_mut()
                .find(|q| q.id == id)
                .and_then(|q| q.waiting.pop_front());
            let Some(action) = next else { break };
            self.run_action(action);
        }
    }

    /// Holds request `id`'s connection back while its user code waits in a nested loop (see
    /// [`HttpClient::hold_conn`]): what the loop read for the request could only pile up here.
    fn hold_connection(&self, id: u64) {
        let conn = self
            .inner
            .borrow()
            .requests
            .get(&id)
            .and_then(|state| state.conn);
        let Some((conn, socket)) = conn.and_then(|conn| Some((conn, self.hold_conn(conn, true)?)))
        else {
            return;
        };
        if let Some(queue) = self
            .delivering
            .borrow_mut()
            .queues
            .iter_mut()
            .find(|q| q.id == id)
        {
            queue.held = Some((conn, socket));
        }
    }

    fn run_action(&self, action: Action) {
        match action {
            Action::Close(socket) => socket.abort(),
            Action::StreamHead(_, f, response) => {
                if !f.cancelled.get() {
                    (f.f.borrow_mut())(StreamEvent::Head(&response));
                }
            }
            Action::StreamData(_, f, data) => {
                if !f.cancelled.get() {
                    (f.f.borrow_mut())(StreamEvent::Data(&data));
                }
            }
            Action::SseHead(id, target, response) => {
                if let Some(t) = target.upgrade() {
                    t.on_head(RequestId::from_raw(id), &response);
                }
            }
            Action::SseEvents(id, target, batch) => {
                if let Some(t) = target.upgrade() {
                    t.on_events(RequestId::from_raw(id), &batch);
                }
                self.recycle_batch(batch);
            }
            Action::Upload(id, total) => self.emit_upload_end(id, total),
            Action::Progress(id, received, total) => {
                if self.download_progress.connection_count() > 0 {
                    self.download_progress
                        .emit(&(RequestId::from_raw(id), received, total));
                }
            }
            Action::ResponseReceived(response) => self.response_received.emit(&response),
            Action::Failed(id, e) => self.error.emit(&(RequestId::from_raw(id), e)),
            Action::Finish(id, delivery, result, guard) => {
                if let Some(guard) = guard {
                    guard.disarm();
                }
                self.finish(id, delivery, result)
            }
        }
    }

    /// The last upload report of a request whose answer came before its written bytes were
    /// reported (see `HttpClient::settle_upload`). Out of line: rare.
    #[cold]
    #[inline(never)]
    fn emit_upload_end(&self, id: u64, total: u64) {
        self.upload_progress
            .emit(&(RequestId::from_raw(id), total, total));
    }

    fn finish(&self, id: u64, delivery: Delivery, mut result: Result<HttpResponse, HttpError>) {
        // Its callback runs now: from here on the request cannot be cancelled.
        let fate = {
            let mut inner = self.inner.borrow_mut();
            let at = inner.finishing.iter().position(|f| f.id == id);
            at.map_or(Fate::Deliver, |at| inner.finishing.swap_remove(at).fate)
        };
        match fate {
            Fate::Deliver => {}
            Fate::Cancelled => result = Err(HttpError::Cancelled),
            Fate::Dropped => return,
        }
        let signal_copy = match &result {
            Ok(response) if self.response_received.connection_count() > 0 => {
                Some(Action::ResponseReceived(response.clone()))
            }
            Err(e) if self.error.connection_count() > 0 => Some(Action::Failed(id, e.clone())),
            _ => None,
        };
        match delivery {
            Delivery::Buffered(Some(callback)) => callback(result),
            Delivery::Buffered(None) => {}
            Delivery::Streaming { on_done, .. } => {
                if let Some(done) = on_done {
                    done(result);
                }
            }
            Delivery::Sse { target, parser } => {
                if let Some(t) = target.upgrade() {
                    t.on_end(RequestId::from_raw(id), result, parser);
                }
            }
        }
        if let Some(action) = signal_copy {
            self.run_actions(vec![action]);
        }
    }
}
