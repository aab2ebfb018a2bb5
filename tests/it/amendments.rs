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

/// The legacy granular set (rest.md A7) has no JSON-RPC method: the REST layer calls
/// `api::recipients::granular_set`. Here it runs on the in-process daemon's own context,
/// and its effects are read back over the socket.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_legacy_granular_set_replaces_a_section_or_one_key_and_answers_the_effective_set() {
    use prefsd::api::recipients::{GranularParams, Kind, Section, granular_set};

    let d = Daemon::start().await;
    let ctx = d.context();
    let params = |key: Option<&str>, value: serde_json::Value| GranularParams {
        user_id: Some("u1".into()),
        collection: None,
        object_id: None,
        preference_set: None,
        key: key.map(str::to_string),
        value,
    };
    let call = |section, key, value| {
        let ctx = &*ctx;
        let p = params(key, value);
        async move {
            let origin = prefsd::model::change::Origin::new(
                prefsd::model::change::Actor::Peer { uid: 0 },
                "users.setPreferences",
            );
            let answer = granular_set(ctx, origin, Kind::User, section, p, true).await?;
            Ok::<_, prefsd::Error>(
                serde_json::from_str::<serde_json::Value>(&answer.0).expect("JSON"),
            )
        }
    };

    let raw = || {
        d.call(
            "users.getPreferences",
            json!({ "user_id": "u1", "raw": true }),
        )
    };
    d.call(
        "users.setPreferences",
        json!({ "user_id": "u1", "preferences": {
            "workflows": { "digest": false }, "categories": { "marketing": false } } }),
    )
    .await;
    // One key: `{"subscribed": b}` stores b; other sections stay.
    let answer = call(
        Section::ChannelTypes,
        Some("sms"),
        json!({ "subscribed": true }),
    )
    .await
    .expect("a valid write");
    // The effective set (A2): the environment's email: true shows too.
    assert_eq!(
        answer["channel_types"],
        json!({ "email": true, "sms": true })
    );
    assert_eq!(answer["id"], "default");
    let stored = raw().await;
    assert_eq!(stored["channel_types"], json!({ "sms": true }));
    assert_eq!(stored["workflows"], json!({ "digest": false }));
    // One key with a setting object: stored as given.
    call(
        Section::Workflows,
        Some("new-comment"),
        json!({ "channel_types": { "email": false } }),
    )
    .await
    .expect("a valid write");
    let stored = raw().await;
    assert_eq!(
        stored["workflows"],
        json!({ "digest": false, "new-comment": { "channel_types": { "email": false } } })
    );
    // A whole section replaces that section.
    call(Section::Categories, None, json!({ "collaboration": true }))
        .await
        .expect("a valid write");
    let stored = raw().await;
    assert_eq!(stored["categories"], json!({ "collaboration": true }));
    assert_eq!(stored["channel_types"], json!({ "sms": true }));

    // Invalid: an unknown channel type, a bad `subscribed`; nothing changes.
    for (section, key, value) in [
        (
            Section::ChannelTypes,
            Some("fax"),
            json!({ "subscribed": true }),
        ),
        (
            Section::ChannelTypes,
            Some("sms"),
            json!({ "subscribed": "yes" }),
        ),
        (Section::Workflows, None, json!(["not", "a", "map"])),
    ] {
        let e = call(section, key, value.clone()).await;
        assert!(
            matches!(e, Err(prefsd::Error::Invalid(_))),
            "{section:?} {key:?} {value}: {e:?}"
        );
    }
    let after = raw().await;
    assert_eq!(after, stored);
}
