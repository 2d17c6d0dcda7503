//! `/api/v1/events`: every operator event the bridge publishes on
//! `P/ops/events` (campaign decisions, waves, halts, registrations), as
//! Server-Sent Events, one `event: ota` with the event's JSON as data.
//! The copy comes from the publisher through a broadcast channel of
//! [`CAPACITY`]: a reader that falls behind is told how many it missed
//! (`event: lagged`) and goes on; no reader slows the bridge. Streams end
//! when the bridge stops.

use std::convert::Infallible;
use std::sync::Arc;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use tokio::sync::broadcast::error::RecvError;

use super::Shared;

/// Events held for slow readers.
pub const CAPACITY: usize = 256;

/// The bridge's operator events as they happen (what `P/ops/events`
/// carries): `event: ota` with the event's JSON as data; `event: lagged`
/// with how many a slow reader missed.
#[utoipa::path(get, path = "/api/v1/events", tag = "events",
    responses((status = 200, content_type = "text/event-stream", body = String,
        description = "Server-Sent Events"), super::api::Failures))]
pub async fn stream(
    State(s): State<Arc<Shared>>,
) -> Sse<impl Stream<Item = Result<Event, Infallible>>> {
    let rx = s.events.subscribe();
    let stop = s.shutdown.clone();
    let events = futures::stream::unfold((rx, stop), |(mut rx, stop)| async move {
        let next = tokio::select! {
            _ = stop.cancelled() => return None,
            r = rx.recv() => r,
        };
        let event = match next {
            Ok(json) => Event::default()
                .event("ota")
                .data(String::from_utf8_lossy(&json)),
            Err(RecvError::Lagged(n)) => Event::default().event("lagged").data(n.to_string()),
            Err(RecvError::Closed) => return None,
        };
        Some((Ok(event), (rx, stop)))
    });
    Sse::new(events).keep_alive(KeepAlive::default())
}
