//! Backups and restore (ops.md §5–6, issue 20): an online backup under continuous writes
//! holds every write acknowledged before it was asked for; restore refuses a corrupt
//! backup and a database a daemon holds; a second daemon on one database refuses to start;
//! scheduled backups keep the newest `keep`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use serde_json::{Value, json};

use crate::child::{ChildDaemon, integrity_check};
use crate::cli::{client, prefsd};
use crate::support::{Daemon, HttpConn, default_files, wait_for, write_files};

const WRITERS: usize = 8;

/// The file's permission bits.
fn mode(path: &Path) -> u32 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .permissions()
        .mode()
        & 0o777
}

/// `properties.n` of every writer's user in a database file no daemon has open.
fn written(database: &Path) -> Vec<i64> {
    let conn = rusqlite::Connection::open(database).expect("opening the restored database");
    (0..WRITERS)
        .map(|i| {
            conn.query_row(
                "SELECT json_extract(properties, '$.n') FROM recipients WHERE collection = '' AND id = ?1",
                [format!("writer-{i}")],
                |r| r.get::<_, Option<i64>>(0),
            )
            .ok()
            .flatten()
            .unwrap_or(-1)
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_eight_writers_restores_every_write_acknowledged_before_it() {
    // SQLite only: SQLite's online backup; on PostgreSQL its own tools back up (`backup_on_postgres_names_its_tools`).
    if !crate::support::on_sqlite() {
        return;
    }
    let d = Daemon::start().await;
    // Something to copy besides the writers' users: a few thousand rows, several pages.
    let users: Vec<Value> = (0..2000)
        .map(|i| json!({ "user_id": format!("filler-{i}") }))
        .collect();
    for chunk in users.chunks(500) {
        d.call(
            "audiences.addMembers",
            json!({ "audience_key": "filler", "members": chunk }),
        )
        .await;
    }
    let stop = Arc::new(AtomicBool::new(false));
    // Each writer's newest acknowledged `n`, published after the answer arrived.
    let acked: Arc<Vec<std::sync::atomic::AtomicI64>> = Arc::new(
        (0..WRITERS)
            .map(|_| std::sync::atomic::AtomicI64::new(-1))
            .collect(),
    );
    let mut writers = Vec::new();
    for i in 0..WRITERS {
        let socket = d.socket.clone();
        let stop = Arc::clone(&stop);
        let acked = Arc::clone(&acked);
        writers.push(tokio::spawn(async move {
            let mut conn = HttpConn::connect(&socket).await;
            let mut n = 0i64;
            while !stop.load(Ordering::Relaxed) {
                let params = json!({ "user_id": format!("writer-{i}"), "properties": { "n": n } });
                conn.try_call("users.identify", params)
                    .await
                    .expect("the connection stays up")
                    .expect("the write is acknowledged");
                acked[i].store(n, Ordering::SeqCst);
                n += 1;
            }
            n
        }));
    }
    wait_for("every writer to have written", || async {
        acked
            .iter()
            .all(|a| a.load(Ordering::SeqCst) >= 20)
            .then_some(())
    })
    .await;
    let before: Vec<i64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    let backup = d.dir.path().join("backup.db");
    let info = d
        .call(
            "daemon.backup",
            json!({ "path": backup.display().to_string() }),
        )
        .await;
    // The writers go on while the backup runs and after it.
    let during: Vec<i64> = acked.iter().map(|a| a.load(Ordering::SeqCst)).collect();
    stop.store(true, Ordering::Relaxed);
    let mut total = 0;
    for w in writers {
        total += w.await.expect("a writer task");
    }
    assert!(total > 0);
    assert_eq!(info["path"], json!(backup.display().to_string()));
    assert_eq!(
        info["bytes"].as_u64(),
        Some(std::fs::metadata(&backup).expect("the backup").len())
    );
    crate::support::timestamp(&info["at"]);
    assert_eq!(mode(&backup), 0o600, "a backup is private");
    let status = d.call("daemon.status", json!({})).await;
    assert_eq!(status["last_backup"]["path"], info["path"]);
    assert!(status["last_backup"]["age_s"].as_i64().is_some());

    // Restored offline into a new database, it passes integrity_check and holds every
    // write acknowledged before the backup was asked for.
    let restored = d.dir.path().join("restored.db");
    let run = prefsd(
        d.dir.path(),
        &[
            "restore",
            &backup.display().to_string(),
            "--database",
            &restored.display().to_string(),
        ],
    )
    .await;
    let out = run.json();
    assert_eq!(out["before_restore"], Value::Null, "{out}");
    assert_eq!(integrity_check(&restored), "ok");
    assert_eq!(mode(&restored), 0o600);
    let found = written(&restored);
    for i in 0..WRITERS {
        assert!(
            found[i] >= before[i],
            "writer {i}: {} was acknowledged before the backup, the backup holds {}",
            before[i],
            found[i]
        );
        assert!(
            found[i] <= during[i] + 1,
            "writer {i}: the backup holds a write from after it"
        );
    }
}

#[tokio::test]
async fn a_backup_path_is_checked_before_anything_is_written() {
    // SQLite only: on PostgreSQL its own tools back up (`backup_on_postgres_names_its_tools`).
    if !crate::support::on_sqlite() {
        return;
    }
    let d = Daemon::start().await;
    let cases = [
        ("relative.db", "absolute"),
        ("/no/such/dir/b.db", "does not exist"),
        (d.dir.path().to_str().expect("utf-8"), "directory"),
        (d.database.to_str().expect("utf-8"), "live database"),
    ];
    for (path, says) in cases {
        let e = d.call_err("daemon.backup", json!({ "path": path })).await;
        e.assert_invalid("path");
        assert!(e.message.contains(says), "{path}: {}", e.message);
    }
    let e = d.call_err("daemon.backup", json!({})).await;
    e.assert_invalid("path");
}

#[tokio::test]
async fn restore_refuses_a_corrupt_backup_and_a_held_database() {
    let dir = tempfile::tempdir().expect("temp dir");
    write_files(&dir.path().join("config"), &default_files());
    let daemon = ChildDaemon::spawn(dir.path());
    daemon
        .ok(
            "users.identify",
            json!({ "user_id": "dana", "properties": { "v": 1 } }),
        )
        .await;
    let backup = dir.path().join("good.db");
    daemon
        .ok(
            "daemon.backup",
            json!({ "path": backup.display().to_string() }),
        )
        .await;
    daemon
        .ok(
            "users.identify",
            json!({ "user_id": "dana", "properties": { "v": 2 } }),
        )
        .await;
    let database = daemon.database.display().to_string();

    // A second daemon on the same database refuses to start, naming the holder.
    let second = dir.path().join("second");
    write_files(&second.join("config"), &default_files());
    std::os::unix::fs::symlink(&daemon.database, second.join("prefsd.db")).expect("a symlink");
    match ChildDaemon::try_spawn(&second) {
        Ok(d) => panic!("a second daemon served the same database: {:?}", d.log()),
        Err(f) => {
            assert_eq!(f.status.code(), Some(2), "{:?}", f.log);
            let log = f.log.join("\n");
            assert!(log.contains(&format!("pid {}", daemon.pid())), "{log}");
        }
    }

    // Restore refuses while the daemon holds the database, and changes nothing.
    let run = prefsd(dir.path(), &["restore", "good.db", "--database", &database]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains(&format!("pid {}", daemon.pid())),
        "{run:?}"
    );
    assert!(!dir.path().join("prefsd.db.before-restore").exists());
    daemon
        .ok("users.identify", json!({ "user_id": "lee" }))
        .await;
    let status = daemon.terminate();
    assert!(status.success());
    let before = std::fs::read(dir.path().join("prefsd.db")).expect("the database");

    // A corrupt backup (truncated, and garbage) is refused and changes nothing.
    let good = std::fs::read(&backup).expect("the backup");
    std::fs::write(dir.path().join("truncated.db"), &good[..good.len() / 2]).expect("write");
    std::fs::write(dir.path().join("garbage.db"), b"not a database at all").expect("write");
    let mut flipped = good.clone();
    // The header of page 2, a table's root: its page type is no longer valid.
    flipped[4096..4096 + 8].fill(0xA5);
    std::fs::write(dir.path().join("flipped.db"), &flipped).expect("write");
    for bad in ["truncated.db", "garbage.db", "flipped.db", "missing.db"] {
        let run = prefsd(dir.path(), &["restore", bad, "--database", &database]).await;
        assert_eq!(run.code, 1, "{bad}: {run:?}");
        assert!(
            run.stderr.contains("nothing was restored"),
            "{bad}: {run:?}"
        );
        assert!(
            std::fs::read(dir.path().join("prefsd.db")).expect("the database") == before,
            "{bad} changed the database"
        );
        assert!(!dir.path().join("prefsd.db.before-restore").exists());
    }

    // The good one restores; the replaced file is kept.
    let run = prefsd(dir.path(), &["restore", "good.db", "--database", &database]).await;
    let out = run.json();
    assert!(
        out["before_restore"]
            .as_str()
            .is_some_and(|p| p.ends_with("prefsd.db.before-restore"))
    );
    // The replaced database, whole: lee was written after the backup.
    let kept = dir.path().join("prefsd.db.before-restore");
    assert_eq!(integrity_check(&kept), "ok");
    let conn = rusqlite::Connection::open(&kept).expect("opening the kept database");
    let lee: i64 = conn
        .query_row(
            "SELECT count(*) FROM recipients WHERE id = 'lee'",
            [],
            |r| r.get(0),
        )
        .expect("a count");
    assert_eq!(lee, 1, "the kept database is the replaced one");
    drop(conn);
    let daemon = ChildDaemon::spawn(dir.path());
    let dana = daemon.ok("users.get", json!({ "user_id": "dana" })).await;
    assert_eq!(dana["properties"], json!({ "v": 1 }), "the backup's state");
    let lee = daemon.call("users.get", json!({ "user_id": "lee" })).await;
    assert!(lee.is_err(), "lee was written after the backup: {lee:?}");
}

/// A backup that replaces an older one empties the older one in steps after the rename,
/// instead of letting the rename free it all at once (which stalled the daemon's commits
/// for half a second on a 1.9 GB backup: `store::backup::shrink_gently`). Seen here through
/// a descriptor of the old file held across the second backup: it is empty afterwards.
/// A name the old file still has (a hard link) keeps it whole.
#[tokio::test]
async fn a_replaced_backup_is_emptied_in_steps_and_a_linked_one_is_kept() {
    // SQLite only: SQLite's online backup; on PostgreSQL its own tools back up (`backup_on_postgres_names_its_tools`).
    if !crate::support::on_sqlite() {
        return;
    }
    let d = Daemon::start().await;
    d.call("users.identify", json!({ "user_id": "dana" })).await;
    let path = d.dir.path().join("b.db");
    let params = json!({ "path": path.display().to_string() });
    d.call("daemon.backup", params.clone()).await;
    let old = std::fs::File::open(&path).expect("the first backup");
    let size = |f: &std::fs::File| f.metadata().expect("fstat").len();
    let first_size = size(&old);
    assert!(first_size > 0);
    d.call("users.identify", json!({ "user_id": "eve" })).await;
    d.call("daemon.backup", params.clone()).await;
    assert_eq!(size(&old), 0, "the replaced backup was emptied");
    assert_eq!(integrity_check(&path), "ok");
    let conn = rusqlite::Connection::open(&path).expect("the second backup");
    let users: i64 = conn
        .query_row(
            "SELECT count(*) FROM recipients WHERE collection = '' AND id IN ('dana', 'eve')",
            [],
            |r| r.get(0),
        )
        .expect("count");
    assert_eq!(users, 2, "the second backup holds both users");
    drop(conn);

    // Kept under another name, the replaced file is not touched.
    let linked = d.dir.path().join("kept.db");
    std::fs::hard_link(&path, &linked).expect("a hard link");
    let kept = std::fs::File::open(&linked).expect("the linked backup");
    let kept_size = size(&kept);
    d.call("daemon.backup", params).await;
    assert_eq!(
        size(&kept),
        kept_size,
        "a file with another name keeps its content"
    );
    assert_eq!(integrity_check(&linked), "ok");
    assert_eq!(integrity_check(&path), "ok");
}

#[tokio::test]
async fn the_cli_backs_up_to_a_relative_path() {
    // SQLite only: SQLite's online backup; on PostgreSQL its own tools back up (`backup_on_postgres_names_its_tools`).
    if !crate::support::on_sqlite() {
        return;
    }
    let d = Daemon::start().await;
    d.call("users.identify", json!({ "user_id": "dana" })).await;
    let run = client(&d, &["backup", "cli.db"]).await;
    let out = run.json();
    let path = d.dir.path().join("cli.db");
    assert_eq!(
        out["path"],
        json!(path.canonicalize().expect("written").display().to_string())
    );
    assert_eq!(integrity_check(&path), "ok");
}

#[tokio::test]
async fn scheduled_backups_keep_the_newest_and_show_in_status() {
    // SQLite only: SQLite's online backup; on PostgreSQL its own tools back up (`backup_on_postgres_names_its_tools`).
    if !crate::support::on_sqlite() {
        return;
    }
    let toml = format!(
        "{}\n[backup]\ndir = \"{{DIR}}\"\ninterval = \"300ms\"\nkeep = 2\n",
        crate::support::PREFSD_TOML
    );
    let backups = tempfile::tempdir().expect("temp dir");
    let toml = toml.replace("{DIR}", &backups.path().display().to_string());
    let d = Daemon::start_with(&[("prefsd.toml", &toml)]).await;
    let mut seen: Vec<String> = Vec::new();
    while seen.len() < 3 {
        let known = &seen;
        let d = &d;
        let path = wait_for("a new scheduled backup", || async move {
            let status = d.call("daemon.status", json!({})).await;
            status["last_backup"]["path"]
                .as_str()
                .filter(|p| !known.iter().any(|k| k == p))
                .map(str::to_string)
        })
        .await;
        seen.push(path);
    }
    // The status names a backup as soon as it is verified; the oldest are removed after
    // that, so a listing right then (or after the next backup) may hold one more.
    let names = wait_for("the oldest backups to be removed (keep = 2)", || async {
        let mut names: Vec<String> = std::fs::read_dir(backups.path())
            .expect("the backup dir")
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect();
        names.sort();
        (names.len() <= 2).then_some(names)
    })
    .await;
    assert!(
        !names.iter().any(|n| seen[0].ends_with(n.as_str())),
        "the oldest was removed: {names:?}, seen {seen:?}"
    );
    for name in &names {
        assert!(
            name.starts_with("prefsd-") && name.ends_with(".db"),
            "{name}"
        );
        assert_eq!(integrity_check(&backups.path().join(name)), "ok");
    }
}
