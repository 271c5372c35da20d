//! The only way to answer a capture `accepted`.
//!
//! An `accepted` answer obliges the aircraft to carry the payment to the issuer; a payment whose
//! sale app was never told `accepted` must never be charged. So the terminal records durably,
//! first, that the sale app is being told — and only then tells it. [`Answer::Accepted`] holds
//! a [`Told`], which nothing but [`Marked::durable`] can make: a path that forgets the durable
//! mark does not compile.

use inflight_store::{SlaveState, SlaveStore, StoreError, Ticket};
use inflight_wire::{PaymentId, RefusalReason};

use crate::api::CaptureAnswer;

/// Proof that the answered mark of a payment is durable: the sale app may be told `accepted`.
#[derive(Debug)]
pub(crate) struct Told {
    id: PaymentId,
}

/// The answered mark, written to the store but not yet known durable.
#[derive(Debug)]
pub(crate) struct Marked {
    id: PaymentId,
    ticket: Ticket,
}

/// Why a payment cannot be answered `accepted`.
#[derive(Debug)]
pub(crate) enum NotAnswerable {
    /// It was refused by the master or voided: the answer is `rejected` with this reason.
    Settled(&'static str),
    /// The store failed.
    Store(StoreError),
}

/// Writes the answered mark of `id` (a no-op when it is already there) and checks that the
/// payment may be answered `accepted` at all.
pub(crate) fn mark(store: &SlaveStore, id: PaymentId) -> Result<Marked, NotAnswerable> {
    store.set_state(id, SlaveState::Captured { answered: true }).map_err(NotAnswerable::Store)?;
    let view = store.view(id).map_err(NotAnswerable::Store)?;
    match view.map(|v| v.state) {
        Some(SlaveState::Captured { answered: true } | SlaveState::Forwarded) => {
            // Waiting on the latest ticket also covers a mark written earlier (a retry's).
            Ok(Marked { id, ticket: store.latest() })
        }
        Some(SlaveState::Refused(r)) => Err(NotAnswerable::Settled(r.as_str())),
        Some(SlaveState::Voided { .. }) => Err(NotAnswerable::Settled(RefusalReason::Voided.as_str())),
        Some(SlaveState::Captured { answered: false }) | None => {
            Err(NotAnswerable::Store(StoreError::Io(format!("payment {id} cannot be marked answered"))))
        }
    }
}

impl Marked {
    /// Waits until the mark is durable: the one constructor of [`Told`].
    pub(crate) async fn durable(self, store: &SlaveStore) -> Result<Told, StoreError> {
        store.durable(self.ticket).await?;
        Ok(Told { id: self.id })
    }

    /// Blocking form of [`Marked::durable`], for the shutdown drain.
    pub(crate) fn durable_blocking(self, store: &SlaveStore) -> Result<Told, StoreError> {
        store.durable_blocking(self.ticket)?;
        Ok(Told { id: self.id })
    }
}

/// What a sale app is told.
#[derive(Debug)]
pub(crate) enum Answer {
    /// `accepted`: the answered mark is durable.
    Accepted(Told),
    /// `rejected`, with the payment id when one was minted.
    Rejected {
        /// The payment, if one was minted.
        id: Option<PaymentId>,
        /// Machine-readable reason.
        reason: &'static str,
    },
    /// Neither: the answered mark was written but could not be made durable (a failing disk),
    /// so whether the payment will be carried is not known until the terminal restarts. Not
    /// `rejected` (it may be charged); not `accepted` (nothing durable says so). The sale app
    /// retries with its `request_id` to learn the outcome.
    Unknown {
        /// The payment.
        id: PaymentId,
    },
}

impl Answer {
    /// Rejected with a reason.
    pub(crate) fn rejected(id: Option<PaymentId>, reason: &'static str) -> Self {
        Answer::Rejected { id, reason }
    }

    /// What goes back to the sale app (and, with `replayed`, to its retries).
    pub(crate) fn reply(&self, replayed: bool) -> Reply {
        let (payment_id, outcome, reason) = match self {
            Answer::Accepted(t) => (Some(t.id.to_string()), "accepted", None),
            Answer::Rejected { id, reason } => (id.map(|i| i.to_string()), "rejected", Some((*reason).to_owned())),
            Answer::Unknown { id } => {
                return Reply(serde_json::json!({
                    "error": "outcome_unknown",
                    "payment_id": id.to_string(),
                    "detail": "the terminal's store failed while recording the answer; \
                               retry with the same request_id once the terminal is back",
                }))
            }
        };
        let answer = CaptureAnswer { payment_id, outcome: outcome.into(), reason, replayed };
        Reply(serde_json::to_value(answer).unwrap_or(serde_json::Value::Null))
    }
}

/// A capture answer on its way to the socket, as JSON. Only [`Answer::reply`] makes one, so the
/// actor cannot send `accepted` without a [`Told`].
#[derive(Debug)]
pub(crate) struct Reply(serde_json::Value);

impl Reply {
    /// The JSON answer.
    pub(crate) fn into_inner(self) -> serde_json::Value {
        self.0
    }
}
