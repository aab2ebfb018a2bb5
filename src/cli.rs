//! The command line: `prefsd serve` runs the daemon; every other subcommand is a client of
//! a running daemon over its socket (JSON-RPC over a WebSocket on the Unix socket, so the
//! same client can follow subscriptions). No business logic and no SQLite here.
//!
//! Exit codes (ripgrep's convention): 0 success, 1 the daemon answered with an error,
//! 2 usage, connection or internal errors.

use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use jsonrpsee::core::client::Error as ClientError;
use serde_json::{Value, json};

use crate::client::{Client, Refused, socket_path};

#[derive(Debug, Parser)]
#[command(
    name = "prefsd",
    version,
    about = "Stores and evaluates notification preferences (Knock's model) over JSON-RPC on a Unix socket"
)]
pub struct Cli {
    /// The daemon's socket. Default: the `socket` of the config directory's prefsd.toml.
    #[arg(long, global = true, env = "PREFSD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The config directory.
    #[arg(long, global = true, env = "PREFSD_CONFIG", default_value = "config")]
    pub config: PathBuf,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon on the config directory.
    Serve {
        /// The SQLite database. Default: the `database` of prefsd.toml.
        #[arg(long, env = "PREFSD_DATABASE")]
        database: Option<PathBuf>,
    },
    /// Mint a user token (like Knock's signUserToken) for development and tests; print it.
    Token(crate::auth::mint::TokenArgs),
    /// Validate a config directory offline; print every error with file and line.
    CheckConfig {
        /// The directory (default: --config).
        dir: Option<PathBuf>,
    },
    /// The commands that talk to a running daemon.
    #[command(flatten)]
    Client(ClientCommand),
    /// Load-test a running daemon (calls/s, latency, daemon CPU and RSS), or `bench seed` a
    /// database with deterministic data.
    Bench(crate::bench::BenchArgs),
}

/// The subcommands that are clients of a running daemon, over its socket.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Show the daemon's status.
    Status,
    /// Call any method; PARAMS is a JSON object (or @FILE, or - for standard input).
    Call {
        method: String,
        params: Option<String>,
    },
    /// Show a recipient's preferences (effective unless --raw).
    Get {
        /// A user id, or an object id with --object.
        recipient: String,
        #[command(flatten)]
        target: Target,
        /// Show only what is stored.
        #[arg(long)]
        raw: bool,
    },
    /// Set a recipient's preference set (replaces it unless --merge).
    Set {
        recipient: String,
        /// The PreferenceSet as JSON, @FILE, or - for standard input.
        preferences: String,
        #[command(flatten)]
        target: Target,
        /// Deep-merge into the stored set instead of replacing it.
        #[arg(long)]
        merge: bool,
    },
    /// Delete a recipient's stored preference set.
    Unset {
        recipient: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a recipient's stored preference sets.
    List {
        recipient: String,
        /// The recipient is an object in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
    },
    /// Create or update a user (properties merged shallowly).
    Identify {
        user: String,
        /// Properties as a JSON object.
        #[arg(long)]
        properties: Option<String>,
    },
    /// Bulk preference sets: submit a job, follow its progress.
    #[command(subcommand)]
    Bulk(BulkCommand),
    /// Decide a workflow for recipients and channels, with the reasons.
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Replace a preference set for up to 1000 users, as a background job.
    Set {
        /// User ids, one per line or as a JSON array, from FILE or - for standard input.
        #[arg(long, value_name = "FILE|-")]
        users: String,
        /// The PreferenceSet as JSON, @FILE, or - for standard input.
        #[arg(long)]
        preferences: String,
        /// The preference set id ("default" or a tenant id).
        #[arg(long = "set", value_name = "SET_ID")]
        set: Option<String>,
        /// Makes a retried submit return the same job instead of a second one.
        #[arg(long)]
        idempotency_key: Option<String>,
        /// Show a live progress bar until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// Show a bulk operation; with --follow, until it ends.
    Status {
        id: String,
        #[arg(long)]
        follow: bool,
    },
}

/// `prefsd evaluate`: the params of one `preferences.evaluate` call.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// A workflow key of the catalog.
    pub workflow: String,
    /// User ids, or COLLECTION/ID for objects.
    #[arg(required = true)]
    pub recipients: Vec<String>,
    /// A channel as TYPE or TYPE:ID (repeatable). Default: the workflow's channels.
    #[arg(long = "channel", value_name = "TYPE[:ID]")]
    pub channels: Vec<String>,
    #[arg(long)]
    pub tenant: Option<String>,
    /// Trigger data as a JSON object.
    #[arg(long)]
    pub data: Option<String>,
    /// The actor's user id.
    #[arg(long)]
    pub actor: Option<String>,
    /// The evaluation time (RFC 3339). Default: the daemon's clock.
    #[arg(long)]
    pub now: Option<String>,
    /// Print the raw JSON result instead of a table.
    #[arg(long)]
    pub json: bool,
}

/// Which set of which recipient.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// The recipient is an object in this collection.
    #[arg(long, value_name = "COLLECTION")]
    pub object: Option<String>,
    /// The preference set id ("default" or a tenant id).
    #[arg(long = "set", value_name = "SET_ID")]
    pub set: Option<String>,
}

/// Maps a subcommand's outcome to the process's exit code, printing the error: the one
/// place exit codes are chosen (ripgrep's convention). 1: the daemon answered with an
/// error (its message, then one line per invalid field) or the command's answer was
/// [`Refused`]; 2: usage, connection or internal errors.
pub fn exit_code(result: anyhow::Result<ExitCode>) -> ExitCode {
    let e = match result {
        Ok(code) => return code,
        Err(e) => e,
    };
    if let Some(ClientError::Call(err)) = e.downcast_ref::<ClientError>() {
        eprintln!("error: {}", err.message());
        let data = err
            .data()
            .and_then(|d| serde_json::from_str::<Value>(d.get()).ok());
        let items = data.as_ref().and_then(|d| d.get("errors")?.as_array());
        for item in items.into_iter().flatten() {
            eprintln!(
                "  {}: {}",
                item["field"].as_str().unwrap_or(""),
                item["message"].as_str().unwrap_or("")
            );
        }
        return ExitCode::from(1);
    }
    eprintln!("error: {e:#}");
    if e.is::<Refused>() {
        ExitCode::from(1)
    } else {
        ExitCode::from(2)
    }
}

/// `prefsd check-config [DIR]`: 0 when valid, 2 with every error printed otherwise.
pub fn check_config(dir: &Path) -> anyhow::Result<ExitCode> {
    match crate::config::load_dir(dir) {
        Ok(config) => {
            println!(
                "{}: ok ({} files, {} workflows, {} tenant templates)",
                dir.display(),
                config.files.len(),
                config.workflows.len(),
                config.tenant_templates.len()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", dir.display(), errors.len());
            Ok(ExitCode::from(2))
        }
    }
}

/// Runs a client subcommand against the daemon at `socket` (or the config's).
pub fn run(
    socket: Option<&Path>,
    config_dir: &Path,
    command: ClientCommand,
) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let socket = socket_path(socket, config_dir);
    runtime.block_on(async {
        let client = Client::connect(&socket).await?;
        match command {
            ClientCommand::Status => status(&client).await,
            ClientCommand::Call { method, params } => {
                call(&client, &method, params.as_deref()).await
            }
            ClientCommand::Get {
                recipient,
                target,
                raw,
            } => get(&client, &recipient, target, raw).await,
            ClientCommand::Set {
                recipient,
                preferences,
                target,
                merge,
            } => set(&client, &recipient, &preferences, target, merge).await,
            ClientCommand::Unset { recipient, target } => unset(&client, &recipient, target).await,
            ClientCommand::List { recipient, object } => {
                list(&client, &recipient, object.as_deref()).await
            }
            ClientCommand::Identify { user, properties } => {
                identify(&client, &user, properties.as_deref()).await
            }
            ClientCommand::Bulk(BulkCommand::Set {
                users,
                preferences,
                set,
                idempotency_key,
                follow,
            }) => bulk_set(&client, &users, &preferences, set, idempotency_key, follow).await,
            ClientCommand::Bulk(BulkCommand::Status { id, follow }) => {
                bulk_status(&client, &id, follow).await
            }
            ClientCommand::Evaluate(args) => evaluate(&client, args).await,
        }?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Reads a JSON argument: inline text, @FILE, or - for standard input.
fn json_arg(arg: &str) -> anyhow::Result<Value> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else if let Some(path) = arg.strip_prefix('@') {
        std::fs::read_to_string(path).with_context(|| format!("reading {path}"))?
    } else {
        arg.to_string()
    };
    serde_json::from_str(&text).with_context(|| {
        format!(
            "not valid JSON: {}",
            text.chars().take(80).collect::<String>()
        )
    })
}

/// The params that name a recipient.
fn who(recipient: &str, object: Option<&str>) -> serde_json::Map<String, Value> {
    let mut map = serde_json::Map::new();
    match object {
        Some(collection) => {
            map.insert("collection".into(), json!(collection));
            map.insert("object_id".into(), json!(recipient));
        }
        None => {
            map.insert("user_id".into(), json!(recipient));
        }
    }
    map
}

fn namespace(object: Option<&str>) -> &'static str {
    if object.is_some() { "objects" } else { "users" }
}

fn print_json(value: &Value) {
    println!(
        "{}",
        serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
    );
}

/// `prefsd status`: the daemon's status, after checking it speaks this client's protocol.
async fn status(client: &Client) -> anyhow::Result<()> {
    let status = client.call("daemon.status", Value::Null).await?;
    if status["protocol"] != json!(crate::rpc::PROTOCOL) {
        anyhow::bail!(
            "the daemon speaks protocol {}; this prefsd speaks {}",
            status["protocol"],
            crate::rpc::PROTOCOL
        );
    }
    print_json(&status);
    Ok(())
}

/// `prefsd call METHOD [PARAMS]`.
async fn call(client: &Client, method: &str, params: Option<&str>) -> anyhow::Result<()> {
    let params = params.map(json_arg).transpose()?.unwrap_or(Value::Null);
    print_json(&client.call(method, params).await?);
    Ok(())
}

/// `prefsd get`: a recipient's preferences, effective unless raw.
async fn get(client: &Client, recipient: &str, target: Target, raw: bool) -> anyhow::Result<()> {
    let mut params = who(recipient, target.object.as_deref());
    if let Some(set) = target.set {
        params.insert("preference_set".into(), json!(set));
    }
    params.insert("raw".into(), json!(raw));
    let method = format!("{}.getPreferences", namespace(target.object.as_deref()));
    print_json(&client.call(&method, Value::Object(params)).await?);
    Ok(())
}

/// `prefsd set`: replaces (or with `merge`, merges into) a recipient's preference set.
async fn set(
    client: &Client,
    recipient: &str,
    preferences: &str,
    target: Target,
    merge: bool,
) -> anyhow::Result<()> {
    let mut body = json_arg(preferences)?;
    if merge && let Value::Object(map) = &mut body {
        map.insert("__persistence_strategy__".into(), json!("merge"));
    }
    let mut params = who(recipient, target.object.as_deref());
    if let Some(set) = target.set {
        params.insert("preference_set".into(), json!(set));
    }
    params.insert("preferences".into(), body);
    let method = format!("{}.setPreferences", namespace(target.object.as_deref()));
    print_json(&client.call(&method, Value::Object(params)).await?);
    Ok(())
}

/// `prefsd unset`: deletes a recipient's stored preference set.
async fn unset(client: &Client, recipient: &str, target: Target) -> anyhow::Result<()> {
    let mut params = who(recipient, target.object.as_deref());
    params.insert(
        "preference_set".into(),
        json!(target.set.unwrap_or_else(|| "default".into())),
    );
    let method = format!("{}.unsetPreferences", namespace(target.object.as_deref()));
    print_json(&client.call(&method, Value::Object(params)).await?);
    Ok(())
}

/// `prefsd list`: a recipient's stored preference sets.
async fn list(client: &Client, recipient: &str, object: Option<&str>) -> anyhow::Result<()> {
    let method = format!("{}.listPreferences", namespace(object));
    print_json(
        &client
            .call(&method, Value::Object(who(recipient, object)))
            .await?,
    );
    Ok(())
}

/// `prefsd identify`: creates or updates a user.
async fn identify(client: &Client, user: &str, properties: Option<&str>) -> anyhow::Result<()> {
    let mut params = who(user, None);
    if let Some(p) = properties {
        params.insert("properties".into(), json_arg(p)?);
    }
    print_json(&client.call("users.identify", Value::Object(params)).await?);
    Ok(())
}

/// `prefsd bulk set`: submits a bulk job, and follows it when asked.
async fn bulk_set(
    client: &Client,
    users: &str,
    preferences: &str,
    set: Option<String>,
    idempotency_key: Option<String>,
    follow: bool,
) -> anyhow::Result<()> {
    let mut params = serde_json::Map::new();
    params.insert("user_ids".into(), json!(read_user_ids(users)?));
    params.insert("preferences".into(), json_arg(preferences)?);
    if let Some(set) = set {
        params.insert("preference_set".into(), json!(set));
    }
    if let Some(key) = idempotency_key {
        params.insert("idempotency_key".into(), json!(key));
    }
    let op = client
        .call("users.bulkSetPreferences", Value::Object(params))
        .await?;
    show_operation(client, op, follow).await
}

/// `prefsd bulk status`: a bulk operation, followed when asked.
async fn bulk_status(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    let op = client
        .call("bulkOperations.get", json!({ "id": id }))
        .await?;
    show_operation(client, op, follow).await
}

/// Prints a bulk operation, or follows it to its end.
async fn show_operation(client: &Client, op: Value, follow: bool) -> anyhow::Result<()> {
    if follow {
        follow_operation(client, op).await
    } else {
        print_json(&op);
        Ok(())
    }
}

/// `prefsd evaluate`: decisions as a table, or the raw result.
async fn evaluate(client: &Client, args: EvaluateArgs) -> anyhow::Result<()> {
    let mut params = serde_json::Map::new();
    params.insert("workflow".into(), json!(args.workflow));
    let recipients: Vec<Value> = args
        .recipients
        .iter()
        .map(|r| match r.split_once('/') {
            Some((collection, id)) => json!({ "collection": collection, "id": id }),
            None => json!(r),
        })
        .collect();
    params.insert("recipients".into(), Value::Array(recipients));
    if !args.channels.is_empty() {
        let channels: Vec<Value> = args
            .channels
            .iter()
            .map(|c| match c.split_once(':') {
                Some((t, id)) => json!({ "type": t, "id": id }),
                None => json!({ "type": c }),
            })
            .collect();
        params.insert("channels".into(), Value::Array(channels));
    }
    if let Some(t) = args.tenant {
        params.insert("tenant".into(), json!(t));
    }
    if let Some(d) = args.data {
        params.insert("data".into(), json_arg(&d)?);
    }
    if let Some(a) = args.actor {
        params.insert("actor".into(), json!(a));
    }
    if let Some(n) = args.now {
        params.insert("now".into(), json!(n));
    }
    let result = client
        .call("preferences.evaluate", Value::Object(params))
        .await?;
    if args.json {
        print_json(&result);
    } else {
        print!("{}", decisions_table(&result));
    }
    Ok(())
}

/// User ids from a file or standard input: a JSON array, or one id per line.
fn read_user_ids(arg: &str) -> anyhow::Result<Vec<String>> {
    let text = if arg == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("reading standard input")?;
        s
    } else {
        std::fs::read_to_string(arg).with_context(|| format!("reading {arg}"))?
    };
    if text.trim_start().starts_with('[') {
        return serde_json::from_str(&text).context("the user ids are not a JSON array of strings");
    }
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect())
}

/// Follows a bulk operation over the subscription with a progress bar, then prints a
/// summary. A failed job or one with errors is an error (exit 1).
async fn follow_operation(client: &Client, op: Value) -> anyhow::Result<()> {
    let id = op["id"].as_str().unwrap_or_default().to_string();
    let total = op["estimated_total_rows"].as_u64().unwrap_or(0);
    let bar = indicatif::ProgressBar::new(total);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{spinner} {msg:10} [{bar:40}] {pos}/{len} users ({elapsed})",
        )
        .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
        .progress_chars("=> "),
    );
    let mut last = op;
    if !is_terminal(&last) {
        let mut sub = client.follow_bulk(&id).await?;
        while let Some(update) = sub.next().await {
            last = update?;
            bar.set_position(last["processed_rows"].as_u64().unwrap_or(0));
            bar.set_message(last["status"].as_str().unwrap_or("").to_string());
            if is_terminal(&last) {
                break;
            }
        }
    }
    bar.set_position(last["processed_rows"].as_u64().unwrap_or(0));
    bar.finish_and_clear();
    println!(
        "bulk operation {id}: {} — {} processed, {} succeeded, {} errors",
        last["status"].as_str().unwrap_or("?"),
        last["processed_rows"],
        last["success_count"],
        last["error_count"]
    );
    for item in last["error_items"].as_array().into_iter().flatten() {
        println!(
            "  {}: {}",
            item["id"].as_str().unwrap_or(""),
            item["message"].as_str().unwrap_or("")
        );
    }
    let errors = last["error_count"].as_u64().unwrap_or(0);
    match last["status"].as_str() {
        Some("completed") if errors == 0 => Ok(()),
        Some("completed") => Err(Refused(format!(
            "bulk operation {id} completed with {errors} errors"
        ))
        .into()),
        Some(status) => Err(Refused(format!("bulk operation {id} {status}")).into()),
        None => Err(Refused(format!("bulk operation {id} has no status")).into()),
    }
}

fn is_terminal(op: &Value) -> bool {
    matches!(op["status"].as_str(), Some("completed" | "failed"))
}

/// A readable table of `preferences.evaluate` results: one row per (recipient, channel).
pub fn decisions_table(result: &Value) -> String {
    let mut rows = vec![[
        "RECIPIENT".to_string(),
        "CHANNEL".into(),
        "SEND".into(),
        "REASON".into(),
    ]];
    for r in result["results"].as_array().into_iter().flatten() {
        let recipient = match r["recipient"]["collection"].as_str() {
            Some(c) => format!("{c}/{}", r["recipient"]["id"].as_str().unwrap_or("")),
            None => r["recipient"]["id"].as_str().unwrap_or("").to_string(),
        };
        for c in r["channels"].as_array().into_iter().flatten() {
            let channel = match c["id"].as_str() {
                Some(id) => format!("{}:{id}", c["type"].as_str().unwrap_or("")),
                None => c["type"].as_str().unwrap_or("").to_string(),
            };
            let send = if c["send"] == json!(true) {
                "yes"
            } else {
                "no"
            };
            let reason = &c["reason"];
            let mut why = reason["code"].as_str().unwrap_or("").to_string();
            if let Some(path) = reason["path"].as_str() {
                why.push(' ');
                why.push_str(path);
            }
            if let Some(layer) = reason["layer"].as_str() {
                why.push_str(&format!(" ({layer})"));
            }
            if let Some(error) = reason["condition"]["error"].as_str() {
                why.push_str(&format!(": {error}"));
            }
            rows.push([recipient.clone(), channel, send.into(), why]);
        }
    }
    let widths: Vec<usize> = (0..3)
        .map(|i| rows.iter().map(|r| r[i].len()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        out.push_str(&format!(
            "{:w0$}  {:w1$}  {:w2$}  {}\n",
            row[0],
            row[1],
            row[2],
            row[3],
            w0 = widths[0],
            w1 = widths[1],
            w2 = widths[2]
        ));
    }
    out
}
