//! A PostgreSQL cluster of a test's own, for the tests that stop or restart the server
//! (the shared one of `PREFSD_TEST_PG` serves every other test at the same time).
//! `initdb --no-sync` in a temp dir, on a private socket, as the `postgres` user when the
//! tests run as root (the server refuses to run as root).

use std::path::{Path, PathBuf};
use std::process::Command;

/// A running throw-away cluster; stopped (immediately) and removed on drop.
pub struct Cluster {
    _dir: tempfile::TempDir,
    data: PathBuf,
    socket: PathBuf,
    bin: PathBuf,
}

/// The newest PostgreSQL server binaries of Debian's packages, if installed.
fn pg_bin() -> Option<PathBuf> {
    let mut found: Vec<PathBuf> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|e| e.ok().map(|e| e.path().join("bin")))
        .filter(|p| p.join("pg_ctl").exists())
        .collect();
    found.sort_by_key(|p| {
        p.parent()
            .and_then(|v| v.file_name())
            .and_then(|v| v.to_str())
            .and_then(|v| v.parse::<u32>().ok())
            .unwrap_or(0)
    });
    found.pop()
}

/// Runs `program args` as the `postgres` user when we are root, else as ourselves.
fn run_as_postgres(program: &Path, args: &[&str]) -> std::process::Output {
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let mut command = if root {
        let mut line = shell_quote(&program.to_string_lossy());
        for arg in args {
            line.push(' ');
            line.push_str(&shell_quote(arg));
        }
        let mut c = Command::new("su");
        c.args(["postgres", "-s", "/bin/sh", "-c", &line]);
        c
    } else {
        let mut c = Command::new(program);
        c.args(args);
        c
    };
    command.output().expect("running a PostgreSQL tool")
}

fn shell_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

impl Cluster {
    /// Starts one, or `None` when the tests have no PostgreSQL (see `support::fleet_pg`,
    /// which fails under `PREFSD_REQUIRE_PG=1`).
    pub fn start() -> Option<Cluster> {
        crate::support::fleet_pg()?;
        let bin = pg_bin().expect("PostgreSQL's binaries under /usr/lib/postgresql");
        let dir = tempfile::Builder::new()
            .prefix("prefsd-pgc")
            .tempdir()
            .expect("a temp dir");
        let data = dir.path().join("data");
        let socket = dir.path().join("sock");
        std::fs::create_dir(&socket).expect("the socket dir");
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } == 0 {
            let uid = Command::new("id")
                .args(["-u", "postgres"])
                .output()
                .expect("id -u postgres");
            let uid: u32 = String::from_utf8_lossy(&uid.stdout)
                .trim()
                .parse()
                .expect("the postgres user");
            for p in [dir.path(), socket.as_path()] {
                std::os::unix::fs::chown(p, Some(uid), None).expect("chown to postgres");
            }
        }
        let init = run_as_postgres(
            &bin.join("initdb"),
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--no-sync",
            ],
        );
        assert!(init.status.success(), "initdb: {init:?}");
        let cluster = Cluster {
            _dir: dir,
            data,
            socket,
            bin,
        };
        cluster.ctl(&["start"]);
        Some(cluster)
    }

    /// libpq's connection string for this cluster.
    pub fn url(&self) -> String {
        format!(
            "host={} user=postgres dbname=postgres",
            self.socket.display()
        )
    }

    fn ctl(&self, action: &[&str]) {
        let options = format!(
            "-k {} -c listen_addresses='' -c fsync=off",
            self.socket.display()
        );
        let log = self.data.join("server.log");
        let mut args = vec![
            "-D",
            self.data.to_str().expect("a UTF-8 path"),
            "-l",
            log.to_str().expect("a UTF-8 path"),
            "-w",
            "-o",
            &options,
        ];
        args.extend_from_slice(action);
        let out = run_as_postgres(&self.bin.join("pg_ctl"), &args);
        assert!(out.status.success(), "pg_ctl {action:?}: {out:?}");
    }

    /// `pg_ctl restart -m immediate`: the server stops without a checkpoint, as if it
    /// crashed, and comes back, replaying its WAL.
    pub fn restart_immediate(&self) {
        self.ctl(&["-m", "immediate", "restart"]);
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = run_as_postgres(
            &self.bin.join("pg_ctl"),
            &[
                "-D",
                &self.data.to_string_lossy(),
                "-m",
                "immediate",
                "-w",
                "stop",
            ],
        );
    }
}
