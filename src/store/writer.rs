//! The writer thread: its queue, and group commit on SQLite.
//!
//! Every write transaction runs on the one writer connection, in queue order. On SQLite
//! the writer takes the writes queued behind the one it is about to run ([`GROUP_MAX`] at
//! most) and runs them in one transaction, each in a savepoint of its own, then commits
//! once: one WAL append and one fsync for the group, where each write paid its own. A
//! write whose body fails is rolled back to its savepoint and answered at once, without
//! touching the others; the others are answered after the commit, and only then, so an
//! acknowledged write is as durable as before. A commit that fails answers every write of
//! its group with its error: none of them is acknowledged. A write queued alone runs alone,
//! without a savepoint, exactly as before group commit.
//!
//! Why: under concurrent writers the writer thread was the bottleneck, and a commit's fixed
//! costs (the WAL append of pages several writes share, the fsync, SQLite's end of
//! transaction) were paid per write (README, performance section). On PostgreSQL each write
//! keeps its own transaction: there a commit is a round trip the fleet's write lock is held
//! across, and its latency, not the writer's CPU, is what a group would share.

use crossbeam_channel::Receiver;
use rusqlite::{Connection, TransactionBehavior};

use super::log::{Flushed, Memo};
use super::sql::Conn;
use super::{
    Backend, Commits, Error, Job, PgConn, Touched, Write, begin_or_reconnect, unavailable_if_lost,
};
use crate::model::change::Origin;

/// The most writes committed together. A group's first write waits for the others to run
/// before it is answered, so a group is kept short: at a few tens of microseconds a write,
/// 32 writes add about a millisecond to the first one's latency at most.
pub(super) const GROUP_MAX: usize = 32;

/// What the writer's queue carries.
pub(super) enum WriterJob {
    /// Runs on the connection as it is (`Db::set_max_size`).
    Plain(Job),
    /// The body of one write transaction, with the caller waiting for its answer.
    Write(Box<dyn Stage>),
}

/// Sends a caller its answer.
pub(super) type Answer<R, E> = Box<dyn FnOnce(Result<R, E>) + Send>;

/// A write's body and its caller, as the writer runs it.
pub(super) trait Stage: Send {
    /// Runs the body on `conn`, inside the writer's transaction, and appends its changes to
    /// the log. `Ok`: what the write touched and appended, and its answer, to send once
    /// the commit's outcome is known. `Err`: the answer to its error, to send once its
    /// statements are rolled back.
    fn stage(
        self: Box<Self>,
        conn: Conn<'_>,
        skip_log: bool,
        memo: &Memo,
    ) -> Result<Staged, Box<dyn FnOnce() + Send>>;

    /// Answers `error` without running the body (its transaction could not begin).
    fn refuse(self: Box<Self>, error: Error);
}

/// A write that ran and waits for its commit.
pub(super) struct Staged {
    touched: Vec<Touched>,
    flushed: Option<Flushed>,
    /// Answers the write: its result (`None`) or the commit's error.
    answer: Box<dyn FnOnce(Option<Error>) + Send>,
}

/// A write as queued by `Db::write_as` and its kin.
pub(super) struct Body<F, R, E> {
    pub origin: Option<Origin>,
    pub f: F,
    pub answer: Answer<R, E>,
}

impl<F, R, E> Stage for Body<F, R, E>
where
    F: FnOnce(&Write<'_>) -> Result<R, E> + Send,
    R: Send + 'static,
    E: From<Error> + Send + 'static,
{
    fn stage(
        self: Box<Self>,
        conn: Conn<'_>,
        skip_log: bool,
        memo: &Memo,
    ) -> Result<Staged, Box<dyn FnOnce() + Send>> {
        let Body { origin, f, answer } = *self;
        let write = Write::new(conn, origin, memo);
        let outcome = f(&write).and_then(|result| {
            let (touched, flushed) = write.finish(skip_log)?;
            Ok((result, touched, flushed))
        });
        match outcome {
            Ok((result, touched, flushed)) => Ok(Staged {
                touched,
                flushed,
                answer: Box::new(move |failed| {
                    answer(match failed {
                        None => Ok(result),
                        Some(e) => Err(E::from(e)),
                    });
                }),
            }),
            Err(e) => Err(Box::new(move || answer(Err(e)))),
        }
    }

    fn refuse(self: Box<Self>, error: Error) {
        (self.answer)(Err(E::from(error)));
    }
}

/// The writer thread's body: runs its queue until it closes.
pub(super) fn serve(
    jobs: Receiver<WriterJob>,
    commits: std::sync::Arc<Commits>,
) -> impl FnOnce(&mut Backend) + Send {
    move |backend| {
        // Every write's latency waits on this thread: woken beside a background thread (a
        // backup's check at nice 10), it took up to 2.2 ms to get a core with the default
        // slice (`perf sched latency`), and a short one lets it preempt at once. A bulk
        // chunk that runs for milliseconds is still preempted by the readers and workers,
        // which ask for the same slice.
        crate::sched::prefer_short_slices();
        // A job taken from the queue while gathering a group that cannot join it.
        let mut held = None;
        loop {
            let job = match held.take() {
                Some(job) => job,
                None => match jobs.recv() {
                    Ok(job) => job,
                    Err(_) => return,
                },
            };
            let first = match job {
                WriterJob::Plain(job) => {
                    job(backend);
                    continue;
                }
                WriterJob::Write(first) => first,
            };
            match backend {
                Backend::Postgres(pg) => on_postgres(pg, &commits, first),
                Backend::Sqlite(conn) => {
                    let mut group = vec![first];
                    while group.len() < GROUP_MAX {
                        match jobs.try_recv() {
                            Ok(WriterJob::Write(next)) => group.push(next),
                            Ok(plain) => {
                                held = Some(plain);
                                break;
                            }
                            Err(_) => break,
                        }
                    }
                    commit_group(conn, &commits, group);
                }
            }
        }
    }
}

/// The writer's memory of the log, which only the writer thread locks; a panic that
/// poisoned it left it as it was before the transaction that panicked, which did not
/// commit.
fn memo(commits: &Commits) -> std::sync::MutexGuard<'_, Memo> {
    commits
        .log
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// SQLite: runs `group` in one immediate transaction (each write in a savepoint when there
/// are several) and commits it once; then drops from the cache what the writes touched,
/// moves the head on, and answers them, in that order (read-your-writes).
fn commit_group(conn: &mut Connection, commits: &Commits, group: Vec<Box<dyn Stage>>) {
    let mut memo = memo(commits);
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return refuse_all(group, &Error::from(e)),
    };
    if let Err(e) = memo.learn_head(Conn::Sqlite(&tx)) {
        return refuse_all(group, &e);
    }
    // Where the log was before the group, for when its commit fails: each write numbers
    // its changes after the ones staged before it.
    let before = memo.position();
    let alone = group.len() == 1;
    let mut staged: Vec<Staged> = Vec::with_capacity(group.len());
    let mut writes = group.into_iter();
    while let Some(write) = writes.next() {
        if !alone && let Err(e) = savepoint(&tx, "SAVEPOINT grouped") {
            write.refuse(Error::from(e));
            continue;
        }
        match write.stage(Conn::Sqlite(&tx), commits.skip_log, &memo) {
            Ok(done) => {
                if !alone && let Err(e) = savepoint(&tx, "RELEASE grouped") {
                    // Not released, the savepoint would still be rolled back by the
                    // commit failing; answered here, the write is simply not counted.
                    let _ = savepoint(&tx, "ROLLBACK TO grouped");
                    (done.answer)(Some(Error::from(e)));
                    continue;
                }
                if let Some(flushed) = &done.flushed {
                    memo.staged(flushed);
                }
                staged.push(done);
            }
            Err(answer) => {
                if alone {
                    drop(tx);
                    return answer();
                }
                let _ = savepoint(&tx, "ROLLBACK TO grouped");
                let _ = savepoint(&tx, "RELEASE grouped");
                answer();
                // SQLite may roll a whole transaction back on some errors (a full disk, an
                // I/O error): the writes staged before this one are then gone.
                if tx.is_autocommit() {
                    memo.rewind(before);
                    let lost = Error::Db(rusqlite::Error::SqliteFailure(
                        rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_ABORT),
                        Some("rolled back by an error of a write committed with it".into()),
                    ));
                    for done in staged.drain(..) {
                        (done.answer)(Some(copy(&lost)));
                    }
                    // The rest of the group runs in a transaction of its own.
                    drop(tx);
                    drop(memo);
                    let rest: Vec<_> = writes.collect();
                    if !rest.is_empty() {
                        commit_group(conn, commits, rest);
                    }
                    return;
                }
            }
        }
    }
    if staged.is_empty() {
        // Nothing to commit: every write failed and was rolled back.
        drop(tx);
        return;
    }
    if let Err(e) = tx.commit() {
        memo.rewind(before);
        let e = Error::from(e);
        for done in staged {
            (done.answer)(Some(copy(&e)));
        }
        return;
    }
    commits.counted(staged.len());
    let mut head = None;
    for done in &mut staged {
        if let Some(flushed) = done.flushed.take() {
            head = Some(flushed.seq);
            memo.committed(flushed, false);
        }
        commits.cache.invalidate(&done.touched);
    }
    drop(memo);
    if let Some(seq) = head {
        commits.advance_head(seq);
    }
    for done in staged {
        (done.answer)(None);
    }
}

/// Runs a savepoint statement (prepared once per connection).
fn savepoint(conn: &Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(drop)
}

fn refuse_all(group: Vec<Box<dyn Stage>>, e: &Error) {
    for write in group {
        write.refuse(copy(e));
    }
}

/// The same error for each write of a group (errors are not `Clone`): SQLite's own code
/// and message are kept, so that a full disk is still told as full.
fn copy(e: &Error) -> Error {
    match e {
        Error::Db(rusqlite::Error::SqliteFailure(code, message)) => {
            Error::Db(rusqlite::Error::SqliteFailure(*code, message.clone()))
        }
        other => Error::Db(rusqlite::Error::SqliteFailure(
            rusqlite::ffi::Error::new(rusqlite::ffi::SQLITE_IOERR),
            Some(other.to_string()),
        )),
    }
}

/// PostgreSQL: one write in a transaction of its own, holding the fleet's write lock (see
/// `store::postgres`); the commit notifies the other daemons of the new head.
fn on_postgres(pg: &mut std::cell::RefCell<PgConn>, commits: &Commits, write: Box<dyn Stage>) {
    if let Err(e) = begin_or_reconnect(pg.get_mut(), PgConn::begin_write) {
        return write.refuse(e);
    }
    // The memo learns keys only (`Memo::committed`): the other daemons of the fleet append
    // to the log too, so the log is asked for its newest `at` each time.
    let mut memo = memo(commits);
    let outcome = write.stage(Conn::Postgres(pg), commits.skip_log, &memo);
    let pg = pg.get_mut();
    let done = match outcome {
        Ok(done) => done,
        Err(answer) => {
            pg.rollback();
            return answer();
        }
    };
    let seq = done.flushed.as_ref().map(|f| f.seq);
    if let Some(seq) = seq {
        let channel = pg.keys.changes_channel.clone();
        pg.notify(&channel, &seq.to_string());
    }
    if let Err(e) = pg.commit() {
        pg.rollback();
        return (done.answer)(Some(unavailable_if_lost(e)));
    }
    let Staged {
        touched,
        flushed,
        answer,
    } = done;
    commits.counted(1);
    if let Some(flushed) = flushed {
        memo.committed(flushed, true);
    }
    drop(memo);
    commits.cache.invalidate(&touched);
    if let Some(seq) = seq {
        commits.advance_head(seq);
    }
    answer(None);
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use serde_json::Map;

    use crate::config::Durability;
    use crate::model::RecipientKey;
    use crate::model::change::{Actor, Origin};
    use crate::store::log::ChangeFilter;
    use crate::store::{Db, Error, WriteStats};

    fn origin() -> Origin {
        Origin::new(Actor::Config, "test")
    }

    /// Writes queued while the writer is busy commit as one transaction; the one among them
    /// that fails is rolled back alone, and the others' changes are numbered on without a
    /// gap.
    #[test]
    fn writes_queued_together_commit_once_and_fail_alone() {
        let dir = tempfile::tempdir().expect("temp dir");
        let db = Db::open(&dir.path().join("prefsd.db"), Durability::Full).expect("open");
        let put = |id: &'static str| {
            let db = db.clone();
            move |hold: Option<(mpsc::Sender<()>, mpsc::Receiver<()>)>| {
                db.write_blocking(origin(), move |w| {
                    if let Some((started, hold)) = hold {
                        // Holds the writer until the other writes are queued behind it.
                        let _ = started.send(());
                        let _ = hold.recv();
                    }
                    w.put_recipient(&RecipientKey::user(id), &Map::new(), "now")?;
                    if id == "bad" {
                        return Err(Error::Decode("refused by the test".into()));
                    }
                    Ok(())
                })
            }
        };
        let before = db.write_stats();
        let (release, hold) = mpsc::channel();
        let (started, running) = mpsc::channel();
        let first = std::thread::spawn({
            let put = put("first");
            move || put(Some((started, hold)))
        });
        running.recv().expect("the first write runs");
        let others: Vec<_> = ["a", "b", "bad", "c"]
            .into_iter()
            .map(|id| {
                let put = put(id);
                (id, std::thread::spawn(move || put(None)))
            })
            .collect();
        while db.inner.writer.len() < others.len() {
            std::thread::yield_now();
        }
        release.send(()).expect("the first write waits");
        assert!(first.join().expect("first").is_ok());
        for (id, thread) in others {
            let result = thread.join().expect("a write");
            assert_eq!(result.is_ok(), id != "bad", "{id}: {result:?}");
        }
        let after = db.write_stats();
        assert_eq!(
            WriteStats {
                writes: after.writes - before.writes,
                transactions: after.transactions - before.transactions,
            },
            WriteStats {
                writes: 4,
                transactions: 2
            },
            "the first write alone, then a, b and c together"
        );
        let (exists, changes) = db
            .write_blocking(origin(), |w| {
                let exists: Vec<bool> = ["first", "a", "b", "bad", "c"]
                    .iter()
                    .map(|id| w.recipient(&RecipientKey::user(*id)).map(|r| r.is_some()))
                    .collect::<Result<_, _>>()?;
                Ok::<_, Error>((exists, w.log().list(0, 100, &ChangeFilter::default())?))
            })
            .expect("read back");
        assert_eq!(exists, [true, true, true, false, true]);
        let seqs: Vec<i64> = changes.iter().map(|c| c.seq).collect();
        let first_seq = seqs[0];
        assert_eq!(seqs, (first_seq..first_seq + 4).collect::<Vec<_>>());
        assert_eq!(*db.head().borrow(), first_seq + 3);
        let mut ids: Vec<&str> = changes
            .iter()
            .filter_map(|c| c.recipient.as_ref().map(|r| r.id.as_str()))
            .collect();
        assert_eq!(ids.remove(0), "first");
        ids.sort_unstable();
        assert_eq!(ids, ["a", "b", "c"]);
        db.close();
    }
}
