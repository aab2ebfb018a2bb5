//! The amendments rest.md §11 makes to rpc.md, preferences.md and access.md, through the
//! JSON-RPC methods: tenant `branding`, `resolve_full_preference_settings` on
//! `tenants.set`, the `tenant` param of reads.

use serde_json::json;

use crate::support::{Daemon, preference_set};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenant_branding_is_stored_as_given_echoed_and_removed_by_null() {
    let d = Daemon::start().await;
    let branding = json!({ "primary_color": "#3366ff", "logo_url": "https://x/l.png", "n": [1, { "a": null }] });
    let set = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "settings": { "branding": branding } }),
        )
        .await;
    assert_eq!(set["settings"]["branding"], branding);
    assert!(set["settings"]["preference_set"].is_null());
    // Absent keeps it, whatever else changes.
    let named = d
        .call("tenants.set", json!({ "tenant_id": "t1", "name": "One" }))
        .await;
    assert_eq!(named["settings"]["branding"], branding);
    let got = d.call("tenants.get", json!({ "tenant_id": "t1" })).await;
    assert_eq!(got["settings"]["branding"], branding);
    // `null` removes it.
    let removed = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "settings": { "branding": null } }),
        )
        .await;
    assert!(removed["settings"]["branding"].is_null(), "{removed}");
    assert!(
        d.call("tenants.get", json!({ "tenant_id": "t1" })).await["settings"]["branding"].is_null()
    );
    // Anything but an object or null is refused, and changes nothing.
    d.call_err(
        "tenants.set",
        json!({ "tenant_id": "t1", "name": "Two", "settings": { "branding": "blue" } }),
    )
    .await
    .assert_invalid("settings.branding");
    assert_eq!(
        d.call("tenants.get", json!({ "tenant_id": "t1" })).await["name"],
        "One"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_set_resolves_full_preference_settings_in_its_result_only() {
    let d = Daemon::start().await;
    let resolved = d
        .call(
            "tenants.set",
            json!({ "tenant_id": "t1", "resolve_full_preference_settings": true,
                    "settings": { "preference_set": { "channel_types": { "sms": true } } } }),
        )
        .await;
    // The environment default (email true, sms false, commercial) under the tenant's.
    assert_eq!(
        resolved["settings"]["preference_set"],
        preference_set(
            "t1",
            json!({ "channel_types": { "email": true, "sms": true }, "commercial_subscribed": true })
        )
    );
    // What is stored is the tenant's own set.
    let stored = d.call("tenants.get", json!({ "tenant_id": "t1" })).await;
    assert_eq!(
        stored["settings"]["preference_set"],
        preference_set("t1", json!({ "channel_types": { "sms": true } }))
    );
    // And `tenants.get` with the flag answers as `tenants.set` did.
    let got = d
        .call(
            "tenants.get",
            json!({ "tenant_id": "t1", "resolve_full_preference_settings": true }),
        )
        .await;
    assert_eq!(got["settings"], resolved["settings"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_param_on_a_default_read_is_the_read_of_that_tenants_set() {
    let d = Daemon::start().await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preference_set": "acme", "preferences": { "workflows": { "digest": false } } }),
    )
    .await;
    let by_tenant = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "u1", "preference_set": "default", "tenant": "acme" }),
        )
        .await;
    let by_set = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "u1", "preference_set": "acme" }),
        )
        .await;
    assert_eq!(by_tenant, by_set);
    assert_eq!(by_tenant["id"], "acme");
    let no_set = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "u1", "tenant": "acme" }),
        )
        .await;
    assert_eq!(no_set, by_set);
    // Another set id with a different tenant is refused; the same one is fine.
    d.call_err(
        "users.getPreferences",
        json!({ "user_id": "u1", "preference_set": "other", "tenant": "acme" }),
    )
    .await
    .assert_invalid("tenant");
    d.call(
        "users.getPreferences",
        json!({ "user_id": "u1", "preference_set": "acme", "tenant": "acme" }),
    )
    .await;
}
