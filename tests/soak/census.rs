//! What a case leaves behind: its sockets (read from `/proc`) and the tasks
//! of its runtime.
//!
//! Tests of this binary run in parallel, so a plain count of
//! `/proc/self/fd` would see the other cases' sockets come and go. Instead a
//! census counts this process's file descriptors that are TCP sockets with
//! the case's server port at either end (the server's listener and accepted
//! sockets, the client's dialled ones): exact, whatever else runs.

use std::{collections::HashSet, fs, io, sync::Mutex};

const FDS: &str = "/proc/self/fd";

/// Serializes the reads of `/proc`: a census walks the descriptor table
/// while other threads open and close descriptors, and two censuses at once
/// would only slow each other down.
static PROC: Mutex<()> = Mutex::new(());

/// The inodes of the IPv4 and IPv6 TCP sockets, in any state, with `port`
/// at either end.
///
/// # Panics
///
/// When a table cannot be read (but `tcp6` on a kernel without IPv6): a
/// census that saw nothing would pass every check.
fn tcp_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let text = match fs::read_to_string(table) {
            Ok(text) => text,
            Err(err) if table.ends_with('6') && err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => panic!("the socket census cannot read {table}: {err}"),
        };
        for line in text.lines().skip(1) {
            let cols: Vec<&str> = line.split_whitespace().collect();
            let port_of = |addr: &str| {
                addr.rsplit(':')
                    .next()
                    .and_then(|hex| u16::from_str_radix(hex, 16).ok())
            };
            let at_port = cols.get(1).and_then(|a| port_of(a)) == Some(port)
                || cols.get(2).and_then(|a| port_of(a)) == Some(port);
            let inode = cols.get(9).and_then(|i| i.parse::<u64>().ok());
            // Inode 0: TIME_WAIT and the like, owned by no descriptor.
            if let (true, Some(inode @ 1..)) = (at_port, inode) {
                inodes.insert(inode);
            }
        }
    }
    inodes
}

/// How many of this process's descriptors are TCP sockets with `port` at
/// either end.
///
/// # Panics
///
/// When `/proc` cannot be read: a census that saw nothing would pass every
/// check.
pub fn sockets_on(port: u16) -> usize {
    let _proc = PROC.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let inodes = tcp_inodes(port);
    let fds = fs::read_dir(FDS)
        .unwrap_or_else(|err| panic!("the socket census cannot read {FDS}: {err}"));
    fds.filter_map(Result::ok)
        .filter_map(|fd| fs::read_link(fd.path()).ok())
        .filter_map(|target| {
            let target = target.to_str()?.to_owned();
            target
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse::<u64>()
                .ok()
        })
        .filter(|inode| inodes.contains(inode))
        .count()
}

/// The census sees this process's sockets on a port, and only while they
/// are open: it is not vacuous.
#[test]
fn census_sees_open_sockets_only() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let client = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let (server, _) = listener.accept().unwrap();
    assert_eq!(sockets_on(port), 3, "the listener and both ends");
    drop((listener, client, server));
    assert_eq!(sockets_on(port), 0);
}
