//! The sending side: a request is submitted (id, session defaults, its [`RequestState`]), encoded
//! and written on its connection, and reports its upload progress.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use url::Url;

use super::pool::{Conn, HostKey, forget_host_if_unused, intern_host};
use super::state::{Delivery, Phase, RequestState};
use super::timers::note_total_deadline;
use super::{ClientInner, HttpClient, RequestId};
use crate::network::decimal::{MAX_DECIMAL_LEN, decimal};
use crate::network::http::encode::{
    AddedField, OwnFields, encode_request_head, encode_validated_request_head,
};
use crate::network::http::head::HeadLimits;
use crate::network::http::request::parse_url;
use crate::network::http::{HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession};

impl HttpClient {
    // ---- submitting --------------------------------------------------------------------------

    pub(super) fn send_method(
        &self,
        method: HttpMethod,
        url: &str,
        body: Option<(Bytes, &str)>,
        callback: impl FnOnce(Result<HttpResponse, HttpError>) + 'static,
    ) -> RequestId {
        match self.request_for(url) {
            Ok(mut request) => {
                request.set_method(method);
                if let Some((body, content_type)) = body {
                    request.set_body(body);
                    // No type to give: no field (an empty one is not a media type).
                    if !content_type.is_empty() {
                        request.set_header("Content-Type", content_type);
                    }
                }
                self.send(request, callback)
            }
            Err(e) => {
                // Delivered like any failed request: the callback, then the `error` signal.
                let id = self.next_id();
                let delivery = Delivery::Buffered(Some(Box::new(callback)));
                let finish =
                    self.finish_action(&mut self.inner.borrow_mut(), id.raw(), delivery, Err(e));
                self.post_actions(vec![finish]);
                id
            }
        }
    }

    /// A GET request for `url`, reusing the last parse when the text is the same (and, when
    /// that URL was taken as it was, the checks it passed).
    fn request_for(&self, url: &str) -> Result<HttpRequest, HttpError> {
        let cached = match &*self.last_url.borrow() {
            Some((text, parsed, as_it_was)) if **text == *url => {
                Some((Arc::clone(parsed), *as_it_was))
            }
            _ => None,
        };
        let was_cached = cached.is_some();
        let parsed = match cached {
            Some((parsed, true)) => return Ok(HttpRequest::from_checked_url(parsed)),
            Some((parsed, false)) => parsed,
            None => Arc::new(parse_url(url)?),
        };
        let request = HttpRequest::from_shared_url(Arc::clone(&parsed));
        // Taken as it was: requestable, and no credentials moved out (that copies the URL).
        let as_it_was = request
            .as_ref()
            .is_ok_and(|r| Arc::ptr_eq(r.shared_url(), &parsed));
        if !was_cached {
            *self.last_url.borrow_mut() = Some((url.into(), parsed, as_it_was));
        }
        request
    }

    fn next_id(&self) -> RequestId {
        let mut inner = self.inner.borrow_mut();
        let id = inner.next_id;
        inner.next_id += 1;
        RequestId::from_raw(id)
    }

    pub(super) fn submit(&self, mut request: HttpRequest, delivery: Delivery) -> RequestId {
        let id = self.next_id();
        if self.core.is_closed() {
            // No connection could be made or read: said at once (`post_actions` runs it now).
            let finish = self.finish_action(
                &mut self.inner.borrow_mut(),
                id.raw(),
                delivery,
                Err(HttpError::LoopGone),
            );
            self.post_actions(vec![finish]);
            return id;
        }
        {
            let mut inner = self.inner.borrow_mut();
            if request.headers().is_empty() && request.headers().has_no_capacity() {
                // The last finished request's buffers take the session's defaults.
                *request.headers_mut() = std::mem::take(&mut inner.spare_headers);
            }
            inner.session.prepare_request(&mut request);
        }
        // No `take_url_credentials` here: the constructors and `set_url`, the only ways to give
        // a request a URL, took them out already (a second look cost every request ~90
        // instructions and found none).
        if let Err(e) = request.validate() {
            let finish =
                self.finish_action(&mut self.inner.borrow_mut(), id.raw(), delivery, Err(e));
            self.post_actions(vec![finish]);
            return id;
        }
        // Clone the request for the signal only when someone listens.
        let announce = (self.about_to_send_request.connection_count() > 0).then(|| request.clone());
        let mut actions = Vec::new();
        let host = {
            let mut inner = self.inner.borrow_mut();
            let limits = head_limits(&inner);
            let host = host_of(&mut inner, request.shared_url());
            // Kept to forget the host if a slot cancels the request before it is scheduled.
            let announced_host = announce.as_ref().map(|_| Rc::clone(&host));
            let now = Instant::now();
            let state = RequestState {
                request,
                phase: Phase::Queued,
                delivery,
                conn: None,
                host,
                head_limits: limits,
                partial_head: None,
                arrived: None,
                content: None,
                body: BytesMut::new(),
                body_limit: None,
                max_body: inner.session.max_response_body_bytes(),
                reusable: false,
                redirect_next: None,
                redirects: 0,
                started: now,
                got_bytes: false,
                retried: false,
                total_deadline: None,
                idle: None,
                upload_total: 0,
                upload_head_len: 0,
                wire_written: 0,
                read_timeout: inner.session.read_timeout(),
                write_when_connected: false,
                sse_mode: false,
                standard_reason: false,
                sse_parser: None,
            };
            // In the last finished request's box when there is one (`ClientInner::spare_state`).
            let mut state = match inner.spare_state.take() {
                Some(mut kept) => {
                    *kept = state;
                    kept
                }
                None => Box::new(state),
            };
            // Its deadline noted before it goes into the books (one lookup less).
            let deadline = announce
                .is_none()
                .then(|| note_total_deadline(&mut state, now))
                .flatten();
            inner.requests.insert(id.raw(), state);
            if announce.is_none() {
                if let Some(deadline) = deadline {
                    self.watch_total_deadline(&mut inner, deadline);
                }
                self.schedule(&mut inner, id.raw(), Some(now), &mut actions);
            }
            announced_host
        };
        if let (Some(copy), Some(host)) = (announce, host) {
            // The request is in the books while the slots run: one may cancel it (or all).
            self.about_to_send_request.emit(&(id, copy));
            let mut inner = self.inner.borrow_mut();
            let inner = &mut *inner;
            let limits = head_limits(inner);
            match inner.requests.get_mut(&id.raw()) {
                Some(state) => {
                    // A slot may have changed the session: its limits apply, as they did when
                    // the signal came before the request was made.
                    state.head_limits = limits;
                    state.max_body = inner.session.max_response_body_bytes();
                    state.read_timeout = inner.session.read_timeout();
                    // The slots took their time: the deadline runs from now.
                    let now = Instant::now();
                    self.arm_total_timer(inner, id.raw(), now);
                    self.schedule(inner, id.raw(), Some(now), &mut actions);
                }
                None => forget_host_if_unused(&mut inner.hosts, &host),
            }
        }
        // Failures found while scheduling are reported from the loop, never from inside send().
        self.post_actions(actions);
        id
    }

    /// Encodes request `id` and writes it to connection `conn_id`; with `check_only`, encodes
    /// just its head, to report what would fail.
    pub(super) fn write_request(
        &self,
        inner: &mut ClientInner,
        conn_id: u64,
        id: u64,
        check_only: bool,
    ) -> Result<(), HttpError> {
        let (Some(conn), Some(state)) = (inner.conns.get(&conn_id), inner.requests.get_mut(&id))
        else {
            return Ok(());
        };
        write_request_to(conn, state, &inner.session, &mut inner.wire, check_only)
    }

    /// A new connection is up: write the request that was waiting for it.
    pub(super) fn on_conn_connected(&self, conn_id: u64) {
        let mut actions = Vec::new();
        {
            let mut inner = self.inner.borrow_mut();
            let Some(id) = inner.conns.get(&conn_id).and_then(|c| c.request) else {
                return;
            };
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            if !std::mem::take(&mut state.write_when_connected) {
                return;
            }
            if let Err(e) = self.write_request(&mut inner, conn_id, id, false) {
                self.fail(&mut inner, id, e, true, &mut actions);
            }
        }
        self.run_actions(actions);
    }

    pub(super) fn on_bytes_written(&self, conn_id: u64, n: usize) {
        let update = {
            let mut inner = self.inner.borrow_mut();
            let Some(conn) = inner.conns.get(&conn_id) else {
                return;
            };
            // Bytes of a request that finished before their report came are not this one's.
            let n = conn.settle_written(n);
            let Some(id) = conn.request.filter(|_| n > 0) else {
                return;
            };
            let Some(state) = inner.requests.get_mut(&id) else {
                return;
            };
            if state.upload_total == 0 {
                return;
            }
            state.wire_written += n as u64;
            let sent = state
                .wire_written
                .saturating_sub(state.upload_head_len)
                .min(state.upload_total);
            // The body is still going out: the wait for the response head (the read timeout)
            // runs from the last byte written, not from the first. Only bytes we send move it,
            // so a peer dripping its head still cannot.
            let sending = state.phase == Phase::RecvHead && state.idle.is_some();
            let update = (id, sent, state.upload_total);
            if sending {
                self.arm_idle_timer(&mut inner, id);
            }
            update
        };
        self.upload_progress
            .emit(&(RequestId::from_raw(update.0), update.1, update.2));
    }
}

/// The pool's key for `url`'s host: the last request's when `url` is the very URL it was
/// sent to and its host is still in the books (the map's own key then, as `intern_host` gives).
fn host_of(inner: &mut ClientInner, url: &Arc<Url>) -> Rc<HostKey> {
    if let Some((last, key)) = &inner.last_host
        && Arc::ptr_eq(last, url)
        && let Some((key, _)) = inner.hosts.get_key_value(key)
    {
        return Rc::clone(key);
    }
    let key = intern_host(&mut inner.hosts, url);
    inner.last_host = Some((Arc::clone(url), Rc::clone(&key)));
    key
}

/// The session's limits on a response head.
fn head_limits(inner: &ClientInner) -> HeadLimits {
    HeadLimits {
        max_head_bytes: inner.session.max_response_head_bytes(),
        max_headers: inner.session.max_response_headers(),
    }
}

/// Serialises the request head with the automatic headers (the body goes after it).
fn encode_request_head_for(
    request: &HttpRequest,
    host_field: &str,
    validated: bool,
    cookie: Option<&str>,
    decompress: bool,
    out: &mut Vec<u8>,
) -> Result<(), HttpError> {
    let headers = request.headers();
    // One pass over the request's fields finds the ones the client would add.
    let own = OwnFields::of(headers);
    let mut length_digits = [0; MAX_DECIMAL_LEN];
    // The fields the client adds when the request lacks them, written after its own (the
    // request's map is not copied to add them).
    let mut added: [AddedField<'_>; 4] = [("", &[]); 4];
    let mut count = 0;
    let mut add = |name, value| {
        added[count] = (name, value);
        count += 1;
    };
    // The request's host's (see `HostKey::host_field`), the value `host_header_value` gives
    // for its URL.
    let host = [host_field];
    // Written out only when the field goes out (most requests have no body).
    let length;
    let encodings = [accepted_encodings()];
    let cookie = cookie.map(|cookie| [cookie]);
    // Every HTTP/1.1 request names its host (RFC 9112 §3.2; servers answer 400 otherwise),
    // whatever the setting, as KDNetwork's did.
    if !own.host {
        add("Host", &host);
    }
    if request.auto_add_common_headers() {
        // A range of a compressed representation cannot be decoded on its own: ask for the
        // identity one (as reqwest does). Without decoding, nothing is asked for that would
        // come back encoded (the session's `decompress`).
        if !own.accept_encoding && !own.range && decompress {
            add("Accept-Encoding", &encodings);
        }
    }
    // A body is framed whatever the setting: without `Content-Length` the server would read the
    // request as bodiless and the body's bytes as the next request (RFC 9112 §6.3). An empty
    // POST/PUT/PATCH announces its zero length only with the common headers on.
    let method_has_body = matches!(
        request.method(),
        HttpMethod::Post | HttpMethod::Put | HttpMethod::Patch
    );
    if (!request.body().is_empty() || (method_has_body && request.auto_add_common_headers()))
        && !own.transfer_encoding
        && !own.content_length
    {
        length = [decimal(request.body().len() as u64, &mut length_digits)];
        add("Content-Length", &length);
    }
    if let Some(cookie) = &cookie
        && own.cookies == 0
    {
        add("Cookie", cookie);
    }
    let (method, url, added) = (request.method().as_str(), request.url(), &added[..count]);
    if validated {
        encode_validated_request_head(method, url, headers, &own, added, out)
    } else {
        encode_request_head(method, url, headers, added, out)
    }
}

/// Encodes `state`'s request and writes it to `conn` (through `wire`, the client's reused
/// buffer); with `check_only`, encodes just its head, to report what would fail. The jar's
/// cookies for its URL go with it.
pub(super) fn write_request_to(
    conn: &Conn,
    state: &mut RequestState,
    session: &HttpSession,
    wire: &mut Vec<u8>,
    check_only: bool,
) -> Result<(), HttpError> {
    let cookie = session.cookie_header_for_url(state.request.url());
    let body = state.request.body();
    wire.clear();
    wire.reserve(256 + if check_only { 0 } else { body.len() });
    // Only the first hop's request went through `validate` (in `submit`): a redirect hop's
    // is made from the response and checked in full.
    let validated = state.redirects == 0;
    encode_request_head_for(
        &state.request,
        state.host.host_field(),
        validated,
        cookie.as_deref(),
        session.decompresses(),
        wire,
    )?;
    if check_only {
        return Ok(());
    }
    state.upload_total = body.len() as u64;
    state.upload_head_len = wire.len() as u64;
    state.wire_written = 0;
    wire.extend_from_slice(body);
    // Without a body the socket posts no written-bytes report (nothing to count).
    conn.count_written(!body.is_empty());
    let written = conn.socket.write(wire);
    // A large body is not kept for the next request.
    if wire.capacity() > MAX_RETAINED_WIRE {
        *wire = Vec::new();
    }
    written?;
    Ok(())
}

/// The largest encoded request (head and body) whose buffer is kept for the next one.
const MAX_RETAINED_WIRE: usize = 64 * 1024;

fn accepted_encodings() -> &'static str {
    if cfg!(feature = "brotli") {
        "gzip, deflate, br"
    } else {
        "gzip, deflate"
    }
}
