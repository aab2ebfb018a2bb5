//! Every method of rpc.md but the bulk ones, over HTTP, with concrete results.

use serde_json::{Value, json};

use crate::support::{Daemon, preference_set, timestamp};

/// The result of one `preferences.evaluate` channel: `(type, id, send, reason code, path,
/// layer)`.
type Decision = (String, Value, bool, String, Value, Value);

fn decisions(result: &Value, recipient: usize) -> Vec<Decision> {
    result["results"][recipient]["channels"]
        .as_array()
        .unwrap_or_else(|| panic!("no channels for recipient {recipient}: {result}"))
        .iter()
        .map(|c| {
            let keys: Vec<&String> = c.as_object().expect("a channel object").keys().collect();
            assert_eq!(
                keys.len(),
                4,
                "a channel result has type, id, send, reason: {c}"
            );
            let reason = &c["reason"];
            assert_eq!(
                reason.as_object().map(|r| r.len()),
                Some(5),
                "a reason has code, path, layer, condition, considered: {reason}"
            );
            assert!(
                reason["considered"]
                    .as_array()
                    .is_some_and(|layers| layers.iter().all(Value::is_string)),
                "considered is a list of layer names: {reason}"
            );
            (
                c["type"].as_str().expect("type").to_string(),
                c["id"].clone(),
                c["send"].as_bool().expect("send is a bool"),
                reason["code"].as_str().expect("reason.code").to_string(),
                reason["path"].clone(),
                reason["layer"].clone(),
            )
        })
        .collect()
}

fn sent(channel: &str) -> Decision {
    (
        channel.into(),
        Value::Null,
        true,
        "opted_in".into(),
        Value::Null,
        Value::Null,
    )
}

fn blocked(channel: &str, code: &str, path: &str, layer: &str) -> Decision {
    (
        channel.into(),
        Value::Null,
        false,
        code.into(),
        json!(path),
        json!(layer),
    )
}

/// The only decision of a one-recipient, one-channel evaluation: `(send, code)`.
async fn decide(d: &Daemon, params: Value) -> (bool, String) {
    let result = d.call("preferences.evaluate", params).await;
    let all = decisions(&result, 0);
    assert_eq!(all.len(), 1, "{result}");
    (all[0].2, all[0].3.clone())
}

fn sorted_by_id(mut sets: Vec<Value>) -> Vec<Value> {
    sets.sort_by(|a, b| a["id"].as_str().cmp(&b["id"].as_str()));
    sets
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_identify_merges_properties_shallowly_and_get_reads_them() {
    let d = Daemon::start().await;
    let first = d
        .call(
            "users.identify",
            json!({ "user_id": "u1", "properties": {
                "name": "Ada", "plan": "pro", "address": { "city": "Paris", "zip": "75001" } } }),
        )
        .await;
    let mut keys: Vec<&String> = first.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(keys, ["created_at", "id", "properties", "updated_at"]);
    assert_eq!(first["id"], "u1");
    assert_eq!(
        first["properties"],
        json!({ "name": "Ada", "plan": "pro", "address": { "city": "Paris", "zip": "75001" } })
    );
    let created = timestamp(&first["created_at"]);
    assert!(created <= timestamp(&first["updated_at"]));

    // Shallow: `address` is replaced whole; `null` deletes `plan`; `name` stays.
    let second = d
        .call(
            "users.identify",
            json!({ "user_id": "u1", "properties": {
                "plan": null, "address": { "city": "Lyon" }, "team": "core" } }),
        )
        .await;
    assert_eq!(
        second["properties"],
        json!({ "name": "Ada", "address": { "city": "Lyon" }, "team": "core" })
    );
    assert_eq!(second["created_at"], first["created_at"]);
    assert!(timestamp(&second["updated_at"]) >= timestamp(&first["updated_at"]));
    assert_eq!(
        d.call("users.get", json!({ "user_id": "u1" })).await,
        second
    );

    // No properties: the user exists with `{}`.
    let bare = d.call("users.identify", json!({ "user_id": "u2" })).await;
    assert_eq!(bare["properties"], json!({}));
    assert_eq!(d.call("users.get", json!({ "user_id": "u2" })).await, bare);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_identify_merges_inline_preferences() {
    let d = Daemon::start().await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "preferences": {
            "default": { "workflows": { "welcome": false }, "channel_types": { "push": false } } } }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "u1", "preferences": {
            "default": { "channel_types": { "sms": true, "push": null } },
            "acme": { "categories": { "marketing": true } } } }),
    )
    .await;
    let raw = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "u1", "raw": true }),
        )
        .await;
    assert_eq!(
        raw,
        preference_set(
            "default",
            json!({ "workflows": { "welcome": false }, "channel_types": { "sms": true } })
        )
    );
    let list = d
        .call("users.listPreferences", json!({ "user_id": "u1" }))
        .await;
    assert_eq!(
        sorted_by_id(list.as_array().unwrap().clone()),
        vec![
            preference_set("acme", json!({ "categories": { "marketing": true } })),
            raw,
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_delete_removes_the_user_its_sets_and_memberships() {
    let d = Daemon::start().await;
    for user in ["u1", "u2"] {
        d.call(
            "users.setPreferences",
            json!({ "user_id": user, "preferences": { "channel_types": { "sms": true } } }),
        )
        .await;
    }
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme", "preferences": { "workflows": { "a": true } } }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "u1" }, { "user_id": "u2" }] }),
    )
    .await;
    assert_eq!(
        d.counts().await,
        json!({ "users": 2, "objects": 0, "tenants": 0, "preference_sets": 3 })
    );

    assert_eq!(
        d.call("users.delete", json!({ "user_id": "u1" })).await,
        json!({ "deleted": true })
    );
    d.call_err("users.get", json!({ "user_id": "u1" }))
        .await
        .assert(-32001, "not_found");
    assert_eq!(
        d.call("users.listPreferences", json!({ "user_id": "u1" }))
            .await,
        json!([])
    );
    assert_eq!(
        d.call("audiences.listMembers", json!({ "audience_key": "beta" }))
            .await,
        json!({ "items": [{ "user_id": "u2" }], "next": null })
    );
    assert_eq!(
        d.counts().await,
        json!({ "users": 1, "objects": 0, "tenants": 0, "preference_sets": 1 })
    );
    assert_eq!(
        d.call("users.delete", json!({ "user_id": "u1" })).await,
        json!({ "deleted": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_set_preferences_replaces_or_merges() {
    let d = Daemon::start().await;
    let first = d
        .call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {
                "__typename": "PreferenceSet", "id": "ignored",
                "workflows": { "new-comment": { "channel_types": { "email": false } } },
                "categories": { "marketing": false } } }),
        )
        .await;
    assert_eq!(
        first,
        preference_set(
            "default",
            json!({
                "workflows": { "new-comment": { "channel_types": { "email": false } } },
                "categories": { "marketing": false } })
        )
    );
    // Writing preferences creates the user, with empty properties.
    assert_eq!(
        d.call("users.get", json!({ "user_id": "u1" })).await["properties"],
        json!({})
    );

    // The default strategy replaces the whole set.
    let replaced = d
        .call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "default",
                    "preferences": { "channel_types": { "push": false, "sms": true } } }),
        )
        .await;
    assert_eq!(
        replaced,
        preference_set(
            "default",
            json!({ "channel_types": { "push": false, "sms": true } })
        )
    );

    // Merge: RFC 7396, `null` deletes, and the strategy key is not stored.
    let merged = d
        .call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preferences": {
                "__persistence_strategy__": "merge",
                "channel_types": { "push": null, "chat": false },
                "categories": { "marketing": true } } }),
        )
        .await;
    let expected = preference_set(
        "default",
        json!({
            "channel_types": { "sms": true, "chat": false },
            "categories": { "marketing": true } }),
    );
    assert_eq!(merged, expected);
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "raw": true })
        )
        .await,
        expected
    );

    // Another set id is another set.
    let acme = d
        .call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": "acme",
                    "preferences": { "commercial_subscribed": false } }),
        )
        .await;
    assert_eq!(
        acme,
        preference_set("acme", json!({ "commercial_subscribed": false }))
    );
    let list = d
        .call("users.listPreferences", json!({ "user_id": "u1" }))
        .await;
    assert_eq!(
        sorted_by_id(list.as_array().unwrap().clone()),
        vec![acme, expected]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_get_preferences_effective_raw_and_per_tenant() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {
            "channel_types": { "sms": true }, "workflows": { "digest": false } } }),
    )
    .await;

    // Effective: environment ⊕ recipient default.
    let effective = d
        .call("users.getPreferences", json!({ "user_id": "u1" }))
        .await;
    assert_eq!(
        effective,
        preference_set(
            "default",
            json!({
                "channel_types": { "email": true, "sms": true },
                "workflows": { "digest": false },
                "commercial_subscribed": true })
        )
    );
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "raw": true })
        )
        .await,
        preference_set(
            "default",
            json!({ "channel_types": { "sms": true }, "workflows": { "digest": false } })
        )
    );

    // A user that does not exist reads as the defaults (raw: an empty set), not an error.
    let env = preference_set(
        "default",
        json!({ "channel_types": { "email": true, "sms": false }, "commercial_subscribed": true }),
    );
    assert_eq!(
        d.call("users.getPreferences", json!({ "user_id": "nobody" }))
            .await,
        env
    );
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "nobody", "raw": true })
        )
        .await,
        preference_set("default", json!({}))
    );

    // Tenant acme has a template: environment ⊕ template ⊕ recipient[acme] (the recipient's
    // default set does not take part, preferences.md §4.2).
    let acme_env = preference_set(
        "acme",
        json!({
            "channel_types": { "email": true, "sms": false },
            "categories": { "marketing": false },
            "commercial_subscribed": true }),
    );
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "acme" })
        )
        .await,
        acme_env
    );
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "preference_set": "acme" })
        )
        .await,
        acme_env
    );
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme",
                "preferences": { "categories": { "marketing": true } } }),
    )
    .await;
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "acme" })
        )
        .await["categories"],
        json!({ "marketing": true })
    );

    // A tenant with no default and no recipient set: as if no tenant were given.
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "globex" })
        )
        .await,
        preference_set(
            "globex",
            json!({
                "channel_types": { "email": true, "sms": true },
                "workflows": { "digest": false },
                "commercial_subscribed": true })
        )
    );

    // A stored tenant default wins over the template.
    d.call(
        "tenants.set",
        json!({ "tenant_id": "acme", "settings": { "preference_set": { "channel_types": { "push": false } } } }),
    )
    .await;
    d.call(
        "users.unsetPreferences",
        json!({ "user_id": "u1", "preference_set": "acme" }),
    )
    .await;
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "acme" })
        )
        .await,
        preference_set(
            "acme",
            json!({
                "channel_types": { "email": true, "sms": false, "push": false },
                "commercial_subscribed": true })
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_unset_and_list_preferences() {
    let d = Daemon::start().await;
    assert_eq!(
        d.call("users.listPreferences", json!({ "user_id": "u1" }))
            .await,
        json!([])
    );
    for set in ["default", "acme"] {
        d.call(
            "users.setPreferences",
            json!({ "user_id": "u1", "preference_set": set,
                    "preferences": { "workflows": { set: false } } }),
        )
        .await;
    }
    assert_eq!(
        d.call("users.listPreferences", json!({ "user_id": "u1" }))
            .await
            .as_array()
            .map(Vec::len),
        Some(2)
    );
    assert_eq!(
        d.call(
            "users.unsetPreferences",
            json!({ "user_id": "u1", "preference_set": "acme" })
        )
        .await,
        json!({ "deleted": true })
    );
    assert_eq!(
        d.call(
            "users.unsetPreferences",
            json!({ "user_id": "u1", "preference_set": "acme" })
        )
        .await,
        json!({ "deleted": false })
    );
    assert_eq!(
        d.call("users.listPreferences", json!({ "user_id": "u1" }))
            .await,
        json!([preference_set(
            "default",
            json!({ "workflows": { "default": false } })
        )])
    );
    // Unsetting a set keeps the user.
    d.call("users.get", json!({ "user_id": "u1" })).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_methods_mirror_users() {
    let d = Daemon::start().await;
    let object = d
        .call(
            "objects.set",
            json!({ "collection": "projects", "object_id": "p1",
                    "properties": { "name": "Apollo", "stage": "beta" },
                    "preferences": { "default": { "channel_types": { "chat": false } } } }),
        )
        .await;
    let mut keys: Vec<&String> = object.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        ["collection", "created_at", "id", "properties", "updated_at"]
    );
    assert_eq!(object["id"], "p1");
    assert_eq!(object["collection"], "projects");
    assert_eq!(
        object["properties"],
        json!({ "name": "Apollo", "stage": "beta" })
    );
    timestamp(&object["created_at"]);

    let updated = d
        .call(
            "objects.set",
            json!({ "collection": "projects", "object_id": "p1", "properties": { "stage": null } }),
        )
        .await;
    assert_eq!(updated["properties"], json!({ "name": "Apollo" }));
    assert_eq!(updated["created_at"], object["created_at"]);
    let who = json!({ "collection": "projects", "object_id": "p1" });
    assert_eq!(d.call("objects.get", who.clone()).await, updated);

    // An object is not a user with the same id, nor an object of another collection.
    d.call_err("users.get", json!({ "user_id": "p1" }))
        .await
        .assert(-32001, "not_found");
    d.call_err(
        "objects.get",
        json!({ "collection": "teams", "object_id": "p1" }),
    )
    .await
    .assert(-32001, "not_found");

    let mut params = who.clone();
    params["preferences"] = json!({ "channel_types": { "http": false } });
    assert_eq!(
        d.call("objects.setPreferences", params).await,
        preference_set("default", json!({ "channel_types": { "http": false } }))
    );
    let mut params = who.clone();
    params["preference_set"] = json!("acme");
    params["preferences"] = json!({ "workflows": { "deploy": true } });
    d.call("objects.setPreferences", params).await;
    let mut params = who.clone();
    params["preferences"] =
        json!({ "__persistence_strategy__": "merge", "channel_types": { "sms": true } });
    d.call("objects.setPreferences", params).await;

    let mut raw = who.clone();
    raw["raw"] = json!(true);
    assert_eq!(
        d.call("objects.getPreferences", raw).await,
        preference_set(
            "default",
            json!({ "channel_types": { "http": false, "sms": true } })
        )
    );
    assert_eq!(
        d.call("objects.getPreferences", who.clone()).await,
        preference_set(
            "default",
            json!({
                "channel_types": { "email": true, "sms": true, "http": false },
                "commercial_subscribed": true })
        )
    );
    let mut tenant = who.clone();
    tenant["tenant"] = json!("acme");
    assert_eq!(
        d.call("objects.getPreferences", tenant).await,
        preference_set(
            "acme",
            json!({
                "channel_types": { "email": true, "sms": false },
                "categories": { "marketing": false },
                "workflows": { "deploy": true },
                "commercial_subscribed": true })
        )
    );
    let list = d.call("objects.listPreferences", who.clone()).await;
    assert_eq!(
        sorted_by_id(list.as_array().unwrap().clone()),
        vec![
            preference_set("acme", json!({ "workflows": { "deploy": true } })),
            preference_set(
                "default",
                json!({ "channel_types": { "http": false, "sms": true } })
            ),
        ]
    );
    let mut unset = who.clone();
    unset["preference_set"] = json!("acme");
    assert_eq!(
        d.call("objects.unsetPreferences", unset.clone()).await,
        json!({ "deleted": true })
    );
    assert_eq!(
        d.call("objects.unsetPreferences", unset).await,
        json!({ "deleted": false })
    );
    assert_eq!(
        d.call("objects.listPreferences", who.clone())
            .await
            .as_array()
            .map(Vec::len),
        Some(1)
    );
    assert_eq!(
        d.counts().await,
        json!({ "users": 0, "objects": 1, "tenants": 0, "preference_sets": 1 })
    );

    assert_eq!(
        d.call("objects.delete", who.clone()).await,
        json!({ "deleted": true })
    );
    d.call_err("objects.get", who.clone())
        .await
        .assert(-32001, "not_found");
    assert_eq!(
        d.call("objects.listPreferences", who.clone()).await,
        json!([])
    );
    assert_eq!(
        d.call("objects.delete", who).await,
        json!({ "deleted": false })
    );
    assert_eq!(
        d.counts().await,
        json!({ "users": 0, "objects": 0, "tenants": 0, "preference_sets": 0 })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_set_get_delete() {
    let d = Daemon::start().await;
    let created = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "name": "Tenant One",
                    "properties": { "plan": "enterprise", "region": "eu" },
                    "settings": { "preference_set": { "categories": { "marketing": false } } } }),
        )
        .await;
    let mut keys: Vec<&String> = created.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "created_at",
            "id",
            "name",
            "properties",
            "settings",
            "updated_at"
        ]
    );
    assert_eq!(created["id"], "t1");
    assert_eq!(created["name"], "Tenant One");
    assert_eq!(
        created["properties"],
        json!({ "plan": "enterprise", "region": "eu" })
    );
    assert_eq!(
        created["settings"],
        json!({ "branding": null, "preference_set": preference_set("t1", json!({ "categories": { "marketing": false } })) })
    );
    timestamp(&created["created_at"]);

    // The tenant default merges by default; name is kept; properties merge shallowly.
    let merged = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "properties": { "region": null, "seats": 40 },
                    "settings": { "preference_set": { "channel_types": { "sms": true } } } }),
        )
        .await;
    assert_eq!(merged["name"], "Tenant One");
    assert_eq!(
        merged["properties"],
        json!({ "plan": "enterprise", "seats": 40 })
    );
    assert_eq!(
        merged["settings"]["preference_set"],
        preference_set(
            "t1",
            json!({ "categories": { "marketing": false }, "channel_types": { "sms": true } })
        )
    );
    assert_eq!(merged["created_at"], created["created_at"]);

    // `__persistence_strategy__: "replace"` replaces it.
    let replaced = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "settings": { "preference_set": {
                "__persistence_strategy__": "replace", "workflows": { "digest": false } } } }),
        )
        .await;
    assert_eq!(
        replaced["settings"]["preference_set"],
        preference_set("t1", json!({ "workflows": { "digest": false } }))
    );
    assert_eq!(
        d.call("tenants.get", json!({ "tenant_id": "t1" })).await,
        replaced
    );

    // Resolved: the environment default merged under the tenant default.
    let resolved = d
        .call(
            "tenants.get",
            json!({ "tenant_id": "t1", "resolve_full_preference_settings": true }),
        )
        .await;
    assert_eq!(
        resolved["settings"]["preference_set"],
        preference_set(
            "t1",
            json!({
                "channel_types": { "email": true, "sms": false },
                "workflows": { "digest": false },
                "commercial_subscribed": true })
        )
    );
    assert_eq!(resolved["name"], "Tenant One");

    // `name: null` clears the name; `preference_set: null` removes the default.
    let cleared = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "name": null, "settings": { "preference_set": null } }),
        )
        .await;
    assert_eq!(cleared["name"], Value::Null);
    assert_eq!(
        cleared["settings"],
        json!({ "branding": null, "preference_set": null })
    );
    assert_eq!(
        cleared["properties"],
        json!({ "plan": "enterprise", "seats": 40 })
    );
    assert_eq!(
        d.call(
            "tenants.get",
            json!({ "tenant_id": "t1", "resolve_full_preference_settings": true })
        )
        .await["settings"]["preference_set"],
        preference_set(
            "t1",
            json!({ "channel_types": { "email": true, "sms": false }, "commercial_subscribed": true })
        )
    );

    // A tenant that is only a config template is returned as such, with the template
    // (what evaluation uses); once stored without a default, the template resolves under it.
    let template = d.call("tenants.get", json!({ "tenant_id": "acme" })).await;
    assert_eq!(template["source"], "config", "{template}");
    assert_eq!(
        template["settings"]["preference_set"],
        preference_set("acme", json!({ "categories": { "marketing": false } }))
    );
    assert_eq!(template["created_at"], Value::Null);
    let resolved = d
        .call(
            "tenants.get",
            json!({ "tenant_id": "acme", "resolve_full_preference_settings": true }),
        )
        .await;
    assert_eq!(
        resolved["settings"]["preference_set"]["categories"],
        json!({ "marketing": false })
    );
    assert_eq!(
        resolved["settings"]["preference_set"]["commercial_subscribed"],
        true
    );
    d.call_err("tenants.get", json!({ "tenant_id": "no-such-tenant" }))
        .await
        .assert(-32001, "not_found");
    let acme = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "acme", "name": "Acme" }),
        )
        .await;
    assert_eq!(
        acme["settings"],
        json!({ "branding": null, "preference_set": null })
    );
    assert_eq!(acme["properties"], json!({}));
    assert_eq!(
        d.call(
            "tenants.get",
            json!({ "tenant_id": "acme", "resolve_full_preference_settings": true })
        )
        .await["settings"]["preference_set"],
        preference_set(
            "acme",
            json!({
                "channel_types": { "email": true, "sms": false },
                "categories": { "marketing": false },
                "commercial_subscribed": true })
        )
    );
    assert_eq!(d.counts().await["tenants"], 2);

    assert_eq!(
        d.call("tenants.delete", json!({ "tenant_id": "t1" })).await,
        json!({ "deleted": true })
    );
    d.call_err("tenants.get", json!({ "tenant_id": "t1" }))
        .await
        .assert(-32001, "not_found");
    assert_eq!(
        d.call("tenants.delete", json!({ "tenant_id": "t1" })).await,
        json!({ "deleted": false })
    );
    assert_eq!(d.counts().await["tenants"], 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audiences_add_remove_and_list_with_pagination() {
    let d = Daemon::start().await;
    assert_eq!(
        d.call(
            "audiences.addMembers",
            json!({ "audience_key": "beta", "members": [
                { "user_id": "u1" }, { "user_id": "u2" },
                { "collection": "projects", "object_id": "p1" } ] }),
        )
        .await,
        json!({ "count": 3 })
    );
    // Adding a member twice does not count it twice.
    assert_eq!(
        d.call(
            "audiences.addMembers",
            json!({ "audience_key": "beta", "members": [
                { "user_id": "u2" }, { "user_id": "u3" }, { "user_id": "u4" } ] }),
        )
        .await,
        json!({ "count": 5 })
    );
    // The count is per audience.
    assert_eq!(
        d.call(
            "audiences.addMembers",
            json!({ "audience_key": "other", "members": [{ "user_id": "u1" }] }),
        )
        .await,
        json!({ "count": 1 })
    );

    // Pages of 2 until `next` is null.
    let mut seen = Vec::new();
    let mut after = Value::Null;
    let mut pages = 0;
    loop {
        let mut params = json!({ "audience_key": "beta", "limit": 2 });
        if !after.is_null() {
            params["after"] = after.clone();
        }
        let page = d.call("audiences.listMembers", params).await;
        let items = page["items"].as_array().expect("items").clone();
        assert!(items.len() <= 2, "a page larger than the limit: {page}");
        seen.extend(items);
        pages += 1;
        assert!(pages <= 5, "pagination does not end");
        after = page["next"].clone();
        if after.is_null() {
            break;
        }
        assert!(after.is_string(), "next is a string cursor: {page}");
    }
    assert_eq!(pages, 3);
    let expected = vec![
        json!({ "user_id": "u1" }),
        json!({ "user_id": "u2" }),
        json!({ "user_id": "u3" }),
        json!({ "user_id": "u4" }),
        json!({ "collection": "projects", "object_id": "p1" }),
    ];
    let key = |v: &Value| v.to_string();
    let mut sorted = seen.clone();
    sorted.sort_by_key(key);
    let mut want = expected.clone();
    want.sort_by_key(key);
    assert_eq!(sorted, want, "every member exactly once across pages");

    // The default limit (100) returns everything in one page, in the same order.
    let all = d
        .call("audiences.listMembers", json!({ "audience_key": "beta" }))
        .await;
    assert_eq!(all, json!({ "items": seen, "next": null }));

    assert_eq!(
        d.call(
            "audiences.removeMembers",
            json!({ "audience_key": "beta", "members": [
                { "user_id": "u2" }, { "user_id": "nobody" },
                { "collection": "projects", "object_id": "p1" } ] }),
        )
        .await,
        json!({ "count": 3 })
    );
    assert_eq!(
        d.call("audiences.listMembers", json!({ "audience_key": "beta" }))
            .await["items"],
        json!([{ "user_id": "u1" }, { "user_id": "u3" }, { "user_id": "u4" }])
    );
    assert_eq!(
        d.call("audiences.listMembers", json!({ "audience_key": "empty" }))
            .await,
        json!({ "items": [], "next": null })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_catalog_workflow_uses_catalog_channels() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {
            "workflows": { "new-comment": { "channel_types": { "email": false } } } } }),
    )
    .await;
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["u1", "u2"] }),
        )
        .await;
    assert_eq!(result["results"].as_array().map(Vec::len), Some(2));
    assert_eq!(result["results"][0]["recipient"], json!({ "id": "u1" }));
    assert_eq!(result["results"][1]["recipient"], json!({ "id": "u2" }));
    assert_eq!(
        decisions(&result, 0),
        vec![
            blocked(
                "email",
                "opted_out",
                "workflows.new-comment.channel_types.email",
                "recipient:default"
            ),
            sent("in_app_feed"),
        ]
    );
    assert_eq!(
        result["results"][0]["channels"][0]["reason"]["condition"],
        Value::Null
    );
    assert_eq!(
        decisions(&result, 1),
        vec![sent("email"), sent("in_app_feed")]
    );

    // A category opt-out blocks even though the workflow says yes.
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u2", "preferences": {
            "workflows": { "new-comment": true },
            "categories": { "collaboration": { "channel_types": { "in_app_feed": false } } } } }),
    )
    .await;
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["u2"] }),
        )
        .await;
    assert_eq!(
        decisions(&result, 0),
        vec![
            sent("email"),
            blocked(
                "in_app_feed",
                "opted_out",
                "categories.collaboration.channel_types.in_app_feed",
                "recipient:default"
            ),
        ]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_defaults_to_all_six_channel_types() {
    let d = Daemon::start().await;
    let six = |result: &Value| {
        let env_sms = blocked("sms", "opted_out", "channel_types.sms", "environment");
        assert_eq!(
            decisions(result, 0),
            vec![
                sent("email"),
                env_sms,
                sent("push"),
                sent("chat"),
                sent("in_app_feed"),
                sent("http"),
            ]
        );
    };
    // Not in the catalog (and the catalog is not strict).
    six(&d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "not-in-catalog", "recipients": ["u1"] }),
        )
        .await);
    // In the catalog without channels.
    six(&d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "digest", "recipients": ["u1"] }),
        )
        .await);
    // Evaluation alone creates nobody.
    assert_eq!(d.counts().await["users"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_inline_workflow_overrides_the_catalog() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {
            "categories": { "marketing": false }, "commercial_subscribed": false } }),
    )
    .await;
    // The catalog's new-comment is in collaboration: sent.
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["u1"] }),
        )
        .await;
    assert_eq!(
        decisions(&result, 0),
        vec![sent("email"), sent("in_app_feed")]
    );
    // Inline, in marketing: blocked by the category; the catalog's channels still apply.
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": { "key": "new-comment", "categories": ["marketing"] },
                    "recipients": ["u1"] }),
        )
        .await;
    assert_eq!(
        decisions(&result, 0),
        vec![
            blocked(
                "email",
                "opted_out",
                "categories.marketing",
                "recipient:default"
            ),
            blocked(
                "in_app_feed",
                "opted_out",
                "categories.marketing",
                "recipient:default"
            ),
        ]
    );
    // The catalog's newsletter is commercial; inline it is not (and has no categories).
    let (send, code) = decide(
        &d,
        json!({ "workflow": "newsletter", "recipients": ["u1"] }),
    )
    .await;
    assert_eq!((send, code.as_str()), (false, "commercial_unsubscribed"));
    let (send, code) = decide(
        &d,
        json!({ "workflow": { "key": "newsletter" }, "recipients": ["u1"] }),
    )
    .await;
    assert_eq!((send, code.as_str()), (true, "opted_in"));
    // override_preferences, from the catalog and inline.
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "security-alert", "recipients": ["u1"] }),
        )
        .await;
    let override_reason = |channel: &str| {
        (
            channel.to_string(),
            Value::Null,
            true,
            "override_preferences".to_string(),
            Value::Null,
            Value::Null,
        )
    };
    assert_eq!(
        decisions(&result, 0),
        vec![override_reason("email"), override_reason("sms")]
    );
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": { "key": "x", "categories": ["marketing"], "override_preferences": true },
                    "channels": [{ "type": "email" }], "recipients": ["u1"] }),
        )
        .await;
    assert_eq!(decisions(&result, 0), vec![override_reason("email")]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_keeps_the_order_of_recipients_and_channels() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "a", "preferences": {
            "channel_types": { "chat": true }, "channels": { "ch-1": false } } }),
    )
    .await;
    let recipients = json!(["c", "a", { "collection": "projects", "id": "p1" }, "b"]);
    let channels = json!([
        { "type": "push" }, { "type": "chat", "id": "ch-2" },
        { "type": "email" }, { "type": "chat", "id": "ch-1" } ]);
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": recipients, "channels": channels }),
        )
        .await;
    let order: Vec<Value> = result["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["recipient"].clone())
        .collect();
    assert_eq!(
        order,
        vec![
            json!({ "id": "c" }),
            json!({ "id": "a" }),
            json!({ "id": "p1", "collection": "projects" }),
            json!({ "id": "b" }),
        ]
    );
    for i in 0..4 {
        let got: Vec<(String, Value)> = decisions(&result, i)
            .into_iter()
            .map(|d| (d.0, d.1))
            .collect();
        assert_eq!(
            got,
            vec![
                ("push".to_string(), Value::Null),
                ("chat".to_string(), json!("ch-2")),
                ("email".to_string(), Value::Null),
                ("chat".to_string(), json!("ch-1")),
            ]
        );
    }
    // For "a", a channel id beats its channel type.
    let a = decisions(&result, 1);
    assert!(a[1].2, "ch-2 follows channel_types.chat = true: {a:?}");
    assert_eq!(
        (a[3].2, a[3].3.as_str(), &a[3].4, &a[3].5),
        (
            false,
            "opted_out",
            &json!("channels.ch-1"),
            &json!("recipient:default")
        )
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_persists_inline_identifies() {
    let d = Daemon::start().await;
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": [
                { "id": "u-new", "properties": { "plan": "pro" },
                  "preferences": { "default": { "channel_types": { "email": false } } } },
                { "collection": "projects", "id": "p9", "properties": { "name": "P9" } } ] }),
        )
        .await;
    // The inline set is used by this very call.
    assert_eq!(
        decisions(&result, 0),
        vec![
            blocked(
                "email",
                "opted_out",
                "channel_types.email",
                "recipient:default"
            ),
            sent("in_app_feed"),
        ]
    );
    assert_eq!(
        result["results"][1]["recipient"],
        json!({ "id": "p9", "collection": "projects" })
    );
    assert_eq!(
        d.call("users.get", json!({ "user_id": "u-new" })).await["properties"],
        json!({ "plan": "pro" })
    );
    assert_eq!(
        d.call(
            "objects.get",
            json!({ "collection": "projects", "object_id": "p9" })
        )
        .await["properties"],
        json!({ "name": "P9" })
    );

    // A second inline identify merges properties and preferences.
    d.call(
        "preferences.evaluate",
        json!({ "workflow": "new-comment", "recipients": [
            { "id": "u-new", "properties": { "team": "core" },
              "preferences": { "default": { "channel_types": { "sms": true } } } } ] }),
    )
    .await;
    assert_eq!(
        d.call("users.get", json!({ "user_id": "u-new" })).await["properties"],
        json!({ "plan": "pro", "team": "core" })
    );
    assert_eq!(
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u-new", "raw": true })
        )
        .await,
        preference_set(
            "default",
            json!({ "channel_types": { "email": false, "sms": true } })
        )
    );

    // An inline tenant is stored, and its default set decides at once.
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["u-new"],
                    "tenant": { "id": "t-inline", "name": "Inline", "properties": { "tier": 1 },
                                "settings": { "preference_set": {
                                    "categories": { "collaboration": { "channel_types": { "in_app_feed": false } } } } } } }),
        )
        .await;
    assert_eq!(
        decisions(&result, 0),
        vec![
            sent("email"),
            blocked(
                "in_app_feed",
                "opted_out",
                "categories.collaboration.channel_types.in_app_feed",
                "tenant:t-inline"
            ),
        ]
    );
    let tenant = d
        .call("tenants.get", json!({ "tenant_id": "t-inline" }))
        .await;
    assert_eq!(tenant["name"], "Inline");
    assert_eq!(tenant["properties"], json!({ "tier": 1 }));
    assert_eq!(
        tenant["settings"]["preference_set"],
        preference_set(
            "t-inline",
            json!({ "categories": { "collaboration": { "channel_types": { "in_app_feed": false } } } })
        )
    );
    assert_eq!(
        d.counts().await,
        json!({ "users": 1, "objects": 1, "tenants": 1, "preference_sets": 1 })
    );
}

/// A user whose default set has one workflow per condition namespace.
async fn conditional_user(d: &Daemon) {
    let condition = |variable: &str, operator: &str, argument: Value| json!({ "conditions": [{ "variable": variable, "operator": operator, "argument": argument }] });
    d.call(
        "users.identify",
        json!({ "user_id": "u1",
                "properties": { "muted_alert_ids": ["a1"], "signed_up_at": "2026-11-25T00:00:00Z" },
                "preferences": { "default": { "workflows": {
                    "alert": condition("recipient.muted_alert_ids", "not_contains", json!("data.alert_id")),
                    "admin-only": condition("actor.role", "equal_to", json!("admin")),
                    "eu-only": condition("tenant.properties.region", "equal_to", json!("vars.region")),
                    "welcome": condition("recipient.signed_up_at", "is_timestamp_on_or_after", json!("7 days ago")),
                    "beta-feature": condition("recipient.id", "is_audience_member", json!("beta")) } } } }),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_conditions_read_data_actor_tenant_now_and_audiences() {
    let d = Daemon::start().await;
    conditional_user(&d).await;
    let eval = |workflow: &str, extra: Value| {
        let mut params = json!({ "workflow": workflow, "recipients": ["u1"], "channels": [{ "type": "email" }] });
        for (k, v) in extra.as_object().unwrap() {
            params[k] = v.clone();
        }
        params
    };

    // data: the trigger data is an argument.
    let result = d
        .call(
            "preferences.evaluate",
            eval("alert", json!({ "data": { "alert_id": "a1" } })),
        )
        .await;
    let reason = &result["results"][0]["channels"][0]["reason"];
    assert_eq!(result["results"][0]["channels"][0]["send"], false);
    assert_eq!(reason["code"], "condition_failed");
    assert_eq!(reason["path"], "workflows.alert");
    assert_eq!(reason["layer"], "recipient:default");
    assert_eq!(reason["condition"]["variable"], "recipient.muted_alert_ids");
    assert_eq!(reason["condition"]["operator"], "not_contains");
    assert_eq!(reason["condition"]["argument"], "data.alert_id");
    assert_eq!(
        decide(&d, eval("alert", json!({ "data": { "alert_id": "a2" } }))).await,
        (true, "opted_in".into())
    );

    // actor: a string is a stored user; an object is identified inline.
    d.call(
        "users.identify",
        json!({ "user_id": "boss", "properties": { "role": "admin" } }),
    )
    .await;
    d.call(
        "users.identify",
        json!({ "user_id": "pleb", "properties": { "role": "member" } }),
    )
    .await;
    assert_eq!(
        decide(&d, eval("admin-only", json!({ "actor": "boss" }))).await,
        (true, "opted_in".into())
    );
    assert_eq!(
        decide(&d, eval("admin-only", json!({ "actor": "pleb" }))).await,
        (false, "condition_failed".into())
    );
    assert_eq!(
        decide(&d, eval("admin-only", json!({}))).await,
        (false, "condition_failed".into())
    );
    assert_eq!(
        decide(
            &d,
            eval(
                "admin-only",
                json!({ "actor": { "id": "new-admin", "properties": { "role": "admin" } } })
            )
        )
        .await,
        (true, "opted_in".into())
    );
    assert_eq!(
        d.call("users.get", json!({ "user_id": "new-admin" })).await["properties"],
        json!({ "role": "admin" })
    );

    // tenant (a stored tenant's properties) against vars (the config's [vars]).
    d.call(
        "tenants.set",
        json!({ "tenant_id": "t-eu", "properties": { "region": "eu" } }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "t-us", "properties": { "region": "us" } }),
    )
    .await;
    assert_eq!(
        decide(&d, eval("eu-only", json!({ "tenant": "t-eu" }))).await,
        (true, "opted_in".into())
    );
    assert_eq!(
        decide(&d, eval("eu-only", json!({ "tenant": "t-us" }))).await,
        (false, "condition_failed".into())
    );

    // now: relative times are relative to the request's `now`.
    assert_eq!(
        decide(
            &d,
            eval("welcome", json!({ "now": "2026-11-29T12:00:00Z" }))
        )
        .await,
        (true, "opted_in".into())
    );
    assert_eq!(
        decide(
            &d,
            eval("welcome", json!({ "now": "2026-12-29T12:00:00Z" }))
        )
        .await,
        (false, "condition_failed".into())
    );

    // is_audience_member, through a stored audience.
    assert_eq!(
        decide(&d, eval("beta-feature", json!({}))).await,
        (false, "condition_failed".into())
    );
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "u1" }] }),
    )
    .await;
    assert_eq!(
        decide(&d, eval("beta-feature", json!({}))).await,
        (true, "opted_in".into())
    );
    d.call(
        "audiences.removeMembers",
        json!({ "audience_key": "beta", "members": [{ "user_id": "u1" }] }),
    )
    .await;
    assert_eq!(
        decide(&d, eval("beta-feature", json!({}))).await,
        (false, "condition_failed".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_with_a_tenant_uses_its_default() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "categories": { "marketing": true } } }),
    )
    .await;
    // No tenant: the user's own default set; newsletter goes.
    assert_eq!(
        decide(
            &d,
            json!({ "workflow": "newsletter", "recipients": ["u1"] })
        )
        .await,
        (true, "opted_in".into())
    );
    // Tenant acme: its template says no marketing.
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "newsletter", "recipients": ["u1"], "tenant": "acme" }),
        )
        .await;
    assert_eq!(
        decisions(&result, 0),
        vec![blocked(
            "email",
            "opted_out",
            "categories.marketing",
            "tenant:acme"
        )]
    );
    // The reason says which layers were looked at: not the user's default set.
    assert_eq!(
        result["results"][0]["channels"][0]["reason"]["considered"],
        json!(["environment", "tenant:acme", "recipient:acme (none)"])
    );
    // The user's own acme set wins over the tenant default.
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme",
                "preferences": { "categories": { "marketing": true } } }),
    )
    .await;
    assert_eq!(
        decide(
            &d,
            json!({ "workflow": "newsletter", "recipients": ["u1"], "tenant": "acme" })
        )
        .await,
        (true, "opted_in".into())
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn evaluate_with_strict_workflows_refuses_unknown_keys() {
    let toml = format!("{}\nstrict_workflows = true\n", "durability = \"normal\"");
    let d = Daemon::start_with(&[("prefsd.toml", &toml)]).await;
    let e = d
        .call_err(
            "preferences.evaluate",
            json!({ "workflow": "not-in-catalog", "recipients": ["u1"] }),
        )
        .await;
    e.assert(-32006, "workflow_not_found");
    assert!(e.message.contains("not-in-catalog"), "{e:?}");
    // Catalog keys still work.
    let result = d
        .call(
            "preferences.evaluate",
            json!({ "workflow": "new-comment", "recipients": ["u1"] }),
        )
        .await;
    assert_eq!(
        decisions(&result, 0),
        vec![sent("email"), sent("in_app_feed")]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_status_describes_the_config_in_force() {
    let d = Daemon::start().await;
    let status = d.call("config.status", Value::Null).await;
    assert_eq!(status["version"], 1);
    assert_eq!(
        status["files"],
        json!([
            "environment.json",
            "prefsd.toml",
            "tenants/acme.json",
            "workflows.toml"
        ])
    );
    assert_eq!(status["workflows"], 4);
    assert_eq!(status["tenant_templates"], 1);
    assert_eq!(status["last_error"], Value::Null);
    timestamp(&status["loaded_at"]);
    // `{}` params are the same as none.
    assert_eq!(d.call("config.status", json!({})).await, status);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn daemon_ping_and_status() {
    let d = Daemon::start().await;
    assert_eq!(d.call("daemon.ping", Value::Null).await, json!("pong"));
    assert_eq!(d.call("daemon.ping", json!({})).await, json!("pong"));

    let status = d.call("daemon.status", Value::Null).await;
    let mut keys: Vec<&String> = status.as_object().unwrap().keys().collect();
    keys.sort();
    assert_eq!(
        keys,
        [
            "cache",
            "counts",
            "jobs",
            "last_backup",
            "protocol",
            "schema_version",
            "store",
            "uptime_s",
            "version"
        ]
    );
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["protocol"], 1);
    assert!(status["uptime_s"].is_u64(), "{status}");
    match &d.pg {
        None => {
            assert_eq!(
                status["schema_version"],
                prefsd::store::latest_schema_version()
            );
            assert_eq!(
                status["store"],
                json!({ "backend": "sqlite", "coherent": true, "reconnects": 0 })
            );
        }
        Some(pg) => {
            assert_eq!(status["schema_version"], prefsd::store::postgres::latest());
            assert_eq!(
                status["store"],
                json!({ "backend": "postgres", "schema": pg.schema, "coherent": true, "reconnects": 0 })
            );
        }
    }
    assert_eq!(
        status["counts"],
        json!({ "users": 0, "objects": 0, "tenants": 0, "preference_sets": 0 })
    );
    assert_eq!(status["jobs"], json!({ "queued": 0, "processing": 0 }));

    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": { "commercial_subscribed": false } }),
    )
    .await;
    d.call("users.identify", json!({ "user_id": "u2" })).await;
    d.call(
        "objects.set",
        json!({ "collection": "c", "object_id": "o1",
                "preferences": { "default": { "channel_types": { "push": true } },
                                 "acme": { "workflows": { "w": true } } } }),
    )
    .await;
    d.call("tenants.set", json!({ "tenant_id": "t1" })).await;
    assert_eq!(
        d.counts().await,
        json!({ "users": 2, "objects": 1, "tenants": 1, "preference_sets": 3 })
    );
}
