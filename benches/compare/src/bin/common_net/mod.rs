//! Plumbing shared by the network workloads (w2, w3, w4): child processes, CPU and fd limits,
//! the event stream the servers send, and small HTTP helpers for the reference loops.

#![allow(dead_code)] // each binary uses a different subset

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::time::Duration;

/// CPU time (user + system, all threads) this process has used so far, from `getrusage`
/// (microsecond resolution; the child server processes are not included).
pub fn cpu_time() -> Duration {
    // SAFETY: `getrusage` only writes the struct we pass.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) };
    assert_eq!(rc, 0, "getrusage failed");
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

/// Raises the soft open-file limit to the hard one; returns the new soft limit.
pub fn raise_nofile_limit() -> u64 {
    // SAFETY: plain libc calls on a local struct.
    unsafe {
        let mut lim: libc::rlimit = std::mem::zeroed();
        assert_eq!(
            libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim),
            0,
            "getrlimit"
        );
        lim.rlim_cur = lim.rlim_max;
        assert_eq!(libc::setrlimit(libc::RLIMIT_NOFILE, &lim), 0, "setrlimit");
        lim.rlim_cur
    }
}

/// A non-blocking loopback listener whose accept queue holds `backlog` connections (capped by
/// `net.core.somaxconn`). std and mio listen with a backlog of 128; workload 3 opens up to 5,000
/// streams at once, and an overflowing queue made connects fail at random.
pub fn deep_backlog_listener(backlog: i32) -> mio::net::TcpListener {
    use std::os::fd::AsRawFd;
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    // SAFETY: `listener` owns a valid listening socket for the whole call; on Linux a second
    // `listen` on it only changes the queue length.
    let rc = unsafe { libc::listen(listener.as_raw_fd(), backlog) };
    assert_eq!(rc, 0, "listen: {}", std::io::Error::last_os_error());
    listener.set_nonblocking(true).expect("nonblocking");
    mio::net::TcpListener::from_std(listener)
}

/// Number of threads of this process (to notice a peer quietly using helper threads).
pub fn thread_count() -> usize {
    std::fs::read_dir("/proc/self/task")
        .map(|d| d.count())
        .unwrap_or(0)
}

/// A child process running this same binary with `args`, stdin and stdout piped, stderr
/// inherited. It exits when its stdin closes (see [`exit_when_stdin_closes`]).
pub struct SelfChild {
    child: Child,
    stdout: BufReader<ChildStdout>,
}

impl SelfChild {
    pub fn spawn(args: &[&str]) -> SelfChild {
        let exe = std::env::current_exe().expect("current exe");
        let mut child = Command::new(exe)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn child process");
        let stdout = BufReader::new(child.stdout.take().expect("child stdout"));
        SelfChild { child, stdout }
    }

    /// Next line the child printed on stdout (panics if it exited).
    pub fn read_line(&mut self) -> String {
        let mut line = String::new();
        let n = self.stdout.read_line(&mut line).expect("read child stdout");
        assert!(n > 0, "child process exited early");
        line.trim_end().to_owned()
    }

    /// Writes one line to the child's stdin.
    pub fn write_line(&mut self, line: &str) {
        let stdin = self.child.stdin.as_mut().expect("child stdin");
        writeln!(stdin, "{line}").expect("write child stdin");
        stdin.flush().expect("flush child stdin");
    }

    /// Closes stdin (the child's signal to exit) and waits for it.
    pub fn finish(mut self) {
        drop(self.child.stdin.take());
        let status = self.child.wait().expect("wait child");
        assert!(status.success(), "child process failed: {status}");
    }
}

/// In a child: exits the process (code 0) once the parent closes our stdin.
pub fn exit_when_stdin_closes() {
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().lock().read_to_end(&mut sink);
        std::process::exit(0);
    });
}

/// One OpenAI-like streaming event of about 170 bytes, with an id.
pub fn openai_event(i: usize, out: &mut Vec<u8>) {
    const WORDS: [&str; 8] = [
        "Hello",
        " world",
        ", this",
        " is a",
        " streamed",
        " answer",
        " token",
        " by token.",
    ];
    let word = WORDS[i % WORDS.len()];
    write!(
        out,
        "id: {i}\nevent: response.output_text.delta\ndata: {{\"type\":\"response.output_text.delta\",\"item_id\":\"msg_67ab3f9e1c\",\"output_index\":0,\"content_index\":0,\"delta\":\"{word}\"}}\n\n"
    )
    .expect("write to Vec");
}

/// `count` events back to back; also returns the total of their data lengths.
pub fn openai_stream(count: usize) -> (Vec<u8>, u64) {
    let mut out = Vec::with_capacity(count * 180);
    let mut data_total = 0u64;
    for i in 0..count {
        let start = out.len();
        openai_event(i, &mut out);
        let text = std::str::from_utf8(&out[start..]).expect("utf-8");
        let data = text
            .lines()
            .find_map(|l| l.strip_prefix("data: "))
            .expect("data line");
        data_total += data.len() as u64;
    }
    (out, data_total)
}

/// The response head every SSE server of these workloads sends (body runs until close).
pub const SSE_RESPONSE_HEAD: &[u8] = b"HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nCache-Control: no-cache\r\nConnection: close\r\n\r\n";

/// Reads from `stream` until a complete request head (`\r\n\r\n`) arrived; false on EOF.
pub fn read_request_head(stream: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    let mut seen = Vec::new();
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => return false,
            Ok(n) => {
                seen.extend_from_slice(&buf[..n]);
                if memchr::memmem::find(&seen, b"\r\n\r\n").is_some() {
                    return true;
                }
            }
        }
    }
}

/// A current-thread tokio runtime (the peers' documented single-threaded setup).
pub fn current_thread_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// Median of `samples` (copied).
pub fn median_of_samples(samples: &[f64]) -> f64 {
    let mut copy = samples.to_vec();
    kdnet_compare::median(&mut copy)
}

/// Measures every subject once untimed (page faults, first-use paths, allocator), then
/// `reps()` rounds in which the subjects take turns, so a burst of load from other processes on
/// this shared machine hits all of them alike. Returns each subject's median pair of figures.
pub fn take_turns<R: Copy>(
    chosen: &[(&'static str, R)],
    mut measure: impl FnMut(&str, R) -> (f64, f64),
) -> Vec<(f64, f64)> {
    for (name, run) in chosen {
        measure(name, *run);
    }
    let mut firsts = vec![Vec::new(); chosen.len()];
    let mut seconds = vec![Vec::new(); chosen.len()];
    for _ in 0..kdnet_compare::reps() {
        for (i, (name, run)) in chosen.iter().enumerate() {
            let (a, b) = measure(name, *run);
            firsts[i].push(a);
            seconds[i].push(b);
        }
    }
    firsts
        .iter()
        .zip(&seconds)
        .map(|(a, b)| (median_of_samples(a), median_of_samples(b)))
        .collect()
}
