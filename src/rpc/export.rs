//! `daemon.export` (WebSocket only): the export's lines as `daemon.exportLines`
//! notifications of `{"lines": [...]}`, then `{"lines": [], "done": true, "count": N}`,
//! after which the subscription ends. An export that fails ends with
//! `{"lines": [], "error": "..."}` instead. Each send waits for room in the connection's
//! queue, so a slow client slows the export rather than filling the daemon's memory.

use std::sync::Arc;

use jsonrpsee::core::server::SubscriptionMessage;
use jsonrpsee::{PendingSubscriptionSink, RpcModule, SubscriptionCloseResponse};

use crate::api::Context;
use crate::api::daemon::NoParams;
use crate::api::export;
use crate::rpc::parse_params;

pub fn register(m: &mut RpcModule<Context>) -> Result<(), jsonrpsee::core::RegisterMethodError> {
    m.register_subscription(
        "daemon.export",
        "daemon.exportLines",
        "daemon.exportCancel",
        |params, pending, ctx, _ext| async move { stream(params, pending, ctx).await },
    )?;
    Ok(())
}

fn to_message<T: serde::Serialize>(value: &T) -> Option<SubscriptionMessage> {
    serde_json::value::to_raw_value(value).ok().map(Into::into)
}

async fn stream(
    params: jsonrpsee::types::Params<'static>,
    pending: PendingSubscriptionSink,
    ctx: Arc<Context>,
) -> SubscriptionCloseResponse {
    if let Err(e) = parse_params::<NoParams>(&params) {
        return super::subscription::reject(pending, e).await;
    }
    let Ok(sink) = pending.accept().await else {
        return SubscriptionCloseResponse::None;
    };
    // Dropping the receiver (the client went away) stops the export's thread.
    let mut chunks = export::start(&ctx);
    let mut count = 0u64;
    loop {
        let next = tokio::select! {
            next = chunks.recv() => next,
            () = sink.closed() => return SubscriptionCloseResponse::None,
        };
        let message = match next {
            None => break,
            Some(Ok(chunk)) => {
                count += chunk.count as u64;
                to_message(&export::message(&chunk))
            }
            Some(Err(e)) => {
                let _ = export::failed(e);
                let end = serde_json::json!({
                    "lines": [],
                    "error": "the export failed; see the daemon's log",
                });
                return to_message(&end).map_or(
                    SubscriptionCloseResponse::None,
                    SubscriptionCloseResponse::Notif,
                );
            }
        };
        let Some(message) = message else {
            return SubscriptionCloseResponse::None;
        };
        if sink.send(message).await.is_err() {
            return SubscriptionCloseResponse::None;
        }
    }
    to_message(&export::done(count)).map_or(
        SubscriptionCloseResponse::None,
        SubscriptionCloseResponse::Notif,
    )
}
