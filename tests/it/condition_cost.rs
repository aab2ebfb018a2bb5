//! What list conditions may cost (issue 22.2): literal lists are capped at write time, a
//! comparison costs the two lists' lengths (not their product), a costly evaluation leaves
//! the async worker to other clients, and a call past the work budget is refused.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::support::{Daemon, PREFSD_TOML, wait_for};

/// `n` distinct list items.
fn items(prefix: &str, n: usize) -> Vec<Value> {
    (0..n).map(|i| json!(format!("{prefix}{i}"))).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_literal_list_over_1000_items_is_refused_at_write_time() {
    let d = Daemon::start().await;
    // The attack of issue 22: a 14 000-item literal list, well under the set size limit.
    let condition = json!({ "variable": "data.tags", "operator": "contains_all", "argument": items("t", 14_000) });
    let e = d
        .call_err(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": { "workflows": { "w": { "conditions": [condition] } } } }),
        )
        .await;
    e.assert_invalid("preferences.workflows.w.conditions.0.argument");
    assert!(e.data.to_string().contains("at most 1000 items"), "{e:?}");
    assert_eq!(d.counts().await["preference_sets"], 0);
}

/// The environment default of these tests: `new-comment` needs `data.have` to hold all of
/// 1000 items and to share one with another 1000, the largest literal lists allowed.
fn costly_environment() -> String {
    let condition = |operator: &str, prefix: &str| json!({ "variable": "data.have", "operator": operator, "argument": items(prefix, 1000) });
    json!({ "workflows": { "new-comment": { "conditions": [
        condition("contains_all", "w"),
        condition("contains", "x"),
    ] } } })
    .to_string()
}

/// `data.have`: `extra` items that match nothing, then every item the conditions look for,
/// so a pairwise comparison walks the whole variable list for each argument item.
fn costly_data(extra: usize) -> Value {
    let mut have = items("e", extra);
    have.extend(items("w", 1000));
    have.push(json!("x999"));
    json!({ "have": have })
}

/// `preferences.evaluate` of `new-comment` on email for `n` recipients, with
/// `costly_data(20_000)`.
fn costly_call(n: usize) -> Value {
    let recipients: Vec<String> = (0..n).map(|i| format!("u{i}")).collect();
    json!({
        "workflow": "new-comment",
        "recipients": recipients,
        "channels": [{ "type": "email" }],
        "data": costly_data(20_000),
    })
}

/// One worker thread, as `prefsd serve` runs on a 2-core machine: a call that held it would
/// hold up every other client.
#[tokio::test(flavor = "multi_thread", worker_threads = 1)]
async fn a_costly_evaluation_leaves_the_worker_to_other_clients() {
    let environment = costly_environment();
    let d = Daemon::start_with(&[("environment.json", &environment)]).await;
    let params = costly_call(40);
    let costly = async {
        let started = Instant::now();
        let result = d.call("preferences.evaluate", params).await;
        (started.elapsed(), result)
    };
    let pings = async {
        let mut slowest = Duration::ZERO;
        for _ in 0..20 {
            let started = Instant::now();
            d.call("daemon.ping", Value::Null).await;
            slowest = slowest.max(started.elapsed());
        }
        slowest
    };
    let ((elapsed, result), slowest_ping) = tokio::time::timeout(Duration::from_secs(60), async {
        tokio::join!(costly, pings)
    })
    .await
    .expect("the evaluation and the pings finish within a minute");
    // 40 recipients × 2 conditions × (21 001 + 1000) items: linear, a second or two in a
    // debug build on a loaded machine (pairwise it was 40 × 2 × 21 million comparisons).
    assert!(elapsed < Duration::from_secs(10), "took {elapsed:?}");
    for r in result["results"].as_array().expect("results") {
        assert_eq!(r["channels"][0]["send"], true, "{r}");
    }
    assert!(
        slowest_ping < Duration::from_secs(1),
        "a ping waited {slowest_ping:?} behind the evaluation"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_past_the_list_budget_is_refused() {
    let environment = costly_environment();
    // A budget a debug build spends in well under a second (the default is ten million).
    let toml = format!("{PREFSD_TOML}\n[limits]\nmax_list_items_per_call = 1000000\n");
    let d = Daemon::start_with(&[("environment.json", &environment), ("prefsd.toml", &toml)]).await;
    // 200 recipients × 2 × 22 001 items is over it; so is any 20 of them.
    let params = costly_call(200);
    let e = tokio::time::timeout(
        Duration::from_secs(60),
        d.call_err("preferences.evaluate", params),
    )
    .await
    .expect("refused within a minute");
    e.assert(-32004, "limit_exceeded");
    assert!(e.fields().contains(&"recipients".to_string()), "{e:?}");
    assert!(e.data.to_string().contains("list items"), "{e:?}");
    d.assert_alive().await;
}

/// A graceful stop does not wait for a costly evaluation in flight: it is cancelled (its
/// caller gets an error or a closed connection) and the daemon stops within seconds, where
/// it would otherwise spend the whole list budget (ten million items, many seconds in a
/// debug build) first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_does_not_wait_for_a_costly_evaluation() {
    let environment = costly_environment();
    let mut d = Daemon::start_with(&[("environment.json", &environment)]).await;
    let params = costly_call(1000);
    let socket = d.socket.clone();
    let call = tokio::spawn(async move {
        let mut conn = crate::support::HttpConn::connect(&socket).await;
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "preferences.evaluate", "params": params });
        conn.post_json(body.to_string()).await
    });
    // The call has begun once it has looked in the cache (and missed).
    wait_for("the evaluation to begin", || async {
        let cache = d.call("daemon.status", Value::Null).await["cache"].clone();
        (cache["misses"].as_u64() > Some(0)).then_some(())
    })
    .await;
    let started = Instant::now();
    d.stop().await;
    let elapsed = started.elapsed();
    assert!(
        elapsed < Duration::from_secs(5),
        "the stop took {elapsed:?}"
    );
    call.abort();
}

/// A costly evaluation whose caller goes away stops: the reader threads it ran on are free
/// for the next call at once, where they would otherwise finish the chunks they hold (here
/// with no budget to stop them: over ten seconds each in a debug build) for nobody.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_costly_evaluation_stops_when_its_caller_goes_away() {
    let environment = costly_environment();
    let toml = format!("{PREFSD_TOML}\n[limits]\nmax_list_items_per_call = 4000000000\n");
    let d = Daemon::start_with(&[("environment.json", &environment), ("prefsd.toml", &toml)]).await;
    let mut params = costly_call(1000);
    params["data"] = costly_data(60_000);
    let socket = d.socket.clone();
    let call = tokio::spawn(async move {
        let mut conn = crate::support::HttpConn::connect(&socket).await;
        let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "preferences.evaluate", "params": params });
        conn.post_json(body.to_string()).await
    });
    // Time for the daemon to read and parse the call and queue its first chunks. Nothing
    // observable says so without a read, and a read would queue behind those chunks. (Were
    // it not enough, nothing would be queued yet and the test would pass without showing
    // anything; it cannot fail for it.)
    tokio::time::sleep(Duration::from_millis(700)).await;
    // Aborting the task drops its connection; the daemon sees the end of the stream.
    call.abort();
    let _ = call.await;
    // 150 recipients with no list to compare (no `data.have`), read and decided in chunks
    // on the same reader threads, queued behind the abandoned call's.
    let recipients: Vec<String> = (0..150).map(|i| format!("v{i}")).collect();
    let started = Instant::now();
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": recipients, "channels": [{ "type": "email" }] }),
        )
        .await;
    let elapsed = started.elapsed();
    assert_eq!(result["results"].as_array().map(Vec::len), Some(150));
    assert!(
        elapsed < Duration::from_secs(3),
        "the next call waited {elapsed:?} behind the abandoned one"
    );
}
