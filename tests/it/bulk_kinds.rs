//! The bulk methods of rest.md §4.2 beside `users.bulkSetPreferences`: `users.bulkIdentify`,
//! `users.bulkDelete`, `objects.bulkSet`, `objects.bulkDelete`, `tenants.bulkSet`,
//! `tenants.bulkDelete`. Each item is applied as its single method would; an item that
//! fails is an error item; an absent delete is a success; the whole request is validated
//! before anything is queued; idempotency keys compare the method and params for 24 h.

use serde_json::{Value, json};

use crate::jobs::follow;
use crate::support::Daemon;

/// Queues a job with `method` and follows it to its end; returns the queued state and the
/// terminal one.
async fn run(daemon: &Daemon, method: &str, params: Value) -> (Value, Value) {
    let op = daemon.call(method, params).await;
    assert_eq!(op["status"], "queued", "{op}");
    let last = follow(daemon, op["id"].as_str().expect("an id"))
        .await
        .pop()
        .expect("a terminal state");
    assert_eq!(last["status"], "completed", "{last}");
    (op, last)
}

fn counts(op: &Value) -> (Value, Value, Value) {
    (
        op["processed_rows"].clone(),
        op["success_count"].clone(),
        op["error_count"].clone(),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_identify_applies_each_user_as_identify_and_reports_the_ones_that_fail() {
    let daemon = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[limits]\nmax_properties_bytes = 100\nmax_preference_set_bytes = 180\n[jobs]\nchunk_size = 2\n",
    )])
    .await;
    daemon
        .call(
            "users.identify",
            json!({ "user_id": "a", "properties": { "plan": "pro", "old": 1 },
                    "preferences": { "default": { "workflows": { "digest": false } } } }),
        )
        .await;
    daemon
        .call(
            "users.identify",
            json!({ "user_id": "e", "properties": { "v": 1 },
                    "preferences": { "default": { "workflows": { "a".repeat(40): false, "b".repeat(40): false } } } }),
        )
        .await;
    let (op, last) = run(
        &daemon,
        "users.bulkIdentify",
        json!({ "users": [
            { "id": "a", "properties": { "name": "A", "old": null },
              "preferences": { "default": { "channel_types": { "sms": true } } } },
            { "id": "b", "properties": { "big": "x".repeat(200) } },
            { "id": "c" },
            { "id": "d", "preferences": { "acme": { "__persistence_strategy__": "replace", "categories": { "marketing": true } } } },
            // Within the set limit alone, but not once merged with what is stored.
            { "id": "e", "properties": { "v": 2 },
              "preferences": { "default": { "categories": { "c".repeat(40): false, "d".repeat(40): false } } } }
        ] }),
    )
    .await;
    assert_eq!(op["name"], "users.identify");
    assert_eq!(op["estimated_total_rows"], 5);
    assert_eq!(counts(&last), (json!(5), json!(3), json!(2)));
    let items = last["error_items"].as_array().expect("error_items");
    assert_eq!(items.len(), 2, "{last}");
    assert_eq!(items[1]["id"], "e");
    assert!(
        items[1]["message"]
            .as_str()
            .is_some_and(|m| m.contains("users.4.preferences.default")),
        "{last}"
    );
    assert_eq!(items[0]["id"], "b");
    assert!(
        items[0]["message"]
            .as_str()
            .is_some_and(|m| m.contains("users.1.properties")),
        "the message names the item's field: {last}"
    );

    // As users.identify: properties merge shallowly (null deletes), sets merge.
    let a = daemon.call("users.get", json!({ "user_id": "a" })).await;
    assert_eq!(a["properties"], json!({ "plan": "pro", "name": "A" }));
    let set = daemon
        .call(
            "users.getPreferences",
            json!({ "user_id": "a", "raw": true }),
        )
        .await;
    assert_eq!(set["workflows"], json!({ "digest": false }));
    assert_eq!(set["channel_types"], json!({ "sms": true }));
    // The failed item wrote nothing; the others exist.
    daemon
        .call_err("users.get", json!({ "user_id": "b" }))
        .await
        .assert(-32001, "not_found");
    daemon.call("users.get", json!({ "user_id": "c" })).await;
    // Nothing of a failed item is written, not even the properties checked before its sets.
    let e = daemon.call("users.get", json!({ "user_id": "e" })).await;
    assert_eq!(e["properties"], json!({ "v": 1 }));
    let d = daemon
        .call(
            "users.getPreferences",
            json!({ "user_id": "d", "preference_set": "acme", "raw": true }),
        )
        .await;
    assert_eq!(d["categories"], json!({ "marketing": true }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_deletes_count_absent_items_as_deleted() {
    let daemon = Daemon::start().await;
    for id in ["a", "b"] {
        daemon
            .call(
                "users.setPreferences",
                json!({ "user_id": id, "preferences": {} }),
            )
            .await;
    }
    daemon
        .call(
            "audiences.addMembers",
            json!({ "audience_key": "aud", "members": [{ "user_id": "a" }] }),
        )
        .await;
    let (op, last) = run(
        &daemon,
        "users.bulkDelete",
        json!({ "user_ids": ["a", "ghost", "b", "a"] }),
    )
    .await;
    assert_eq!(op["name"], "users.delete");
    assert_eq!(counts(&last), (json!(4), json!(4), json!(0)));
    assert_eq!(last["error_items"], json!([]));
    assert_eq!(
        daemon.counts().await,
        json!({ "users": 0, "objects": 0, "tenants": 0, "preference_sets": 0 })
    );
    let members = daemon
        .call("audiences.listMembers", json!({ "audience_key": "aud" }))
        .await;
    assert_eq!(members["items"], json!([]), "memberships go with the user");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_bulk_set_and_delete_in_one_collection() {
    let daemon = Daemon::start().await;
    daemon
        .call(
            "objects.set",
            json!({ "collection": "teams", "object_id": "p1" }),
        )
        .await;
    let (op, last) = run(
        &daemon,
        "objects.bulkSet",
        json!({ "collection": "projects", "objects": [
            { "id": "p1", "properties": { "name": "One" } },
            { "id": "p2", "preferences": { "default": { "channel_types": { "email": false } } } }
        ] }),
    )
    .await;
    assert_eq!(op["name"], "objects.projects.set");
    assert_eq!(counts(&last), (json!(2), json!(2), json!(0)));
    let p1 = daemon
        .call(
            "objects.get",
            json!({ "collection": "projects", "object_id": "p1" }),
        )
        .await;
    assert_eq!(p1["properties"], json!({ "name": "One" }));
    let set = daemon
        .call(
            "objects.getPreferences",
            json!({ "collection": "projects", "object_id": "p2", "raw": true }),
        )
        .await;
    assert_eq!(set["channel_types"], json!({ "email": false }));

    let (op, last) = run(
        &daemon,
        "objects.bulkDelete",
        json!({ "collection": "projects", "object_ids": ["p1", "p2", "ghost"] }),
    )
    .await;
    assert_eq!(op["name"], "objects.projects.delete");
    assert_eq!(counts(&last), (json!(3), json!(3), json!(0)));
    // Only that collection: the team p1 stays.
    assert_eq!(daemon.counts().await["objects"], 1);
    daemon
        .call(
            "objects.get",
            json!({ "collection": "teams", "object_id": "p1" }),
        )
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_bulk_set_takes_ids_and_objects_and_bulk_delete_removes_them() {
    let daemon = Daemon::start().await;
    daemon
        .call(
            "tenants.set",
            json!({ "tenant_id": "t2", "name": "Old", "properties": { "region": "eu" },
                    "settings": { "preference_set": { "workflows": { "digest": false } } } }),
        )
        .await;
    let (op, last) = run(
        &daemon,
        "tenants.bulkSet",
        json!({ "tenants": [
            "t1",
            { "id": "t2", "name": "Two", "properties": { "seats": 3 },
              "settings": { "branding": { "primary_color": "#111" },
                            "preference_set": { "channel_types": { "sms": true } } } },
            { "id": "t3", "settings": { "preference_set": { "channel_types": { "__strategy__": "replace", "push": false } } } }
        ] }),
    )
    .await;
    assert_eq!(op["name"], "tenants.set");
    assert_eq!(counts(&last), (json!(3), json!(3), json!(0)));
    let t1 = daemon
        .call("tenants.get", json!({ "tenant_id": "t1" }))
        .await;
    assert!(t1["name"].is_null() && t1["settings"]["preference_set"].is_null());
    // As tenants.set: properties and the default set merge; branding is stored.
    let t2 = daemon
        .call("tenants.get", json!({ "tenant_id": "t2" }))
        .await;
    assert_eq!(t2["name"], "Two");
    assert_eq!(t2["properties"], json!({ "region": "eu", "seats": 3 }));
    assert_eq!(
        t2["settings"]["branding"],
        json!({ "primary_color": "#111" })
    );
    assert_eq!(
        t2["settings"]["preference_set"]["workflows"],
        json!({ "digest": false })
    );
    assert_eq!(
        t2["settings"]["preference_set"]["channel_types"],
        json!({ "sms": true })
    );
    let (op, last) = run(
        &daemon,
        "tenants.bulkDelete",
        json!({ "tenant_ids": ["t1", "t2", "never"] }),
    )
    .await;
    // A tenant write keeps its lock markers.
    let t3 = daemon
        .call("tenants.get", json!({ "tenant_id": "t3" }))
        .await;
    assert_eq!(
        t3["settings"]["preference_set"]["channel_types"],
        json!({ "__strategy__": "replace", "push": false })
    );
    assert_eq!(op["name"], "tenants.delete");
    assert_eq!(counts(&last), (json!(3), json!(3), json!(0)));
    assert_eq!(daemon.counts().await["tenants"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_bulk_method_validates_the_whole_request_before_queueing() {
    let daemon = Daemon::start().await;
    let many: Vec<String> = (0..1001).map(|i| format!("x{i}")).collect();
    let many_objects: Vec<Value> = many.iter().map(|id| json!({ "id": id })).collect();
    let cases: Vec<(&str, Value, &str)> = vec![
        ("users.bulkIdentify", json!({}), "users"),
        ("users.bulkIdentify", json!({ "users": [] }), "users"),
        ("users.bulkIdentify", json!({ "users": {} }), "users"),
        ("users.bulkIdentify", json!({ "users": ["a"] }), "users.0"),
        (
            "users.bulkIdentify",
            json!({ "users": [{ "name": "no id" }] }),
            "users.0",
        ),
        (
            "users.bulkIdentify",
            json!({ "users": [{ "id": "a", "extra": 1 }] }),
            "users.0",
        ),
        (
            "users.bulkIdentify",
            json!({ "users": [{ "id": "" }] }),
            "users.0.id",
        ),
        (
            "users.bulkIdentify",
            json!({ "users": [{ "id": "a" }, { "id": "b", "preferences": { "default": { "channel_types": { "fax": true } } } }] }),
            "users.1.preferences.default.channel_types.fax",
        ),
        (
            "users.bulkIdentify",
            json!({ "users": [{ "id": "a" }], "idempotency_key": "" }),
            "idempotency_key",
        ),
        ("users.bulkDelete", json!({}), "user_ids"),
        ("users.bulkDelete", json!({ "user_ids": [] }), "user_ids"),
        (
            "users.bulkDelete",
            json!({ "user_ids": ["a", ""] }),
            "user_ids.1",
        ),
        (
            "objects.bulkSet",
            json!({ "objects": [{ "id": "a" }] }),
            "collection",
        ),
        (
            "objects.bulkSet",
            json!({ "collection": "c", "objects": [{ "id": "a", "properties": 3 }] }),
            "objects.0",
        ),
        (
            "objects.bulkDelete",
            json!({ "collection": "c", "object_ids": [] }),
            "object_ids",
        ),
        (
            "objects.bulkDelete",
            json!({ "object_ids": ["a"] }),
            "collection",
        ),
        ("tenants.bulkSet", json!({ "tenants": [5] }), "tenants.0"),
        (
            "tenants.bulkSet",
            json!({ "tenants": [{ "name": "no id" }] }),
            "tenants.0",
        ),
        (
            "tenants.bulkSet",
            json!({ "tenants": ["ok", ""] }),
            "tenants.1.id",
        ),
        (
            "tenants.bulkSet",
            json!({ "tenants": [{ "id": "t", "preferences": {} }] }),
            "tenants.0",
        ),
        (
            "tenants.bulkSet",
            json!({ "tenants": [{ "id": "t", "settings": { "preference_set": { "channel_types": { "fax": true } } } }] }),
            "tenants.0.settings.preference_set.channel_types.fax",
        ),
        (
            "tenants.bulkDelete",
            json!({ "tenant_ids": [] }),
            "tenant_ids",
        ),
    ];
    for (method, params, field) in cases {
        let e = daemon.call_err(method, params.clone()).await;
        assert_eq!(e.kind(), "invalid_params", "{method} {params}: {e:?}");
        assert!(
            e.fields().iter().any(|f| f == field),
            "{method} {params}: expected field {field}, got {:?}",
            e.fields()
        );
    }
    for (method, params) in [
        ("users.bulkIdentify", json!({ "users": many_objects })),
        ("users.bulkDelete", json!({ "user_ids": many })),
        (
            "objects.bulkSet",
            json!({ "collection": "c", "objects": many_objects }),
        ),
        (
            "objects.bulkDelete",
            json!({ "collection": "c", "object_ids": many }),
        ),
        ("tenants.bulkSet", json!({ "tenants": many })),
        ("tenants.bulkDelete", json!({ "tenant_ids": many })),
    ] {
        daemon
            .call_err(method, params)
            .await
            .assert(-32004, "limit_exceeded");
    }
    let list = daemon.call("bulkOperations.list", json!({})).await;
    assert_eq!(list["items"], json!([]), "nothing was queued");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_answers_the_same_job_for_the_same_method_and_params_only() {
    let daemon = Daemon::start().await;
    let params =
        json!({ "users": [{ "id": "a", "properties": { "n": 1 } }], "idempotency_key": "k" });
    let first = daemon.call("users.bulkIdentify", params.clone()).await;
    follow(&daemon, first["id"].as_str().expect("an id")).await;
    let again = daemon.call("users.bulkIdentify", params).await;
    assert_eq!(again["id"], first["id"]);
    assert_eq!(again["status"], "completed", "its current state: {again}");
    // Other params, or the same payload through another method, conflict.
    daemon
        .call_err(
            "users.bulkIdentify",
            json!({ "users": [{ "id": "a", "properties": { "n": 2 } }], "idempotency_key": "k" }),
        )
        .await
        .assert(-32005, "conflict");
    daemon
        .call(
            "users.bulkDelete",
            json!({ "user_ids": ["x"], "idempotency_key": "d" }),
        )
        .await;
    // Its stored payload is the same text as this one's: only the method differs.
    daemon
        .call_err(
            "tenants.bulkDelete",
            json!({ "tenant_ids": ["x"], "idempotency_key": "d" }),
        )
        .await
        .assert(-32005, "conflict");
    let list = daemon.call("bulkOperations.list", json!({})).await;
    assert_eq!(list["items"].as_array().map(Vec::len), Some(2), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_kept_for_24_hours() {
    // SQLite only: it ages the job through the SQLite file.
    if !crate::support::on_sqlite() {
        return;
    }
    let mut daemon = Daemon::start().await;
    let first = daemon
        .call(
            "users.bulkDelete",
            json!({ "user_ids": ["x"], "idempotency_key": "old" }),
        )
        .await;
    let kept = daemon
        .call(
            "users.bulkDelete",
            json!({ "user_ids": ["x"], "idempotency_key": "old" }),
        )
        .await;
    assert_eq!(kept["id"], first["id"]);
    follow(&daemon, first["id"].as_str().expect("an id")).await;
    daemon.stop().await;
    // The job was queued 24 h and a minute ago.
    let then = jiff::Timestamp::now() - jiff::SignedDuration::from_mins(24 * 60 + 1);
    let then = prefsd::store::time::format_time(then);
    let conn = rusqlite::Connection::open(&daemon.database).expect("opening the database");
    conn.execute("UPDATE bulk_operations SET inserted_at = ?1", [&then])
        .expect("ageing the job");
    drop(conn);
    daemon.restart().await;
    // Past the window the key is free: other params queue a new job, and so do the same.
    let other = daemon
        .call(
            "users.bulkDelete",
            json!({ "user_ids": ["y"], "idempotency_key": "old" }),
        )
        .await;
    assert_ne!(other["id"], first["id"]);
    let same = daemon
        .call(
            "users.bulkDelete",
            json!({ "user_ids": ["y"], "idempotency_key": "old" }),
        )
        .await;
    assert_eq!(same["id"], other["id"], "the new job holds the key now");
    // The old job is still there to read.
    daemon
        .call("bulkOperations.get", json!({ "id": first["id"] }))
        .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_set_counts_what_it_creates_logs_what_it_changes_and_nothing_twice() {
    // On PostgreSQL a chunk's users are written by one statement and counted by statement
    // triggers (sql/postgres/0003_cheaper_bulk_writes.sql): the counts, the history and
    // the log must come out as item by item.
    let daemon = Daemon::start().await;
    let before = json!({ "workflows": { "a": true } });
    daemon
        .call(
            "users.setPreferences",
            json!({ "user_id": "u-0001", "preferences": before }),
        )
        .await;
    // A user stored without a set: the job inserts its set and keeps the user as it is.
    let identified = daemon
        .call(
            "users.identify",
            json!({ "user_id": "u-0002", "properties": { "name": "Ann" } }),
        )
        .await;
    // 600 users over three chunks, one of them given twice, one of them stored already
    // with a set, one without.
    let mut ids: Vec<String> = (0..600).map(|i| format!("u-{i:04}")).collect();
    ids.push("u-0002".to_string());
    let after = json!({ "workflows": { "b": false } });
    let params = json!({ "user_ids": ids, "preferences": after });
    let (_, last) = run(&daemon, "users.bulkSetPreferences", params.clone()).await;
    assert_eq!(counts(&last), (json!(601), json!(601), json!(0)));
    let expected = json!({ "users": 600, "objects": 0, "tenants": 0, "preference_sets": 600 });
    assert_eq!(daemon.counts().await, expected);
    let head = daemon.call("changes.list", json!({ "limit": 1 })).await["head"].clone();
    let sets = daemon
        .call(
            "changes.list",
            json!({ "kinds": ["preferences.set"], "limit": 1000 }),
        )
        .await;
    assert_eq!(
        sets["items"].as_array().map(Vec::len),
        Some(601),
        "one change per user written, and u-0001's first"
    );
    // The stored user's entry names the set it replaced; a new user's, none.
    let history = |user: &str| {
        daemon.call(
            "users.getPreferenceHistory",
            json!({ "user_id": user, "limit": 1 }),
        )
    };
    let entry = history("u-0001").await["items"][0].clone();
    assert_eq!(
        (&entry["before"]["workflows"], &entry["after"]["workflows"]),
        (&before["workflows"], &after["workflows"]),
        "{entry}"
    );
    let entry = history("u-0300").await["items"][0].clone();
    assert_eq!(entry["before"], Value::Null, "{entry}");
    let user = daemon
        .call("users.get", json!({ "user_id": "u-0002" }))
        .await;
    assert_eq!(
        (
            &user["properties"],
            &user["created_at"],
            &user["updated_at"]
        ),
        (
            &identified["properties"],
            &identified["created_at"],
            &identified["updated_at"]
        ),
        "a user the job found stored is neither created again nor changed: {user}"
    );
    let entry = history("u-0002").await["items"][0].clone();
    assert_eq!(entry["after"]["workflows"], after["workflows"], "{entry}");
    // The same job again changes nothing: no row counted, no change appended.
    run(&daemon, "users.bulkSetPreferences", params).await;
    assert_eq!(daemon.counts().await, expected);
    let again = daemon.call("changes.list", json!({ "limit": 1 })).await["head"].clone();
    assert_eq!(again, head, "a job that changes nothing appends nothing");
}
