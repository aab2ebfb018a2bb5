//! A consistent snapshot of the store as NDJSON (ops.md §7): a header line, then one line
//! per tenant, user, object (with its properties and every stored set) and audience
//! membership.
//!
//! The snapshot is one read transaction on a connection and a thread of its own, so writes
//! go on meanwhile (WAL) and a long export does not hold up a reader thread. Rows are read
//! in primary-key order (recipients and their sets as two cursors walked side by side, so
//! no sort and no table is held in memory) and handed over in chunks of about
//! [`CHUNK_BYTES`] through a channel of two: memory stays constant however large the
//! store, and a slow consumer slows the export instead of queueing it. Stored JSON
//! (properties, sets) is copied into the lines as the text it is, unparsed.

use std::path::PathBuf;
use std::time::Duration;

use rusqlite::{Connection, OpenFlags};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::Error;

/// The `format` of the header line.
pub const FORMAT: &str = "prefsd-export";
/// The `version` of the header line.
pub const VERSION: u32 = 1;

/// About how much text a chunk holds. Small, because the daemon's WebSocket queue holds up
/// to 1024 messages per connection (jsonrpsee's default) when a client reads slowly: 16 MiB
/// at most, beside the two chunks of this side's channel.
pub const CHUNK_BYTES: usize = 16 * 1024;

/// Complete lines of an export, each a JSON object, joined by commas: `[` + `lines` + `]`
/// is a JSON array of them.
#[derive(Debug, Default)]
pub struct Chunk {
    pub lines: String,
    pub count: usize,
}

impl Chunk {
    fn push(&mut self, line: &str) {
        if self.count > 0 {
            self.lines.push(',');
        }
        self.lines.push_str(line);
        self.count += 1;
    }
}

/// Starts an export of the database at `database`; its chunks arrive on the receiver, the
/// header line first, and the channel closes after the last (or after an error, sent as
/// the last item). Dropping the receiver or cancelling `cancel` stops the export.
pub fn export(
    database: PathBuf,
    cancel: CancellationToken,
) -> mpsc::Receiver<Result<Chunk, Error>> {
    let (tx, rx) = mpsc::channel(2);
    let spawned = std::thread::Builder::new()
        .name("prefsd-export".into())
        .spawn({
            let tx = tx.clone();
            move || {
                if let Err(e) = write_snapshot(&database, &tx, &cancel) {
                    let _ = tx.blocking_send(Err(e));
                }
            }
        });
    if let Err(e) = spawned {
        let _ = tx.try_send(Err(Error::Thread(e)));
    }
    rx
}

/// Why the export stopped early: the consumer went away (not an error to report).
struct Gone;

/// Sends full chunks on, keeping the one being filled.
struct Out<'a> {
    tx: &'a mpsc::Sender<Result<Chunk, Error>>,
    cancel: &'a CancellationToken,
    chunk: Chunk,
}

impl Out<'_> {
    fn line(&mut self, line: &str) -> Result<(), Gone> {
        self.chunk.push(line);
        if self.chunk.lines.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn flush(&mut self) -> Result<(), Gone> {
        if self.cancel.is_cancelled() {
            return Err(Gone);
        }
        if self.chunk.count == 0 {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.chunk);
        self.tx.blocking_send(Ok(chunk)).map_err(|_| Gone)
    }
}

fn write_snapshot(
    database: &std::path::Path,
    tx: &mpsc::Sender<Result<Chunk, Error>>,
    cancel: &CancellationToken,
) -> Result<(), Error> {
    let conn = Connection::open_with_flags(
        database,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )?;
    conn.busy_timeout(Duration::from_secs(5))?;
    let mut out = Out {
        tx,
        cancel,
        chunk: Chunk::default(),
    };
    // One read transaction: every line is of the same snapshot, the header's seq included.
    conn.execute_batch("BEGIN; SELECT count(*) FROM sqlite_master;")?;
    match lines(&conn, &mut out) {
        Ok(Ok(())) => {}
        // The consumer went away: nothing to report to it.
        Ok(Err(Gone)) => return Ok(()),
        Err(e) => return Err(e),
    }
    let _ = out.flush();
    Ok(())
}

/// Every line of the snapshot `conn` holds; the inner error means the consumer is gone.
fn lines(conn: &Connection, out: &mut Out<'_>) -> Result<Result<(), Gone>, Error> {
    macro_rules! emit {
        ($line:expr) => {
            if out.line(&$line).is_err() {
                return Ok(Err(Gone));
            }
        };
    }
    let seq = super::backup::newest_seq(conn)?;
    // Written by hand for the spec's key order (a JSON map would sort them).
    emit!(format!(
        r#"{{"format":"{FORMAT}","version":{VERSION},"seq":{},"at":{}}}"#,
        seq.map_or("null".to_string(), |s| s.to_string()),
        quote(&super::time::now())?,
    ));

    let mut tenants = conn.prepare(
        "SELECT id, name, properties, preference_set, branding, created_at, updated_at FROM tenants ORDER BY id",
    )?;
    let mut rows = tenants.query([])?;
    while let Some(row) = rows.next()? {
        let id: String = row.get(0)?;
        let name: Option<String> = row.get(1)?;
        let properties: String = row.get(2)?;
        let set: Option<String> = row.get(3)?;
        let branding = match row.get::<_, Option<String>>(4)? {
            Some(b) => format!(r#","branding":{b}"#),
            None => String::new(),
        };
        let created: String = row.get(5)?;
        let updated: String = row.get(6)?;
        emit!(format!(
            r#"{{"type":"tenant","id":{},"name":{},"properties":{properties},"settings":{{"preference_set":{}{branding}}},"created_at":{},"updated_at":{}}}"#,
            quote(&id)?,
            serde_json::to_string(&name)?,
            set.as_deref().unwrap_or("null"),
            quote(&created)?,
            quote(&updated)?,
        ));
    }
    drop(rows);

    // Recipients and their sets, both in (collection, id) order, walked side by side.
    let mut recipients = conn.prepare(
        "SELECT collection, id, properties, created_at, updated_at FROM recipients ORDER BY collection, id",
    )?;
    let mut sets = conn.prepare(
        "SELECT collection, recipient_id, set_id, preferences FROM preference_sets ORDER BY collection, recipient_id, set_id",
    )?;
    let mut recipient_rows = recipients.query([])?;
    let mut set_rows = sets.query([])?;
    let mut next_set: Option<(String, String, String, String)> = read_set(set_rows.next()?)?;
    let mut line = String::new();
    while let Some(row) = recipient_rows.next()? {
        let collection: String = row.get(0)?;
        let id: String = row.get(1)?;
        let properties: String = row.get(2)?;
        let created: String = row.get(3)?;
        let updated: String = row.get(4)?;
        line.clear();
        if collection.is_empty() {
            line.push_str(r#"{"type":"user","id":"#);
        } else {
            line.push_str(r#"{"type":"object","collection":"#);
            line.push_str(&quote(&collection)?);
            line.push_str(r#","id":"#);
        }
        line.push_str(&quote(&id)?);
        line.push_str(r#","properties":"#);
        line.push_str(&properties);
        line.push_str(r#","preferences":{"#);
        let mut first = true;
        // Sets of recipients before this one cannot exist (a foreign key), but are
        // skipped rather than trusted.
        while let Some((c, r, set_id, preferences)) = &next_set {
            match (c.as_str(), r.as_str()).cmp(&(collection.as_str(), id.as_str())) {
                std::cmp::Ordering::Less => {}
                std::cmp::Ordering::Equal => {
                    if !first {
                        line.push(',');
                    }
                    first = false;
                    line.push_str(&quote(set_id)?);
                    line.push(':');
                    line.push_str(preferences);
                }
                std::cmp::Ordering::Greater => break,
            }
            next_set = read_set(set_rows.next()?)?;
        }
        line.push_str(r#"},"created_at":"#);
        line.push_str(&quote(&created)?);
        line.push_str(r#","updated_at":"#);
        line.push_str(&quote(&updated)?);
        line.push('}');
        emit!(line);
    }
    drop(recipient_rows);
    drop(set_rows);

    let mut members = conn.prepare(
        "SELECT audience_key, collection, recipient_id, added_at FROM audience_members ORDER BY audience_key, collection, recipient_id",
    )?;
    let mut rows = members.query([])?;
    while let Some(row) = rows.next()? {
        let audience: String = row.get(0)?;
        let collection: String = row.get(1)?;
        let id: String = row.get(2)?;
        let added: String = row.get(3)?;
        // Members as `audiences.addMembers` names them.
        let member = if collection.is_empty() {
            format!(r#""user_id":{}"#, quote(&id)?)
        } else {
            format!(
                r#""collection":{},"object_id":{}"#,
                quote(&collection)?,
                quote(&id)?
            )
        };
        emit!(format!(
            r#"{{"type":"audience_member","audience_key":{},{member},"added_at":{}}}"#,
            quote(&audience)?,
            quote(&added)?,
        ));
    }
    Ok(Ok(()))
}

type SetRow = (String, String, String, String);

fn read_set(row: Option<&rusqlite::Row<'_>>) -> Result<Option<SetRow>, Error> {
    Ok(match row {
        Some(row) => Some((row.get(0)?, row.get(1)?, row.get(2)?, row.get(3)?)),
        None => None,
    })
}

/// A string as a JSON string literal.
fn quote(s: &str) -> Result<String, Error> {
    Ok(serde_json::to_string(s)?)
}
