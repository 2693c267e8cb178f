//! Streams answers from the OpenAI Responses API — or from an offline mock served by the same
//! event loop — and prints them as they arrive.
//!
//! ```text
//! cargo run --example openai_chat                          # offline: kdnet's embedded mock server
//! cargo run --example openai_chat -- --prompt "Hi there"   # one question, then exit
//! echo "What is SSE?" | cargo run --example openai_chat    # piped prompts, exit at end of input
//! OPENAI_API_KEY=sk-... cargo run --example openai_chat -- --model gpt-4o-mini
//! cargo run --example openai_chat -- --base-url http://127.0.0.1:8080   # a local compatible server
//! ```
//!
//! The backend: `--mock` picks the mock; otherwise `OPENAI_API_KEY` or `--base-url` picks a real
//! server (`--base-url`, default `https://api.openai.com`), sent the key as a bearer token when
//! there is one (local OpenAI-compatible servers need none); with neither, the mock answers.
//! Requests go to `{base}/v1/responses`, or to `{base}/responses` when the base already ends in
//! `/v1` (the OpenAI SDKs' `OPENAI_BASE_URL` convention: `https://api.openai.com/v1`,
//! `http://localhost:11434/v1` for Ollama), so the base is an `http`/`https` URL with a host,
//! perhaps a path, and no query or fragment.
//!
//! What it shows, top to bottom:
//!
//! * [`EventLoop`]: one single-threaded loop runs everything; [`EventLoop::run`] returns the code
//!   given to [`LoopHandle::exit`] (or 0 after [`LoopHandle::quit`]).
//! * [`SseClient`]: `POST {base}/v1/responses` with `"stream": true`, one
//!   [`SseClient::add_event_listener`] per event type, the `error` signal for failures and
//!   `disconnected` (which follows `connected`) for a stream that ends before its answer is
//!   complete. OpenAI streams cannot be resumed (a reconnect would send the prompt again), so
//!   auto reconnect is off: the client closes when a stream ends or breaks.
//! * [`LoopHandle::post`]: stdin is read on a plain thread (a blocking read must not stall the
//!   loop) and each line is posted to the loop's thread.
//! * [`TcpServer`], [`TcpSocket`], [`Timer`], [`SseWriter`]: without `OPENAI_API_KEY` and
//!   `--base-url` (or with `--mock`) a small mock of the Responses API listens on 127.0.0.1 in
//!   the same loop and streams a realistic event sequence, one event per HTTP chunk, one text
//!   delta every 35 ms.
//!
//! Answer text goes to stdout; hints and errors go to stderr. Exit status: 0, or 1 if an answer
//! failed (HTTP error, `response.failed`, `error` event, broken stream) or stdout cannot be
//! written, 2 for bad arguments. A reader that closes stdout early (`| head`) ends the session
//! at once, with 0.

mod common;

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::io::{self, BufRead, IsTerminal, Write};
use std::rc::{Rc, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{json_quote, one_line, redact_url};
use kdnet::network::http::HttpRequest;
use kdnet::network::sse::{SseClient, SseError, SseEvent, SseWriter};
use kdnet::network::{TcpServer, TcpSocket};
use kdnet::{EventLoop, LoopHandle, Timer};

const USAGE: &str = "usage: openai_chat [--prompt TEXT] [--model NAME] [--base-url URL | --mock] [--help]  (env OPENAI_API_KEY or --base-url selects a real server; neither, the offline mock; requests go to {base}/v1/responses, or {base}/responses for a base ending in /v1)";
const DEFAULT_BASE_URL: &str = "https://api.openai.com";
const DEFAULT_MODEL: &str = "gpt-4o-mini";
/// Asked when stdin is empty, so that a bare `cargo run --example openai_chat` visibly works.
const DEMO_PROMPT: &str = "Say hello from kdnet";
/// The longest error line printed for a failed answer (a refused request quotes its body).
const ERROR_LINE_CHARS: usize = 300;
/// A stream that says nothing (not even an event) for this long is treated as broken.
const STREAM_READ_TIMEOUT: Duration = Duration::from_secs(120);

fn main() {
    let options = match parse_args(std::env::args().skip(1)) {
        Ok(Some(options)) => options,
        Ok(None) => {
            // A closed stdout (`--help | head -c 0`) must not panic.
            let _ = writeln!(io::stdout(), "{USAGE}");
            return;
        }
        Err(message) => {
            eprintln!("openai_chat: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };

    // The loop must exist before anything that attaches to it (servers, clients, timers).
    let mut event_loop = EventLoop::new().expect("cannot create the event loop");

    // A key or an explicit --base-url selects a real server (unless --mock); with neither, the
    // mock answers.
    // White space around a key (a line end from `$(cat key.txt)` on Windows, a space pasted
    // with it) is never part of it.
    let api_key = std::env::var("OPENAI_API_KEY")
        .ok()
        .map(|key| key.trim().to_string())
        .filter(|key| !key.is_empty() && !options.mock);
    let use_mock = options.mock || (api_key.is_none() && options.base_url.is_none());
    // Runs in this very loop; kept alive for all of `main` (dropping it stops it listening).
    let mock = use_mock.then(|| MockServer::start().expect("cannot start the mock server"));
    let base_url = match &mock {
        Some(mock) => format!("http://{}", mock.address()),
        None => options
            .base_url
            .clone()
            .unwrap_or_else(|| DEFAULT_BASE_URL.to_string()),
    };
    let endpoint = match responses_endpoint(&base_url) {
        Ok(endpoint) => endpoint,
        Err(message) => {
            eprintln!("openai_chat: bad --base-url: {message}\n{USAGE}");
            std::process::exit(2);
        }
    };
    match &mock {
        Some(_) => eprintln!(
            "openai_chat: backend: kdnet's offline mock of the Responses API on {base_url} \
             (set OPENAI_API_KEY to use the real API)"
        ),
        None => eprintln!(
            "openai_chat: backend: {base_url} (model {}{})",
            options.model,
            if api_key.is_some() {
                ", key from OPENAI_API_KEY"
            } else {
                ", no API key"
            }
        ),
    }

    let mode = match &options.prompt {
        Some(_) => Mode::OneShot,
        None if io::stdin().is_terminal() => Mode::Terminal,
        None => Mode::Piped,
    };
    let chat = Chat::new(
        endpoint,
        options.model.clone(),
        api_key,
        mode,
        event_loop.handle(),
    );
    match options.prompt {
        Some(prompt) => chat.ask(&prompt),
        None => {
            if mode == Mode::Terminal {
                eprintln!(
                    "openai_chat: type a prompt and press Enter; \"exit\", \"quit\" or Ctrl-D ends the session"
                );
                chat.show_prompt();
            }
            CHAT.with(|slot| *slot.borrow_mut() = Some(Rc::clone(&chat)));
            spawn_stdin_reader(event_loop.handle());
        }
    }

    // Everything from here on happens in slots called by the loop, until one of them calls
    // `quit` or `exit` on the loop's handle.
    let code = event_loop.run();
    std::process::exit(code);
}

// ---- command line ------------------------------------------------------------------------------

/// `POST` goes here: `{base}/v1/responses`, or `{base}/responses` for a base that already ends in
/// `/v1` (as the OpenAI SDKs' base URLs do). The base must be an `http`/`https` URL with a host
/// and no query or fragment: appended to `http://` the path would become the host
/// (`http:///v1/responses` names a host called `v1`), and after a query or fragment it would be
/// part of those instead of the path.
fn responses_endpoint(base_url: &str) -> Result<String, String> {
    let base = HttpRequest::new(base_url).map_err(|e| e.to_string())?;
    if base.url().query().is_some() || base.url().fragment().is_some() {
        return Err(format!(
            "{:?} has a query or fragment; give the server's base URL only",
            redact_url(base_url)
        ));
    }
    let base = base_url.trim_end_matches('/');
    let endpoint = if base.ends_with("/v1") {
        format!("{base}/responses")
    } else {
        format!("{base}/v1/responses")
    };
    HttpRequest::new(&endpoint).map_err(|e| e.to_string())?;
    Ok(endpoint)
}

#[derive(Debug)]
struct Options {
    prompt: Option<String>,
    model: String,
    /// `None`: the default (`DEFAULT_BASE_URL`), used only when `OPENAI_API_KEY` is set.
    base_url: Option<String>,
    mock: bool,
}

/// `Ok(None)` means `--help`.
fn parse_args(mut args: impl Iterator<Item = String>) -> Result<Option<Options>, String> {
    let mut options = Options {
        prompt: None,
        model: DEFAULT_MODEL.to_string(),
        base_url: None,
        mock: false,
    };
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        match arg.as_str() {
            "-h" | "--help" => return Ok(None),
            "--prompt" => options.prompt = Some(value("--prompt")?),
            "--model" => options.model = value("--model")?,
            "--base-url" => options.base_url = Some(value("--base-url")?),
            "--mock" => options.mock = true,
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    if options.mock && options.base_url.is_some() {
        return Err("--mock and --base-url exclude each other".to_string());
    }
    Ok(Some(options))
}

// ---- the chat client ---------------------------------------------------------------------------

/// Where prompts come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `--prompt`: one answer, then exit.
    OneShot,
    /// A person at a terminal: show a `> ` prompt before each question.
    Terminal,
    /// Lines piped into stdin: answer each, exit at the end of input.
    Piped,
}

/// What the stdin thread posts to the loop.
enum Input {
    Line(String),
    End,
}

thread_local! {
    /// The loop thread's chat. `LoopHandle::post` only takes `Send` closures, and a `Chat` (full
    /// of `Rc`s) cannot cross threads, so closures posted by the stdin thread look it up here —
    /// they always run on the loop's thread.
    static CHAT: RefCell<Option<Rc<Chat>>> = const { RefCell::new(None) };
}

/// Reads stdin line by line on its own thread and posts every line to the loop.
fn spawn_stdin_reader(handle: LoopHandle) {
    std::thread::spawn(move || {
        let mut stdin = io::stdin().lock();
        let mut buffer = Vec::new();
        loop {
            buffer.clear();
            // A read error ends the input like EOF does; invalid UTF-8 is replaced, not fatal.
            let input = match stdin.read_until(b'\n', &mut buffer) {
                Ok(0) | Err(_) => Input::End,
                Ok(_) => Input::Line(String::from_utf8_lossy(&buffer).into_owned()),
            };
            let ended = matches!(input, Input::End);
            let delivered = handle.post(move || {
                if let Some(chat) = CHAT.with(|slot| slot.borrow().clone()) {
                    chat.on_input(input);
                }
            });
            if ended || delivered.is_err() {
                return;
            }
        }
    });
}

/// A conversation: each prompt becomes one streamed Responses API request whose text deltas are
/// printed as they arrive.
struct Chat {
    sse: Rc<SseClient>,
    endpoint: String,
    model: String,
    api_key: Option<String>,
    mode: Mode,
    handle: LoopHandle,
    state: RefCell<ChatState>,
    self_weak: Weak<Chat>,
}

#[derive(Default)]
struct ChatState {
    /// `Some` while an answer streams: whether any text of it was printed yet.
    answering: Option<bool>,
    /// Lines that arrived while an answer was streaming.
    queued: VecDeque<String>,
    lines_received: usize,
    input_ended: bool,
    failed_answers: u32,
    finished: bool,
}

impl Chat {
    fn new(
        endpoint: String,
        model: String,
        api_key: Option<String>,
        mode: Mode,
        handle: LoopHandle,
    ) -> Rc<Chat> {
        let sse = SseClient::new().expect("the event loop exists");
        sse.set_read_timeout(Some(STREAM_READ_TIMEOUT));
        // A generation cannot be resumed: reconnecting would only ask the same question again.
        sse.set_auto_reconnect(false);
        let chat = Rc::new_cyclic(|self_weak| Chat {
            sse,
            endpoint,
            model,
            api_key,
            mode,
            handle,
            state: RefCell::default(),
            self_weak: self_weak.clone(),
        });
        chat.connect_signals();
        chat
    }

    /// Wires the SSE client's signals to this chat. The slots hold a `Weak<Chat>`: the chat owns
    /// the client, so a strong reference in its slots would be a cycle.
    fn connect_signals(self: &Rc<Self>) {
        // One listener per event type we act on (EventSource's `addEventListener`).
        for event_type in [
            "response.output_text.delta",
            "response.refusal.delta",
            "response.completed",
            "response.incomplete",
            "response.failed",
            "error",
        ] {
            self.on_sse(event_type, |chat, event| {
                chat.on_response_event(event.event_type(), event.data())
            });
        }
        // Events without an `event:` line dispatch as `message`: some OpenAI-compatible servers
        // send only `data:` lines with the type inside the JSON, or end with `data: [DONE]`.
        self.on_sse("message", |chat, event| {
            if event.data().trim() == "[DONE]" {
                chat.end_answer(Ok(()));
            } else if let Some(event_type) = json_string(event.data(), &["type"]) {
                chat.on_response_event(&event_type, event.data());
            }
        });

        let weak = Rc::downgrade(self);
        self.sse
            .error
            .connect(move |error| {
                if let Some(chat) = weak.upgrade() {
                    chat.on_stream_error(error);
                }
            })
            .release();
        // `disconnected` also follows a clean end of the stream; if the answer was not complete
        // by then, the server hung up early.
        let weak = Rc::downgrade(self);
        self.sse
            .disconnected
            .connect(move |_| {
                if let Some(chat) = weak.upgrade() {
                    chat.end_answer(Err("the stream ended before response.completed".to_string()));
                }
            })
            .release();
    }

    /// Calls `slot` with every event of type `event_type`, for as long as the chat exists.
    fn on_sse(self: &Rc<Self>, event_type: &str, slot: fn(&Chat, &SseEvent)) {
        let weak: Weak<Chat> = Rc::downgrade(self);
        self.sse
            .add_event_listener(event_type, move |event| {
                if let Some(chat) = weak.upgrade() {
                    slot(&chat, event);
                }
            })
            .release();
    }

    /// Sends `prompt` and starts streaming its answer.
    fn ask(&self, prompt: &str) {
        let body = format!(
            r#"{{"model": {}, "input": {}, "stream": true}}"#,
            json_quote(&self.model),
            json_quote(prompt)
        );
        let mut request = HttpRequest::post(&self.endpoint, body)
            .expect("the endpoint URL was checked at startup")
            .with_header("Content-Type", "application/json");
        if let Some(key) = &self.api_key {
            request.set_bearer_auth(key);
        }
        self.state.borrow_mut().answering = Some(false);
        self.sse.connect(request);
    }

    /// One event of the Responses API stream, by type.
    fn on_response_event(&self, event_type: &str, data: &str) {
        match event_type {
            // A refusal is the answer too: it streams instead of output text.
            "response.output_text.delta" | "response.refusal.delta" => {
                if let Some(delta) = json_string(data, &["delta"]) {
                    self.print_answer_text(&delta);
                }
            }
            "response.completed" => self.end_answer(Ok(())),
            "response.incomplete" => {
                let reason = json_string(data, &["response", "incomplete_details", "reason"]);
                self.end_answer(Err(format!(
                    "the answer is incomplete: {}",
                    reason.as_deref().unwrap_or("no reason given")
                )));
            }
            "response.failed" => {
                let message = json_string(data, &["response", "error", "message"]);
                self.end_answer(Err(format!(
                    "the response failed: {}",
                    message.as_deref().unwrap_or("no reason given")
                )));
            }
            "error" => {
                let message = json_string(data, &["message"]);
                self.end_answer(Err(format!(
                    "the server reported an error: {}",
                    message.as_deref().unwrap_or(data)
                )));
            }
            // response.created, response.in_progress, response.output_item.added, …: nothing to do.
            _ => {}
        }
    }

    fn on_stream_error(&self, error: &SseError) {
        let message = match error {
            // A non-200 answer (bad key, unknown model, rate limit): show the API's own message.
            SseError::BadStatus { status, body } => {
                match json_string(body, &["error", "message"]) {
                    Some(message) => format!("the server answered {status}: {message}"),
                    None => error.to_string(),
                }
            }
            _ if error.is_fatal() => error.to_string(),
            // A network error or read timeout (auto reconnect is off, so the client has closed).
            _ => format!("cannot stream the answer: {error}"),
        };
        // A refused request's body (a proxy's HTML page) may span many lines: show one.
        let message = one_line(&message, ERROR_LINE_CHARS);
        self.end_answer(Err(message));
    }

    fn print_answer_text(&self, text: &str) {
        match self.state.borrow_mut().answering.as_mut() {
            Some(printed) => *printed = true,
            None => return,
        }
        self.write_stdout(text);
    }

    /// Writes `text` to stdout at once. If stdout is gone (`openai_chat | head -c 100`: the
    /// reader closed the pipe) or broken, nobody will see the rest: the stream stops and the
    /// session ends, with 0 for a closed pipe (the reader's choice, as with `sse_cat`) and 1
    /// for any other failure. Returns whether the text was written.
    fn write_stdout(&self, text: &str) -> bool {
        let written = {
            let mut stdout = io::stdout().lock();
            stdout
                .write_all(text.as_bytes())
                .and_then(|()| stdout.flush())
        };
        let Err(error) = written else {
            return true;
        };
        let code = if error.kind() == io::ErrorKind::BrokenPipe {
            0
        } else {
            eprintln!("openai_chat: cannot write to stdout: {error}");
            1
        };
        {
            let mut state = self.state.borrow_mut();
            if state.finished {
                return false;
            }
            state.finished = true;
            state.answering = None;
        }
        self.sse.disconnect();
        self.handle.exit(code);
        false
    }

    /// Ends the current answer (the first call wins; later ones are ignored).
    fn end_answer(&self, outcome: Result<(), String>) {
        let Some(printed) = self.state.borrow_mut().answering.take() else {
            return;
        };
        // Stop the stream now: a server may keep it open after the final event.
        self.sse.disconnect();
        if printed && !self.write_stdout("\n") {
            return;
        }
        if let Err(message) = outcome {
            eprintln!("openai_chat: {message}");
            self.state.borrow_mut().failed_answers += 1;
        }
        // Move on from the loop, not from inside the client's signal: the client may still be
        // emitting (an `error` of an open stream is followed by `disconnected`), and that must
        // not end the next answer.
        let chat = self.self_weak.clone();
        kdnet::foundation::post(move || {
            if let Some(chat) = chat.upgrade() {
                chat.next();
            }
        })
        .expect("the event loop exists");
    }

    fn on_input(&self, input: Input) {
        {
            let mut state = self.state.borrow_mut();
            if state.finished {
                return;
            }
            match input {
                Input::Line(line) => {
                    state.lines_received += 1;
                    state.queued.push_back(line.trim().to_string());
                }
                Input::End => state.input_ended = true,
            }
            if state.answering.is_some() {
                return; // handled when the current answer ends
            }
        }
        self.next();
    }

    /// Takes the next queued line, or ends the session when the input is exhausted.
    fn next(&self) {
        if self.mode == Mode::OneShot {
            return self.finish();
        }
        loop {
            let (line, input_ended, lines_received) = {
                let mut state = self.state.borrow_mut();
                (
                    state.queued.pop_front(),
                    state.input_ended,
                    state.lines_received,
                )
            };
            match line.as_deref() {
                Some("") => continue,
                Some("exit" | "quit") => return self.finish(),
                Some(prompt) => {
                    if self.mode == Mode::Piped {
                        eprintln!("> {prompt}");
                    }
                    return self.ask(prompt);
                }
                None if input_ended && lines_received == 0 => {
                    // Nothing on stdin at all (`< /dev/null`, CI): show that it works anyway.
                    eprintln!("openai_chat: no prompt on stdin; asking a demo question");
                    eprintln!("> {DEMO_PROMPT}");
                    self.state.borrow_mut().lines_received = 1;
                    return self.ask(DEMO_PROMPT);
                }
                None if input_ended => return self.finish(),
                None => return self.show_prompt(),
            }
        }
    }

    fn show_prompt(&self) {
        if self.mode == Mode::Terminal {
            self.write_stdout("> ");
        }
    }

    fn finish(&self) {
        let failed = {
            let mut state = self.state.borrow_mut();
            if std::mem::replace(&mut state.finished, true) {
                return; // already ended (stdout went away)
            }
            state.failed_answers
        };
        // `run()` returns 0 after `quit`, or the code given to `exit`.
        if failed == 0 {
            self.handle.quit();
        } else {
            self.handle.exit(1);
        }
    }
}

// ---- the offline mock of the Responses API ----------------------------------------------------

/// Largest request the mock reads (head and body).
const MOCK_MAX_REQUEST_BYTES: usize = 1024 * 1024;
/// Pause before the first text delta, as if the model were thinking.
const MOCK_FIRST_DELTA_DELAY: Duration = Duration::from_millis(150);
/// Pause between text deltas: slow enough to watch the answer being typed.
const MOCK_DELTA_PACE: Duration = Duration::from_millis(35);

/// A tiny HTTP/1.1 server on the loop's thread: `POST /v1/responses` streams a canned answer,
/// anything else gets a 404.
struct MockServer {
    server: Rc<TcpServer>,
    /// Open connections; each removes itself when its socket closes.
    connections: RefCell<Vec<Rc<MockConnection>>>,
    responses_served: Cell<u64>,
}

impl MockServer {
    fn start() -> Result<Rc<MockServer>, String> {
        let server = TcpServer::new().map_err(|e| e.to_string())?;
        server
            .listen("127.0.0.1", 0)
            .map_err(|e| format!("cannot listen: {e}"))?;
        let mock = Rc::new(MockServer {
            server,
            connections: RefCell::default(),
            responses_served: Cell::new(0),
        });
        // A weak reference: the server (inside the mock) must not keep the mock alive.
        let weak = Rc::downgrade(&mock);
        mock.server
            .new_connection
            .connect(move |socket| {
                if let Some(mock) = weak.upgrade() {
                    mock.accept(socket);
                }
            })
            .release();
        Ok(mock)
    }

    fn address(&self) -> std::net::SocketAddr {
        self.server
            .server_address()
            .expect("the mock server is listening")
    }

    fn accept(self: &Rc<Self>, socket: &Rc<TcpSocket>) {
        let connection = Rc::new(MockConnection {
            mock: Rc::downgrade(self),
            socket: Rc::clone(socket),
            request: RefCell::default(),
            head_scanned: Cell::new(0),
            answered: Cell::new(false),
            pending_chunks: RefCell::default(),
            pacer: Timer::new().expect("the event loop exists"),
        });
        connection.pacer.single_shot.set(true);
        connection
            .pacer
            .timeout
            .connect_weak(&connection, |c, _| c.send_next_chunk())
            .release();
        socket
            .ready_read
            .connect_weak(&connection, |c, _| c.on_readable())
            .release();
        socket
            .disconnected
            .connect_weak(&connection, |c, _| c.close())
            .release();
        socket
            .error_occurred
            .connect_weak(&connection, |c, _| c.close())
            .release();
        self.connections.borrow_mut().push(connection);
    }

    fn forget(&self, connection: &MockConnection) {
        self.connections
            .borrow_mut()
            .retain(|c| !std::ptr::eq(Rc::as_ptr(c), connection));
    }

    fn next_response_number(&self) -> u64 {
        let n = self.responses_served.get() + 1;
        self.responses_served.set(n);
        n
    }
}

/// One client connection of the mock: reads one request, then answers it.
struct MockConnection {
    mock: Weak<MockServer>,
    socket: Rc<TcpSocket>,
    request: RefCell<Vec<u8>>,
    /// How far the request was searched for the end of its head (keeps the search linear).
    head_scanned: Cell<usize>,
    answered: Cell<bool>,
    /// Chunks still to send, each with the pause before it.
    pending_chunks: RefCell<VecDeque<(Duration, Vec<u8>)>>,
    /// Paces the chunks (a kdnet timer: the loop keeps running between them).
    pacer: Rc<Timer>,
}

impl MockConnection {
    fn on_readable(&self) {
        let data = self.socket.read_all();
        if self.answered.get() {
            return; // one request per connection; the rest is ignored
        }
        let mut request = self.request.borrow_mut();
        request.extend_from_slice(&data);
        let parsed = parse_mock_request(&request, &self.head_scanned);
        drop(request);
        match parsed {
            MockRequest::Incomplete => {}
            MockRequest::Invalid(status, message) => self.reply_error(status, &message),
            MockRequest::Complete { method, path, body } => {
                self.answered.set(true);
                self.route(&method, &path, &body);
            }
        }
    }

    fn route(&self, method: &str, path: &str, body: &str) {
        if path != "/v1/responses" {
            return self.reply_error(404, &format!("no route for {method} {path}"));
        }
        if method != "POST" {
            return self.reply_error(405, &format!("use POST for {path}, not {method}"));
        }
        let Some(prompt) = json_string(body, &["input"]) else {
            return self.reply_error(400, "the mock needs a JSON body with a string \"input\"");
        };
        let model = json_string(body, &["model"]).unwrap_or_else(|| DEFAULT_MODEL.to_string());
        let number = self.mock.upgrade().map_or(1, |m| m.next_response_number());
        let events = mock_answer_events(&prompt, &model, number);

        let head = "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream; charset=utf-8\r\n\
                    Cache-Control: no-cache\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let _ = self.socket.write(head.as_bytes());
        // SseWriter produces the `event:`/`data:` lines; each event goes out as one chunk.
        let mut writer = SseWriter::new();
        let mut chunks = self.pending_chunks.borrow_mut();
        for (pause, event) in events {
            let mut block = Vec::new();
            writer
                .write_event(&mut block, &event)
                .expect("mock event types contain no line breaks");
            chunks.push_back((pause, http_chunk(&block)));
        }
        chunks.push_back((Duration::ZERO, b"0\r\n\r\n".to_vec()));
        let first_pause = chunks.front().map_or(Duration::ZERO, |(pause, _)| *pause);
        drop(chunks);
        self.pacer.start_with(first_pause);
    }

    /// Timer slot: writes one chunk and schedules the next; closes after the last.
    fn send_next_chunk(&self) {
        let Some((_, chunk)) = self.pending_chunks.borrow_mut().pop_front() else {
            return;
        };
        if self.socket.write(&chunk).is_err() {
            return self.close();
        }
        let next_pause = self
            .pending_chunks
            .borrow()
            .front()
            .map(|(pause, _)| *pause);
        match next_pause {
            Some(pause) => self.pacer.start_with(pause),
            None => self.socket.disconnect_from_host(),
        }
    }

    fn reply_error(&self, status: u16, message: &str) {
        self.answered.set(true);
        let reason = match status {
            400 => "Bad Request",
            404 => "Not Found",
            405 => "Method Not Allowed",
            413 => "Content Too Large",
            _ => "Error",
        };
        let body = format!(
            r#"{{"error": {{"message": {}, "type": "invalid_request_error", "param": null, "code": null}}}}"#,
            json_quote(message)
        );
        let response = format!(
            "HTTP/1.1 {status} {reason}\r\nContent-Type: application/json\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
        let _ = self.socket.write(response.as_bytes());
        self.socket.disconnect_from_host();
    }

    fn close(&self) {
        self.pacer.stop();
        self.pending_chunks.borrow_mut().clear();
        if let Some(mock) = self.mock.upgrade() {
            mock.forget(self);
        }
    }
}

/// What the bytes received so far amount to.
enum MockRequest {
    Incomplete,
    Invalid(u16, String),
    Complete {
        method: String,
        path: String,
        body: String,
    },
}

/// Just enough HTTP/1.1 request parsing for the mock: request line, `Content-Length`, body.
fn parse_mock_request(bytes: &[u8], head_scanned: &Cell<usize>) -> MockRequest {
    let too_large = || {
        MockRequest::Invalid(
            413,
            format!("requests are limited to {MOCK_MAX_REQUEST_BYTES} bytes"),
        )
    };
    // Resume the search a little before where the last one stopped (the CRLFCRLF may straddle).
    let from = head_scanned.get().saturating_sub(3);
    let Some(head_end) = bytes
        .get(from..)
        .and_then(|rest| rest.windows(4).position(|w| w == b"\r\n\r\n"))
        .map(|at| from + at + 4)
    else {
        head_scanned.set(bytes.len());
        return if bytes.len() > MOCK_MAX_REQUEST_BYTES {
            too_large()
        } else {
            MockRequest::Incomplete
        };
    };
    let Ok(head) = std::str::from_utf8(&bytes[..head_end]) else {
        return MockRequest::Invalid(400, "the request head is not UTF-8".into());
    };
    let mut lines = head.split("\r\n");
    let mut request_line = lines.next().unwrap_or_default().split(' ');
    let (Some(method), Some(path)) = (request_line.next(), request_line.next()) else {
        return MockRequest::Invalid(400, "malformed request line".into());
    };
    let mut content_length = 0;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        if name.eq_ignore_ascii_case("content-length") {
            match value.trim().parse::<usize>() {
                Ok(n) => content_length = n,
                Err(_) => return MockRequest::Invalid(400, "bad Content-Length".into()),
            }
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            return MockRequest::Invalid(400, "the mock reads Content-Length bodies only".into());
        }
    }
    let Some(total) = head_end
        .checked_add(content_length)
        .filter(|&n| n <= MOCK_MAX_REQUEST_BYTES)
    else {
        return too_large();
    };
    match bytes.get(head_end..total) {
        None => MockRequest::Incomplete,
        Some(body) => MockRequest::Complete {
            method: method.to_string(),
            path: path.split('?').next().unwrap_or(path).to_string(),
            body: String::from_utf8_lossy(body).into_owned(),
        },
    }
}

/// Frames `data` as one HTTP/1.1 chunk.
fn http_chunk(data: &[u8]) -> Vec<u8> {
    let mut chunk = format!("{:x}\r\n", data.len()).into_bytes();
    chunk.extend_from_slice(data);
    chunk.extend_from_slice(b"\r\n");
    chunk
}

/// The events of one answer (as the real API sends them), each with the pause before it.
fn mock_answer_events(prompt: &str, model: &str, number: u64) -> Vec<(Duration, SseEvent)> {
    let answer = format!(
        "Hello from kdnet! This is kdnet's offline mock of the OpenAI Responses API, running in \
         the same event loop as the client, so no network and no API key are needed. You said: \
         \"{prompt}\". Every word of this answer arrived as a response.output_text.delta \
         server-sent event, sent by a kdnet TcpServer and parsed by kdnet's SseClient. Set \
         OPENAI_API_KEY to talk to the real API."
    );
    let response_id = format!("resp_mock_{number:04}");
    let item_id = format!("msg_mock_{number:04}");
    let created_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let deltas: Vec<&str> = answer.split_inclusive(' ').collect();
    let usage = format!(
        r#"{{"input_tokens": {input}, "input_tokens_details": {{"cached_tokens": 0}}, "output_tokens": {output}, "output_tokens_details": {{"reasoning_tokens": 0}}, "total_tokens": {total}}}"#,
        input = prompt.split_whitespace().count() + 8,
        output = deltas.len(),
        total = prompt.split_whitespace().count() + 8 + deltas.len()
    );
    let response = |status: &str, output: &str, usage: &str| {
        format!(
            r#"{{"id": "{response_id}", "object": "response", "created_at": {created_at}, "status": "{status}", "error": null, "incomplete_details": null, "instructions": null, "model": {model}, "output": [{output}], "parallel_tool_calls": true, "previous_response_id": null, "store": false, "temperature": 1.0, "text": {{"format": {{"type": "text"}}}}, "tool_choice": "auto", "tools": [], "top_p": 1.0, "truncation": "disabled", "usage": {usage}, "metadata": {{}}}}"#,
            model = json_quote(model),
        )
    };
    let text_part = |text: &str| {
        format!(
            r#"{{"type": "output_text", "annotations": [], "logprobs": [], "text": {}}}"#,
            json_quote(text)
        )
    };
    let message_item = |status: &str, content: &str| {
        format!(
            r#"{{"id": "{item_id}", "type": "message", "status": "{status}", "content": [{content}], "role": "assistant"}}"#
        )
    };

    // (event type, payload fields after "type" and before "sequence_number", pause before it)
    let mut script: Vec<(&str, String, Duration)> = vec![
        (
            "response.created",
            format!(r#""response": {}"#, response("in_progress", "", "null")),
            Duration::ZERO,
        ),
        (
            "response.in_progress",
            format!(r#""response": {}"#, response("in_progress", "", "null")),
            Duration::ZERO,
        ),
        (
            "response.output_item.added",
            format!(
                r#""output_index": 0, "item": {}"#,
                message_item("in_progress", "")
            ),
            Duration::ZERO,
        ),
        (
            "response.content_part.added",
            format!(
                r#""item_id": "{item_id}", "output_index": 0, "content_index": 0, "part": {}"#,
                text_part("")
            ),
            Duration::ZERO,
        ),
    ];
    for (i, delta) in deltas.iter().enumerate() {
        let pause = if i == 0 {
            MOCK_FIRST_DELTA_DELAY
        } else {
            MOCK_DELTA_PACE
        };
        script.push((
            "response.output_text.delta",
            format!(
                r#""item_id": "{item_id}", "output_index": 0, "content_index": 0, "delta": {}, "logprobs": []"#,
                json_quote(delta)
            ),
            pause,
        ));
    }
    let done_item = message_item("completed", &text_part(&answer));
    script.extend([
        (
            "response.output_text.done",
            format!(
                r#""item_id": "{item_id}", "output_index": 0, "content_index": 0, "text": {}, "logprobs": []"#,
                json_quote(&answer)
            ),
            MOCK_DELTA_PACE,
        ),
        (
            "response.content_part.done",
            format!(
                r#""item_id": "{item_id}", "output_index": 0, "content_index": 0, "part": {}"#,
                text_part(&answer)
            ),
            Duration::ZERO,
        ),
        (
            "response.output_item.done",
            format!(r#""output_index": 0, "item": {done_item}"#),
            Duration::ZERO,
        ),
        (
            "response.completed",
            format!(
                r#""response": {}"#,
                response("completed", &done_item, &usage)
            ),
            Duration::ZERO,
        ),
    ]);

    script
        .into_iter()
        .enumerate()
        .map(|(sequence_number, (event_type, fields, pause))| {
            let data = format!(
                r#"{{"type": "{event_type}", {fields}, "sequence_number": {sequence_number}}}"#
            );
            (pause, SseEvent::new(event_type, data))
        })
        .collect()
}

// ---- just enough JSON --------------------------------------------------------------------------

/// The string at `path` in a JSON document: `&["delta"]` is the top-level member `delta`,
/// `&["response", "error", "message"]` is `.response.error.message`. `None` if there is no such
/// member, its value is not a string, or the JSON around it is broken.
///
/// A single forward scan, purpose-built for reading OpenAI events (not a validating parser): it
/// tracks which member each open object or array is the value of, skips strings as whole tokens
/// (so text that looks like JSON inside a string is never mistaken for structure), and decodes
/// only the string it returns. Array elements are never matched.
fn json_string(json: &str, path: &[&str]) -> Option<String> {
    let (&wanted, parents) = path.split_last()?;
    let bytes = json.as_bytes();
    // For each open object/array: the raw name of the member it is the value of (None for the
    // root and for array elements).
    let mut containers: Vec<Option<&str>> = Vec::new();
    // A member name just read, waiting for its value.
    let mut member: Option<&str> = None;
    let mut i = 0;
    while let Some(&byte) = bytes.get(i) {
        match byte {
            b'"' => {
                let end = json_string_end(bytes, i)?;
                let raw = json.get(i + 1..end)?;
                let after = skip_json_whitespace(bytes, end + 1);
                if bytes.get(after) == Some(&b':') {
                    member = Some(raw);
                    i = after + 1;
                    continue;
                }
                // A string value: is it the one at `path`?
                if let Some(name) = member.take() {
                    let at_path = containers.len() == parents.len() + 1
                        && containers
                            .iter()
                            .skip(1)
                            .zip(parents)
                            .all(|(container, parent)| {
                                container.is_some_and(|raw| json_name_is(raw, parent))
                            });
                    if at_path && json_name_is(name, wanted) {
                        return json_unescape(raw);
                    }
                }
                i = end + 1;
            }
            b'{' | b'[' => {
                containers.push(member.take());
                i += 1;
            }
            b'}' | b']' => {
                containers.pop();
                member = None;
                i += 1;
            }
            b',' => {
                member = None;
                i += 1;
            }
            // Numbers, literals, whitespace: the pending member (if any) has a non-string value.
            _ => i += 1,
        }
    }
    None
}

/// Index of the quote that closes the string starting at `bytes[start]`.
fn json_string_end(bytes: &[u8], start: usize) -> Option<usize> {
    let mut i = start + 1;
    loop {
        match bytes.get(i)? {
            b'"' => return Some(i),
            b'\\' => i += 2, // skips the escaped byte, which may be a quote
            _ => i += 1,
        }
    }
}

fn skip_json_whitespace(bytes: &[u8], mut i: usize) -> usize {
    while bytes.get(i).is_some_and(|b| b" \t\r\n".contains(b)) {
        i += 1;
    }
    i
}

/// Whether a raw (still escaped) member name means `name`.
fn json_name_is(raw: &str, name: &str) -> bool {
    if raw.contains('\\') {
        json_unescape(raw).is_some_and(|decoded| decoded == name)
    } else {
        raw == name
    }
}

/// Decodes the inside of a JSON string literal: `\" \\ \/ \b \f \n \r \t` and `\uXXXX`, where a
/// UTF-16 surrogate pair (`\ud83d\ude00`) becomes one character and a lone surrogate becomes
/// U+FFFD. `None` for an unknown escape or a malformed `\u`.
fn json_unescape(raw: &str) -> Option<String> {
    let mut out = String::with_capacity(raw.len());
    let mut rest = raw;
    while let Some(backslash) = rest.find('\\') {
        out.push_str(&rest[..backslash]);
        let escape = rest.get(backslash + 1..)?;
        let mut after = escape.get(1..)?;
        match escape.as_bytes().first()? {
            b'"' => out.push('"'),
            b'\\' => out.push('\\'),
            b'/' => out.push('/'),
            b'b' => out.push('\u{08}'),
            b'f' => out.push('\u{0C}'),
            b'n' => out.push('\n'),
            b'r' => out.push('\r'),
            b't' => out.push('\t'),
            b'u' => {
                let unit = hex4(after)?;
                after = &after[4..];
                let c = match unit {
                    0xD800..=0xDBFF => {
                        // A high surrogate must be followed by `\u` and a low surrogate.
                        let low = after.strip_prefix("\\u").and_then(hex4);
                        match low {
                            Some(low @ 0xDC00..=0xDFFF) => {
                                after = &after[6..];
                                let high = u32::from(unit - 0xD800);
                                let low = u32::from(low - 0xDC00);
                                char::from_u32(0x10000 + (high << 10) + low)
                            }
                            _ => None,
                        }
                    }
                    unit => char::from_u32(u32::from(unit)), // None for a lone low surrogate
                };
                out.push(c.unwrap_or(char::REPLACEMENT_CHARACTER));
            }
            _ => return None,
        }
        rest = after;
    }
    out.push_str(rest);
    Some(out)
}

/// The value of the four hex digits at the start of `text`.
fn hex4(text: &str) -> Option<u16> {
    let digits = text.get(..4)?;
    if !digits.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None; // from_str_radix alone would accept a leading `+`
    }
    u16::from_str_radix(digits, 16).ok()
}
