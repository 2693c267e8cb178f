//! The state of one request in flight ([`RequestState`]): its phase, how its result is
//! delivered, and how it leaves the client (removed, or failed).

use std::borrow::Cow;
use std::cell::{Cell, RefCell};
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::actions::Action;
use super::pool::{HostKey, in_host_line};
use super::receive::PartialHead;
use super::timers::IdleWatch;
use super::{ClientInner, HttpClient, SseTarget, StreamEvent};
use crate::network::http::body::BodyDecoder;
use crate::network::http::content::ContentDecoder;
use crate::network::http::head::{HeadLimits, ResponseHead, standard_reason};
use crate::network::http::{HttpError, HttpRequest, HttpResponse};
use crate::network::sse::SseParser;

type Callback = Box<dyn FnOnce(Result<HttpResponse, HttpError>)>;
pub(super) type StreamFn = Rc<StreamCallback<dyn FnMut(StreamEvent<'_>)>>;

/// A streaming request's `on_event`, shared with the actions that call it.
pub(super) struct StreamCallback<F: ?Sized> {
    /// Set when the request is cancelled: pieces already read (queued for delivery in the same
    /// turn, or waiting for a running callback) are not delivered after it.
    pub(super) cancelled: Cell<bool>,
    pub(super) f: RefCell<F>,
}

pub(super) enum Delivery {
    Buffered(Option<Callback>),
    Streaming {
        on_event: StreamFn,
        on_done: Option<Callback>,
    },
    Sse {
        target: Weak<dyn SseTarget>,
        parser: Option<Box<SseParser>>,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    Queued,
    RecvHead,
    RecvBody,
}

/// What the final head brought, kept until the response is complete: the head (not an
/// `HttpResponse`: that would carry a second copy of the URL for as long as a stream lasts) and
/// the decoder of the body's framing. One box for both, made when the head arrives: a request
/// waiting for its connection (thousands may at once) would otherwise carry their size.
pub(super) struct Arrived {
    pub(super) head: ResponseHead,
    pub(super) decoder: BodyDecoder,
}

/// Everything one request needs while in flight (the seed design's `RequestState`).
pub(super) struct RequestState {
    pub(super) request: HttpRequest,
    pub(super) phase: Phase,
    pub(super) delivery: Delivery,
    pub(super) conn: Option<u64>,
    pub(super) host: Rc<HostKey>,
    pub(super) head_limits: HeadLimits,
    /// A head that arrived in pieces: its bytes so far and the parser's progress. Boxed and
    /// only made then; a head that arrives in one read is parsed where it lies.
    pub(super) partial_head: Option<Box<PartialHead>>,
    /// The final head and its body's decoder, made when the head arrives (see [`Arrived`]).
    pub(super) arrived: Option<Box<Arrived>>,
    /// Boxed (like `redirect_next`): rarely present, and every request would carry its size.
    pub(super) content: Option<Box<ContentDecoder>>,
    pub(super) body: BytesMut,
    /// Keep only this much of the body (the start of a rejected SSE response, for its message).
    pub(super) body_limit: Option<usize>,
    /// A buffered body beyond this is an error (the session's `max_response_body_bytes`).
    pub(super) max_body: usize,
    pub(super) reusable: bool,
    pub(super) redirect_next: Option<Box<HttpRequest>>,
    pub(super) redirects: u32,
    pub(super) started: Instant,
    pub(super) got_bytes: bool,
    pub(super) retried: bool,
    /// When the total timeout ends the request (the client's one timer watches every deadline).
    pub(super) total_deadline: Option<Instant>,
    /// The read timeout's timer; made on first use, so a request without one carries none of it.
    pub(super) idle: Option<Box<IdleWatch>>,
    pub(super) upload_total: u64,
    /// Bytes of the request head, which `wire_written` counts but upload progress does not.
    pub(super) upload_head_len: u64,
    /// Bytes of this request the socket reported written.
    pub(super) wire_written: u64,
    /// Longest silence allowed while waiting for response bytes (idle/read timeout).
    pub(super) read_timeout: Option<Duration>,
    /// Assigned to a connection still on its way up: the request is written when it connects.
    pub(super) write_when_connected: bool,
    /// Set once the head opened an event stream: body bytes go to `sse_parser`.
    pub(super) sse_mode: bool,
    /// The final head's reason phrase is its status's standard one, left out of the head
    /// (see `HeadParser::sharing_standard_reasons`): responses share the static text.
    pub(super) standard_reason: bool,
    pub(super) sse_parser: Option<Box<SseParser>>,
}

impl HttpClient {
    /// Removes the request and its timers. Kept in its box: the state is ~500 bytes, and each
    /// move out of it was a copy.
    pub(super) fn take_request(
        &self,
        inner: &mut ClientInner,
        id: u64,
    ) -> Option<Box<RequestState>> {
        let mut state = inner.requests.remove(&id)?;
        if let Some(key) = state.idle.as_deref_mut().and_then(|w| w.timer.take()) {
            self.core.timer_remove(key);
        }
        // Only a request waiting for a connection is in its host's line (`assign`, the one step
        // out of `Queued`, takes requests that left it): others skip the host's books.
        if state.phase == Phase::Queued {
            if let Some(host) = inner.hosts.get_mut(&state.host) {
                host.queue.retain(|q| *q != id);
            }
        } else {
            debug_assert!(
                !in_host_line(&inner.hosts, &state.host, id),
                "request {id} in its host's line after it left `Queued`"
            );
        }
        Some(state)
    }

    /// Ends a request with `error`; `close_conn` when its connection is now unusable.
    pub(super) fn fail(
        &self,
        inner: &mut ClientInner,
        id: u64,
        error: HttpError,
        close_conn: bool,
        actions: &mut Vec<Action>,
    ) {
        if !matches!(error, HttpError::Cancelled)
            && let Some(state) = inner.requests.get_mut(&id)
            && state.refused_event_stream()
        {
            // The stream was refused at its head; its error body only serves the message, and
            // what arrived of it is enough however the transfer ended (the owner reports the
            // refusal: no reconnect).
            log::debug!("request {id}: refused event stream's body ended early: {error}");
            state.reusable = false;
            return self.complete(inner, id, actions);
        }
        let Some(mut state) = self.take_request(inner, id) else {
            return;
        };
        // The server answered (some of it): a body that all left is reported whole.
        if state.got_bytes && state.upload_total > 0 && !matches!(error, HttpError::Cancelled) {
            self.settle_upload(&inner.conns, &mut state, id, actions);
        }
        if close_conn {
            self.release_conn(inner, &mut state, None, actions);
        } else {
            state.conn = None;
        }
        log::debug!("request {id} failed: {error}");
        let finish = self.finish_action(inner, id, state.into_delivery(), Err(error));
        actions.push(finish);
    }
}

/// A request whose outcome is decided (it left `ClientInner::requests`) while its callback has
/// not run yet: its `Finish` action waits behind user code (its own earlier events, a progress
/// slot, a nested loop, the next turn). Until that callback runs the request can still be
/// cancelled, as from user code it has not finished.
pub(super) struct Finishing {
    pub(super) id: u64,
    pub(super) fate: Fate,
    /// A streaming request's `on_event`, silenced by a cancel.
    pub(super) on_event: Option<StreamFn>,
    /// An event stream's owner, told of a cancel (its events already read are not delivered).
    pub(super) sse_owner: Option<Weak<dyn SseTarget>>,
}

/// What becomes of a [`Finishing`] request's decided outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fate {
    /// Delivered as decided.
    Deliver,
    /// Replaced by `Cancelled` (a `cancel` came first).
    Cancelled,
    /// Dropped without a call (its owner abandoned it).
    Dropped,
}

/// Unregisters a [`Finishing`] request whose `Finish` action is dropped without running (a
/// panic out of user code drops the rest of its delivery): nothing is left to cancel then.
pub(super) struct FinishGuard {
    client: Weak<HttpClient>,
    id: u64,
    armed: bool,
}

impl FinishGuard {
    /// The action runs: [`HttpClient::finish`] unregisters the request itself.
    pub(super) fn disarm(mut self) {
        self.armed = false;
    }
}

impl Drop for FinishGuard {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        if let Some(client) = self.client.upgrade()
            && let Ok(mut inner) = client.inner.try_borrow_mut()
        {
            inner.finishing.retain(|f| f.id != self.id);
        }
    }
}

impl HttpClient {
    /// The `Finish` action of request `id`, registered as [`Finishing`] until it runs (a
    /// cancelled one is final: a later cancel changes nothing).
    pub(super) fn finish_action(
        &self,
        inner: &mut ClientInner,
        id: u64,
        delivery: Delivery,
        result: Result<HttpResponse, HttpError>,
    ) -> Action {
        if matches!(result, Err(HttpError::Cancelled)) {
            return Action::Finish(id, delivery, result, None);
        }
        let (on_event, sse_owner) = match &delivery {
            Delivery::Streaming { on_event, .. } => (Some(Rc::clone(on_event)), None),
            Delivery::Sse { target, .. } => (None, Some(target.clone())),
            Delivery::Buffered(_) => (None, None),
        };
        inner.finishing.push(Finishing {
            id,
            fate: Fate::Deliver,
            on_event,
            sse_owner,
        });
        let guard = FinishGuard {
            client: self.self_weak.clone(),
            id,
            armed: true,
        };
        Action::Finish(id, delivery, result, Some(guard))
    }
}

impl RequestState {
    /// An event-stream request whose response head refused the stream (not a 200
    /// `text/event-stream`, not a redirect being followed): its body is being read for the
    /// error message only.
    pub(super) fn refused_event_stream(&self) -> bool {
        matches!(self.delivery, Delivery::Sse { .. })
            && !self.sse_mode
            && self.arrived.is_some()
            && self.redirect_next.is_none()
    }

    /// The delivery, with an SSE request's parser handed back to its owner.
    pub(super) fn into_delivery(mut self: Box<Self>) -> Delivery {
        self.take_delivery()
    }

    /// [`into_delivery`](Self::into_delivery) for a state whose box is kept: an empty
    /// delivery is left behind.
    pub(super) fn take_delivery(&mut self) -> Delivery {
        if let Delivery::Sse { parser, .. } = &mut self.delivery {
            *parser = self.sse_parser.take();
        }
        std::mem::replace(&mut self.delivery, Delivery::Buffered(None))
    }

    /// Drops what a finished request's state may hold of any size (its request's fields and
    /// body, the boxes of its response's handling), so that its box can wait for the next
    /// request (`ClientInner::spare_state`) holding nothing but small parts (the URL's and host's
    /// shared handles), which the next request's state replaces.
    pub(super) fn shed_for_reuse(&mut self) {
        self.request.shed_headers_and_body();
        self.partial_head = None;
        self.arrived = None;
        self.content = None;
        self.body = BytesMut::new();
        self.redirect_next = None;
        self.idle = None;
        self.sse_parser = None;
    }

    /// The response made of `head` and `body`, for this request's URL as it stands, `now`
    /// being when it is complete.
    pub(super) fn response_from(
        &self,
        head: ResponseHead,
        body: Bytes,
        now: Instant,
    ) -> HttpResponse {
        let reason: Cow<'static, str> = match standard_reason(head.status) {
            Some(text) if self.standard_reason && head.reason.is_empty() => Cow::Borrowed(text),
            _ => Cow::Owned(head.reason),
        };
        HttpResponse::new(
            Arc::clone(self.request.shared_url()),
            head.status,
            reason,
            head.version,
            head.headers,
            body,
        )
        .with_redirect_count(self.redirects)
        .with_elapsed(now.saturating_duration_since(self.started))
    }

    /// The body's framing decoder, once the head arrived.
    pub(super) fn decoder(&self) -> Option<&BodyDecoder> {
        self.arrived.as_deref().map(|a| &a.decoder)
    }

    /// Clears everything a response wrote, for a redirect hop or a retry.
    pub(super) fn reset_for_hop(&mut self) {
        self.phase = Phase::Queued;
        self.conn = None;
        self.partial_head = None;
        self.arrived = None;
        self.content = None;
        self.body = BytesMut::new();
        self.body_limit = None;
        self.reusable = false;
        self.got_bytes = false;
        self.write_when_connected = false;
        self.sse_mode = false;
    }
}
