//! A TCP relay on loopback in front of a real server that, when armed,
//! cuts a connection in the middle of what the server sends: the fault an
//! object store's GET meets when a proxy restarts or a backend times out.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::Duration;

pub struct CutRelay {
    addr: SocketAddr,
    state: Arc<State>,
}

#[derive(Default)]
struct State {
    /// Cuts still to make; `usize::MAX` cuts every connection it may.
    cuts_left: AtomicUsize,
    /// Bytes from the server a connection passes on after being armed,
    /// before it is cut.
    cut_after: AtomicUsize,
    cuts_made: AtomicUsize,
    stopping: AtomicBool,
}

impl CutRelay {
    /// Relays every connection made to it to `target`.
    pub fn start(target: SocketAddr) -> CutRelay {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the relay");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = Arc::clone(&state);
        thread::spawn(move || {
            for client in listener.incoming() {
                if shared.stopping.load(Ordering::SeqCst) {
                    return;
                }
                let Ok(client) = client else { continue };
                let Ok(server) = TcpStream::connect_timeout(&target, Duration::from_secs(5)) else {
                    continue;
                };
                relay(client, server, Arc::clone(&shared));
            }
        });
        CutRelay { addr, state }
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, the next `cuts` connections to pass on more than
    /// `after` bytes from the server while armed are cut after those bytes
    /// (`usize::MAX`: every one). A kept-alive connection counts from the
    /// first time it saw the relay armed, so arm before the response to cut
    /// and well below its size.
    pub fn arm(&self, cuts: usize, after: usize) {
        self.state.cut_after.store(after, Ordering::SeqCst);
        self.state.cuts_left.store(cuts, Ordering::SeqCst);
    }

    pub fn disarm(&self) {
        self.state.cuts_left.store(0, Ordering::SeqCst);
    }

    pub fn cuts_made(&self) -> usize {
        self.state.cuts_made.load(Ordering::SeqCst)
    }
}

impl Drop for CutRelay {
    fn drop(&mut self) {
        self.state.stopping.store(true, Ordering::SeqCst);
        // Wakes the accept loop so it sees the flag.
        let _ = TcpStream::connect(self.addr);
    }
}

/// Two threads per connection, one each way; each ends when its side ends.
fn relay(client: TcpStream, server: TcpStream, state: Arc<State>) {
    let (mut client_in, mut server_out) =
        (client.try_clone().unwrap(), server.try_clone().unwrap());
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        while let Ok(n @ 1..) = client_in.read(&mut buf) {
            if server_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = server_out.shutdown(Shutdown::Write);
    });
    let (mut server_in, mut client_out) = (server, client);
    thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        // Bytes passed on while armed, since this connection first saw it so.
        let mut since_armed: Option<usize> = None;
        while let Ok(n @ 1..) = server_in.read(&mut buf) {
            if state.cuts_left.load(Ordering::SeqCst) > 0 {
                let passed = since_armed.get_or_insert(0);
                let after = state.cut_after.load(Ordering::SeqCst);
                if *passed + n > after && take_cut(&state) {
                    let _ = client_out.write_all(&buf[..after.saturating_sub(*passed)]);
                    state.cuts_made.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                *passed += n;
            }
            if client_out.write_all(&buf[..n]).is_err() {
                break;
            }
        }
        let _ = client_out.shutdown(Shutdown::Both);
        let _ = server_in.shutdown(Shutdown::Both);
    });
}

/// Claims one of the cuts left, if any.
fn take_cut(state: &State) -> bool {
    state
        .cuts_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |left| match left {
            0 => None,
            usize::MAX => Some(usize::MAX),
            left => Some(left - 1),
        })
        .is_ok()
}
