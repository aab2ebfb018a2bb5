//! `users.list`, `objects.list`, `tenants.list` (rest.md §4.2): keyset pages in insertion
//! order, both ways, with their boundaries, limits, cursors and filters.

use serde_json::{Value, json};

use crate::support::Daemon;

fn ids(page: &Value) -> Vec<String> {
    page["items"]
        .as_array()
        .expect("items is an array")
        .iter()
        .map(|item| item["id"].as_str().expect("an id").to_string())
        .collect()
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|s| s.to_string()).collect()
}

/// Identifies `ids` one call after another, so the list's order is this order.
async fn identify_in_order(daemon: &Daemon, ids: &[&str]) {
    for id in ids {
        daemon
            .call("users.identify", json!({ "user_id": id }))
            .await;
    }
}

/// Ten users, u0..u9 (ids sort as they were inserted, so ties in the millisecond agree).
const TEN: [&str; 10] = ["u0", "u1", "u2", "u3", "u4", "u5", "u6", "u7", "u8", "u9"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_page_forwards_and_backwards_with_null_cursors_at_the_ends() {
    let daemon = Daemon::start().await;
    identify_in_order(&daemon, &TEN).await;
    // An object is not a user.
    daemon
        .call(
            "objects.set",
            json!({ "collection": "projects", "object_id": "p1" }),
        )
        .await;

    // Forwards, 4 at a time: 4, 4, 2; the first page has no prev, the last no next.
    let p1 = daemon.call("users.list", json!({ "limit": 4 })).await;
    assert_eq!(ids(&p1), strings(&TEN[0..4]));
    assert!(p1["prev"].is_null(), "{p1}");
    let p2 = daemon
        .call("users.list", json!({ "limit": 4, "after": p1["next"] }))
        .await;
    assert_eq!(ids(&p2), strings(&TEN[4..8]));
    assert!(p2["prev"].is_string() && p2["next"].is_string(), "{p2}");
    let p3 = daemon
        .call("users.list", json!({ "limit": 4, "after": p2["next"] }))
        .await;
    assert_eq!(ids(&p3), strings(&TEN[8..10]));
    assert!(p3["next"].is_null(), "the last page: {p3}");

    // Backwards from the last page: the last 4 before it, then the 4 before those.
    let b1 = daemon
        .call("users.list", json!({ "limit": 4, "before": p3["prev"] }))
        .await;
    assert_eq!(ids(&b1), strings(&TEN[4..8]));
    let b2 = daemon
        .call("users.list", json!({ "limit": 4, "before": b1["prev"] }))
        .await;
    assert_eq!(ids(&b2), strings(&TEN[0..4]));
    assert!(b2["prev"].is_null(), "back at the first page: {b2}");
    assert!(b2["next"].is_string(), "{b2}");

    // Both: the first items between them.
    let between = daemon
        .call(
            "users.list",
            json!({ "limit": 50, "after": p1["next"], "before": p3["prev"] }),
        )
        .await;
    assert_eq!(ids(&between), strings(&TEN[4..8]));
    let between_2 = daemon
        .call(
            "users.list",
            json!({ "limit": 2, "after": p1["next"], "before": p3["prev"] }),
        )
        .await;
    assert_eq!(ids(&between_2), strings(&TEN[4..6]));

    // One page holds everything: no cursor either way.
    let all = daemon.call("users.list", json!({})).await;
    assert_eq!(ids(&all), strings(&TEN));
    assert!(all["next"].is_null() && all["prev"].is_null(), "{all}");

    // An exact fit: a page of 10 of 10 has no next.
    let exact = daemon.call("users.list", json!({ "limit": 10 })).await;
    assert_eq!(ids(&exact).len(), 10);
    assert!(exact["next"].is_null(), "{exact}");

    // Descending: the newest first, and paging goes on in that order.
    let d1 = daemon
        .call("users.list", json!({ "limit": 3, "order": "desc" }))
        .await;
    assert_eq!(ids(&d1), strings(&["u9", "u8", "u7"]));
    assert!(d1["prev"].is_null(), "{d1}");
    let d2 = daemon
        .call(
            "users.list",
            json!({ "limit": 3, "order": "desc", "after": d1["next"] }),
        )
        .await;
    assert_eq!(ids(&d2), strings(&["u6", "u5", "u4"]));
    let d0 = daemon
        .call(
            "users.list",
            json!({ "limit": 3, "order": "desc", "before": d2["prev"] }),
        )
        .await;
    assert_eq!(ids(&d0), strings(&["u9", "u8", "u7"]));
    assert!(d0["prev"].is_null(), "{d0}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn users_list_in_insertion_order_not_id_order() {
    let daemon = Daemon::start().await;
    daemon
        .call("users.identify", json!({ "user_id": "zed" }))
        .await;
    // The next insert lands in a later millisecond, whatever the id.
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    daemon
        .call("users.identify", json!({ "user_id": "abe" }))
        .await;
    // A later write to the first user does not move it.
    daemon
        .call(
            "users.identify",
            json!({ "user_id": "zed", "properties": { "x": 1 } }),
        )
        .await;
    let page = daemon.call("users.list", json!({})).await;
    assert_eq!(ids(&page), strings(&["zed", "abe"]));
    assert_eq!(page["items"][0]["properties"], json!({ "x": 1 }));
    let page = daemon.call("users.list", json!({ "order": "desc" })).await;
    assert_eq!(ids(&page), strings(&["abe", "zed"]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_limit_over_50_is_clamped_and_below_1_is_refused() {
    let daemon = Daemon::start().await;
    let many: Vec<String> = (0..60).map(|i| format!("m{i:02}")).collect();
    let op = daemon
        .call(
            "users.bulkSetPreferences",
            json!({ "user_ids": many, "preferences": {} }),
        )
        .await;
    crate::jobs::follow(&daemon, op["id"].as_str().expect("an id")).await;
    let page = daemon.call("users.list", json!({ "limit": 1000 })).await;
    assert_eq!(ids(&page).len(), 50, "clamped to 50");
    assert!(page["next"].is_string());
    let rest = daemon
        .call("users.list", json!({ "after": page["next"] }))
        .await;
    assert_eq!(ids(&rest).len(), 10, "the default is 50 too");
    for bad in [json!(0), json!(-1)] {
        daemon
            .call_err("users.list", json!({ "limit": bad }))
            .await
            .assert_invalid("limit");
    }
    for field in ["after", "before"] {
        for cursor in ["nonsense", "5b5d", ""] {
            let e = daemon
                .call_err("users.list", json!({ field: cursor }))
                .await;
            e.assert_invalid(field);
        }
    }
    daemon
        .call_err("users.list", json!({ "order": "sideways" }))
        .await
        .assert_invalid("order");
    daemon
        .call_err("users.list", json!({ "collection": "projects" }))
        .await
        .assert_invalid("collection");
    daemon
        .call_err("users.list", json!({ "bogus": 1 }))
        .await
        .assert_invalid("bogus");
    daemon
        .call_err("objects.list", json!({}))
        .await
        .assert_invalid("collection");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn include_preferences_adds_the_stored_sets() {
    let daemon = Daemon::start().await;
    daemon
        .call(
            "users.identify",
            json!({ "user_id": "a", "preferences": {
                "default": { "channel_types": { "sms": true } },
                "acme": { "workflows": { "digest": false } } } }),
        )
        .await;
    daemon
        .call("users.identify", json!({ "user_id": "b" }))
        .await;
    let page = daemon
        .call("users.list", json!({ "include_preferences": true }))
        .await;
    let a = &page["items"][0];
    assert_eq!(a["id"], "a");
    assert_eq!(a["preferences"]["default"]["id"], "default");
    assert_eq!(
        a["preferences"]["default"]["channel_types"],
        json!({ "sms": true })
    );
    assert_eq!(
        a["preferences"]["acme"]["workflows"],
        json!({ "digest": false })
    );
    assert_eq!(page["items"][1]["preferences"], json!({}));
    let page = daemon.call("users.list", json!({})).await;
    assert!(page["items"][0].get("preferences").is_none(), "{page}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_list_one_collection() {
    let daemon = Daemon::start().await;
    for (c, id) in [("projects", "p1"), ("teams", "t1"), ("projects", "p2")] {
        daemon
            .call("objects.set", json!({ "collection": c, "object_id": id }))
            .await;
    }
    daemon
        .call("users.identify", json!({ "user_id": "p0" }))
        .await;
    let page = daemon
        .call(
            "objects.list",
            json!({ "collection": "projects", "limit": 1 }),
        )
        .await;
    assert_eq!(ids(&page), strings(&["p1"]));
    assert_eq!(page["items"][0]["collection"], "projects");
    let page = daemon
        .call(
            "objects.list",
            json!({ "collection": "projects", "after": page["next"] }),
        )
        .await;
    assert_eq!(ids(&page), strings(&["p2"]));
    assert!(page["next"].is_null());
    let page = daemon
        .call("objects.list", json!({ "collection": "nothing-here" }))
        .await;
    assert_eq!(page, json!({ "items": [], "next": null, "prev": null }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tenants_list_stored_tenants_only_with_exact_filters() {
    // The test config has a template for `acme`: it is never listed.
    let daemon = Daemon::start().await;
    for (id, name) in [("t1", "One"), ("t2", "Two"), ("t3", "One")] {
        daemon
            .call(
                "tenants.set",
                json!({ "tenant_id": id, "name": name,
                        "settings": { "branding": { "primary_color": "#000" } } }),
            )
            .await;
    }
    let page = daemon.call("tenants.list", json!({})).await;
    assert_eq!(ids(&page), strings(&["t1", "t2", "t3"]));
    assert_eq!(
        page["items"][0]["settings"]["branding"],
        json!({ "primary_color": "#000" })
    );
    let page = daemon.call("tenants.list", json!({ "name": "One" })).await;
    assert_eq!(ids(&page), strings(&["t1", "t3"]));
    let page = daemon
        .call("tenants.list", json!({ "name": "One", "limit": 1 }))
        .await;
    assert_eq!(ids(&page), strings(&["t1"]));
    let page = daemon
        .call(
            "tenants.list",
            json!({ "name": "One", "limit": 1, "after": page["next"] }),
        )
        .await;
    assert_eq!(
        ids(&page),
        strings(&["t3"]),
        "the filter holds across pages"
    );
    assert!(page["next"].is_null());
    let page = daemon
        .call("tenants.list", json!({ "tenant_id": "t2" }))
        .await;
    assert_eq!(ids(&page), strings(&["t2"]));
    let page = daemon
        .call("tenants.list", json!({ "tenant_id": "acme" }))
        .await;
    assert_eq!(ids(&page), Vec::<String>::new(), "templates are not listed");
    daemon
        .call_err("tenants.list", json!({ "limit": 0 }))
        .await
        .assert_invalid("limit");
}
