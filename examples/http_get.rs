//! Fetches URLs with kdnet's [`HttpClient`], like a small `curl`.
//!
//! ```text
//! cargo run --example http_get -- [OPTIONS] URL...
//! cargo run --example http_get -- -i http://user:secret@127.0.0.1:8080/status
//! ```
//!
//! Options: `-X METHOD`, `-H 'Name: value'` (repeatable), `-d BODY` (POST unless `-X`), `-i`
//! (print the final response's status line and headers, then a blank line, before the body),
//! `--max-redirects N` (0 = don't follow), `--cacert FILE.pem` (trust another CA), `--insecure`
//! (no certificate verification), `--timeout SECS` (per URL, decimals allowed).
//!
//! The URLs are fetched one after another on one [`HttpClient`], so a kept-alive connection is
//! reused. User info in a URL (`http://user:pass@host/`) becomes Basic authentication. Bodies go
//! to stdout byte for byte (after gzip/deflate decoding).
//!
//! Exit status: 0 when every URL produced a response (whatever its status), 1 when any failed
//! (one line `http_get: <url>: <error>` on stderr per failure, a password in the URL shown as
//! `***`), 2 for bad arguments (including a `--cacert` file without a usable certificate).

mod common;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io::{self, Write};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use common::{parse_header, redact_url};
use kdnet::network::http::{
    HttpClient, HttpError, HttpMethod, HttpRequest, HttpResponse, HttpSession, RedirectPolicy,
};
use kdnet::{EventLoop, LoopHandle};

const USAGE: &str = "usage: http_get [-X METHOD] [-H 'Name: value']... [-d BODY] [-i] [--max-redirects N] [--cacert FILE.pem] [--insecure] [--timeout SECS] URL...";

fn main() {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            // A closed stdout (`--help | head -c 0`) must not panic.
            let _ = writeln!(io::stdout(), "{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("http_get: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };

    let mut session = HttpSession::new();
    if let Some(path) = &options.cacert {
        match std::fs::read(path) {
            Ok(pem) => {
                if let Err(e) = session.add_ca_certificate(pem) {
                    eprintln!("http_get: bad --cacert {path}: {e}");
                    std::process::exit(2);
                }
            }
            Err(e) => {
                eprintln!("http_get: cannot read --cacert {path}: {e}");
                std::process::exit(2);
            }
        }
    }
    if options.insecure {
        session.dangerous_disable_certificate_verification();
    }

    let mut event_loop = EventLoop::new().expect("cannot create the event loop");
    let client = HttpClient::with_session(session).expect("the event loop exists");
    let fetcher = Rc::new(Fetcher {
        client,
        handle: event_loop.handle(),
        queue: RefCell::new(options.urls.iter().cloned().collect()),
        failures: RefCell::new(0),
        options,
    });
    fetcher.fetch_next();
    std::process::exit(event_loop.run());
}

// ---- command line ------------------------------------------------------------------------------

#[derive(Debug)]
struct Options {
    urls: Vec<String>,
    method: Option<HttpMethod>,
    headers: Vec<(String, String)>,
    body: Option<String>,
    include_head: bool,
    max_redirects: Option<u32>,
    cacert: Option<String>,
    insecure: bool,
    timeout: Option<Duration>,
}

/// `Ok(None)` means `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        urls: Vec::new(),
        method: None,
        headers: Vec::new(),
        body: None,
        include_head: false,
        max_redirects: None,
        cacert: None,
        insecure: false,
        timeout: None,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "-X" => {
                let method = value("-X")?;
                options.method = Some(
                    HttpMethod::from_str(&method).map_err(|e| format!("bad -X {method:?}: {e}"))?,
                );
            }
            "-H" => {
                let header = value("-H")?;
                options.headers.push(parse_header(&header)?);
            }
            "-d" => options.body = Some(value("-d")?),
            "-i" => options.include_head = true,
            "--max-redirects" => {
                let n = value("--max-redirects")?;
                options.max_redirects =
                    Some(n.parse().map_err(|_| {
                        format!("bad --max-redirects {n:?}: expected a whole number")
                    })?);
            }
            "--cacert" => options.cacert = Some(value("--cacert")?),
            "--insecure" => options.insecure = true,
            "--timeout" => {
                let secs = value("--timeout")?;
                let timeout = secs
                    .parse::<f64>()
                    .ok()
                    .filter(|s| *s > 0.0)
                    .and_then(|s| Duration::try_from_secs_f64(s).ok());
                options.timeout = Some(timeout.ok_or(format!(
                    "bad --timeout {secs:?}: expected a positive number of seconds"
                ))?);
            }
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            _ => options.urls.push(arg),
        }
    }
    if options.urls.is_empty() {
        return Err("missing URL".to_string());
    }
    Ok(Some(options))
}

// ---- fetching ----------------------------------------------------------------------------------

/// Fetches the queued URLs one at a time: each request starts when the previous one finished,
/// so all of them can share one kept-alive connection.
struct Fetcher {
    client: Rc<HttpClient>,
    handle: LoopHandle,
    options: Options,
    queue: RefCell<VecDeque<String>>,
    failures: RefCell<u32>,
}

impl Fetcher {
    fn fetch_next(self: &Rc<Self>) {
        let Some(url) = self.queue.borrow_mut().pop_front() else {
            let failures = *self.failures.borrow();
            return self.handle.exit(if failures == 0 { 0 } else { 1 });
        };
        let request = match self.build_request(&url) {
            Ok(request) => request,
            Err(e) => {
                self.report_failure(&url, &e);
                return self.fetch_next();
            }
        };
        let fetcher = Rc::clone(self);
        // The callback runs on a later loop turn, never inside `send`.
        self.client.send(request, move |result| {
            match result {
                Ok(response) => fetcher.print_response(&response),
                Err(e) => fetcher.report_failure(&url, &e),
            }
            fetcher.fetch_next();
        });
    }

    fn build_request(&self, url: &str) -> Result<HttpRequest, HttpError> {
        // Credentials in the URL are moved into an `Authorization: Basic` header here.
        let mut request = HttpRequest::new(url)?;
        let options = &self.options;
        match (&options.method, &options.body) {
            (Some(method), _) => request.set_method(method.clone()),
            (None, Some(_)) => request.set_method(HttpMethod::Post),
            (None, None) => {}
        }
        if let Some(body) = &options.body {
            request.set_body(body.clone());
        }
        for (name, value) in &options.headers {
            request.add_header(name.clone(), value.clone());
        }
        match options.max_redirects {
            Some(0) => request.set_redirect_policy(RedirectPolicy::DontFollow),
            Some(n) => request.set_max_redirects(n),
            None => {}
        }
        if let Some(timeout) = options.timeout {
            request.set_timeout(timeout);
        }
        Ok(request)
    }

    fn print_response(&self, response: &HttpResponse) {
        let mut out = Vec::new();
        if self.options.include_head {
            // The head as it came (CRLF line ends, as on the wire and as `curl -i` prints it).
            out.extend_from_slice(
                format!("{} {}", response.version(), response.status()).as_bytes(),
            );
            if !response.reason().is_empty() {
                out.extend_from_slice(format!(" {}", response.reason()).as_bytes());
            }
            out.extend_from_slice(b"\r\n");
            for (name, value) in response.headers().iter() {
                out.extend_from_slice(format!("{name}: {value}\r\n").as_bytes());
            }
            out.extend_from_slice(b"\r\n");
        }
        let mut stdout = io::stdout().lock();
        let written = stdout
            .write_all(&out)
            .and_then(|()| stdout.write_all(response.body()))
            .and_then(|()| stdout.flush());
        if let Err(e) = written {
            eprintln!("http_get: cannot write to stdout: {e}");
            *self.failures.borrow_mut() += 1;
        }
    }

    fn report_failure(&self, url: &str, error: &HttpError) {
        eprintln!("http_get: {}: {error}", redact_url(url));
        *self.failures.borrow_mut() += 1;
    }
}
