//! # kdnet
//!
//! KDAB's KDUtils networking stack for Rust: KDFoundation's event loop, KDBindings' signals and
//! properties, and KDNetwork's sockets, TLS, DNS, HTTP/1.1 client and Server-Sent Events client —
//! on a single-threaded [mio] reactor, with callbacks and signals instead of an async runtime.
//!
//! Objects live on the thread of an [`EventLoop`]: create the loop first, then the objects
//! (`Rc<Self>`, each with its signals as public fields), connect closures to the signals, and
//! call [`EventLoop::run`] (or embed the loop in another main loop through
//! [`EventLoop::as_raw_fd`] and [`EventLoop::next_timeout`]). Callbacks never run inside the call
//! that starts the work; they run on a later turn of the loop.
//!
//! ## Layers
//!
//! | module | KDUtils library | what it holds |
//! |---|---|---|
//! | [`bindings`] | KDBindings | [`Signal`], [`ConnectionHandle`], [`ScopedConnection`], [`ConnectionBlocker`], [`ConnectionEvaluator`], [`Property`] |
//! | [`foundation`] | KDFoundation | [`EventLoop`], [`LoopHandle`], [`FileDescriptorNotifier`], [`Timer`] |
//! | [`network`] | KDNetwork | [`TcpSocket`](network::TcpSocket), [`SslSocket`](network::SslSocket), [`TcpServer`](network::TcpServer), [`UdpSocket`](network::UdpSocket), [`DnsResolver`](network::DnsResolver); [`HttpClient`](network::http::HttpClient) with [`HttpSession`](network::http::HttpSession); [`SseClient`](network::sse::SseClient) and the sans-IO [`SseParser`](network::sse::SseParser) |
//!
//! `PORTING.md` maps every KDUtils class, signal and method to its counterpart here, and says
//! where kdnet behaves differently (it fixes KDUtils' defects instead of porting them).
//! `ARCHITECTURE.md` explains who owns what and how a byte travels from the kernel to a slot.
//!
//! ## Quick start: a timer
//!
//! ```
//! use kdnet::{EventLoop, Timer};
//! use std::time::Duration;
//!
//! let mut event_loop = EventLoop::new().unwrap();
//! let timer = Timer::new().unwrap();
//! timer.single_shot.set(true);
//! timer.interval.set(Duration::from_millis(5));
//! let handle = event_loop.handle();
//! let _conn = timer.timeout.connect(move |_| handle.exit(7));
//! timer.start();
//! assert_eq!(event_loop.run(), 7);
//! ```
//!
//! ## An event stream over loopback
//!
//! A [`TcpServer`](network::TcpServer) answers with two events; an
//! [`SseClient`](network::sse::SseClient) receives them.
//!
//! ```
//! use kdnet::EventLoop;
//! use kdnet::network::TcpServer;
//! use kdnet::network::http::HttpRequest;
//! use kdnet::network::sse::SseClient;
//! use std::{cell::RefCell, rc::Rc};
//!
//! let mut event_loop = EventLoop::new().unwrap();
//!
//! // The server: answers the first request on each connection with a short event stream.
//! let server = TcpServer::new().unwrap();
//! server.listen("127.0.0.1", 0).unwrap();
//! let peers = Rc::new(RefCell::new(Vec::new())); // a connection nobody keeps is closed
//! let kept = peers.clone();
//! server.new_connection.connect(move |peer| {
//!     let weak = Rc::downgrade(peer);
//!     peer.ready_read.connect(move |_| {
//!         let Some(peer) = weak.upgrade() else { return };
//!         peer.read_all(); // the request (one read is enough for this small one)
//!         let body = "data: hello\n\nevent: done\ndata: bye\n\n";
//!         let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n";
//!         let reply = format!("{head}Content-Length: {}\r\n\r\n{body}", body.len());
//!         peer.write(reply.as_bytes()).unwrap();
//!     }).release();
//!     kept.borrow_mut().push(peer.clone());
//! }).release();
//!
//! // The client: records every event, stops at the one of type "done".
//! let sse = SseClient::new().unwrap();
//! sse.set_auto_reconnect(false);
//! let seen = Rc::new(RefCell::new(Vec::new()));
//! let s = seen.clone();
//! sse.message_received.connect(move |event| {
//!     s.borrow_mut().push(format!("{}: {}", event.event_type(), event.data()));
//! }).release();
//! let handle = event_loop.handle();
//! sse.add_event_listener("done", move |_| handle.quit()).release();
//! let port = server.server_port().unwrap();
//! sse.connect(HttpRequest::get(&format!("http://127.0.0.1:{port}/events")).unwrap());
//!
//! assert_eq!(event_loop.run(), 0);
//! assert_eq!(*seen.borrow(), ["message: hello", "done: bye"]);
//! ```
//!
//! ## Logging
//!
//! kdnet logs through the [`log`] facade; targets are module paths (`kdnet::network::sse::client`,
//! …).
//!
//! - `WARN`: problems the caller may not see otherwise — certificate verification turned off, a
//!   descriptor that could not be re-armed, a loop that could not be woken, an event ID that
//!   cannot be sent back as `Last-Event-ID` (its length, not the ID).
//! - `DEBUG`: lifecycle — connects and their failures, connections opened and closed, a retry on
//!   a pooled connection the server had closed, redirects (with the new URL), event streams
//!   opening, ending and reconnecting, cookies refused (by name) — and every failed request with
//!   its error. URLs appear with their query; an error may quote a few bytes of a malformed
//!   response head (a bad `Content-Length` value), never of a body: a refused event stream is
//!   logged by its status alone (the body is in the `SseError` the `error` slot gets).
//! - `TRACE`: descriptor clean-up only.
//!
//! Bodies and event data are never logged, nor are request header values (credentials).
#![deny(
    missing_docs,
    missing_debug_implementations,
    rust_2018_idioms,
    unsafe_code
)]
#![warn(clippy::undocumented_unsafe_blocks, unreachable_pub)]
#![doc(test(attr(deny(warnings))))]

pub mod bindings;
pub mod foundation;
pub mod network;

pub use bindings::{
    ConnectionBlocker, ConnectionError, ConnectionEvaluator, ConnectionHandle, Property,
    ScopedConnection, Signal,
};
pub use foundation::{
    EventLoop, FileDescriptorNotifier, LoopError, LoopHandle, NotificationType, Timer, TimerId,
};

/// The example in `README.md`, compiled and run by `cargo test --doc`.
#[cfg(doctest)]
#[doc = include_str!("../README.md")]
#[derive(Debug)]
pub struct ReadmeDoctests;
