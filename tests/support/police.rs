//! A minimal HTTP/2 server, written frame by frame, that polices pings as
//! a gRPC server does: hyper's and h2's servers answer every ping and never
//! send `GOAWAY ENHANCE_YOUR_CALM "too_many_pings"`.

use std::{net::SocketAddr, time::Duration};

use http::Uri;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpStream,
    sync::watch,
    time::Instant,
};

use super::server::{listen, Running};

/// A minimal HTTP/2 server that answers pings, and sends GOAWAY
/// ENHANCE_YOUR_CALM with debug data `debug` (a gRPC server's is
/// `too_many_pings`) and closes when one comes less than `min` after the
/// connection opened or after the previous ping, as a gRPC server's ping
/// policy does. It counts the pings it answered, per connection.
pub struct PingPolice {
    addr: SocketAddr,
    answered: watch::Sender<Vec<usize>>,
    _running: Running,
}

const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const GOAWAY: u8 = 0x7;
const ACK: u8 = 0x1;
const ENHANCE_YOUR_CALM: u32 = 0xb;

impl PingPolice {
    pub fn start(min: Duration, debug: &'static [u8]) -> Self {
        let listener = listen(([127, 0, 0, 1], 0).into(), 16);
        let addr = listener.local_addr().unwrap();
        let answered = watch::Sender::new(Vec::new());
        let counts = answered.clone();
        let running = Running::accept(listener, move |tcp, _| {
            let mut conn = 0;
            counts.send_modify(|answered| {
                conn = answered.len();
                answered.push(0);
            });
            Some(police(tcp, min, debug, counts.clone(), conn))
        });
        Self {
            addr,
            answered,
            _running: running,
        }
    }

    pub fn uri(&self) -> Uri {
        format!("http://{}", self.addr).parse().unwrap()
    }

    pub fn connections(&self) -> usize {
        self.answered.borrow().len()
    }

    /// Until connection `conn` (from 0) has had `n` pings answered.
    pub async fn until_answered(&self, conn: usize, n: usize) {
        let mut rx = self.answered.subscribe();
        let _ = rx.wait_for(|answered| answered.get(conn) >= Some(&n)).await;
    }
}

async fn police(
    mut tcp: TcpStream,
    min: Duration,
    debug: &'static [u8],
    answered: watch::Sender<Vec<usize>>,
    conn: usize,
) {
    let mut last = Instant::now();
    let mut preface = [0; 24];
    if tcp.read_exact(&mut preface).await.is_err() {
        return;
    }
    assert_eq!(&preface, b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n");
    let _ = tcp.write_all(&frame(SETTINGS, 0, &[])).await;
    loop {
        let mut head = [0; 9];
        if tcp.read_exact(&mut head).await.is_err() {
            return;
        }
        let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
        let mut payload = vec![0; len];
        if tcp.read_exact(&mut payload).await.is_err() {
            return;
        }
        let reply = match (head[3], head[4] & ACK) {
            (SETTINGS, 0) => frame(SETTINGS, ACK, &[]),
            (PING, 0) if last.elapsed() < min => {
                let mut goaway = 0_u32.to_be_bytes().to_vec(); // last stream id
                goaway.extend(ENHANCE_YOUR_CALM.to_be_bytes());
                goaway.extend(debug);
                let _ = tcp.write_all(&frame(GOAWAY, 0, &goaway)).await;
                return;
            }
            (PING, 0) => {
                last = Instant::now();
                answered.send_modify(|answered| answered[conn] += 1);
                frame(PING, ACK, &payload)
            }
            _ => continue,
        };
        if tcp.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// An HTTP/2 frame on stream 0.
fn frame(kind: u8, flags: u8, payload: &[u8]) -> Vec<u8> {
    let len = u32::try_from(payload.len()).unwrap().to_be_bytes();
    let mut frame = vec![len[1], len[2], len[3], kind, flags, 0, 0, 0, 0];
    frame.extend_from_slice(payload);
    frame
}
