//! Nothing left behind: the checks for tasks, sockets and file descriptors
//! after a client closes, and what keeps them honest (a lock, a runtime per
//! case).

use std::{
    net::{Ipv4Addr, SocketAddr},
    sync::{Mutex, MutexGuard},
    time::Duration,
};

/// Every test of this binary holds this lock, so the whole-process counts
/// (open file descriptors) of one are not disturbed by another.
pub fn lock() -> MutexGuard<'static, ()> {
    static LOCK: Mutex<()> = Mutex::new(());
    LOCK.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The open file descriptors of this process.
pub fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// This process's TCP sockets (open descriptors) whose local or remote
/// address is `addr`, as lines of `/proc/net/tcp`. Only IPv4: every socket
/// here is.
pub fn sockets_at(addr: SocketAddr) -> Vec<String> {
    let ours: Vec<String> = std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .filter_map(|link| {
            let link = link.to_str()?;
            Some(link.strip_prefix("socket:[")?.strip_suffix(']')?.to_owned())
        })
        .collect();
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            let at = |field: &str| parse_proc_addr(field) == Some(addr);
            fields.len() > 9
                && ours.iter().any(|inode| inode == fields[9])
                && (at(fields[1]) || at(fields[2]))
        })
        .map(str::to_owned)
        .collect()
}

/// `0100007F:1F90` → 127.0.0.1:8080: the address as the kernel's
/// native-endian `u32`, the port in hex.
fn parse_proc_addr(field: &str) -> Option<SocketAddr> {
    let (ip, port) = field.split_once(':')?;
    let ip = u32::from_str_radix(ip, 16).ok()?;
    let port = u16::from_str_radix(port, 16).ok()?;
    Some((Ipv4Addr::from(ip.to_ne_bytes()), port).into())
}

/// A current-thread runtime with every driver: each case runs on its own,
/// so its tasks and heap are its own.
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// Fails the case instead of hanging.
pub async fn guard<F: std::future::Future>(what: &str, fut: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(5), fut)
        .await
        .unwrap_or_else(|_| panic!("hung: {what}"))
}
