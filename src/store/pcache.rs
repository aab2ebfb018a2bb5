//! SQLite's own page cache behind a thin wrapper that spares the writer a scan of its
//! whole page cache at commits after a B-tree split in a database under 1 GiB.
//!
//! Why: when `balance_nonroot` (sqlite3.c) puts the pages of a split in ascending order,
//! it swaps two page numbers through the page of the pending byte (page 262 145 with 4 KiB
//! pages), a page the file never uses. The default page cache (`pcache1`) remembers that
//! number as the highest it has held, and at the end of the transaction the pager drops
//! every page past the end of the database, which `pcache1` then does by walking its
//! whole hash table: in a database smaller than the pending byte's offset, every
//! transaction with such a split walked the writer's 16 384 hash slots and 8 000 pages.
//! The change log's index gets one at a random recipient every few dozen changes: perf
//! put `pcache1TruncateUnsafe` at 8 µs per `users.setPreferences` call on a 100 000-user
//! store with the log, 0 without. The wrapper keeps its own highest page number, which
//! does not count a page passing through the pending byte's number on its way to another,
//! and forwards a truncation only when the cache may hold a page it would drop.
//!
//! Everything else is forwarded unchanged to the methods SQLite had, and the wrapper is
//! installed once per process, before SQLite initializes ([`install`]). Where SQLite was
//! initialized first (another library in the process opened a database), it is not
//! installed and nothing else changes.

use std::ffi::{c_int, c_uint, c_void};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Once, OnceLock};

use rusqlite::ffi;

/// SQLite's page cache methods, as they were before [`install`].
static INNER: OnceLock<Methods> = OnceLock::new();

struct Methods(ffi::sqlite3_pcache_methods2);

// SAFETY: function pointers, and the argument SQLite gives them, which SQLite itself hands
// to whichever thread opens a connection; the wrapper only passes it back.
unsafe impl Send for Methods {}
// SAFETY: as for `Send`; nothing is written through a shared `Methods`.
unsafe impl Sync for Methods {}

/// Whether SQLite took the wrapper.
static INSTALLED: AtomicBool = AtomicBool::new(false);

/// Installs the wrapper (once per process; later calls do nothing). Answers whether it is
/// installed.
pub(super) fn install() -> bool {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // SAFETY: `sqlite3_config` is called with the argument type each verb documents:
        // a pointer to a `sqlite3_pcache_methods2` to fill, then one to copy. Once SQLite
        // has initialized it refuses both (SQLITE_MISUSE) and changes nothing, so no page
        // cache SQLite created with its own methods is ever handed to the wrapper's: a
        // cache is created only by a connection, after initialization, and SQLite looks
        // the methods up at each call. `Once` keeps two threads of ours from configuring
        // at the same time; the daemon opens its first connection here, before any other.
        unsafe {
            let mut inner: ffi::sqlite3_pcache_methods2 = std::mem::zeroed();
            let rc = ffi::sqlite3_config(ffi::SQLITE_CONFIG_GETPCACHE2, &raw mut inner);
            if rc != ffi::SQLITE_OK || !complete(&inner) {
                tracing::debug!(
                    rc,
                    "SQLite was initialized already: its page cache is used as is"
                );
                return;
            }
            let _ = INNER.set(Methods(inner));
            let methods = ffi::sqlite3_pcache_methods2 {
                iVersion: 1,
                pArg: std::ptr::null_mut(),
                xInit: Some(init),
                xShutdown: Some(shutdown),
                xCreate: Some(create),
                xCachesize: Some(cachesize),
                xPagecount: Some(pagecount),
                xFetch: Some(fetch),
                xUnpin: Some(unpin),
                xRekey: Some(rekey),
                xTruncate: Some(truncate),
                xDestroy: Some(destroy),
                xShrink: Some(shrink),
            };
            let rc = ffi::sqlite3_config(ffi::SQLITE_CONFIG_PCACHE2, &raw const methods);
            if rc == ffi::SQLITE_OK {
                INSTALLED.store(true, Ordering::Release);
            } else {
                tracing::debug!(rc, "SQLite refused the page cache wrapper");
            }
        }
    });
    INSTALLED.load(Ordering::Acquire)
}

/// Whether every method the wrapper forwards to is there.
fn complete(m: &ffi::sqlite3_pcache_methods2) -> bool {
    m.xInit.is_some()
        && m.xShutdown.is_some()
        && m.xCreate.is_some()
        && m.xCachesize.is_some()
        && m.xPagecount.is_some()
        && m.xFetch.is_some()
        && m.xUnpin.is_some()
        && m.xRekey.is_some()
        && m.xTruncate.is_some()
        && m.xDestroy.is_some()
        && m.xShrink.is_some()
}

/// The page numbers one cache may hold, as far as truncation needs to know: the pure
/// part of the wrapper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Keys {
    /// The page number of the pending byte, where `balance_nonroot` parks a page.
    parking: c_uint,
    /// The highest page number the cache may hold, parked pages left out.
    max: c_uint,
    /// Pages parked at `parking` and not moved on yet.
    parked: u32,
}

/// SQLite's `PENDING_BYTE`: the default, which only its own tests change.
const PENDING_BYTE: u32 = 0x4000_0000;

impl Keys {
    fn new(page_size: c_int) -> Keys {
        let page_size = u32::try_from(page_size).unwrap_or(1).max(1);
        Keys {
            parking: PENDING_BYTE / page_size + 1,
            max: 0,
            parked: 0,
        }
    }

    /// A page now held under `key`.
    fn fetched(&mut self, key: c_uint) {
        self.max = self.max.max(key);
    }

    /// A page moved from `old` to `new`.
    fn rekeyed(&mut self, old: c_uint, new: c_uint) {
        if old == self.parking {
            self.parked = self.parked.saturating_sub(1);
        }
        if new == self.parking {
            self.parked += 1;
        } else {
            self.fetched(new);
        }
    }

    /// Pages from `limit` on are to be dropped: whether the cache may hold any (the call is
    /// then forwarded). Afterwards it holds none.
    fn truncate(&mut self, limit: c_uint) -> bool {
        let parked = self.parked > 0 && self.parking >= limit;
        let forward = limit <= self.max || parked;
        if forward {
            self.max = self.max.min(limit.saturating_sub(1));
            if self.parking >= limit {
                self.parked = 0;
            }
        }
        forward
    }
}

/// One cache: SQLite's, and what the wrapper knows of its page numbers. SQLite hands the
/// wrapper's pointer back on every call.
struct Wrapped {
    inner: *mut ffi::sqlite3_pcache,
    keys: Keys,
}

fn methods() -> &'static ffi::sqlite3_pcache_methods2 {
    // Every method below runs only after `install` stored them (SQLite calls none of the
    // wrapper's before `SQLITE_CONFIG_PCACHE2` installed it, which follows the store).
    match INNER.get() {
        Some(Methods(m)) => m,
        None => unreachable!("the page cache wrapper runs only once installed"),
    }
}

/// # Safety
/// `p` is a pointer `create` returned and `destroy` has not freed; SQLite calls a cache's
/// methods one at a time.
unsafe fn wrapped<'a>(p: *mut ffi::sqlite3_pcache) -> &'a mut Wrapped {
    // SAFETY: as the function's contract says.
    unsafe { &mut *p.cast::<Wrapped>() }
}

// The methods. Each forwards to SQLite's: the `unwrap_or_else(unreachable)` cannot fire,
// `install` checked that every method is there (`complete`).

macro_rules! inner {
    ($name:ident) => {
        methods()
            .$name
            .unwrap_or_else(|| unreachable!(concat!("checked by complete: ", stringify!($name))))
    };
}

unsafe extern "C" fn init(_: *mut c_void) -> c_int {
    // SAFETY: forwarded with the argument SQLite's methods came with.
    unsafe { inner!(xInit)(methods().pArg) }
}

unsafe extern "C" fn shutdown(_: *mut c_void) {
    // SAFETY: as for `init`.
    unsafe { inner!(xShutdown)(methods().pArg) }
}

unsafe extern "C" fn create(
    page_size: c_int,
    extra: c_int,
    purgeable: c_int,
) -> *mut ffi::sqlite3_pcache {
    // SAFETY: forwarded as given.
    let inner = unsafe { inner!(xCreate)(page_size, extra, purgeable) };
    if inner.is_null() {
        return inner;
    }
    Box::into_raw(Box::new(Wrapped {
        inner,
        keys: Keys::new(page_size),
    }))
    .cast()
}

unsafe extern "C" fn cachesize(p: *mut ffi::sqlite3_pcache, n: c_int) {
    // SAFETY: `p` came from `create` (SQLite's contract), `inner` from SQLite's `xCreate`.
    unsafe { inner!(xCachesize)(wrapped(p).inner, n) }
}

unsafe extern "C" fn pagecount(p: *mut ffi::sqlite3_pcache) -> c_int {
    // SAFETY: as for `cachesize`.
    unsafe { inner!(xPagecount)(wrapped(p).inner) }
}

unsafe extern "C" fn fetch(
    p: *mut ffi::sqlite3_pcache,
    key: c_uint,
    create: c_int,
) -> *mut ffi::sqlite3_pcache_page {
    // SAFETY: as for `cachesize`.
    unsafe {
        let w = wrapped(p);
        let page = inner!(xFetch)(w.inner, key, create);
        if !page.is_null() {
            w.keys.fetched(key);
        }
        page
    }
}

unsafe extern "C" fn unpin(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    discard: c_int,
) {
    // SAFETY: as for `cachesize`.
    unsafe { inner!(xUnpin)(wrapped(p).inner, page, discard) }
}

unsafe extern "C" fn rekey(
    p: *mut ffi::sqlite3_pcache,
    page: *mut ffi::sqlite3_pcache_page,
    old: c_uint,
    new: c_uint,
) {
    // SAFETY: as for `cachesize`.
    unsafe {
        let w = wrapped(p);
        inner!(xRekey)(w.inner, page, old, new);
        w.keys.rekeyed(old, new);
    }
}

unsafe extern "C" fn truncate(p: *mut ffi::sqlite3_pcache, limit: c_uint) {
    // SAFETY: as for `cachesize`.
    unsafe {
        let w = wrapped(p);
        if w.keys.truncate(limit) {
            inner!(xTruncate)(w.inner, limit);
        }
    }
}

unsafe extern "C" fn destroy(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: `p` came from `create`'s `Box::into_raw`, and SQLite calls nothing on it
    // after `xDestroy`.
    unsafe {
        let w = Box::from_raw(p.cast::<Wrapped>());
        inner!(xDestroy)(w.inner);
    }
}

unsafe extern "C" fn shrink(p: *mut ffi::sqlite3_pcache) {
    // SAFETY: as for `cachesize`.
    unsafe { inner!(xShrink)(wrapped(p).inner) }
}

#[cfg(test)]
mod tests {
    use super::Keys;

    /// Through SQLite: splits that swap pages through the pending byte's number, rolled
    /// back transactions that grew the file, and deletions, then an integrity check and
    /// the index against the table. A page move the wrapper lost fails it (tried: not
    /// forwarding the moves to the pending byte's number aborts the test). Only where
    /// this test process installed the wrapper: another test may have initialized SQLite
    /// first, and then there is nothing of ours to check.
    #[test]
    fn a_database_written_through_the_wrapper_stays_whole() {
        if !super::install() {
            eprintln!("SQLite was initialized by another test first: the wrapper is not installed");
            return;
        }
        let dir = tempfile::tempdir().expect("temp dir");
        let conn = rusqlite::Connection::open(dir.path().join("t.db")).expect("open");
        conn.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA cache_size = -4096;
             CREATE TABLE t (id INTEGER PRIMARY KEY, k TEXT NOT NULL, v BLOB NOT NULL);
             CREATE INDEX t_by_k ON t (k);",
        )
        .expect("schema");
        // A small LCG: random keys without a dependency.
        let mut x: u64 = 7;
        let mut next = || {
            x = x.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1);
            x >> 33
        };
        let mut insert = |conn: &rusqlite::Connection, n: usize| {
            for _ in 0..n {
                let (k, len) = (next(), 100 + (next() % 400) as i64);
                conn.execute(
                    "INSERT INTO t (k, v) VALUES (?1, zeroblob(?2))",
                    rusqlite::params![format!("key-{k:012}"), len],
                )
                .expect("insert");
            }
        };
        for round in 0..6 {
            conn.execute_batch("BEGIN").expect("begin");
            insert(&conn, 3000);
            let end = if round % 2 == 0 { "ROLLBACK" } else { "COMMIT" };
            conn.execute_batch(end).expect("end");
            conn.execute_batch("DELETE FROM t WHERE id % 3 = 0")
                .expect("delete");
        }
        let rows: i64 = conn
            .query_row("SELECT count(*) FROM t", [], |r| r.get(0))
            .expect("count");
        let by_index: i64 = conn
            .query_row(
                "SELECT count(*) FROM t INDEXED BY t_by_k WHERE k > ''",
                [],
                |r| r.get(0),
            )
            .expect("count by index");
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("check");
        assert_eq!(check, "ok");
        assert!(rows > 3000, "{rows}");
        assert_eq!(rows, by_index);
    }

    #[test]
    fn a_page_passing_through_the_pending_byte_does_not_make_a_commit_truncate() {
        let mut keys = Keys::new(4096);
        assert_eq!(keys.parking, 262_145);
        for page in 1..=100 {
            keys.fetched(page);
        }
        assert!(!keys.truncate(101), "nothing past the end: not forwarded");
        // balance_nonroot swaps pages 90 and 40 through the pending byte's page.
        keys.rekeyed(90, keys.parking);
        keys.rekeyed(40, 90);
        keys.rekeyed(keys.parking, 40);
        assert!(!keys.truncate(101), "the swap left nothing past the end");
        // The file grew by two pages, then the transaction rolled back.
        keys.fetched(102);
        assert!(keys.truncate(101), "a page past the end: forwarded");
        assert!(!keys.truncate(101), "and then there is none");
        assert!(keys.truncate(1), "clearing the cache is always forwarded");
    }

    #[test]
    fn a_page_left_parked_is_dropped_by_a_truncation_below_it() {
        let mut keys = Keys::new(4096);
        keys.fetched(10);
        keys.rekeyed(10, keys.parking);
        assert!(keys.truncate(11), "a parked page past the end: forwarded");
        assert!(!keys.truncate(11));
        let mut keys = Keys::new(65_536);
        assert_eq!(keys.parking, 16_385);
        keys.fetched(20_000);
        assert!(!keys.truncate(20_001));
        assert!(keys.truncate(19_000));
    }
}
