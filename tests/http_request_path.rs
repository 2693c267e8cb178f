//! The keep-alive request path's shortcuts (eleventh review round): what a request reuses from
//! the one before it (the emptied header map, the host's `Host` value), and the header checks
//! that are not repeated for a request already checked, must never change what goes on the wire.

mod support;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

use kdnet::EventLoop;
use kdnet::network::http::{HttpClient, HttpError, HttpRequest, HttpResponse};
use support::{Reply, ScriptServer, ok_response, wait_until};

type Outcome = Rc<RefCell<Option<Result<HttpResponse, HttpError>>>>;

fn send(client: &HttpClient, request: HttpRequest) -> Outcome {
    let out: Outcome = Rc::default();
    let o = out.clone();
    client.send(request, move |r| *o.borrow_mut() = Some(r));
    out
}

fn wait(ev: &mut EventLoop, out: &Outcome) -> Result<HttpResponse, HttpError> {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    wait_until(ev, || {
        out.borrow().is_some() || std::time::Instant::now() > deadline
    });
    out.borrow_mut().take().expect("no outcome within 20 s")
}

/// A request sent after one that had fields of its own (and after the session's defaults
/// changed) carries exactly the session's current defaults: nothing of the earlier request's
/// map, which the client keeps emptied for the next one.
#[test]
fn a_request_after_one_with_its_own_fields_carries_only_the_defaults() {
    let server = ScriptServer::start(|_, _| Reply::Bytes(ok_response("ok", "")));
    let mut ev = EventLoop::new().unwrap();
    let client = HttpClient::new().unwrap();

    let first = HttpRequest::get(&server.url("/1"))
        .unwrap()
        .with_header("X-First", "only-once")
        .with_header("Authorization", "Bearer first-secret")
        .with_header("User-Agent", "first-agent");
    let out = send(&client, first);
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    let out = send(&client, HttpRequest::get(&server.url("/2")).unwrap());
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    client.update_session(|session| {
        session.set_default_header("X-Default", "second-default");
        session.set_user_agent("agent/3");
    });
    let out = send(&client, HttpRequest::get(&server.url("/3")).unwrap());
    assert_eq!(wait(&mut ev, &out).unwrap().status(), 200);

    let seen = server.requests();
    assert_eq!(seen.len(), 3);
    assert_eq!(seen[0].header("X-First"), Some("only-once"));
    assert_eq!(seen[0].header("User-Agent"), Some("first-agent"));
    for later in &seen[1..] {
        assert_eq!(later.header("X-First"), None, "{later:?}");
        assert_eq!(later.header("Authorization"), None, "{later:?}");
    }
    let names = |r: &support::SeenRequest| -> Vec<String> {
        r.headers
            .iter()
            .map(|(n, _)| n.to_ascii_lowercase())
            .collect()
    };
    assert_eq!(
        names(&seen[1]),
        ["user-agent", "accept", "host", "accept-encoding"]
    );
    assert!(seen[1].header("User-Agent").unwrap().starts_with("kdnet/"));
    assert_eq!(seen[2].header("User-Agent"), Some("agent/3"));
    assert_eq!(seen[2].header("X-Default"), Some("second-default"));
    assert_eq!(
        names(&seen[2]),
        // (`set_user_agent` replaces the field: it moves to the end of the defaults.)
        [
            "accept",
            "x-default",
            "user-agent",
            "host",
            "accept-encoding"
        ]
    );
}
