//! Clients that try to wear the daemon out through its connections: refused peers that
//! retry in a loop, requests whose body never comes, answers nobody reads. Each runs against
//! a child daemon (`child`), whose log, file descriptors and memory can be read from outside.

use std::time::{Duration, Instant};

use serde_json::Value;

use crate::access::own_uid;
use crate::child::{ChildDaemon, rpc};
use crate::load::daemon_dir;
use crate::support::wait_for;

/// A uid other than the test's: allowed alone, it makes the test's own uid a refused peer.
fn other_uid() -> u32 {
    if own_uid() == 4242 { 4243 } else { 4242 }
}

/// `prefsd.toml` that allows only `uid`.
fn allowing_only(uid: u32) -> String {
    format!("durability = \"normal\"\nsocket_mode = \"0666\"\n\n[access]\nallowed_uids = [{uid}]\n")
}

/// The lines of `log` that contain `what`.
fn lines_with(log: &[String], what: &str) -> Vec<String> {
    log.iter().filter(|l| l.contains(what)).cloned().collect()
}

/// The number after `field=` in a log line, if any.
fn field(line: &str, field: &str) -> Option<u64> {
    let start = line.find(&format!("{field}="))? + field.len() + 1;
    let digits: String = line[start..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_of_one_peer_are_logged_once_a_second_with_a_count() {
    let dir = daemon_dir(&allowing_only(other_uid()));
    let daemon = ChildDaemon::spawn(dir.path());
    // A refused peer that retries in a loop for 1.5 s.
    let started = Instant::now();
    let mut calls = 0;
    while started.elapsed() < Duration::from_millis(1500) {
        let e = rpc(&daemon.socket, "daemon.ping", Value::Null)
            .await
            .expect("the refused peer is answered")
            .expect_err("the peer is refused");
        e.assert(-32002, "unauthenticated");
        calls += 1;
    }
    assert!(calls >= 20, "only {calls} calls in 1.5 s");
    // Its first refusal is logged, the next ones in that second are counted, and the first
    // refusal of the next second is logged with that count.
    let lines = wait_for("the second refusal line", || {
        let lines = lines_with(&daemon.log(), "call refused");
        async move { (lines.len() >= 2).then_some(lines) }
    })
    .await;
    assert!(
        lines.len() <= 3,
        "{} refusal lines for {calls} calls in 1.5 s: {lines:#?}",
        lines.len()
    );
    let held_back = field(&lines[1], "unlogged").unwrap_or(0);
    assert!(
        held_back > 0 && held_back < calls,
        "the second line counts the refusals held back: {lines:#?}"
    );
}
