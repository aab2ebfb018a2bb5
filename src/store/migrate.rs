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
