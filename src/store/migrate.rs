//! Schema migrations: the numbered files of `sql/`, applied in order and tracked by
//! `PRAGMA user_version`. The list is append-only: a shipped file is never edited or
//! reordered, so every database can be brought forward from any older version.

use rusqlite::{Connection, TransactionBehavior};

use crate::store::Error;

/// Every migration, in order; the schema version is the number of entries applied.
pub const MIGRATIONS: &[(&str, &str)] = &[
    ("0001_init", include_str!("../../sql/0001_init.sql")),
    ("0002_jobs", include_str!("../../sql/0002_jobs.sql")),
    ("0003_changes", include_str!("../../sql/0003_changes.sql")),
    (
        "0004_lists_and_job_kinds",
        include_str!("../../sql/0004_lists_and_job_kinds.sql"),
    ),
    ("0005_counts", include_str!("../../sql/0005_counts.sql")),
    (
        "0006_inline_change_values",
        include_str!("../../sql/0006_inline_change_values.sql"),
    ),
    (
        "0007_changes_seq_by_hand",
        include_str!("../../sql/0007_changes_seq_by_hand.sql"),
    ),
    (
        "0008_set_change_chains",
        include_str!("../../sql/0008_set_change_chains.sql"),
    ),
];

/// The schema version this build writes.
pub fn latest() -> u32 {
    MIGRATIONS.len() as u32
}

/// Brings the database to the latest version in one exclusive transaction, so a crash
/// mid-migration leaves the old version intact. Returns the version now in force.
pub fn migrate(conn: &mut Connection) -> Result<u32, Error> {
    let tx = conn.transaction_with_behavior(TransactionBehavior::Exclusive)?;
    let current: u32 = tx.query_row("PRAGMA user_version", [], |r| r.get(0))?;
    if current > latest() {
        return Err(Error::TooNew {
            found: current,
            known: latest(),
        });
    }
    for (index, (name, sql)) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        tx.execute_batch(sql).map_err(|source| Error::Migration {
            name: (*name).to_string(),
            source,
        })?;
        // user_version cannot be bound as a parameter; the value is our own integer.
        tx.execute_batch(&format!("PRAGMA user_version = {}", index + 1))?;
    }
    if current < latest() {
        // A migration may edit a definition in `sqlite_schema` in place (0007); moving the
        // schema version on, as SQLite's documentation of that procedure says, makes any
        // other connection read the definitions again (DDL does it by itself).
        let version: i64 = tx.query_row("PRAGMA schema_version", [], |r| r.get(0))?;
        tx.execute_batch(&format!("PRAGMA schema_version = {}", version + 1))?;
    }
    tx.commit()?;
    Ok(latest())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrates_from_every_older_version_and_twice() {
        for start in 0..=MIGRATIONS.len() {
            let mut conn = Connection::open_in_memory().expect("in-memory db");
            for (name, sql) in &MIGRATIONS[..start] {
                conn.execute_batch(sql)
                    .unwrap_or_else(|e| panic!("{name}: {e}"));
            }
            conn.execute_batch(&format!("PRAGMA user_version = {start}"))
                .expect("set version");
            assert_eq!(migrate(&mut conn).expect("migrates"), latest());
            assert_eq!(migrate(&mut conn).expect("migrates again"), latest());
        }
    }

    /// `sql/0007_changes_seq_by_hand.sql` edits the change log's definition in place: a
    /// populated log keeps its rows, is whole, and appending no longer writes
    /// `sqlite_sequence` (the page every commit rewrote).
    #[test]
    fn the_change_log_stops_using_autoincrement_and_keeps_its_rows() {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("x.db");
        let mut conn = Connection::open(&path).expect("open");
        for (name, sql) in &MIGRATIONS[..6] {
            conn.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        conn.execute_batch("PRAGMA user_version = 6")
            .expect("version");
        let append = |conn: &Connection, seq: &str| {
            conn.execute_batch(&format!(
                "INSERT INTO changes (seq, at, kind, actor, method)
                 VALUES ({seq}, 0, 'config.applied', '{{}}', 'config')"
            ))
            .expect("a change");
        };
        for _ in 0..3 {
            append(&conn, "NULL");
        }
        let sequence = |conn: &Connection| -> i64 {
            conn.query_row(
                "SELECT seq FROM sqlite_sequence WHERE name = 'changes'",
                [],
                |r| r.get(0),
            )
            .expect("sqlite_sequence")
        };
        assert_eq!(sequence(&conn), 3);
        // Another connection has read the old definition before the migration.
        let other = Connection::open(&path).expect("open");
        append(&other, "NULL");
        assert_eq!(sequence(&other), 4);
        assert_eq!(migrate(&mut conn).expect("migrates"), latest());
        let definition: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE type = 'table' AND name = 'changes'",
                [],
                |r| r.get(0),
            )
            .expect("definition");
        assert!(
            definition.contains("seq             INTEGER PRIMARY KEY,"),
            "{definition}"
        );
        assert!(!definition.contains("AUTOINCREMENT"), "{definition}");
        let jobs: String = conn
            .query_row(
                "SELECT sql FROM sqlite_schema WHERE name = 'bulk_operations'",
                [],
                |r| r.get(0),
            )
            .expect("definition");
        assert!(jobs.contains("AUTOINCREMENT"), "the jobs' table keeps it");
        // Both the migrating connection and the one opened before it append by hand now.
        append(&conn, "5");
        append(&other, "6");
        assert_eq!(
            sequence(&conn),
            4,
            "appending no longer writes sqlite_sequence"
        );
        let seqs: Vec<i64> = conn
            .prepare("SELECT seq FROM changes ORDER BY seq")
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("seqs");
        assert_eq!(seqs, [1, 2, 3, 4, 5, 6]);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
    }

    /// `sql/0008_set_change_chains.sql` narrows `changes_by_recipient` by editing its
    /// definition in place: on a populated log the index keeps every entry it had (all
    /// of them meet the new condition), the file is whole, and a chained change is left
    /// out of it.
    #[test]
    fn the_recipient_index_is_narrowed_in_place_and_keeps_its_entries() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        for (name, sql) in &MIGRATIONS[..7] {
            conn.execute_batch(sql)
                .unwrap_or_else(|e| panic!("{name}: {e}"));
        }
        conn.execute_batch(
            "PRAGMA user_version = 7;
             INSERT INTO changes (seq, at, kind, collection, recipient_id, preference_set, actor, method)
             VALUES (1, 0, 'preferences.set', '', 'ana', 'default', '{}', 'm'),
                    (2, 0, 'recipient.set', '', 'ana', NULL, '{}', 'm'),
                    (3, 0, 'preferences.set', '', 'ana', 'default', '{}', 'm'),
                    (4, 0, 'config.applied', NULL, NULL, NULL, '{}', 'm');",
        )
        .expect("a log");
        assert_eq!(migrate(&mut conn).expect("migrates"), latest());
        let indexed = |conn: &Connection| -> Vec<i64> {
            conn.prepare(
                "SELECT seq FROM changes INDEXED BY changes_by_recipient
                  WHERE collection = '' AND recipient_id = 'ana'
                    AND (kind <> 'preferences.set' OR prev_seq IS NULL) ORDER BY seq",
            )
            .and_then(|mut s| s.query_map([], |r| r.get(0))?.collect())
            .expect("the index's entries")
        };
        assert_eq!(indexed(&conn), [1, 2, 3]);
        conn.execute_batch(
            "INSERT INTO changes (seq, at, kind, collection, recipient_id, preference_set, actor, method, prev_seq)
             VALUES (5, 0, 'preferences.set', '', 'ana', 'default', '{}', 'm', 3),
                    (6, 0, 'preferences.unset', '', 'ana', 'default', '{}', 'm', 5);",
        )
        .expect("chained changes");
        assert_eq!(indexed(&conn), [1, 2, 3, 6]);
        let check: String = conn
            .query_row("PRAGMA integrity_check", [], |r| r.get(0))
            .expect("integrity_check");
        assert_eq!(check, "ok");
    }

    #[test]
    fn refuses_a_newer_database() {
        let mut conn = Connection::open_in_memory().expect("in-memory db");
        conn.execute_batch("PRAGMA user_version = 999")
            .expect("set version");
        assert!(matches!(
            migrate(&mut conn),
            Err(Error::TooNew { found: 999, .. })
        ));
    }
}
