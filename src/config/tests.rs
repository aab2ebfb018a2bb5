use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::json;

use super::*;
use crate::model::{Channel, ChannelType, Workflow};

fn files(list: &[(&str, &str)]) -> Vec<(PathBuf, String)> {
    list.iter()
        .map(|(path, content)| (PathBuf::from(path), content.to_string()))
        .collect()
}

fn parse(list: &[(&str, &str)]) -> Result<Config, Vec<ConfigError>> {
    Config::parse(files(list))
}

fn parse_ok(list: &[(&str, &str)]) -> Config {
    match parse(list) {
        Ok(config) => config,
        Err(errors) => panic!("expected a valid config, got {errors:#?}"),
    }
}

fn parse_err(list: &[(&str, &str)]) -> Vec<ConfigError> {
    match parse(list) {
        Ok(config) => panic!("expected errors, got {config:#?}"),
        Err(errors) => errors,
    }
}

/// Asserts that `errors` has one error in `file` at `line` whose message contains `needle`.
#[track_caller]
fn assert_error(errors: &[ConfigError], file: &str, line: Option<usize>, needle: &str) {
    assert!(
        errors
            .iter()
            .any(|e| e.file == file && e.line == line && e.message.contains(needle)),
        "no error {file}:{line:?} containing {needle:?} in {errors:#?}"
    );
}

// ---------------------------------------------------------------------------------------
// Defaults and the happy path

#[test]
fn an_empty_directory_is_all_defaults() {
    let config = parse_ok(&[]);
    assert_eq!(config, Config::default());
    let s = &config.settings;
    assert_eq!(s.socket, PathBuf::from("prefsd.sock"));
    assert_eq!(s.socket_mode, 0o600);
    assert_eq!(s.database, PathBuf::from("prefsd.db"));
    assert_eq!(s.durability, Durability::Full);
    assert_eq!(s.strict_workflows, None);
    assert_eq!(s.vars, json!({}));
    assert_eq!(s.limits.max_request_bytes, 4 * 1024 * 1024);
    assert_eq!(s.limits.max_preference_set_bytes, 256 * 1024);
    assert_eq!(s.limits.max_recipients, 1000);
    assert_eq!(s.limits.max_bulk_users, 1000);
    assert_eq!(s.limits.max_connections, 4096);
    assert_eq!(s.jobs.retention_days, 7);
    assert_eq!(s.access, Access::default());
    assert!(config.environment.is_empty());
    assert!(config.files.is_empty());
}

#[test]
fn empty_files_are_defaults_too() {
    let config = parse_ok(&[
        ("prefsd.toml", ""),
        ("environment.json", "{}"),
        ("workflows.toml", "# nothing yet\n"),
    ]);
    assert_eq!(config.settings, Settings::default());
    assert!(config.environment.is_empty());
    assert!(config.workflows.is_empty());
    assert_eq!(
        config.files,
        ["environment.json", "prefsd.toml", "workflows.toml"]
    );
}

#[test]
fn every_setting_parses() {
    let config = parse_ok(&[(
        "prefsd.toml",
        r#"
socket = "/run/prefsd/prefsd.sock"
socket_mode = 0o660
database = "/var/lib/prefsd/prefsd.db"
durability = "normal"
strict_workflows = true

[vars]
plan = "pro"
threshold = 3
ratio = 0.5
regions = ["eu", "us"]
nested = { a = { b = true } }
"dotted.key" = 1
since = 2024-01-02T03:04:05Z

[limits]
max_request_bytes = 1_048_576
max_preference_set_bytes = 65536
max_recipients = 10
max_bulk_users = 20
max_connections = 30

[jobs]
retention_days = 0

[access]
allowed_uids = [0, 1000]
require_credentials = true
secret_keys = ["sk_one", "sk_two"]
public_keys = ["pk_one"]

[access.user_token]
hs256_secret = "shh"
"#,
    )]);
    let s = config.settings;
    assert_eq!(s.socket, PathBuf::from("/run/prefsd/prefsd.sock"));
    assert_eq!(s.socket_mode, 0o660);
    assert_eq!(s.database, PathBuf::from("/var/lib/prefsd/prefsd.db"));
    assert_eq!(s.durability, Durability::Normal);
    assert_eq!(s.strict_workflows, Some(true));
    assert_eq!(
        s.vars,
        json!({
            "plan": "pro",
            "threshold": 3,
            "ratio": 0.5,
            "regions": ["eu", "us"],
            "nested": { "a": { "b": true } },
            "dotted.key": 1,
            "since": "2024-01-02T03:04:05Z",
        })
    );
    assert_eq!(
        s.limits,
        Limits {
            max_request_bytes: 1_048_576,
            max_preference_set_bytes: 65536,
            max_recipients: 10,
            max_bulk_users: 20,
            max_connections: 30,
            max_database_mb: None,
            read_cache_mb: 8,
            max_properties_bytes: 64 * 1024,
            max_list_items_per_call: 10_000_000,
        }
    );
    assert_eq!(s.jobs.retention_days, 0);
    assert_eq!(
        s.access,
        Access {
            allowed_uids: vec![0, 1000],
            require_credentials: true,
            secret_keys: vec!["sk_one".into(), "sk_two".into()],
            public_keys: vec!["pk_one".into()],
            user_token_public_key_file: None,
            user_token_hs256_secret: Some("shh".into()),
        }
    );
}

#[test]
fn a_public_key_file_is_a_path() {
    let config = parse_ok(&[(
        "prefsd.toml",
        "[access.user_token]\npublic_key_file = \"keys/user-token.pem\"\n",
    )]);
    assert_eq!(
        config.settings.access.user_token_public_key_file,
        Some(PathBuf::from("keys/user-token.pem"))
    );
}

/// What the conformance runner's `write_config` writes.
#[test]
fn the_conformance_runner_layout_parses() {
    let config = parse_ok(&[
        (
            "prefsd.toml",
            "strict_workflows = true\n\n[limits]\nmax_recipients = 5\n\n[vars]\nregion = \"eu\"\n\"with space\" = [1, 2]\n",
        ),
        (
            "environment.json",
            "{\n  \"channel_types\": {\n    \"sms\": false\n  }\n}",
        ),
        (
            "tenants/acme.json",
            r#"{"channel_types": {"__strategy__": "replace", "email": false}}"#,
        ),
        (
            "workflows.toml",
            "[[workflow]]\nkey = \"w\"\ncategories = [\"c\"]\ncommercial = false\noverride_preferences = false\nchannels = [{ type = \"email\", id = \"e1\" }, { type = \"sms\" }]\n",
        ),
    ]);
    assert_eq!(config.settings.strict_workflows, Some(true));
    assert_eq!(config.settings.limits.max_recipients, 5);
    assert_eq!(
        config.settings.vars,
        json!({ "region": "eu", "with space": [1, 2] })
    );
    assert_eq!(
        config.environment.to_value(),
        json!({ "channel_types": { "sms": false } })
    );
    assert_eq!(
        config.tenant_templates["acme"].to_value(),
        json!({ "channel_types": { "__strategy__": "replace", "email": false } })
    );
    let w = &config.workflows["w"];
    assert_eq!(w.workflow.key, "w");
    assert_eq!(w.workflow.categories, ["c"]);
    assert!(!w.workflow.commercial);
    assert_eq!(
        w.channels,
        [
            Channel {
                channel_type: ChannelType::Email,
                id: Some("e1".into())
            },
            Channel {
                channel_type: ChannelType::Sms,
                id: None
            },
        ]
    );
    assert_eq!(
        config.files,
        [
            "environment.json",
            "prefsd.toml",
            "tenants/acme.json",
            "workflows.toml"
        ]
    );
}

#[test]
fn workflows_default_to_no_categories_no_flags_and_all_channels() {
    let config = parse_ok(&[(
        "workflows.toml",
        "[[workflow]]\nkey = \"a\"\n\n[[workflow]]\nkey = \"b\"\ncommercial = true\noverride_preferences = true\n",
    )]);
    let a = &config.workflows["a"];
    assert_eq!(
        a.workflow,
        Workflow {
            key: "a".into(),
            ..Workflow::default()
        }
    );
    assert!(a.channels.is_empty(), "empty means all six channel types");
    let b = &config.workflows["b"].workflow;
    assert!(b.commercial && b.override_preferences);
}

#[test]
fn socket_mode_takes_octal_integers_and_octal_strings() {
    for (text, mode) in [
        ("0o660", 0o660),
        ("0o600", 0o600),
        ("432", 0o660),
        ("0x1B6", 0o666),
        ("\"0660\"", 0o660),
        ("\"660\"", 0o660),
        ("\"0o640\"", 0o640),
        ("\"0\"", 0),
    ] {
        let config = parse_ok(&[("prefsd.toml", &format!("socket_mode = {text}\n"))]);
        assert_eq!(config.settings.socket_mode, mode, "socket_mode = {text}");
    }
    for text in [
        "660",
        "0o1777",
        "-1",
        "\"0899\"",
        "\"rw\"",
        "\"\"",
        "\"01777\"",
        "true",
        "6.6",
    ] {
        let errors = parse_err(&[("prefsd.toml", &format!("\nsocket_mode = {text}\n"))]);
        assert_error(&errors, "prefsd.toml", Some(2), "socket_mode");
    }
}

// ---------------------------------------------------------------------------------------
// Errors: file, line, message

#[test]
fn toml_syntax_errors_have_a_line() {
    let errors = parse_err(&[("prefsd.toml", "socket = \"a\"\n\nsocket_mode = = 1\n")]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(&errors, "prefsd.toml", Some(3), "invalid TOML");

    let errors = parse_err(&[("workflows.toml", "[[workflow]]\nkey =\n\n")]);
    assert_error(&errors, "workflows.toml", Some(2), "invalid TOML");

    let errors = parse_err(&[("prefsd.toml", "a = 1\nsocket = \"x\"\nsocket = \"y\"\n")]);
    assert_error(&errors, "prefsd.toml", Some(3), "invalid TOML");
}

#[test]
fn unknown_settings_are_errors_with_their_line() {
    let errors = parse_err(&[(
        "prefsd.toml",
        "socket = \"s\"\nsokcet_mode = \"0600\"\n\n[limits]\nmax_recipients = 5\nmax_recipient = 5\n\n[jobs]\nkeep_days = 1\n\n[access]\nallow = []\n\n[access.user_token]\nsecret = \"x\"\n\n[varz]\n",
    )]);
    assert_eq!(errors.len(), 6, "{errors:#?}");
    assert_error(&errors, "prefsd.toml", Some(2), "unknown key `sokcet_mode`");
    assert_error(
        &errors,
        "prefsd.toml",
        Some(6),
        "`max_recipient` in [limits]",
    );
    assert_error(&errors, "prefsd.toml", Some(9), "`keep_days` in [jobs]");
    assert_error(&errors, "prefsd.toml", Some(12), "`allow` in [access]");
    assert_error(
        &errors,
        "prefsd.toml",
        Some(15),
        "`secret` in [access.user_token]",
    );
    assert_error(&errors, "prefsd.toml", Some(17), "unknown key `varz`");
}

#[test]
fn wrong_setting_values_are_errors_with_their_line() {
    let errors = parse_err(&[(
        "prefsd.toml",
        r#"socket = ""
database = 5
durability = "sometimes"
strict_workflows = "yes"
vars = 3
[limits]
max_request_bytes = 0
max_preference_set_bytes = -1
max_recipients = "many"
max_connections = 4294967296
[jobs]
retention_days = -7
[access]
allowed_uids = [0, "root", -1]
require_credentials = 1
secret_keys = ["ok", ""]
user_token = { public_key_file = "k.pem", hs256_secret = "s" }
"#,
    )]);
    let expect = [
        (1, "`socket` must not be empty"),
        (2, "`database` must be a string, got integer"),
        (3, "`durability` must be \"full\" or \"normal\""),
        (4, "`strict_workflows` must be true or false"),
        (5, "`vars` must be a table"),
        (7, "`limits.max_request_bytes` must be an integer from 1"),
        (
            8,
            "`limits.max_preference_set_bytes` must be an integer from 1",
        ),
        (9, "`limits.max_recipients` must be an integer, got string"),
        (
            10,
            "`limits.max_connections` must be an integer from 1 to 4294967295",
        ),
        (12, "`jobs.retention_days` must be an integer from 0"),
        (14, "`access.allowed_uids[1]` must be an integer"),
        (14, "`access.allowed_uids[2]` must be an integer from 0"),
        (15, "`access.require_credentials` must be true or false"),
        (16, "`access.secret_keys[1]` must not be empty"),
        (17, "either `public_key_file` or `hs256_secret`, not both"),
    ];
    for (line, needle) in expect {
        assert_error(&errors, "prefsd.toml", Some(line), needle);
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn vars_must_be_representable_as_json() {
    let errors = parse_err(&[("prefsd.toml", "[vars]\nx = nan\ny = 1\n")]);
    assert_error(
        &errors,
        "prefsd.toml",
        Some(2),
        "`vars.x` must be a finite number",
    );
}

#[test]
fn json_syntax_errors_have_a_line() {
    let errors = parse_err(&[(
        "environment.json",
        "{\n  \"channel_types\": {\n    \"sms\": nope,\n  }\n}",
    )]);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert_error(&errors, "environment.json", Some(3), "invalid JSON");
    assert!(!errors[0].message.contains("at line"), "{errors:#?}");

    let errors = parse_err(&[("environment.json", "{ this is not json")]);
    assert_error(&errors, "environment.json", Some(1), "invalid JSON");

    let errors = parse_err(&[("environment.json", "")]);
    assert_error(&errors, "environment.json", Some(1), "invalid JSON");

    let errors = parse_err(&[("tenants/acme.json", "{}\n{}")]);
    assert_error(&errors, "tenants/acme.json", Some(2), "invalid JSON");
}

#[test]
fn preference_set_rules_apply_and_name_the_field() {
    let errors = parse_err(&[
        (
            "environment.json",
            r#"{"channel_types": {"fax": true}, "colour": "blue"}"#,
        ),
        ("tenants/acme.json", "[]"),
        (
            "tenants/beta.json",
            r#"{"workflows": {"w": {"__strategy__": "keep"}}}"#,
        ),
    ]);
    assert_error(&errors, "environment.json", None, "channel_types.fax");
    assert_error(&errors, "environment.json", None, "colour: unknown key");
    assert_error(
        &errors,
        "tenants/acme.json",
        None,
        "must be an object, got an array",
    );
    assert_error(
        &errors,
        "tenants/beta.json",
        None,
        "workflows.w.__strategy__: must be \"replace\" or \"merge\"",
    );
}

#[test]
fn defaults_may_lock_with_strategy_replace() {
    let config = parse_ok(&[(
        "environment.json",
        r#"{"workflows": {"security": {"__strategy__": "replace", "channel_types": {"email": true}}}}"#,
    )]);
    assert!(!config.environment.is_empty());
}

#[test]
fn tenant_ids_come_from_file_names() {
    let config = parse_ok(&[
        ("tenants/acme.json", "{}"),
        ("tenants/team b.json", "{\"commercial_subscribed\": false}"),
    ]);
    assert_eq!(
        config.tenant_templates.keys().collect::<Vec<_>>(),
        ["acme", "team b"]
    );
    let long = format!("tenants/{}.json", "t".repeat(257));
    let errors = parse_err(&[(long.as_str(), "{}")]);
    assert_error(&errors, &long, None, "not a valid tenant id");
}

#[test]
fn workflow_errors_have_their_line() {
    let errors = parse_err(&[(
        "workflows.toml",
        r#"[[workflow]]
key = "welcome"

[[workflow]]
categories = ["x"]

[[workflow]]
key = "welcome"

[[workflow]]
key = "a"
channels = [{ type = "fax" }, { id = "c1" }, { type = "email", colour = "red" }, "sms"]

[[workflow]]
key = "b"
priority = 3
commercial = "yes"
categories = ["ok", 1]

[[workflow]]
key = ""

[[workflow]]
key = "c"
channels = [{ type = "chat", id = "c1" }, { type = "chat", id = "c1" }]

[settings]
x = 1
"#,
    )]);
    let expect = [
        (4, "a [[workflow]] needs a `key`"),
        (
            7,
            "duplicate workflow key `welcome` (first defined on line 1)",
        ),
        (12, "unknown channel type \"fax\""),
        (12, "`channels[1]` needs a `type`"),
        (12, "unknown key `colour` in a channel"),
        (12, "`channels[3]` must be a table, got string"),
        (16, "unknown key `priority` in [[workflow]]"),
        (17, "`commercial` must be true or false"),
        (18, "`categories[1]` must be a string"),
        (21, "`key` must not be empty"),
        (25, "`channels[1]` is listed twice"),
        (27, "unknown key `settings`"),
    ];
    for (line, needle) in expect {
        assert_error(&errors, "workflows.toml", Some(line), needle);
    }
    assert_eq!(errors.len(), expect.len(), "{errors:#?}");
}

#[test]
fn the_catalog_must_use_arrays_of_tables() {
    let errors = parse_err(&[("workflows.toml", "workflow = 1\n")]);
    assert_error(
        &errors,
        "workflows.toml",
        Some(1),
        "`workflow` must be an array",
    );
    let errors = parse_err(&[("workflows.toml", "[workflow]\nkey = \"a\"\n")]);
    assert_error(
        &errors,
        "workflows.toml",
        Some(1),
        "`workflow` must be an array",
    );
}

#[test]
fn errors_of_every_file_are_collected() {
    let errors = parse_err(&[
        ("prefsd.toml", "bogus = 1\n"),
        ("environment.json", "{"),
        ("tenants/acme.json", "{\"x\": 1}"),
        ("workflows.toml", "[[workflow]]\n"),
        ("tenants/ok.json", "{}"),
    ]);
    let mut files: Vec<&str> = errors.iter().map(|e| e.file.as_str()).collect();
    files.sort_unstable();
    assert_eq!(
        files,
        [
            "environment.json",
            "prefsd.toml",
            "tenants/acme.json",
            "workflows.toml"
        ]
    );
}

#[test]
fn errors_display_as_file_line_message() {
    let errors = parse_err(&[("prefsd.toml", "\nbogus = 1\n")]);
    assert_eq!(errors[0].to_string(), "prefsd.toml:2: unknown key `bogus`");
    let errors = parse_err(&[("tenants/a.json", "[]")]);
    assert_eq!(
        errors[0].to_string(),
        "tenants/a.json: the preference set must be an object, got an array"
    );
}

#[test]
fn temporaries_and_other_files_are_ignored() {
    let config = parse_ok(&[
        ("prefsd.toml", "strict_workflows = true\n"),
        (".prefsd.toml.swp", "garbage"),
        ("prefsd.toml~", "garbage"),
        ("workflows.toml.tmp", "garbage"),
        (".workflows.toml.tmp", "garbage"),
        ("environment.json.swx", "garbage"),
        ("README.md", "# notes"),
        ("extra.toml", "garbage ="),
        ("tenants/.acme.json.swp", "garbage"),
        ("tenants/acme.json~", "garbage"),
        ("tenants/notes.txt", "garbage"),
        ("tenants/deeper/x.json", "garbage"),
        ("other/x.json", "garbage"),
    ]);
    assert_eq!(config.settings.strict_workflows, Some(true));
    assert_eq!(config.files, ["prefsd.toml"]);
    assert!(config.tenant_templates.is_empty());
}

// ---------------------------------------------------------------------------------------
// Overrides

#[test]
fn overrides_win_over_the_file_which_wins_over_defaults() {
    let mut defaults = parse_ok(&[]).settings;
    defaults.apply_overrides(None, None);
    assert_eq!(defaults.socket, PathBuf::from("prefsd.sock"));
    assert_eq!(defaults.database, PathBuf::from("prefsd.db"));

    let mut file = parse_ok(&[(
        "prefsd.toml",
        "socket = \"file.sock\"\ndatabase = \"file.db\"\n",
    )])
    .settings;
    let from_file = file.clone();
    file.apply_overrides(None, None);
    assert_eq!(file, from_file);
    assert_eq!(file.socket, PathBuf::from("file.sock"));

    file.apply_overrides(Some("flag.sock".into()), None);
    assert_eq!(file.socket, PathBuf::from("flag.sock"));
    assert_eq!(file.database, PathBuf::from("file.db"));

    file.apply_overrides(None, Some("env.db".into()));
    assert_eq!(file.socket, PathBuf::from("flag.sock"));
    assert_eq!(file.database, PathBuf::from("env.db"));

    let handle = ConfigHandle::new(
        parse_ok(&[("prefsd.toml", "socket = \"file.sock\"\n")]),
        PathBuf::from("unused"),
        Overrides {
            socket: Some("flag.sock".into()),
            database: None,
            ..Default::default()
        },
        None,
    )
    .expect("no check to fail");
    assert_eq!(handle.current().settings.socket, PathBuf::from("flag.sock"));
    assert_eq!(
        handle.current().settings.database,
        PathBuf::from("prefsd.db")
    );
}

// ---------------------------------------------------------------------------------------
// The shipped config directory

fn shipped_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("config")
}

#[test]
fn the_shipped_config_directory_is_valid() {
    let config = match load_dir(&shipped_dir()) {
        Ok(config) => config,
        Err(errors) => panic!("the shipped config/ is invalid: {errors:#?}"),
    };
    assert_eq!(
        config.files,
        [
            "environment.json",
            "prefsd.toml",
            "tenants/acme.json",
            "workflows.toml"
        ]
    );
    // Beside the directory, where the README's tour (run from the repository) expects them.
    assert_eq!(config.settings.socket, shipped_dir().join("../prefsd.sock"));
    assert_eq!(config.settings.database, shipped_dir().join("../prefsd.db"));
    assert!(!config.environment.is_empty());
    assert!(config.tenant_templates.contains_key("acme"));
    assert!(config.workflows.len() >= 4);
    assert!(config.workflows.values().any(|w| w.workflow.commercial));
    assert!(
        config
            .workflows
            .values()
            .any(|w| w.workflow.override_preferences)
    );
    assert!(config.workflows.values().any(|w| !w.channels.is_empty()));
}

// ---------------------------------------------------------------------------------------
// Reading the directory and the live handle (no watcher)

fn write(dir: &Path, relative: &str, content: &str) {
    let path = dir.join(relative);
    if let Some(parent) = path.parent() {
        std::fs::create_dir_all(parent).expect("create the parent directory");
    }
    std::fs::write(path, content).expect("write a config file");
}

/// Saves like an editor: a temporary file, then a rename over the original.
fn write_atomic(dir: &Path, relative: &str, content: &str) {
    let path = dir.join(relative);
    let parent = path.parent().expect("a parent directory");
    std::fs::create_dir_all(parent).expect("create the parent directory");
    let name = path.file_name().expect("a file name").to_string_lossy();
    let temp = parent.join(format!(".{name}.tmp"));
    std::fs::write(&temp, content).expect("write the temporary file");
    std::fs::rename(&temp, &path).expect("rename over the original");
}

const WORKFLOWS_ONE: &str = "[[workflow]]\nkey = \"welcome\"\n";
const WORKFLOWS_TWO: &str = "[[workflow]]\nkey = \"welcome\"\n\n[[workflow]]\nkey = \"digest\"\ncategories = [\"updates\"]\n";

fn config_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    write(dir.path(), "prefsd.toml", "socket = \"a.sock\"\n");
    write(dir.path(), "environment.json", "{}");
    write(dir.path(), "workflows.toml", WORKFLOWS_ONE);
    dir
}

fn handle_for(dir: &Path) -> ConfigHandle {
    match ConfigHandle::load(dir.to_path_buf(), Overrides::default(), None) {
        Ok(handle) => handle,
        Err(errors) => panic!("{errors:#?}"),
    }
}

#[test]
fn read_dir_reads_the_top_level_and_tenants() {
    let dir = config_dir();
    write(dir.path(), "tenants/acme.json", "{}");
    write(dir.path(), "tenants/.acme.json.swp", "x");
    write(dir.path(), "notes.txt", "x");
    write(dir.path(), "sub/x.json", "{}");
    let mut read: Vec<String> = read_dir(dir.path())
        .expect("read the directory")
        .into_iter()
        .map(|(path, _)| super::display_path(&path))
        .collect();
    read.sort();
    assert_eq!(
        read,
        [
            "environment.json",
            "prefsd.toml",
            "tenants/acme.json",
            "workflows.toml"
        ]
    );
}

#[test]
fn a_missing_directory_or_unreadable_file_is_a_config_error() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let missing = dir.path().join("nope");
    let errors = match load_dir(&missing) {
        Ok(_) => panic!("a missing directory loaded"),
        Err(errors) => errors,
    };
    assert_eq!(errors.len(), 1);
    assert_eq!(errors[0].file, missing.display().to_string());
    assert!(
        errors[0]
            .message
            .contains("cannot read the config directory")
    );
    assert!(read_dir(&missing).is_err());

    std::fs::write(dir.path().join("environment.json"), [0xff, 0xfe, b'{'])
        .expect("write a non-UTF-8 file");
    let errors = match load_dir(dir.path()) {
        Ok(_) => panic!("a non-UTF-8 file loaded"),
        Err(errors) => errors,
    };
    assert_error(&errors, "environment.json", None, "cannot read the file");
    assert!(read_dir(dir.path()).is_err());
}

#[test]
fn reload_applies_valid_edits_and_keeps_the_old_config_on_errors() {
    let dir = config_dir();
    let handle = handle_for(dir.path());
    let status = handle.status();
    assert_eq!(status.version, 1);
    assert_eq!(status.workflows, 1);
    assert_eq!(status.last_error, None);
    let before = handle.current();

    write(dir.path(), "workflows.toml", WORKFLOWS_TWO);
    let status = handle.reload().expect("a valid reload");
    assert_eq!(status.version, 2);
    assert_eq!(status.workflows, 2);
    assert_eq!(handle.current().workflows.len(), 2);
    assert_eq!(before.workflows.len(), 1, "old snapshots are unchanged");

    write(dir.path(), "environment.json", "{ nope");
    write(dir.path(), "prefsd.toml", "bogus = 1\n");
    let errors = handle.reload().expect_err("an invalid reload");
    assert_eq!(errors.len(), 2);
    let status = handle.status();
    assert_eq!(status.version, 2);
    assert_eq!(handle.current().workflows.len(), 2);
    let last = status.last_error.expect("last_error is set");
    assert!(
        ["environment.json", "prefsd.toml"].contains(&last.file.as_str()),
        "{last:?}"
    );
    assert!(last.message.contains("line 1"), "{last:?}");
    assert!(last.message.contains("(and 1 more error)"), "{last:?}");

    write(dir.path(), "environment.json", "{}");
    write(dir.path(), "prefsd.toml", "socket = \"a.sock\"\n");
    let status = handle.reload().expect("a valid reload");
    assert_eq!(status.version, 3);
    assert_eq!(status.last_error, None);
}

#[test]
fn read_cache_mb_is_a_size_in_mib_and_zero_turns_the_cache_off() {
    assert_eq!(parse_ok(&[]).settings.limits.read_cache_mb, 8);
    for n in [0, 64] {
        let config = parse_ok(&[("prefsd.toml", &format!("[limits]\nread_cache_mb = {n}\n"))]);
        assert_eq!(config.settings.limits.read_cache_mb, n);
    }
    let errors = parse_err(&[("prefsd.toml", "[limits]\nread_cache_mb = -1\n")]);
    assert_error(
        &errors,
        "prefsd.toml",
        Some(2),
        "`limits.read_cache_mb` must be an integer from 0",
    );
}

#[test]
fn max_database_mb_is_an_optional_size_in_mib() {
    assert_eq!(parse_ok(&[]).settings.limits.max_database_mb, None);
    let config = parse_ok(&[("prefsd.toml", "[limits]\nmax_database_mb = 64\n")]);
    assert_eq!(config.settings.limits.max_database_mb, Some(64));
    for (text, needle) in [
        (
            "0",
            "`limits.max_database_mb` must be an integer from 1 to 4294967295, got 0",
        ),
        ("-5", "`limits.max_database_mb` must be an integer from 1"),
        (
            "\"1GB\"",
            "`limits.max_database_mb` must be an integer, got string",
        ),
    ] {
        let errors = parse_err(&[(
            "prefsd.toml",
            &format!("[limits]\nmax_database_mb = {text}\n"),
        )]);
        assert_error(&errors, "prefsd.toml", Some(2), needle);
    }
}

#[test]
fn restart_only_settings_keep_their_running_values() {
    let dir = config_dir();
    let handle = handle_for(dir.path());
    write(
        dir.path(),
        "prefsd.toml",
        "socket = \"b.sock\"\nsocket_mode = \"0660\"\nstrict_workflows = true\n",
    );
    let status = handle.reload().expect("a valid reload");
    assert_eq!(status.version, 2);
    let last = status.last_error.expect("last_error names the setting");
    assert_eq!(last.file, "prefsd.toml");
    assert!(last.message.contains("socket, socket_mode"), "{last:?}");
    assert!(last.message.contains("restart"), "{last:?}");
    let current = handle.current();
    assert_eq!(current.settings.socket, dir.path().join("a.sock"));
    assert_eq!(current.settings.socket_mode, 0o600);
    assert_eq!(
        current.settings.strict_workflows,
        Some(true),
        "the rest is applied"
    );

    // Putting the file back clears the note.
    write(dir.path(), "prefsd.toml", "socket = \"a.sock\"\n");
    let status = handle.reload().expect("a valid reload");
    assert_eq!(status.last_error, None);
}

#[test]
fn an_overridden_setting_changed_in_the_file_is_not_a_restart_note() {
    let dir = config_dir();
    let overrides = Overrides {
        socket: Some("/run/flag.sock".into()),
        database: Some("/var/env.db".into()),
        ..Default::default()
    };
    let handle = match ConfigHandle::load(dir.path().to_path_buf(), overrides, None) {
        Ok(handle) => handle,
        Err(errors) => panic!("{errors:#?}"),
    };
    write(
        dir.path(),
        "prefsd.toml",
        "socket = \"other.sock\"\ndatabase = \"other.db\"\n",
    );
    let status = handle.reload().expect("a valid reload");
    assert_eq!(status.last_error, None);
    assert_eq!(
        handle.current().settings.socket,
        PathBuf::from("/run/flag.sock")
    );
    assert_eq!(
        handle.current().settings.database,
        PathBuf::from("/var/env.db")
    );
}

#[test]
fn concurrent_reloads_are_serialised() {
    let dir = config_dir();
    let handle = handle_for(dir.path());
    let threads: Vec<_> = (0..4)
        .map(|_| {
            let handle = handle.clone();
            std::thread::spawn(move || handle.reload().expect("a valid reload").version)
        })
        .collect();
    let mut versions: Vec<u64> = threads
        .into_iter()
        .map(|t| t.join().expect("the reload thread"))
        .collect();
    versions.sort_unstable();
    assert_eq!(versions, [2, 3, 4, 5]);
    assert_eq!(handle.version(), 5);
}

#[test]
fn status_has_the_rpc_shape() {
    let dir = config_dir();
    write(dir.path(), "tenants/acme.json", "{}");
    let handle = handle_for(dir.path());
    let value = serde_json::to_value(handle.status()).expect("serialise the status");
    let keys: Vec<&String> = value.as_object().expect("an object").keys().collect();
    assert_eq!(
        keys,
        [
            "files",
            "last_error",
            "loaded_at",
            "tenant_templates",
            "version",
            "workflows"
        ]
    );
    assert_eq!(value["version"], 1);
    assert_eq!(value["workflows"], 1);
    assert_eq!(value["tenant_templates"], 1);
    assert_eq!(value["last_error"], serde_json::Value::Null);
    assert_eq!(
        value["files"],
        json!([
            "environment.json",
            "prefsd.toml",
            "tenants/acme.json",
            "workflows.toml"
        ])
    );
    let loaded_at = value["loaded_at"].as_str().expect("a string");
    assert!(loaded_at.parse::<jiff::Timestamp>().is_ok(), "{loaded_at}");

    write(dir.path(), "workflows.toml", "[[workflow]]\n");
    let _ = handle.reload();
    let value = serde_json::to_value(handle.status()).expect("serialise the status");
    let last = &value["last_error"];
    assert_eq!(last["file"], "workflows.toml");
    assert_eq!(last["message"], "line 1: a [[workflow]] needs a `key`");
    let at = last["at"].as_str().expect("a string");
    assert!(at.parse::<jiff::Timestamp>().is_ok(), "{at}");
    assert_eq!(last.as_object().map(|o| o.len()), Some(3));
}

// ---------------------------------------------------------------------------------------
// The watcher

const WAIT: Duration = Duration::from_secs(20);

async fn wait_status(
    rx: &mut tokio::sync::watch::Receiver<ConfigStatus>,
    what: &str,
    until: impl FnMut(&ConfigStatus) -> bool,
) -> ConfigStatus {
    let result = tokio::time::timeout(WAIT, rx.wait_for(until))
        .await
        .map(|waited| waited.map(|status| status.clone()));
    match result {
        Ok(Ok(status)) => status,
        Ok(Err(e)) => panic!("the status channel closed while waiting for {what}: {e}"),
        Err(_) => panic!(
            "timed out waiting for {what}; status is {:#?}",
            *rx.borrow()
        ),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watcher_reloads_on_changes() {
    let dir = config_dir();
    let handle = handle_for(dir.path());
    let mut configs = handle.subscribe();
    let mut statuses = handle.subscribe_status();
    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = ConfigWatcher::start(handle.clone()).expect("start the watcher");
    let task = tokio::spawn(watcher.run(cancel.clone()));

    // An editor-style save (temporary file, rename over) is seen.
    write_atomic(dir.path(), "workflows.toml", WORKFLOWS_TWO);
    let config = tokio::time::timeout(WAIT, configs.wait_for(|c| c.workflows.len() == 2))
        .await
        .expect("timed out waiting for the new catalog")
        .expect("the config channel")
        .clone();
    assert!(config.workflows.contains_key("digest"));
    // The status is published right after the config.
    let version = wait_status(&mut statuses, "version 2", |s| s.version >= 2)
        .await
        .version;
    assert_eq!(handle.status().last_error, None);

    // An invalid edit keeps the old config and sets last_error.
    write_atomic(dir.path(), "environment.json", "{ this is not json");
    let status = wait_status(&mut statuses, "last_error", |s| s.last_error.is_some()).await;
    let last = status.last_error.expect("last_error");
    assert_eq!(last.file, "environment.json");
    assert_eq!(status.version, version);
    assert_eq!(handle.current().workflows.len(), 2);

    // A fix applies and clears it.
    write_atomic(
        dir.path(),
        "environment.json",
        r#"{"channel_types": {"sms": false}}"#,
    );
    let status = wait_status(&mut statuses, "the fix", |s| {
        s.last_error.is_none() && s.version > version
    })
    .await;
    assert_eq!(
        handle.current().environment.to_value(),
        json!({"channel_types": {"sms": false}})
    );

    // A new tenants/ directory and template are picked up (the watch is recursive).
    write_atomic(
        dir.path(),
        "tenants/x.json",
        r#"{"commercial_subscribed": false}"#,
    );
    let status = wait_status(&mut statuses, "the tenant template", |s| {
        s.tenant_templates == 1 && s.version > status.version
    })
    .await;
    assert!(status.files.contains(&"tenants/x.json".to_string()));
    assert!(handle.current().tenant_templates.contains_key("x"));

    // And removing it too.
    std::fs::remove_file(dir.path().join("tenants/x.json")).expect("remove the template");
    wait_status(&mut statuses, "the removal", |s| s.tenant_templates == 0).await;

    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the watcher stops when cancelled")
        .expect("the watcher task")
        .expect("the watcher ends cleanly");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn editor_temporaries_do_not_trigger_reloads() {
    let dir = config_dir();
    let handle = handle_for(dir.path());
    let mut statuses = handle.subscribe_status();
    let cancel = tokio_util::sync::CancellationToken::new();
    let watcher = ConfigWatcher::start(handle.clone()).expect("start the watcher");
    let task = tokio::spawn(watcher.run(cancel.clone()));

    // Temporaries only: no reload. Then a real edit: exactly one.
    write(dir.path(), ".workflows.toml.swp", "x");
    write(dir.path(), "workflows.toml~", "x");
    write(dir.path(), "notes.tmp", "x");
    write_atomic(dir.path(), "workflows.toml", WORKFLOWS_TWO);
    let status = wait_status(&mut statuses, "the reload", |s| s.workflows == 2).await;
    assert_eq!(status.version, 2);

    cancel.cancel();
    tokio::time::timeout(WAIT, task)
        .await
        .expect("the watcher stops when cancelled")
        .expect("the watcher task")
        .expect("the watcher ends cleanly");
}

#[tokio::test]
async fn watching_a_missing_directory_fails() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let handle = ConfigHandle::new(
        Config::default(),
        dir.path().join("nope"),
        Overrides::default(),
        None,
    )
    .expect("no check to fail");
    let result = watch(handle, tokio_util::sync::CancellationToken::new()).await;
    assert!(result.is_err());
}

#[test]
fn the_second_look_applies_only_differences() {
    let dir = config_dir();
    let handle = handle_for(dir.path());
    let (status, changed) = handle
        .reload_inner(live::Mode::IfChanged)
        .expect("a valid reload");
    assert!(!changed);
    assert_eq!(status.version, 1);

    write(dir.path(), "tenants/y.json", "{}");
    let (status, changed) = handle
        .reload_inner(live::Mode::IfChanged)
        .expect("a valid reload");
    assert!(changed);
    assert_eq!(status.version, 2);
    assert_eq!(status.tenant_templates, 1);

    // A repeated error is neither logged nor re-stamped.
    write(dir.path(), "tenants/y.json", "[");
    handle.reload().expect_err("an invalid reload");
    let first = handle.status().last_error.expect("last_error");
    handle
        .reload_inner(live::Mode::IfChanged)
        .expect_err("still invalid");
    assert_eq!(handle.status().last_error, Some(first));
}

#[test]
fn default_sets_obey_the_size_limit() {
    let big = r#"{"channel_types": {"email": true, "sms": false}}"#;
    let errors = parse_err(&[
        ("prefsd.toml", "[limits]\nmax_preference_set_bytes = 20\n"),
        ("environment.json", big),
        ("tenants/acme.json", big),
        ("tenants/small.json", "{}"),
    ]);
    assert_eq!(errors.len(), 2, "{errors:#?}");
    assert_error(
        &errors,
        "environment.json",
        None,
        "max_preference_set_bytes (20)",
    );
    assert_error(
        &errors,
        "tenants/acme.json",
        None,
        "max_preference_set_bytes (20)",
    );
    parse_ok(&[
        ("prefsd.toml", "[limits]\nmax_preference_set_bytes = 200\n"),
        ("environment.json", big),
    ]);
}

/// A catalog of `n` workflows with categories and channels, and a duplicate of the first
/// key after them.
fn catalog(n: usize) -> String {
    let mut toml = String::new();
    for i in 0..n {
        toml.push_str(&format!(
            "[[workflow]]\nkey = \"workflow-{i:06}\"\ncategories = [\"marketing\"]\nchannels = [{{ type = \"email\" }}]\n\n"
        ));
    }
    toml
}

/// Issue 22.4: naming each workflow's line counted newlines from the start of the file,
/// so 20 000 workflows took 8.7 s. At the limit it is linear: well under 2 s even in a
/// debug build, and the lines named are still right.
#[test]
fn a_catalog_at_the_workflow_limit_parses_in_linear_time() {
    let mut toml = catalog(MAX_WORKFLOWS - 1);
    toml.push_str("[[workflow]]\nkey = \"workflow-000000\"\n");
    let started = std::time::Instant::now();
    let errors = parse_err(&[("workflows.toml", &toml)]);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    let last = 5 * (MAX_WORKFLOWS - 1) + 1;
    assert_error(
        &errors,
        "workflows.toml",
        Some(last),
        "duplicate workflow key `workflow-000000` (first defined on line 1)",
    );
    let started = std::time::Instant::now();
    let config = parse_ok(&[("workflows.toml", &catalog(MAX_WORKFLOWS))]);
    assert_eq!(config.workflows.len(), MAX_WORKFLOWS);
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
}

/// Issue 22.4: 100 000 workflows kept a reload busy for minutes; now they are refused with
/// a message, at once: past the file size limit without being parsed, and past the
/// workflow limit when they fit in it.
#[test]
fn a_100_000_workflow_catalog_is_refused_with_a_message_at_once() {
    let toml = catalog(100_000);
    assert!(toml.len() > MAX_FILE_BYTES);
    let started = std::time::Instant::now();
    let errors = parse_err(&[("workflows.toml", &toml)]);
    assert_error(
        &errors,
        "workflows.toml",
        None,
        "config files may be at most",
    );
    // Read from a directory, the file is refused before it is read whole.
    let dir = tempfile::tempdir().expect("a temp dir");
    std::fs::write(dir.path().join("workflows.toml"), &toml).expect("writing the catalog");
    let errors = super::load_dir(dir.path()).expect_err("refused");
    assert_error(
        &errors,
        "workflows.toml",
        None,
        "config files may be at most 2 MiB",
    );
    assert!(started.elapsed() < Duration::from_secs(2));
    // Short lines: 10 001 workflows fit in the size limit and are refused by count.
    let mut short = String::new();
    for i in 0..=MAX_WORKFLOWS {
        short.push_str(&format!("[[workflow]]\nkey = \"w{i}\"\n"));
    }
    let errors = parse_err(&[("workflows.toml", &short)]);
    assert_error(
        &errors,
        "workflows.toml",
        Some(1),
        "the catalog holds 10001 workflows; at most 10000 are allowed",
    );
}

/// Relative paths in prefsd.toml are relative to the config directory (ops.md §4), not to
/// the working directory; absolute ones stay as written; flags and the environment
/// (overrides) are applied as given.
#[test]
fn relative_paths_in_the_file_are_relative_to_the_config_directory() {
    let toml = "socket = \"../run/prefsd.sock\"\ndatabase = \"/var/lib/prefsd/prefsd.db\"\n\n[access.user_token]\npublic_key_file = \"keys/user.pem\"\n";
    let config = Config::parse_in(
        Path::new("/etc/prefsd"),
        vec![(PathBuf::from("prefsd.toml"), toml.to_string())],
    )
    .expect("valid");
    let s = &config.settings;
    assert_eq!(s.socket, Path::new("/etc/prefsd/../run/prefsd.sock"));
    assert_eq!(s.database, Path::new("/var/lib/prefsd/prefsd.db"));
    assert_eq!(
        s.access.user_token_public_key_file.as_deref(),
        Some(Path::new("/etc/prefsd/keys/user.pem"))
    );
    let mut overridden = s.clone();
    overridden.apply_overrides(Some(PathBuf::from("here.sock")), None);
    assert_eq!(overridden.socket, Path::new("here.sock"));
}

#[test]
fn the_log_table_is_read_and_checked() {
    let ok = parse_ok(&[(
        "prefsd.toml",
        "[log]\nformat = \"json\"\nlevel = \"prefsd=debug,warn\"\n",
    )]);
    assert_eq!(ok.settings.log.format, Some(LogFormat::Json));
    assert_eq!(ok.settings.log.level.as_deref(), Some("prefsd=debug,warn"));
    let errors = parse(&[(
        "prefsd.toml",
        "[log]\nformat = \"xml\"\nlevel = \"[[\"\ncolour = true\n",
    )])
    .expect_err("invalid");
    let messages: Vec<String> = errors.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), 3, "{messages:#?}");
    for expected in [
        "prefsd.toml:2: `log.format`",
        "prefsd.toml:3: `log.level`",
        "prefsd.toml:4: unknown key `colour` in [log]",
    ] {
        assert!(
            messages.iter().any(|m| m.starts_with(expected)),
            "{expected}: {messages:#?}"
        );
    }
}
