//! Export (ops.md §7, issue 20): one consistent NDJSON snapshot of the store, streamed
//! over the WebSocket, written by `prefsd export` to a private file.

use std::os::unix::fs::PermissionsExt as _;

use serde_json::{Value, json};

use crate::cli::client;
use crate::support::Daemon;

/// A store with a bit of everything: users with several sets, an object with a set, a
/// tenant with a default set, and audience members of both kinds.
pub(crate) async fn fill(d: &Daemon) {
    for (id, plan) in [("dana", "pro"), ("lee", "free"), ("ana", "pro")] {
        d.call(
            "users.identify",
            json!({ "user_id": id, "properties": { "plan": plan, "name": id } }),
        )
        .await;
    }
    d.call(
        "users.setPreferences",
        json!({ "user_id": "dana", "preferences": { "categories": { "marketing": false } } }),
    )
    .await;
    d.call(
        "users.setPreferences",
        json!({ "user_id": "dana", "preference_set": "acme",
                "preferences": { "channel_types": { "sms": true } } }),
    )
    .await;
    d.call(
        "tenants.set",
        json!({ "tenant_id": "acme", "name": "Acme", "properties": { "tier": 2 },
                "settings": { "preference_set": { "categories": { "digest": false } },
                              "branding": { "primary_color": "#123456" } } }),
    )
    .await;
    d.call(
        "objects.set",
        json!({ "collection": "projects", "object_id": "p1", "properties": { "name": "Apollo" } }),
    )
    .await;
    d.call(
        "objects.setPreferences",
        json!({ "collection": "projects", "object_id": "p1",
                "preferences": { "workflows": { "new-comment": false } } }),
    )
    .await;
    d.call(
        "audiences.addMembers",
        json!({ "audience_key": "beta", "members": [
            { "user_id": "dana" }, { "collection": "projects", "object_id": "p1" } ] }),
    )
    .await;
}

#[tokio::test]
async fn export_writes_every_row_once_after_a_header_to_a_private_file() {
    let d = Daemon::start().await;
    fill(&d).await;
    let run = client(&d, &["export", "--out", "out.ndjson"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stderr.contains("exported 8 lines"), "{run:?}");
    let path = d.dir.path().join("out.ndjson");
    let mode = std::fs::metadata(&path)
        .expect("written")
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(mode, 0o600, "an export is private");
    let text = std::fs::read_to_string(&path).expect("the export");
    let lines: Vec<Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect();
    let header = &lines[0];
    assert_eq!(header["format"], "prefsd-export");
    assert_eq!(header["version"], 1);
    assert!(header.get("seq").is_some(), "{header}");
    crate::support::timestamp(&header["at"]);
    assert!(
        text.starts_with(r#"{"format":"prefsd-export","version":1,"#),
        "the spec's key order"
    );
    let kinds: Vec<&str> = lines[1..]
        .iter()
        .map(|l| l["type"].as_str().expect("a type"))
        .collect();
    assert_eq!(
        kinds,
        [
            "tenant",
            "user",
            "user",
            "user",
            "object",
            "audience_member",
            "audience_member"
        ]
    );
    let tenant = &lines[1];
    assert_eq!(tenant["id"], "acme");
    assert_eq!(tenant["name"], "Acme");
    assert_eq!(tenant["properties"], json!({ "tier": 2 }));
    assert_eq!(
        tenant["settings"],
        json!({ "preference_set": { "categories": { "digest": false } },
                "branding": { "primary_color": "#123456" } })
    );
    let dana = lines
        .iter()
        .find(|l| l["type"] == "user" && l["id"] == "dana")
        .expect("dana");
    assert_eq!(dana["properties"], json!({ "plan": "pro", "name": "dana" }));
    assert_eq!(
        dana["preferences"],
        json!({
            "acme": { "channel_types": { "sms": true } },
            "default": { "categories": { "marketing": false } },
        })
    );
    let stored = d.call("users.get", json!({ "user_id": "dana" })).await;
    assert_eq!(dana["created_at"], stored["created_at"]);
    assert_eq!(dana["updated_at"], stored["updated_at"]);
    let lee = lines.iter().find(|l| l["id"] == "lee").expect("lee");
    assert_eq!(lee["preferences"], json!({}));
    let p1 = &lines[5];
    assert_eq!(p1["collection"], "projects");
    assert_eq!(p1["id"], "p1");
    assert_eq!(
        p1["preferences"]["default"],
        json!({ "workflows": { "new-comment": false } })
    );
    assert_eq!(lines[6]["audience_key"], "beta");
    assert_eq!(lines[6]["user_id"], "dana");
    assert_eq!(lines[7]["collection"], "projects");
    assert_eq!(lines[7]["object_id"], "p1");
}

#[tokio::test]
async fn export_to_standard_output_of_an_empty_store_is_the_header_alone() {
    let d = Daemon::start().await;
    // A subscription: over plain HTTP it says so instead of failing inside.
    for method in ["daemon.export", "daemon.exportCancel"] {
        let e = d.call_err(method, json!({})).await;
        assert_eq!(e.kind(), "invalid_request", "{method}: {e:?}");
        assert!(e.message.contains("WebSocket"), "{method}: {e:?}");
    }
    let run = client(&d, &["export"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "{run:?}");
    let header: Value = serde_json::from_str(lines[0]).expect("JSON");
    assert_eq!(header["format"], "prefsd-export");
}
