//! Knock's documented semantics that prefsd once answered differently (issue 23), through
//! the socket: unlocking with `"__strategy__": "merge"`, channel settings that must carry
//! conditions, what the tenant namespace shows (`settings.preferences`, custom properties),
//! the `run` namespace, and a recipient's `__typename` and timestamps.

use serde_json::{Value, json};

use crate::support::{Daemon, preference_set};

/// The only decision of a one-recipient, one-channel evaluation: `(send, reason)`.
async fn decide(d: &Daemon, params: Value) -> (bool, Value) {
    let result = d.call("preferences.evaluate", params).await;
    let channels = result["results"][0]["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("no channels: {result}"));
    assert_eq!(channels.len(), 1, "{result}");
    let send = channels[0]["send"].as_bool().expect("send is a bool");
    (send, channels[0]["reason"].clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strategy_merge_on_a_locked_tenant_default_node_unlocks_it() {
    let d = Daemon::start().await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "t1", "settings": { "preference_set": {
            "channel_types": { "__strategy__": "replace", "email": false } } } }),
    )
    .await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "t1",
                "preferences": { "channel_types": { "email": true } } }),
    )
    .await;
    let evaluate = json!({ "workflow": "w", "recipients": ["u1"], "tenant": "t1",
                           "channels": [{ "type": "email" }] });
    let read = json!({ "user_id": "u1", "tenant": "t1" });

    // Locked: the tenant's false wins over the user's true.
    let (send, reason) = decide(&d, evaluate.clone()).await;
    assert!(!send, "{reason}");
    assert_eq!(reason["layer"], "tenant:t1");
    let locked = d.call("users.getPreferences", read.clone()).await;
    assert_eq!(
        locked["channel_types"],
        json!({ "__strategy__": "replace", "email": false, "sms": false })
    );

    // Knock's way to remove the lock: merge `"__strategy__": "merge"` onto the node.
    let tenant = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "settings": { "preference_set": {
                "channel_types": { "__strategy__": "merge" } } } }),
        )
        .await;
    assert_eq!(
        tenant["settings"]["preference_set"],
        preference_set("t1", json!({ "channel_types": { "email": false } })),
        "the lock is gone, the value stays, and \"merge\" is not echoed"
    );
    let (send, reason) = decide(&d, evaluate).await;
    assert!(send, "the user's own choice applies again: {reason}");
    let unlocked = d.call("users.getPreferences", read).await;
    // The environment default of the test config turns sms off.
    assert_eq!(
        unlocked["channel_types"],
        json!({ "email": true, "sms": false })
    );
    let stored = d.call("tenants.get", json!({ "tenant_id": "t1" })).await;
    assert_eq!(
        stored["settings"]["preference_set"]["channel_types"],
        json!({ "email": false })
    );

    // A recipient may not write a strategy at all, "merge" included.
    d.call_err(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {
            "channel_types": { "__strategy__": "merge", "email": true } } }),
    )
    .await
    .assert_invalid("preferences.channel_types.__strategy__");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn channel_settings_without_a_conditions_list_are_refused_and_nothing_is_written() {
    let d = Daemon::start().await;
    let refused = [
        (
            json!({ "channel_types": { "email": {} } }),
            "preferences.channel_types.email",
        ),
        (
            json!({ "channel_types": { "push": { "conditions": null } } }),
            "preferences.channel_types.push",
        ),
        (
            json!({ "channels": { "ch1": {} } }),
            "preferences.channels.ch1",
        ),
        (
            json!({ "commercial_subscribed": {} }),
            "preferences.commercial_subscribed",
        ),
        (
            json!({ "categories": { "c": { "channel_types": { "sms": {} } } } }),
            "preferences.categories.c.channel_types.sms",
        ),
    ];
    for (preferences, field) in refused {
        let err = d
            .call_err(
                "users.setPreferences",
                json!({ "user_id": "u1", "preferences": preferences }),
            )
            .await;
        err.assert_invalid(field);
        assert!(
            err.data["errors"]
                .to_string()
                .contains("must carry conditions"),
            "the error says what is missing: {err:?}"
        );
    }
    assert_eq!(
        d.counts().await,
        json!({ "users": 0, "objects": 0, "tenants": 0, "preference_sets": 0 }),
        "nothing was written"
    );

    // A tenant default is held to the same shape.
    d.call_err(
        "tenants.set",
        json!({ "tenant_id": "t1",
                "settings": { "preference_set": { "commercial_subscribed": {} } } }),
    )
    .await
    .assert_invalid("settings.preference_set.commercial_subscribed");

    // Workflow and category settings keep their optional keys, and a list may be empty.
    let stored = d
        .call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {
                "workflows": { "w": {} },
                "channel_types": { "email": { "conditions": [] } } } }),
        )
        .await;
    assert_eq!(
        stored,
        preference_set(
            "default",
            json!({ "workflows": { "w": {} },
                    "channel_types": { "email": { "conditions": [] } } })
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_read_tenant_settings_preferences_and_custom_properties() {
    let d = Daemon::start().await;
    for (tenant, subscribed, tier) in [("t1", false, "free"), ("t2", true, "enterprise")] {
        d.call(
            "tenants.set",
            json!({ "tenant_id": tenant, "properties": { "tier": tier },
                    "settings": { "preference_set": { "commercial_subscribed": subscribed } } }),
        )
        .await;
    }
    // Knock's OpenAPI example: commercial_subscribed conditioned on the tenant's default.
    let condition = |variable: &str, argument: Value| json!({ "conditions": [{ "variable": variable, "operator": "equal_to", "argument": argument }] });
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {
            "commercial_subscribed":
                condition("tenant.settings.preferences.commercial_subscribed", json!(true)) } }),
    )
    .await;
    // With a tenant default, the user's set for that tenant applies (§4.2).
    for tenant in ["t1", "t2"] {
        d.call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": tenant, "preferences": {
                "workflows": { "premium-tips": condition("tenant.tier", json!("enterprise")) } } }),
        )
        .await;
    }
    let evaluate = |workflow: &str, tenant: &str| {
        json!({ "workflow": workflow, "recipients": ["u1"], "tenant": tenant,
                "channels": [{ "type": "email" }] })
    };

    let (send, reason) = decide(&d, evaluate("newsletter", "t1")).await;
    assert!(!send, "{reason}");
    assert_eq!(reason["code"], "commercial_unsubscribed");
    assert_eq!(reason["condition"]["resolved_variable"], false);
    let (send, reason) = decide(&d, evaluate("newsletter", "t2")).await;
    assert!(send, "{reason}");

    // A custom property reads at the top level of the tenant namespace.
    let (send, reason) = decide(&d, evaluate("premium-tips", "t1")).await;
    assert!(!send, "{reason}");
    assert_eq!(reason["condition"]["resolved_variable"], "free");
    let (send, reason) = decide(&d, evaluate("premium-tips", "t2")).await;
    assert!(send, "{reason}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_read_the_run_object_of_the_evaluation() {
    let d = Daemon::start().await;
    // Accepted at write time: a batched digest goes out only for enough activity.
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "workflows": { "digest": { "conditions": [
            { "variable": "run.total_activities", "operator": "greater_than_or_equal_to", "argument": 3 },
            { "variable": "run.total_actors", "operator": "less_than_or_equal_to", "argument": "run.total_activities" } ] } } } }),
    )
    .await;
    let evaluate = |run: Option<Value>| {
        let mut params = json!({ "workflow": "digest", "recipients": ["u1"],
                                 "channels": [{ "type": "email" }] });
        if let Some(run) = run {
            params["run"] = run;
        }
        params
    };

    let (send, reason) = decide(
        &d,
        evaluate(Some(json!({ "total_activities": 7, "total_actors": 2 }))),
    )
    .await;
    assert!(send, "{reason}");
    let (send, reason) = decide(&d, evaluate(Some(json!({ "total_activities": 1 })))).await;
    assert!(!send, "{reason}");
    assert_eq!(reason["code"], "condition_failed");
    assert_eq!(reason["condition"]["resolved_variable"], 1);
    // Without a run, every run.* path reads as "".
    let (send, reason) = decide(&d, evaluate(None)).await;
    assert!(!send, "{reason}");
    assert_eq!(reason["condition"]["resolved_variable"], "");

    d.call_err("preferences.evaluate", evaluate(Some(json!(7))))
        .await
        .assert_invalid("run");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conditions_read_a_recipients_typename_and_timestamps() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "properties": { "plan": "pro" } }),
    )
    .await;
    let user = d.call("users.get", json!({ "user_id": "u1" })).await;
    let equal = |variable: &str, argument: &Value| json!({ "variable": variable, "operator": "equal_to", "argument": argument });
    // Writing preferences does not change the user, so the timestamps read above hold.
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "workflows": { "w": { "conditions": [
            equal("recipient.__typename", &json!("User")),
            equal("recipient.created_at", &user["created_at"]),
            equal("recipient.updated_at", &user["updated_at"]) ] } } } }),
    )
    .await;
    // A created_at identified as a property is the user's created_at (Knock's identify).
    d.call(
        "users.identify",
        json!({ "user_id": "u2", "properties": { "created_at": "2020-01-01T00:00:00Z" },
                "preferences": { "default": { "workflows": { "w": { "conditions": [
                    { "variable": "recipient.created_at", "operator": "is_timestamp_before",
                      "argument": "2021-01-01" } ] } } } } }),
    )
    .await;
    d.call(
        "objects.set",
        json!({ "collection": "projects", "object_id": "p1",
                "preferences": { "default": { "workflows": { "w": { "conditions": [
                    equal("recipient.__typename", &json!("Object")) ] } } } } }),
    )
    .await;
    let params = json!({ "workflow": "w", "channels": [{ "type": "email" }],
                         "recipients": ["u1", "u2", { "collection": "projects", "id": "p1" }] });
    // Three times: read from the database, then (once admitted) from the read cache.
    for _ in 0..3 {
        let result = d.call("preferences.evaluate", params.clone()).await;
        for recipient in result["results"].as_array().expect("results") {
            assert_eq!(recipient["channels"][0]["send"], true, "{recipient}");
        }
    }

    // The same conditions fail once the user changes: updated_at moves on. Timestamps have
    // millisecond resolution; the pause makes sure the clock has passed the first one.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "properties": { "plan": "team" } }),
    )
    .await;
    let changed = d.call("users.get", json!({ "user_id": "u1" })).await;
    assert_ne!(changed["updated_at"], user["updated_at"]);
    assert_eq!(changed["created_at"], user["created_at"]);
    let (send, reason) = decide(
        &d,
        json!({ "workflow": "w", "recipients": ["u1"], "channels": [{ "type": "email" }] }),
    )
    .await;
    assert!(!send, "{reason}");
    assert_eq!(reason["condition"]["variable"], "recipient.updated_at");
    assert_eq!(
        reason["condition"]["resolved_variable"],
        changed["updated_at"]
    );
}
