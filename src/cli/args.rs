//! The command line's grammar, as clap reads it: every subcommand, argument and option, with
//! its help and an example. What each command does is `cli`'s.

use std::path::PathBuf;

use clap::{Parser, Subcommand};

/// The environment variables prefsd reads, as `prefsd --help` lists them.
pub const ENVIRONMENT_HELP: &str = "\
Environment:
  PREFSD_SOCKET         the daemon's socket (as --socket)
  PREFSD_CONFIG         the config directory (as --config)
  PREFSD_DATABASE       the database of `serve` (as --database)
  PREFSD_DATABASE_URL   the PostgreSQL store of `serve` (as --database-url; fleet mode)
  PREFSD_SCHEMA         the PostgreSQL schema of `serve` (as --schema)
  PREFSD_LOG            log filter of the daemon and CLI, e.g. info, debug, prefsd=trace
                        (over `[log] level`)
  PREFSD_LOG_FORMAT     text or json (over `[log] format`; default: text on a terminal)
  PREFSD_METRICS        off: count no calls for /metrics (the benchmark's baseline)
  PREFSD_SECRET_KEYS    secret keys the daemon accepts, comma-separated
  PREFSD_SECRET_KEY     the secret key the CLI sends (default: the first of PREFSD_SECRET_KEYS)
  PREFSD_USER_TOKEN     a user token the CLI sends
  NO_COLOR              no colour in the log
  TOKIO_WORKER_THREADS  the daemon's async worker threads (default: one fewer than the cores)

Exit codes: 0 success; 1 the daemon (or check-config) said no; 2 usage, connection or
internal errors.";

#[derive(Debug, Parser)]
#[command(
    name = "prefsd",
    version,
    about = "Stores and evaluates notification preferences (Knock's model) over JSON-RPC on a Unix socket",
    after_help = ENVIRONMENT_HELP
)]
pub struct Cli {
    /// The daemon's socket. Default: the `socket` of the config directory's prefsd.toml.
    #[arg(long, global = true, env = "PREFSD_SOCKET")]
    pub socket: Option<PathBuf>,
    /// The config directory.
    #[arg(long, global = true, env = "PREFSD_CONFIG", default_value = "config")]
    pub config: PathBuf,
    /// How long a client command waits for the daemon, e.g. 30s, 2m, 500ms.
    #[arg(long, global = true, default_value = "30s", value_parser = crate::duration::parse_duration)]
    pub timeout: std::time::Duration,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the daemon on the config directory.
    #[command(
        after_help = "Examples:\n  prefsd serve\n  prefsd --config /etc/prefsd --socket /run/prefsd/prefsd.sock serve --database /var/lib/prefsd/prefsd.db"
    )]
    Serve {
        /// The SQLite database (a `postgres://` URL here means the PostgreSQL backend).
        /// Default: the `database` of prefsd.toml.
        #[arg(long, env = "PREFSD_DATABASE")]
        database: Option<PathBuf>,
        /// The PostgreSQL store (fleet mode): a `postgres://` URL or a libpq key=value
        /// string. Default: `[store] url` of prefsd.toml.
        #[arg(long, env = "PREFSD_DATABASE_URL", hide_env_values = true)]
        database_url: Option<String>,
        /// The PostgreSQL schema of this environment. Default: `[store] schema`, `public`.
        #[arg(long, env = "PREFSD_SCHEMA")]
        schema: Option<String>,
    },
    /// Mint a user token (like Knock's signUserToken) for development and tests; print it.
    #[command(
        after_help = "Example:\n  prefsd token --user dana --grant preferences/read --ttl 30m"
    )]
    Token(crate::auth::mint::TokenArgs),
    /// Write the default config directory (commented, as shipped) to start from.
    #[command(after_help = "Example:\n  prefsd init /etc/prefsd")]
    Init {
        /// Where to write it (default: --config). It must not hold any of the files yet.
        dir: Option<PathBuf>,
    },
    /// Validate a config directory offline; print every error with file and line.
    #[command(after_help = "Example:\n  prefsd check-config config/")]
    CheckConfig {
        /// The directory (default: --config).
        dir: Option<PathBuf>,
    },
    /// Check that the daemon is alive (GET /healthz) or ready (--ready); exit 0 if so, else 1
    ///
    /// For exec probes and scripts: exit 1 too when the daemon does not answer.
    #[command(after_help = "Examples:\n  prefsd health\n  prefsd health --ready")]
    Health {
        /// Ask for readiness (GET /readyz) instead of liveness.
        #[arg(long)]
        ready: bool,
    },
    /// The commands that talk to a running daemon.
    #[command(flatten)]
    Client(ClientCommand),
    /// Replace a database with a backup, offline (no daemon may hold it); the replaced
    /// file is kept as DATABASE.before-restore.
    #[command(
        after_help = "Example:\n  prefsd restore /var/backups/prefsd-20261207T043000.000Z.db --database /var/lib/prefsd/prefsd.db"
    )]
    Restore {
        /// The backup file (`prefsd backup`, or a scheduled one).
        backup: PathBuf,
        /// The database to replace. Default: the `database` of prefsd.toml.
        #[arg(long, env = "PREFSD_DATABASE")]
        database: Option<PathBuf>,
    },
    /// Load-test a running daemon (calls/s, latency, daemon CPU and RSS), or `bench seed` a
    /// database with deterministic data.
    #[command(
        after_help = "Examples:\n  prefsd bench --workload get --connections 8 --duration 3s --compare ping --rounds 3\n  prefsd bench seed --database bench.db --users 1000000"
    )]
    Bench(crate::bench::BenchArgs),
}

/// The subcommands that are clients of a running daemon, over its socket.
#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Show the daemon's status.
    #[command(after_help = "Example:\n  prefsd status")]
    Status,
    /// Call any method of the JSON-RPC API (see the README's method list).
    #[command(after_help = "Example:\n  prefsd call users.get '{\"user_id\":\"dana\"}'")]
    Call {
        /// The method, e.g. users.get.
        method: String,
        /// Its params: a JSON object, @FILE, or - for standard input.
        params: Option<String>,
    },
    /// Show a recipient's preferences (effective unless --raw).
    #[command(
        after_help = "Examples:\n  prefsd get dana\n  prefsd get dana --raw --set acme\n  prefsd get p1 --object projects\n  prefsd get dana --as-of 2026-12-01T09:00:00Z"
    )]
    Get {
        /// A user id, or an object id with --object.
        recipient: String,
        #[command(flatten)]
        target: Target,
        /// Show only what is stored.
        #[arg(long)]
        raw: bool,
        /// As they were at this instant (RFC 3339), from the change log.
        #[arg(long, value_name = "TIME")]
        as_of: Option<String>,
    },
    /// Show a recipient's preference history: when, who, through what, and what changed.
    #[command(
        after_help = "Examples:\n  prefsd history dana\n  prefsd history dana --set acme\n  prefsd history p1 --object projects"
    )]
    History {
        /// A user id, or an object id with --object.
        recipient: String,
        #[command(flatten)]
        target: Target,
        /// How many changes, newest first (at most 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
        /// Only changes older than this seq (the next page).
        #[arg(long, value_name = "SEQ")]
        before: Option<i64>,
    },
    /// Print the change log as JSON lines; --follow keeps printing changes as they commit.
    #[command(
        after_help = "Examples:\n  prefsd changes --after 0\n  prefsd changes --follow --after 1234 >> changes.ndjson"
    )]
    Changes {
        /// Start after this seq (default: from the start; with --follow, from now).
        #[arg(long, value_name = "SEQ")]
        after: Option<i64>,
        /// Keep printing each new change as it commits.
        #[arg(long)]
        follow: bool,
    },
    /// Set a recipient's preference set (replaces it unless --merge).
    #[command(
        after_help = "Examples:\n  prefsd set dana '{\"categories\":{\"marketing\":false}}'\n  prefsd set dana '{\"channel_types\":{\"sms\":false}}' --merge"
    )]
    Set {
        /// A user id, or an object id with --object.
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
    #[command(after_help = "Example:\n  prefsd unset dana --set acme")]
    Unset {
        /// A user id, or an object id with --object.
        recipient: String,
        #[command(flatten)]
        target: Target,
    },
    /// List a recipient's stored preference sets.
    #[command(after_help = "Example:\n  prefsd list dana")]
    List {
        /// A user id, or an object id with --object.
        recipient: String,
        /// The recipient is an object in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
    },
    /// Create or update a user (properties merged shallowly): `recipient set` for a user.
    #[command(after_help = "Example:\n  prefsd identify dana --properties '{\"plan\":\"pro\"}'")]
    Identify {
        /// The user id.
        user: String,
        /// Properties as a JSON object (merged into the stored ones; null deletes a key).
        #[arg(long)]
        properties: Option<String>,
    },
    /// Users and objects: show, create or update, delete.
    #[command(subcommand)]
    Recipient(RecipientCommand),
    /// Tenants: show (stored, or the config's template), create or update, delete.
    #[command(subcommand)]
    Tenant(TenantCommand),
    /// Audiences (for the is_audience_member condition): add, remove, list members.
    #[command(subcommand)]
    Audience(AudienceCommand),
    /// Bulk preference sets: submit jobs, follow their progress, list them.
    #[command(subcommand)]
    Bulk(BulkCommand),
    /// The config in force: its status, or reload it now.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Back the running daemon's database up to PATH: an online, verified copy.
    #[command(after_help = "Example:\n  prefsd backup /var/backups/prefsd.db")]
    Backup {
        /// The backup file (replaced, once the new copy is verified, if it exists).
        path: PathBuf,
    },
    /// Export every tenant, user, object and audience membership as NDJSON: a consistent
    /// snapshot, taken while the daemon serves.
    #[command(
        after_help = "Examples:\n  prefsd export --out prefsd.ndjson\n  prefsd export | gzip > prefsd.ndjson.gz"
    )]
    Export {
        /// Write to FILE (created 0600) instead of standard output.
        #[arg(long, value_name = "FILE")]
        out: Option<PathBuf>,
    },
    /// Import an export, or JSON lines of Knock users or objects, as bulk jobs of 250
    /// lines; bad lines are reported by number and left out.
    #[command(
        after_help = "Examples:\n  prefsd import prefsd.ndjson\n  prefsd import knock-users.jsonl --format knock"
    )]
    Import {
        /// The file: NDJSON, one record a line.
        file: PathBuf,
        /// The file's format. Default: an export if line 1 is its header, else Knock.
        #[arg(long, value_enum)]
        format: Option<crate::cli::import::Format>,
    },
    /// Decide a workflow for recipients and channels, with the reasons.
    #[command(
        after_help = "Examples:\n  prefsd evaluate new-comment dana lee --channel email --channel in_app_feed\n  prefsd evaluate new-comment p1 --object projects --tenant acme"
    )]
    Evaluate(EvaluateArgs),
}

#[derive(Debug, Subcommand)]
pub enum BulkCommand {
    /// Replace a preference set for many users, as background jobs of up to 1000 users.
    #[command(
        after_help = "Example:\n  prefsd bulk set --users users.txt --preferences '{\"channel_types\":{\"sms\":false}}' --follow"
    )]
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
    #[command(
        after_help = "Example:\n  prefsd bulk status 2f6e0c4e-8f7b-4a8e-9f52-0d1c3b0f5a77 --follow"
    )]
    Status {
        /// The bulk operation's id.
        id: String,
        /// Show a live progress bar until the job ends.
        #[arg(long)]
        follow: bool,
    },
    /// List bulk operations, newest first.
    #[command(after_help = "Example:\n  prefsd bulk list --status processing")]
    List {
        /// Only operations in this status: queued, processing, completed or failed.
        #[arg(long)]
        status: Option<String>,
    },
}

/// `prefsd recipient ...`: users, or objects with --object.
#[derive(Debug, Subcommand)]
pub enum RecipientCommand {
    /// Show a user or object: its properties and timestamps.
    #[command(
        after_help = "Examples:\n  prefsd recipient get dana\n  prefsd recipient get p1 --object projects"
    )]
    Get {
        /// A user id, or an object id with --object.
        id: String,
        /// The recipient is an object in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
    },
    /// Create or update a user or object: properties merged shallowly, preferences merged.
    #[command(
        after_help = "Example:\n  prefsd recipient set p1 --object projects --properties '{\"name\":\"Apollo\"}'"
    )]
    Set {
        /// A user id, or an object id with --object.
        id: String,
        /// The recipient is an object in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
        /// Properties as a JSON object, @FILE, or - for standard input.
        #[arg(long)]
        properties: Option<String>,
    },
    /// List users, or the objects of a collection, in insertion order, a page at a time.
    #[command(
        after_help = "Examples:\n  prefsd recipient list --limit 10\n  prefsd recipient list --object projects --after CURSOR\n  prefsd recipient list --desc --preferences"
    )]
    List {
        /// List the objects of this collection instead of users.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
        #[command(flatten)]
        page: PageArgs,
        /// Newest first.
        #[arg(long)]
        desc: bool,
        /// Include each one's stored preference sets.
        #[arg(long)]
        preferences: bool,
    },
    /// Merge a user into another: properties the target lacks, sets it lacks and audience
    /// memberships move to the target; then the source is deleted.
    #[command(after_help = "Example:\n  prefsd recipient merge dana --from anon-7f3a")]
    Merge {
        /// The user that stays (created if absent).
        id: String,
        /// The user merged into it and deleted.
        #[arg(long, value_name = "USER")]
        from: String,
    },
    /// Delete a user or object with its preference sets and memberships.
    #[command(after_help = "Example:\n  prefsd recipient delete dana")]
    Delete {
        /// A user id, or an object id with --object.
        id: String,
        /// The recipient is an object in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
    },
}

/// `prefsd tenant ...`.
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Show a tenant, with its default preference set.
    #[command(after_help = "Example:\n  prefsd tenant get acme")]
    Get {
        /// The tenant id.
        id: String,
    },
    /// Create or update a tenant: name, properties (merged) and its default set (merged).
    #[command(
        after_help = "Example:\n  prefsd tenant set acme --name Acme --preferences '{\"categories\":{\"marketing\":false}}'"
    )]
    Set {
        /// The tenant id.
        id: String,
        /// The tenant's name.
        #[arg(long)]
        name: Option<String>,
        /// Properties as a JSON object, @FILE, or - for standard input.
        #[arg(long)]
        properties: Option<String>,
        /// The tenant default (settings.preference_set) as JSON, @FILE, or -.
        #[arg(long)]
        preferences: Option<String>,
    },
    /// Delete a stored tenant (its config template, if any, stays in force).
    #[command(after_help = "Example:\n  prefsd tenant delete acme")]
    Delete {
        /// The tenant id.
        id: String,
    },
    /// List stored tenants (never config templates) in insertion order, a page at a time.
    #[command(after_help = "Example:\n  prefsd tenant list --name Acme")]
    List {
        /// Only tenants with exactly this name.
        #[arg(long)]
        name: Option<String>,
        #[command(flatten)]
        page: PageArgs,
    },
}

/// Which page of a list: at most `--limit` (1 to 50) after or before a cursor that an
/// earlier page printed as `next` or `prev`.
#[derive(Debug, clap::Args)]
pub struct PageArgs {
    /// At most this many (larger values are clamped to 50).
    #[arg(long)]
    pub limit: Option<i64>,
    /// The page after this cursor (a page's `next`).
    #[arg(long)]
    pub after: Option<String>,
    /// The page before this cursor (a page's `prev`).
    #[arg(long)]
    pub before: Option<String>,
}

impl PageArgs {
    /// The paging params of a list method.
    pub fn params(&self) -> serde_json::Map<String, serde_json::Value> {
        let mut params = serde_json::Map::new();
        if let Some(limit) = self.limit {
            params.insert("limit".into(), limit.into());
        }
        for (name, value) in [("after", &self.after), ("before", &self.before)] {
            if let Some(v) = value {
                params.insert(name.into(), v.clone().into());
            }
        }
        params
    }
}

/// `prefsd audience ...`.
#[derive(Debug, Subcommand)]
pub enum AudienceCommand {
    /// Add recipients to an audience (creating recipients that do not exist).
    #[command(after_help = "Example:\n  prefsd audience add beta dana lee")]
    Add {
        /// The audience key.
        audience: String,
        /// User ids, or object ids with --object.
        #[arg(required = true)]
        ids: Vec<String>,
        /// The recipients are objects in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
    },
    /// Remove recipients from an audience.
    #[command(after_help = "Example:\n  prefsd audience remove beta lee")]
    Remove {
        /// The audience key.
        audience: String,
        /// User ids, or object ids with --object.
        #[arg(required = true)]
        ids: Vec<String>,
        /// The recipients are objects in this collection.
        #[arg(long, value_name = "COLLECTION")]
        object: Option<String>,
    },
    /// List an audience's members.
    #[command(after_help = "Example:\n  prefsd audience list beta")]
    List {
        /// The audience key.
        audience: String,
    },
}

/// `prefsd config ...`.
#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// The config in force: its version, files, counts and last error.
    #[command(after_help = "Example:\n  prefsd config status")]
    Status,
    /// Re-read the config directory now; an invalid config is refused (exit 1).
    #[command(after_help = "Example:\n  prefsd config reload")]
    Reload,
}

/// `prefsd evaluate`: the params of one `preferences.evaluate` call.
#[derive(Debug, clap::Args)]
pub struct EvaluateArgs {
    /// A workflow key of the catalog.
    pub workflow: String,
    /// User ids, or object ids with --object (an id is never split: `a/b` is one user).
    #[arg(required = true)]
    pub recipients: Vec<String>,
    /// The recipients are objects in this collection.
    #[arg(long, value_name = "COLLECTION")]
    pub object: Option<String>,
    /// A channel as TYPE or TYPE:ID (repeatable). Default: the workflow's channels.
    #[arg(long = "channel", value_name = "TYPE[:ID]")]
    pub channels: Vec<String>,
    /// Evaluate in this tenant: its default set and the recipients' sets for it.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Trigger data as a JSON object.
    #[arg(long)]
    pub data: Option<String>,
    /// The actor's user id.
    #[arg(long)]
    pub actor: Option<String>,
    /// The evaluation time (RFC 3339). Default: the daemon's clock, or --as-of.
    #[arg(long)]
    pub now: Option<String>,
    /// Decide as the daemon would have at this instant (RFC 3339): the preferences,
    /// properties, tenant and config in force then.
    #[arg(long, value_name = "TIME")]
    pub as_of: Option<String>,
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
