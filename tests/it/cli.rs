//! The `prefsd` binary as a client of a daemon on a temp socket (ripgrep's `TestCommand`
//! style: run it, check the exit code, stdout and stderr).

use std::path::Path;
use std::process::Command;

use serde_json::{Value, json};

use crate::support::{Daemon, default_files, preference_set, write_files};

/// What a run of the binary printed and returned.
#[derive(Debug)]
pub(crate) struct Run {
    pub(crate) code: i32,
    pub(crate) stdout: String,
    pub(crate) stderr: String,
}

impl Run {
    /// Stdout as JSON, for a run that must have succeeded.
    #[track_caller]
    pub(crate) fn json(&self) -> Value {
        assert_eq!(self.code, 0, "the command failed: {self:?}");
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("stdout is not JSON ({e}): {self:?}"))
    }
}

/// Runs the binary in `cwd` with `args`, away from the environment of the test run.
pub(crate) async fn prefsd(cwd: &Path, args: &[&str]) -> Run {
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
pub(crate) async fn client(d: &Daemon, args: &[&str]) -> Run {
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

    // The table: one row per recipient and channel, with the reason and the layers
    // considered (u2 has no set: "(none)").
    let run = client(&d, &["evaluate", "new-comment", "u1", "u2"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    let rows: Vec<Vec<&str>> = run
        .stdout
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(
        rows[0],
        ["RECIPIENT", "CHANNEL", "SEND", "REASON", "CONSIDERED"]
    );
    assert_eq!(
        rows[1],
        [
            "u1",
            "email",
            "no",
            "opted_out",
            "workflows.new-comment.channel_types.email",
            "(recipient:default)",
            "environment,",
            "recipient:default"
        ]
    );
    let considered = ["environment,", "recipient:default"];
    let none = ["environment,", "recipient:default", "(none)"];
    assert_eq!(
        rows[2],
        [&["u1", "in_app_feed", "yes", "opted_in"][..], &considered].concat()
    );
    assert_eq!(
        rows[3],
        [&["u2", "email", "yes", "opted_in"][..], &none].concat()
    );
    assert_eq!(
        rows[4],
        [&["u2", "in_app_feed", "yes", "opted_in"][..], &none].concat()
    );
    assert_eq!(rows.len(), 5, "{}", run.stdout);

    // Channels, objects (--object makes the ids objects) and --json.
    let result = client(
        &d,
        &[
            "evaluate",
            "digest",
            "p1",
            "--object",
            "projects",
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
        result["results"][0]["recipient"],
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
    // An invalid config is a "no" (1, as `nginx -t`), not a usage error.
    let run = prefsd(dir.path(), &["check-config", bad.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("workflows.toml"), "{run:?}");
    assert!(run.stderr.contains("fax"), "{run:?}");
    assert!(
        run.stderr.contains("workflows.toml:3"),
        "with the line: {run:?}"
    );

    let missing = dir.path().join("missing");
    let run = prefsd(dir.path(), &["check-config", missing.to_str().unwrap()]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("missing"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_writes_the_shipped_config_once_and_serve_says_where_it_looked() {
    let dir = tempfile::tempdir().unwrap();
    // No config directory: the message names the absolute path and what to do.
    let run = prefsd(dir.path(), &["serve"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    let expected = dir.path().join("config").display().to_string();
    assert!(run.stderr.contains(&expected), "names {expected}: {run:?}");
    assert!(run.stderr.contains("--config"), "{run:?}");
    assert!(run.stderr.contains("prefsd init"), "{run:?}");

    let run = prefsd(dir.path(), &["init"]).await;
    assert_eq!(run.code, 0, "{run:?}");
    for (name, shipped) in [
        ("prefsd.toml", include_str!("../../config/prefsd.toml")),
        (
            "workflows.toml",
            include_str!("../../config/workflows.toml"),
        ),
        (
            "environment.json",
            include_str!("../../config/environment.json"),
        ),
        (
            "tenants/acme.json",
            include_str!("../../config/tenants/acme.json"),
        ),
    ] {
        let written = std::fs::read_to_string(dir.path().join("config").join(name))
            .unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(written, shipped, "{name}");
    }
    let run = prefsd(dir.path(), &["check-config"]).await;
    assert_eq!(run.code, 0, "the written config is valid: {run:?}");
    // A second init overwrites nothing.
    std::fs::write(dir.path().join("config/prefsd.toml"), "# mine\n").unwrap();
    let run = prefsd(dir.path(), &["init"]).await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("already exists"), "{run:?}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config/prefsd.toml")).unwrap(),
        "# mine\n"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_directories_are_named_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    write_files(&dir.path().join("config"), &default_files());
    let missing = dir.path().join("nope");
    let socket = missing.join("d.sock").display().to_string();
    let run = prefsd(
        dir.path(),
        &["--socket", &socket, "serve", "--database", "d.db"],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("{} does not exist", missing.display())),
        "{run:?}"
    );
    assert!(
        !run.stderr.contains(".d.sock."),
        "no private temporary name: {run:?}"
    );
    assert!(run.stderr.contains("--socket"), "{run:?}");

    let database = missing.join("d.db").display().to_string();
    let run = prefsd(
        dir.path(),
        &["--socket", "d.sock", "serve", "--database", &database],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr
            .contains(&format!("{} does not exist", missing.display())),
        "{run:?}"
    );
    assert_eq!(
        run.stderr.matches("unable to open").count(),
        0,
        "one message, not SQLite's three: {run:?}"
    );
    assert!(run.stderr.contains("--database"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_validation_error_names_each_field_once() {
    let d = Daemon::start().await;
    let run = client(
        &d,
        &["set", "u1", r#"{"channel_types":{"fax":true},"foo":1}"#],
    )
    .await;
    assert_eq!(run.code, 1, "{run:?}");
    assert_eq!(
        run.stderr.matches("preferences.channel_types.fax").count(),
        1,
        "{run:?}"
    );
    assert_eq!(run.stderr.matches("preferences.foo").count(), 1, "{run:?}");
    assert!(run.stderr.starts_with("error: invalid params\n"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_socket_says_who_may_connect() {
    use std::os::unix::fs::PermissionsExt as _;
    use std::os::unix::process::CommandExt as _;
    let d = Daemon::start().await;
    // Root passes every permission check, so the client runs as nobody then; anyone else
    // is refused by a socket nobody may use.
    let root =
        std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0);
    if root {
        std::fs::set_permissions(d.dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    } else {
        std::fs::set_permissions(&d.socket, std::fs::Permissions::from_mode(0o000)).unwrap();
    }
    let socket = d.socket.clone();
    let output = tokio::task::spawn_blocking(move || {
        let mut command = Command::new(env!("CARGO_BIN_EXE_prefsd"));
        command.arg("--socket").arg(&socket).arg("status");
        if root {
            command.uid(65534).gid(65534);
        }
        command.output().expect("running prefsd")
    })
    .await
    .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("permission denied"), "{stderr}");
    assert!(
        stderr.contains("mode 0"),
        "shows the socket's mode: {stderr}"
    );
    assert!(stderr.contains("socket_mode"), "{stderr}");
    assert!(stderr.contains("access.allowed_uids"), "{stderr}");
    assert!(!stderr.contains("is `prefsd serve` running"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_that_does_not_answer_times_out_with_what_to_do() {
    let dir = tempfile::tempdir().unwrap();
    let socket = dir.path().join("silent.sock");
    // Accepts connections and never answers.
    let listener = std::os::unix::net::UnixListener::bind(&socket).unwrap();
    let socket = socket.display().to_string();
    let started = std::time::Instant::now();
    let run = prefsd(
        dir.path(),
        &["--socket", &socket, "--timeout", "500ms", "status"],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(
        run.stderr.contains("did not answer within 500ms"),
        "{run:?}"
    );
    assert!(run.stderr.contains("--timeout"), "{run:?}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(10),
        "{run:?}"
    );
    drop(listener);
    // One duration syntax: a malformed one is a usage error naming the expected form.
    let run = prefsd(
        dir.path(),
        &["--socket", &socket, "--timeout", "soon", "status"],
    )
    .await;
    assert_eq!(run.code, 2, "{run:?}");
    assert!(run.stderr.contains("1m30s"), "{run:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_user_id_with_a_slash_is_one_user_and_objects_need_object() {
    let d = Daemon::start().await;
    let result = client(&d, &["evaluate", "new-comment", "team/ada", "--json"])
        .await
        .json();
    assert_eq!(
        result["results"][0]["recipient"],
        json!({ "id": "team/ada" })
    );
    let result = client(
        &d,
        &[
            "evaluate",
            "new-comment",
            "p1",
            "p2",
            "--object",
            "projects",
            "--json",
        ],
    )
    .await
    .json();
    assert_eq!(
        result["results"][1]["recipient"],
        json!({ "id": "p2", "collection": "projects" })
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn friendly_subcommands_for_recipients_tenants_audiences_jobs_and_config() {
    let d = Daemon::start().await;
    let set = client(
        &d,
        &[
            "recipient",
            "set",
            "p1",
            "--object",
            "projects",
            "--properties",
            r#"{"name":"Apollo"}"#,
        ],
    )
    .await
    .json();
    assert_eq!(set["properties"]["name"], "Apollo");
    let got = client(&d, &["recipient", "get", "p1", "--object", "projects"])
        .await
        .json();
    assert_eq!(got["properties"]["name"], "Apollo");
    client(&d, &["recipient", "set", "dana"]).await.json();
    assert_eq!(
        client(&d, &["recipient", "get", "dana"]).await.json()["id"],
        "dana"
    );
    client(&d, &["recipient", "delete", "dana"]).await.json();
    let run = client(&d, &["recipient", "get", "dana"]).await;
    assert_eq!(run.code, 1, "{run:?}");

    let tenant = client(
        &d,
        &[
            "tenant",
            "set",
            "t1",
            "--name",
            "T One",
            "--preferences",
            r#"{"categories":{"marketing":false}}"#,
        ],
    )
    .await
    .json();
    assert_eq!(tenant["name"], "T One");
    let got = client(&d, &["tenant", "get", "t1"]).await.json();
    assert_eq!(
        got["settings"]["preference_set"]["categories"]["marketing"],
        false
    );
    client(&d, &["tenant", "delete", "t1"]).await.json();
    assert_eq!(client(&d, &["tenant", "get", "t1"]).await.code, 1);

    client(&d, &["audience", "add", "beta", "u1", "u2"])
        .await
        .json();
    client(&d, &["audience", "remove", "beta", "u2"])
        .await
        .json();
    let members = client(&d, &["audience", "list", "beta"]).await.json();
    assert_eq!(
        members["items"].as_array().map(Vec::len),
        Some(1),
        "{members}"
    );

    let jobs = client(&d, &["bulk", "list"]).await.json();
    assert!(jobs["items"].is_array(), "{jobs}");
    let status = client(&d, &["config", "status"]).await.json();
    assert_eq!(status["workflows"], 4);
    let reloaded = client(&d, &["config", "reload"]).await.json();
    assert_eq!(reloaded["version"], 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bulk_set_of_more_than_a_thousand_users_runs_as_several_jobs_followed_together() {
    let d = Daemon::start().await;
    let users: Vec<String> = (0..1500).map(|i| format!("many-{i}")).collect();
    let file = d.dir.path().join("users.txt");
    std::fs::write(&file, users.join("\n")).unwrap();
    let run = client(
        &d,
        &[
            "bulk",
            "set",
            "--users",
            file.to_str().unwrap(),
            "--preferences",
            r#"{"channel_types":{"sms":false}}"#,
            "--follow",
        ],
    )
    .await;
    assert_eq!(run.code, 0, "{run:?}");
    let lines: Vec<&str> = run
        .stdout
        .lines()
        .filter(|l| l.starts_with("bulk operation"))
        .collect();
    assert_eq!(lines.len(), 2, "{run:?}");
    assert!(lines[0].contains("completed — 1000 processed"), "{run:?}");
    assert!(lines[1].contains("completed — 500 processed"), "{run:?}");
    let set = d
        .call(
            "users.getPreferences",
            json!({ "user_id": "many-1499", "raw": true }),
        )
        .await;
    assert_eq!(set["channel_types"], json!({ "sms": false }));
}

#[test]
fn every_argument_and_subcommand_has_help_and_an_example_and_the_environment_is_listed() {
    use clap::CommandFactory as _;
    fn walk(command: &clap::Command, path: &str) {
        for arg in command.get_arguments() {
            let id = arg.get_id().as_str();
            if id == "help" || id == "version" {
                continue;
            }
            assert!(arg.get_help().is_some(), "{path} {id} has no help text");
        }
        for sub in command.get_subcommands() {
            let name = format!("{path} {}", sub.get_name());
            if sub.get_name() == "help" {
                continue;
            }
            assert!(sub.get_about().is_some(), "{name} has no description");
            if !sub.has_subcommands() || !sub.is_subcommand_required_set() {
                let example = sub.get_after_help().map(ToString::to_string);
                assert!(
                    example.is_some_and(|e| e.starts_with("Example")),
                    "{name} --help has no example"
                );
            }
            walk(sub, &name);
        }
    }
    let command = prefsd::cli::args::Cli::command();
    walk(&command, "prefsd");
    let help = command.clone().render_long_help().to_string();
    for var in [
        "PREFSD_SOCKET",
        "PREFSD_DATABASE",
        "PREFSD_CONFIG",
        "PREFSD_LOG",
        "PREFSD_SECRET_KEYS",
        "NO_COLOR",
        "TOKIO_WORKER_THREADS",
    ] {
        assert!(help.contains(var), "prefsd --help lists {var}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn history_shows_a_diff_and_changes_prints_resumable_json_lines() {
    let d = Daemon::start().await;
    client(
        &d,
        &["set", "dana", r#"{"workflows":{"a":false,"b":true}}"#],
    )
    .await
    .json();
    // The instant between the two writes, from the log.
    let first = d
        .call("changes.list", json!({ "kinds": ["preferences.set"] }))
        .await;
    let t1 = first["items"][0]["at"].as_str().expect("at").to_string();
    tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    client(
        &d,
        &[
            "set",
            "dana",
            r#"{"workflows":{"a":true},"categories":{"news":false}}"#,
        ],
    )
    .await
    .json();

    let history = client(&d, &["history", "dana"]).await;
    assert_eq!(history.code, 0, "{history:?}");
    for line in [
        "~workflows.a: false -> true",
        "-workflows.b (was true)",
        "+categories.news = false",
        "+workflows.a = false",
        "users.setPreferences",
    ] {
        assert!(
            history.stdout.contains(line),
            "{line:?} in {}",
            history.stdout
        );
    }
    // Newest first: the second change's lines come before the first's.
    let newest = history
        .stdout
        .find("~workflows.a")
        .expect("the newest change");
    let oldest = history
        .stdout
        .find("+workflows.a = false")
        .expect("the first change");
    assert!(newest < oldest, "{}", history.stdout);

    let then = client(&d, &["get", "dana", "--raw", "--as-of", &t1])
        .await
        .json();
    assert_eq!(then["workflows"], json!({ "a": false, "b": true }));
    let decided = client(
        &d,
        &[
            "evaluate",
            "new-comment",
            "dana",
            "--channel",
            "email",
            "--as-of",
            &t1,
            "--json",
        ],
    )
    .await
    .json();
    assert!(decided["results"][0]["channels"][0]["send"].is_boolean());

    let all = client(&d, &["changes", "--after", "0"]).await;
    assert_eq!(all.code, 0, "{all:?}");
    let seqs: Vec<i64> = all
        .stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<Value>(l).expect("one JSON object per line")["seq"]
                .as_i64()
                .expect("seq")
        })
        .collect();
    assert!(
        seqs.len() >= 3,
        "config.applied and two sets: {}",
        all.stdout
    );
    assert!(seqs.windows(2).all(|w| w[0] < w[1]));
    // Resumed after the second-to-last: only the last.
    let after = seqs[seqs.len() - 2].to_string();
    let rest = client(&d, &["changes", "--after", &after]).await;
    assert_eq!(rest.stdout.lines().count(), 1, "{rest:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn list_recipients_and_tenants_page_by_page_and_merge_users() {
    let d = Daemon::start().await;
    for id in ["u1", "u2", "u3"] {
        d.call(
            "users.identify",
            json!({ "user_id": id, "properties": { "n": id } }),
        )
        .await;
    }
    d.call(
        "objects.set",
        json!({ "collection": "projects", "object_id": "p1" }),
    )
    .await;
    d.call("tenants.set", json!({ "tenant_id": "t1", "name": "One" }))
        .await;

    let first = client(&d, &["recipient", "list", "--limit", "2"])
        .await
        .json();
    assert_eq!(first["items"].as_array().map(Vec::len), Some(2), "{first}");
    let next = first["next"].as_str().expect("a next page");
    let rest = client(&d, &["recipient", "list", "--after", next])
        .await
        .json();
    assert_eq!(rest["items"][0]["id"], "u3");
    let desc = client(
        &d,
        &[
            "recipient",
            "list",
            "--desc",
            "--preferences",
            "--limit",
            "1",
        ],
    )
    .await
    .json();
    assert_eq!(desc["items"][0]["id"], "u3");
    assert_eq!(desc["items"][0]["preferences"], json!({}));
    let objects = client(&d, &["recipient", "list", "--object", "projects"])
        .await
        .json();
    assert_eq!(objects["items"][0]["id"], "p1");
    let tenants = client(&d, &["tenant", "list", "--name", "One"])
        .await
        .json();
    assert_eq!(tenants["items"][0]["id"], "t1");

    let merged = client(&d, &["recipient", "merge", "u1", "--from", "u2"])
        .await
        .json();
    assert_eq!(merged["id"], "u1");
    assert_eq!(d.counts().await["users"], 2);
    let run = client(&d, &["recipient", "list", "--limit", "0"]).await;
    assert_eq!(run.code, 1, "{run:?}");
    assert!(run.stderr.contains("limit"), "{run:?}");
}
