//! The examples as real processes: their command-line contracts (output formats, exit codes)
//! against loopback servers, and the offline `openai_chat` showcase.
//!
//! The examples are built once per test binary with `cargo build --examples` and run from the
//! target directory; every child gets a deadline after which it is killed, so a hanging example
//! fails its test instead of hanging the suite.

mod support;

use std::io::{Read, Write};
use std::path::PathBuf;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use support::{Reply, ScriptServer, ok_response};

/// Longest any example may run in these tests.
const CHILD_DEADLINE: Duration = Duration::from_secs(20);

// ---- sse_cat -----------------------------------------------------------------------------------

#[test]
fn sse_cat_stdin_prints_one_exact_json_line_per_event() {
    let input = "event: greeting\nid: 7\ndata: say \"hi\" \\ now\ndata: second\tline\n\n\
                 : a comment\n\
                 data: caf\u{e9} \u{1F600} \u{1}\n\n\
                 id\ndata: id reset\r\n\r\n\
                 event: dropped\ndata: the last block has no blank line";
    let out = run("sse_cat", &["-"], Stdin::Bytes(input.as_bytes().to_vec()));
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_text(),
        concat!(
            r#"{"type": "greeting", "data": "say \"hi\" \\ now\nsecond\tline", "id": "7"}"#,
            "\n",
            "{\"type\": \"message\", \"data\": \"caf\u{e9} \u{1F600} \\u0001\", \"id\": \"7\"}",
            "\n",
            r#"{"type": "message", "data": "id reset", "id": ""}"#,
            "\n",
        )
    );
}

#[test]
fn sse_cat_stdin_stops_after_n_events_and_seeds_the_last_event_id() {
    let out = run(
        "sse_cat",
        &["-n", "1", "--last-event-id", "41", "-"],
        Stdin::Bytes(b"data: a\n\ndata: b\n\n".to_vec()),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_text(),
        "{\"type\": \"message\", \"data\": \"a\", \"id\": \"41\"}\n"
    );
}

#[test]
fn sse_cat_exits_0_after_n_events_of_an_endless_stream() {
    let server = ScriptServer::start(|_, _| {
        // A chunked stream that never ends: three events, then the connection just stays open.
        let mut reply =
            b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n"
                .to_vec();
        for n in 1..=3 {
            let event = format!("id: {n}\ndata: event {n}\n\n");
            reply.extend_from_slice(format!("{:x}\r\n{event}\r\n", event.len()).as_bytes());
        }
        Reply::Bytes(reply)
    });
    let out = run("sse_cat", &["-n", "2", &server.url("/events")], Stdin::Null);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_text(),
        "{\"type\": \"message\", \"data\": \"event 1\", \"id\": \"1\"}\n\
         {\"type\": \"message\", \"data\": \"event 2\", \"id\": \"2\"}\n"
    );
}

#[test]
fn sse_cat_no_reconnect_exits_0_when_the_stream_ends_and_sends_what_it_was_told() {
    let server = ScriptServer::start(|_, _| {
        let body = "event: update\ndata: {\"n\": 1}\n\n";
        Reply::BytesThenClose(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let out = run(
        "sse_cat",
        &[
            "--no-reconnect",
            "-X",
            "PUT",
            "-H",
            "X-Token: abc",
            "-d",
            r#"{"stream": true}"#,
            "--last-event-id",
            "9",
            "--retry",
            "50",
            &server.url("/feed"),
        ],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_text(),
        "{\"type\": \"update\", \"data\": \"{\\\"n\\\": 1}\", \"id\": \"9\"}\n"
    );
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "--no-reconnect reconnected: {seen:?}");
    assert_eq!(seen[0].line, "PUT /feed HTTP/1.1");
    assert_eq!(seen[0].header("x-token"), Some("abc"));
    assert_eq!(seen[0].header("last-event-id"), Some("9"));
    assert_eq!(seen[0].header("accept"), Some("text/event-stream"));
    assert_eq!(seen[0].body, br#"{"stream": true}"#);
}

#[test]
fn sse_cat_no_reconnect_exits_3_when_the_connection_is_refused() {
    let out = run(
        "sse_cat",
        &["--no-reconnect", &format!("http://{}/", refused_address())],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(3), "{out:?}");
    assert!(out.stdout.is_empty());
    assert!(out.stderr_text().contains("refused"), "{out:?}");
}

#[test]
fn sse_cat_exits_2_on_204_even_when_reconnecting() {
    let server =
        ScriptServer::start(|_, _| Reply::Bytes(b"HTTP/1.1 204 No Content\r\n\r\n".to_vec()));
    let out = run("sse_cat", &[&server.url("/")], Stdin::Null);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr_text().contains("204"), "{out:?}");
    assert_eq!(server.requests().len(), 1, "a 204 must not be retried");
}

#[test]
fn sse_cat_refuses_a_zero_read_timeout() {
    // 0 ms would fail every connection at once ("timed out during waiting for the response
    // head"), reconnecting for ever.
    let out = run(
        "sse_cat",
        &["--read-timeout", "0", "http://127.0.0.1:9/"],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(
        out.stderr_text().contains("bad --read-timeout \"0\""),
        "{out:?}"
    );
}

#[test]
fn sse_cat_refuses_a_last_event_id_no_header_can_carry() {
    // A Last-Event-ID with a line break or other control character could never be sent.
    for id in ["a\nb", "a\rb", "a\u{1b}b"] {
        let out = run(
            "sse_cat",
            &["--last-event-id", id, "-"],
            Stdin::Bytes(b"data: x\n\n".to_vec()),
        );
        assert_eq!(out.code(), Some(2), "{id:?}: {out:?}");
        assert!(out.stderr_text().contains("bad --last-event-id"), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn sse_cat_refuses_a_request_that_can_never_be_sent_instead_of_retrying_it() {
    let server = ScriptServer::start(|_, _| Reply::Close);
    for header in ["X-A: a\rb", "Bad Name: x"] {
        let out = run("sse_cat", &["-H", header, &server.url("/")], Stdin::Null);
        assert_eq!(out.code(), Some(2), "{header:?}: {out:?}");
        assert!(out.stderr_text().contains("invalid request"), "{out:?}");
    }
    assert!(server.requests().is_empty());
}

// ---- http_get ----------------------------------------------------------------------------------

#[test]
fn http_get_i_prints_status_line_headers_blank_line_then_body_and_exits_0_on_404() {
    let server = ScriptServer::start(|_, _| {
        Reply::Bytes(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Reason: gone\r\n\r\nnot found"
                .to_vec(),
        )
    });
    let out = run("http_get", &["-i", &server.url("/missing")], Stdin::Null);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_text(),
        "HTTP/1.1 404 Not Found\r\nContent-Length: 9\r\nX-Reason: gone\r\n\r\nnot found"
    );
    assert!(out.stderr.is_empty(), "{out:?}");
}

#[test]
fn http_get_exits_1_with_a_one_line_reason_when_the_connection_is_refused() {
    let url = format!("http://{}/", refused_address());
    let out = run("http_get", &[&url], Stdin::Null);
    assert_eq!(out.code(), Some(1), "{out:?}");
    let stderr = out.stderr_text();
    assert_eq!(stderr.lines().count(), 1, "{stderr:?}");
    assert!(
        stderr.starts_with(&format!("http_get: {url}: ")),
        "{stderr:?}"
    );
    assert!(stderr.contains("refused"), "{stderr:?}");
}

#[test]
fn passwords_in_urls_are_not_echoed_to_stderr() {
    let addr = refused_address();
    let url = format!("http://alice:s3cret@{addr}/x?q=1");
    for (example, args) in [
        ("http_get", vec![url.as_str()]),
        ("sse_cat", vec!["--no-reconnect", url.as_str()]),
    ] {
        let out = run(example, &args, Stdin::Null);
        assert_ne!(out.code(), Some(0), "{out:?}");
        let stderr = out.stderr_text();
        assert!(
            !stderr.contains("s3cret"),
            "{example} showed the password: {stderr}"
        );
        assert!(
            stderr.contains(&format!("http://alice:***@{addr}/x?q=1")),
            "{example}: {stderr}"
        );
    }
}

#[test]
fn http_get_fetches_several_urls_on_one_connection_and_writes_raw_bytes() {
    let server = ScriptServer::start(|req, _| {
        let mut reply = b"HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\n".to_vec();
        if req.line.starts_with("GET /binary ") {
            reply.extend_from_slice(&[0xff, 0x00, 0xfe, b'\n']);
        } else {
            reply.extend_from_slice(b"text");
        }
        Reply::Bytes(reply)
    });
    let out = run(
        "http_get",
        &[&server.url("/binary"), &server.url("/text")],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout, b"\xff\x00\xfe\ntext");
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[0].connection, seen[1].connection),
        (0, 0),
        "the second URL did not reuse the connection"
    );
}

#[test]
fn http_get_sends_method_headers_body_and_basic_auth_from_the_url() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let url = format!("http://alice:s%20cret@{}/submit", server.addr);
    let out = run(
        "http_get",
        &["-d", "a=1", "-H", "Content-Type: text/plain", &url],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "ok");
    let seen = &server.requests()[0];
    assert_eq!(seen.line, "POST /submit HTTP/1.1");
    assert_eq!(seen.header("content-type"), Some("text/plain"));
    assert_eq!(seen.header("authorization"), Some("Basic YWxpY2U6cyBjcmV0"));
    assert_eq!(seen.body, b"a=1");
}

#[test]
fn http_get_max_redirects_0_returns_the_redirect_itself() {
    let server = ScriptServer::start(|req, _| {
        if req.line.starts_with("GET /old ") {
            Reply::Bytes(
                b"HTTP/1.1 302 Found\r\nLocation: /new\r\nContent-Length: 0\r\n\r\n".to_vec(),
            )
        } else {
            Reply::Bytes(ok_response("new", ""))
        }
    });
    let not_followed = run(
        "http_get",
        &["-i", "--max-redirects", "0", &server.url("/old")],
        Stdin::Null,
    );
    assert_eq!(not_followed.code(), Some(0), "{not_followed:?}");
    assert!(
        not_followed
            .stdout_text()
            .starts_with("HTTP/1.1 302 Found\r\n"),
        "{not_followed:?}"
    );
    let followed = run("http_get", &[&server.url("/old")], Stdin::Null);
    assert_eq!(followed.stdout_text(), "new", "{followed:?}");
}

#[test]
fn http_get_refuses_a_cacert_file_that_holds_no_certificate() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("plain", "")));
    let not_a_ca = std::env::temp_dir().join(format!(
        "kdnet-examples-cli-{}-not-a-ca.pem",
        std::process::id()
    ));
    std::fs::write(&not_a_ca, "this is not a certificate\n").expect("write the file");
    let path = not_a_ca.to_str().expect("UTF-8 temp path");
    // Checked before anything is fetched, even for a plain-HTTP URL.
    let out = run(
        "http_get",
        &["--cacert", path, &server.url("/")],
        Stdin::Null,
    );
    let _ = std::fs::remove_file(&not_a_ca);
    assert_eq!(out.code(), Some(2), "{out:?}");
    let stderr = out.stderr_text();
    assert!(
        stderr.contains(&format!("bad --cacert {path}: ")) && stderr.contains("no CERTIFICATE"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        server.requests().is_empty(),
        "fetched despite the bad --cacert"
    );
}

#[test]
fn http_get_and_sse_cat_refuse_a_malformed_header_argument_as_a_bad_argument() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("plain", "")));
    for (example, header) in [
        ("http_get", "Bad Name: v"),
        ("http_get", "X-Ok: line\u{1}break"),
        ("sse_cat", "Bad Name: v"),
    ] {
        let out = run(example, &["-H", header, &server.url("/")], Stdin::Null);
        assert_eq!(out.code(), Some(2), "{example} -H {header:?}: {out:?}");
        assert!(
            out.stderr_text().contains("bad -H") && out.stderr_text().contains("usage:"),
            "{out:?}"
        );
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    assert!(server.requests().is_empty(), "sent despite the bad -H");
}

#[test]
fn http_get_trusts_the_ca_given_with_cacert_and_only_then() {
    let server = TlsServer::start(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecure");
    let ca_file = std::env::temp_dir().join(format!(
        "kdnet-examples-cli-{}-{}.pem",
        std::process::id(),
        server.port
    ));
    std::fs::write(&ca_file, &server.ca_pem).expect("write the CA file");
    let url = format!("https://127.0.0.1:{}/", server.port);

    let trusted = run(
        "http_get",
        &["--cacert", ca_file.to_str().expect("UTF-8 temp path"), &url],
        Stdin::Null,
    );
    let untrusted = run("http_get", &[&url], Stdin::Null);
    let _ = std::fs::remove_file(&ca_file);
    assert_eq!(trusted.code(), Some(0), "{trusted:?}");
    assert_eq!(trusted.stdout_text(), "secure");
    assert_eq!(untrusted.code(), Some(1), "{untrusted:?}");
    assert!(
        untrusted.stderr_text().contains("certificate"),
        "{untrusted:?}"
    );
}

// ---- openai_chat -------------------------------------------------------------------------------

#[test]
fn openai_chat_prompt_streams_an_answer_from_the_offline_mock() {
    let out = run("openai_chat", &["--prompt", "hi"], Stdin::Null);
    assert_eq!(out.code(), Some(0), "{out:?}");
    let answer = out.stdout_text();
    assert!(answer.contains("kdnet"), "{answer:?}");
    assert!(
        answer.contains("\"hi\""),
        "the prompt is not echoed: {answer:?}"
    );
    assert!(answer.ends_with(".\n"), "{answer:?}");
    assert!(out.stderr_text().contains("mock"), "{out:?}");
}

#[test]
fn openai_chat_with_empty_stdin_answers_a_demo_prompt_and_exits_0() {
    let out = run("openai_chat", &[], Stdin::Null);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stdout_text().contains("kdnet"), "{out:?}");
    assert!(out.stderr_text().contains("demo"), "{out:?}");
}

#[test]
fn openai_chat_answers_each_piped_line_then_exits_at_end_of_input() {
    let out = run(
        "openai_chat",
        &["--mock"],
        Stdin::Bytes(b"first question\n\nsecond question\n".to_vec()),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    let answers = out.stdout_text();
    assert_eq!(answers.lines().count(), 2, "{answers:?}");
    let first = answers.find("first question").expect("first answer");
    let second = answers.find("second question").expect("second answer");
    assert!(first < second, "{answers:?}");
}

#[test]
fn openai_chat_reads_a_compatible_server_without_event_lines_and_with_done() {
    // Data-only events naming their type in the JSON, escapes of every kind, then `[DONE]`.
    let deltas = [
        r#"He said \"caf\u00e9\""#,
        r#" \ud83d\ude00\\"#,
        r#"\ttab\nline"#,
        r#" lone \udc00!"#,
    ];
    let mut body = String::new();
    for (n, delta) in deltas.iter().enumerate() {
        body.push_str(&format!(
            "data: {{\"type\":\"response.output_text.delta\",\"delta\":\"{delta}\",\"sequence_number\":{n}}}\n\n"
        ));
    }
    body.push_str("data: [DONE]\n\n");
    let server = ScriptServer::start(move |_, _| {
        Reply::BytesThenClose(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let out = run_with_env(
        "openai_chat",
        &[
            "--base-url",
            &server.url(""),
            "--model",
            "m-1",
            "--prompt",
            "say \"x\"",
        ],
        Stdin::Null,
        Some(" sk-test\r\n"),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(
        out.stdout_text(),
        "He said \"caf\u{e9}\" \u{1F600}\\\ttab\nline lone \u{FFFD}!\n"
    );
    let seen = &server.requests()[0];
    assert_eq!(seen.line, "POST /v1/responses HTTP/1.1");
    // The key as written in a .env file or pasted with its line end is still the key.
    assert_eq!(seen.header("authorization"), Some("Bearer sk-test"));
    assert_eq!(seen.header("content-type"), Some("application/json"));
    assert_eq!(
        String::from_utf8_lossy(&seen.body),
        r#"{"model": "m-1", "input": "say \"x\"", "stream": true}"#
    );
}

#[test]
fn openai_chat_base_url_ending_in_v1_is_not_given_a_second_v1() {
    // The OpenAI SDKs' base URL convention includes /v1 (OPENAI_BASE_URL=http://localhost:11434/v1
    // for Ollama, https://api.openai.com/v1 for OpenAI): the endpoint is {base}/responses then.
    let server = ScriptServer::start(|_, _| {
        let body = "event: response.output_text.delta\n\
                    data: {\"type\":\"response.output_text.delta\",\"delta\":\"ok\",\"sequence_number\":0}\n\n\
                    event: response.completed\n\
                    data: {\"type\":\"response.completed\",\"response\":{},\"sequence_number\":1}\n\n";
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    for (base, path) in [
        ("/v1", "/v1/responses"),
        ("/v1/", "/v1/responses"),
        ("/proxy", "/proxy/v1/responses"),
        ("", "/v1/responses"),
    ] {
        let out = run(
            "openai_chat",
            &["--base-url", &server.url(base), "--prompt", "hi"],
            Stdin::Null,
        );
        assert_eq!(out.code(), Some(0), "{base}: {out:?}");
        let seen = server.requests();
        let line = &seen.last().expect("a request").line;
        assert_eq!(line, &format!("POST {path} HTTP/1.1"), "{base}");
    }
}

#[test]
fn openai_chat_base_url_without_a_key_talks_to_that_server_without_authorization() {
    // A local OpenAI-compatible server (llama.cpp, vLLM, Ollama) needs no key.
    let server = ScriptServer::start(|_, _| {
        let body = "event: response.output_text.delta\n\
                    data: {\"type\":\"response.output_text.delta\",\"delta\":\"local answer\",\"sequence_number\":0}\n\n\
                    event: response.completed\n\
                    data: {\"type\":\"response.completed\",\"response\":{},\"sequence_number\":1}\n\n";
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let out = run(
        "openai_chat",
        &["--base-url", &server.url(""), "--prompt", "hi"],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "local answer\n");
    let seen = server.requests();
    assert_eq!(seen.len(), 1, "{out:?}");
    assert_eq!(seen[0].header("authorization"), None);

    let both = run(
        "openai_chat",
        &["--mock", "--base-url", &server.url("")],
        Stdin::Null,
    );
    assert_eq!(both.code(), Some(2), "{both:?}");
    assert!(both.stderr_text().contains("--mock"), "{both:?}");
}

/// A server answering every request with `events` (a `text/event-stream` body, chunked) cut
/// into pieces of `piece` bytes, with a short pause between them.
fn openai_stream_server(events: &'static str, piece: usize) -> ScriptServer {
    ScriptServer::start(move |_, _| {
        let head = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\n\
                     Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n";
        let body = format!("{:x}\r\n{events}\r\n0\r\n\r\n", events.len());
        let mut pieces = vec![head.to_vec()];
        pieces.extend(body.as_bytes().chunks(piece).map(<[u8]>::to_vec));
        Reply::Pieces(pieces, Duration::from_millis(2))
    })
}

#[test]
fn openai_chat_prints_deltas_split_inside_characters_and_line_ends_once_in_order() {
    // Raw UTF-8 deltas, CRLF line ends, a keep-alive comment and an event with broken JSON,
    // delivered 3 bytes at a time so that characters and CRLFs straddle reads.
    let server = openai_stream_server(
        ": keep-alive\r\n\r\n\
         event: response.output_text.delta\r\n\
         data: {\"type\":\"response.output_text.delta\",\"delta\":\"caf\u{e9} \",\"sequence_number\":0}\r\n\r\n\
         event: response.output_text.delta\r\n\
         data: {\"type\":\"response.output_text.delta\",\"delta\":\"\u{65e5}\u{672c}\u{1F600}\",\"sequence_number\":1}\r\n\r\n\
         event: response.output_text.delta\r\n\
         data: {\"type\":\"response.output_text.delta\",\"delta\":\"broken\r\n\r\n\
         event: response.output_text.delta\r\n\
         data: {\"type\":\"response.output_text.delta\",\"delta\":\"!\",\"sequence_number\":3}\r\n\r\n\
         event: response.completed\r\n\
         data: {\"type\":\"response.completed\",\"response\":{},\"sequence_number\":4}\r\n\r\n",
        3,
    );
    let out = run_with_env(
        "openai_chat",
        &["--base-url", &server.url(""), "--prompt", "hi"],
        Stdin::Null,
        Some("sk-test"),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "caf\u{e9} \u{65e5}\u{672c}\u{1F600}!\n");
}

#[test]
fn openai_chat_prints_a_refusal() {
    // A refusal streams as response.refusal.delta instead of output_text: it is the answer.
    let server = openai_stream_server(
        "event: response.refusal.delta\n\
         data: {\"type\":\"response.refusal.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"I can't \",\"sequence_number\":0}\n\n\
         event: response.refusal.delta\n\
         data: {\"type\":\"response.refusal.delta\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"delta\":\"help with that.\",\"sequence_number\":1}\n\n\
         event: response.refusal.done\n\
         data: {\"type\":\"response.refusal.done\",\"item_id\":\"msg_1\",\"output_index\":0,\"content_index\":0,\"refusal\":\"I can't help with that.\",\"sequence_number\":2}\n\n\
         event: response.completed\n\
         data: {\"type\":\"response.completed\",\"response\":{},\"sequence_number\":3}\n\n",
        64,
    );
    let out = run_with_env(
        "openai_chat",
        &["--base-url", &server.url(""), "--prompt", "hi"],
        Stdin::Null,
        Some("sk-test"),
    );
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert_eq!(out.stdout_text(), "I can't help with that.\n");
}

#[test]
fn openai_chat_reports_the_api_error_message_of_a_non_200_answer() {
    let server = ScriptServer::start(|_, _| {
        let body = r#"{"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}"#;
        Reply::Bytes(
            format!(
                "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let out = run_with_env(
        "openai_chat",
        &["--base-url", &server.url(""), "--prompt", "hi"],
        Stdin::Null,
        Some("sk-wrong"),
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(
        out.stderr_text()
            .contains("the server answered 401: Incorrect API key provided"),
        "{out:?}"
    );
}

/// A proxy's HTML error page (nginx's 502): one stderr line per failure, not the page's lines.
fn html_502_server() -> ScriptServer {
    ScriptServer::start(|_, _| {
        let body = "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";
        Reply::Bytes(
            format!(
                "HTTP/1.1 502 Bad Gateway\r\nContent-Type: text/html\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    })
}

#[test]
fn openai_chat_and_sse_cat_report_an_html_error_page_on_one_line() {
    let server = html_502_server();
    let out = run_with_env(
        "openai_chat",
        &["--base-url", &server.url(""), "--prompt", "hi"],
        Stdin::Null,
        Some("sk-test"),
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    let stderr = out.stderr_text();
    let failure: Vec<&str> = stderr.lines().filter(|l| !l.contains("backend:")).collect();
    assert_eq!(failure.len(), 1, "{stderr}");
    assert!(
        failure[0].contains("502") && failure[0].contains("<title>502 Bad Gateway</title>"),
        "{stderr}"
    );

    let out = run(
        "sse_cat",
        &["--no-reconnect", &server.url("/events")],
        Stdin::Null,
    );
    assert_eq!(out.code(), Some(2), "{out:?}");
    let stderr = out.stderr_text();
    let failure: Vec<&str> = stderr
        .lines()
        .filter(|l| !l.contains("connecting to") && *l != "sse_cat: closed")
        .collect();
    assert_eq!(failure.len(), 1, "{stderr}");
    assert!(failure[0].contains("502"), "{stderr}");
}

#[test]
fn openai_chat_reports_response_failed() {
    let server = ScriptServer::start(|_, _| {
        let body = "event: response.output_text.delta\n\
                    data: {\"type\":\"response.output_text.delta\",\"delta\":\"partial\",\"sequence_number\":0}\n\n\
                    event: response.failed\n\
                    data: {\"type\":\"response.failed\",\"response\":{\"status\":\"failed\",\"instructions\":\"{\\\"message\\\":\\\"decoy\\\"}\",\"error\":{\"code\":\"server_error\",\"message\":\"The model crashed\"}},\"sequence_number\":1}\n\n";
        Reply::Bytes(
            format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
            .into_bytes(),
        )
    });
    let out = run_with_env(
        "openai_chat",
        &["--base-url", &server.url(""), "--prompt", "hi"],
        Stdin::Null,
        Some("sk-test"),
    );
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout_text(), "partial\n");
    assert!(
        out.stderr_text()
            .contains("the response failed: The model crashed"),
        "{out:?}"
    );
}

#[test]
fn openai_chat_stops_quietly_when_nobody_reads_its_output() {
    // `openai_chat --prompt hi | head -c 0`: the first answer text meets a closed pipe.
    let out = run_child(
        "openai_chat",
        &["--prompt", "hi"],
        Stdin::Null,
        None,
        StdoutReader::GoneAway,
    );
    let stderr = out.stderr_text();
    assert!(!stderr.contains("panicked"), "{out:?}");
    assert_eq!(out.code(), Some(0), "{out:?}");
    // The whole answer takes about 2 s to stream; the closed pipe is met at its first word.
    assert!(
        out.elapsed < Duration::from_millis(1_500),
        "kept streaming into a closed pipe: {out:?}"
    );
    for example in ["openai_chat", "sse_cat", "http_get"] {
        let help = run_child(
            example,
            &["--help"],
            Stdin::Null,
            None,
            StdoutReader::GoneAway,
        );
        assert_eq!(help.code(), Some(0), "{help:?}");
    }
}

// ---- bad URLs and unreachable hosts ------------------------------------------------------------

/// URLs no request can be made of: not a URL, another scheme, no host, a broken IPv6 literal, a
/// port out of range.
const BAD_URLS: [&str; 5] = [
    "not a url",
    "ftp://127.0.0.1/",
    "http://",
    "http://[::1/",
    "http://127.0.0.1:99999/",
];

/// A host name no resolver can answer (a 64-byte label): refused before any lookup.
fn unresolvable_url() -> String {
    format!("http://{}.example/", "a".repeat(64))
}

#[test]
fn http_get_exits_1_with_one_line_per_bad_url_and_fetches_the_rest() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("fine", "")));
    let good = server.url("/");
    let unresolvable = unresolvable_url();
    let mut args: Vec<&str> = BAD_URLS.to_vec();
    args.push(&unresolvable);
    args.push(&good);
    let out = run("http_get", &args, Stdin::Null);
    assert_eq!(out.code(), Some(1), "{out:?}");
    assert_eq!(out.stdout_text(), "fine", "{out:?}");
    let stderr = out.stderr_text();
    assert_eq!(stderr.lines().count(), BAD_URLS.len() + 1, "{stderr}");
    for (line, url) in stderr.lines().zip(BAD_URLS) {
        assert!(
            line.starts_with(&format!("http_get: {url}: invalid URL")),
            "{line:?}"
        );
    }
    assert!(
        stderr.lines().last().unwrap().contains("invalid address"),
        "{stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
}

#[test]
fn sse_cat_exits_2_on_a_bad_url_or_a_host_no_resolver_can_answer_even_when_reconnecting() {
    for url in BAD_URLS {
        let out = run("sse_cat", &[url], Stdin::Null);
        assert_eq!(out.code(), Some(2), "{url:?}: {out:?}");
        assert!(out.stderr_text().contains("invalid URL"), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
    let out = run("sse_cat", &[&unresolvable_url()], Stdin::Null);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stderr_text().contains("invalid address"), "{out:?}");
}

#[test]
fn openai_chat_refuses_a_base_url_it_cannot_put_the_endpoint_under() {
    // Appending "/v1/responses" to these would not name the endpoint: "http://" would become
    // "http:///v1/responses" (a request to a host called "v1"), and a query or fragment would
    // swallow the path.
    let addr = refused_address();
    let with_query = format!("http://{addr}/?key=1");
    let with_fragment = format!("http://{addr}/#top");
    let mut bases: Vec<&str> = BAD_URLS.to_vec();
    bases.push(&with_query);
    bases.push(&with_fragment);
    for base in bases {
        let out = run(
            "openai_chat",
            &["--base-url", base, "--prompt", "hi"],
            Stdin::Null,
        );
        assert_eq!(out.code(), Some(2), "{base:?}: {out:?}");
        assert!(out.stderr_text().contains("bad --base-url"), "{out:?}");
        assert!(out.stderr_text().contains("usage: "), "{out:?}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

#[test]
fn openai_chat_exits_1_with_the_reason_when_the_server_is_unreachable() {
    let refused = format!("http://{}", refused_address());
    let unresolvable = unresolvable_url();
    for (base, reason) in [
        (refused.as_str(), "refused"),
        (unresolvable.as_str(), "invalid address"),
    ] {
        let out = run(
            "openai_chat",
            &["--base-url", base, "--prompt", "hi"],
            Stdin::Null,
        );
        assert_eq!(out.code(), Some(1), "{base:?}: {out:?}");
        let stderr = out.stderr_text();
        assert!(stderr.contains(reason), "{stderr}");
        assert!(!stderr.contains("panicked"), "{stderr}");
        assert!(out.stdout.is_empty(), "{out:?}");
    }
}

// ---- signals_and_timers ------------------------------------------------------------------------

#[test]
fn signals_and_timers_help_prints_usage_and_bad_arguments_exit_2() {
    let out = run("signals_and_timers", &["--help"], Stdin::Null);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(
        out.stdout_text().starts_with("usage: signals_and_timers"),
        "{out:?}"
    );
    assert!(
        out.elapsed < Duration::from_millis(900),
        "--help ran the tour: {out:?}"
    );
    let out = run("signals_and_timers", &["--bogus"], Stdin::Null);
    assert_eq!(out.code(), Some(2), "{out:?}");
    assert!(out.stdout.is_empty(), "{out:?}");
    assert!(out.stderr_text().contains("--bogus"), "{out:?}");
}

#[test]
fn signals_and_timers_ticks_announces_only_changes_and_quits_after_a_second() {
    let out = run("signals_and_timers", &[], Stdin::Null);
    assert_eq!(out.code(), Some(0), "{out:?}");
    assert!(out.stderr.is_empty(), "{out:?}");
    assert!(
        out.elapsed >= Duration::from_millis(1_000),
        "quit after {:?}",
        out.elapsed
    );
    let stdout = out.stdout_text();
    // Each line but the last starts with "[   n ms] ".
    let events: Vec<&str> = stdout
        .lines()
        .filter_map(|line| line.split_once("] ").map(|(_, event)| event))
        .collect();
    let ticks: Vec<&str> = events
        .iter()
        .copied()
        .filter(|e| e.starts_with("tick "))
        .collect();
    // Five ticks of 200 ms fit before the 1,050 ms stop; a stalled machine may coalesce some.
    assert!((3..=5).contains(&ticks.len()), "{stdout}");
    let expected_ticks: Vec<String> = (1..=ticks.len()).map(|n| format!("tick {n}")).collect();
    assert_eq!(ticks, expected_ticks, "{stdout}");
    // The temperature (20 + n/2) changes on even ticks only, and only changes are announced,
    // each right after the tick that caused it.
    let mut expected = Vec::new();
    for n in 1..=ticks.len() {
        expected.push(format!("tick {n}"));
        if n % 2 == 0 {
            expected.push(format!("temperature is now {} °C", 20 + n / 2));
        }
    }
    expected.push("time is up, quitting".to_string());
    assert_eq!(events, expected, "{stdout}");
    assert_eq!(
        stdout.lines().last(),
        Some(
            format!(
                "loop finished with code 0; final temperature {} °C",
                20 + ticks.len() / 2
            )
            .as_str()
        ),
        "{stdout}"
    );
}

// ---- every example -----------------------------------------------------------------------------

#[test]
fn help_prints_usage_and_bad_arguments_exit_2_with_usage() {
    for example in ["openai_chat", "sse_cat", "http_get"] {
        let help = run(example, &["--help"], Stdin::Null);
        assert_eq!(help.code(), Some(0), "{help:?}");
        assert!(
            help.stdout_text()
                .starts_with(&format!("usage: {example} ")),
            "{help:?}"
        );
        let bad = run(example, &["--no-such-option"], Stdin::Null);
        assert_eq!(bad.code(), Some(2), "{bad:?}");
        assert!(bad.stderr_text().contains("usage: "), "{bad:?}");
        assert!(bad.stdout.is_empty(), "{bad:?}");
    }
}

// ---- running examples --------------------------------------------------------------------------

/// What a child process did.
struct Output {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    elapsed: Duration,
}

impl Output {
    fn code(&self) -> Option<i32> {
        self.status.code()
    }

    fn stdout_text(&self) -> String {
        String::from_utf8_lossy(&self.stdout).into_owned()
    }

    fn stderr_text(&self) -> String {
        String::from_utf8_lossy(&self.stderr).into_owned()
    }
}

impl std::fmt::Debug for Output {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Output")
            .field("status", &self.status)
            .field("stdout", &self.stdout_text())
            .field("stderr", &self.stderr_text())
            .field("elapsed", &self.elapsed)
            .finish()
    }
}

enum Stdin {
    Null,
    Bytes(Vec<u8>),
}

/// Runs an example without `OPENAI_API_KEY` (so `openai_chat` uses its offline mock).
fn run(example: &str, args: &[&str], stdin: Stdin) -> Output {
    run_with_env(example, args, stdin, None)
}

/// Runs `example` with `args`, `OPENAI_API_KEY` set to `api_key` (or removed), and kills it if
/// it outlives [`CHILD_DEADLINE`].
fn run_with_env(example: &str, args: &[&str], stdin: Stdin, api_key: Option<&str>) -> Output {
    run_child(example, args, stdin, api_key, StdoutReader::Reads)
}

/// Whether anyone reads the child's stdout.
#[derive(PartialEq)]
enum StdoutReader {
    Reads,
    /// The read end is closed at once (`example | head -c 0`): every write gets EPIPE.
    GoneAway,
}

fn run_child(
    example: &str,
    args: &[&str],
    stdin: Stdin,
    api_key: Option<&str>,
    reader: StdoutReader,
) -> Output {
    let mut command = Command::new(example_path(example));
    command
        .args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .env_remove("OPENAI_API_KEY")
        .env_remove("RUST_LOG");
    if let Some(key) = api_key {
        command.env("OPENAI_API_KEY", key);
    }
    command.stdin(match stdin {
        Stdin::Null => Stdio::null(),
        Stdin::Bytes(_) => Stdio::piped(),
    });
    let started = Instant::now();
    let mut child = command.spawn().expect("cannot start the example");
    if let (Stdin::Bytes(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
        // Written from a thread (a child that does not read must not block us); dropping the
        // pipe afterwards closes the child's stdin.
        std::thread::spawn(move || {
            let _ = pipe.write_all(&bytes);
        });
    }
    let stdout_pipe = child.stdout.take().expect("piped stdout");
    let stdout = if reader == StdoutReader::GoneAway {
        drop(stdout_pipe);
        std::thread::spawn(Vec::new)
    } else {
        drain(stdout_pipe)
    };
    let stderr = drain(child.stderr.take().expect("piped stderr"));
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for the example") {
            break status;
        }
        if started.elapsed() > CHILD_DEADLINE {
            let _ = child.kill();
            let status = child.wait().expect("waiting for the killed example");
            let output = Output {
                status,
                stdout: stdout.join().unwrap_or_default(),
                stderr: stderr.join().unwrap_or_default(),
                elapsed: started.elapsed(),
            };
            panic!("{example} {args:?} ran longer than {CHILD_DEADLINE:?}: {output:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    Output {
        status,
        stdout: stdout.join().expect("stdout reader"),
        stderr: stderr.join().expect("stderr reader"),
        elapsed: started.elapsed(),
    }
}

fn drain(mut pipe: impl Read + Send + 'static) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        bytes
    })
}

/// The built example, after building all examples once per test binary.
fn example_path(example: &str) -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    let dir = BUILT.get_or_init(|| {
        let manifest_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let status = Command::new(env!("CARGO"))
            .args(["build", "--examples", "--quiet"])
            .current_dir(&manifest_dir)
            .status()
            .expect("cannot run cargo build --examples");
        assert!(status.success(), "cargo build --examples failed: {status}");
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .map(|dir| manifest_dir.join(dir)) // a relative target dir is relative to the manifest
            .unwrap_or_else(|| manifest_dir.join("target"));
        target.join("debug").join("examples")
    });
    dir.join(format!("{example}{}", std::env::consts::EXE_SUFFIX))
}

/// A loopback HTTPS server on a thread with a certificate from its own test CA: answers every
/// connection's first request with `reply`.
struct TlsServer {
    port: u16,
    ca_pem: String,
}

impl TlsServer {
    fn start(reply: &'static [u8]) -> TlsServer {
        use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, IsCa, KeyPair};
        use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

        let mut ca_params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate().expect("CA key"))
            .expect("CA certificate");
        let leaf_key = KeyPair::generate().expect("leaf key");
        let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
            .expect("leaf params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf certificate");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(leaf_key.serialize_der()));
        let config = rustls::ServerConfig::builder_with_provider(std::sync::Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("protocol versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server certificate");
        let config = std::sync::Arc::new(config);

        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("local address").port();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(tcp) = stream else { continue };
                let config = config.clone();
                std::thread::spawn(move || {
                    let Ok(connection) = rustls::ServerConnection::new(config) else {
                        return;
                    };
                    let mut tls = rustls::StreamOwned::new(connection, tcp);
                    let mut head = Vec::new();
                    let mut byte = [0];
                    while !head.ends_with(b"\r\n\r\n") {
                        match tls.read(&mut byte) {
                            Ok(1) => head.push(byte[0]),
                            _ => return, // handshake refused by the client, or closed
                        }
                    }
                    let _ = tls.write_all(reply).and_then(|()| tls.flush());
                });
            }
        });
        TlsServer {
            port,
            ca_pem: ca.pem(),
        }
    }
}

/// An address where nothing listens (a port just released by the OS).
fn refused_address() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("local address")
}
