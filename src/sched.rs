//! Scheduling hints for the threads that serve requests, and the allocator's one setting.
//!
//! The daemon's latency-sensitive threads (the runtime's workers and the database readers)
//! wake for a few microseconds of work at a time, while the writer thread may run for
//! milliseconds at a stretch during a bulk job. Linux 6.12+ (EEVDF) lets a thread ask for
//! a short time slice, and a woken thread with a shorter slice than the running one may
//! preempt it at once (the PREEMPT_SHORT scheduler feature). Without the hint, a reader
//! woken on the writer's CPU waited out the writer's slice: about 2 ms of scheduling delay
//! in `perf sched timehist` under `cargo bench --bench jobs`, which was most of the
//! `users.getPreferences` p99 while jobs ran. Older kernels and other systems ignore it.

/// The slice asked for: sched_setattr(2) accepts 0.1 ms to 100 ms.
#[cfg(target_os = "linux")]
const SHORT_SLICE_NS: u64 = 100_000;

/// Asks for short scheduler slices for the calling thread. Best effort: a kernel that
/// refuses it leaves the thread as it was, and that is only logged.
pub fn prefer_short_slices() {
    #[cfg(target_os = "linux")]
    linux::set_slice(SHORT_SLICE_NS);
}

/// The nice value of a thread doing background work ([`background`]): it still runs at
/// full speed on an idle machine, and gets about a tenth of a core beside a busy thread of
/// normal priority (the kernel's weights for nice 10 and 0 are 110 and 1024).
#[cfg(target_os = "linux")]
const BACKGROUND_NICE: i32 = 10;

/// Lowers the calling thread's CPU priority (nice [`BACKGROUND_NICE`]) and its I/O
/// priority (the lowest level of the best-effort class, which the idle class's starvation
/// under constant I/O would not be) for work that should give way to the daemon's calls:
/// a backup's copy and check. Best effort: a kernel that refuses leaves the thread as it
/// was, and that is only logged. The thread cannot take its old priority back (that needs
/// CAP_SYS_NICE), so this is for a thread of its own.
pub fn background() {
    #[cfg(target_os = "linux")]
    linux::background(BACKGROUND_NICE);
}

/// Writes `file`'s dirty pages to the disk and waits for them, without asking the disk to
/// flush its cache and without committing the file system's journal, as `fdatasync` does
/// (`sync_file_range`, Linux). Not durable: a file written this way is fsynced once at
/// the end. Elsewhere it is `fdatasync`.
pub fn write_out(file: &std::fs::File) -> std::io::Result<()> {
    #[cfg(target_os = "linux")]
    return linux::write_out(file);
    #[cfg(not(target_os = "linux"))]
    return file.sync_data();
}

/// mimalloc's `mi_option_purge_delay`: its place in the `mi_option_e` of the mimalloc v3
/// that libmimalloc-sys builds, which names only some options as constants. A test checks
/// that this option holds mimalloc's default purge delay.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// How long mimalloc keeps freed memory before giving it back to the system. Its default,
/// a second, kept the transient memory of one large evaluation resident through the next
/// ones: peak RSS with 1000-recipient calls on a 1M-user database measured 70–72 MiB, and
/// 53–59 MiB with 100 ms, at the same CPU per recipient. 1 ms cost a fifth more CPU.
const PURGE_DELAY_MS: std::ffi::c_long = 100;

/// Makes the allocator give freed memory back after `PURGE_DELAY_MS`.
///
/// # Safety
///
/// Call it before any other thread of the process exists (at the start of `main`):
/// mimalloc's option setter writes its option table without synchronisation.
pub unsafe fn return_freed_memory_sooner() {
    // SAFETY: mi_option_set stores an integer in mimalloc's option table; the caller
    // promises no other thread exists yet, as mimalloc requires.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, PURGE_DELAY_MS) }
}

#[cfg(target_os = "linux")]
mod linux {
    /// `struct sched_attr` of sched_setattr(2), its first version (48 bytes).
    #[repr(C)]
    struct SchedAttr {
        size: u32,
        policy: u32,
        flags: u64,
        nice: i32,
        priority: u32,
        runtime: u64,
        deadline: u64,
        period: u64,
    }

    /// `ioprio_set(2)`: the calling thread, the best-effort class, its lowest level.
    pub(super) const IOPRIO_WHO_PROCESS: libc::c_int = 1;
    const IOPRIO_CLASS_BE: libc::c_int = 2;
    const IOPRIO_CLASS_SHIFT: libc::c_int = 13;
    const IOPRIO_LOWEST_LEVEL: libc::c_int = 7;

    pub fn background(nice: i32) {
        // SAFETY: setpriority changes the calling thread's nice value (Linux applies
        // PRIO_PROCESS with 0 to the calling thread) and touches no memory.
        if unsafe { libc::setpriority(libc::PRIO_PROCESS, 0, nice) } != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower this thread's CPU priority"
            );
        }
        let ioprio = (IOPRIO_CLASS_BE << IOPRIO_CLASS_SHIFT) | IOPRIO_LOWEST_LEVEL;
        // SAFETY: ioprio_set changes the calling thread's (who 0) I/O priority and reads
        // no memory.
        let rc = unsafe { libc::syscall(libc::SYS_ioprio_set, IOPRIO_WHO_PROCESS, 0, ioprio) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "cannot lower this thread's I/O priority"
            );
        }
    }

    pub fn write_out(file: &std::fs::File) -> std::io::Result<()> {
        use std::os::fd::AsRawFd as _;
        let flags = libc::SYNC_FILE_RANGE_WAIT_BEFORE
            | libc::SYNC_FILE_RANGE_WRITE
            | libc::SYNC_FILE_RANGE_WAIT_AFTER;
        // SAFETY: sync_file_range works on an open descriptor that `file` owns for the
        // call's duration; offset 0 and length 0 mean the whole file.
        if unsafe { libc::sync_file_range(file.as_raw_fd(), 0, 0, flags) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(())
    }

    pub fn set_slice(ns: u64) {
        // SAFETY: getpriority only reads the calling thread's nice value. errno is reset
        // first because -1 is also a valid nice value; a failure leaves 0, the default.
        let nice = unsafe {
            *libc::__errno_location() = 0;
            libc::getpriority(libc::PRIO_PROCESS, 0)
        };
        let attr = SchedAttr {
            size: std::mem::size_of::<SchedAttr>() as u32,
            policy: libc::SCHED_OTHER as u32,
            flags: 0,
            // The nice value is part of the attributes; passing the current one keeps it.
            nice,
            priority: 0,
            runtime: ns,
            deadline: 0,
            period: 0,
        };
        // SAFETY: sched_setattr reads `size` bytes of `attr` for the calling thread (pid 0)
        // and keeps no reference to it.
        let rc = unsafe { libc::syscall(libc::SYS_sched_setattr, 0, &raw const attr, 0) };
        if rc != 0 {
            tracing::debug!(
                error = %std::io::Error::last_os_error(),
                "the kernel refused a short scheduler slice; this thread keeps the default"
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    /// The slice the kernel reports for the calling thread, where it reports one (Linux
    /// 6.6+ shows `se.slice` in /proc/thread-self/sched).
    fn reported_slice() -> Option<u64> {
        let text = std::fs::read_to_string("/proc/thread-self/sched").ok()?;
        let line = text.lines().find(|l| l.starts_with("se.slice"))?;
        line.rsplit(':').next()?.trim().parse().ok()
    }

    #[test]
    fn a_thread_that_asks_gets_short_slices_where_the_kernel_offers_them() {
        let slice = std::thread::spawn(|| {
            super::prefer_short_slices();
            reported_slice()
        })
        .join()
        .expect("the thread ran");
        // Kernels before custom slices (6.12) neither report nor honour them; this one
        // (6.18 here, and in CI) does both.
        if let Some(slice) = slice {
            let custom_slices = std::fs::read_to_string("/proc/sys/kernel/osrelease")
                .ok()
                .and_then(|r| {
                    let mut parts = r.trim().split(['.', '-']);
                    let major: u32 = parts.next()?.parse().ok()?;
                    let minor: u32 = parts.next()?.parse().ok()?;
                    Some((major, minor) >= (6, 12))
                })
                .unwrap_or(false);
            if custom_slices {
                assert_eq!(slice, super::SHORT_SLICE_NS);
            }
        }
    }

    #[test]
    fn a_background_thread_gets_a_lower_cpu_and_io_priority() {
        let (nice, ioprio) = std::thread::spawn(|| {
            super::background();
            // SAFETY: getpriority and ioprio_get only read the calling thread's priorities.
            unsafe {
                (
                    libc::getpriority(libc::PRIO_PROCESS, 0),
                    libc::syscall(libc::SYS_ioprio_get, super::linux::IOPRIO_WHO_PROCESS, 0),
                )
            }
        })
        .join()
        .expect("the thread ran");
        assert_eq!(nice, super::BACKGROUND_NICE);
        assert_eq!(ioprio, (2 << 13) | 7, "best effort, its lowest level");
    }

    #[test]
    fn the_purge_delay_option_is_the_one_mimalloc_defaults_to_a_second() {
        // SAFETY: mi_option_get reads mimalloc's option table; nothing in the tests sets it.
        let delay = unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(
            delay,
            1000,
            "option {} is not mimalloc's purge delay (default 1000 ms)",
            super::MI_OPTION_PURGE_DELAY
        );
    }
}
