//! The daemon's pid, CPU time and memory, from `/proc` (Linux only; `None` elsewhere or
//! when the daemon is not local).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// Clock ticks per second of `/proc/PID/stat` (USER_HZ, 100 on every Linux ABI).
const USER_HZ: u64 = 100;

/// The process listening on (or serving) the Unix socket at `socket`, other than this one.
///
/// `/proc/net/unix` lists each socket's inode with the path it was bound to (the listening
/// socket and every accepted connection); a process's `fd/` links to `socket:[INODE]`. The
/// listed path is what the daemon passed to bind, so a relative one is resolved against
/// that process's working directory before comparing.
pub fn find_socket_owner(socket: &Path) -> Option<u32> {
    let target = std::fs::canonicalize(socket).ok()?;
    let name = target.file_name()?.to_os_string();
    let table = std::fs::read_to_string("/proc/net/unix").ok()?;
    let candidates = socket_inodes(&table, |path| {
        Path::new(path).file_name() == Some(name.as_os_str())
    });
    if candidates.is_empty() {
        return None;
    }
    let me = std::process::id();
    for entry in std::fs::read_dir("/proc").ok()?.flatten() {
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
        else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(fds) = std::fs::read_dir(entry.path().join("fd")) else {
            continue;
        };
        for fd in fds.flatten() {
            let Ok(link) = std::fs::read_link(fd.path()) else {
                continue;
            };
            let Some(inode) = link
                .to_str()
                .and_then(|l| l.strip_prefix("socket:["))
                .and_then(|l| l.strip_suffix(']'))
                .and_then(|l| l.parse::<u64>().ok())
            else {
                continue;
            };
            let Some(bound) = candidates.get(&inode) else {
                continue;
            };
            let bound = Path::new(bound);
            let resolved: PathBuf = if bound.is_absolute() {
                bound.to_path_buf()
            } else {
                entry.path().join("cwd").join(bound)
            };
            if std::fs::canonicalize(&resolved).ok().as_deref() == Some(target.as_path()) {
                return Some(pid);
            }
        }
    }
    None
}

/// The inodes of the sockets in a `/proc/net/unix` table whose bound path passes `keep`.
/// Columns: `Num RefCount Protocol Flags Type St Inode [Path]`; abstract names (`@...`)
/// are not files and are skipped.
fn socket_inodes(table: &str, keep: impl Fn(&str) -> bool) -> HashMap<u64, String> {
    let mut out = HashMap::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields.len() < 8 {
            continue;
        }
        let path = fields[7..].join(" ");
        if path.starts_with('@') || !keep(&path) {
            continue;
        }
        if let Ok(inode) = fields[6].parse::<u64>() {
            out.insert(inode, path);
        }
    }
    out
}

/// User plus system CPU time of a process (all its threads, living and exited).
pub fn cpu_time(pid: u32) -> Option<Duration> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    parse_cpu_time(&stat)
}

/// CPU time of this process.
pub fn own_cpu_time() -> Option<Duration> {
    cpu_time(std::process::id())
}

/// CPU time of the calling thread: what a benchmark that serves in its own process takes
/// off its own total to leave the server's.
pub fn thread_cpu_time() -> Option<Duration> {
    parse_cpu_time(&std::fs::read_to_string("/proc/thread-self/stat").ok()?)
}

/// utime and stime are fields 14 and 15 of `/proc/PID/stat`; the command name (field 2)
/// is in parentheses and may hold spaces, so fields are counted after its last `)`.
fn parse_cpu_time(stat: &str) -> Option<Duration> {
    let rest = &stat[stat.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // rest starts at field 3 (state).
    let utime: u64 = fields.get(14 - 3)?.parse().ok()?;
    let stime: u64 = fields.get(15 - 3)?.parse().ok()?;
    let ticks = utime + stime;
    Some(Duration::from_millis(ticks * 1000 / USER_HZ))
}

/// A `kB` line of `/proc/PID/status` (`VmHWM` is the peak resident set, `VmRSS` the
/// current one), in KiB.
pub fn status_kib(pid: u32, key: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kib(&status, key)
}

fn parse_status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let (k, v) = line.split_once(':')?;
        if k != key {
            return None;
        }
        v.trim().strip_suffix("kB")?.trim().parse().ok()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_stat_with_spaces_in_the_name() {
        let stat = "1234 (prefsd (bench) x) S 1 1234 1234 0 -1 4194560 900 0 0 0 250 75 0 0 20 0 5 0 100 0 0";
        assert_eq!(parse_cpu_time(stat), Some(Duration::from_millis(3250)));
        assert_eq!(parse_cpu_time("garbage"), None);
    }

    #[test]
    fn parses_status_lines() {
        let status = "Name:\tprefsd\nVmHWM:\t   23456 kB\nVmRSS:\t   20000 kB\n";
        assert_eq!(parse_status_kib(status, "VmHWM"), Some(23456));
        assert_eq!(parse_status_kib(status, "VmRSS"), Some(20000));
        assert_eq!(parse_status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn reads_the_socket_table() {
        let table = "Num       RefCount Protocol Flags    Type St Inode Path\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 41234 /tmp/x/prefsd.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 41240 /tmp/x/prefsd.sock\n\
            0000000000000000: 00000003 00000000 00000000 0001 03 41241\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 50000 @abstract\n\
            0000000000000000: 00000002 00000000 00010000 0001 01 50001 /run/other.sock\n";
        let found = socket_inodes(table, |p| p.ends_with("prefsd.sock"));
        assert_eq!(found.len(), 2);
        assert_eq!(
            found.get(&41234).map(String::as_str),
            Some("/tmp/x/prefsd.sock")
        );
        assert!(found.contains_key(&41240));
    }

    #[test]
    fn own_process_is_readable() {
        if Path::new("/proc/self/stat").exists() {
            assert!(own_cpu_time().is_some());
            assert!(status_kib(std::process::id(), "VmHWM").is_some_and(|k| k > 0));
        }
    }
}
