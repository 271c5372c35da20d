//! What a sale app is told, as JSON. The decision of what to tell — and the rule that
//! `accepted` needs a durable answered mark ([`inflight_core::terminal::Told`]) — is the
//! machine's (`inflight_core::terminal`); this only renders it.

use inflight_core::terminal::Answer;

use crate::api::CaptureAnswer;

/// A capture answer on its way to the socket, as JSON. Only [`Reply::of`] makes one, from the
/// machine's [`Answer`], so the actor cannot send `accepted` without a `Told`.
#[derive(Debug)]
pub(crate) struct Reply(serde_json::Value, Told);

/// What a [`Reply`] told the sale app, for the metrics: the reason is the machine's own
/// (`&'static str`, a closed set), never input.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Told {
    /// `accepted`.
    Accepted,
    /// `rejected`, with the reason.
    Rejected(&'static str),
    /// `outcome_unknown` (the store failed while recording the answer).
    Unknown,
    /// Not a capture's answer (a void's, a failed look-up).
    Other,
}

impl Reply {
    /// The JSON for `answer` (`replayed`: it answers a retry).
    pub(crate) fn of(answer: &Answer, replayed: bool) -> Reply {
        let (payment_id, outcome, reason, told) = match answer {
            Answer::Accepted(t) => (Some(t.id().to_string()), "accepted", None, Told::Accepted),
            Answer::Rejected { id, reason } => {
                (id.map(|i| i.to_string()), "rejected", Some((*reason).to_owned()), Told::Rejected(reason))
            }
            Answer::Void { id, outcome } => {
                let mut v = serde_json::json!({ "outcome": outcome.as_str() });
                if let Some(id) = id {
                    v["payment_id"] = serde_json::json!(id.to_string());
                }
                return Reply(v, Told::Other);
            }
            Answer::VoidFailed { id, reason } => {
                return Reply(
                    serde_json::json!({
                        "error": reason,
                        "payment_id": id.to_string(),
                        "detail": match *reason {
                            "void_in_progress" => "the payment is being captured or answered right now; ask again",
                            _ => "the terminal's store failed while recording the void; ask again once the terminal is back",
                        },
                    }),
                    Told::Other,
                )
            }
            Answer::Unknown { id } => {
                return Reply(
                    serde_json::json!({
                        "error": "outcome_unknown",
                        "payment_id": id.to_string(),
                        "detail": "the terminal's store failed while recording the answer; \
                                   retry with the same request_id once the terminal is back",
                    }),
                    Told::Unknown,
                )
            }
        };
        let answer = CaptureAnswer { payment_id, outcome: outcome.into(), reason, replayed };
        Reply(serde_json::to_value(answer).unwrap_or(serde_json::Value::Null), told)
    }

    /// The store could not be read to find the payment a request names (nothing decided).
    pub(crate) fn lookup_failed() -> Reply {
        Reply(
            serde_json::json!({ "error": "storage_error", "detail": "cannot read the terminal's store" }),
            Told::Other,
        )
    }

    /// What it tells.
    pub(crate) fn told(&self) -> Told {
        self.1
    }

    /// The JSON answer.
    pub(crate) fn into_inner(self) -> serde_json::Value {
        self.0
    }
}
