//! URLs as logs show them.

use std::fmt;

/// A URL as logs show it: scheme, host, port and path, with a query or fragment replaced by
/// `?…` / `#…`, since credentials travel there (`?key=` of some LLM APIs, signed URLs).
pub(crate) struct LoggedUrl<'a>(pub(crate) &'a url::Url);

impl fmt::Display for LoggedUrl<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use url::Position;
        let url = self.0;
        write!(
            f,
            "{}://{}",
            url.scheme(),
            &url[Position::BeforeHost..Position::AfterPath]
        )?;
        if url.query().is_some() {
            f.write_str("?…")?;
        }
        if url.fragment().is_some() {
            f.write_str("#…")?;
        }
        Ok(())
    }
}
