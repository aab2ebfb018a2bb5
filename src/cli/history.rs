//! `prefsd history` and `prefsd changes`: the change log for a person (a table of what
//! changed, as a diff) and for a program (NDJSON, resumable by `seq`).

use std::io::Write as _;

use serde_json::{Map, Value, json};

use crate::client::Client;

/// `prefsd history`: a recipient's preference changes, newest first, one line per changed
/// key: when, who, through what, and the change (`+` added, `-` removed, `~` changed).
pub async fn history(
    client: &Client,
    mut params: Map<String, Value>,
    namespace: &str,
    limit: u32,
) -> anyhow::Result<()> {
    params.insert("limit".into(), json!(limit));
    let method = format!("{namespace}.getPreferenceHistory");
    let page = client.call(&method, Value::Object(params)).await?;
    let items = page["items"].as_array().cloned().unwrap_or_default();
    if items.is_empty() {
        println!("no preference changes recorded");
        return Ok(());
    }
    println!(
        "{:<24}  {:<7}  {:<28}  {:<24}  CHANGE",
        "WHEN", "SET", "WHO", "METHOD"
    );
    for entry in &items {
        let lines = diff(&entry["before"], &entry["after"]);
        let lines = if lines.is_empty() {
            vec!["(no change)".to_string()]
        } else {
            lines
        };
        let set = entry["preference_set"].as_str().unwrap_or("");
        let when = entry["at"].as_str().unwrap_or("");
        let who = actor(&entry["actor"]);
        let method = entry["method"].as_str().unwrap_or("");
        for (i, line) in lines.iter().enumerate() {
            if i == 0 {
                println!("{when:<24}  {set:<7}  {who:<28}  {method:<24}  {line}");
            } else {
                println!("{:<24}  {:<7}  {:<28}  {:<24}  {line}", "", "", "", "");
            }
        }
    }
    if let Some(next) = page["next"].as_i64() {
        println!("(older changes: --before {next})");
    }
    Ok(())
}

/// An actor as a person reads it.
fn actor(actor: &Value) -> String {
    match actor["type"].as_str() {
        Some("peer") => format!("uid {}", actor["uid"]),
        Some("secret_key") => format!("key {}", actor["key_id"].as_str().unwrap_or("")),
        Some("user_token") => format!("user {}", actor["sub"].as_str().unwrap_or("")),
        Some("bulk_operation") => format!("bulk {}", actor["id"].as_str().unwrap_or("")),
        Some("config") => "config".to_string(),
        _ => actor.to_string(),
    }
}

/// The difference between two sets as one line per changed leaf, by dotted path:
/// `+path = v` (added), `-path (was v)` (removed), `~path: a -> b` (changed).
pub fn diff(before: &Value, after: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk("", before, after, &mut out);
    out
}

fn walk(path: &str, before: &Value, after: &Value, out: &mut Vec<String>) {
    let join = |key: &str| {
        if path.is_empty() {
            key.to_string()
        } else {
            format!("{path}.{key}")
        }
    };
    match (before, after) {
        (Value::Object(a), Value::Object(b)) => {
            for (key, old) in a {
                walk(&join(key), old, b.get(key).unwrap_or(&Value::Null), out);
            }
            for (key, new) in b {
                if !a.contains_key(key) {
                    walk(&join(key), &Value::Null, new, out);
                }
            }
        }
        (Value::Null, Value::Null) => {}
        // A section added or removed whole shows as its leaves.
        (Value::Null, Value::Object(b)) => walk(
            path,
            &Value::Object(Map::new()),
            &Value::Object(b.clone()),
            out,
        ),
        (Value::Object(a), Value::Null) => walk(
            path,
            &Value::Object(a.clone()),
            &Value::Object(Map::new()),
            out,
        ),
        (Value::Null, new) => out.push(format!("+{path} = {new}")),
        (old, Value::Null) => out.push(format!("-{path} (was {old})")),
        (old, new) if old != new => out.push(format!("~{path}: {old} -> {new}")),
        _ => {}
    }
}

/// `prefsd changes`: every change after `after` as one JSON line each; with `follow`, then
/// each new one as it commits, until interrupted. Resumable: `--after` the last `seq` seen.
pub async fn changes(client: &Client, after: Option<i64>, follow: bool) -> anyhow::Result<()> {
    let mut stdout = std::io::stdout().lock();
    if follow {
        let mut sub = client.subscribe_changes(after).await?;
        let mut last = after;
        while let Some(change) = sub.next().await {
            let change = match change {
                Ok(change) => change,
                Err(e) => anyhow::bail!(
                    "the change feed ended ({e}); resume with --after {}",
                    last.map_or("<the last seq you saw>".into(), |s| s.to_string())
                ),
            };
            last = change["seq"].as_i64().or(last);
            writeln!(stdout, "{change}")?;
            stdout.flush()?;
        }
        anyhow::bail!(
            "the daemon closed the change feed; resume with --after {}",
            last.map_or("<the last seq you saw>".into(), |s| s.to_string())
        );
    }
    let mut after = after.unwrap_or(0);
    loop {
        let page = client
            .call("changes.list", json!({ "after": after, "limit": 1000 }))
            .await?;
        for change in page["items"].as_array().into_iter().flatten() {
            writeln!(stdout, "{change}")?;
        }
        match page["next"].as_i64() {
            Some(next) => after = next,
            None => break,
        }
    }
    stdout.flush()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::diff;

    #[test]
    fn a_diff_names_each_changed_leaf_by_its_path() {
        let before =
            json!({ "workflows": { "a": false, "b": true }, "channel_types": { "sms": false } });
        let after = json!({ "workflows": { "a": true }, "categories": { "news": false }, "channel_types": { "sms": false } });
        assert_eq!(
            diff(&before, &after),
            vec![
                "~workflows.a: false -> true",
                "-workflows.b (was true)",
                "+categories.news = false",
            ]
        );
        assert_eq!(diff(&json!(null), &json!({ "a": 1 })), vec!["+a = 1"]);
        assert_eq!(diff(&json!({ "a": 1 }), &json!(null)), vec!["-a (was 1)"]);
        assert!(diff(&json!({ "a": 1 }), &json!({ "a": 1 })).is_empty());
    }
}
