//! `users.merge` (rest.md §4.2): one transaction; the target is created if absent, the
//! source's properties go under the target's, sets the target lacks are copied, audience
//! memberships move, and the source is deleted.

use serde_json::json;

use crate::support::Daemon;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_moves_what_the_target_lacks_and_deletes_the_source() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "anon", "properties": { "name": "Anon", "plan": "free", "ref": "ad" },
                "preferences": {
                    "default": { "channel_types": { "sms": true } },
                    "acme": { "workflows": { "digest": false } } } }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "jane", "properties": { "name": "Jane", "plan": "pro" },
                "preferences": { "default": { "channel_types": { "email": false } } } }),
    )
    .await;
    for audience in ["beta", "both"] {
        d.call(
            "audiences.addMembers",
            json!({ "audience_key": audience, "members": [{ "user_id": "anon" }] }),
        )
        .await;
    }
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "both", "members": [{ "user_id": "jane" }] }),
    )
    .await;

    let merged = d
        .call(
            "users.merge",
            json!({ "user_id": "jane", "from_user_id": "anon" }),
        )
        .await;
    assert_eq!(merged["id"], "jane");
    // Shallow, the target wins.
    assert_eq!(
        merged["properties"],
        json!({ "name": "Jane", "plan": "pro", "ref": "ad" })
    );
    // The target's own default stays; the set it lacked is copied.
    let sets = d
        .call("users.listPreferences", json!({ "user_id": "jane" }))
        .await;
    let ids: Vec<&str> = sets
        .as_array()
        .expect("sets")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect();
    assert_eq!(ids, ["default", "acme"]);
    assert_eq!(sets[0]["channel_types"], json!({ "email": false }));
    assert_eq!(sets[1]["workflows"], json!({ "digest": false }));
    for audience in ["beta", "both"] {
        let members = d
            .call("audiences.listMembers", json!({ "audience_key": audience }))
            .await;
        assert_eq!(
            members["items"],
            json!([{ "user_id": "jane" }]),
            "{audience}"
        );
    }
    d.call_err("users.get", json!({ "user_id": "anon" }))
        .await
        .assert(-32001, "not_found");
    assert_eq!(d.counts().await["users"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn merge_creates_the_target_and_refuses_an_absent_source_or_itself() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "src", "properties": { "a": 1 } }),
    )
    .await;
    let merged = d
        .call(
            "users.merge",
            json!({ "user_id": "new", "from_user_id": "src" }),
        )
        .await;
    assert_eq!(merged["properties"], json!({ "a": 1 }));
    d.call("users.get", json!({ "user_id": "new" })).await;
    // A retried merge whose first attempt committed: the source is gone.
    d.call_err(
        "users.merge",
        json!({ "user_id": "new", "from_user_id": "src" }),
    )
    .await
    .assert(-32001, "not_found");
    // An absent source creates nothing.
    d.call_err(
        "users.merge",
        json!({ "user_id": "other", "from_user_id": "ghost" }),
    )
    .await
    .assert(-32001, "not_found");
    d.call_err("users.get", json!({ "user_id": "other" }))
        .await
        .assert(-32001, "not_found");
    d.call_err(
        "users.merge",
        json!({ "user_id": "new", "from_user_id": "new" }),
    )
    .await
    .assert_invalid("from_user_id");
    d.call_err("users.merge", json!({ "user_id": "new" }))
        .await
        .assert_invalid("from_user_id");
    assert_eq!(d.counts().await["users"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_merge_past_the_properties_limit_changes_nothing() {
    let d = Daemon::start_with(&[(
        "prefsd.toml",
        "durability = \"normal\"\n[limits]\nmax_properties_bytes = 100\n",
    )])
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "a", "properties": { "x": "a".repeat(60) } }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "b", "properties": { "y": "b".repeat(60) } }),
    )
    .await;
    d.call_err(
        "users.merge",
        json!({ "user_id": "b", "from_user_id": "a" }),
    )
    .await
    .assert(-32004, "limit_exceeded");
    assert_eq!(d.counts().await["users"], 2, "all or nothing");
}
