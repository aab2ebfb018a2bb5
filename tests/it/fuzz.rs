//! The fuzz targets of `tests/fuzz` on the stable toolchain: the same `targets.rs`, driven
//! by proptest with random bytes instead of libFuzzer, so CI exercises them on every run.
//!
//! - `preference_set`, `evaluate` and `request` (in process, `raw_json_request` on a temp
//!   database): random bytes, 256 cases each (`PROPTEST_CASES` for more);
//! - the same request texts, and raw bytes, through the socket of a running daemon: every
//!   answer is a JSON-RPC response whose errors carry `data.type` and are never
//!   `internal_error`, and the daemon is alive after each;
//! - every input in `tests/fuzz/regressions/<target>/` (crashes found by fuzzing, kept as
//!   regression tests) is replayed.
//!
//! The structured property tests of the pure core are in `src/eval/props.rs`.

#[path = "../fuzz/targets.rs"]
mod targets;

use std::path::Path;

use proptest::collection::vec;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, TestRunner};
use serde_json::Value;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::{Daemon, SMALL_LIMITS_TOML};

fn bytes() -> impl Strategy<Value = Vec<u8>> {
    vec(any::<u8>(), 0..600)
}

proptest! {
    #![proptest_config(Config { failure_persistence: None, ..Config::default() })]

    #[test]
    fn preference_set_target(data in bytes()) {
        targets::preference_set(&data);
    }

    #[test]
    fn evaluate_target(data in bytes()) {
        targets::evaluate(&data);
    }
}

#[test]
fn request_target() {
    let requests = targets::Requests::new();
    let mut runner = TestRunner::new(Config {
        failure_persistence: None,
        ..Config::default()
    });
    let answers = std::sync::Mutex::new(std::collections::BTreeMap::<i64, u32>::new());
    runner
        .run(&bytes(), |data| {
            if let Some(code) = requests.run(&data) {
                *answers.lock().expect("the tally").entry(code).or_default() += 1;
            }
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{e}"));
    // How deep the inputs reach: 0 is a result, the rest are error codes.
    eprintln!(
        "request target answers: {:?}",
        answers.lock().expect("the tally")
    );
}

/// The saved inputs of `target` under `tests/fuzz/regressions/` (a target with none yet
/// has no directory; the directory of all of them must be there, or the test would pass
/// with nothing to replay).
fn regressions(target: &str) -> Vec<(String, Vec<u8>)> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz/regressions");
    assert!(
        root.is_dir(),
        "{} is missing: the fuzz regressions cannot be replayed",
        root.display()
    );
    let dir = root.join(target);
    let Ok(entries) = std::fs::read_dir(&dir) else {
        return Vec::new();
    };
    let mut out: Vec<(String, Vec<u8>)> = entries
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| {
            (
                e.file_name().to_string_lossy().into_owned(),
                std::fs::read(e.path()).expect("reading a regression input"),
            )
        })
        .collect();
    out.sort();
    out
}

#[test]
fn fuzz_regressions_stay_fixed() {
    let mut replayed = 0;
    for (name, data) in regressions("preference_set") {
        eprintln!("preference_set/{name}");
        targets::preference_set(&data);
        replayed += 1;
    }
    for (name, data) in regressions("evaluate") {
        eprintln!("evaluate/{name}");
        targets::evaluate(&data);
        replayed += 1;
    }
    let requests = targets::Requests::new();
    for (name, data) in regressions("request") {
        eprintln!("request/{name}");
        let _ = requests.run(&data);
        replayed += 1;
    }
    assert!(replayed > 0, "no fuzz regression was replayed");
}

/// Generated inputs, as a proptest runner would give them (deterministic per run).
fn samples(n: usize) -> Vec<Vec<u8>> {
    let mut runner = TestRunner::deterministic();
    let strategy = bytes();
    (0..n)
        .map(|_| strategy.new_tree(&mut runner).expect("a value").current())
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_socket_answers_arbitrary_requests_and_stays_up() {
    let d = Daemon::start_with(&[("prefsd.toml", SMALL_LIMITS_TOML)]).await;
    let methods = tokio::task::spawn_blocking(|| targets::Requests::new().methods())
        .await
        .expect("the method table");
    let cases = crate::child::env_number("PROPTEST_CASES", 256) as usize;
    let mut conn = d.http().await;
    for (i, data) in samples(cases).into_iter().enumerate() {
        // The request text of the target, or the raw bytes (invalid UTF-8 included).
        let body: Vec<u8> = match targets::request_text(&methods, &data) {
            Some(text) if i % 4 != 0 => text.into_bytes(),
            _ => data.clone(),
        };
        let response = conn.post_json(body.clone()).await;
        let shown = String::from_utf8_lossy(&body).into_owned();
        // 200, or 400 for a body that is not JSON-RPC at all: the body says which error.
        assert!(
            response.status == 200 || response.status == 400,
            "{shown:?}: status {}: {:?}",
            response.status,
            response.body
        );
        if response.body.is_empty() {
            // Only notifications (no id) go unanswered.
            continue;
        }
        let json = response
            .json
            .clone()
            .unwrap_or_else(|| panic!("{shown}: not JSON: {response:?}"));
        let answers = match json {
            Value::Array(items) => items,
            one => vec![one],
        };
        for answer in answers {
            let text = answer.to_string();
            targets::check_response(&shown, &text);
            if let Some(error) = answer.get("error") {
                assert!(
                    error["data"]["type"].is_string(),
                    "{shown}: no data.type: {text}"
                );
            }
        }
        if i % 64 == 0 {
            d.assert_alive().await;
        }
    }
    d.assert_alive().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn raw_bytes_on_the_socket_do_not_take_the_daemon_down() {
    let d = Daemon::start().await;
    for data in samples(64) {
        let mut stream = tokio::net::UnixStream::connect(&d.socket)
            .await
            .expect("connecting");
        // Garbage where the request line and headers should be: a 400 or a closed
        // connection, never a hang (the header timeout bounds it) or a crash.
        let _ = stream.write_all(&data).await;
        let _ = stream.write_all(b"\r\n\r\n").await;
        let mut answer = Vec::new();
        let read = tokio::time::timeout(
            crate::support::TIMEOUT + std::time::Duration::from_secs(5),
            stream.read_to_end(&mut answer),
        )
        .await;
        assert!(read.is_ok(), "the daemon neither answered nor closed");
        if !answer.is_empty() {
            assert!(answer.starts_with(b"HTTP/1.1 "), "{answer:?}");
        }
    }
    d.assert_alive().await;
}
