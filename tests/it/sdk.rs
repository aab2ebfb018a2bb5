//! Knock's real SDKs against the daemon (issue 18, "Must show"): `tests/sdk/run.sh` installs
//! the pinned `knockapi`, `@knocklabs/node` and `@knocklabs/client` and drives every SDK
//! method that maps to a route of rest.md §4 — Python over the socket, Node over the socket
//! and over TCP, the browser client over TCP with a token from `prefsd token` — checking
//! each result. Without python3, node or npm the test is skipped with a message, unless
//! `CI` is set: then it fails.

use std::process::Command;

use crate::support::Daemon;

const RSA_PRIVATE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-private.pem");
const RSA_PUBLIC: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/keys/rsa-public.pem");
const SCRIPT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/sdk/run.sh");

/// Where the SDKs are installed, kept between runs (the script reinstalls when a pinned
/// version changes).
const SDK_DIR: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/target/sdk");

fn missing_tools() -> Vec<&'static str> {
    ["python3", "node", "npm"]
        .into_iter()
        .filter(|tool| {
            Command::new(tool)
                .arg("--version")
                .output()
                .map_or(true, |o| !o.status.success())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn knocks_sdks_work_unchanged() {
    let missing = missing_tools();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI needs {missing:?} for the SDK tests"
        );
        eprintln!("skipped: the SDK tests need {missing:?}, which are not installed");
        return;
    }
    let toml = format!(
        "durability = \"normal\"\n\n[access]\nsecret_keys = [\"sk_test\"]\n\n\
         [access.user_token]\npublic_key_file = \"{RSA_PUBLIC}\"\n"
    );
    let d = Daemon::start_with_tcp(&[("prefsd.toml", &toml)]).await;
    let user = "browser-1";
    let token = Command::new(env!("CARGO_BIN_EXE_prefsd"))
        .args(["token", "--user", user, "--key", RSA_PRIVATE])
        .output()
        .expect("running prefsd token");
    assert!(token.status.success(), "{token:?}");
    let token = String::from_utf8(token.stdout).expect("a token is text");
    let tcp = d.tcp.expect("a TCP listener");
    let mut script = Command::new("timeout");
    script
        .args(["600", "bash", SCRIPT])
        .env("PREFSD_SOCKET", &d.socket)
        .env("PREFSD_TCP_URL", format!("http://{tcp}"))
        .env("KNOCK_API_KEY", "sk_test")
        .env("PREFSD_USER_TOKEN", token.trim())
        .env("PREFSD_TOKEN_USER", user)
        .env("SDK_DIR", SDK_DIR);
    // The daemon runs on this test's runtime; the script waits on a blocking thread.
    let out = tokio::task::spawn_blocking(move || script.output())
        .await
        .expect("the script's thread")
        .expect("running tests/sdk/run.sh (within 10 minutes)");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "tests/sdk/run.sh failed:\n{stdout}\n{stderr}"
    );
    for driver in [
        "python: ok",
        "node (socket): ok",
        "node (tcp): ok",
        "browser client (tcp): ok",
    ] {
        assert!(
            stdout.contains(driver),
            "{driver:?} missing:\n{stdout}\n{stderr}"
        );
    }
}
