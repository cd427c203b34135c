//! What a case leaves behind: its sockets (read from `/proc`) and the tasks
//! of its runtime.
//!
//! Tests of this binary run in parallel, so a plain count of
//! `/proc/self/fd` would see the other cases' sockets come and go. Instead a
//! census counts this process's file descriptors that are TCP sockets with
//! the case's server port at either end (the server's listener and accepted
//! sockets, the client's dialled ones): exact, whatever else runs.

use std::{collections::HashSet, fs, sync::Mutex};

/// Serializes the reads of `/proc`: a census walks the descriptor table
/// while other threads open and close descriptors, and two censuses at once
/// would only slow each other down.
static PROC: Mutex<()> = Mutex::new(());

/// The inodes of the IPv4 and IPv6 TCP sockets, in any state, with `port`
/// at either end.
fn tcp_inodes(port: u16) -> HashSet<u64> {
    let mut inodes = HashSet::new();
    for table in ["/proc/self/net/tcp", "/proc/self/net/tcp6"] {
        let Ok(text) = fs::read_to_string(table) else {
            continue;
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
pub fn sockets_on(port: u16) -> usize {
    let _proc = PROC.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    let inodes = tcp_inodes(port);
    let Ok(fds) = fs::read_dir("/proc/self/fd") else {
        return 0;
    };
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
