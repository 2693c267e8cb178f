//! Loopback servers for the model-based HTTP tests: plain or TLS (the test PKI's server
//! certificate, good for `localhost`, `127.0.0.1` and `::1`), one thread per connection,
//! reading requests with [`read_request`](super::read_request).
#![allow(dead_code)]

use std::io::{BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};

/// A served connection's byte stream: a `TcpStream`, or rustls over one.
pub trait Stream: Read + Write + Send {
    /// Ends the stream cleanly: over TLS with a `close_notify` first (without one, the end of a
    /// close-delimited body is a truncation).
    fn finish(&mut self);
}

impl Stream for TcpStream {
    fn finish(&mut self) {
        let _ = self.shutdown(Shutdown::Both);
    }
}

impl Stream for rustls::StreamOwned<rustls::ServerConnection, TcpStream> {
    fn finish(&mut self) {
        self.conn.send_close_notify();
        let _ = self.flush();
        let _ = self.sock.shutdown(Shutdown::Both);
    }
}

/// Listens with `listener` and calls `serve(reader, connection_serial)` on
/// a thread of its own for each connection, after a TLS handshake (server side, the test PKI's
/// server certificate) when `tls`. Write through `reader.get_mut()`. Returns the bound address.
pub fn listen<F>(listener: TcpListener, tls: bool, serve: F) -> SocketAddr
where
    F: Fn(&mut BufReader<Box<dyn Stream>>, u64) + Send + Sync + 'static,
{
    let addr = listener.local_addr().unwrap();
    let config = tls.then(|| {
        let pki = super::certs::test_pki();
        kdnet::network::TlsServerConfig::from_pem(
            pki.server_cert_pem.as_bytes(),
            pki.server_key_pem.as_bytes(),
        )
        .unwrap()
    });
    let serve = std::sync::Arc::new(serve);
    std::thread::spawn(move || {
        for (serial, tcp) in (0u64..).zip(listener.incoming()) {
            let Ok(tcp) = tcp else { continue };
            let (config, serve) = (config.clone(), std::sync::Arc::clone(&serve));
            std::thread::spawn(move || {
                let stream: Box<dyn Stream> = match config {
                    Some(config) => {
                        let Ok(conn) = rustls::ServerConnection::new(config) else {
                            return;
                        };
                        Box::new(rustls::StreamOwned::new(conn, tcp))
                    }
                    None => Box::new(tcp),
                };
                let mut reader = BufReader::new(stream);
                serve(&mut reader, serial);
            });
        }
    });
    addr
}

/// Writes `bytes` to the connection and flushes; false when the peer is gone.
pub fn write_all(reader: &mut BufReader<Box<dyn Stream>>, bytes: &[u8]) -> bool {
    let stream = reader.get_mut();
    stream
        .write_all(bytes)
        .and_then(|()| stream.flush())
        .is_ok()
}

/// A listener on 127.0.0.1 whose port is refused on `::1` (a socket bound there that never
/// listens, kept for the process): `localhost`, which resolves to `::1` first, then reaches it
/// only after a refused connect, whatever else runs on the machine.
pub fn ipv4_only_listener() -> TcpListener {
    use socket2::{Domain, Socket, Type};
    loop {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let v6 = Socket::new(Domain::IPV6, Type::STREAM, None).unwrap();
        let at: SocketAddr = (std::net::Ipv6Addr::LOCALHOST, port).into();
        if v6.bind(&at.into()).is_ok() {
            std::mem::forget(v6);
            return listener;
        }
    }
}

/// A listener on 127.0.0.1 whose accept queue is full (a backlog of 0, filled by connections
/// never accepted), so that a further connect's SYN is dropped and the connect never completes:
/// for connect timeouts. Keep the returned sockets for as long as it is used.
pub fn full_listener() -> (SocketAddr, Vec<socket2::Socket>) {
    use socket2::{Domain, Socket, Type};
    let full = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    let any: SocketAddr = "127.0.0.1:0".parse().unwrap();
    full.bind(&any.into()).unwrap();
    full.listen(0).unwrap();
    let addr = full.local_addr().unwrap().as_socket().unwrap();
    let mut held = vec![full];
    for _ in 0..4 {
        let filler = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
        filler.set_nonblocking(true).unwrap();
        let _ = filler.connect(&addr.into());
        held.push(filler);
    }
    // Give the fillers' handshakes time to fill the queue.
    std::thread::sleep(std::time::Duration::from_millis(100));
    (addr, held)
}

/// Reads what comes and throws it away until the peer closes or `hold` passes (then
/// closes): a server that says nothing, or lets a refused client read its alert rather than
/// a reset (which unread bytes at the close would send).
fn drain(tcp: &mut TcpStream, hold: std::time::Duration) {
    let _ = tcp.set_read_timeout(Some(hold));
    let _ = std::io::copy(&mut Read::by_ref(tcp).take(1 << 24), &mut std::io::sink());
}

/// Accepts connections and never answers: each is read (what comes thrown away) until the
/// peer closes or `hold` passes, then closed. For TLS handshake timeouts: a ClientHello that
/// gets no answer.
pub fn silent(listener: TcpListener, hold: std::time::Duration) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            std::thread::spawn(move || drain(&mut tcp, hold));
        }
    });
    addr
}

/// A TLS server (the test PKI's server certificate) that answers each ClientHello with its
/// first handshake record only (the ServerHello: no certificate follows), then says nothing
/// until the peer closes or `hold` passes. For TLS handshake timeouts mid-handshake.
pub fn stalls_mid_handshake(listener: TcpListener, hold: std::time::Duration) -> SocketAddr {
    let addr = listener.local_addr().unwrap();
    let pki = super::certs::test_pki();
    let config = kdnet::network::TlsServerConfig::from_pem(
        pki.server_cert_pem.as_bytes(),
        pki.server_key_pem.as_bytes(),
    )
    .unwrap();
    std::thread::spawn(move || {
        for tcp in listener.incoming() {
            let Ok(mut tcp) = tcp else { continue };
            let config = config.clone();
            std::thread::spawn(move || {
                let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let _ = tcp.set_read_timeout(Some(hold));
                while !conn.wants_write() {
                    match conn.read_tls(&mut tcp) {
                        Ok(0) | Err(_) => return,
                        Ok(_) => {}
                    }
                    if conn.process_new_packets().is_err() {
                        return;
                    }
                }
                let mut flight = Vec::new();
                while conn.wants_write() {
                    if conn.write_tls(&mut flight).is_err() {
                        return;
                    }
                }
                // A record: type, version (2 bytes), length (2 bytes), then the length's bytes.
                let first = flight.get(3..5).map_or(flight.len(), |l| {
                    5 + usize::from(u16::from_be_bytes([l[0], l[1]]))
                });
                if tcp.write_all(&flight[..first.min(flight.len())]).is_err() {
                    return;
                }
                drain(&mut tcp, hold);
            });
        }
    });
    addr
}

/// Like [`listen`] with TLS under `config` (one asking for client certificates, say), the
/// handshake done before `serve(reader, serial, client_certificate)` (the DER of the
/// certificate the client presented, if any). A handshake that fails calls
/// `refused(serial, error)` once the alert went out, then reads the connection until the
/// client closes (so that it reads the alert, not a reset).
pub fn listen_tls_with<F, R>(
    listener: TcpListener,
    config: std::sync::Arc<rustls::ServerConfig>,
    serve: F,
    refused: R,
) -> SocketAddr
where
    F: Fn(&mut BufReader<Box<dyn Stream>>, u64, Option<Vec<u8>>) + Send + Sync + 'static,
    R: Fn(u64, std::io::Error) + Send + Sync + 'static,
{
    let addr = listener.local_addr().unwrap();
    let (serve, refused) = (std::sync::Arc::new(serve), std::sync::Arc::new(refused));
    std::thread::spawn(move || {
        for (serial, tcp) in (0u64..).zip(listener.incoming()) {
            let Ok(mut tcp) = tcp else { continue };
            let (config, serve, refused) = (
                config.clone(),
                std::sync::Arc::clone(&serve),
                std::sync::Arc::clone(&refused),
            );
            std::thread::spawn(move || {
                let Ok(mut conn) = rustls::ServerConnection::new(config) else {
                    return;
                };
                let hold = std::time::Duration::from_secs(10);
                let _ = tcp.set_read_timeout(Some(hold));
                while conn.is_handshaking() {
                    if let Err(e) = conn.complete_io(&mut tcp) {
                        refused(serial, e);
                        drain(&mut tcp, hold);
                        return;
                    }
                }
                let _ = tcp.set_read_timeout(None);
                let presented = conn
                    .peer_certificates()
                    .and_then(|chain| chain.first())
                    .map(|c| c.to_vec());
                let stream: Box<dyn Stream> = Box::new(rustls::StreamOwned::new(conn, tcp));
                let mut reader = BufReader::new(stream);
                serve(&mut reader, serial, presented);
            });
        }
    });
    addr
}
