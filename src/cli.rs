//! The command line: `prefsd serve` runs the daemon; every other subcommand is a client of
//! a running daemon over its socket (JSON-RPC over a WebSocket on the Unix socket, so the
//! same client can follow subscriptions). No business logic and no SQLite here.
//!
//! Exit codes (ripgrep's convention): 0 success, 1 the daemon answered with an error,
//! 2 usage, connection or internal errors.

use std::io::Read as _;
use std::path::Path;
use std::process::ExitCode;

use anyhow::Context as _;
use jsonrpsee::core::client::Error as ClientError;
use serde_json::{Value, json};

use crate::client::{Client, Refused, socket_path};

pub mod args;
mod data;
mod history;
pub mod import;

pub use data::restore;

use args::{
    AudienceCommand, BulkCommand, ClientCommand, ConfigCommand, EvaluateArgs, RecipientCommand,
    Target, TenantCommand,
};

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
        let data = err
            .data()
            .and_then(|d| serde_json::from_str::<Value>(d.get()).ok());
        let items = data.as_ref().and_then(|d| d.get("errors")?.as_array());
        match (items, data.as_ref().and_then(|d| d["type"].as_str())) {
            // The message repeats the first field's error; the list below names them all.
            (Some(items), Some(kind)) if !items.is_empty() => {
                eprintln!("error: {}", kind.replace('_', " "));
            }
            _ => eprintln!("error: {}", err.message()),
        }
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

/// The default config directory, as shipped in `config/`: (path inside it, contents).
const DEFAULT_CONFIG: [(&str, &str); 4] = [
    ("prefsd.toml", include_str!("../config/prefsd.toml")),
    (
        "environment.json",
        include_str!("../config/environment.json"),
    ),
    ("workflows.toml", include_str!("../config/workflows.toml")),
    (
        "tenants/acme.json",
        include_str!("../config/tenants/acme.json"),
    ),
];

/// `prefsd init [DIR]`: writes `DEFAULT_CONFIG` into `dir`, creating it; refuses to
/// overwrite any file (nothing is written then).
pub fn init(dir: &Path) -> anyhow::Result<ExitCode> {
    if let Some((name, _)) = DEFAULT_CONFIG
        .iter()
        .find(|(name, _)| dir.join(name).exists())
    {
        anyhow::bail!(
            "{} already exists; `prefsd init` writes only new files (choose another directory, or check this one with `prefsd check-config {}`)",
            dir.join(name).display(),
            dir.display()
        );
    }
    for (name, contents) in DEFAULT_CONFIG {
        let path = dir.join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        std::fs::write(&path, contents).with_context(|| format!("writing {}", path.display()))?;
    }
    println!(
        "wrote {}: {}; start the daemon with `prefsd --config {} serve`",
        dir.display(),
        DEFAULT_CONFIG.map(|(name, _)| name).join(", "),
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `prefsd check-config [DIR]`: 0 when valid, 1 with every error printed otherwise (as
/// `nginx -t`); 2 stays for usage errors.
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
            Ok(ExitCode::from(1))
        }
    }
}

/// The runtime of a client command: one thread is plenty.
fn client_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

/// `prefsd health [--ready]`: one plain `GET /healthz` (or `/readyz`) on the socket. Exit 0
/// when the daemon answers 200, else 1 with what it said or why it could not be asked.
pub fn health(
    socket: Option<&Path>,
    config_dir: &Path,
    timeout: std::time::Duration,
    ready: bool,
) -> anyhow::Result<ExitCode> {
    let runtime = client_runtime()?;
    let socket = socket_path(socket, config_dir);
    let path = if ready { "/readyz" } else { "/healthz" };
    let asked =
        runtime.block_on(async { tokio::time::timeout(timeout, http_get(&socket, path)).await });
    match asked {
        Ok(Ok((200, body))) => {
            println!("{}", body.trim_end());
            Ok(ExitCode::SUCCESS)
        }
        Ok(Ok((status, body))) => {
            eprintln!(
                "not {}: HTTP {status} {}",
                if ready { "ready" } else { "healthy" },
                body.trim_end()
            );
            Ok(ExitCode::from(1))
        }
        Ok(Err(e)) => {
            eprintln!(
                "error: cannot ask the daemon at {}: {e:#}; is `prefsd serve` running there?",
                socket.display()
            );
            Ok(ExitCode::from(1))
        }
        Err(_) => {
            eprintln!(
                "error: the daemon at {} did not answer {path} within {timeout:?}; check its log, or allow longer with --timeout",
                socket.display()
            );
            Ok(ExitCode::from(1))
        }
    }
}

/// One `GET path` on the socket: the status and the body.
async fn http_get(socket: &Path, path: &str) -> anyhow::Result<(u16, String)> {
    use http_body_util::BodyExt as _;
    let stream = tokio::net::UnixStream::connect(socket).await?;
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream)).await?;
    let request = http::Request::get(path)
        .header(http::header::HOST, "prefsd")
        .header(http::header::CONNECTION, "close")
        .body(http_body_util::Empty::<hyper::body::Bytes>::new())?;
    // The sender is moved into the request's half, so that the connection's half ends once
    // the answer is in.
    let (response, ()) = tokio::try_join!(
        async move {
            let response = sender.send_request(request).await?;
            let status = response.status().as_u16();
            let body = response.into_body().collect().await?.to_bytes();
            Ok::<_, anyhow::Error>((status, String::from_utf8_lossy(&body).into_owned()))
        },
        async { conn.await.map_err(anyhow::Error::from) },
    )?;
    Ok(response)
}

/// Runs a client subcommand against the daemon at `socket` (or the config's).
pub fn run(
    socket: Option<&Path>,
    config_dir: &Path,
    timeout: std::time::Duration,
    command: ClientCommand,
) -> anyhow::Result<ExitCode> {
    let runtime = client_runtime()?;
    let socket = socket_path(socket, config_dir);
    runtime.block_on(async {
        let client = Client::connect_timeout(&socket, timeout).await?;
        match command {
            ClientCommand::Status => status(&client).await,
            ClientCommand::Call { method, params } => {
                call(&client, &method, params.as_deref()).await
            }
            ClientCommand::Get {
                recipient,
                target,
                raw,
                as_of,
            } => get(&client, &recipient, target, raw, as_of).await,
            ClientCommand::History {
                recipient,
                target,
                limit,
                before,
            } => {
                let mut params = who(&recipient, target.object.as_deref());
                if let Some(set) = target.set {
                    params.insert("preference_set".into(), json!(set));
                }
                if let Some(before) = before {
                    params.insert("before".into(), json!(before));
                }
                let namespace = namespace(target.object.as_deref());
                history::history(&client, params, namespace, limit).await
            }
            ClientCommand::Changes { after, follow } => {
                history::changes(&client, after, follow).await
            }
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
            ClientCommand::Bulk(BulkCommand::List { status }) => {
                let params = match status {
                    Some(status) => json!({ "status": status }),
                    None => json!({}),
                };
                print_call(&client, "bulkOperations.list", params).await
            }
            ClientCommand::Recipient(command) => recipient(&client, command).await,
            ClientCommand::Tenant(command) => tenant(&client, command).await,
            ClientCommand::Audience(command) => audience(&client, command).await,
            ClientCommand::Config(ConfigCommand::Status) => {
                print_call(&client, "config.status", Value::Null).await
            }
            ClientCommand::Config(ConfigCommand::Reload) => {
                print_call(&client, "config.reload", Value::Null).await
            }
            ClientCommand::Evaluate(args) => evaluate(&client, args).await,
            ClientCommand::Backup { path } => data::backup(&client, &path).await,
            ClientCommand::Export { out } => data::export(&client, out.as_deref()).await,
            ClientCommand::Import { file, format } => import::import(&client, &file, format).await,
        }?;
        Ok(ExitCode::SUCCESS)
    })
}

/// Calls `method` and prints its result.
async fn print_call(client: &Client, method: &str, params: Value) -> anyhow::Result<()> {
    print_json(&client.call(method, params).await?);
    Ok(())
}

/// `prefsd recipient get|set|delete`.
async fn recipient(client: &Client, command: RecipientCommand) -> anyhow::Result<()> {
    match command {
        RecipientCommand::Get { id, object } => {
            let method = format!("{}.get", namespace(object.as_deref()));
            print_call(client, &method, Value::Object(who(&id, object.as_deref()))).await
        }
        RecipientCommand::Set {
            id,
            object,
            properties,
        } => {
            let mut params = who(&id, object.as_deref());
            if let Some(p) = properties {
                params.insert("properties".into(), json_arg(&p)?);
            }
            let method = match object {
                Some(_) => "objects.set",
                None => "users.identify",
            };
            print_call(client, method, Value::Object(params)).await
        }
        RecipientCommand::List {
            object,
            page,
            desc,
            preferences,
        } => {
            let mut params = page.params();
            if let Some(collection) = &object {
                params.insert("collection".into(), json!(collection));
            }
            if desc {
                params.insert("order".into(), json!("desc"));
            }
            if preferences {
                params.insert("include_preferences".into(), json!(true));
            }
            let method = format!("{}.list", namespace(object.as_deref()));
            print_call(client, &method, Value::Object(params)).await
        }
        RecipientCommand::Merge { id, from } => {
            let params = json!({ "user_id": id, "from_user_id": from });
            print_call(client, "users.merge", params).await
        }
        RecipientCommand::Delete { id, object } => {
            let method = format!("{}.delete", namespace(object.as_deref()));
            print_call(client, &method, Value::Object(who(&id, object.as_deref()))).await
        }
    }
}

/// `prefsd tenant get|set|delete`.
async fn tenant(client: &Client, command: TenantCommand) -> anyhow::Result<()> {
    match command {
        TenantCommand::Get { id } => {
            print_call(client, "tenants.get", json!({ "tenant_id": id })).await
        }
        TenantCommand::Set {
            id,
            name,
            properties,
            preferences,
        } => {
            let mut params = serde_json::Map::new();
            params.insert("tenant_id".into(), json!(id));
            if let Some(name) = name {
                params.insert("name".into(), json!(name));
            }
            if let Some(p) = properties {
                params.insert("properties".into(), json_arg(&p)?);
            }
            if let Some(p) = preferences {
                params.insert(
                    "settings".into(),
                    json!({ "preference_set": json_arg(&p)? }),
                );
            }
            print_call(client, "tenants.set", Value::Object(params)).await
        }
        TenantCommand::Delete { id } => {
            print_call(client, "tenants.delete", json!({ "tenant_id": id })).await
        }
        TenantCommand::List { name, page } => {
            let mut params = page.params();
            if let Some(name) = name {
                params.insert("name".into(), json!(name));
            }
            print_call(client, "tenants.list", Value::Object(params)).await
        }
    }
}

/// `prefsd audience add|remove|list`.
async fn audience(client: &Client, command: AudienceCommand) -> anyhow::Result<()> {
    let (method, audience, ids, object) = match command {
        AudienceCommand::Add {
            audience,
            ids,
            object,
        } => ("audiences.addMembers", audience, ids, object),
        AudienceCommand::Remove {
            audience,
            ids,
            object,
        } => ("audiences.removeMembers", audience, ids, object),
        AudienceCommand::List { audience } => {
            let params = json!({ "audience_key": audience });
            return print_call(client, "audiences.listMembers", params).await;
        }
    };
    let members: Vec<Value> = ids
        .iter()
        .map(|id| match &object {
            Some(collection) => json!({ "collection": collection, "object_id": id }),
            None => json!({ "user_id": id }),
        })
        .collect();
    let params = json!({ "audience_key": audience, "members": members });
    print_call(client, method, params).await
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

pub(crate) fn print_json(value: &Value) {
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
async fn get(
    client: &Client,
    recipient: &str,
    target: Target,
    raw: bool,
    as_of: Option<String>,
) -> anyhow::Result<()> {
    let mut params = who(recipient, target.object.as_deref());
    if let Some(set) = target.set {
        params.insert("preference_set".into(), json!(set));
    }
    params.insert("raw".into(), json!(raw));
    if let Some(as_of) = as_of {
        params.insert("as_of".into(), json!(as_of));
    }
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

/// The most users one bulk job takes (rpc.md).
const BULK_LIMIT: usize = 1000;

/// `prefsd bulk set`: submits the users as jobs of up to [`BULK_LIMIT`], and follows them
/// together when asked. A retried command with the same idempotency key submits the same
/// jobs again: job N gets the key `KEY:N`.
async fn bulk_set(
    client: &Client,
    users: &str,
    preferences: &str,
    set: Option<String>,
    idempotency_key: Option<String>,
    follow: bool,
) -> anyhow::Result<()> {
    let users = read_user_ids(users)?;
    let preferences = json_arg(preferences)?;
    let chunks: Vec<&[String]> = users.chunks(BULK_LIMIT).collect();
    let mut ops = Vec::with_capacity(chunks.len());
    for (n, chunk) in chunks.iter().enumerate() {
        let mut params = serde_json::Map::new();
        params.insert("user_ids".into(), json!(chunk));
        params.insert("preferences".into(), preferences.clone());
        if let Some(set) = &set {
            params.insert("preference_set".into(), json!(set));
        }
        if let Some(key) = &idempotency_key {
            let key = if chunks.len() == 1 {
                key.clone()
            } else {
                format!("{key}:{}", n + 1)
            };
            params.insert("idempotency_key".into(), json!(key));
        }
        ops.push(
            client
                .call("users.bulkSetPreferences", Value::Object(params))
                .await?,
        );
    }
    if follow {
        follow_operations(client, ops).await
    } else {
        match <[Value; 1]>::try_from(ops) {
            Ok([op]) => print_json(&op),
            Err(ops) => print_json(&Value::Array(ops)),
        }
        Ok(())
    }
}

/// `prefsd bulk status`: a bulk operation, followed when asked.
async fn bulk_status(client: &Client, id: &str, follow: bool) -> anyhow::Result<()> {
    let op = client
        .call("bulkOperations.get", json!({ "id": id }))
        .await?;
    if follow {
        follow_operations(client, vec![op]).await
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
        .map(|id| match &args.object {
            Some(collection) => json!({ "collection": collection, "id": id }),
            None => json!(id),
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
    if let Some(as_of) = args.as_of {
        params.insert("as_of".into(), json!(as_of));
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

/// Follows bulk operations over their subscriptions, one after the other (the worker runs
/// them in order), with one progress display for all; then prints a summary line each. A
/// failed job, or one with errors, is a [`Refused`] answer (exit 1).
async fn follow_operations(client: &Client, ops: Vec<Value>) -> anyhow::Result<()> {
    let mut follower = Follower::new();
    for op in &ops {
        follower.expect(op);
    }
    for op in ops {
        follower.follow(client, op).await?;
    }
    follower.finish()
}

/// Follows bulk operations to their end, in the order the worker runs them, with one
/// progress display for all, and keeps each one's final state for the summary.
pub(crate) struct Follower {
    progress: crate::client::Progress,
    /// The rows of the operations already followed to their end.
    done: u64,
    finals: Vec<(String, Value)>,
}

impl Follower {
    pub(crate) fn new() -> Follower {
        Follower {
            progress: crate::client::Progress::new(0, "users"),
            done: 0,
            finals: Vec::new(),
        }
    }

    /// Counts the rows of `op` in the progress display's total, before it is followed.
    pub(crate) fn expect(&mut self, op: &Value) {
        self.progress
            .add_to_total(op["estimated_total_rows"].as_u64().unwrap_or(0));
    }

    /// Follows `op` (as its bulk method answered it) until it is completed or failed.
    pub(crate) async fn follow(&mut self, client: &Client, op: Value) -> anyhow::Result<()> {
        let id = op["id"].as_str().unwrap_or_default().to_string();
        let mut last = op;
        if !is_terminal(&last) {
            let mut sub = client.follow_bulk(&id).await?;
            while let Some(update) = sub.next().await {
                last = update?;
                let processed = last["processed_rows"].as_u64().unwrap_or(0);
                self.progress
                    .set(self.done + processed, last["status"].as_str().unwrap_or(""));
                if is_terminal(&last) {
                    break;
                }
            }
        }
        self.done += last["processed_rows"].as_u64().unwrap_or(0);
        self.progress
            .set(self.done, last["status"].as_str().unwrap_or(""));
        self.finals.push((id, last));
        Ok(())
    }

    /// Clears the progress display and prints each operation's summary; refused (exit 1)
    /// when one failed or had errors.
    pub(crate) fn finish(self) -> anyhow::Result<()> {
        self.progress.finish();
        let mut refusals = Vec::new();
        for (id, last) in &self.finals {
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
                Some("completed") if errors == 0 => {}
                Some("completed") => refusals.push(format!(
                    "bulk operation {id} completed with {errors} errors"
                )),
                Some(status) => refusals.push(format!("bulk operation {id} {status}")),
                None => refusals.push(format!("bulk operation {id} has no status")),
            }
        }
        match refusals.is_empty() {
            true => Ok(()),
            false => Err(Refused(refusals.join("; ")).into()),
        }
    }
}

fn is_terminal(op: &Value) -> bool {
    matches!(op["status"].as_str(), Some("completed" | "failed"))
}

/// A readable table of `preferences.evaluate` results: one row per (recipient, channel),
/// with the layers each decision considered last.
pub fn decisions_table(result: &Value) -> String {
    let mut rows = vec![[
        "RECIPIENT".to_string(),
        "CHANNEL".into(),
        "SEND".into(),
        "REASON".into(),
        "CONSIDERED".into(),
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
            let considered: Vec<&str> = reason["considered"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
                .collect();
            let considered = match considered.is_empty() {
                true => "-".to_string(),
                false => considered.join(", "),
            };
            rows.push([recipient.clone(), channel, send.into(), why, considered]);
        }
    }
    let widths: Vec<usize> = (0..4)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in rows {
        for (i, cell) in row.iter().take(4).enumerate() {
            out.push_str(cell);
            out.push_str(&" ".repeat(widths[i] - cell.chars().count() + 2));
        }
        out.push_str(&row[4]);
        out.push('\n');
    }
    out
}
