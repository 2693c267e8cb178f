//! Receiving a response: socket bytes go through the head parser, then the body decoders, into
//! the body, a streaming callback or the request's SSE parser; a complete body finishes the
//! request or follows its redirect.

use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};

use super::actions::Action;
use super::pool::{Conn, HostKey, intern_host, queue_in_send_order};
use super::state::{Arrived, Delivery, Phase, RequestState};
use super::{ClientInner, HttpClient};
use crate::network::http::LoggedUrl;
use crate::network::http::body::BodyDecoder;
use crate::network::http::content::ContentDecoder;
use crate::network::http::framing::{
    BodyFraming, body_framing, has_connection_option, keep_alive, split_outside_quotes,
};
use crate::network::http::head::{HeadParser, HeadStatus, ResponseHead};
use crate::network::http::headers::HeaderMap;
use crate::network::http::id_map::IdMap;
use crate::network::http::method::is_token;
use crate::network::http::redirect::{RedirectAction, redirect_action, redirect_location};
use crate::network::http::response::charset_parameter;
use crate::network::http::{HttpError, HttpMethod, HttpSession};
use crate::network::sse::SseBatch;
use crate::network::tcp::TcpSocket;

/// How much of a non-event-stream body an SSE request keeps for its error message.
const SSE_ERROR_BODY_LIMIT: usize = 1024;

/// The longest silence while reading a refused event stream's error body: after it the error is
/// reported with what arrived.
const SSE_ERROR_BODY_WAIT: Duration = Duration::from_secs(1);

/// The bytes of a response head received so far, and how far the parser got in them.
pub(super) struct PartialHead {
    buf: BytesMut,
    parser: HeadParser,
    /// The status of the last interim (1xx) response skipped, 0 when none was.
    interim: u16,
}

impl PartialHead {
    /// The status of the interim response that is all the server sent, when it sent one and no
    /// byte of the final head after it: a close now is [`HttpError::NoFinalResponse`].
    pub(super) fn only_interim(&self) -> Option<u16> {
        (self.buf.is_empty() && self.interim != 0).then_some(self.interim)
    }
}

impl HttpClient {
    // ---- receiving ---------------------------------------------------------------------------

    pub(super) fn on_data(&self, conn_id: u64, data: &[u8]) {
        // A read of this connection is being delivered a slice at a time further up the stack,
        // and user code run between its slices turned the loop (a nested wait), which read more:
        // these bytes follow that read's remaining slices, and wait for them.
        let hold = {
            let mut continuing = self.continuing.borrow_mut();
            match continuing.iter_mut().find(|e| e.conn == conn_id) {
                Some(entry) => {
                    entry.later.extend_from_slice(data);
                    Some(entry.held.is_none())
                }
                None => None,
            }
        };
        if let Some(not_held_yet) = hold {
            // The user code waits: hold the connection back until its read is delivered.
            if not_held_yet {
                let socket = self.hold_conn(conn_id, false);
                let mut continuing = self.continuing.borrow_mut();
                if let Some(entry) = continuing.iter_mut().find(|e| e.conn == conn_id) {
                    entry.held = socket.map(|socket| (conn_id, socket));
                }
            }
            return;
        }
        // Taken, not borrowed: a nested arrival (from user code) simply starts an empty list.
        let mut actions = self.spare_actions.take();
        // A large read is handled a slice at a time, as if it had arrived in smaller reads: each
        // slice's SSE events reach the slots while they (and the slice) are still in cache. A
        // compressed body handed out as it comes is cut finer (`DECODED_SLICE`), so that what
        // one slice decodes to stays small whatever the compression ratio.
        let sliced = data.len() > DELIVERY_SLICE
            || (data.len() > DECODED_SLICE && self.slice_len(conn_id) == DECODED_SLICE);
        let _turn = sliced.then(|| {
            self.continuing.borrow_mut().push(ContinuingEntry {
                conn: conn_id,
                later: Vec::new(),
                held: None,
            });
            ContinuingRead {
                client: self,
                conn: conn_id,
            }
        });
        let mut later = Vec::new();
        let mut rest = data.len();
        while rest > 0 {
            if sliced && self.dropped_by_user() {
                // User code run by a slice dropped the client: nobody wants the rest.
                break;
            }
            let start = data.len() - rest;
            let len = if sliced {
                self.slice_len(conn_id)
            } else {
                rest
            };
            let slice = &data[start..start + len.min(rest)];
            rest -= slice.len();
            if rest == 0 && sliced {
                // The last slice: bytes read meanwhile come after it. With none, bytes read while
                // its user code runs are the connection's next ones and are handled as they come
                // (they may be the response to a request that code sent on this connection).
                later = self.continuing_take(conn_id, false);
                if later.is_empty() {
                    self.continuing_take(conn_id, true);
                }
            }
            {
                let mut inner = self.inner.borrow_mut();
                inner.read_continues = (rest > 0 || !later.is_empty()).then_some(conn_id);
                self.process_data(&mut inner, conn_id, slice, &mut actions);
                inner.read_continues = None;
            }
            self.run_action_list(&mut actions);
        }
        if sliced {
            later.extend_from_slice(&self.continuing_take(conn_id, true));
        }
        self.spare_actions.set(actions);
        if !later.is_empty() && !self.dropped_by_user() {
            self.on_data(conn_id, &later);
        }
    }

    /// How many bytes of `conn_id`'s read to handle before delivering what they gave: fewer for
    /// a compressed body that is handed out as it comes (or a streamed response whose head, and so
    /// its coding, is not known yet).
    fn slice_len(&self, conn_id: u64) -> usize {
        let inner = self.inner.borrow();
        let state = inner
            .conns
            .get(&conn_id)
            .and_then(|conn| conn.request)
            .and_then(|id| inner.requests.get(&id));
        match state {
            Some(state)
                if !matches!(state.delivery, Delivery::Buffered(_))
                    && (state.content.is_some() || state.phase == Phase::RecvHead) =>
            {
                DECODED_SLICE
            }
            _ => DELIVERY_SLICE,
        }
    }

    /// The bytes a nested loop read for `conn_id` while its read was being delivered; with
    /// `end`, the connection's entry goes too.
    fn continuing_take(&self, conn_id: u64, end: bool) -> Vec<u8> {
        let mut continuing = self.continuing.borrow_mut();
        let Some(at) = continuing.iter().position(|e| e.conn == conn_id) else {
            return Vec::new();
        };
        if !end {
            return std::mem::take(&mut continuing[at].later);
        }
        let entry = continuing.swap_remove(at);
        drop(continuing);
        if let Some((conn, socket)) = &entry.held {
            self.unhold_conn(*conn, socket);
        }
        entry.later
    }

    /// Stops reading connection `conn_id` while user code its bytes run waits in a nested loop
    /// (a slot's modal dialog, `send_and_wait`): what that loop read for it could only wait in
    /// memory until the code returns — without bound, against a fast stream. TCP flow control
    /// holds the server back instead. Returns the socket to hand to
    /// [`unhold_conn`](Self::unhold_conn).
    ///
    /// With `unless_queued`, not while requests wait for a connection of its host (the waiting
    /// code may be waiting for one of them: `send_and_wait` from a streaming callback): reading
    /// this one to its end is what frees a connection for them (see
    /// [`release_holds_of_host`](Self::release_holds_of_host)). Bytes that could only wait for
    /// the rest of a read further up the stack (`continuing`) are held back regardless: reading
    /// them would not move the stream on.
    pub(super) fn hold_conn(&self, conn_id: u64, unless_queued: bool) -> Option<Rc<TcpSocket>> {
        let socket = {
            let inner = self.inner.borrow();
            let conn = inner.conns.get(&conn_id)?;
            if unless_queued
                && inner
                    .hosts
                    .get(&conn.host)
                    .is_some_and(|h| !h.queue.is_empty())
            {
                return None;
            }
            Rc::clone(&conn.socket)
        };
        socket.hold_sink_reads(true);
        Some(socket)
    }

    /// A request now waits for a connection of `host`: connections of that host held back for
    /// waiting user code read again (see [`hold_conn`](Self::hold_conn)), or a callback waiting
    /// in a nested loop for that request would wait for ever on its own held stream. (Those
    /// whose bytes wait for the rest of a read up the stack stay held: reading would not help.)
    pub(super) fn release_holds_of_host(&self, inner: &mut ClientInner, host: &HostKey) {
        let of_host = |held: &Option<(u64, Rc<TcpSocket>)>| {
            held.as_ref()
                .and_then(|(conn, _)| inner.conns.get(conn))
                .is_some_and(|conn| *conn.host == *host)
        };
        let mut released = Vec::new();
        for held in self.delivering.borrow_mut().held_mut() {
            if of_host(held) {
                released.extend(held.take());
            }
        }
        for (conn_id, socket) in released {
            if let Some(id) = inner.conns.get(&conn_id).and_then(|conn| conn.request) {
                self.arm_idle_timer(inner, id);
            }
            socket.hold_sink_reads(false);
        }
    }

    /// Undoes [`hold_conn`](Self::hold_conn): reading resumes on a later turn, and the read
    /// timeout of the connection's request (if it still has one) starts afresh (the silence
    /// was the client's own).
    pub(super) fn unhold_conn(&self, conn_id: u64, socket: &TcpSocket) {
        {
            let mut inner = self.inner.borrow_mut();
            let request = inner.conns.get(&conn_id).and_then(|conn| conn.request);
            if let Some(id) = request {
                self.arm_idle_timer(&mut inner, id);
            }
        }
        socket.hold_sink_reads(false);
    }

    /// Whether user code of request `id` (on connection `conn`) is running further up the
    /// stack: its callback or slot, or a read of its connection being delivered a slice at a
    /// time. Its read timeout waits for it (see `on_idle_timeout`).
    pub(super) fn user_code_running(&self, id: u64, conn: Option<u64>) -> bool {
        self.delivering.borrow().contains(id)
            || conn.is_some_and(|conn| self.continuing.borrow().iter().any(|e| e.conn == conn))
    }

    fn process_data(
        &self,
        inner: &mut ClientInner,
        conn_id: u64,
        data: &[u8],
        actions: &mut Vec<Action>,
    ) {
        let Some(conn) = inner.conns.get(&conn_id) else {
            return;
        };
        let Some(id) = conn.request else {
            // Bytes nobody asked for on an idle connection: it cannot be trusted any more.
            log::debug!("unexpected bytes on idle connection {conn_id}; closing it");
            self.drop_conn(inner, conn_id, actions);
            return;
        };
        // Looked up once for the whole read (a lookup each for the phase, the read timeout, the
        // head and the body cost ~25 instructions apiece); only a step that needs the whole
        // client (failing, completing, repeating after a 408) ends its use.
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        // The head wait is a deadline from the request write (a peer dripping bytes cannot stretch
        // it); only body waits restart on each arrival.
        if state.phase != Phase::RecvHead {
            self.arm_idle(state, id);
        }
        state.got_bytes = true;
        let mut input = data;
        // Holds the bytes `input` points into when the head came in pieces.
        let partial_holder: Box<PartialHead>;
        if state.phase == Phase::RecvHead {
            let limits = state.head_limits;
            let mut partial = state.partial_head.take();
            let mut parser = match partial.as_deref_mut() {
                Some(p) => {
                    p.buf.extend_from_slice(input);
                    p.parser.clone()
                }
                None => HeadParser::sharing_standard_reasons(limits),
            };
            let bytes: &[u8] = partial.as_deref().map_or(input, |p| &p.buf[..]);
            // Where the current head starts in `bytes` (after any 1xx heads).
            let mut start = 0;
            let mut interim = partial.as_deref().map_or(0, |p| p.interim);
            let outcome = loop {
                match parser.parse(&bytes[start..]) {
                    Ok(HeadStatus::Partial) => break Ok(None),
                    Ok(HeadStatus::Complete {
                        head,
                        consumed,
                        standard_reason,
                    }) => {
                        start += consumed;
                        if head.is_informational() {
                            // 1xx: skip it and parse the next head from what follows.
                            interim = head.status;
                            parser = HeadParser::sharing_standard_reasons(limits);
                            continue;
                        }
                        break Ok(Some((head, standard_reason)));
                    }
                    Err(e) => break Err(e),
                }
            };
            match outcome {
                Ok(None) => {
                    // Keep the unfinished head (without any 1xx before it) for the next read.
                    let p = match partial {
                        Some(mut p) => {
                            let _ = p.buf.split_to(start);
                            p.parser = parser;
                            p.interim = interim;
                            p
                        }
                        None => Box::new(PartialHead {
                            buf: BytesMut::from(&input[start..]),
                            parser,
                            interim,
                        }),
                    };
                    state.partial_head = Some(p);
                    return;
                }
                Ok(Some((head, standard_reason))) => {
                    // Until the next head (a redirect hop's, a retry's) says otherwise.
                    state.standard_reason = standard_reason;
                    if head.status == 408
                        && !state.retried
                        && inner.conns.get(&conn_id).is_some_and(|c| c.served > 0)
                    {
                        return self.repeat_after_408(inner, id, conn_id, actions);
                    }
                    let (session, spare_arrived) = (&inner.session, &mut inner.spare_arrived);
                    if let Err(e) = self.on_head(state, session, spare_arrived, id, head, actions) {
                        return self.fail(inner, id, e, true, actions);
                    }
                    self.arm_idle(state, id);
                    match partial {
                        Some(p) => {
                            partial_holder = p;
                            input = &partial_holder.buf[start..];
                        }
                        None => input = &input[start..],
                    }
                }
                Err(e) => return self.fail(inner, id, e, true, actions),
            }
        }
        if !input.is_empty() || body_done(state) {
            match self.feed_state_body(state, id, input, actions) {
                BodyStep::Reading => {}
                BodyStep::Failed(e) => self.fail(inner, id, e, true, actions),
                BodyStep::Complete => self.complete(inner, id, actions),
            }
        }
    }

    /// A `408 Request Timeout` on a reused connection (`conn_id` served before) to a request not
    /// repeated yet: the server gave up on the idle connection just as the request reached it,
    /// so the request was not received (RFC 9110 §15.5.9: the client may repeat it). It is sent
    /// again once, on another connection, whatever its method. A 408 on a fresh connection is
    /// the server's answer (the caller checks both).
    fn repeat_after_408(
        &self,
        inner: &mut ClientInner,
        id: u64,
        conn_id: u64,
        actions: &mut Vec<Action>,
    ) {
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        log::debug!("request {id}: 408 on a reused connection; sending it again");
        state.retried = true;
        state.reset_for_hop();
        let host = Rc::clone(&state.host);
        // First in its host's queue: the slot the closed connection frees goes to it.
        self.queue_first(inner, &host, id);
        self.drop_conn(inner, conn_id, actions);
    }

    /// The final head arrived: framing, cookies, redirect decision, streaming hand-off.
    #[inline(never)]
    fn on_head(
        &self,
        state: &mut RequestState,
        session: &HttpSession,
        spare_arrived: &mut Option<Box<Arrived>>,
        id: u64,
        mut head: ResponseHead,
        actions: &mut Vec<Action>,
    ) -> Result<(), HttpError> {
        if head.status == 101 && !state.request.headers().contains("upgrade") {
            // Only an answer to a request that asked to upgrade (RFC 9110 §15.2.2): the real
            // response follows in another protocol.
            return Err(HttpError::Protocol(
                "101 Switching Protocols to a request that asked for no upgrade".into(),
            ));
        }
        let is_head = state.request.method() == &HttpMethod::Head;
        let framing = body_framing(is_head, &head)?;
        // A request that sent `Connection: close` is the last on its connection (RFC 9112 §9.6).
        state.reusable =
            framing.reusable && !has_connection_option(state.request.headers(), "close");
        let decoder = BodyDecoder::new(framing.body);
        // An identity "decoder" would only copy: bytes then go to the body as received, and no
        // stream carries a boxed decoder for nothing. With the session's decoding off, the body
        // goes out as received, its fields kept (asked only of a coded body: most have none).
        state.content = if framing.body == BodyFraming::NoBody {
            None
        } else {
            ContentDecoder::for_headers(&head.headers)
                .filter(|d| !d.is_identity() && session.decompresses())
                .map(Box::new)
        };
        if state.content.is_some() {
            // The body the user gets is decoded: fields describing the encoded one would be
            // wrong about it (a proxy forwarding both would send a broken message).
            head.headers.remove("content-encoding");
            head.headers.remove("content-length");
        }
        // A redirect refused for its ambiguous target is refused whole: its cookies too.
        let location = redirect_location(
            &state.request,
            head.status,
            head.headers.get_all("location"),
        )?;
        session
            .cookie_jar()
            .store_response_cookies(state.request.url(), head.headers.get_all("set-cookie"));
        match redirect_action(&state.request, head.status, location, state.redirects) {
            RedirectAction::Follow(next) => {
                // Read (and discard) this body so the connection can be reused: its framing is
                // followed, but it is neither decoded (a bad gzip body must not stop the
                // redirect) nor kept, and past `MAX_DISCARDED_REDIRECT_BODY` not waited for.
                state.redirect_next = Some(Box::new(next));
                state.body_limit = Some(0);
                state.content = None;
                state.body = BytesMut::new();
            }
            RedirectAction::Error(e) => return Err(e),
            RedirectAction::Return => {}
        }
        // Only a body that is kept is held to the limit: a followed redirect's is thrown away.
        if let (BodyFraming::Length(n), None) = (framing.body, &state.redirect_next) {
            let buffered = matches!(state.delivery, Delivery::Buffered(_));
            if buffered && n > state.max_body as u64 {
                return Err(HttpError::LimitExceeded {
                    what: "announced response body",
                    limit: state.max_body,
                });
            }
            // A buffered body reserves the announced size up front (bounded: a lying header
            // must not allocate much); a streamed one goes to its consumer and is never held.
            if buffered {
                let announced = n.min(16 * 1024 * 1024) as usize;
                if state.body.capacity() == 0 {
                    // Made at its size: `reserve` on an empty buffer takes BytesMut's general
                    // growth path (~300 instructions a response).
                    state.body = BytesMut::with_capacity(announced);
                } else {
                    state.body.reserve(announced);
                }
            }
        }
        state.phase = Phase::RecvBody;
        if state.redirect_next.is_none() {
            match &state.delivery {
                Delivery::Streaming { on_event, .. } => {
                    let response = state.response_from(head.clone(), Bytes::new(), Instant::now());
                    actions.push(Action::StreamHead(id, Rc::clone(on_event), response));
                }
                Delivery::Sse { target, .. } => {
                    let opens = head.status == 200 && is_event_stream_response(&head.headers);
                    // An open stream may last for hours: its `opened` slot gets the head, and
                    // the request keeps only what the stream's end reads.
                    let for_response = if opens {
                        let kept = head_for_stream_end(&head);
                        std::mem::replace(&mut head, kept)
                    } else {
                        head.clone()
                    };
                    let response = state.response_from(for_response, Bytes::new(), Instant::now());
                    if opens {
                        // The head kept for the stream's end has an empty reason, not the
                        // standard one left out.
                        state.standard_reason = false;
                        state.sse_mode = true;
                        // Nothing reads the request again (no retry after bytes, no redirect
                        // from a 200); its owner keeps the copy it reconnects with.
                        state.request.shed_headers_and_body();
                    } else {
                        state.body_limit = Some(SSE_ERROR_BODY_LIMIT);
                        // ...and waits for it only briefly: it may never end, and nothing else
                        // would time it out (a stream has no total timeout).
                        state.read_timeout = Some(
                            state
                                .read_timeout
                                .map_or(SSE_ERROR_BODY_WAIT, |t| t.min(SSE_ERROR_BODY_WAIT)),
                        );
                    }
                    actions.push(Action::SseHead(id, target.clone(), response));
                }
                Delivery::Buffered(_) => {}
            }
        }
        state.arrived = Some(match spare_arrived.take() {
            Some(mut kept) => {
                kept.head = head;
                kept.decoder = decoder;
                kept
            }
            None => Box::new(Arrived { head, decoder }),
        });
        Ok(())
    }

    /// Feeds `input` to request `id`'s body; fails or completes the request when that says so.
    pub(super) fn feed_body(
        &self,
        inner: &mut ClientInner,
        id: u64,
        input: &[u8],
        actions: &mut Vec<Action>,
    ) {
        let Some(state) = inner.requests.get_mut(&id) else {
            return;
        };
        match self.feed_state_body(state, id, input, actions) {
            BodyStep::Reading => {}
            BodyStep::Failed(e) => self.fail(inner, id, e, true, actions),
            BodyStep::Complete => self.complete(inner, id, actions),
        }
    }

    /// Feeds `input` to the body of `state` (request `id`), queueing what it gave for delivery;
    /// says what becomes of the request, which the caller (holding the whole client) does.
    fn feed_state_body(
        &self,
        state: &mut RequestState,
        id: u64,
        input: &[u8],
        actions: &mut Vec<Action>,
    ) -> BodyStep {
        let RequestState {
            arrived,
            content,
            body,
            body_limit,
            max_body,
            delivery,
            sse_mode,
            sse_parser,
            redirect_next,
            ..
        } = &mut *state;
        let Some(Arrived { decoder, .. }) = arrived.as_deref_mut() else {
            return BodyStep::Reading;
        };
        let received_before = decoder.received();
        // The client's pool of event buffers, taken only by an event stream's read: another
        // request's would drop it, and the stream's next read allocate its events anew.
        let mut collected = (*sse_mode && sse_parser.is_some()).then(|| self.spare_batch.take());
        // How many `id` fields the stream had committed before this read (see below).
        let id_before = match (*sse_mode, sse_parser.as_ref()) {
            (true, Some(parser)) => Some(parser.committed_id_fields()),
            _ => None,
        };
        let mut stream_chunk = BytesMut::new();
        let mut failure: Option<HttpError> = None;
        let mut parse_failure: Option<HttpError> = None;
        // A followed redirect's body is nobody's: it goes to the (empty) kept body, not the stream.
        let is_stream = matches!(delivery, Delivery::Streaming { .. }) && redirect_next.is_none();
        let mut sink = |plain: &[u8]| {
            if parse_failure.is_some() {
                return;
            }
            if *sse_mode {
                if let (Some(parser), Some(batch)) = (sse_parser.as_mut(), collected.as_mut()) {
                    if let Err(e) = parser.feed_borrowed(plain, batch) {
                        parse_failure = Some(HttpError::LimitExceeded {
                            what: "server-sent event",
                            limit: match e {
                                crate::network::sse::SseParseError::EventTooLarge { limit } => {
                                    limit
                                }
                            },
                        });
                    }
                }
            } else if is_stream {
                stream_chunk.extend_from_slice(plain);
            } else if body_limit.is_none() && body.len().saturating_add(plain.len()) > *max_body {
                parse_failure = Some(HttpError::LimitExceeded {
                    what: "response body",
                    limit: *max_body,
                });
            } else {
                let room = body_limit.map_or(usize::MAX, |l| l.saturating_sub(body.len()));
                body.extend_from_slice(&plain[..plain.len().min(room)]);
            }
        };
        let progress = decoder.decode(input, &mut |raw: &[u8]| match content.as_mut() {
            Some(c) => {
                if let Err(e) = c.decode(raw, &mut sink) {
                    failure = failure.take().or(Some(e));
                }
            }
            None => sink(raw),
        });
        let (complete, bytes_beyond) = match progress {
            Ok(p) => (p.complete, p.complete && p.consumed < input.len()),
            Err(e) => {
                failure = Some(e);
                (false, false)
            }
        };
        if complete && failure.is_none() {
            // What the content decoder releases only at the end goes through the same sink: the
            // body limit and the SSE event limit apply to it too.
            if let Some(c) = content.as_mut() {
                if let Err(e) = c.finish(&mut sink) {
                    failure = Some(e);
                }
            }
        }
        if let Some(e) = parse_failure {
            failure = Some(e);
        }
        // The ID after this read's last blank line goes along: a block without data sets it
        // without an event (WHATWG "dispatch the event" step 1), and the client takes it once
        // the batch's events were all delivered.
        if let (Some(before), Some(parser), Some(batch)) =
            (id_before, sse_parser.as_ref(), collected.as_mut())
        {
            batch.set_ids(
                before,
                parser.shared_last_event_id(),
                parser.committed_id_fields(),
            );
        }
        if bytes_beyond {
            // Bytes beyond the response (pipelining garbage): never reuse this connection.
            state.reusable = false;
        }
        // A followed redirect's body is read only so that its connection can serve again; a large
        // one (or one that never ends) is not worth waiting for: give the connection up and go.
        let complete = complete
            || (state
                .decoder()
                .is_some_and(|d| gives_up_redirect_body(state, d))
                && {
                    state.reusable = false;
                    true
                });
        // A rejected SSE response only needs the start of its body for the error message: stop
        // reading there (the body may never end) and give up the connection.
        let complete = complete
            || (matches!(state.delivery, Delivery::Sse { .. })
                && !state.sse_mode
                && state.body_limit.is_some_and(|l| state.body.len() >= l)
                && {
                    state.reusable = false;
                    true
                });
        if let Some(e) = failure {
            self.flush_stream_outputs(state, id, collected, stream_chunk, actions);
            return BodyStep::Failed(e);
        }
        // Progress is the delivered body's, as transferred (before content decoding): each new
        // count once, and the end with its total. A followed redirect's body is thrown away and
        // not reported. Checked here, not when run: no action (and no list allocation) per chunk
        // otherwise.
        let progress = match state.decoder() {
            Some(decoder)
                if self.download_progress.connection_count() > 0
                    && state.redirect_next.is_none()
                    && (decoder.received() > received_before || complete) =>
            {
                let received = decoder.received();
                let total = if complete {
                    Some(received)
                } else {
                    decoder.total()
                };
                Some(Action::Progress(id, received, total))
            }
            _ => None,
        };
        self.flush_stream_outputs(state, id, collected, stream_chunk, actions);
        actions.extend(progress);
        if complete {
            BodyStep::Complete
        } else {
            BodyStep::Reading
        }
    }

    fn flush_stream_outputs(
        &self,
        state: &RequestState,
        id: u64,
        collected: Option<SseBatch>,
        chunk: BytesMut,
        actions: &mut Vec<Action>,
    ) {
        match (&state.delivery, collected) {
            (Delivery::Sse { target, .. }, Some(batch)) if batch.has_news() => {
                actions.push(Action::SseEvents(id, target.clone(), batch));
            }
            // Back to the pool (see `feed_state_body`).
            (_, Some(batch)) => self.recycle_batch(batch),
            (Delivery::Streaming { on_event, .. }, None) if !chunk.is_empty() => {
                actions.push(Action::StreamData(id, Rc::clone(on_event), chunk.freeze()));
            }
            _ => {}
        }
    }

    /// The body is complete: follow a redirect, or finish the request.
    pub(super) fn complete(&self, inner: &mut ClientInner, id: u64, actions: &mut Vec<Action>) {
        let Some(mut state) = self.take_request(inner, id) else {
            return;
        };
        // Bytes of this read after the response (in a later slice) are garbage as much as bytes
        // after it in the same slice (`feed_body`).
        let reusable =
            state.reusable && (state.conn.is_none() || state.conn != inner.read_continues);
        // A response that came before its request was all sent (a 413, say): the rest would still
        // go out ahead of the next request, which the server may take for its start (or never
        // read), and be counted in the next request's upload progress. Over https the rest may
        // sit in the TLS session after the socket's queue is empty: that counts too.
        let unsent = state
            .conn
            .and_then(|c| inner.conns.get(&c))
            .is_some_and(|c| c.socket.has_unsent_output());
        let reusable = reusable && !unsent;
        if !unsent && state.upload_total > 0 {
            self.settle_upload(&inner.conns, &mut state, id, actions);
        }
        // What the server said of keeping the connection (`Keep-Alive: timeout, max`): one look
        // through the head's fields, for a response that leaves its connection reusable.
        // One clock reading for the connection's idle deadline and the response's elapsed time.
        let now = Instant::now();
        let reuse = reusable.then(|| {
            let keep_alive = state
                .arrived
                .as_deref()
                .map(|a| keep_alive(&a.head.headers))
                .unwrap_or_default();
            (keep_alive, now)
        });
        if let Some(next) = state.redirect_next.take() {
            log::debug!("request {id}: redirect to {}", LoggedUrl(next.url()));
            let old_conn = state.conn.take();
            state.redirects += 1;
            // A new request: it may be sent again once if its connection turns out stale (or
            // answers 408), whatever happened to the previous hop (`max_redirects` bounds it).
            state.retried = false;
            state.request = *next;
            let host = intern_host(&mut inner.hosts, state.request.url());
            state.host = Rc::clone(&host);
            state.reset_for_hop();
            inner.requests.insert(id, state);
            // The hop belongs to a request sent before the ones queued after it: in its host's
            // line in send order, so the connection freed here (same host) goes to it rather
            // than to a later request, and it waits ahead of those if it must wait.
            queue_in_send_order(
                &mut inner.hosts.entry(Rc::clone(&host)).or_default().queue,
                id,
            );
            self.release_conn_id(inner, old_conn, reuse, actions);
            let still_queued = inner
                .hosts
                .get_mut(&host)
                .and_then(|h| {
                    let at = h.queue.iter().position(|&queued| queued == id)?;
                    h.queue.remove(at)
                })
                .is_some();
            if still_queued {
                // Not started by the freed connection (another host, an earlier request got it,
                // or it closed): scheduled as any request, waiting in send order if it must.
                // Judged by this reading: an idle connection of its host whose deadline passed
                // since the request was sent is not reused, though its timer may not have run.
                self.schedule_in_line(inner, id, true, Some(now), actions);
            }
            return;
        }
        self.release_conn(inner, &mut state, reuse, actions);
        let Some(mut arrived) = state.arrived.take() else {
            return;
        };
        let head = std::mem::replace(&mut arrived.head, ResponseHead::empty());
        // Its box serves the next response (see `ClientInner::spare_arrived`).
        inner.spare_arrived.get_or_insert(arrived);
        // Taken whole, not split off: a split shares the buffer through an allocated header.
        let body = std::mem::take(&mut state.body).freeze();
        let response = state.response_from(head, body, now);
        keep_spare_headers(inner, &mut state);
        let delivery = state.take_delivery();
        if inner.spare_state.is_none() {
            state.shed_for_reuse();
            inner.spare_state = Some(state);
        }
        actions.push(self.finish_action(inner, id, delivery, Ok(response)));
    }
}

impl HttpClient {
    /// Request `id` was answered (its response is complete, or failed after the server began
    /// it) and its body has all left (nothing of it waits unsent on its connection): the kernel
    /// took every byte, but the socket reports written bytes from a later turn, and the answer
    /// may come first (the request went out from a posted closure, the answer in that turn's
    /// poll). Its upload progress ends now, before its callback, with its total; the bytes not
    /// reported yet are owed to its connection's next reports, which would otherwise be dropped
    /// (the connection idle or closed) or counted as the next request's body. Out of line: most
    /// requests have no body.
    #[cold]
    #[inline(never)]
    pub(super) fn settle_upload(
        &self,
        conns: &IdMap<Box<Conn>>,
        state: &mut RequestState,
        id: u64,
        actions: &mut Vec<Action>,
    ) {
        let wire = state.upload_head_len.saturating_add(state.upload_total);
        if state.upload_total == 0 || state.wire_written >= wire {
            return;
        }
        let Some(conn) = state.conn.and_then(|c| conns.get(&c)) else {
            return;
        };
        if conn.socket.has_unsent_output() {
            return;
        }
        conn.owe_written(wire - state.wire_written);
        state.wire_written = wire;
        if self.upload_progress.connection_count() > 0 {
            actions.push(Action::Upload(id, state.upload_total));
        }
    }
}

/// Keeps a finished request's header map, emptied, for the next request to take (see
/// `ClientInner::spare_headers`), unless one is kept already or it grew large.
fn keep_spare_headers(inner: &mut ClientInner, state: &mut RequestState) {
    let headers = state.request.headers_mut();
    if inner.spare_headers.has_no_capacity() && headers.small_enough_to_keep() {
        headers.clear();
        inner.spare_headers = std::mem::take(headers);
    }
}

/// A read of one connection delivered a slice at a time further up the stack (see
/// `HttpClient::on_data`).
pub(super) struct ContinuingEntry {
    conn: u64,
    /// Bytes a nested loop read meanwhile: they follow the read's remaining slices.
    later: Vec<u8>,
    /// The connection (id and socket), held back from reading while that user code waits.
    held: Option<(u64, Rc<TcpSocket>)>,
}

/// Ends a read's entry in `HttpClient::continuing`, also when user code panics.
struct ContinuingRead<'a> {
    client: &'a HttpClient,
    conn: u64,
}

impl Drop for ContinuingRead<'_> {
    fn drop(&mut self) {
        let _ = self.client.continuing_take(self.conn, true);
    }
}

/// What becomes of a request after bytes were fed to its body (see
/// `HttpClient::feed_state_body`).
enum BodyStep {
    /// It waits for more.
    Reading,
    /// It fails with this error (its connection closed).
    Failed(HttpError),
    /// Its body is complete: it follows its redirect or finishes.
    Complete,
}

/// Whether `state`'s body needs no more bytes: complete, or a followed redirect's that is not
/// waited for (see [`gives_up_redirect_body`]).
fn body_done(state: &RequestState) -> bool {
    state
        .decoder()
        .is_some_and(|d| d.is_complete() || gives_up_redirect_body(state, d))
}

/// The most body bytes of a followed redirect read before its connection is given up (64 KiB).
const MAX_DISCARDED_REDIRECT_BODY: u64 = 64 * 1024;

/// Whether the body of `state`'s redirect, being followed, is not worth waiting for: it runs to
/// the end of the connection (which can then never serve again anyway), or it is past
/// [`MAX_DISCARDED_REDIRECT_BODY`]. Its connection is given up and the redirect followed.
fn gives_up_redirect_body(state: &RequestState, decoder: &BodyDecoder) -> bool {
    state.redirect_next.is_some()
        && (decoder.reads_to_close() || decoder.received() > MAX_DISCARDED_REDIRECT_BODY)
}

/// The most bytes of one read processed before the events they carry are delivered (16 KiB).
const DELIVERY_SLICE: usize = 16 * 1024;

/// The most bytes of a compressed body handed out as it comes that are decoded before what they
/// gave is delivered (1 KiB: at deflate's ~1,000:1 ratio at most about 1 MiB).
const DECODED_SLICE: usize = 1024;

/// Whether a response's MIME type is `text/event-stream` (parameters and case ignored), the type
/// [`extract_mime_type`] finds, as WHATWG Fetch does for `EventSource`.
pub(crate) fn is_event_stream_response(headers: &HeaderMap) -> bool {
    extract_mime_type(headers).is_some_and(|mime| {
        let (kind, subtype) = mime.essence;
        kind.eq_ignore_ascii_case("text") && subtype.eq_ignore_ascii_case("event-stream")
    })
}

/// The MIME type of a response, found by [`extract_mime_type`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ExtractedMime<'a> {
    /// The value that counts, blanks trimmed, parameters included.
    pub(crate) value: &'a str,
    /// Its `type` and `subtype`, as sent.
    pub(crate) essence: (&'a str, &'a str),
    /// Its `charset`, or, when it names none, that of the earlier value that began the run of
    /// values with this type.
    pub(crate) charset: Option<&'a str>,
}

/// WHATWG Fetch's "extract a MIME type" from a response's `Content-Type`: the values of every
/// field, split on commas outside quoted strings, and the last one that parses as
/// `type/subtype` and is not `*/*` counts; naming no `charset`, it takes the one that the value
/// which began the run of values of its type (types compared without case) named. `None`
/// when no value parses.
pub(crate) fn extract_mime_type(headers: &HeaderMap) -> Option<ExtractedMime<'_>> {
    let mut found: Option<ExtractedMime<'_>> = None;
    // Fetch's `essence` and `charset` variables: set when the type changes, not otherwise.
    let mut run_charset = None;
    for field in headers.get_all("content-type") {
        for value in split_outside_quotes(field, b",") {
            let Some((kind, subtype)) = mime_essence(value) else {
                continue;
            };
            if kind == "*" && subtype == "*" {
                continue;
            }
            let own = charset_parameter(value);
            let same_type = found.is_some_and(|previous| {
                previous.essence.0.eq_ignore_ascii_case(kind)
                    && previous.essence.1.eq_ignore_ascii_case(subtype)
            });
            if !same_type {
                run_charset = own;
            }
            found = Some(ExtractedMime {
                value: value.trim_matches(is_http_whitespace),
                essence: (kind, subtype),
                charset: own.or(run_charset),
            });
        }
    }
    found
}

/// `type` and `subtype` of a MIME type (WHATWG "parse a MIME type", parameters ignored), or `None`
/// when either is missing or not a token.
fn mime_essence(value: &str) -> Option<(&str, &str)> {
    let value = value.trim_matches(is_http_whitespace);
    let (kind, rest) = value.split_once('/')?;
    let subtype = rest.split(';').next()?.trim_end_matches(is_http_whitespace);
    (is_token(kind) && is_token(subtype)).then_some((kind, subtype))
}

fn is_http_whitespace(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\r' | '\n')
}

/// What an open event stream keeps of its response head: the status line without its reason
/// and the `Keep-Alive` fields, which decide whether its connection is reused when the stream
/// ends. The rest (often several hundred bytes) would be held for the stream's whole life.
fn head_for_stream_end(head: &ResponseHead) -> ResponseHead {
    let mut headers = HeaderMap::new();
    for value in head.headers.get_all("keep-alive") {
        headers.append("Keep-Alive", value);
    }
    ResponseHead {
        version: head.version,
        status: head.status,
        reason: String::new(),
        headers,
    }
}
