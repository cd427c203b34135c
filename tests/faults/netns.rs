//! Black holes: an address whose SYNs vanish, so a connect hangs until the
//! client gives up, and that can be healed into a reachable address.
//!
//! The real one is a private network namespace: a veth pair whose host end
//! has `10.a.b.1/30` and whose peer end, moved into the namespace, is up but
//! has no address. A permanent neighbour entry gives `10.a.b.2` the peer's
//! MAC, so there is no ARP failure either: the SYN is delivered to the
//! namespace, which drops it, and nothing comes back. (This machine has no
//! `sch_netem` and no nftables, so `tc … netem loss 100%` and drop rules are
//! out.) Healing adds `10.a.b.2` to the host end, which makes it a local
//! address a listener can bind.
//!
//! Where no namespace can be made (not root, no `ip`), the fallback is a
//! listener on 127.0.0.1 with a full accept backlog that never accepts: the
//! kernel drops further SYNs. It says so loudly, and with
//! `REDIAL_REQUIRE_NETNS=1` (CI, as root) it fails instead.
//! `REDIAL_BLACK_HOLE=backlog` uses the fallback on purpose.

use std::{
    net::{Ipv4Addr, SocketAddr},
    process::Command,
    sync::atomic::{AtomicU32, Ordering},
    time::Duration,
};

use tokio::{
    net::{TcpListener, TcpSocket, TcpStream},
    time::timeout,
};

/// How long a probe connect must hang to call the hole a black hole.
const PROBE: Duration = Duration::from_millis(300);
/// The port clients dial in the namespace black hole; any port is dropped.
const PORT: u16 = 8080;

/// An address that swallows SYNs until healed.
pub enum BlackHole {
    Netns(Netns),
    Backlog(Backlog),
}

impl BlackHole {
    /// A black hole, checked to really hang a connect.
    ///
    /// # Panics
    ///
    /// When neither kind can be made, or with `REDIAL_REQUIRE_NETNS=1` when
    /// no namespace can be made.
    pub async fn new() -> Self {
        if std::env::var("REDIAL_BLACK_HOLE").as_deref() != Ok("backlog") {
            match Self::netns().await {
                Ok(hole) => return hole,
                Err(why) => fallback_warning(&why),
            }
        }
        Self::backlog().await
    }

    /// The namespace kind, checked to hang a connect; `Err` says why it
    /// cannot be made here.
    pub async fn netns() -> Result<Self, String> {
        let hole = Self::Netns(Netns::create()?);
        hole.check_hangs().await;
        Ok(hole)
    }

    /// The full-backlog kind, checked to hang a connect.
    pub async fn backlog() -> Self {
        let hole = Self::Backlog(Backlog::create().await);
        hole.check_hangs().await;
        hole
    }

    /// Which kind this is, for the report.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Netns(_) => "netns",
            Self::Backlog(_) => "backlog",
        }
    }

    /// The address whose SYNs vanish.
    pub fn addr(&self) -> SocketAddr {
        match self {
            Self::Netns(netns) => (netns.peer, PORT).into(),
            Self::Backlog(backlog) => backlog.addr,
        }
    }

    /// Makes the address reachable: a listener on it, and the peers of
    /// connections that are not the client's (the backlog's fillers), for
    /// the server to ignore.
    pub fn heal(&mut self) -> (TcpListener, Vec<SocketAddr>) {
        let addr = self.addr();
        match self {
            Self::Netns(netns) => {
                ip(&[
                    "addr",
                    "add",
                    &format!("{}/32", netns.peer),
                    "dev",
                    &netns.host_if,
                ])
                .expect("make the black hole's address local");
                let socket = TcpSocket::new_v4().unwrap();
                socket.bind(addr).expect("bind the healed address");
                (socket.listen(64).unwrap(), Vec::new())
            }
            Self::Backlog(backlog) => {
                let fillers = backlog.fillers.drain(..);
                let peers = fillers.map(|s| s.local_addr().unwrap()).collect();
                (backlog.listener.take().expect("healed twice"), peers)
            }
        }
    }

    async fn check_hangs(&self) {
        let probe = timeout(PROBE, TcpStream::connect(self.addr())).await;
        assert!(
            probe.is_err(),
            "the {} black hole at {} did not hang a connect: {probe:?}",
            self.kind(),
            self.addr()
        );
    }
}

/// Says loudly that the real black hole is not tested, or fails with
/// `REDIAL_REQUIRE_NETNS=1`.
pub fn fallback_warning(why: &str) {
    assert!(
        std::env::var("REDIAL_REQUIRE_NETNS").as_deref() != Ok("1"),
        "REDIAL_REQUIRE_NETNS=1, but no network namespace could be made: {why}"
    );
    eprintln!(
        "\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n\
         !! faults: NO NETWORK NAMESPACE for the black hole ({why}).\n\
         !! Falling back to a full accept backlog on 127.0.0.1.\n\
         !! Run as root with iproute2 (CI does, with REDIAL_REQUIRE_NETNS=1)\n\
         !! to test a real SYN black hole.\n\
         !!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!!\n"
    );
}

// ===== Netns =====

/// A network namespace with a veth pair into it; removed on drop.
pub struct Netns {
    ns: String,
    host_if: String,
    peer: Ipv4Addr,
}

/// Numbers the black holes of this process, for unique names and subnets.
static NEXT: AtomicU32 = AtomicU32::new(0);

impl Netns {
    /// The namespace's name, as `ip netns list` shows it.
    pub fn name(&self) -> &str {
        &self.ns
    }

    /// Makes the namespace, the veth pair and the neighbour entry; on any
    /// failure, removes what was made and says why.
    pub fn create() -> Result<Self, String> {
        let n = NEXT.fetch_add(1, Ordering::Relaxed) % 64;
        let pid = std::process::id();
        // A /24 per process (from its pid), a /30 per black hole in it.
        let (a, b, c) = (64 + (pid >> 8) % 128, pid & 0xff, n * 4);
        let octet = |x: u32| u8::try_from(x).unwrap();
        let host = Ipv4Addr::new(10, octet(a), octet(b), octet(c + 1));
        let peer = Ipv4Addr::new(10, octet(a), octet(b), octet(c + 2));
        let mac = format!("02:52:44:{a:02x}:{b:02x}:{:02x}", c + 2);
        let netns = Self {
            ns: format!("redial-faults-{pid}-{n}"),
            host_if: format!("rdh{pid}x{n}"),
            peer,
        };
        let peer_if = format!("rdp{pid}x{n}");
        let (ns, host_if) = (&netns.ns, &netns.host_if);
        ip(&["netns", "add", ns])?;
        ip(&[
            "link", "add", host_if, "type", "veth", "peer", "name", &peer_if,
        ])?;
        ip(&["link", "set", &peer_if, "address", &mac, "netns", ns])?;
        ip(&["addr", "add", &format!("{host}/30"), "dev", host_if])?;
        ip(&["link", "set", host_if, "up"])?;
        ip(&["-n", ns, "link", "set", &peer_if, "up"])?;
        let peer = peer.to_string();
        ip(&[
            "neigh",
            "replace",
            &peer,
            "lladdr",
            &mac,
            "dev",
            host_if,
            "nud",
            "permanent",
        ])?;
        Ok(netns)
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting one end deletes the pair, its addresses and neighbours.
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.ns]);
    }
}

/// Runs `ip` with `args`; `Err` says why it failed.
fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|err| format!("cannot run `ip`: {err}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

// ===== Backlog =====

/// A listener with a full accept backlog that never accepts: the kernel
/// drops further SYNs.
pub struct Backlog {
    addr: SocketAddr,
    /// `None` once healed.
    listener: Option<TcpListener>,
    /// The connections that fill the backlog.
    fillers: Vec<TcpStream>,
}

impl Backlog {
    async fn create() -> Self {
        let socket = TcpSocket::new_v4().unwrap();
        socket.bind(([127, 0, 0, 1], 0).into()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        // Fill the queue until a connect hangs: Linux holds backlog + 1.
        let mut fillers = Vec::new();
        while let Ok(connected) =
            timeout(Duration::from_millis(100), TcpStream::connect(addr)).await
        {
            fillers.push(connected.expect("fill the backlog"));
            assert!(fillers.len() < 64, "the accept backlog never filled");
        }
        Self {
            addr,
            listener: Some(listener),
            fillers,
        }
    }
}
