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
use jsonrpsee::core::client::{ClientT, Error as ClientError};
use jsonrpsee::core::traits::ToRpcParams;
use serde_json::value::RawValue;
use serde_json::{Value, json};

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
    Evaluate {
        /// A workflow key of the catalog.
        workflow: String,
        /// User ids, or COLLECTION/ID for objects.
        #[arg(required = true)]
        recipients: Vec<String>,
        /// A channel as TYPE or TYPE:ID (repeatable). Default: the workflow's channels.
        #[arg(long = "channel", value_name = "TYPE[:ID]")]
        channels: Vec<String>,
        #[arg(long)]
        tenant: Option<String>,
        /// Trigger data as a JSON object.
        #[arg(long)]
        data: Option<String>,
        /// The actor's user id.
        #[arg(long)]
        actor: Option<String>,
        /// The evaluation time (RFC 3339). Default: the daemon's clock.
        #[arg(long)]
        now: Option<String>,
        /// Print the raw JSON result instead of a table.
        #[arg(long)]
        json: bool,
    },
    /// Load-test a running daemon (calls/s, latency, daemon CPU and RSS), or `bench seed` a
    /// database with deterministic data.
    Bench(crate::bench::BenchArgs),
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

/// Runs a client subcommand and maps its outcome to an exit code.
pub fn run(cli: Cli) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(2);
        }
    };
    match runtime.block_on(client_command(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is::<JobNotClean>() => {
            eprintln!("error: {e}");
            ExitCode::from(1)
        }
        Err(e) => match e.downcast_ref::<ClientError>() {
            Some(ClientError::Call(err)) => {
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
                ExitCode::from(1)
            }
            _ => {
                eprintln!("error: {e:#}");
                ExitCode::from(2)
            }
        },
    }
}

/// Builds a tokio runtime, or says why it could not (the caller exits 2).
pub fn runtime(mut builder: tokio::runtime::Builder) -> Option<tokio::runtime::Runtime> {
    match builder
        .enable_all()
        .on_thread_start(crate::sched::prefer_short_slices)
        .build()
    {
        Ok(rt) => Some(rt),
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            None
        }
    }
}

/// `prefsd check-config [DIR]`: 0 when valid, 2 with every error printed otherwise.
pub fn check_config(dir: &Path) -> ExitCode {
    match crate::config::load_dir(dir) {
        Ok(config) => {
            println!(
                "{}: ok ({} files, {} workflows, {} tenant templates)",
                dir.display(),
                config.files.len(),
                config.workflows.len(),
                config.tenant_templates.len()
            );
            ExitCode::SUCCESS
        }
        Err(errors) => {
            for e in &errors {
                eprintln!("{e}");
            }
            eprintln!("{}: {} error(s)", dir.display(), errors.len());
            ExitCode::from(2)
        }
    }
}

/// The socket to talk to: --socket or PREFSD_SOCKET, else the config's, else the default.
pub fn socket_path(cli_socket: Option<&Path>, config_dir: &Path) -> PathBuf {
    if let Some(path) = cli_socket {
        return path.to_path_buf();
    }
    crate::config::load_dir(config_dir)
        .map(|c| c.settings.socket)
        .unwrap_or_else(|_| crate::config::Settings::default().socket)
}

/// Raw params: a JSON object text, passed through as is.
struct RawParams(Option<Box<RawValue>>);

impl ToRpcParams for RawParams {
    fn to_rpc_params(self) -> Result<Option<Box<RawValue>>, serde_json::Error> {
        Ok(self.0)
    }
}

/// A connected client.
pub struct Client {
    inner: jsonrpsee::core::client::Client,
}

impl Client {
    /// Connects over the Unix socket and upgrades to a WebSocket, with the credentials of
    /// the environment (`PREFSD_SECRET_KEY`, `PREFSD_USER_TOKEN`; see `auth::client_headers`).
    pub async fn connect(socket: &Path) -> anyhow::Result<Client> {
        let headers = crate::auth::client_headers_from_env().map_err(anyhow::Error::msg)?;
        Client::connect_with_headers(socket, headers).await
    }

    /// Connects with these headers on the WebSocket upgrade request (credentials apply to
    /// every call on the connection).
    pub async fn connect_with_headers(
        socket: &Path,
        headers: http::HeaderMap,
    ) -> anyhow::Result<Client> {
        let stream = tokio::net::UnixStream::connect(socket).await.with_context(|| {
            format!(
                "cannot connect to the daemon at {}; is `prefsd serve` running? (set --socket or PREFSD_SOCKET)",
                socket.display()
            )
        })?;
        let url = url::Url::parse("ws://localhost/").context("the WebSocket URL")?;
        let (tx, rx) = jsonrpsee::client_transport::ws::WsTransportClientBuilder::default()
            .max_request_size(u32::MAX)
            .max_response_size(u32::MAX)
            .set_headers(headers)
            .build_with_stream(url, stream)
            .await
            .context("WebSocket handshake with the daemon")?;
        let inner = jsonrpsee::core::client::ClientBuilder::default()
            .request_timeout(std::time::Duration::from_secs(300))
            .build_with_tokio(tx, rx);
        Ok(Client { inner })
    }

    /// Calls a method with params given as a JSON value (an object, or null for none).
    pub async fn call(&self, method: &str, params: Value) -> anyhow::Result<Value> {
        let raw = if params.is_null() {
            None
        } else {
            Some(serde_json::value::to_raw_value(&params)?)
        };
        Ok(self.inner.request(method, RawParams(raw)).await?)
    }
}

impl Client {
    /// Follows a bulk operation: its state now (unless already over), then every change
    /// until the terminal one.
    pub async fn follow_bulk(
        &self,
        id: &str,
    ) -> anyhow::Result<jsonrpsee::core::client::Subscription<Value>> {
        use jsonrpsee::core::client::SubscriptionClientT;
        let params = serde_json::value::to_raw_value(&json!({ "id": id }))?;
        Ok(self
            .inner
            .subscribe::<Value, _>(
                "bulkOperations.subscribe",
                RawParams(Some(params)),
                "bulkOperations.unsubscribe",
            )
            .await?)
    }
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

async fn client_command(cli: Cli) -> anyhow::Result<()> {
    let socket = socket_path(cli.socket.as_deref(), &cli.config);
    let client = Client::connect(&socket).await?;
    match cli.command {
        Command::Serve { .. }
        | Command::CheckConfig { .. }
        | Command::Token(_)
        | Command::Bench(_) => {
            anyhow::bail!("serve, check-config, token and bench do not talk to a daemon here")
        }
        Command::Status => {
            let status = client.call("daemon.status", Value::Null).await?;
            if status["protocol"] != json!(crate::api::daemon::PROTOCOL) {
                anyhow::bail!(
                    "the daemon speaks protocol {}; this prefsd speaks {}",
                    status["protocol"],
                    crate::api::daemon::PROTOCOL
                );
            }
            print_json(&status);
        }
        Command::Call { method, params } => {
            let params = params
                .as_deref()
                .map(json_arg)
                .transpose()?
                .unwrap_or(Value::Null);
            print_json(&client.call(&method, params).await?);
        }
        Command::Get {
            recipient,
            target,
            raw,
        } => {
            let mut params = who(&recipient, target.object.as_deref());
            if let Some(set) = target.set {
                params.insert("preference_set".into(), json!(set));
            }
            params.insert("raw".into(), json!(raw));
            let method = format!("{}.getPreferences", namespace(target.object.as_deref()));
            print_json(&client.call(&method, Value::Object(params)).await?);
        }
        Command::Set {
            recipient,
            preferences,
            target,
            merge,
        } => {
            let mut body = json_arg(&preferences)?;
            if merge && let Value::Object(map) = &mut body {
                map.insert("__persistence_strategy__".into(), json!("merge"));
            }
            let mut params = who(&recipient, target.object.as_deref());
            if let Some(set) = target.set {
                params.insert("preference_set".into(), json!(set));
            }
            params.insert("preferences".into(), body);
            let method = format!("{}.setPreferences", namespace(target.object.as_deref()));
            print_json(&client.call(&method, Value::Object(params)).await?);
        }
        Command::Unset { recipient, target } => {
            let mut params = who(&recipient, target.object.as_deref());
            params.insert(
                "preference_set".into(),
                json!(target.set.unwrap_or_else(|| "default".into())),
            );
            let method = format!("{}.unsetPreferences", namespace(target.object.as_deref()));
            print_json(&client.call(&method, Value::Object(params)).await?);
        }
        Command::List { recipient, object } => {
            let method = format!("{}.listPreferences", namespace(object.as_deref()));
            print_json(
                &client
                    .call(&method, Value::Object(who(&recipient, object.as_deref())))
                    .await?,
            );
        }
        Command::Identify { user, properties } => {
            let mut params = who(&user, None);
            if let Some(p) = properties {
                params.insert("properties".into(), json_arg(&p)?);
            }
            print_json(&client.call("users.identify", Value::Object(params)).await?);
        }
        Command::Bulk(BulkCommand::Set {
            users,
            preferences,
            set,
            idempotency_key,
            follow,
        }) => {
            let mut params = serde_json::Map::new();
            params.insert("user_ids".into(), json!(read_user_ids(&users)?));
            params.insert("preferences".into(), json_arg(&preferences)?);
            if let Some(set) = set {
                params.insert("preference_set".into(), json!(set));
            }
            if let Some(key) = idempotency_key {
                params.insert("idempotency_key".into(), json!(key));
            }
            let op = client
                .call("users.bulkSetPreferences", Value::Object(params))
                .await?;
            if follow {
                follow_operation(&client, op).await?;
            } else {
                print_json(&op);
            }
        }
        Command::Bulk(BulkCommand::Status { id, follow }) => {
            let op = client
                .call("bulkOperations.get", json!({ "id": id }))
                .await?;
            if follow {
                follow_operation(&client, op).await?;
            } else {
                print_json(&op);
            }
        }
        Command::Evaluate {
            workflow,
            recipients,
            channels,
            tenant,
            data,
            actor,
            now,
            json,
        } => {
            let mut params = serde_json::Map::new();
            params.insert("workflow".into(), json!(workflow));
            let recipients: Vec<Value> = recipients
                .iter()
                .map(|r| match r.split_once('/') {
                    Some((collection, id)) => json!({ "collection": collection, "id": id }),
                    None => json!(r),
                })
                .collect();
            params.insert("recipients".into(), Value::Array(recipients));
            if !channels.is_empty() {
                let channels: Vec<Value> = channels
                    .iter()
                    .map(|c| match c.split_once(':') {
                        Some((t, id)) => json!({ "type": t, "id": id }),
                        None => json!({ "type": c }),
                    })
                    .collect();
                params.insert("channels".into(), Value::Array(channels));
            }
            if let Some(t) = tenant {
                params.insert("tenant".into(), json!(t));
            }
            if let Some(d) = data {
                params.insert("data".into(), json_arg(&d)?);
            }
            if let Some(a) = actor {
                params.insert("actor".into(), json!(a));
            }
            if let Some(n) = now {
                params.insert("now".into(), json!(n));
            }
            let result = client
                .call("preferences.evaluate", Value::Object(params))
                .await?;
            if json {
                print_json(&result);
            } else {
                print!("{}", decisions_table(&result));
            }
        }
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

/// A bulk job ended with errors or failed: the CLI exits non-zero (1) after its summary.
#[derive(Debug, thiserror::Error)]
#[error("bulk operation {id} {outcome}")]
pub struct JobNotClean {
    pub id: String,
    pub outcome: String,
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
        Some("completed") => Err(JobNotClean {
            id,
            outcome: format!("completed with {errors} errors"),
        }
        .into()),
        Some(status) => Err(JobNotClean {
            id,
            outcome: status.to_string(),
        }
        .into()),
        None => Err(JobNotClean {
            id,
            outcome: "has no status".into(),
        }
        .into()),
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
