//! The `prefsd` binary as a client of a daemon on a temp socket (ripgrep's `TestCommand`
//! style: run it, check the exit code, stdout and stderr).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Daemon, default_files, preference_set, write_files};

/// What a run of the binary printed and returned.
#[derive(Debug)]
struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

impl Run {
    /// Stdout as JSON, for a run that must have succeeded.
    #[track_caller]
    fn json(&self) -> Value {
        assert_eq!(self.code, 0, "the command failed: {self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs the binary in `cwd` with `args`, away from the environment of the test run.
async fn prefsd(cwd: &Path, args: &[&str]) -> Run {
    let cwd = cwd.to_path_buf();
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let output = Command::new(env!("CARGO_BIN_EXE_prefsd"))
            .args(&args)
            .current_dir(&cwd)
            .env_remove("PREFSD_SOCKET")
            .env_remove("PREFSD_CONFIG")
            .env_remove("PREFSD_DATABASE")
            .env("PREFSD_LOG", "warn")
            .output()
            .expect("running the prefsd binary");
        Run {
            code: output.status.code().expect("prefsd exited, not killed"),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    })
    .await
    .expect("the blocking task")
}

/// Runs a client subcommand against the daemon's socket.
async fn client(d: &Daemon, args: &[&str]) -> Run {
    let socket = d.socket.display().to_string();
    let mut all = vec!["--socket", socket.as_str()];
    all.extend_from_slice(args);
    prefsd(d.dir.path(), &all).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_and_call() {
    let d = Daemon::start().await;
    let status = client(&d, &["status"]).await.json();
    assert_eq!(status["protocol"], 1);
    assert_eq!(status["version"], env!("CARGO_PKG_VERSION"));
    assert_eq!(status["counts"]["users"], 0);

    let ping = client(&d, &["call", "daemon.ping"]).await;
    assert_eq!(ping.code, 0, "{ping:?}");
    assert_eq!(ping.stdout.trim(), "\"pong\"");

    let identify = client(
        &d,
        &[
            "call",
            "users.identify",
            r#"{"user_id":"u1","properties":{"a":1}}"#,
        ],
    )
    .await
    .json();
    assert_eq!(identify["properties"], json!({ "a": 1 }));
    assert_eq!(
        d.call("users.get", json!({ "user_id": "u1" })).await,
        identify
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_list_unset_for_a_user() {
    let d = Daemon::start().await;
    let stored = client(
        &d,
        &[
            "set",
            "u1",
            r#"{"channel_types":{"sms":true,"push":false}}"#,
        ],
    )
    .await
    .json();
    assert_eq!(
        stored,
        preference_set(
            "default",
            json!({ "channel_types": { "sms": true, "push": false } })
        )
    );
    // --merge merges; without it, set replaces.
    let merged = client(
        &d,
        &["set", "u1", "--merge", r#"{"channel_types":{"push":null}}"#],
    )
    .await
    .json();
    assert_eq!(
        merged,
        preference_set("default", json!({ "channel_types": { "sms": true } }))
    );
    client(
        &d,
        &[
            "set",
            "u1",
            "--set",
            "acme",
            r#"{"categories":{"marketing":true}}"#,
        ],
    )
    .await
    .json();

    // get: effective unless --raw.
    assert_eq!(
        client(&d, &["get", "u1"]).await.json(),
        preference_set(
            "default",
            json!({ "channel_types": { "email": true, "sms": true }, "commercial_subscribed": true })
        )
    );
    assert_eq!(client(&d, &["get", "u1", "--raw"]).await.json(), merged);
    assert_eq!(
        client(&d, &["get", "u1", "--set", "acme", "--raw"])
            .await
            .json()["categories"],
        json!({ "marketing": true })
    );

    let list = client(&d, &["list", "u1"]).await.json();
    let mut ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["id"].as_str().unwrap())
        .collect();
    ids.sort();
    assert_eq!(ids, ["acme", "default"]);

    assert_eq!(
        client(&d, &["unset", "u1", "--set", "acme"]).await.json(),
        json!({ "deleted": true })
    );
    assert_eq!(
        client(&d, &["unset", "u1"]).await.json(),
        json!({ "deleted": true })
    );
    assert_eq!(client(&d, &["list", "u1"]).await.json(), json!([]));
    assert_eq!(
        client(&d, &["unset", "u1"]).await.json(),
        json!({ "deleted": false })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_get_list_unset_for_an_object() {
    let d = Daemon::start().await;
    let stored = client(
        &d,
        &[
            "set",
            "p1",
            "--object",
            "projects",
            r#"{"workflows":{"deploy":false}}"#,
        ],
    )
    .await
    .json();
    assert_eq!(
        stored,
        preference_set("default", json!({ "workflows": { "deploy": false } }))
    );
    assert_eq!(
        d.call(
            "objects.getPreferences",
            json!({ "collection": "projects", "object_id": "p1", "raw": true })
        )
        .await,
        stored
    );
    // Not a user.
    assert_eq!(client(&d, &["list", "p1"]).await.json(), json!([]));
    assert_eq!(
        client(&d, &["get", "p1", "--object", "projects", "--raw"])
            .await
            .json(),
        stored
    );
    assert_eq!(
        client(&d, &["get", "p1", "--object", "projects"])
            .await
            .json()["workflows"],
        json!({ "deploy": false })
    );
    assert_eq!(
        client(&d, &["list", "p1", "--object", "projects"])
            .await
            .json(),
        json!([stored])
    );
    assert_eq!(
        client(&d, &["unset", "p1", "--object", "projects"])
            .await
            .json(),
        json!({ "deleted": true })
    );
    assert_eq!(
        client(&d, &["list", "p1", "--object", "projects"])
            .await
            .json(),
        json!([])
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn identify_and_evaluate() {
    let d = Daemon::start().await;
    let user = client(&d, &["identify", "u1", "--properties", r#"{"name":"Ada"}"#])
        .await
        .json();
    assert_eq!(user["id"], "u1");
    assert_eq!(user["properties"], json!({ "name": "Ada" }));
    client(
        &d,
        &[
            "set",
            "u1",
            r#"{"workflows":{"new-comment":{"channel_types":{"email":false}}}}"#,
        ],
    )
    .await
    .json();

    // The table: one row per recipient and channel, with the reason.
    let run = client(&d, &["evaluate", "new-comment", "u1", "u2"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["RECIPIENT", "CHANNEL", "SEND", "REASON"]);
    assert_eq!(
        rows[1],
        [
            "u1",
            "email",
            "no",
            "opted_out",
            "workflows.new-comment.channel_types.email",
            "(recipient:default)"
        ]
    );
    assert_eq!(rows[2], ["u1", "in_app_feed", "yes", "opted_in"]);
    assert_eq!(rows[3], ["u2", "email", "yes", "opted_in"]);
    assert_eq!(rows[4], ["u2", "in_app_feed", "yes", "opted_in"]);
    assert_eq!(rows.len(), 5, "{}", run.stdout);

    // Channels, objects and --json.
    let result = client(
        &d,
        &[
            "evaluate",
            "digest",
            "u1",
            "projects/p1",
            "--channel",
            "sms",
            "--channel",
            "chat:c-1",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        result["results"][1]["recipient"],
        json!({ "id": "p1", "collection": "projects" })
    );
    let channels = &result["results"][0]["channels"];
    assert_eq!(channels[0]["type"], "sms");
    assert_eq!(channels[0]["send"], false);
    assert_eq!(channels[0]["reason"]["layer"], "environment");
    assert_eq!(channels[1]["type"], "chat");
    assert_eq!(channels[1]["id"], "c-1");
    assert_eq!(channels[1]["send"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_rpc_error_exits_1_with_the_message_on_stderr() {
    let d = Daemon::start().await;
    let run = client(&d, &["call", "users.get", r#"{"user_id":"ghost"}"#]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stdout.is_empty(), "{run:?}");
    assert!(run.stderr.contains("not found"), "{run:?}");
    assert!(run.stderr.contains("ghost"), "{run:?}");

    // Invalid params: the message and each bad field.
    let run = client(&d, &["set", "u1", r#"{"channel_types":{"fax":true}}"#]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr.contains("preferences.channel_types.fax"),
        "{run:?}"
    );
    assert!(run.stderr.contains("unknown channel type"), "{run:?}");
    // Nothing was written.
    assert_eq!(d.counts().await["users"], 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_daemon_exits_2_and_says_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("nobody.sock");
    let socket = socket.display().to_string();
    let run = prefsd(dir.path(), &["--socket", &socket, "status"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains(&socket), "names the socket: {run:?}");
    assert!(
        run.stderr.contains("prefsd serve"),
        "says to start the daemon: {run:?}"
    );
    assert!(
        run.stderr.contains("--socket"),
        "says how to point elsewhere: {run:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_config_on_a_good_and_a_bad_directory() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good");
    write_files(&good, &default_files());
    let run = prefsd(dir.path(), &["check-config", good.to_str().unwrap()]).await;
    assert_eq!(run.code, 0, "{run:?}");
    assert!(run.stdout.contains("ok"), "{run:?}");
    assert!(run.stdout.contains("4 workflows"), "{run:?}");
    // --config names the directory too.
    let run = prefsd(dir.path(), &["--config", "good", "check-config"]).await;
    assert_eq!(run.code, 0, "{run:?}");

    let bad = dir.path().join("bad");
    let files = crate::support::files_with(&[(
        "workflows.toml",
        "[[workflow]]\nkey = \"a\"\nchannels = [{ type = \"fax\" }]\n",
    )]);
    write_files(&bad, &files);
    let run = prefsd(dir.path(), &["check-config", bad.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("workflows.toml"), "{run:?}");
    assert!(run.stderr.contains("fax"), "{run:?}");
    assert!(
        run.stderr.contains("workflows.toml:3"),
        "with the line: {run:?}"
    );

    let missing = dir.path().join("missing");
    let run = prefsd(dir.path(), &["check-config", missing.to_str().unwrap()]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("missing"), "{run:?}");
}
