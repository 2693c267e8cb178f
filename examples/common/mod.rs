//! Helpers shared by the examples (not an example itself: Cargo only builds `examples/*.rs`
//! and `examples/*/main.rs`).
#![allow(dead_code)]

/// `text` as a JSON string literal, quotes included (RFC 8259 §7: `"` and `\` and the control
/// characters U+0000–U+001F must be escaped; everything else may appear as is).
pub fn json_quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0C}' => out.push_str("\\f"),
            c if c < '\u{20}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A `-H 'Name: value'` argument as a trimmed (name, value) pair. A field no request can carry
/// (a name that is not an HTTP token, a value with a control character, `Transfer-Encoding`) is a
/// bad argument, refused here with kdnet's own reason (`HttpRequest::validate`) rather than
/// failing every request later.
pub fn parse_header(header: &str) -> Result<(String, String), String> {
    let Some((name, value)) = header.split_once(':') else {
        return Err(format!("bad -H {header:?}: expected 'Name: value'"));
    };
    let (name, value) = (name.trim(), value.trim());
    if name.is_empty() {
        return Err(format!("bad -H {header:?}: expected 'Name: value'"));
    }
    // Content-Length is checked against the body and Host for duplicates when the request is
    // sent; here only the field's syntax counts, so those two are checked under another name.
    let checked_name =
        if name.eq_ignore_ascii_case("content-length") || name.eq_ignore_ascii_case("host") {
            "X-Checked"
        } else {
            name
        };
    kdnet::network::http::HttpRequest::new("http://localhost/")
        .and_then(|request| request.with_header(checked_name, value).validate())
        .map_err(|e| format!("bad -H {header:?}: {e}"))?;
    Ok((name.to_string(), value.to_string()))
}

/// `url` for messages: a password in its user info (`http://user:secret@host/`) becomes `***`,
/// so that error lines and logs do not show it. Anything else is kept as written.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://").map(|at| at + 3) else {
        return url.to_string();
    };
    let rest = &url[scheme_end..];
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    let Some(at) = authority.rfind('@') else {
        return url.to_string();
    };
    match authority[..at].split_once(':') {
        Some((user, _password)) => format!(
            "{}{user}:***{}",
            &url[..scheme_end],
            &url[scheme_end + at..]
        ),
        None => url.to_string(),
    }
}

/// `message` on one line, for stderr: every run of white space that holds a line break (an HTML
/// error page quoted by `SseError::BadStatus`, say) becomes one space, trailing white space goes,
/// and anything past `max_chars` characters is cut with `…`.
pub fn one_line(message: &str, max_chars: usize) -> String {
    let mut out = String::with_capacity(message.len().min(max_chars + 4));
    let mut pending_space = false;
    let mut count = 0;
    for piece in message.split(['\r', '\n']) {
        if pending_space && !out.is_empty() && !piece.trim().is_empty() {
            out.truncate(out.trim_end().len());
            out.push(' ');
        }
        let piece = if pending_space {
            piece.trim_start()
        } else {
            piece
        };
        for c in piece.chars() {
            if count == max_chars {
                out.truncate(out.trim_end().len());
                out.push('…');
                return out;
            }
            out.push(c);
            count += 1;
        }
        pending_space = true;
    }
    out.truncate(out.trim_end().len());
    out
}
