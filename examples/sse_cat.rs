//! Prints the events of a Server-Sent Events stream as JSON lines, like `curl -N` for SSE.
//!
//! ```text
//! cargo run --example sse_cat -- [OPTIONS] URL
//! cargo run --example sse_cat -- [-n N] [--last-event-id ID] -      # parse SSE bytes from stdin
//! ```
//!
//! Each event becomes one line on stdout, flushed at once:
//! `{"type": "message", "data": "hello", "id": "42"}` (`id` is the event's last event ID, `""` if
//! none). Lifecycle messages (connecting, open, reconnecting, errors) go to stderr.
//!
//! Options: `-X METHOD`, `-H 'Name: value'` (repeatable), `-d BODY` (POST unless `-X`), `-n N`
//! (stop after N events), `--no-reconnect`, `--last-event-id ID`, `--retry MS` (initial
//! reconnection time), `--read-timeout MS` (at least 1).
//!
//! Without `--no-reconnect` the [`SseClient`] reconnects for ever, following the WHATWG rules
//! (the server's `retry:`, `Last-Event-ID`, backoff while attempts fail), until `-n` is reached.
//!
//! Exit status: 0 after N events, at the end of stdin, or (with `--no-reconnect`) when the server
//! ends the stream; 2 when the stream fails for good ([`SseError::is_fatal`]: a status other than
//! 200, a type other than `text/event-stream`, redirect trouble, an oversized event, a request
//! that can never be sent such as a host name no resolver answers) or for bad arguments; 3 on a
//! network error with `--no-reconnect`, or when stdin cannot be read; 1 if stdout cannot be written.

mod common;

use std::cell::Cell;
use std::io::{self, Read, Write};
use std::rc::Rc;
use std::str::FromStr;
use std::time::Duration;

use common::{json_quote, one_line, parse_header, redact_url};
use kdnet::EventLoop;
use kdnet::network::http::{HttpMethod, HttpRequest};
use kdnet::network::sse::{ReadyState, SseClient, SseEvent, SseParser};

const USAGE: &str = "usage: sse_cat [-X METHOD] [-H 'Name: value']... [-d BODY] [-n N] [--no-reconnect] [--last-event-id ID] [--retry MS] [--read-timeout MS] (URL | -)";

/// The longest error line printed (a refused request quotes its body).
const ERROR_LINE_CHARS: usize = 300;
const EXIT_OK: i32 = 0;
const EXIT_STDOUT_FAILED: i32 = 1;
const EXIT_FATAL: i32 = 2;
const EXIT_NETWORK_ERROR: i32 = 3;

fn main() {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            // A closed stdout (`--help | head -c 0`) must not panic.
            let _ = writeln!(io::stdout(), "{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("sse_cat: {message}\n{USAGE}");
            std::process::exit(EXIT_FATAL);
        }
    };
    let code = if options.url == "-" {
        cat_stdin(&options)
    } else {
        cat_url(options)
    };
    std::process::exit(code);
}

// ---- command line ------------------------------------------------------------------------------

#[derive(Debug)]
struct Options {
    url: String,
    method: Option<HttpMethod>,
    headers: Vec<(String, String)>,
    body: Option<String>,
    max_events: Option<u64>,
    reconnect: bool,
    last_event_id: Option<String>,
    retry: Option<Duration>,
    read_timeout: Option<Duration>,
}

/// `Ok(None)` means `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut url = None;
    let mut options = Options {
        url: String::new(),
        method: None,
        headers: Vec::new(),
        body: None,
        max_events: None,
        reconnect: true,
        last_event_id: None,
        retry: None,
        read_timeout: None,
    };
    let mut network_only = Vec::new();
    while let Some(arg) = args.next() {
        if matches!(
            arg.as_str(),
            "-X" | "-H" | "-d" | "--no-reconnect" | "--retry" | "--read-timeout"
        ) {
            network_only.push(arg.clone());
        }
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
            "-n" => options.max_events = Some(parse_count(&value("-n")?)?),
            "--no-reconnect" => options.reconnect = false,
            "--last-event-id" => {
                let id = value("--last-event-id")?;
                // The client would silently not send it: no header value can carry these.
                if id.bytes().any(|b| b.is_ascii_control() && b != b'\t') {
                    return Err(format!(
                        "bad --last-event-id {id:?}: a Last-Event-ID cannot hold control \
                         characters (line breaks, NUL, …)"
                    ));
                }
                options.last_event_id = Some(id);
            }
            "--retry" => options.retry = Some(parse_millis("--retry", &value("--retry")?)?),
            "--read-timeout" => {
                let millis = value("--read-timeout")?;
                let timeout = parse_millis("--read-timeout", &millis)?;
                if timeout.is_zero() {
                    // Every connection would time out at once, and be retried for ever.
                    return Err(format!(
                        "bad --read-timeout {millis:?}: expected at least 1 millisecond"
                    ));
                }
                options.read_timeout = Some(timeout);
            }
            "-" if url.is_some() => return Err("more than one URL: \"-\"".to_string()),
            "-" => url = Some(arg),
            flag if flag.starts_with('-') => return Err(format!("unknown option {flag:?}")),
            _ if url.is_some() => return Err(format!("more than one URL: {arg:?}")),
            _ => url = Some(arg),
        }
    }
    options.url = url.ok_or("missing URL (or - for stdin)")?;
    if options.url == "-" && !network_only.is_empty() {
        return Err(format!(
            "{} apply to URLs only, not to - (stdin)",
            network_only.join(", ")
        ));
    }
    Ok(Some(options))
}

fn parse_count(text: &str) -> Result<u64, String> {
    match text.parse::<u64>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!(
            "bad -n {text:?}: expected a whole number of events, at least 1"
        )),
    }
}

fn parse_millis(option: &str, text: &str) -> Result<Duration, String> {
    text.parse::<u64>()
        .map(Duration::from_millis)
        .map_err(|_| format!("bad {option} {text:?}: expected whole milliseconds"))
}

// ---- output ------------------------------------------------------------------------------------

/// Prints events as JSON lines and counts them against `-n`.
struct EventPrinter {
    printed: Cell<u64>,
    max_events: Option<u64>,
}

impl EventPrinter {
    fn new(max_events: Option<u64>) -> Self {
        EventPrinter {
            printed: Cell::new(0),
            max_events,
        }
    }

    /// Prints `event` unless the limit was reached; `Err` with an exit code when stdout fails.
    fn print(&self, event: &SseEvent) -> Result<(), i32> {
        if self.is_done() {
            return Ok(());
        }
        let line = format!(
            "{{\"type\": {}, \"data\": {}, \"id\": {}}}\n",
            json_quote(event.event_type()),
            json_quote(event.data()),
            json_quote(event.last_event_id())
        );
        let mut stdout = io::stdout().lock();
        if let Err(e) = stdout
            .write_all(line.as_bytes())
            .and_then(|()| stdout.flush())
        {
            // A closed pipe (`sse_cat URL | head -1`) is the reader's choice, not our failure.
            if e.kind() == io::ErrorKind::BrokenPipe {
                return Err(EXIT_OK);
            }
            eprintln!("sse_cat: cannot write to stdout: {e}");
            return Err(EXIT_STDOUT_FAILED);
        }
        self.printed.set(self.printed.get() + 1);
        Ok(())
    }

    /// Whether `-n` events were printed.
    fn is_done(&self) -> bool {
        self.max_events.is_some_and(|n| self.printed.get() >= n)
    }
}

// ---- stdin: the parser alone -------------------------------------------------------------------

/// Parses stdin with a bare [`SseParser`] (sans-IO: bytes in, events out; no loop, no sockets).
fn cat_stdin(options: &Options) -> i32 {
    let printer = EventPrinter::new(options.max_events);
    let mut parser = SseParser::new();
    if let Some(id) = &options.last_event_id {
        parser.set_last_event_id(id);
    }
    // Set when stdout fails: the exit code to leave with.
    let stdout_failure: Cell<Option<i32>> = Cell::new(None);
    let mut sink = |event: SseEvent| {
        if stdout_failure.get().is_none() {
            stdout_failure.set(printer.print(&event).err());
        }
    };
    let mut stdin = io::stdin().lock();
    let mut buffer = vec![0; 64 * 1024];
    loop {
        let read = match stdin.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => {
                eprintln!("sse_cat: cannot read stdin: {e}");
                return EXIT_NETWORK_ERROR;
            }
        };
        if let Err(e) = parser.feed(&buffer[..read], &mut sink) {
            eprintln!("sse_cat: {e}");
            return EXIT_FATAL;
        }
        if let Some(code) = stdout_failure.get() {
            return code;
        }
        if printer.is_done() {
            return EXIT_OK;
        }
    }
    // End of input: an unterminated last block is discarded, as the WHATWG rules say.
    if let Err(e) = parser.finish(&mut sink) {
        eprintln!("sse_cat: {e}");
        return EXIT_FATAL;
    }
    stdout_failure.get().unwrap_or(EXIT_OK)
}

// ---- URL: the reconnecting client --------------------------------------------------------------

fn cat_url(options: Options) -> i32 {
    let mut request = match HttpRequest::new(&options.url) {
        Ok(request) => request,
        Err(e) => {
            eprintln!("sse_cat: {e}\n{USAGE}");
            return EXIT_FATAL;
        }
    };
    let method = match (&options.method, &options.body) {
        (Some(method), _) => Some(method.clone()),
        (None, Some(_)) => Some(HttpMethod::Post),
        (None, None) => None,
    };
    if let Some(method) = method {
        request.set_method(method);
    }
    if let Some(body) = options.body {
        request.set_body(body);
    }
    for (name, value) in options.headers {
        request.add_header(name, value);
    }
    // A request that can never be sent (a header with a line break, a name with a space) would
    // otherwise fail on every reconnect, for ever.
    if let Err(e) = request.validate() {
        eprintln!("sse_cat: {e}\n{USAGE}");
        return EXIT_FATAL;
    }

    let mut event_loop = EventLoop::new().expect("cannot create the event loop");
    let handle = event_loop.handle();
    let sse = SseClient::new().expect("the event loop exists");
    if let Some(retry) = options.retry {
        sse.set_reconnection_time(retry);
    }
    sse.set_read_timeout(options.read_timeout);
    sse.set_auto_reconnect(options.reconnect);
    if let Some(id) = &options.last_event_id {
        sse.set_last_event_id(id);
    }

    // The first outcome decides the exit code; anything after it is ignored.
    let decided = Rc::new(Cell::new(false));
    let finish = {
        let (decided, handle) = (decided.clone(), handle.clone());
        move |code: i32| {
            if !decided.replace(true) {
                handle.exit(code);
            }
        }
    };

    // For messages only: no password on stderr.
    let url = redact_url(&options.url);
    let reconnect = options.reconnect;
    let opened = Rc::new(Cell::new(false));
    sse.state_changed
        .connect(move |state| match state {
            ReadyState::Connecting if opened.get() => eprintln!("sse_cat: reconnecting to {url}"),
            ReadyState::Connecting => eprintln!("sse_cat: connecting to {url}"),
            ReadyState::Open => {
                opened.set(true);
                eprintln!("sse_cat: open");
            }
            ReadyState::Closed => eprintln!("sse_cat: closed"),
        })
        .release();

    let printer = EventPrinter::new(options.max_events);
    let weak = Rc::downgrade(&sse);
    let on_event_finish = finish.clone();
    sse.message_received
        .connect(move |event| {
            let stop = match printer.print(event) {
                Ok(()) if printer.is_done() => Some(EXIT_OK),
                Ok(()) => None,
                Err(code) => Some(code),
            };
            if let Some(code) = stop {
                // Decide first: disconnecting emits `disconnected` at once.
                on_event_finish(code);
                if let Some(sse) = weak.upgrade() {
                    sse.disconnect();
                }
            }
        })
        .release();

    let on_error_finish = finish.clone();
    sse.error
        .connect(move |error| {
            let error_is_fatal = error.is_fatal();
            // A refused request quotes its body (a proxy's HTML page, many lines): one line.
            let error = one_line(&error.to_string(), ERROR_LINE_CHARS);
            if error_is_fatal {
                eprintln!("sse_cat: {error}");
                on_error_finish(EXIT_FATAL);
            } else if reconnect {
                eprintln!("sse_cat: {error}; will reconnect");
            } else {
                eprintln!("sse_cat: {error}");
                on_error_finish(EXIT_NETWORK_ERROR);
            }
        })
        .release();

    if !reconnect {
        // With auto reconnect off the client closes when the stream ends. Undecided by then (no
        // error, not `-n`): the server ended the stream cleanly.
        sse.disconnected
            .connect(move |_| {
                if !decided.get() {
                    eprintln!("sse_cat: the server ended the stream");
                }
                finish(EXIT_OK);
            })
            .release();
    }

    sse.connect(request);
    event_loop.run()
}
