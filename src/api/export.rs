//! `daemon.export`: a consistent NDJSON snapshot of the store (ops.md §7), streamed as
//! chunks of lines. The snapshot is `store::export`'s; this is the message shape.

use tokio::sync::mpsc;

use crate::Error;
use crate::api::{Context, Json};
use crate::store::export::Chunk;

/// The chunks of an export of the store, the header line first; a stopping daemon ends
/// it, and so does dropping the receiver.
pub fn start(ctx: &Context) -> mpsc::Receiver<Result<Chunk, crate::store::Error>> {
    let location = ctx.db.location().clone();
    crate::store::export::export(location, ctx.stopping.child_token())
}

/// One message of the stream: `{"lines": [...]}`, each item one line of the export.
pub fn message(chunk: &Chunk) -> Json {
    let mut text = String::with_capacity(chunk.lines.len() + 12);
    text.push_str(r#"{"lines":["#);
    text.push_str(&chunk.lines);
    text.push_str("]}");
    Json(text)
}

/// The last message: `{"lines": [], "done": true, "count": N}`, so a client can tell a
/// complete export from one cut off.
pub fn done(count: u64) -> serde_json::Value {
    serde_json::json!({ "lines": [], "done": true, "count": count })
}

/// An export that failed part way: logged; the client sees an internal error.
pub fn failed(e: crate::store::Error) -> Error {
    tracing::error!(error = %e, "the export failed");
    Error::Store(e)
}
