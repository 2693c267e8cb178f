//! HTTP/1.1 client (KDNetwork `HttpClient`, `HttpRequest`, `HttpResponse`, `HttpSession`,
//! `HttpCookie`, `HttpCookieJar`).
//!
//! The wire codec (`head`, `framing`, `body`, `encode`, `content`) is sans-IO: it takes bytes
//! and returns results, and knows nothing of sockets or the loop. [`HttpClient`] drives it (the
//! request lifecycle and how bytes travel are described in `src/network/http/client/mod.rs`).

mod body;
mod client;
mod content;
mod cookie;
mod cookie_jar;
mod encode;
mod error;
mod framing;
mod head;
mod headers;
mod id_map;
mod logged_url;
mod method;
mod redirect;
mod request;
mod response;
mod session;
mod version;

#[doc(hidden)]
#[path = "fuzz_api.rs"]
pub mod __fuzz;

pub use body::{DEFAULT_MAX_CHUNK_EXTENSION, DEFAULT_MAX_TRAILERS};
pub use client::{HttpClient, RequestId, StreamEvent};
pub(crate) use client::{SseTarget, extract_mime_type, is_event_stream_response};
pub use cookie::{DEFAULT_MAX_SET_COOKIE_BYTES, HttpCookie, MAX_NAME_VALUE_BYTES, SameSitePolicy};
pub use cookie_jar::{
    DEFAULT_MAX_COOKIES, DEFAULT_MAX_COOKIES_PER_DOMAIN, HttpCookieJar, PublicSuffixListError,
};
pub use error::HttpError;
pub use head::{DEFAULT_MAX_HEAD_BYTES, DEFAULT_MAX_HEADERS, HeadLimits, ResponseHead};
pub use headers::HeaderMap;
pub(crate) use logged_url::LoggedUrl;
pub use method::{ExtensionMethod, HttpMethod};
pub use redirect::{REDIRECT_STATUSES, RedirectAction, RedirectPolicy, redirect_action};
pub use request::{AuthType, DEFAULT_MAX_REDIRECTS, DEFAULT_REQUEST_TIMEOUT, HttpRequest};
pub use response::HttpResponse;
pub use session::{
    DEFAULT_CONNECT_TIMEOUT, DEFAULT_IDLE_CONNECTION_TIMEOUT, DEFAULT_MAX_CONNECTIONS_PER_HOST,
    DEFAULT_MAX_RESPONSE_BODY_BYTES, DEFAULT_MAX_RESPONSE_HEAD_BYTES, DEFAULT_MAX_RESPONSE_HEADERS,
    DEFAULT_USER_AGENT, HttpSession, SharedCookieJar,
};
pub use version::HttpVersion;
