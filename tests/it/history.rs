//! The change log (history.md): every kind and write path, `changes.list` paging and
//! filters, the preference history, erasure, and `changes.subscribe` across a restart.

use serde_json::{Value, json};

use crate::support::Daemon;

/// Every change after `after`, in order, through `changes.list` pages of `limit`.
async fn all_changes(d: &Daemon, after: i64, limit: u32) -> Vec<Value> {
    let mut out = Vec::new();
    let mut after = after;
    loop {
        let page = d
            .call("changes.list", json!({ "after": after, "limit": limit }))
            .await;
        let items = page["items"].as_array().expect("items").clone();
        assert!(
            items.len() <= limit as usize,
            "a page holds at most limit: {page}"
        );
        out.extend(items);
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => return out,
        }
    }
}

/// `(kind, recipient id or tenant or "", method)` of each change.
fn summary(changes: &[Value]) -> Vec<(String, String, String)> {
    changes
        .iter()
        .map(|c| {
            let who = c["recipient"]["id"]
                .as_str()
                .or(c["tenant"].as_str())
                .unwrap_or("")
                .to_string();
            (
                c["kind"].as_str().expect("kind").to_string(),
                who,
                c["method"].as_str().expect("method").to_string(),
            )
        })
        .collect()
}

fn s(kind: &str, who: &str, method: &str) -> (String, String, String) {
    (kind.into(), who.into(), method.into())
}

async fn head(d: &Daemon) -> i64 {
    d.call("changes.list", json!({ "limit": 1 })).await["head"]
        .as_i64()
        .expect("head")
}

#[tokio::test]
async fn every_write_path_appends_its_changes_and_a_call_that_changes_nothing_appends_none() {
    let d = Daemon::start().await;
    // The config in force at start-up is the first change.
    let start = all_changes(&d, 0, 100).await;
    assert_eq!(
        summary(&start),
        vec![s("config.applied", "", "config.reload")]
    );
    assert_eq!(start[0]["actor"], json!({ "type": "config" }));
    assert!(
        start[0]["value"]["hash"]
            .as_str()
            .is_some_and(|h| h.starts_with("sha256:"))
    );
    let after = head(&d).await;

    let set = json!({ "user_id": "dana", "preferences": { "categories": { "marketing": false } } });
    d.call("users.setPreferences", set.clone()).await;
    // The same set again, a merge that changes nothing, an unset of what is absent, a
    // delete of an absent user and an identify with the same properties: nothing.
    d.call("users.setPreferences", set).await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "dana", "preferences": { "__persistence_strategy__": "merge", "categories": { "marketing": false } } }),
    )
    .await;
    d.call(
        "users.unsetPreferences",
        json!({ "user_id": "dana", "preference_set": "acme" }),
    )
    .await;
    d.call("users.delete", json!({ "user_id": "nobody" })).await;
    d.call(
        "users.identify",
        json!({ "user_id": "dana", "properties": { "country": "DE" } }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "dana", "properties": { "country": "DE" } }),
    )
    .await;
    // A refused call appends nothing either.
    d.call_err(
        "users.setPreferences",
        json!({ "user_id": "dana", "preferences": { "channel_types": { "fax": true } } }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "eli", "properties": { "plan": "pro" }, "preferences": { "default": { "workflows": { "w": false } } } }),
    )
    .await;
    d.call(
        "objects.set",
        json!({ "collection": "projects", "object_id": "p1", "properties": { "name": "P" } }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "acme", "name": "Acme" }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "acme", "name": "Acme" }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "dana" }, { "user_id": "eli" }] }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "dana" }] }),
    )
    .await;
    d.call(
        "audiences.removeMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "eli" }] }),
    )
    .await;
    d.call(
        "users.unsetPreferences",
        json!({ "user_id": "eli", "preference_set": "default" }),
    )
    .await;
    d.call("tenants.delete", json!({ "tenant_id": "acme" }))
        .await;
    // Inline identify at evaluation: properties, a set and a tenant.
    d.call(
        "preferences.evaluate",
        json!({
            "workflow": "new-comment",
            "recipients": [{ "id": "fay", "properties": { "tz": "UTC" }, "preferences": { "default": { "channel_types": { "sms": false } } } }],
            "tenant": { "id": "globex", "name": "Globex" },
            "channels": [{ "type": "email" }],
        }),
    )
    .await;

    let changes = all_changes(&d, after, 3).await;
    assert_eq!(
        summary(&changes),
        vec![
            s("preferences.set", "dana", "users.setPreferences"),
            s("recipient.set", "dana", "users.identify"),
            s("recipient.set", "eli", "users.identify"),
            s("preferences.set", "eli", "users.identify"),
            s("recipient.set", "p1", "objects.set"),
            s("tenant.set", "acme", "tenants.set"),
            s("audience.add", "dana", "audiences.addMembers"),
            s("audience.add", "eli", "audiences.addMembers"),
            s("audience.remove", "eli", "audiences.removeMembers"),
            s("preferences.unset", "eli", "users.unsetPreferences"),
            s("tenant.delete", "acme", "tenants.delete"),
            s("tenant.set", "globex", "preferences.evaluate"),
            s("recipient.set", "fay", "preferences.evaluate"),
            s("preferences.set", "fay", "preferences.evaluate"),
        ]
    );
    // seq strictly increasing, at never backwards; one call's changes share one `at`.
    for pair in changes.windows(2) {
        assert!(
            pair[0]["seq"].as_i64() < pair[1]["seq"].as_i64(),
            "{pair:?}"
        );
        assert!(pair[0]["at"].as_str() <= pair[1]["at"].as_str(), "{pair:?}");
    }
    assert_eq!(
        changes[2]["at"], changes[3]["at"],
        "one transaction, one at"
    );
    // The values are the state after the change.
    assert_eq!(
        changes[0]["value"],
        json!({ "categories": { "marketing": false } })
    );
    assert_eq!(changes[0]["preference_set"], "default");
    assert_eq!(changes[1]["value"], json!({ "country": "DE" }));
    assert_eq!(
        changes[4]["recipient"],
        json!({ "id": "p1", "collection": "projects" })
    );
    assert_eq!(changes[5]["value"]["name"], "Acme");
    assert_eq!(changes[6]["audience"], "beta");
    assert_eq!(changes[9]["value"], Value::Null);
    assert_eq!(changes[10]["value"], Value::Null);
    assert_eq!(
        changes[13]["value"],
        json!({ "channel_types": { "sms": false } })
    );
    // An allowed peer without credentials.
    assert_eq!(changes[0]["actor"]["type"], "peer");
    assert!(changes[0]["actor"]["uid"].is_u64());
    assert_eq!(changes[0]["bulk_operation"], Value::Null);
}

#[tokio::test]
async fn a_secret_key_is_named_by_its_hash_prefix_never_by_the_key() {
    let d = Daemon::start_with(&[(
        "prefsd.toml",
        "[access]\nsecret_keys = [\"sk_test_history\"]\n",
    )])
    .await;
    let mut http = d.http().await;
    let body = json!({ "jsonrpc": "2.0", "id": 1, "method": "users.setPreferences",
        "params": { "user_id": "kim", "preferences": { "workflows": { "w": false } } } });
    let response = http
        .post(
            body.to_string(),
            &[
                ("authorization", "Bearer sk_test_history"),
                ("content-type", "application/json"),
            ],
        )
        .await;
    response.rpc().expect("the keyed call succeeds");
    let page = d
        .call("changes.list", json!({ "kinds": ["preferences.set"] }))
        .await;
    let actor = &page["items"][0]["actor"];
    // printf 'sk_test_history' | sha256sum | cut -c1-12
    let expected = format!(
        "sha256:{}",
        &prefsd::model::change::hex(&prefsd::model::change::sha256(b"sk_test_history"))[..12]
    );
    assert_eq!(*actor, json!({ "type": "secret_key", "key_id": expected }));
    assert!(!page.to_string().contains("sk_test_history"));
}

/// Runs a `users.bulkSetPreferences` job to completion; answers its id.
async fn bulk_set(d: &Daemon, users: &[String], preferences: Value) -> String {
    let op = d
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": users, "preferences": preferences }),
        )
        .await;
    let id = op["id"].as_str().expect("an operation id").to_string();
    crate::support::wait_for("the job to complete", || async {
        let op = d.call("bulkOperations.get", json!({ "id": id })).await;
        (op["status"] == "completed").then_some(())
    })
    .await;
    id
}

#[tokio::test]
async fn a_bulk_job_writes_one_change_per_user_with_its_operation_as_actor() {
    let d = Daemon::start().await;
    let after = head(&d).await;
    let users: Vec<String> = (0..25).map(|i| format!("bulk-{i}")).collect();
    let id = bulk_set(&d, &users, json!({ "channel_types": { "sms": false } })).await;
    let changes = all_changes(&d, after, 1000).await;
    assert_eq!(changes.len(), 25);
    for (i, c) in changes.iter().enumerate() {
        assert_eq!(c["kind"], "preferences.set");
        assert_eq!(
            c["recipient"]["id"],
            format!("bulk-{i}"),
            "in the order of user_ids"
        );
        assert_eq!(c["actor"], json!({ "type": "bulk_operation", "id": id }));
        assert_eq!(c["bulk_operation"], json!(id));
        assert_eq!(c["method"], "users.bulkSetPreferences");
    }
}

/// A single write's value is kept in its change's row, unless it is longer than 1 KiB; a
/// bulk job's is stored once by content (`sql/0006_inline_change_values.sql`). Both read back alike, in the log, the
/// preference history and `as_of`, and erasure leaves neither behind.
#[tokio::test]
async fn a_single_writes_value_is_kept_in_its_row_and_a_bulk_jobs_once_by_content() {
    // SQLite only: it counts the stored values through the SQLite file.
    if !crate::support::on_sqlite() {
        return;
    }
    let d = Daemon::start().await;
    let set = |n: i64| json!({ "user_id": "solo", "preferences": { "workflows": { "w": { "channel_types": { "sms": n > 1 } } }, "categories": { format!("c{n}"): true } } });
    d.call("users.setPreferences", set(1)).await;
    let t1 = instant(&d).await;
    d.call("users.setPreferences", set(2)).await;
    let users: Vec<String> = (0..3).map(|i| format!("many-{i}")).collect();
    bulk_set(&d, &users, json!({ "channel_types": { "push": false } })).await;
    let stored = |sql: &str| -> i64 {
        let conn = rusqlite::Connection::open(&d.database).expect("opening the database");
        conn.query_row(sql, [], |r| r.get(0)).expect("a count")
    };
    // The job's one set by content, once; the config's value and solo's two in their rows.
    assert_eq!(stored("SELECT count(*) FROM change_values"), 1);
    assert_eq!(
        stored("SELECT count(*) FROM changes WHERE value_text IS NOT NULL"),
        3
    );
    assert_eq!(
        stored("SELECT count(*) FROM changes WHERE value IS NOT NULL AND value_text IS NOT NULL"),
        0
    );
    let changes = all_changes(&d, 0, 1000).await;
    let values: Vec<&Value> = changes
        .iter()
        .filter(|c| c["kind"] == "preferences.set")
        .map(|c| &c["value"]["categories"])
        .collect();
    assert_eq!(
        values,
        vec![
            &json!({ "c1": true }),
            &json!({ "c2": true }),
            &Value::Null,
            &Value::Null,
            &Value::Null
        ]
    );
    assert_eq!(
        changes.last().expect("the job's")["value"]["channel_types"],
        json!({ "push": false })
    );
    let history = d
        .call("users.getPreferenceHistory", json!({ "user_id": "solo" }))
        .await;
    assert_eq!(
        history["items"][0]["before"]["categories"],
        json!({ "c1": true })
    );
    assert_eq!(
        history["items"][0]["after"]["categories"],
        json!({ "c2": true })
    );
    let then = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "solo", "raw": true, "as_of": t1 }),
        )
        .await;
    assert_eq!(then["categories"], json!({ "c1": true }));
    let now = instant(&d).await;
    let many = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "many-1", "raw": true, "as_of": now }),
        )
        .await;
    assert_eq!(many["channel_types"], json!({ "push": false }));
    // A value past 1 KiB goes by content even from a single write.
    let blob = "x".repeat(2000);
    d.call(
        "users.identify",
        json!({ "user_id": "large", "properties": { "blob": blob } }),
    )
    .await;
    assert_eq!(stored("SELECT count(*) FROM change_values"), 2);
    let then = d
        .call(
            "users.get",
            json!({ "user_id": "large", "as_of": instant(&d).await }),
        )
        .await;
    assert_eq!(then["properties"]["blob"], json!(blob));
    // Erasure: solo's values go with its changes, large's with its one; the job's value
    // stays while others name it.
    d.call("users.delete", json!({ "user_id": "solo" })).await;
    d.call("users.delete", json!({ "user_id": "many-0" })).await;
    d.call("users.delete", json!({ "user_id": "large" })).await;
    assert_eq!(
        stored(
            "SELECT count(*) FROM changes WHERE value_text LIKE '%c1%' OR value_text LIKE '%c2%'"
        ),
        0
    );
    assert_eq!(stored("SELECT refs FROM change_values"), 2);
}

#[tokio::test]
async fn a_config_reload_appends_config_applied_with_the_new_hash() {
    let d = Daemon::start().await;
    let before = d
        .call("changes.list", json!({ "kinds": ["config.applied"] }))
        .await;
    assert_eq!(before["items"].as_array().map(Vec::len), Some(1));
    std::fs::write(
        d.config_dir.join("environment.json"),
        r#"{ "channel_types": { "sms": false } }"#,
    )
    .expect("writing the environment default");
    d.call("config.reload", Value::Null).await;
    let after = d
        .call("changes.list", json!({ "kinds": ["config.applied"] }))
        .await;
    let items = after["items"].as_array().expect("items");
    assert_eq!(items.len(), 2, "{after}");
    assert_ne!(items[0]["value"]["hash"], items[1]["value"]["hash"]);
    assert_eq!(items[1]["actor"], json!({ "type": "config" }));
}

#[tokio::test]
async fn filters_and_pages_name_what_they_select() {
    let d = Daemon::start().await;
    for i in 0..5 {
        d.call("users.setPreferences", json!({ "user_id": format!("u{i}"), "preferences": { "workflows": { "w": i % 2 == 0 } } }))
            .await;
        d.call(
            "users.identify",
            json!({ "user_id": "u0", "properties": { "n": i } }),
        )
        .await;
    }
    let u0 = d
        .call("changes.list", json!({ "recipient": { "id": "u0" } }))
        .await;
    assert_eq!(u0["items"].as_array().map(Vec::len), Some(6), "{u0}");
    let sets = d
        .call(
            "changes.list",
            json!({ "kinds": ["preferences.set"], "limit": 2 }),
        )
        .await;
    assert_eq!(sets["items"].as_array().map(Vec::len), Some(2));
    let next = sets["next"].as_i64().expect("a next page");
    let rest = d
        .call(
            "changes.list",
            json!({ "kinds": ["preferences.set"], "after": next }),
        )
        .await;
    assert_eq!(rest["items"].as_array().map(Vec::len), Some(3));
    assert_eq!(rest["next"], Value::Null);
    assert_eq!(rest["head"], sets["head"]);
    // Bad params name the field.
    d.call_err("changes.list", json!({ "kinds": ["preferences.changed"] }))
        .await
        .assert_invalid("kinds.0");
    d.call_err("changes.list", json!({ "limit": 1001 }))
        .await
        .assert_invalid("limit");
    d.call_err("changes.list", json!({ "recipient": { "id": "" } }))
        .await
        .assert_invalid("recipient.id");
}

#[tokio::test]
async fn the_preference_history_shows_each_set_before_and_after_newest_first() {
    let d = Daemon::start().await;
    let set = |prefs: Value| json!({ "user_id": "lee", "preferences": prefs });
    d.call(
        "users.setPreferences",
        set(json!({ "workflows": { "a": false } })),
    )
    .await;
    d.call(
        "users.setPreferences",
        set(json!({ "__persistence_strategy__": "merge", "workflows": { "b": false } })),
    )
    .await;
    d.call("users.setPreferences", json!({ "user_id": "lee", "preference_set": "acme", "preferences": { "channel_types": { "sms": false } } }))
        .await;
    d.call(
        "users.unsetPreferences",
        json!({ "user_id": "lee", "preference_set": "default" }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "lee", "properties": { "x": 1 } }),
    )
    .await;

    let all = d
        .call("users.getPreferenceHistory", json!({ "user_id": "lee" }))
        .await;
    let items = all["items"].as_array().expect("items");
    let kinds: Vec<(&str, &str)> = items
        .iter()
        .map(|e| {
            (
                e["kind"].as_str().unwrap_or(""),
                e["preference_set"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("preferences.unset", "default"),
            ("preferences.set", "acme"),
            ("preferences.set", "default"),
            ("preferences.set", "default"),
        ]
    );
    assert_eq!(
        items[0]["before"],
        json!({ "workflows": { "a": false, "b": false } })
    );
    assert_eq!(items[0]["after"], Value::Null);
    assert_eq!(items[2]["before"], json!({ "workflows": { "a": false } }));
    assert_eq!(
        items[2]["after"],
        json!({ "workflows": { "a": false, "b": false } })
    );
    assert_eq!(items[3]["before"], Value::Null);
    // One set, a page at a time.
    let page = d
        .call(
            "users.getPreferenceHistory",
            json!({ "user_id": "lee", "preference_set": "default", "limit": 2 }),
        )
        .await;
    assert_eq!(page["items"].as_array().map(Vec::len), Some(2));
    let older = d
        .call(
            "users.getPreferenceHistory",
            json!({ "user_id": "lee", "preference_set": "default", "before": page["next"] }),
        )
        .await;
    assert_eq!(older["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(older["next"], Value::Null);
    // Objects too; nobody's history is empty, not an error.
    d.call(
        "objects.setPreferences",
        json!({ "collection": "projects", "object_id": "p", "preferences": {} }),
    )
    .await;
    let object = d
        .call(
            "objects.getPreferenceHistory",
            json!({ "collection": "projects", "object_id": "p" }),
        )
        .await;
    assert_eq!(object["items"].as_array().map(Vec::len), Some(1));
    let nobody = d
        .call("users.getPreferenceHistory", json!({ "user_id": "nobody" }))
        .await;
    assert_eq!(nobody, json!({ "items": [], "next": null }));
}

#[tokio::test]
async fn deleting_a_recipient_erases_its_history_and_leaves_one_id_only_change() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "gone", "properties": { "email": "gone@example.com" }, "preferences": { "default": { "commercial_subscribed": false } } }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "a", "members": [{ "user_id": "gone" }] }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "stays", "properties": { "email": "stays@example.com" } }),
    )
    .await;
    d.call("users.delete", json!({ "user_id": "gone" })).await;
    let changes = all_changes(&d, 0, 1000).await;
    let about: Vec<&Value> = changes
        .iter()
        .filter(|c| c["recipient"]["id"] == "gone")
        .collect();
    assert_eq!(about.len(), 1, "{about:?}");
    assert_eq!(about[0]["kind"], "recipient.delete");
    assert_eq!(about[0]["value"], Value::Null);
    assert_eq!(about[0]["recipient"], json!({ "id": "gone" }));
    let text = serde_json::to_string(&changes).expect("json");
    assert!(!text.contains("gone@example.com"), "erased: {text}");
    assert!(text.contains("stays@example.com"), "others keep theirs");
    let history = d
        .call("users.getPreferenceHistory", json!({ "user_id": "gone" }))
        .await;
    assert_eq!(history["items"], json!([]));
}

/// Erasing the recipient whose change is the newest deletes that change; the id-only
/// change erasure appends must still come after it, or a subscriber resuming after the
/// erased seq would never see the erasure. (The writer numbers changes itself since
/// schema 7, `sql/0007_changes_seq_by_hand.sql`; left to SQLite, the new row took the
/// erased one's seq.)
#[tokio::test]
async fn erasing_the_newest_change_never_gives_its_seq_again() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "newest", "preferences": { "categories": { "c": false } } }),
    )
    .await;
    let erased = head(&d).await;
    let page = d
        .call("changes.list", json!({ "after": erased - 1, "limit": 10 }))
        .await;
    assert_eq!(page["items"][0]["recipient"]["id"], "newest", "{page}");
    d.call("users.delete", json!({ "user_id": "newest" })).await;
    let page = d
        .call("changes.list", json!({ "after": erased, "limit": 10 }))
        .await;
    let items = page["items"].as_array().expect("items");
    assert_eq!(
        items.len(),
        1,
        "the erasure comes after seq {erased}: {page}"
    );
    assert_eq!(items[0]["kind"], "recipient.delete", "{page}");
    assert_eq!(items[0]["seq"], json!(erased + 1), "{page}");
    assert_eq!(page["head"], json!(erased + 1), "{page}");
}

#[tokio::test]
async fn a_subscriber_gets_the_backlog_then_live_changes_and_resumes_by_seq_across_a_restart() {
    let mut d = Daemon::start().await;
    let start = head(&d).await;
    for i in 0..3 {
        d.call(
            "users.setPreferences",
            json!({ "user_id": format!("s{i}"), "preferences": {} }),
        )
        .await;
    }
    let mut seen: Vec<i64> = Vec::new();
    {
        let client = d.ws().await;
        let mut sub = client
            .subscribe_changes(Some(start))
            .await
            .expect("subscribing");
        for i in 3..6 {
            d.call(
                "users.setPreferences",
                json!({ "user_id": format!("s{i}"), "preferences": {} }),
            )
            .await;
        }
        while seen.len() < 6 {
            let change = sub
                .next()
                .await
                .expect("a change")
                .expect("a change object");
            seen.push(change["seq"].as_i64().expect("seq"));
        }
    }
    let last = *seen.last().expect("changes");
    d.restart().await;
    // Written while nobody listened (the restart's config.applied among them).
    for i in 6..8 {
        d.call(
            "users.setPreferences",
            json!({ "user_id": format!("s{i}"), "preferences": {} }),
        )
        .await;
    }
    let client = d.ws().await;
    let mut sub = client
        .subscribe_changes(Some(last))
        .await
        .expect("resubscribing");
    d.call(
        "users.setPreferences",
        json!({ "user_id": "s8", "preferences": {} }),
    )
    .await;
    let expected: Vec<i64> = all_changes(&d, start, 1000)
        .await
        .iter()
        .map(|c| c["seq"].as_i64().expect("seq"))
        .collect();
    while seen.len() < expected.len() {
        let change = sub
            .next()
            .await
            .expect("a change")
            .expect("a change object");
        seen.push(change["seq"].as_i64().expect("seq"));
    }
    assert_eq!(seen, expected, "no gap, no repeat");
}

/// The `at` of the newest change, after a pause that gives the next write a later `at`
/// (the log's clock has millisecond steps).
async fn instant(d: &Daemon) -> String {
    let head = head(d).await;
    let page = d.call("changes.list", json!({ "after": head - 1 })).await;
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    page["items"][0]["at"].as_str().expect("an at").to_string()
}

/// `(send, reason code)` of one recipient's one channel.
async fn decide(d: &Daemon, params: Value) -> (bool, String) {
    let result = d.call("preferences.evaluate", params).await;
    let channel = &result["results"][0]["channels"][0];
    (
        channel["send"].as_bool().expect("send"),
        channel["reason"]["code"]
            .as_str()
            .expect("code")
            .to_string(),
    )
}

#[tokio::test]
async fn as_of_answers_as_the_daemon_would_have_then() {
    let d = Daemon::start_with(&[(
        "workflows.toml",
        "[[workflow]]\nkey = \"digest\"\ncategories = [\"news\"]\n",
    )])
    .await;
    let eval = |as_of: &str| json!({ "workflow": "digest", "recipients": ["ann"], "channels": [{ "type": "email" }], "as_of": as_of });
    d.call(
        "users.identify",
        json!({ "user_id": "ann", "properties": { "plan": "free" } }),
    )
    .await;
    let t0 = instant(&d).await;
    // A set: opted out of the workflow's category.
    d.call(
        "users.setPreferences",
        json!({ "user_id": "ann", "preferences": { "categories": { "news": false } } }),
    )
    .await;
    let t1 = instant(&d).await;
    assert!(decide(&d, eval(&t0)).await.0);
    assert_eq!(decide(&d, eval(&t1)).await, (false, "opted_out".into()));
    // The set as it was, in every read.
    let sets = d
        .call(
            "users.listPreferences",
            json!({ "user_id": "ann", "as_of": t0 }),
        )
        .await;
    assert_eq!(sets, json!([]));
    let get = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "ann", "as_of": t1, "raw": true }),
        )
        .await;
    assert_eq!(get["categories"], json!({ "news": false }));

    // A property used by a condition.
    d.call("users.setPreferences", json!({ "user_id": "ann", "preferences": { "__persistence_strategy__": "merge",
        "channel_types": { "email": { "conditions": [{ "variable": "recipient.plan", "operator": "equal_to", "argument": "pro" }] } } } }))
        .await;
    let t2 = instant(&d).await;
    d.call(
        "users.identify",
        json!({ "user_id": "ann", "properties": { "plan": "pro" } }),
    )
    .await;
    let t3 = instant(&d).await;
    let email = |as_of: &str| json!({ "workflow": "other", "recipients": ["ann"], "channels": [{ "type": "email" }], "as_of": as_of });
    assert!(!decide(&d, email(&t2)).await.0);
    assert!(decide(&d, email(&t3)).await.0);
    let then = d
        .call("users.get", json!({ "user_id": "ann", "as_of": t2 }))
        .await;
    assert_eq!(then["properties"], json!({ "plan": "free" }));

    // An audience membership used by a condition.
    d.call("users.setPreferences", json!({ "user_id": "ann", "preferences": { "__persistence_strategy__": "merge",
        "channel_types": { "sms": { "conditions": [{ "variable": "recipient.id", "operator": "is_audience_member", "argument": "beta" }] } } } }))
        .await;
    let t4 = instant(&d).await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "ann" }] }),
    )
    .await;
    let t5 = instant(&d).await;
    let sms = |as_of: &str| json!({ "workflow": "other", "recipients": ["ann"], "channels": [{ "type": "sms" }], "as_of": as_of });
    assert!(!decide(&d, sms(&t4)).await.0);
    assert!(decide(&d, sms(&t5)).await.0);

    // A tenant default.
    d.call("tenants.set", json!({ "tenant_id": "initech", "settings": { "preference_set": { "channel_types": { "push": false } } } }))
        .await;
    let t6 = instant(&d).await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "initech", "settings": { "preference_set": null } }),
    )
    .await;
    let t7 = instant(&d).await;
    let push = |as_of: &str| json!({ "workflow": "other", "recipients": ["ann"], "tenant": "initech", "channels": [{ "type": "push" }], "as_of": as_of });
    assert!(!decide(&d, push(&t6)).await.0);
    assert!(decide(&d, push(&t7)).await.0);
    let tenant = d
        .call(
            "tenants.get",
            json!({ "tenant_id": "initech", "as_of": t6 }),
        )
        .await;
    assert_eq!(
        tenant["settings"]["preference_set"]["channel_types"],
        json!({ "push": false })
    );
    d.call_err(
        "tenants.get",
        json!({ "tenant_id": "initech", "as_of": t0 }),
    )
    .await
    .assert(-32001, "not_found");

    // The config: the workflow's categories changed by a reload.
    std::fs::write(
        d.config_dir.join("workflows.toml"),
        "[[workflow]]\nkey = \"digest\"\ncategories = [\"product\"]\n",
    )
    .expect("writing the catalog");
    d.call("config.reload", Value::Null).await;
    let t8 = instant(&d).await;
    assert_eq!(decide(&d, eval(&t7)).await, (false, "opted_out".into()));
    assert!(decide(&d, eval(&t8)).await.0, "digest is no longer in news");
    // Without as_of, as now.
    let now =
        json!({ "workflow": "digest", "recipients": ["ann"], "channels": [{ "type": "email" }] });
    assert!(decide(&d, now).await.0);
}

#[tokio::test]
async fn as_of_refuses_the_future_inline_writes_and_answers_nothing_of_an_erased_recipient() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "zed", "properties": { "a": 1 } }),
    )
    .await;
    let t0 = instant(&d).await;
    d.call("users.delete", json!({ "user_id": "zed" })).await;
    d.call_err("users.get", json!({ "user_id": "zed", "as_of": t0 }))
        .await
        .assert(-32001, "not_found");
    let future = jiff::Timestamp::now() + jiff::SignedDuration::from_secs(60);
    d.call_err(
        "users.get",
        json!({ "user_id": "zed", "as_of": future.to_string() }),
    )
    .await
    .assert_invalid("as_of");
    d.call_err(
        "users.get",
        json!({ "user_id": "zed", "as_of": "yesterday" }),
    )
    .await
    .assert_invalid("as_of");
    let inline = d
        .call_err(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": [{ "id": "zed", "properties": { "a": 2 } }], "as_of": t0 }),
        )
        .await;
    inline.assert_invalid("recipients.0.properties");
    // Nothing was written.
    d.call_err("users.get", json!({ "user_id": "zed" }))
        .await
        .assert(-32001, "not_found");
    // `now` defaults to as_of.
    let at = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "w", "recipients": ["zed"], "channels": [{ "type": "email" }], "as_of": t0, "data": {} }),
        )
        .await;
    assert!(at["results"][0]["channels"][0]["send"].as_bool().is_some());
}

#[tokio::test]
async fn retention_prunes_all_but_the_newest_change_of_each_key_and_refuses_what_it_cut() {
    // SQLite only: it ages the changes through the SQLite file.
    if !crate::support::on_sqlite() {
        return;
    }
    let mut d = Daemon::start_with(&[("prefsd.toml", "[history]\nretention_days = 1\n")]).await;
    let set =
        |id: &str, on: bool| json!({ "user_id": id, "preferences": { "workflows": { "w": on } } });
    d.call("users.setPreferences", set("old", false)).await;
    d.call("users.setPreferences", set("old", true)).await;
    d.call("users.setPreferences", set("other", false)).await;
    let old_head = head(&d).await;
    d.stop().await;
    // Ten days pass for those changes.
    {
        let conn = rusqlite::Connection::open(&d.database).expect("opening the database");
        conn.execute(
            "UPDATE changes SET at = at - 864000000 WHERE seq <= ?1",
            [old_head],
        )
        .expect("ageing the changes");
        conn.execute_batch(
            "UPDATE recipients SET created_at = strftime('%Y-%m-%dT%H:%M:%fZ', created_at, '-10 days'),
                                   updated_at = strftime('%Y-%m-%dT%H:%M:%fZ', updated_at, '-10 days');",
        )
        .expect("ageing the recipients");
    }
    d.restart().await;
    d.call("users.setPreferences", set("new", false)).await;
    // Pruning runs at start-up, beside the calls.
    let kept = crate::support::wait_for("the log to be pruned", || async {
        let page = d.call("changes.list", json!({ "after": old_head })).await;
        let retained = d.try_call("changes.list", json!({ "after": 0 })).await;
        retained.is_err().then_some(page)
    })
    .await;
    assert!(kept["items"].as_array().is_some_and(|i| !i.is_empty()));
    let truncated = d.call_err("changes.list", json!({ "after": 0 })).await;
    truncated.assert(-32007, "history_truncated");
    let conn = rusqlite::Connection::open(&d.database).expect("opening the database");
    let mut stmt = conn
        .prepare("SELECT kind, recipient_id FROM changes WHERE seq <= ?1 ORDER BY seq")
        .expect("a query");
    let old: Vec<(String, Option<String>)> = stmt
        .query_map([old_head], |r| Ok((r.get(0)?, r.get(1)?)))
        .expect("the old changes")
        .collect::<Result<_, _>>()
        .expect("rows");
    // The newest of each key stays: old's second set, other's set, the first config.
    assert_eq!(
        old,
        vec![
            ("config.applied".to_string(), None),
            ("preferences.set".to_string(), Some("old".to_string())),
            ("preferences.set".to_string(), Some("other".to_string())),
        ]
    );
    // An instant inside the window is answered from what was kept; one before it is not.
    let inside = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(1)).to_string();
    let sets = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "old", "raw": true, "as_of": inside }),
        )
        .await;
    assert_eq!(sets["workflows"], json!({ "w": true }));
    let before = (jiff::Timestamp::now() - jiff::SignedDuration::from_hours(48)).to_string();
    let error = d
        .call_err("users.get", json!({ "user_id": "old", "as_of": before }))
        .await;
    error.assert(-32007, "history_truncated");
    assert!(
        error.data["retained_from"]
            .as_str()
            .is_some_and(|t| !t.is_empty())
    );
}
