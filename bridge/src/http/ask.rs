//! The listener's side of core's query inbox: [`CoreLink::ask`] puts a
//! query in without waiting (`try_send`; a full inbox is "busy") and waits
//! a bounded time for the answer. The fleet's counts and the campaign list
//! are kept for [`FRESH`], so that any number of open dashboards and
//! scrapers cost core at most one pass over the registry per interval.
//! Also reads the depths of core's inboxes, through weak senders that do
//! not keep them open.

use std::sync::Mutex;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use super::error::ApiError;
use crate::campaign::view::CampaignList;
use crate::mqtt::Incoming;
use crate::ops::queries::{Answer, Ask, FleetCounts, Query};
use crate::status::CoreMsg;

/// How long an answer is reused.
pub const FRESH: Duration = Duration::from_secs(1);
/// How long a request waits for core.
pub const ANSWER_WAIT: Duration = Duration::from_secs(5);

/// The inboxes whose depth `/metrics` shows.
#[derive(Debug, Clone)]
pub struct Inboxes {
    pub core_mqtt: mpsc::WeakSender<Incoming>,
    pub core_internal: mpsc::WeakSender<CoreMsg>,
    pub status_ingest: mpsc::WeakSender<Incoming>,
}

/// One inbox: messages waiting, and its capacity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Depth {
    pub waiting: usize,
    pub capacity: usize,
}

fn depth<T>(w: &mpsc::WeakSender<T>) -> Option<Depth> {
    let s = w.upgrade()?;
    Some(Depth {
        waiting: s.max_capacity() - s.capacity(),
        capacity: s.max_capacity(),
    })
}

/// A value and when it was asked.
type Kept<T> = Mutex<Option<(Instant, T)>>;

/// The way to core.
#[derive(Debug)]
pub struct CoreLink {
    queries: mpsc::Sender<Query>,
    inboxes: Inboxes,
    fleet: Kept<FleetCounts>,
    campaigns: Kept<CampaignList>,
}

impl CoreLink {
    pub fn new(queries: mpsc::Sender<Query>, inboxes: Inboxes) -> CoreLink {
        CoreLink {
            queries,
            inboxes,
            fleet: Mutex::new(None),
            campaigns: Mutex::new(None),
        }
    }

    /// Asks core once.
    pub async fn ask(&self, ask: Ask) -> Result<Answer, ApiError> {
        let (reply, rx) = oneshot::channel();
        self.queries
            .try_send(Query {
                ask,
                reply,
                asked: std::time::Instant::now(),
            })
            .map_err(|e| match e {
                mpsc::error::TrySendError::Full(_) => ApiError::Busy(self.queries.max_capacity()),
                mpsc::error::TrySendError::Closed(_) => ApiError::Stopping,
            })?;
        match tokio::time::timeout(ANSWER_WAIT, rx).await {
            Err(_) => Err(ApiError::Timeout(ANSWER_WAIT)),
            Ok(Err(_)) => Err(ApiError::Stopping),
            Ok(Ok(r)) => Ok(r?),
        }
    }

    /// The fleet's counts, at most [`FRESH`] old.
    pub async fn fleet(&self) -> Result<FleetCounts, ApiError> {
        if let Some(v) = fresh(&self.fleet) {
            return Ok(v);
        }
        match self.ask(Ask::Fleet).await? {
            Answer::Fleet(f) => Ok(keep(&self.fleet, f)),
            other => Err(unexpected(other)),
        }
    }

    /// `campaign list`, at most [`FRESH`] old.
    pub async fn campaigns(&self) -> Result<CampaignList, ApiError> {
        if let Some(v) = fresh(&self.campaigns) {
            return Ok(v);
        }
        match self.ask(Ask::Campaigns).await? {
            Answer::Campaigns(c) => Ok(keep(&self.campaigns, c)),
            other => Err(unexpected(other)),
        }
    }

    /// Core's inboxes and the status ingest's, by name; a closed one is left
    /// out.
    pub fn depths(&self) -> Vec<(&'static str, Depth)> {
        let q = Depth {
            waiting: self.queries.max_capacity() - self.queries.capacity(),
            capacity: self.queries.max_capacity(),
        };
        [
            ("core_mqtt", depth(&self.inboxes.core_mqtt)),
            ("core_internal", depth(&self.inboxes.core_internal)),
            ("core_queries", Some(q)),
            ("status_ingest", depth(&self.inboxes.status_ingest)),
        ]
        .into_iter()
        .filter_map(|(n, d)| d.map(|d| (n, d)))
        .collect()
    }
}

fn fresh<T: Clone>(kept: &Kept<T>) -> Option<T> {
    let k = kept
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    match &*k {
        Some((at, v)) if at.elapsed() < FRESH => Some(v.clone()),
        _ => None,
    }
}

fn keep<T: Clone>(kept: &Kept<T>, v: T) -> T {
    *kept
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some((Instant::now(), v.clone()));
    v
}

fn unexpected(a: Answer) -> ApiError {
    ApiError::Failed(format!("core answered another question: {a:?}"))
}
