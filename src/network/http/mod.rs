//! HTTP/1.1 client (KDNetwork `HttpClient`, `HttpRequest`, `HttpResponse`, `HttpSession`, cookies).

mod error;
mod headers;

pub use error::HttpError;
pub use headers::HeaderMap;
